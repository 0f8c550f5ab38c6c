//! The control API and the CLI on top of it, against tiny payload guests on this host's KVM:
//! `status`, `list`, `pause`/`resume` (the guest makes no progress while paused), `reboot`,
//! `stop`, `shutdown --wait`, raw HTTP from a client that misbehaves, a second VM on a
//! running VM's socket, and a stale socket from a killed VM.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    power_button_poller, print_then, Fixture, Running, EXIT_STOPPED_HARD, GED_MMIO_START,
    HALT_FOREVER, TICKER,
};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(args)
        .output()
        .expect("spawn ghost-vmm")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sock(fx: &Fixture) -> String {
    fx.path("ctl.sock").display().to_string()
}

/// One raw HTTP exchange on the control socket; returns the status line's code and the body.
fn http(socket: &Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer (and close) before taking the whole of an oversized request.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Dots the ticker guest has printed so far (drains what has arrived).
fn dots(vm: &Running, seen: &mut usize) -> usize {
    while let Ok(line) = vm.lines.try_recv() {
        if line == "." {
            *seen += 1;
        }
    }
    *seen
}

#[test]
fn status_list_pause_resume_and_stop() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &print_then("TICKING\n", &TICKER), "");
    vm.wait_for("TICKING");
    let socket = sock(&fx);

    let (out, err) = text(&cli(&["status", &socket]));
    assert!(out.contains("name:    payload"), "{out}{err}");
    assert!(out.contains("state:   running"), "{out}");
    assert!(out.contains("vcpus:   1"), "{out}");
    assert!(out.contains("memory:  64M"), "{out}");
    assert!(
        out.contains(&format!("pid:     {}", vm.child.id())),
        "{out}"
    );
    let dir = fx.path("");
    let (out, _) = text(&cli(&["list", "--dir", &dir.display().to_string()]));
    assert!(
        out.lines().next().is_some_and(|l| l.starts_with("NAME")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ctl") || l.starts_with("payload") && l.contains("running")),
        "{out}"
    );
    let (out, _) = text(&cli(&["status", "--json", &socket]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(json["state"], "running");
    assert!(json["exits"]["pio_out"].as_u64().unwrap_or(0) > 0, "{out}");

    // Pause: the guest makes no progress; resume: it carries on.
    let mut seen = 0;
    let out = cli(&["pause", &socket]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (out, _) = text(&cli(&["status", &socket]));
    assert!(out.contains("state:   paused"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    let before = dots(&vm, &mut seen);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(dots(&vm, &mut seen), before, "the guest ran while paused");
    let out = cli(&["pause", &socket]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("already paused"), "{:?}", text(&out));
    let out = cli(&["resume", &socket]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while dots(&vm, &mut seen) < before + 2 {
        assert!(Instant::now() < deadline, "no progress after resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli(&["resume", &socket]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("not paused"), "{:?}", text(&out));

    let out = cli(&["stop", &socket]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (code, stderr, _) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    assert!(
        stderr.contains("stopped hard: the control API asked for a stop"),
        "{stderr}"
    );
    assert!(
        !Path::new(&socket).exists(),
        "the socket is removed at exit"
    );
    let out = cli(&["status", &socket]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("is running (no control socket at"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn shutdown_waits_for_a_guest_that_powers_off() {
    let fx = Fixture::new();
    let mut vm = Running::start(
        &fx,
        &print_then("WAITING\n", &power_button_poller(GED_MMIO_START)),
        "",
    );
    vm.wait_for("WAITING");
    let out = cli(&["shutdown", "--wait", "--timeout", "30", &sock(&fx)]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out).1.contains("exited after"), "{:?}", text(&out));
    let (code, stderr, _) = vm.exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("the control API's shutdown: pressed the power button"),
        "{stderr}"
    );
}

#[test]
fn shutdown_wait_gives_up_after_its_timeout_and_reboot_restarts_the_guest() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &print_then("BOOTED\n", &HALT_FOREVER), "");
    vm.wait_for("BOOTED");
    let socket = sock(&fx);
    let out = cli(&["reboot", &socket]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    vm.wait_for("BOOTED");
    let out = cli(&["shutdown", "--wait", "--timeout", "1", &socket]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("still running after 1 s"),
        "{:?}",
        text(&out)
    );
    let (out, _) = text(&cli(&["status", &socket]));
    assert!(out.contains("state:   shutting-down"), "{out}");
    // Rebooting a VM that is shutting down is refused.
    let out = cli(&["reboot", &socket]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    vm.signal(libc::SIGTERM);
    let (code, stderr, _) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
    assert!(
        stderr.contains("the control API reset the guest"),
        "{stderr}"
    );
}

#[test]
fn bad_requests_get_json_errors_and_the_vm_runs_on() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &print_then("UP\n", &HALT_FOREVER), "");
    vm.wait_for("UP");
    let socket = fx.path("ctl.sock");
    let huge = format!(
        "PUT /vm/pause HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    let cases: [(&[u8], u16); 6] = [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"DELETE /vm HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            b"PUT /vm/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{bad}",
            400,
        ),
        (b"\x00\x01garbage\r\n\r\n", 400),
        (huge.as_bytes(), 413),
        (
            b"GET /vm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
        ),
    ];
    for (request, want) in cases {
        let (code, body) = http(&socket, request);
        assert_eq!(
            code,
            want,
            "{:?}: {body}",
            String::from_utf8_lossy(&request[..20])
        );
        let json: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON error");
        assert!(json["error"].is_string(), "{body}");
    }
    let (code, body) = http(&socket, b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"running\""), "{body}");
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
}

#[test]
fn a_second_vm_on_a_running_vms_socket_fails_and_a_stale_socket_is_replaced() {
    let fx = Fixture::new();
    // A stale socket: bound by a process that died (here: a listener dropped unremoved).
    drop(UnixListener::bind(fx.path("ctl.sock")).expect("bind"));
    assert!(fx.path("ctl.sock").exists());
    let mut vm = Running::start(&fx, &print_then("UP\n", &HALT_FOREVER), "");
    vm.wait_for("UP");
    let other = Fixture::new();
    let vm_file = other.vm(&print_then("UP\n", &HALT_FOREVER), "");
    let text_file = std::fs::read_to_string(&vm_file).expect("vm file");
    let text_file = text_file.replace(
        "control_socket = \"ctl.sock\"",
        &format!("control_socket = \"{}\"", sock(&fx)),
    );
    std::fs::write(&vm_file, text_file).expect("vm file");
    let out = cli(&["run", &vm_file.display().to_string()]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("is in use by pid {}", vm.child.id())),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (out, _) = text(&cli(&["status", &sock(&fx)]));
    assert!(
        out.contains("state:   running"),
        "the first VM runs on: {out}"
    );
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "{stderr}");
}
