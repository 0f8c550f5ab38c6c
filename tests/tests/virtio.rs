//! Issue 3's acceptance in the nested test host: virtio-blk and virtio-net over virtio-pci,
//! with the stock Debian cloud kernel as the guest. (The figures against QEMU are taken by
//! the benchmark harness, `benches/`.)
//!
//! All scenarios share one L2 boot:
//! - `ext4-roundtrip`: the guest mounts an ext4 image the test made with `mkfs.ext4 -d`,
//!   reads the file the test put there, writes 4 MiB, syncs and powers off; L2 then reads the
//!   new file out of the image with `debugfs`, and the checksums must match.
//! - `readonly`: a `readonly = true` disk is read-only in the guest, a raw write fails, and
//!   the image is byte-for-byte unchanged afterwards.
//! - `two-writers`: a second ghost-vmm on the same writable image exits 2 with a clear message
//!   while the first keeps running and powers off cleanly.
//! - `net`: the guest brings up eth0, pings the host end of the TAP (which ghost-vmm created),
//!   and sends 16 MiB over TCP; the checksums on both ends match, and the TAP is gone after.
//! - `blk-violation`, `net-violation` (issue 15): the real virtio-blk and virtio-net workers,
//!   started by a real driver, make a call their seccomp filter does not allow
//!   (`GHOST_SANDBOX_SELFTEST`, `socket(AF_INET)`) as soon as they are confined: the process
//!   dies of SIGSYS (status 159) with the line naming the thread; the TAP is gone after.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::guest_tools::vm_file;
use ghost_tests::testhost::{
    GuestInitramfs, RunReport, Scenario, ScenarioResult, TestHost, VIRTIO_MODULES,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
const KERNEL: &str = "/ghost/kernel/cloud/bzImage";

fn vm_toml(name: &str, initrd: &str, devices: &str) -> String {
    vm_file(name, KERNEL, initrd, CMDLINE, devices)
}

/// Guest: read the test's file, write a new one, sync, unmount.
const EXT4_GUEST: &str = r#"
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || { echo MOUNT_FAILED; exit 1; }
echo "READ_SUM=$(sha256sum /mnt/hello.bin)"
dd if=/dev/urandom of=/mnt/new.bin bs=1M count=4 2>/dev/null
echo "WRITE_SUM=$(sha256sum /mnt/new.bin)"
sync
umount /mnt && echo UMOUNT_OK
"#;

const EXT4_L2: &str = r#"
cp /ghost/ext4.img /tmp/rt.img
vm_start rt $GHOST_VMM run /ghost/vm/rt.toml
vm_wait rt 150
echo "GHOST_RC=$?"
debugfs -R "dump /new.bin /tmp/new.bin" /tmp/rt.img 2>/dev/null
echo "HOST_SUM=$(sha256sum /tmp/new.bin)"
"#;

/// Guest: the disk is read-only, raw writes fail, the file system mounts read-only.
const READONLY_GUEST: &str = r#"
echo "RO_FLAG=$(cat /sys/block/vda/ro)"
dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct 2>/dev/null
echo "RAW_WRITE_RC=$?"
mkdir -p /mnt
mount -t ext4 -o ro,noload /dev/vda /mnt && echo "RO_READ_SUM=$(sha256sum /mnt/hello.bin)"
touch /mnt/x 2>/dev/null; echo "TOUCH_RC=$?"
umount /mnt
"#;

const READONLY_L2: &str = r#"
cp /ghost/ext4.img /tmp/ro.img
before=$(sha256sum /tmp/ro.img)
vm_start ro $GHOST_VMM run /ghost/vm/ro.toml
vm_wait ro 150
echo "GHOST_RC=$?"
[ "$(sha256sum /tmp/ro.img)" = "$before" ] && echo IMAGE_SAME=yes || echo IMAGE_SAME=no
"#;

/// Guest for `two-writers`: waits for a line on its console, then powers off.
const WAITER_GUEST: &str = r#"
echo "WAITER_SIZE=$(cat /sys/block/vda/size)"
echo WAITER-READY
read -r _line
echo WAITER-RELEASED
"#;

const TWO_WRITERS_L2: &str = r#"
dd if=/dev/zero of=/tmp/shared.img bs=1M count=8 2>/dev/null
vm_start first $GHOST_VMM run /ghost/vm/first.toml
vm_wait_for first WAITER-READY 120 || exit 1
$GHOST_VMM run /ghost/vm/second.toml </dev/null >/tmp/second.out 2>&1
echo "SECOND_RC=$?"
echo "SECOND_SAID: $(cat /tmp/second.out)"
echo "SECOND_LINES=$(wc -l </tmp/second.out)"
vm_send first go
vm_wait_for first WAITER-RELEASED 30 || exit 1
vm_wait first 60
echo "FIRST_RC=$?"
"#;

/// Guest: static IP, ping the host end (retrying while L2 sets it up), 16 MiB over TCP.
const NET_GUEST: &str = r#"
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
n=0
until ping -c 1 -W 1 10.0.2.1 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -ge 60 ] && { echo PING_NEVER; exit 1; }
done
ping -c 3 10.0.2.1
dd if=/dev/urandom of=/tmp/payload bs=1M count=16 2>/dev/null
echo "GUEST_SUM=$(sha256sum /tmp/payload)"
timeout 120 nc 10.0.2.1 5000 </tmp/payload
echo "NC_RC=$?"
echo "TX_BYTES=$(cat /sys/class/net/eth0/statistics/tx_bytes)"
"#;

