//! Issue 2's acceptance in the nested test host: `ghost-vmm run` boots the stock Debian cloud
//! kernel to the guest's init with 1, 2 and 4 vCPUs, with and without hugepages, from the bzImage
//! and from an ELF vmlinux; `poweroff -f` ends ghost-vmm with status 0, `reboot -f` restarts the
//! guest (or ends the run with `on_reboot = "exit"`). (Boot time against QEMU is a figure of
//! the benchmark harness, `benches/`.)
//!
//! All scenarios share one L2 boot. What is asserted is what the guest itself printed on its
//! console (its own /proc), what L2's /proc said about the hugepage pool and ghost-vmm's
//! memory while the guest ran, and ghost-vmm's exit status.

use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::testhost::{
    GuestInitramfs, RunReport, Scenario, ScenarioResult, TestHost, PROBE_BYE, PROBE_INIT_OK,
    PROBE_READY,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// A VM file for L2's /ghost/vm.
fn vm_toml(
    name: &str,
    vcpus: u8,
    memory: &str,
    hugepages: bool,
    kernel: &str,
    initrd: &str,
    extra: &str,
) -> String {
    format!(
        r#"[vm]
name = "{name}"
vcpus = {vcpus}
{extra}

[memory]
size = "{memory}"
hugepages = {hugepages}

[boot]
kernel = "{kernel}"
initramfs = "/ghost/initrd/{initrd}.cpio.gz"
cmdline = "{CMDLINE}"
"#
    )
}

const BZIMAGE: &str = "/ghost/kernel/cloud/bzImage";
const VMLINUX: &str = "/ghost/kernel/cloud/vmlinux";

/// Boots a waiting probe guest, reports L2's hugepage pool and ghost-vmm's memory while the
/// guest runs, releases it, and reports ghost-vmm's exit status.
fn probe_and_inspect(vm: &str) -> String {
    format!(
        r#"
ghost_mark start
vm_start {vm} $GHOST_VMM run /ghost/vm/{vm}.toml
vm_wait_for {vm} {PROBE_READY} 120 || exit 1
echo "L2_HP_TOTAL=$(sed -n 's/^HugePages_Total: *//p' /proc/meminfo)"
echo "L2_HP_FREE=$(sed -n 's/^HugePages_Free: *//p' /proc/meminfo)"
echo "L2_HP_RSVD=$(sed -n 's/^HugePages_Rsvd: *//p' /proc/meminfo)"
pid=$(cat $GHOST_VM_DIR/{vm}.pid)
echo "L2_VMM_RSS_KB=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status)"
echo "L2_VMM_RSSANON_KB=$(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$pid/status)"
echo "L2_VMM_THREADS=$(sed -n 's/^Threads:[[:space:]]*//p' /proc/$pid/status)"
# How L2's KVM maps the guest's RAM (only this VM runs): 2 MiB pages where the host address
# of a page agrees with its guest address modulo 2 MiB, 4 KiB pages otherwise.
grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs none /sys/kernel/debug
echo "L2_KVM_PAGES_4K=$(cat /sys/kernel/debug/kvm/pages_4k)"
echo "L2_KVM_PAGES_2M=$(cat /sys/kernel/debug/kvm/pages_2m)"
vm_send {vm} go
vm_wait {vm} 60
echo "GHOST_RC=$?"
"#
    )
}

/// Boots a guest that does not wait, and reports ghost-vmm's exit status.
fn boot_and_exit(vm: &str, cmd: &str) -> String {
    format!(
        r#"
ghost_mark start
vm_start {vm} {cmd}
vm_wait {vm} 120
echo "GHOST_RC=$?"
"#
    )
}

/// The "control" guest: reports, then obeys one console command (reboot or poweroff).
const CONTROL_INIT: &str = r#"echo GHOST-L3-INIT-OK
echo "CPUS=$(grep -c '^processor' /proc/cpuinfo)"
echo GHOST-CONTROL-READY
read -r cmd
case "$cmd" in
reboot) echo GHOST-REBOOTING; reboot -f ;;
*) echo GHOST-POWERING-OFF ;;
esac
"#;

const REBOOT_RESTART: &str = r#"
vm_start rr $GHOST_VMM run /ghost/vm/rr.toml
vm_wait_for rr GHOST-CONTROL-READY 120 || exit 1
vm_send rr reboot
# The guest must come back: a second READY after the reboot.
# (Polls every 0.1 s for at most 120 s.)
polls=0
until [ "$(grep -c GHOST-CONTROL-READY $GHOST_VM_DIR/rr.log)" -ge 2 ]; do
    polls=$((polls + 1))
    [ "$polls" -ge 1200 ] && { echo "no second boot"; vm_kill rr; exit 1; }
    [ -f $GHOST_VM_DIR/rr.rc ] && { echo "ghost-vmm exited on reboot"; exit 1; }
    sleep 0.1
