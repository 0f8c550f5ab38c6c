//! What runs inside the VMs and around them in L2: the guests' workloads, each scenario's L2
//! script, and ghost-vmm's VM file for the Debian image.

use ghost_tests::testhost::DEBIAN_SHELL_READY;

use super::vmms::DebianCmds;
use super::{DISK, EDU, GUEST_RAM_KIB, NVME, READY_LINE, SETTLED};

/// How much each workload does.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) seq_mib: u32,
    pub(super) rand_s: u32,
    pub(super) tcp_mib: u32,
    pub(super) exits: u32,
    pub(super) bar_reads: u32,
    pub(super) irqs: u32,
}

pub(super) const FULL: Sizes = Sizes {
    seq_mib: 96,
    rand_s: 5,
    tcp_mib: 64,
    exits: 20_000,
    bar_reads: 20_000,
    irqs: 200,
};

pub(super) const QUICK: Sizes = Sizes {
    seq_mib: 32,
    rand_s: 2,
    tcp_mib: 16,
    exits: 5_000,
    bar_reads: 5_000,
    irqs: 50,
};

/// The general guest: init milestone, wait for "go" (the host measures memory at idle),
/// then the exit micro-benchmarks, block, and TCP.
pub(super) fn general_guest(s: Sizes) -> String {
    format!(
        r#"[ -n "$bench_timer" ] && /bin/exitbench mark $bench_timer 1
echo BENCH-INIT-OK
read -r _go
/bin/exitbench cfg /sys/bus/pci/devices/0000:00:00.0 {exits}
# The kernel will not map a BAR a driver holds: virtio-net's function leaves its driver
# for the MMIO figure and comes back before the network is used.
net=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/class)" = 0x020000 ] && net=$d
done
if [ -n "$net" ]; then
    echo "${{net##*/}}" >/sys/bus/pci/drivers/virtio-pci/unbind
    /bin/exitbench mmio $net {exits}
    echo "${{net##*/}}" >/sys/bus/pci/drivers/virtio-pci/bind
else
    echo NO_VIRTIO_NET
fi
/bin/iobench seqwrite /dev/vda {seq} 2>&1
/bin/iobench seqread /dev/vda {seq} 2>&1
/bin/iobench randread /dev/vda {rand} 2>&1
n=0
until [ -e /sys/class/net/eth0 ]; do
    n=$((n + 1)); [ $n -ge 100 ] && {{ echo ETH0_NEVER; break; }}
    sleep 0.1
done
ip link set eth0 up
ip addr add 10.0.3.15/24 dev eth0
n=0
until ping -c 1 -W 1 10.0.3.1 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -ge 60 ] && {{ echo PING_NEVER; break; }}
done
/bin/iobench tcpsend 10.0.3.1 5001 {tcp} 2>&1
echo BENCH-DONE
"#,
        exits = s.exits,
        seq = s.seq_mib,
        rand = s.rand_s,
        tcp = s.tcp_mib,
    )
}

/// The passthrough guest: edu's BAR read through sysfs, nvme admin commands (each completed
/// by an MSI-X interrupt through the VMM's irqfd route), then nvme QD1 random reads.
pub(super) fn passthrough_guest(s: Sizes) -> String {
    format!(
        r#"echo BENCH-INIT-OK
edu=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/device)" = 0x11e8 ] && edu=$d
done
if [ -n "$edu" ]; then
    echo 1 >$edu/enable
    /bin/edutest $edu latency {bar_reads}
else
    echo NO_EDU
fi
n=0
until [ -b /dev/nvme0n1 ]; do
    n=$((n + 1)); [ $n -ge 300 ] && {{ echo NVME_NEVER; break; }}
    sleep 0.1
done
/bin/iobench nvmertt /dev/nvme0 {irqs} 2>&1
/bin/iobench randread /dev/nvme0n1 {rand} 2>&1 | sed 's/^RAND_READ_IOPS=/NVME_IOPS=/'
echo BENCH-DONE
"#,
        bar_reads = s.bar_reads,
        irqs = s.irqs,
        rand = s.rand_s,
    )
}

