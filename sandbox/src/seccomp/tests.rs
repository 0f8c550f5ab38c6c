//! The filters for real: each scenario runs in a child process (this test binary again,
//! told by `GHOST_SANDBOX_SCENARIO` what to do) that enables the sandbox, confines a thread
//! as a kind, makes the calls that kind makes (they must pass), then one it must not (the
//! child must die of SIGSYS, its stderr naming the thread and the call).

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use super::*;
use crate::ThreadKind;

const SCENARIO_ENV: &str = "GHOST_SANDBOX_SCENARIO";

#[test]
fn the_table_has_one_entry_per_call() {
    let mut seen = HashSet::new();
    for e in TABLE {
        assert!(seen.insert(e.syscall), "{} twice", e.syscall.name());
        assert!(!e.why.is_empty(), "{} has no reason", e.syscall.name());
        assert!(!e.who.is_empty(), "{} is for nobody", e.syscall.name());
    }
    assert!(
        !seen.contains(&KILL_SWITCH),
        "the kill switch must be allowed to nobody"
    );
}

#[test]
fn what_a_started_thread_does_passes_the_vmm_threads_filter_too() {
    for e in TABLE {
        let children = [
            ThreadKind::Vcpu,
            ThreadKind::BlockWorker,
            ThreadKind::NetWorker,
        ];
        if children.iter().any(|k| e.who.contains(k)) {
            assert!(
                e.who.contains(&ThreadKind::Vmm),
                "{}: a thread the VMM thread starts needs it, so must the VMM thread",
                e.syscall.name()
            );
        }
    }
}

#[test]
fn every_filter_compiles() {
    let filters = SeccompFilters::compile().expect("compiles");
    for kind in ThreadKind::ALL {
        assert!(!filters.program(kind).is_empty(), "{kind:?}");
    }
    // The narrow kinds are much smaller than the VMM thread's union.
    assert!(filters.program(ThreadKind::Vcpu).len() < filters.program(ThreadKind::Vmm).len());
}

/// Runs `scenario` in a child; returns (how it ended, its stderr).
fn run_child(test: &str, scenario: &str) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_ENV, scenario)
        .output()
        .expect("the child runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_killed(test: &str, scenario: &str, thread: &str, kind: &str, call: &str) {
    let (status, stderr) = run_child(test, scenario);
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "{scenario}: {status:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("ALLOWED-CALLS-PASSED"),
        "{scenario}: the kind's own calls did not all pass:\n{stderr}"
    );
    // `socket-unix-stream`: the call is `socket`.
    let syscall = call.split('-').next().unwrap_or(call);
    let want = format!("the {kind} thread '{thread}' made system call {syscall} (");
    assert!(
        stderr.contains(&want),
        "{scenario}: no `{want}` in:\n{stderr}"
    );
    assert!(!stderr.contains("FORBIDDEN-CALL-RETURNED"), "{stderr}");
}

/// In the child: the calls every kind makes, then those of `kind` (`evt`: an eventfd made
/// before the thread confined itself, as the VMM thread makes them for the others).
fn allowed_calls(kind: ThreadKind, evt: i32) {
    // Memory, locks, time, eventfds: everyone.
    let v: Vec<u8> = vec![7; 1 << 20];
    assert_eq!(v[12345], 7);
    let m = std::sync::Mutex::new(1);
    *m.lock().expect("lock") += 1;
    let _ = std::time::Instant::now();
    let _ = std::collections::HashMap::<u8, u8>::new();
    // SAFETY: eventfd writes take 8 bytes from a live u64.
    let n = unsafe { libc::write(evt, (&1u64 as *const u64).cast(), 8) };
    assert_eq!(n, 8);
    let ioctl = |request: u64| {
        // SAFETY: the requests go to an eventfd, which has no ioctls: ENOTTY, no effect.
        unsafe { libc::ioctl(evt, request as libc::Ioctl, 0) }
    };
    for &request in ioctls::allowed(kind) {
        assert_eq!(ioctl(request), -1, "{request:#x}");
    }
    if kind == ThreadKind::Vmm {
        // sd_notify's socket.
        // SAFETY: plain arguments; the fd is closed at once.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            libc::close(fd);
        }
    }
    // SAFETY: a read-write anonymous mapping, unmapped at once.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::munmap(p, 4096);
    }
    // SAFETY: closing the eventfd this function made.
    unsafe { libc::close(evt) };
    eprintln!("ALLOWED-CALLS-PASSED");
}