done
echo "BOOTS=$(grep -c GHOST-L3-INIT-OK $GHOST_VM_DIR/rr.log)"
vm_send rr poweroff
vm_wait rr 60
echo "GHOST_RC=$?"
"#;

const REBOOT_EXIT: &str = r#"
vm_start re $GHOST_VMM run /ghost/vm/re.toml
vm_wait_for re GHOST-CONTROL-READY 120 || exit 1
vm_send re reboot
vm_wait re 60
echo "GHOST_RC=$?"
echo "BOOTS=$(grep -c GHOST-L3-INIT-OK $GHOST_VM_DIR/re.log)"
"#;

/// 1 GiB of 2M hugepages when L2 reserves 256 (512 MiB): refused before anything starts.
const TOO_MANY_HUGEPAGES: &str = r#"
free_before=$(hugepages_free)
$GHOST_VMM run /ghost/vm/toomany.toml </dev/null
echo "GHOST_RC=$?"
echo "HP_FREE_SAME=$([ "$(hugepages_free)" = "$free_before" ] && echo yes || echo no)"
"#;

fn run() -> &'static RunReport {
    static RUN: OnceLock<RunReport> = OnceLock::new();
    RUN.get_or_init(|| {
        let vms = [
            (
                "hp2",
                vm_toml(
                    "hp2",
                    2,
                    "512M",
                    true,
                    BZIMAGE,
                    "probe-wait",
                    "on_reboot = \"exit\"",
                ),
            ),
            (
                "one",
                vm_toml(
                    "one",
                    1,
                    "256M",
                    false,
                    BZIMAGE,
                    "probe-wait",
                    "on_reboot = \"exit\"",
                ),
            ),
            (
                "four",
                vm_toml(
                    "four",
                    4,
                    "512M",
                    false,
                    BZIMAGE,
                    "probe",
                    "on_reboot = \"exit\"",
                ),
            ),
            (
                "elf",
                vm_toml(
                    "elf",
                    2,
                    "256M",
                    false,
                    VMLINUX,
                    "probe",
                    "on_reboot = \"exit\"",
                ),
            ),
            // One vCPU: with two, the test host's own KVM (nested under TCG) soft-locks a vCPU
            // thread in the L2 kernel during the guest's reboot; see issue 2's closing note.
            (
                "rr",
                vm_toml("rr", 1, "256M", false, BZIMAGE, "control", ""),
            ),
            (
                "re",
                vm_toml(
                    "re",
                    1,
                    "256M",
                    false,
                    BZIMAGE,
                    "control",
                    "on_reboot = \"exit\"",
                ),
            ),
            (
                "toomany",
                vm_toml("toomany", 1, "1G", true, BZIMAGE, "probe", ""),
            ),
        ];
        let mut host = TestHost::new("boot-linux")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .guest("probe", GuestInitramfs::probe(false))
            .guest("probe-wait", GuestInitramfs::probe(true))
            .guest("control", GuestInitramfs::new(CONTROL_INIT));
        for (name, toml) in vms {
            host = host.file(format!("/ghost/vm/{name}.toml"), toml, 0o644);
        }
        let t = Duration::from_secs(150);
        host.run(&[
            Scenario::new("hugepages-2cpu", probe_and_inspect("hp2")).timeout(t),
            Scenario::new("nohuge-1cpu", probe_and_inspect("one")).timeout(t),
            Scenario::new(
                "nohuge-4cpu",
                boot_and_exit("four", "$GHOST_VMM run /ghost/vm/four.toml"),
            )
            .timeout(t),
            Scenario::new(
                "elf-vmlinux",
                boot_and_exit("elf", "$GHOST_VMM run /ghost/vm/elf.toml"),
            )
            .timeout(t),
            Scenario::new("reboot-restart", REBOOT_RESTART).timeout(Duration::from_secs(240)),
            Scenario::new("reboot-exit", REBOOT_EXIT).timeout(t),
            Scenario::new("too-many-hugepages", TOO_MANY_HUGEPAGES)
                .timeout(Duration::from_secs(20)),
        ])
        .expect("the test host boots")
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = run();
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(60)))
}

/// The guest reached its init, saw `cpus` processors, powered off, and ghost-vmm exited 0.
fn assert_booted(s: &ScenarioResult, cpus: u32) {
    s.assert_success();
    assert!(
        s.contains(PROBE_INIT_OK),
        "no init marker:\n{}",
        s.transcript()
    );
    assert_eq!(s.value::<u32>("CPUS="), Some(cpus), "{}", s.transcript());
    assert!(s.contains(PROBE_BYE), "{}", s.transcript());
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{}", s.transcript());
}

