//! Issue 13's acceptance in the nested test host: a real Debian 12 (systemd, dbus, udev, root
//! on ext4 on virtio-blk; `tests/testhost/debian-image.sh`) under ghost-vmm, booted directly
//! from the image's own kernel and initramfs, with QEMU in the same L2 boot as the reference.
//!
//! All scenarios share one L2 boot. Each boots its own pristine copy of the image: L2 gets
//! the cached image once per scenario as a virtio disk (`/dev/vda`, `/dev/vdb`, ...), each
//! with its own throwaway overlay (`TestHost::disk`).
//! - `debian-sigterm`: ghost-vmm boots the image to multi-user (the image's
//!   `ghost-ready.service` prints `GHOST-READY`), then the test types commands into the serial
//!   console (root is logged in automatically): systemd's state, logind and dbus, the kernel
//!   command line, the RTC (`/sys/class/rtc/rtc0` against L2's clock, `hwclock`,
//!   `timedatectl`), the warnings of the journal. The guest writes 4 MiB without `sync`, and
//!   at once L2 sends ghost-vmm SIGTERM: the power button, logind powers the guest off,
//!   ghost-vmm exits 0. Afterwards L2 finds the file system clean (no journal recovery
//!   needed, `e2fsck -fn`) and the file on the disk, byte for byte (`debugfs`).
//! - `debian-api`: the same image under a second ghost-vmm, managed through the CLI and its
//!   control API: `status` and `list` show it, `pause` stops the guest's clock and progress
//!   for 5 s (its uptime advances by less than the wall clock), `resume` lets it carry on,
//!   and `shutdown --wait` powers it off with an unsynced file, which is on the disk after.
//! - `debian-qemu`: the same under QEMU (KVM in L2), powered off with QMP `system_powerdown`
//!   (the ACPI power button, handled by logind): proves the image and gives the baseline
//!   time to multi-user.
//!
//! Every figure (times, the journal's warnings) is printed (`-- --nocapture`); what is
//! asserted is what the guest said about itself, ghost-vmm's exit status and the file system.

use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::testhost::{
    debian_vm_file, DebianImage, RunReport, Scenario, ScenarioResult, TestHost, DEBIAN_CMDLINE,
    DEBIAN_GUEST_SHELL, DEBIAN_READY, DEBIAN_SHELL_READY,
};

/// The disks of the scenarios, in `TestHost::disk` order: one pristine copy each.
const GHOST_DISK: &str = "/dev/vda";
const API_DISK: &str = "/dev/vdb";
const QEMU_DISK: &str = "/dev/vdc";

/// How long the guest may take to reach multi-user (30–70 s seen; first boots longer).
const READY_TIMEOUT_S: u32 = 300;

/// L2 shell functions, after [`DEBIAN_GUEST_SHELL`]'s (`ask`, `dump`):
/// - `guest_setup VM`: `debian_shell_setup` (the guest's `r` and `j`), and `k`: the kernel
///   log's lines about platform devices ([`PLATFORM_LINES`]; the whole log is thousands of
///   console lines, each byte a VM exit, on an emulated CPU).
const GUEST_SHELL: &str = r#"
guest_setup() {
    debian_shell_setup "$1"
    vm_send "$1" 'k() { dmesg | grep -E "DMI|SMBIOS|ACPI: PM:|Power Button|rtc|RTC|clocksource: Switched|TSC unstable|virtio_blk|smpboot"; }'
}
"#;