fn vmm_eventfd() -> i32 {
    // SAFETY: plain flags; the fd is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    fd
}

/// In the child: the forbidden call `what`.
fn forbidden_call(what: &str) {
    // SAFETY: each call is made with valid arguments; the filter stops it before it runs.
    unsafe {
        match what {
            "execve" => {
                let path = c"/bin/true".as_ptr();
                let argv = [path, std::ptr::null()];
                libc::execve(path, argv.as_ptr(), std::ptr::null());
            }
            "openat" => {
                libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY);
            }
            "socket" => {
                libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            }
            "socket-unix-stream" => {
                // The VMM thread's sd_notify socket is a datagram one; a stream socket could
                // connect to a host service.
                libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            }
            "ioctl" => {
                // KVM_CREATE_VM is the VMM thread's, never a vCPU's.
                libc::ioctl(0, 0xae01 as libc::Ioctl, 0);
            }
            "mmap" => {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
            }
            other => panic!("unknown call {other}"),
        }
    }
    eprintln!("FORBIDDEN-CALL-RETURNED");
}

/// The child's side: `kind:thread-name:call`. The VMM kind confines the child's main test
/// thread; the others are started by a confined VMM thread, as in ghost-vmm.
fn child(scenario: &str) {
    let mut parts = scenario.split(':');
    let (Some(kind), Some(name), Some(call)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad scenario {scenario}");
    };
    let kind = ThreadKind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .expect("a kind");
    crate::enable(SeccompFilters::compile().expect("compiles")).expect("enabled");
    let call = call.to_owned();
    let body = move || {
        let evt = vmm_eventfd();
        crate::confine_thread(kind).expect("confined");
        allowed_calls(kind, evt);
        forbidden_call(&call);
    };
    // The API thread starts before the VMM thread confines itself; the others are started
    // by a confined VMM thread.
    if kind != ThreadKind::Vmm && kind != ThreadKind::Api {
        crate::confine_thread(ThreadKind::Vmm).expect("vmm confined");
    }
    let t = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body);
    t.expect("spawned").join().expect("joined");
}

macro_rules! violation_test {
    ($test:ident, $kind:literal, $thread:literal, $call:literal) => {
        #[test]
        fn $test() {
            let scenario = concat!($kind, ":", $thread, ":", $call);
            match std::env::var(SCENARIO_ENV) {
                Ok(s) if s == scenario => child(&s),
                Ok(_) => {}
                Err(_) => {
                    let test = concat!("seccomp::tests::", stringify!($test));
                    assert_killed(test, scenario, $thread, $kind, $call);
                }
            }
        }
    };
}

violation_test!(vmm_thread_may_not_execve, "vmm", "ghost-vmm", "execve");
violation_test!(
    vmm_thread_may_not_open_a_unix_stream,
    "vmm",
    "ghost-vmm",
    "socket-unix-stream"
);
violation_test!(vcpu_thread_may_not_open_a_file, "vcpu", "vcpu0", "openat");
violation_test!(
    vcpu_thread_may_not_open_an_inet_socket,
    "vcpu",
    "vcpu1",
    "socket"
);
violation_test!(vcpu_thread_may_not_create_a_vm, "vcpu", "vcpu0", "ioctl");
violation_test!(vcpu_thread_may_not_map_code, "vcpu", "vcpu0", "mmap");
violation_test!(
    blk_worker_may_not_open_an_inet_socket,
    "virtio-blk",
    "virtio-blk",
    "socket"
);
violation_test!(
    blk_worker_may_not_open_a_file,
    "virtio-blk",
    "virtio-blk",
    "openat"
);
violation_test!(
    net_worker_may_not_execve,
    "virtio-net",
    "virtio-net",
    "execve"
);
violation_test!(
    net_worker_may_not_open_an_inet_socket,
    "virtio-net",
    "virtio-net",
    "socket"
);
violation_test!(api_thread_may_not_open_a_file, "api", "api", "openat");
violation_test!(
    api_thread_may_not_open_an_inet_socket,
    "api",
    "api",
    "socket"
);