/// MemTotal is the configured size less what the kernel keeps for itself (its image, page
/// structures, reserved low memory): at least 80 % and never more than configured.
fn assert_memtotal(s: &ScenarioResult, mib: u64) {
    let kb: u64 = s.value("MEMTOTAL_KB=").expect("MEMTOTAL_KB");
    assert!(kb <= mib * 1024, "MemTotal {kb} kB > {mib} MiB");
    assert!(kb >= mib * 1024 * 8 / 10, "MemTotal {kb} kB << {mib} MiB");
}

#[test]
fn two_vcpus_512m_on_hugepages() {
    let s = scenario("hugepages-2cpu");
    assert_booted(s, 2);
    assert_memtotal(s, 512);
    // While the guest ran, its 256 2M pages were taken from L2's pool (faulted in, or
    // reserved for the mapping and not yet faulted): nothing else in L2 uses hugepages.
    let total: u64 = s.value("L2_HP_TOTAL=").expect("total");
    let free: u64 = s.value("L2_HP_FREE=").expect("free");
    let rsvd: u64 = s.value("L2_HP_RSVD=").expect("rsvd");
    assert_eq!(total, 256, "{}", s.transcript());
    assert_eq!(total - free + rsvd, 256, "{}", s.transcript());
    assert!(
        total - free > 0,
        "guest touched no hugepage: {}",
        s.transcript()
    );
    eprintln!(
        "hugepages: {} in use, {} reserved; ghost-vmm VmRSS {} kB",
        total - free,
        rsvd,
        s.line_after("L2_VMM_RSS_KB=").unwrap_or("?")
    );
}

#[test]
fn one_vcpu_256m_without_hugepages() {
    let s = scenario("nohuge-1cpu");
    assert_booted(s, 1);
    assert_memtotal(s, 256);
    // Guest RAM without hugetlb pages is still mapped with 2 MiB pages by the host's KVM
    // (transparent hugepages on a 2 MiB-aligned mapping): a boot to init touches some tens
    // of 2 MiB pages and next to no 4 KiB ones (with RAM only page-aligned on the host it
    // was 17 000 4 KiB pages and not one of 2 MiB).
    let small: u64 = s.value("L2_KVM_PAGES_4K=").expect("L2_KVM_PAGES_4K");
    let large: u64 = s.value("L2_KVM_PAGES_2M=").expect("L2_KVM_PAGES_2M");
    assert!(
        large >= 8 && small < 512,
        "KVM maps the guest's RAM with {small} 4 KiB and {large} 2 MiB pages:\n{}",
        s.transcript()
    );
    let rss: u64 = s.value("L2_VMM_RSS_KB=").expect("rss");
    eprintln!(
        "ghost-vmm with a 256 MiB guest at its init: VmRSS {rss} kB, RssAnon {} kB, {} threads",
        s.line_after("L2_VMM_RSSANON_KB=").unwrap_or("?"),
        s.line_after("L2_VMM_THREADS=").unwrap_or("?"),
    );
}

#[test]
fn four_vcpus() {
    let s = scenario("nohuge-4cpu");
    assert_booted(s, 4);
    assert_memtotal(s, 512);
}

#[test]
fn elf_vmlinux_boots() {
    let s = scenario("elf-vmlinux");
    assert_booted(s, 2);
}

#[test]
fn reboot_restarts_the_guest() {
    let s = scenario("reboot-restart");
    s.assert_success();
    assert!(s.contains("GHOST-REBOOTING"), "{}", s.transcript());
    assert_eq!(s.value::<u32>("BOOTS="), Some(2), "{}", s.transcript());
    assert!(s.contains("GHOST-POWERING-OFF"), "{}", s.transcript());
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{}", s.transcript());
}

#[test]
fn reboot_with_on_reboot_exit_ends_the_run() {
    let s = scenario("reboot-exit");
    s.assert_success();
    assert!(s.contains("GHOST-REBOOTING"), "{}", s.transcript());
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{}", s.transcript());
    assert_eq!(s.value::<u32>("BOOTS="), Some(1), "{}", s.transcript());
}

#[test]
fn more_hugepages_than_reserved_fails_fast() {
    let s = scenario("too-many-hugepages");
    s.assert_success();
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(2), "{}", s.transcript());
    let err = s.find("ghost-vmm: error:").expect("an error line");
    assert!(err.text.contains("memory.hugepages"), "{}", err.text);
    assert!(
        err.text.contains("512"),
        "names the pages needed: {}",
        err.text
    );
    assert_eq!(s.line_after("HP_FREE_SAME="), Some("yes"));
}