/// What both VMMs' scenarios ask the guest once it is at its shell: `L3_*=` values, the
/// journal's warnings (`JOURNAL-BEGIN`..`JOURNAL-END`) and the kernel log's platform lines
/// (`DMESG-`: what devices the guest found, to compare the two VMMs).
fn guest_questions(vm: &str) -> String {
    format!(
        r#"
vm_wait_for {vm} {DEBIAN_SHELL_READY} 120 || {{ echo NO_SHELL; vm_kill {vm}; exit 1; }}
guest_setup {vm}
ask {vm} L3_STATE 'systemctl is-system-running --wait' 180 || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_MULTI_USER 'systemctl is-active multi-user.target' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_ACTIVE 'systemctl is-active systemd-logind dbus' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_FAILED 'systemctl --failed --no-legend --plain' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_SESSIONS 'loginctl list-sessions --no-legend' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_CMDLINE 'cat /proc/cmdline' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_KERNEL 'uname -r' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_CPUS nproc || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_ROOT 'findmnt -no SOURCE,FSTYPE,OPTIONS /' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_CLOCK 'date -u +%FT%TZ' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_CLOCKSOURCE 'cat /sys/devices/system/clocksource/clocksource0/current_clocksource' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_ANALYZE systemd-analyze || {{ vm_kill {vm}; exit 1; }}
dump {vm} JOURNAL 'journalctl -b -p warning -o short-monotonic --no-pager' 120 || {{ vm_kill {vm}; exit 1; }}
dump {vm} DMESG k 180 || {{ vm_kill {vm}; exit 1; }}
"#
    )
}

/// After the VM exited: L2 checks the guest's root file system on `disk` (read-only), and
/// reads the file the guest wrote last out of it.
fn fs_check(disk: &str) -> String {
    format!(
        r#"
debugfs -R "dump /root/unsynced.bin /tmp/unsynced.bin" {disk} 2>/dev/null
echo "DISK_SUM=$(sha256sum /tmp/unsynced.bin 2>/dev/null | cut -d' ' -f1)"
rm -f /tmp/unsynced.bin
dumpe2fs -h {disk} >/tmp/dumpe2fs.out 2>/dev/null
echo "FS_STATE=$(sed -n 's/^Filesystem state: *//p' /tmp/dumpe2fs.out)"
echo "FS_FEATURES=$(sed -n 's/^Filesystem features: *//p' /tmp/dumpe2fs.out)"
echo "FS_MOUNTS=$(sed -n 's/^Mount count: *//p' /tmp/dumpe2fs.out)"
echo "FS_LAST_MOUNT=$(sed -n 's/^Last mount time: *//p' /tmp/dumpe2fs.out)"
e2fsck -fn {disk} >/tmp/fsck.out 2>&1
echo "FSCK_RC=$?"
sed 's/^/fsck: /' /tmp/fsck.out
"#
    )
}

/// The guest writes 4 MiB of random bytes to `/root/unsynced.bin` and reports their
/// checksum; nothing syncs them (the stop request follows at once).
fn write_unsynced(vm: &str) -> String {
    format!(
        r#"ask {vm} L3_UNSYNCED 'sh -c "head -c 4194304 /dev/urandom >/root/unsynced.bin && sha256sum /root/unsynced.bin"' || {{ vm_kill {vm}; exit 1; }}"#
    )
}

/// `debian-sigterm`: ghost-vmm boots the image on [`GHOST_DISK`], the guest answers, writes a
/// file without syncing, and SIGTERM (the power button) powers it off.
fn ghost_sigterm_script() -> String {
    let vm = "l3";
    format!(
        r#"{DEBIAN_GUEST_SHELL}{GUEST_SHELL}
[ -b {GHOST_DISK} ] || {{ echo "NO_DISK {GHOST_DISK}"; exit 1; }}
ghost_mark vm-start
vm_start {vm} env GHOST_LOG=info $GHOST_VMM run /ghost/vm/debian.toml
vm_wait_for {vm} {DEBIAN_READY} {READY_TIMEOUT_S} || {{ vm_kill {vm}; exit 1; }}
ghost_mark multi-user
{questions}
ask {vm} L3_RTC_EPOCH 'cat /sys/class/rtc/rtc0/since_epoch' || {{ vm_kill {vm}; exit 1; }}
echo "HOST_EPOCH=$(date -u +%s)"
ask {vm} L3_RTC_NAME 'cat /sys/class/rtc/rtc0/name' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_HWCLOCK 'hwclock --show --utc' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_HWCLOCK_RC 'sh -c "hwclock --show --utc >/dev/null 2>&1; echo rc=\$?"' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_TIMEDATE 'timedatectl status' || {{ vm_kill {vm}; exit 1; }}
{unsynced}
ghost_mark sigterm
kill -TERM "$(cat $GHOST_VM_DIR/{vm}.pid)"
vm_wait {vm} 180
echo "VM_RC=$?"
ghost_mark vm-exited
{fs}
"#,
        questions = guest_questions(vm),
        unsynced = write_unsynced(vm),
        fs = fs_check(GHOST_DISK),
    )
}