/// `wait_listening PORT`: until a TCP socket listens on PORT in L2 (at most 10 s).
const WAIT_LISTENING: &str = r#"
wait_listening() {
    _n=0
    until netstat -ltn 2>/dev/null | grep -q ":$1 "; do
        _n=$((_n + 1)); [ $_n -ge 100 ] && { echo "nothing listens on $1"; return 1; }
        sleep 0.1
    done
}
"#;

/// The receiver keeps its stdin open (`sleep |`): busybox nc half-closes the connection when
/// its stdin ends, which would cut the sender off after the first window.
const NET_L2: &str = r#"
vm_start net $GHOST_VMM run /ghost/vm/net.toml
n=0
until [ -e /sys/class/net/tap0 ]; do
    n=$((n + 1)); [ $n -ge 600 ] && { echo TAP_NEVER; vm_kill net; exit 1; }
    sleep 0.1
done
echo "TAP_CREATED=yes"
# Listen before the guest can reach us (it connects as soon as its ping gets an answer).
(sleep 200) | nc -l -p 5000 >/tmp/recv &
wait_listening 5000 || exit 1
ip addr add 10.0.2.1/24 dev tap0
ip link set tap0 up
vm_wait net 200
echo "GHOST_RC=$?"
echo "HOST_SUM=$(sha256sum /tmp/recv)"
[ -e /sys/class/net/tap0 ] && echo TAP_LEFT=yes || echo TAP_LEFT=no
"#;

/// `KIND`'s worker breaks its filter; the VM `NAME` dies of SIGSYS and its log names it.
fn violation_l2(name: &str, kind: &str, prepare: &str) -> String {
    format!(
        r#"
{prepare}
vm_start {name} env GHOST_SANDBOX_SELFTEST={kind} $GHOST_VMM run /ghost/vm/{name}.toml
vm_wait {name} 150
echo "GHOST_RC=$?"
echo "SANDBOX_SAID: $(grep 'ghost-vmm: sandbox:' "$GHOST_VM_DIR/{name}.log")"
[ -e /sys/class/net/tapsv ] && echo TAP_LEFT=yes || echo TAP_LEFT=no
"#
    )
}

/// The ext4 image: 32 MiB, made with `mkfs.ext4 -d` from a folder holding `hello.bin`
/// (1 MiB of pseudo-random bytes). Returns the image and the file's sha256.
fn ext4_image(dir: &Path) -> (Vec<u8>, String) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("image root");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let hello: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    std::fs::write(root.join("hello.bin"), &hello).expect("hello.bin");
    let image = dir.join("ext4.img");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("32M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs; tests/testhost/setup.sh installs it)");
    assert!(status.success(), "mkfs.ext4 failed");
    let sum = Command::new("sha256sum")
        .arg(root.join("hello.bin"))
        .output()
        .expect("sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned();
    (std::fs::read(image).expect("image"), sum)
}

struct Run {
    report: RunReport,
    hello_sum: String,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let work = tempfile::tempdir().expect("tempdir");
        let (image, hello_sum) = ext4_image(work.path());
        let disk = |path: &str, ro: bool| format!("[[disk]]\npath = \"{path}\"\nreadonly = {ro}\n");
        let vms = [
            ("rt", vm_toml("rt", "ext4", &disk("/tmp/rt.img", false))),
            ("ro", vm_toml("ro", "readonly", &disk("/tmp/ro.img", true))),
            (
                "first",
                vm_toml("first", "waiter", &disk("/tmp/shared.img", false)),
            ),
            (
                "second",
                vm_toml("second", "waiter", &disk("/tmp/shared.img", false)),
            ),
            ("net", vm_toml("net", "net", "[[net]]\ntap = \"tap0\"\n")),
            (
                "sv-blk",
                vm_toml("sv-blk", "ext4", &disk("/tmp/sv.img", false)),
            ),
            (
                "sv-net",
                vm_toml("sv-net", "waiter", "[[net]]\ntap = \"tapsv\"\n"),
            ),
        ];
        let guest = |body: &str| GuestInitramfs::new(body).modules(VIRTIO_MODULES);
        let mut host = TestHost::new("virtio")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .guest("ext4", guest(EXT4_GUEST))
            .guest("readonly", guest(READONLY_GUEST))
            .guest("waiter", guest(WAITER_GUEST))
            .guest("net", guest(NET_GUEST))
            .file("/ghost/ext4.img", image, 0o644)
            .binary("/usr/sbin/debugfs", "/usr/sbin/debugfs");
        for (name, toml) in vms {
            host = host.file(format!("/ghost/vm/{name}.toml"), toml, 0o644);
        }
        let t = Duration::from_secs(200);
        let report = host
            .run(&[
                Scenario::new("ext4-roundtrip", EXT4_L2).timeout(t),
                Scenario::new("readonly", READONLY_L2).timeout(t),
                Scenario::new("two-writers", TWO_WRITERS_L2).timeout(t),
                Scenario::new("net", format!("{WAIT_LISTENING}{NET_L2}"))
                    .timeout(Duration::from_secs(260)),
                Scenario::new(
                    "blk-violation",
                    violation_l2("sv-blk", "virtio-blk", "cp /ghost/ext4.img /tmp/sv.img"),
                )
                .timeout(t),
                Scenario::new("net-violation", violation_l2("sv-net", "virtio-net", "")).timeout(t),
            ])
            .expect("the test host boots");
        Run { report, hello_sum }
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = &run().report;
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(60)))
}

