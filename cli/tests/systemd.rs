//! ghost-vmm under systemd: the `sd_notify` messages it sends over a real notify socket (a
//! datagram socket this test binds, as systemd does for `Type=notify` services), and the unit
//! file it ships (`contrib/systemd/ghost-vmm@.service`), verified by `systemd-analyze`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    kvm_available, power_button_poller, print_then, Fixture, EXIT_STOPPED_HARD, GED_MMIO_START,
    HALT_FOREVER,
};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/systemd/ghost-vmm@.service"
);

/// Runs a payload VM with `$NOTIFY_SOCKET` set; after the guest printed its line, sends
/// SIGTERM; returns every notification received, in order, and the exit status.
fn notifications(code: &[u8], extra_vm: &str) -> (Vec<String>, Option<i32>) {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let fx = Fixture::new();
    let vm = fx.vm(code, extra_vm);
    let sock_path = fx.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("run")
        .arg(&vm)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut got = Vec::new();
    let mut signalled = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if !signalled && got.iter().any(|m| m.contains("READY=1")) {
            let pid = libc::pid_t::try_from(child.id()).expect("pid");
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            signalled = true;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            // Whatever was sent before the exit is queued on the socket.
            while let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ghost-vmm did not exit; notifications: {got:?}");
        }
    };
    (got, status)
}

/// The microseconds of the first `EXTEND_TIMEOUT_USEC=` message.
fn extension(msgs: &[String]) -> Option<u64> {
    msgs.iter()
        .flat_map(|m| m.lines())
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
}

#[test]
fn ready_then_stopping_and_more_time_while_the_guest_powers_off() {
    let code = print_then("WAITING\n", &power_button_poller(GED_MMIO_START));
    let (msgs, status) = notifications(&code, "stop_timeout = \"20s\"");
    assert_eq!(status, Some(0), "{msgs:?}");
    let ready = msgs.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    let stopping = msgs
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(
        ready.is_some() && stopping > ready,
        "READY=1, then STOPPING=1: {msgs:?}"
    );
    // The guest's 20 s and the teardown's allowance.
    let usec = extension(&msgs).expect("EXTEND_TIMEOUT_USEC");
    assert!(
        (20_000_000..=60_000_000).contains(&usec),
        "{usec} µs: {msgs:?}"
    );
}

#[test]
fn a_hard_stop_is_announced_too() {
    let code = print_then("WAITING\n", &HALT_FOREVER);
    let (msgs, status) = notifications(&code, "stop_timeout = \"1s\"");
    assert_eq!(status, Some(EXIT_STOPPED_HARD), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{msgs:?}"
    );
    assert!(extension(&msgs).is_some(), "{msgs:?}");
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_nothing_breaks() {
    // The same VM with NOTIFY_SOCKET pointing nowhere: notifications fail, the VM does not.
    let fx = Fixture::new();
    let vm = fx.vm(
        &print_then("BYE\n", &[0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xf4]),
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("run")
        .arg(&vm)
        .env("NOTIFY_SOCKET", fx.path("nobody-listens.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "BYE\n");
}

/// A root for `systemd-analyze verify --root`: the system's own units (for the targets the
/// unit names), the unit in /etc/systemd/system and the built binary where the unit runs it.
fn unit_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    for dir in [
        "usr/local/bin",
        "etc/systemd/system",
        "etc/ghost-vmm",
        "usr/lib/systemd",
    ] {
        std::fs::create_dir_all(r.join(dir)).expect("mkdir");
    }
    let units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("sysinit.target").exists())
        .expect("systemd's units (the systemd package)");
    let copied = Command::new("cp")
        .args(["-a", units])
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::copy(
        env!("CARGO_BIN_EXE_ghost-vmm"),
        r.join("usr/local/bin/ghost-vmm"),
    )
    .expect("binary");
    std::fs::copy(UNIT, r.join("etc/systemd/system/ghost-vmm@.service")).expect("unit");
    std::fs::write(r.join("etc/ghost-vmm/forge.toml"), "").expect("vm file");
    root
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let root = unit_root();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("ghost-vmm@forge.service")
        .output()
        .expect("systemd-analyze (the systemd package)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // verify exits 0 on lines it ignores: any word from it is a defect.
    assert!(said.trim().is_empty(), "{said}");
}

#[test]
fn the_unit_stops_through_sigterm_and_waits_longer_than_stop_timeout() {
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::trim)
    };
    assert_eq!(value("Type"), Some("notify"));
    assert_eq!(value("KillMode"), Some("mixed"));
    assert_eq!(value("ExecStop"), None, "SIGTERM is the graceful stop");
    let stop: u64 = value("TimeoutStopSec")
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec in seconds");
    let default = ghost_vmm::config::DEFAULT_STOP_TIMEOUT.duration().as_secs();
    assert!(
        stop > default + 30,
        "TimeoutStopSec {stop} s <= stop_timeout {default} s + teardown"
    );
    assert_eq!(
        value("ExecStart"),
        Some("/usr/local/bin/ghost-vmm run /etc/ghost-vmm/%i.toml")
    );
}