/// `debian-api`: ghost-vmm boots the image on [`API_DISK`] as VM `debian2`; the CLI shows it,
/// pauses and resumes it, and shuts it down.
fn ghost_api_script() -> String {
    let vm = "l3b";
    format!(
        r#"{DEBIAN_GUEST_SHELL}{GUEST_SHELL}
[ -b {API_DISK} ] || {{ echo "NO_DISK {API_DISK}"; exit 1; }}
ghost_mark vm-start
vm_start {vm} env GHOST_LOG=info $GHOST_VMM run /ghost/vm/debian2.toml
vm_wait_for {vm} {DEBIAN_READY} {READY_TIMEOUT_S} || {{ vm_kill {vm}; exit 1; }}
ghost_mark multi-user
vm_wait_for {vm} {DEBIAN_SHELL_READY} 120 || {{ echo NO_SHELL; vm_kill {vm}; exit 1; }}
guest_setup {vm}
# A round trip first: until the guest has answered it, its console still echoes what
# guest_setup sent, and those bytes would land inside the lines below. Each block then
# starts on a line of its own (after the prompt) and goes out in one write.
ask {vm} L3_UP1 'cut -d" " -f1 /proc/uptime' || {{ vm_kill {vm}; exit 1; }}
$GHOST_VMM status debian2 >/tmp/status.out 2>&1; rc=$?
printf '\nSTATUS_RC=%s\n%s\n' "$rc" "$(sed 's/^/STATUS: /' /tmp/status.out)"
printf '\n%s\n' "$($GHOST_VMM list 2>&1 | sed 's/^/LIST: /')"
$GHOST_VMM status nosuchvm 2>&1; printf '\nNOSUCH_RC=%s\n' "$?"
ghost_mark pause
$GHOST_VMM pause debian2; echo "PAUSE_RC=$?"
$GHOST_VMM status debian2 | sed -n 's/^state: */PAUSED_STATE=/p'
sleep 5
$GHOST_VMM resume debian2; echo "RESUME_RC=$?"
ghost_mark resumed
$GHOST_VMM status debian2 | sed -n 's/^state: */RESUMED_STATE=/p'
ask {vm} L3_UP2 'cut -d" " -f1 /proc/uptime' || {{ vm_kill {vm}; exit 1; }}
ask {vm} L3_ALIVE 'systemctl is-system-running' || {{ vm_kill {vm}; exit 1; }}
{unsynced}
ghost_mark shutdown
$GHOST_VMM shutdown debian2 --wait --timeout 180; echo "SHUTDOWN_RC=$?"
vm_wait {vm} 30
echo "VM_RC=$?"
ghost_mark vm-exited
{fs}
"#,
        unsynced = write_unsynced(vm),
        fs = fs_check(API_DISK),
    )
}

/// `debian-qemu`: QEMU boots the image on [`QEMU_DISK`], the guest answers, and QMP's
/// `system_powerdown` presses the ACPI power button. (Busybox's `nc` has no unix sockets:
/// QMP listens on L2's loopback.)
fn qemu_boot_script() -> String {
    let vm = "q3";
    format!(
        r#"{DEBIAN_GUEST_SHELL}{GUEST_SHELL}
[ -b {QEMU_DISK} ] || {{ echo "NO_DISK {QEMU_DISK}"; exit 1; }}
ghost_mark vm-start
vm_start {vm} $QEMU -accel kvm -machine q35 -cpu host -smp 2 -m 1G -nographic -no-reboot \
    -nic none -kernel $GHOST_DEBIAN_KERNEL -initrd $GHOST_DEBIAN_INITRD -append "{DEBIAN_CMDLINE}" \
    -drive file={QEMU_DISK},if=virtio,format=raw -qmp tcp:127.0.0.1:4444,server=on,wait=off
vm_wait_for {vm} {DEBIAN_READY} {READY_TIMEOUT_S} || {{ vm_kill {vm}; exit 1; }}
ghost_mark multi-user
{questions}
ghost_mark poweroff
(printf '{{"execute":"qmp_capabilities"}}\n{{"execute":"system_powerdown"}}\n'; sleep 2) \
    | nc 127.0.0.1 4444 >/tmp/qmp.out 2>&1
echo "QMP_RC=$?"
echo "QMP_SAID=$(tr '\n' ' ' </tmp/qmp.out)"
vm_wait {vm} 120
echo "VM_RC=$?"
ghost_mark vm-exited
{fs}
"#,
        questions = guest_questions(vm),
        fs = fs_check(QEMU_DISK),
    )
}

