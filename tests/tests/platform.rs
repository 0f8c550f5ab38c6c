//! Issue 13's platform devices in the nested test host: the power button, the hard stop and
//! the CMOS RTC, with busybox guests on the stock Debian cloud kernel (the Debian systemd
//! guest, where logind acts on the button and systemd reads the RTC, is
//! `server_lifecycle.rs`).
//!
//! All scenarios share one L2 boot:
//! - `power-button`: the guest loads Linux's ACPI `button` driver, finds "Power Button" in
//!   `/proc/bus/input/devices` and waits for a key event on its input device; SIGTERM to
//!   ghost-vmm must deliver that event (ACPI GED interrupt → `_EVT` → `Notify (PWRB, 0x80)`),
//!   and the guest powers off: ghost-vmm exits 0.
//! - `ignores-button`: a guest without the button driver writes 1 MiB to its disk with
//!   `fsync`, then idles. SIGTERM presses a button nobody hears; after `stop_timeout` (3 s)
//!   ghost-vmm stops it hard: exit status 3, one line saying why, the flushed bytes on the
//!   image, the image's lock released (`ghost-vmm check` of another VM on the disk is
//!   refused before and accepted after) and the TAP ghost-vmm created gone.
//! - `rtc`: `rtc_cmos` binds to the DSDT's PNP0B00 device; `/dev/rtc0` and busybox
//!   `hwclock` read the host's UTC time (compared with L2's clock on the spot), a time
//!   written with `hwclock --systohc` reads back and keeps running, and an alarm set through
//!   `wakealarm` raises IRQ 8.
//! - `console-api`: a headless VM (`[serial] mode = "socket"`, mirrored to a log file) whose
//!   guest answers lines on its console: `ghost-vmm console` replays what it printed before
//!   anyone attached, carries a typed line to the guest and its answer back, detaches on
//!   Ctrl-]; a second attach replays both. `ghost-vmm reboot` boots the guest again (the log
//!   shows two boots), `ghost-vmm stop` stops it hard (exit 3) and the sockets are gone.
//! - `hyperv`: `[vm] hyperv = true` on 2 vCPUs: the guest's kernel log says which hypervisor
//!   it found and the Hyper-V features it was offered, its clock runs on the Hyper-V
//!   reference TSC page, and timers and IPIs (the hypercall IPIs of `ipi`) keep both vCPUs
//!   working; the same guest without the key finds KVM.

use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::testhost::{GuestInitramfs, RunReport, Scenario, ScenarioResult, TestHost};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
const KERNEL: &str = "/ghost/kernel/cloud/bzImage";

fn vm_toml(name: &str, initrd: &str, vm_extra: &str, devices: &str) -> String {
    format!(
        r#"[vm]
name = "{name}"
vcpus = 1
{vm_extra}

[memory]
size = "256M"

[boot]
kernel = "{KERNEL}"
initramfs = "/ghost/initrd/{initrd}.cpio.gz"
cmdline = "{CMDLINE}"

{devices}
"#
    )
}

/// Guest: the power button's input device, then wait for its key event.
const BUTTON_GUEST: &str = r#"
grep -q 'Name="Power Button"' /proc/bus/input/devices && echo POWER_BUTTON_PRESENT=yes
ev=$(sed -n '/Name="Power Button"/,/^$/s/^H: Handlers=.*\(event[0-9]*\).*/\1/p' /proc/bus/input/devices)
echo "BUTTON_DEV=$ev"
[ -c "/dev/input/$ev" ] || { echo NO_EVENT_DEVICE; exit 1; }
echo GHOST-BUTTON-READY
# One input_event (24 bytes on x86_64): the key press.
dd if="/dev/input/$ev" bs=24 count=1 of=/dev/null 2>/dev/null && echo GHOST-BUTTON-PRESSED
"#;

