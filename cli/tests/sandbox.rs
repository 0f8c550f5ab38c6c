//! The sandbox of a real `ghost-vmm run`, against tiny payload guests on this host's KVM:
//! every thread confined (`Seccomp: 2` in each `/proc/PID/task/TID/status`), `no_new_privs`,
//! guest RAM out of core dumps and forks (`dd`, `dc` in `smaps`); a forbidden call from the
//! VMM, vCPU or API thread kills the process with a line naming the thread (the
//! `GHOST_SANDBOX_SELFTEST` hook makes the real thread make one); `sandbox = false` runs
//! unconfined and says so. (The virtio workers' filters are shown in the nested test host,
//! `tests/tests/virtio.rs`, where a real driver starts them.)

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{print_then, Fixture, Running, StderrNow, EXIT_STOPPED_HARD, TICKER};

/// The value of `key:` in a `/proc` status file.
fn field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Each thread's name and its `Seccomp:` mode.
fn threads(pid: u32) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        out.insert(
            comm.trim().to_owned(),
            field(&status, "Seccomp").unwrap_or_default(),
        );
    }
    out
}

/// The `VmFlags` of the mapping of exactly `kib` KiB (guest RAM).
fn ram_flags(pid: u32, kib: u64) -> Vec<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut in_ram = false;
    for line in smaps.lines() {
        if let Some(size) = line.strip_prefix("Size:") {
            in_ram = size.trim() == format!("{kib} kB");
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if in_ram {
                return flags.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
    panic!("no {kib} kB mapping in smaps:\n{smaps}");
}

/// ghost-sandbox's self-test hooks (`ghost_sandbox::SELFTEST_ENV`,
/// `ghost_sandbox::files::SELFTEST_OPEN_ENV`).
const SELFTEST_ENV: &str = "GHOST_SANDBOX_SELFTEST";
const SELFTEST_OPEN_ENV: &str = "GHOST_SANDBOX_SELFTEST_OPEN";

fn ticker() -> Vec<u8> {
    print_then("READY\n", &TICKER)
}

#[test]
fn every_thread_of_a_running_vm_is_confined_and_guest_ram_stays_out_of_dumps() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &ticker(), "");
    vm.wait_for("READY");
    let pid = vm.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(field(&status, "Seccomp").as_deref(), Some("2"), "{status}");
    assert_eq!(
        field(&status, "NoNewPrivs").as_deref(),
        Some("1"),
        "{status}"
    );
    let threads = threads(pid);
    for name in ["ghost-vmm", "api", "vcpu0"] {
        assert_eq!(
            threads.get(name).map(String::as_str),
            Some("2"),
            "thread {name}: {threads:?}"
        );
    }
    assert!(threads.values().all(|mode| mode == "2"), "{threads:?}");
    // The VM file's 64 MiB of RAM: not dumped (dd), not copied into a child (dc).
    let flags = ram_flags(pid, 64 * 1024);
    assert!(flags.iter().any(|f| f == "dd"), "{flags:?}");
    assert!(flags.iter().any(|f| f == "dc"), "{flags:?}");
    // Confined, it still stops as it should: a hard stop, disks flushed, exit 3.
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(20));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    assert!(!stderr.contains("sandbox:"), "{stderr}");
}

#[test]
fn after_setup_a_file_outside_the_vms_own_is_refused() {
    let fx = Fixture::new();
    let outside = fx.path("another-vm.img");
    std::fs::write(&outside, b"not yours").expect("write");
    let mut vm = Running::start_with_env(
        &fx,
        &ticker(),
        "",
        &[(SELFTEST_OPEN_ENV, outside.to_str().expect("utf-8"))],
    );
    vm.wait_for("READY");
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(20));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    let want = format!(
        "sandbox self-test: cannot open {}: Permission denied (os error 13)",
        outside.display()
    );
    assert!(stderr.contains(&want), "no {want:?} in: {stderr}");
}

#[test]
fn sandbox_false_runs_unconfined_and_says_so() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &ticker(), "sandbox = false");
    vm.wait_for("READY");
    let pid = vm.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(field(&status, "Seccomp").as_deref(), Some("0"), "{status}");
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(20));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    assert!(
        stderr.contains("the sandbox is off (vm.sandbox = false)"),
        "{stderr}"
    );
}

/// The thread of `kind` makes a forbidden call as soon as it is confined: the process dies
/// of SIGSYS and its last line names the thread and the call.
fn violation_kills(kind: &str, thread: &str) {
    let fx = Fixture::new();
    let mut vm = Running::start_with_env(&fx, &ticker(), "", &[(SELFTEST_ENV, kind)]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = vm.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the {kind} thread's violation did not end the process"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = vm.child.wait_with_output_now();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}: {stderr}");
    // socket(AF_INET, SOCK_STREAM, 0), from the registers.
    let want = format!(
        "the {kind} thread '{thread}' made system call socket (41) with arguments 0x2, 0x1, 0x0, which"
    );
    assert!(stderr.contains(&want), "no {want:?} in: {stderr}");
}

#[test]
fn a_forbidden_call_on_the_vmm_thread_kills_the_process_naming_it() {
    violation_kills("vmm", "ghost-vmm");
}

#[test]
fn a_forbidden_call_on_a_vcpu_thread_kills_the_process_naming_it() {
    violation_kills("vcpu", "vcpu0");
}

#[test]
fn a_forbidden_call_on_the_api_thread_kills_the_process_naming_it() {
    violation_kills("api", "api");
}

#[test]
fn check_reports_what_the_host_gives_the_sandbox() {
    let fx = Fixture::new();
    let check = |extra: &str| {
        let vm = fx.vm(&ticker(), extra);
        let out = common::ghost_vmm(&[std::path::Path::new("check"), &vm]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let on = check("");
    // This host's kernel has both (the tests above rely on it).
    assert!(
        on.contains("sandbox: seccomp filters per thread, landlock ABI "),
        "{on}"
    );
    let off = check("sandbox = false");
    assert!(off.contains("sandbox: off (vm.sandbox = false)"), "{off}");
}

#[test]
fn a_vm_started_as_root_runs_as_its_user_and_its_keeper_cleans_up() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (to drop it)");
        return;
    }
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &ticker(), "user = \"65534\"\ngroup = \"65534\"");
    vm.wait_for("READY");
    let pid = vm.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(
        field(&status, "Uid").as_deref(),
        Some("65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert_eq!(
        field(&status, "Gid").as_deref(),
        Some("65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert_eq!(
        field(&status, "Groups").as_deref(),
        Some("65534"),
        "{status}"
    );
    assert_eq!(
        field(&status, "CapEff").as_deref(),
        Some("0000000000000000"),
        "{status}"
    );
    assert_eq!(field(&status, "Seccomp").as_deref(), Some("2"), "{status}");
    // The control API still answers (its socket was bound as root).
    let socket = fx.path("ctl.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("status")
        .arg(&socket)
        .output()
        .expect("status");
    assert!(out.status.success(), "{out:?}");
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(20));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    // The user could not remove the socket from root's folder; the keeper did, before
    // ghost-vmm exited.
    assert!(!socket.exists(), "the control socket is left: {stderr}");
}

#[test]
fn an_unknown_user_is_refused_before_anything_starts() {
    let fx = Fixture::new();
    let vm = fx.vm(&ticker(), "user = \"no-such-user-ghost\"");
    let out = common::ghost_vmm(&[std::path::Path::new("run"), &vm]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("vm.user") && stderr.contains("no-such-user-ghost: no such user"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!fx.path("ctl.sock").exists());
}