struct Run {
    report: RunReport,
    image: DebianImage,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let image =
            DebianImage::ensure().expect("the Debian image (tests/testhost/debian-image.sh)");
        eprintln!(
            "debian image: {} (kernel {}; built in {} s; {} MiB apparent, {} MiB on disk)",
            image.dir.display(),
            image.kernel_version,
            image.build_info("build_seconds").unwrap_or_default(),
            image
                .build_info("image_apparent_bytes")
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0)
                >> 20,
            image
                .build_info("image_actual_bytes")
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0)
                >> 20,
        );
        let t = Duration::from_secs(600);
        let report = TestHost::new("server-lifecycle")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .without_l3_kernel(ghost_tests::testhost::KernelFlavor::Cloud)
            .debian(&image)
            .disk(&image.image) // GHOST_DISK
            .disk(&image.image) // API_DISK
            .disk(&image.image) // QEMU_DISK
            .binary("/usr/sbin/e2fsck", "/usr/sbin/e2fsck")
            .binary("/usr/sbin/dumpe2fs", "/usr/sbin/dumpe2fs")
            .binary("/usr/sbin/debugfs", "/usr/sbin/debugfs")
            .file(
                "/ghost/vm/debian.toml",
                debian_vm_file("debian", GHOST_DISK),
                0o644,
            )
            .file(
                "/ghost/vm/debian2.toml",
                debian_vm_file("debian2", API_DISK),
                0o644,
            )
            .run(&[
                Scenario::new("debian-sigterm", ghost_sigterm_script()).timeout(t),
                Scenario::new("debian-api", ghost_api_script()).timeout(t),
                Scenario::new("debian-qemu", qemu_boot_script()).timeout(t),
            ])
            .expect("the test host boots");
        Run { report, image }
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = &run().report;
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(60)))
}

/// The lines between `NAME-BEGIN` and `NAME-END` (the output of a `dump`).
fn dumped<'a>(s: &'a ScenarioResult, name: &str) -> Vec<&'a str> {
    let begin = format!("{name}-BEGIN");
    let end = format!("{name}-END");
    s.lines
        .iter()
        .map(|l| l.text.as_str())
        .skip_while(|t| !t.ends_with(&begin))
        .skip(1)
        .take_while(|t| !t.ends_with(&end))
        .collect()
}

/// Kernel log lines that say which platform devices a guest found: firmware tables, the
/// power button, the RTC, clock sources, the disk's queues.
const PLATFORM_LINES: &[&str] = &[
    "DMI",
    "SMBIOS",
    "ACPI: PM:",
    "Power Button",
    "rtc",
    "RTC",
    "clocksource: Switched",
    "TSC unstable",
    "virtio_blk",
    "smpboot: CPU0",
    "smpboot: Total",
];