const BUTTON_L2: &str = r#"
vm_start pb $GHOST_VMM run /ghost/vm/pb.toml
vm_wait_for pb GHOST-BUTTON-READY 120 || exit 1
ghost_mark sigterm
kill -TERM "$(cat $GHOST_VM_DIR/pb.pid)"
vm_wait pb 60
echo "GHOST_RC=$?"
"#;

/// Guest: 1 MiB of random bytes to the raw disk, flushed; then idle, deaf to the button.
const IGNORE_GUEST: &str = r#"
dd if=/dev/urandom of=/tmp/data bs=64k count=16 2>/dev/null
echo "GUEST_SUM=$(sha256sum /tmp/data | cut -d' ' -f1)"
dd if=/tmp/data of=/dev/vda bs=64k conv=fsync 2>/dev/null && echo GHOST-DATA-FLUSHED
while :; do sleep 1; done
"#;

const IGNORE_L2: &str = r#"
dd if=/dev/zero of=/tmp/ign.img bs=1M count=8 2>/dev/null
vm_start ign $GHOST_VMM run /ghost/vm/ign.toml
vm_wait_for ign GHOST-DATA-FLUSHED 120 || exit 1
[ -e /sys/class/net/tap-ign ] && echo TAP_WHILE_RUNNING=yes
# `ghost-vmm check` opens and locks a VM's disks as `run` would: another VM on the same disk
# is refused while this one runs.
$GHOST_VMM check /ghost/vm/ign-other.toml </dev/null; echo "CHECK_WHILE_RUNNING=$?"
ghost_mark sigterm
kill -TERM "$(cat $GHOST_VM_DIR/ign.pid)"
vm_wait ign 60
echo "GHOST_RC=$?"
ghost_mark exited
echo "DISK_SUM=$(head -c 1048576 /tmp/ign.img | sha256sum | cut -d' ' -f1)"
$GHOST_VMM check /ghost/vm/ign-other.toml </dev/null; echo "CHECK_AFTER=$?"
[ -e /sys/class/net/tap-ign ] && echo TAP_AFTER=present || echo TAP_AFTER=gone
"#;

/// Guest: the RTC as Linux sees it. L2 prints `HOST_EPOCH=` right after the guest's
/// `RTC_EPOCH=` line (see `RTC_L2`).
const RTC_GUEST: &str = r#"
echo "RTC_NAME=$(cat /sys/class/rtc/rtc0/name 2>/dev/null)"
[ -c /dev/rtc0 ] && echo RTC_DEV=yes
echo "HWCLOCK=$(hwclock -r -u 2>&1)"
read -r _go
echo "RTC_EPOCH=$(cat /sys/class/rtc/rtc0/since_epoch)"
read -r _go
# Set the RTC 10 years ahead and read it back: it must have kept running from there.
now=$(cat /sys/class/rtc/rtc0/since_epoch)
date -u -s "@$((now + 315360000))" >/dev/null && hwclock -w -u && echo RTC_SET=yes
sleep 2
echo "RTC_AFTER_SET=$(( $(cat /sys/class/rtc/rtc0/since_epoch) - now ))"
date -u -s "@$((now + 2))" >/dev/null && hwclock -w -u
# An alarm 2 s ahead must raise the RTC's interrupt.
echo "RTC_IRQ_LINE=$(grep rtc0 /proc/interrupts)"
before=$(awk '/rtc0/ {print $2}' /proc/interrupts)
echo 0 >/sys/class/rtc/rtc0/wakealarm
echo +2 >/sys/class/rtc/rtc0/wakealarm && echo ALARM_SET=yes
sleep 4
after=$(awk '/rtc0/ {print $2}' /proc/interrupts)
grep -E 'alarm_IRQ|alrm|IRQ' /proc/driver/rtc
echo "IRQ8_BEFORE=$before"
echo "IRQ8_AFTER=$after"
"#;

