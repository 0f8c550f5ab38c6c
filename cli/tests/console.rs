//! `[serial] mode = "socket"` and `ghost-vmm console`, with tiny payloads on this host's KVM:
//! the scrollback replay, typed input echoed by the guest, Ctrl-] detaching, a second
//! console taking over, the console log, the VM's stop ending the session, and the socket
//! outliving guest reboots.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{print_then, print_then_power, Fixture, Running, ECHO_FOREVER, EXIT_STOPPED_HARD};

const PATIENCE: Duration = Duration::from_secs(30);
const SOCKET_MODE: &str = "[serial]\nmode = \"socket\"\npath = \"console.log\"";

/// A running `ghost-vmm console` with its stdout collected.
struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: mpsc::Receiver<Vec<u8>>,
    got: Vec<u8>,
}

impl Console {
    fn attach(args: &[&Path]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
            .arg("console")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ghost-vmm console");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            chunks,
            got: Vec::new(),
        }
    }

    /// Waits until the output so far satisfies `done`.
    fn wait_until(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.got.extend_from_slice(&chunk),
                Err(_) => {
                    let _ = self.child.kill();
                    let (_, stderr) = self.finish();
                    panic!(
                        "the console never showed {what}; it showed {:?}; stderr: {stderr}",
                        String::from_utf8_lossy(&self.got)
                    );
                }
            }
        }
    }

    fn expect(&mut self, text: &str) {
        self.wait_until(&format!("{text:?}"), |g| {
            String::from_utf8_lossy(g).contains(text)
        });
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).expect("type");
        stdin.flush().expect("flush");
    }

    /// Waits for the console to exit; its status and stderr.
    fn finish(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        // Whatever it printed last.
        while let Ok(chunk) = self.chunks.recv_timeout(Duration::from_millis(200)) {
            self.got.extend_from_slice(&chunk);
        }
        (status, stderr)
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

fn wait_for_file(path: &Path, contents: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(contents)) {
        assert!(
            Instant::now() < deadline,
            "{} never held {contents:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const BANNER: &str = "Connected to ctl.\r\nEscape character is ^].\r\n";

#[test]
fn console_replays_echoes_input_detaches_and_is_taken_over() {
    let fx = Fixture::new();
    let mut vm = Running::start(
        &fx,
        &print_then("CONSOLE-HELLO\n", &ECHO_FOREVER),
        SOCKET_MODE,
    );
    let log = fx.path("console.log");
    let socket: PathBuf = fx.path("ctl.console");
    // The guest has printed before anyone attached: the line comes from the scrollback.
    wait_for_file(&log, "CONSOLE-HELLO\n");
    let mode = std::fs::metadata(&socket)
        .expect("console socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let mut first = Console::attach(&[Path::new("--socket"), &socket]);
    first.expect("CONSOLE-HELLO\n");
    // Typed input reaches the guest's UART, which echoes it.
    first.type_bytes(b"e");
    first.expect("CONSOLE-HELLO\ne");
    // Ctrl-] detaches.
    first.type_bytes(&[0x1d]);
    let (code, stderr) = first.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stderr.starts_with(BANNER), "stderr: {stderr:?}");
    assert!(stderr.contains("Detached from ctl."), "stderr: {stderr:?}");
    assert_eq!(first.output(), "CONSOLE-HELLO\ne");

    // Attaching again (by path this time) replays everything, the echo included.
    let mut second = Console::attach(&[&socket]);
    second.expect("CONSOLE-HELLO\ne");
    second.type_bytes(b"Z");
    second.expect("CONSOLE-HELLO\neZ");

    // A third console takes over: the second is told and ends by itself.
    let mut third = Console::attach(&[Path::new("--socket"), &socket]);
    third.expect("CONSOLE-HELLO\neZ");
    let (code, stderr) = second.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        second
            .output()
            .contains("[ghost-vmm: another console attached]"),
        "{:?}",
        second.output()
    );
    assert!(
        stderr.contains("Connection to ctl closed."),
        "stderr: {stderr:?}"
    );
    third.type_bytes(b"3");
    third.expect("CONSOLE-HELLO\neZ3");

    // The log has it all, and the VM's own stdout nothing.
    wait_for_file(&log, "CONSOLE-HELLO\neZ3");

    // The guest ignores its power button; the second signal stops it hard. The attached
    // console is told and ends.
    vm.stop_hard();
    let (code, stderr, _) = vm.exit(PATIENCE);
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "stderr: {stderr}");
    // Its stdout closed (it exited) without a line.
    assert_eq!(vm.lines.iter().collect::<Vec<_>>(), Vec::<String>::new());
    let (code, stderr) = third.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        third
            .output()
            .ends_with("[ghost-vmm: the VM has stopped]\r\n"),
        "{:?}",
        third.output()
    );
    assert!(
        stderr.contains("Connection to ctl closed."),
        "stderr: {stderr:?}"
    );
    assert!(!socket.exists(), "the console socket outlived the VM");

    // Now there is nothing to attach to.
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("console")
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "ghost-vmm: error: no VM named ctl is running (no console socket at {})",
            socket.display()
        )
    );
}