/// Prints the figures of a boot: time to multi-user (host clock, from `vm_start`), the
/// guest's own uptime then, systemd-analyze, poweroff time, the platform devices the kernel
/// reported (or missed), and the journal's warnings.
fn print_figures(vmm: &str, s: &ScenarioResult) {
    let secs = |d: Option<Duration>| {
        d.map_or_else(|| "?".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
    };
    eprintln!(
        "{vmm}: vm_start -> {DEBIAN_READY} {} s (guest uptime then {} s); stop request -> exit {} s; {}",
        secs(s.time_between("@@GHOST-MARK vm-start", DEBIAN_READY)),
        s.value::<String>("GHOST-READY uptime=").unwrap_or_else(|| "?".into()),
        secs(
            ["poweroff", "sigterm", "shutdown"]
                .iter()
                .find_map(|m| s.time_between(&format!("@@GHOST-MARK {m}"), "@@GHOST-MARK vm-exited"))
        ),
        s.line_after("L3_ANALYZE=").unwrap_or("?"),
    );
    let dmesg = dumped(s, "DMESG");
    eprintln!(
        "{vmm}: platform, from the guest's dmesg ({} lines):",
        dmesg.len()
    );
    for line in dmesg
        .iter()
        .filter(|l| PLATFORM_LINES.iter().any(|p| l.contains(p)))
    {
        eprintln!("  {line}");
    }
    let journal = dumped(s, "JOURNAL");
    eprintln!(
        "{vmm}: the journal's warnings and errors ({} lines):",
        journal.len()
    );
    for line in journal {
        eprintln!("  {line}");
    }
}

/// Multi-user reached, logind and dbus active, root on the virtio disk, the VMM exited 0,
/// and the file system is clean afterwards.
fn assert_debian_lifecycle(s: &ScenarioResult) {
    let t = s.transcript();
    s.assert_success();
    assert!(s.contains(DEBIAN_READY), "no {DEBIAN_READY}:\n{t}");
    assert_eq!(s.line_after("L3_MULTI_USER="), Some("active"), "{t}");
    assert_eq!(
        s.line_after("L3_ACTIVE="),
        Some("active active"),
        "systemd-logind and dbus:\n{t}"
    );
    assert_eq!(
        s.line_after("L3_STATE="),
        Some("running"),
        "systemd's state (failed units: {:?}):\n{t}",
        s.line_after("L3_FAILED=")
    );
    let cmdline = s.line_after("L3_CMDLINE=").unwrap_or_default();
    assert!(cmdline.contains("root=/dev/vda"), "{t}");
    assert_eq!(
        s.line_after("L3_KERNEL="),
        Some(run().image.kernel_version.as_str()),
        "the image's own kernel:\n{t}"
    );
    assert_eq!(s.value::<u32>("L3_CPUS="), Some(2), "{t}");
    let root = s
        .line_after("L3_ROOT=")
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        root.starts_with("/dev/vda ext4 rw"),
        "root is the virtio disk, ext4, read-write: {root}\n{t}"
    );
    assert!(
        s.line_after("L3_SESSIONS=")
            .is_some_and(|l| l.contains("root") && l.contains("ttyS0")),
        "logind registered root's login on ttyS0:\n{t}"
    );
    assert_eq!(
        s.value::<i32>("VM_RC="),
        Some(0),
        "the VMM's exit status:\n{t}"
    );
    assert_eq!(s.line_after("FS_STATE="), Some("clean"), "{t}");
    let features = s.line_after("FS_FEATURES=").unwrap_or_default();
    assert!(
        features.contains("has_journal") && !features.contains("needs_recovery"),
        "the journal was checkpointed at unmount: {features}\n{t}"
    );
    assert_eq!(s.value::<i32>("FSCK_RC="), Some(0), "e2fsck -fn:\n{t}");
}

/// The 4 MiB the guest wrote without `sync` just before the stop request are on the disk.
fn assert_unsynced_file_on_disk(s: &ScenarioResult) {
    let t = s.transcript();
    let written = s
        .line_after("L3_UNSYNCED=")
        .and_then(|l| l.split_whitespace().next())
        .filter(|h| h.len() == 64)
        .unwrap_or_else(|| panic!("the guest's checksum:\n{t}"));
    assert_eq!(
        s.line_after("DISK_SUM="),
        Some(written),
        "the file on the disk after the stop:\n{t}"
    );
}

#[test]
fn sigterm_powers_debian_off_through_logind_with_its_data_on_disk() {
    let s = scenario("debian-sigterm");
    print_figures("ghost-vmm", s);
    assert_debian_lifecycle(s);
    let t = s.transcript();
    assert!(
        s.contains("debian: SIGTERM: pressed the power button"),
        "ghost-vmm pressed the button:\n{t}"
    );
    assert_unsynced_file_on_disk(s);
    if let Some(d) = s.time_between("@@GHOST-MARK sigterm", "@@GHOST-MARK vm-exited") {
        eprintln!("ghost-vmm: SIGTERM -> exit {:.1} s", d.as_secs_f64());
    }
}