const RTC_L2: &str = r#"
vm_start rtc $GHOST_VMM run /ghost/vm/rtc.toml
vm_wait_for rtc HWCLOCK= 120 || exit 1
vm_send rtc go
vm_wait_for rtc RTC_EPOCH= 30 || exit 1
echo "HOST_EPOCH=$(date -u +%s)"
vm_send rtc go
vm_wait rtc 60
echo "GHOST_RC=$?"
"#;

/// Guest: which hypervisor Linux found, what Hyper-V offered, its clock, and both vCPUs
/// doing timed work (IPIs between them: `taskset` moves the shell, `sleep` needs timers).
const HYPERV_GUEST: &str = r#"
dmesg | sed -n 's/.*Hypervisor detected: /HV_DETECTED=/p'
dmesg | sed -n 's/.*Hyper-V: privilege flags /HV_FEATURES=/p'
dmesg | grep -i 'hyper-v' | sed 's/^/HV_LOG: /'
echo "CLOCKSOURCE=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "CPUS=$(grep -c ^processor /proc/cpuinfo)"
for cpu in 0 1 0 1; do taskset -c $cpu sleep 0.2 || echo TASKSET_FAILED; done
echo "T0=$(cat /proc/uptime)"; sleep 1; echo "T1=$(cat /proc/uptime)"
echo GHOST-HV-DONE
"#;

const HYPERV_L2: &str = r#"
for vm in hv kvm; do
    vm_start $vm env GHOST_LOG=info $GHOST_VMM run /ghost/vm/$vm.toml
    vm_wait $vm 120
    echo "GHOST_RC_$vm=$?"
done
"#;

/// Guest: answers each line on its console.
const ECHO_GUEST: &str = r#"
echo CONSOLE-GUEST-READY
while read -r line; do echo "GUEST-GOT:$line"; done
"#;

const CONSOLE_L2: &str = r#"
vm_start cvm $GHOST_VMM run /ghost/vm/cvm.toml
wait_for_line /tmp/cvm.console.log CONSOLE-GUEST-READY 120 || { vm_kill cvm; exit 1; }
[ -S /run/ghost-vmm/cvm.console ] && echo CONSOLE_SOCKET=yes
# Attach: the replay, then a line typed to the guest and its answer, then Ctrl-] (0x1d).
(sleep 1; printf 'hello-from-l2\n'; sleep 2; printf '\035') | $GHOST_VMM console cvm >/tmp/c1.out 2>/tmp/c1.err
echo "ATTACH1_RC=$?"
sed 's/^/C1: /' /tmp/c1.out; sed 's/^/C1ERR: /' /tmp/c1.err
(sleep 1; printf '\035') | $GHOST_VMM console cvm >/tmp/c2.out 2>/dev/null
echo "ATTACH2_RC=$?"
sed 's/^/C2: /' /tmp/c2.out
$GHOST_VMM status cvm | sed -n 's/^console: */STATUS_CONSOLE=/p'
$GHOST_VMM reboot cvm; echo "REBOOT_RC=$?"
n=0
until [ "$(grep -c CONSOLE-GUEST-READY /tmp/cvm.console.log)" -ge 2 ]; do
    n=$((n + 1)); [ $n -ge 1200 ] && { echo NO_SECOND_BOOT; vm_kill cvm; exit 1; }
    sleep 0.1
done
echo "BOOTS=$(grep -c CONSOLE-GUEST-READY /tmp/cvm.console.log)"
$GHOST_VMM stop cvm; echo "STOP_RC=$?"
vm_wait cvm 60
echo "GHOST_RC=$?"
[ -e /run/ghost-vmm/cvm.sock ] || [ -e /run/ghost-vmm/cvm.console ] && echo SOCKETS_AFTER=present || echo SOCKETS_AFTER=gone
"#;