/// L2 side of the general guest under `cmd`, as VM `name`: a fresh disk image, the VMM's
/// memory once the guest idles at init, then a TCP sink on the TAP the VMM created.
pub(super) fn general_l2(name: &str, cmd: &str) -> String {
    format!(
        r#"wait_listening() {{
    _n=0
    until netstat -ltn 2>/dev/null | grep -q ":$1 "; do
        _n=$((_n + 1)); [ $_n -ge 100 ] && {{ echo "nothing listens on $1"; return 1; }}
        sleep 0.1
    done
}}
{FRESH_DISK}ghost_mark start
vm_start {name} {cmd}
vm_wait_for {name} BENCH-INIT-OK 120 || {{ vm_kill {name}; exit 1; }}
# Idle: the guest waits on its console. Let its boot's last work settle, then measure.
sleep 1
pid=$(cat $GHOST_VM_DIR/{name}.pid)
echo "VMM_RSS_KB=$(awk '/^VmRSS:/ {{ print $2 }}' /proc/$pid/status)"
# Every mapping of guest-RAM size is guest RAM; the rest of the RSS is the VMM's own.
echo "VMM_OVERHEAD_KB=$(awk -v ram={GUEST_RAM_KIB} '
    $1 ~ /^[0-9a-f]+-[0-9a-f]+$/ {{ guest = 0 }}
    $1 == "Size:" {{ guest = ($2 >= ram && $2 <= ram + 8192) }}
    $1 == "Rss:" {{ total += $2; if (guest) g += $2 }}
    END {{ print total - g }}' /proc/$pid/smaps)"
n=0
until [ -e /sys/class/net/tapb ]; do
    n=$((n + 1)); [ $n -ge 600 ] && {{ echo TAP_NEVER; vm_kill {name}; exit 1; }}
    sleep 0.1
done
(sleep 240) | nc -l -p 5001 >/dev/null &
wait_listening 5001 || {{ vm_kill {name}; exit 1; }}
ip addr add 10.0.3.1/24 dev tapb
ip link set tapb up
vm_send {name} go
vm_wait {name} 280
echo "VMM_RC=$?"
"#
    )
}

/// L2 shell text: a fresh, zeroed 128 MiB disk file for the general and the boot guest.
const FRESH_DISK: &str = "rm -f /tmp/bench.img
dd if=/dev/zero of=/tmp/bench.img bs=1M count=128 2>/dev/null
";

/// The boot guest: reaches init and powers off (the multi-vCPU boot figures).
pub(super) const BOOT_GUEST: &str = "echo BENCH-INIT-OK\npoweroff -f\n";

/// L2 side of the boot guest under `cmd`, as VM `name`: the general guest's disk and TAP, VMM
/// start to the guest's init, then its poweroff.
pub(super) fn boot_l2(name: &str, cmd: &str) -> String {
    format!(
        r#"{FRESH_DISK}ghost_mark start
vm_start {name} {cmd}
vm_wait_for {name} BENCH-INIT-OK 120 || {{ vm_kill {name}; exit 1; }}
vm_wait {name} 60
echo "VMM_RC=$?"
"#
    )
}

/// L2 side of the passthrough guest: both devices on vfio-pci for the run, back after.
pub(super) fn passthrough_l2(name: &str, cmd: &str) -> String {
    format!(
        r#"$GHOST_VMM vfio bind {EDU} >/dev/null || exit 1
$GHOST_VMM vfio bind {NVME} >/dev/null || exit 1
vm_start {name} {cmd}
vm_wait {name} 150
echo "VMM_RC=$?"
$GHOST_VMM vfio unbind {EDU} >/dev/null
$GHOST_VMM vfio unbind {NVME} >/dev/null
"#
    )
}

/// L2 side of the Debian guest under `cmds`, as VM `name`, on L2's disk `disk` (`vdb`): boot to
/// multi-user, wait for systemd to be idle, press the power button, wait for the VMM to exit.
pub(super) fn debian_l2(name: &str, disk: &str, cmds: &DebianCmds) -> String {
    let start = cmds.start.replace(DISK, disk);
    format!(
        r#"vm={name}
[ -b /dev/{disk} ] || {{ echo "NO_DISK /dev/{disk}"; exit 1; }}
ghost_mark start
vm_start $vm {start}
{tail}"#,
        tail = ready_settle_stop(cmds.stop, cmds.after),
    )
}

/// The end of a Debian guest's L2 script (VM `$vm`, started): multi-user, the root shell, a
/// settled systemd, then `stop` (the power button), the VMM's exit status, `after`.
pub(super) fn ready_settle_stop(stop: &str, after: &str) -> String {
    format!(
        r#"vm_wait_for $vm "{READY_LINE}" 300 || {{ vm_kill $vm; exit 1; }}
vm_wait_for $vm {DEBIAN_SHELL_READY} 120 || {{ vm_kill $vm; exit 1; }}
# Stop a settled guest: once systemd says its boot is over (running, or degraded). The console
# echoes what is typed, with the marker split by quotes; only what echo prints has it whole.
vm_send $vm 'echo "BENCH-SETTLED""=$(systemctl is-system-running --wait)"'
vm_wait_for $vm {SETTLED} 180 || {{ vm_kill $vm; exit 1; }}
sleep 1
ghost_mark stop
{stop}
vm_wait $vm 150
echo "VMM_RC=$?"
{after}
"#
    )
}