#[test]
fn debians_rtc_reads_the_hosts_time_and_hwclock_works() {
    let s = scenario("debian-sigterm");
    let t = s.transcript();
    let guest: i64 = s.value("L3_RTC_EPOCH=").expect("the guest's RTC");
    let host: i64 = s.value("HOST_EPOCH=").expect("L2's clock");
    assert!(
        (guest - host).abs() <= 5,
        "/dev/rtc0 ({guest}) reads the host's UTC ({host}):\n{t}"
    );
    assert!(
        s.line_after("L3_RTC_NAME=")
            .is_some_and(|n| n.starts_with("rtc_cmos")),
        "{t}"
    );
    assert_eq!(
        s.line_after("L3_HWCLOCK_RC="),
        Some("rc=0"),
        "hwclock --show:\n{t}"
    );
    let timedate = s.line_after("L3_TIMEDATE=").unwrap_or_default();
    assert!(
        timedate.contains("RTC time:") && !timedate.contains("RTC time: n/a"),
        "systemd reads the RTC: {timedate}\n{t}"
    );
}

#[test]
fn the_cli_shows_pauses_resumes_and_shuts_debian_down() {
    let s = scenario("debian-api");
    let t = s.transcript();
    s.assert_success();
    assert_eq!(s.value::<i32>("STATUS_RC="), Some(0), "{t}");
    assert!(s.contains("STATUS: name:    debian2"), "{t}");
    assert!(s.contains("STATUS: state:   running"), "{t}");
    assert!(s.contains("STATUS: vcpus:   2"), "{t}");
    assert!(
        s.contains(&format!("STATUS: disk:    vda <- {API_DISK}")),
        "{t}"
    );
    assert!(
        s.lines
            .iter()
            .any(|l| l.text.starts_with("LIST: debian2") && l.text.contains("running")),
        "{t}"
    );
    assert_eq!(s.value::<i32>("NOSUCH_RC="), Some(2), "{t}");
    assert!(s.contains("no VM named nosuchvm is running"), "{t}");
    assert_eq!(s.value::<i32>("PAUSE_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("PAUSED_STATE="), Some("paused"), "{t}");
    assert_eq!(s.value::<i32>("RESUME_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("RESUMED_STATE="), Some("running"), "{t}");
    // The guest's clock stood still while paused: between its two uptime readings the wall
    // clock ran the 5 s pause more than the guest did.
    let up1: f64 = s.value("L3_UP1=").expect("uptime before");
    let up2: f64 = s.value("L3_UP2=").expect("uptime after");
    let wall = s
        .time_between("L3_UP1=", "L3_UP2=")
        .expect("both readings")
        .as_secs_f64();
    eprintln!(
        "pause: guest uptime +{:.2} s over {wall:.2} s of wall clock",
        up2 - up1
    );
    assert!(
        up2 - up1 < wall - 4.0,
        "the guest ran while paused: +{:.2} s in {wall:.2} s\n{t}",
        up2 - up1
    );
    assert_eq!(
        s.line_after("L3_ALIVE="),
        Some("running"),
        "carries on:\n{t}"
    );
    assert_eq!(s.value::<i32>("SHUTDOWN_RC="), Some(0), "{t}");
    assert!(
        s.contains("debian2: the control API's shutdown: pressed the power button"),
        "{t}"
    );
    assert_eq!(s.value::<i32>("VM_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("FS_STATE="), Some("clean"), "{t}");
    assert_eq!(s.value::<i32>("FSCK_RC="), Some(0), "{t}");
    assert_unsynced_file_on_disk(s);
}

#[test]
fn debian_boots_under_qemu_and_its_power_button_powers_it_off() {
    let s = scenario("debian-qemu");
    print_figures("qemu", s);
    let t = s.transcript();
    assert_eq!(s.value::<i32>("QMP_RC="), Some(0), "{t}");
    assert!(
        s.line_after("QMP_SAID=")
            .is_some_and(|l| !l.contains("error")),
        "{t}"
    );
    assert_debian_lifecycle(s);
}