fn run() -> &'static RunReport {
    static RUN: OnceLock<RunReport> = OnceLock::new();
    RUN.get_or_init(|| {
        TestHost::new("platform")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .guest(
                "button",
                GuestInitramfs::new(BUTTON_GUEST).modules(["button", "evdev"]),
            )
            .guest(
                "ignore",
                GuestInitramfs::new(IGNORE_GUEST).modules(ghost_tests::testhost::VIRTIO_MODULES),
            )
            .guest("rtc", GuestInitramfs::new(RTC_GUEST))
            .guest("echo", GuestInitramfs::new(ECHO_GUEST))
            .guest("hyperv", GuestInitramfs::new(HYPERV_GUEST))
            .file(
                "/ghost/vm/hv.toml",
                vm_toml("hv", "hyperv", "vcpus = 2\nhyperv = true", "").replace("vcpus = 1\n", ""),
                0o644,
            )
            .file(
                "/ghost/vm/kvm.toml",
                vm_toml("kvm", "hyperv", "vcpus = 2", "").replace("vcpus = 1\n", ""),
                0o644,
            )
            .file(
                "/ghost/vm/cvm.toml",
                vm_toml(
                    "cvm",
                    "echo",
                    "[serial]\nmode = \"socket\"\npath = \"/tmp/cvm.console.log\"",
                    "",
                ),
                0o644,
            )
            .file("/ghost/vm/pb.toml", vm_toml("pb", "button", "", ""), 0o644)
            .file("/ghost/vm/rtc.toml", vm_toml("rtc", "rtc", "", ""), 0o644)
            .file(
                "/ghost/vm/ign.toml",
                vm_toml(
                    "ign",
                    "ignore",
                    "stop_timeout = \"3s\"",
                    "[[disk]]\npath = \"/tmp/ign.img\"\n\n[[net]]\ntap = \"tap-ign\"\n",
                ),
                0o644,
            )
            .file(
                "/ghost/vm/ign-other.toml",
                vm_toml(
                    "ign-other",
                    "ignore",
                    "",
                    "[[disk]]\npath = \"/tmp/ign.img\"\n",
                ),
                0o644,
            )
            .run(&[
                Scenario::new("power-button", BUTTON_L2).timeout(Duration::from_secs(200)),
                Scenario::new("ignores-button", IGNORE_L2).timeout(Duration::from_secs(200)),
                Scenario::new("rtc", RTC_L2).timeout(Duration::from_secs(200)),
                Scenario::new("console-api", CONSOLE_L2).timeout(Duration::from_secs(300)),
                Scenario::new("hyperv", HYPERV_L2).timeout(Duration::from_secs(300)),
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

#[test]
fn sigterm_presses_the_guests_power_button_and_it_powers_off() {
    let s = scenario("power-button");
    let t = s.transcript();
    s.assert_success();
    assert_eq!(s.line_after("POWER_BUTTON_PRESENT="), Some("yes"), "{t}");
    assert!(
        s.line_after("BUTTON_DEV=")
            .is_some_and(|d| d.starts_with("event")),
        "{t}"
    );
    assert!(s.contains("GHOST-BUTTON-PRESSED"), "no key event:\n{t}");
    assert!(
        s.contains("pb: SIGTERM: pressed the power button"),
        "ghost-vmm's log line:\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    if let Some(d) = s.time_between("@@GHOST-MARK sigterm", "GHOST_RC=") {
        eprintln!("SIGTERM to ghost-vmm's exit (busybox guest): {d:?}");
    }
}

#[test]
fn a_guest_that_ignores_the_button_is_stopped_hard_with_its_data_flushed() {
    let s = scenario("ignores-button");
    let t = s.transcript();
    s.assert_success();
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(3), "{t}");
    assert!(
        s.contains(
            "ign: stopped hard: the guest did not power off within stop_timeout (3s) of the power button"
        ),
        "{t}"
    );
    let waited = s
        .time_between("@@GHOST-MARK sigterm", "@@GHOST-MARK exited")
        .expect("marks");
    assert!(
        waited >= Duration::from_millis(2900),
        "stopped after {waited:?}, before stop_timeout"
    );
    let guest: String = s.value("GUEST_SUM=").expect("guest checksum");
    assert_eq!(
        s.value::<String>("DISK_SUM="),
        Some(guest),
        "bytes on disk: {t}"
    );
    // The disk's lock: held while the VM ran, released after the hard stop.
    assert_eq!(s.value::<i32>("CHECK_WHILE_RUNNING="), Some(2), "{t}");
    assert!(
        s.contains("disk[0].path: disk /tmp/ign.img is in use"),
        "{t}"
    );
    assert_eq!(s.value::<i32>("CHECK_AFTER="), Some(0), "{t}");
    assert_eq!(s.line_after("TAP_WHILE_RUNNING="), Some("yes"), "{t}");
    assert_eq!(s.line_after("TAP_AFTER="), Some("gone"), "{t}");
}

#[test]
fn the_guests_rtc_reads_the_hosts_time_and_keeps_what_it_is_set_to() {
    let s = scenario("rtc");
    let t = s.transcript();
    s.assert_success();
    assert!(
        s.line_after("RTC_NAME=")
            .is_some_and(|n| n.starts_with("rtc_cmos")),
        "{t}"
    );
    assert_eq!(s.line_after("RTC_DEV="), Some("yes"), "{t}");
    let hwclock = s.line_after("HWCLOCK=").unwrap_or_default();
    assert!(
        hwclock.contains("20") && !hwclock.to_lowercase().contains("error"),
        "busybox hwclock reads it: {hwclock:?}\n{t}"
    );
    let guest: i64 = s.value("RTC_EPOCH=").expect("guest RTC");
    let host: i64 = s.value("HOST_EPOCH=").expect("host clock");
    assert!(
        (guest - host).abs() <= 3,
        "the guest's RTC ({guest}) is the host's UTC ({host}) within a few seconds"
    );
    assert_eq!(s.line_after("RTC_SET="), Some("yes"), "{t}");
    let ran: i64 = s.value("RTC_AFTER_SET=").expect("after set");
    assert!(
        (315_360_001..=315_360_006).contains(&ran),
        "set 10 years ahead, read back 2 s later: {ran}\n{t}"
    );
    assert_eq!(s.line_after("ALARM_SET="), Some("yes"), "{t}");
    let before: u64 = s
        .value("IRQ8_BEFORE=")
        .expect("rtc0's IRQ in /proc/interrupts");
    let after: u64 = s
        .value("IRQ8_AFTER=")
        .expect("rtc0's IRQ in /proc/interrupts");
    assert!(
        after > before,
        "the alarm raised IRQ 8 ({before} -> {after})\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
}

#[test]
fn console_attach_detach_with_scrollback_reboot_and_stop_through_the_cli() {
    let s = scenario("console-api");
    let t = s.transcript();
    s.assert_success();
    assert_eq!(s.line_after("CONSOLE_SOCKET="), Some("yes"), "{t}");
    assert_eq!(s.value::<i32>("ATTACH1_RC="), Some(0), "{t}");
    assert!(s.contains("C1: CONSOLE-GUEST-READY"), "the replay:\n{t}");
    assert!(
        s.contains("C1: GUEST-GOT:hello-from-l2"),
        "typed and answered:\n{t}"
    );
    assert!(s.contains("C1ERR: Escape character is ^]."), "{t}");
    assert!(s.contains("C1ERR: Detached from cvm."), "{t}");
    assert_eq!(s.value::<i32>("ATTACH2_RC="), Some(0), "{t}");
    assert!(
        s.contains("C2: CONSOLE-GUEST-READY"),
        "replayed again:\n{t}"
    );
    assert!(
        s.contains("C2: GUEST-GOT:hello-from-l2"),
        "replayed again:\n{t}"
    );
    assert!(
        s.line_after("STATUS_CONSOLE=")
            .is_some_and(|c| c.starts_with("socket") && c.contains("/run/ghost-vmm/cvm.console")),
        "{t}"
    );
    assert_eq!(s.value::<i32>("REBOOT_RC="), Some(0), "{t}");
    assert_eq!(s.value::<u32>("BOOTS="), Some(2), "{t}");
    assert_eq!(s.value::<i32>("STOP_RC="), Some(0), "{t}");
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(3), "{t}");
    assert!(
        s.contains("cvm: stopped hard: the control API asked for a stop"),
        "{t}"
    );
    assert_eq!(s.line_after("SOCKETS_AFTER="), Some("gone"), "{t}");
}

/// The scenario's lines while the `hv` VM ran, and while the `kvm` VM ran after it.
fn lines_per_vm(s: &ScenarioResult) -> (Vec<&str>, Vec<&str>) {
    let lines: Vec<&str> = s.lines.iter().map(|l| l.text.as_str()).collect();
    let split = lines
        .iter()
        .position(|l| l.starts_with("GHOST_RC_hv="))
        .unwrap_or(lines.len());
    let (hv, kvm) = lines.split_at(split);
    (hv.to_vec(), kvm.to_vec())
}

fn value_in<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

#[test]
fn hyperv_enlightenments_make_the_guest_find_a_microsoft_hypervisor() {
    let s = scenario("hyperv");
    let t = s.transcript();
    s.assert_success();
    let (hv, kvm) = lines_per_vm(s);
    assert_eq!(s.value::<i32>("GHOST_RC_hv="), Some(0), "{t}");
    assert_eq!(s.value::<i32>("GHOST_RC_kvm="), Some(0), "{t}");
    // ghost-vmm's own account of what it offered (all of them: L2's KVM has every one).
    let offered = hv
        .iter()
        .find_map(|l| l.split("Hyper-V enlightenments: ").nth(1))
        .unwrap_or_else(|| panic!("ghost-vmm's log line:\n{t}"));
    for name in [
        "relaxed",
        "vapic",
        "spinlocks",
        "vpindex",
        "runtime",
        "time",
        "synic",
        "stimer",
        "frequencies",
        "tlbflush",
        "ipi",
    ] {
        assert!(offered.split(' ').any(|w| w == name), "{name} in {offered}");
    }
    assert_eq!(
        value_in(&hv, "HV_DETECTED="),
        Some("Microsoft Hyper-V"),
        "{t}"
    );
    let features = value_in(&hv, "HV_FEATURES=").unwrap_or_else(|| panic!("{t}"));
    // "low 0x..., high 0x..., hints 0x..., misc 0x...": low is 0x4000_0003 EAX.
    let low = features
        .strip_prefix("low 0x")
        .and_then(|r| r.split(',').next())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("privilege flags: {features}"));
    assert_eq!(low, 0xa7f, "the privileges offered: {features}");
    assert_eq!(
        value_in(&hv, "CLOCKSOURCE="),
        Some("hyperv_clocksource_tsc_page"),
        "{t}"
    );
    assert_eq!(value_in(&hv, "CPUS="), Some("2"), "{t}");
    assert!(hv.iter().any(|l| l.contains("GHOST-HV-DONE")), "{t}");
    assert!(!hv.iter().any(|l| l.contains("TASKSET_FAILED")), "{t}");
    let uptime = |lines: &[&str], k| {
        value_in(lines, k)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let slept = uptime(&hv, "T1=")
        .zip(uptime(&hv, "T0="))
        .map(|(a, b)| a - b);
    assert!(
        slept.is_some_and(|d| (0.9..5.0).contains(&d)),
        "the guest's clock runs: slept {slept:?} s\n{t}"
    );
    // Without the key: KVM's own identity.
    assert_eq!(value_in(&kvm, "HV_DETECTED="), Some("KVM"), "{t}");
    assert_eq!(value_in(&kvm, "HV_FEATURES="), None, "{t}");
    assert!(kvm.iter().any(|l| l.contains("GHOST-HV-DONE")), "{t}");
}