#[test]
fn the_console_stays_attached_across_guest_reboots() {
    let fx = Fixture::new();
    // Prints, then resets: the VM is rebuilt and boots again, over and over.
    let mut vm = Running::start(&fx, &print_then_power("BOOTED\n", 0x01), SOCKET_MODE);
    let socket = fx.path("ctl.console");
    wait_for_file(&fx.path("console.log"), "BOOTED\n");
    let mut console = Console::attach(&[Path::new("--socket"), &socket]);
    console.expect("BOOTED\n");
    let boots = |g: &[u8]| String::from_utf8_lossy(g).matches("BOOTED\n").count();
    let seen = boots(&console.got);
    console.wait_until("two more boots", |g| boots(g) >= seen + 2);
    // A stop during the reboot loop: the next reset ends the run (hard, status 3).
    vm.signal(libc::SIGTERM);
    let (code, stderr, _) = vm.exit(PATIENCE);
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "stderr: {stderr}");
    let (code, stderr) = console.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(console.output().contains("[ghost-vmm: the VM has stopped]"));
}

#[test]
fn a_vm_that_is_not_running_has_no_console() {
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(["console", "no-such-vm-3f1e"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        "ghost-vmm: error: no VM named no-such-vm-3f1e is running (no console socket at /run/ghost-vmm/no-such-vm-3f1e.console)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(["console"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(2));
}

/// Echoes COM1 input like [`ECHO_FOREVER`], except that an `r` resets the machine (the
/// keyboard controller's pulse: `out 0x64, 0xfe`).
///
/// ```text
/// poll: mov $0x3fd,%dx; in %dx,%al; test $1,%al; jz poll
///       mov $0x3f8,%dx; in %dx,%al; cmp $'r',%al; je reset; out %al,%dx; jmp poll
/// reset: mov $0xfe,%al; out %al,$0x64; 1: hlt; jmp 1b
/// ```
const ECHO_OR_RESET: [u8; 28] = [
    0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7, 0x66, 0xba, 0xf8, 0x03, 0xec, 0x3c, 0x72,
    0x74, 0x03, 0xee, 0xeb, 0xeb, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];

#[test]
fn stdio_input_reaches_the_guest_after_it_rebooted() {
    assert!(common::kvm_available(), "these tests need /dev/kvm");
    let fx = Fixture::new();
    let vm = fx.vm(&print_then("BOOTED\n", &ECHO_OR_RESET), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("run")
        .arg(&vm)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ghost-vmm");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, chunks) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let expect = |want: &str, got: &mut Vec<u8>| {
        let deadline = Instant::now() + PATIENCE;
        while !String::from_utf8_lossy(got).contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match chunks.recv_timeout(left) {
                Ok(c) => got.extend_from_slice(&c),
                Err(_) => panic!("no {want:?} in {:?}", String::from_utf8_lossy(got)),
            }
        }
    };
    expect("BOOTED\n", &mut got);
    stdin.write_all(b"one\n").expect("type");
    expect("BOOTED\none\n", &mut got);
    // `r`: the guest resets, ghost-vmm boots it again in place (`on_reboot = "restart"`).
    stdin.write_all(b"r").expect("type");
    expect("BOOTED\none\nBOOTED\n", &mut got);
    // What is typed now reaches the new boot's UART.
    stdin.write_all(b"two\n").expect("type");
    expect("BOOTED\none\nBOOTED\ntwo\n", &mut got);
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    for _ in 0..2 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(EXIT_STOPPED_HARD));
}