fn sum(s: &ScenarioResult, marker: &str) -> String {
    s.value::<String>(marker)
        .unwrap_or_else(|| panic!("no {marker}:\n{}", s.transcript()))
}

#[test]
fn ext4_image_round_trips_through_the_guest() {
    let s = scenario("ext4-roundtrip");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(
        sum(s, "READ_SUM="),
        run().hello_sum,
        "the guest read the test's file:\n{t}"
    );
    assert!(s.contains("UMOUNT_OK"), "{t}");
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    let written = sum(s, "WRITE_SUM=");
    assert_eq!(
        sum(s, "HOST_SUM="),
        written,
        "the bytes the guest synced are in the image:\n{t}"
    );
}

#[test]
fn readonly_disk_refuses_writes_and_stays_unchanged() {
    let s = scenario("readonly");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(
        s.value::<u32>("RO_FLAG="),
        Some(1),
        "the guest sees a read-only disk:\n{t}"
    );
    assert_ne!(
        s.value::<i32>("RAW_WRITE_RC="),
        Some(0),
        "a raw write must fail:\n{t}"
    );
    assert_ne!(s.value::<i32>("TOUCH_RC="), Some(0), "{t}");
    assert_eq!(sum(s, "RO_READ_SUM="), run().hello_sum, "{t}");
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("IMAGE_SAME="), Some("yes"), "{t}");
}

#[test]
fn second_vm_on_a_writable_image_is_refused_and_the_first_runs_on() {
    let s = scenario("two-writers");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.value::<i32>("SECOND_RC="), Some(2), "{t}");
    let said = s.line_after("SECOND_SAID:").unwrap_or_default();
    assert!(
        said.contains("disk[0].path")
            && said.contains("/tmp/shared.img")
            && said.contains("in use by another VM"),
        "a clear one-line message: {said}\n{t}"
    );
    assert_eq!(s.value::<u32>("SECOND_LINES="), Some(1), "{t}");
    assert!(
        s.contains("WAITER-RELEASED"),
        "the first VM still answers:\n{t}"
    );
    assert_eq!(s.value::<i32>("FIRST_RC="), Some(0), "{t}");
}

#[test]
fn guest_pings_the_tap_and_moves_16_mib_over_tcp() {
    let s = scenario("net");
    s.assert_success();
    let t = s.transcript();
    assert!(s.contains("TAP_CREATED=yes"), "{t}");
    assert!(
        s.contains("3 packets transmitted, 3 packets received"),
        "ping replies:\n{t}"
    );
    assert_eq!(s.value::<i32>("NC_RC="), Some(0), "{t}");
    assert_eq!(
        sum(s, "HOST_SUM="),
        sum(s, "GUEST_SUM="),
        "16 MiB arrived intact:\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(
        s.line_after("TAP_LEFT="),
        Some("no"),
        "ghost-vmm removes the TAP it created:\n{t}"
    );
}

/// The sandbox of a real worker: the forbidden call ends the process, naming the thread.
fn assert_violation_kills(scenario_name: &str, kind: &str) {
    let s = scenario(scenario_name);
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(128 + 31), "SIGSYS:\n{t}");
    let said = s.line_after("SANDBOX_SAID:").unwrap_or_default();
    assert!(
        said.contains(&format!(
            "the {kind} thread '{kind}' made system call socket (41) with arguments 0x2, 0x1, 0x0, which its seccomp filter does not allow"
        )),
        "{said}\n{t}"
    );
    assert_eq!(s.line_after("TAP_LEFT="), Some("no"), "{t}");
}

#[test]
fn a_forbidden_call_on_a_virtio_blk_worker_kills_the_process_naming_it() {
    assert_violation_kills("blk-violation", "virtio-blk");
}

#[test]
fn a_forbidden_call_on_a_virtio_net_worker_kills_the_process_naming_it() {
    assert_violation_kills("net-violation", "virtio-net");
}
