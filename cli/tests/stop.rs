//! Stopping a running VM from the host, with tiny payloads on this host's KVM: a stop
//! signal presses the guest's ACPI power button (the GED's event register, bit 0), a guest
//! that powers off in answer ends the run with status 0, and one that does not is stopped
//! hard after `stop_timeout` (status 3, one line saying why).
//!
//! The poller payload reads the GED register in a loop, as a guest's `_EVT` would after the
//! GED interrupt, and powers off through the ACPI power port when the bit is set.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{kvm_available, power_button_poller, print_then, Fixture, HALT_FOREVER};

/// The GED's event register (ghost-boot's `layout::GED_MMIO_START`).
const GED_MMIO_START: u32 = 0xfeb0_0000;
/// Exit status of a hard stop.
const EXIT_STOPPED_HARD: i32 = 3;

/// A running ghost-vmm whose stdout (the guest's console) is read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(fx: &Fixture, code: &[u8], extra_vm: &str) -> Self {
        assert!(kvm_available(), "these tests need /dev/kvm");
        let vm = fx.vm(code, extra_vm);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
            .arg("run")
            .arg(&vm)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ghost-vmm");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for the guest to print `line`.
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let out = self.child.wait_with_output_now();
                    panic!("the guest never printed {line:?}; stderr: {out}");
                }
            }
        }
    }

    fn signal(&self, signo: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signo) }, 0, "kill");
    }

    /// Waits (at most `limit`) for ghost-vmm to exit; returns its status, stderr and how long
    /// it took.
    fn exit(mut self, limit: Duration) -> (Option<i32>, String, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let took = started.elapsed();
                return (status.code(), self.child.wait_with_output_now(), took);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let stderr = self.child.wait_with_output_now();
        panic!("ghost-vmm still ran {limit:?} after the stop request; stderr: {stderr}");
    }
}

trait StderrNow {
    fn wait_with_output_now(&mut self) -> String;
}

impl StderrNow for Child {
    fn wait_with_output_now(&mut self) -> String {
        let _ = self.wait();
        let mut stderr = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        stderr
    }
}

fn poller() -> Vec<u8> {
    print_then("WAITING\n", &power_button_poller(GED_MMIO_START))
}

fn ignorer() -> Vec<u8> {
    print_then("WAITING\n", &HALT_FOREVER)
}

#[test]
fn every_stop_signal_presses_the_power_button_and_a_guest_that_powers_off_exits_0() {
    let sigrtmin4 = libc::SIGRTMIN() + 4;
    for (signo, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
        (sigrtmin4, "SIGRTMIN+4"),
    ] {
        let fx = Fixture::new();
        let mut vm = Running::start(&fx, &poller(), "");
        vm.wait_for("WAITING");
        vm.signal(signo);
        let (code, stderr, _) = vm.exit(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{name}: stderr: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: pressed the power button")),
            "{name}: stderr: {stderr}"
        );
    }
}

#[test]
fn a_guest_that_ignores_the_button_is_stopped_hard_after_stop_timeout() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &ignorer(), "stop_timeout = \"1500ms\"");
    vm.wait_for("WAITING");
    vm.signal(libc::SIGTERM);
    let (code, stderr, took) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "stderr: {stderr}");
    assert!(
        took >= Duration::from_millis(1400),
        "stopped after {took:?}, before the timeout"
    );
    assert!(
        stderr.contains(
            "payload: stopped hard: the guest did not power off within stop_timeout (1.5s) of the power button"
        ),
        "stderr: {stderr}"
    );
}

#[test]
fn a_second_signal_stops_hard_at_once() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &ignorer(), "stop_timeout = \"10m\"");
    vm.wait_for("WAITING");
    vm.signal(libc::SIGTERM);
    // The first must have been taken (the button pressed) before the second counts as one.
    std::thread::sleep(Duration::from_millis(300));
    vm.signal(libc::SIGINT);
    let (code, stderr, took) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "stderr: {stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr.contains("stopped hard: a second stop signal (SIGINT) arrived"),
        "stderr: {stderr}"
    );
}

#[test]
fn stop_timeout_zero_stops_hard_at_once() {
    let fx = Fixture::new();
    let mut vm = Running::start(&fx, &poller(), "stop_timeout = \"0s\"");
    vm.wait_for("WAITING");
    vm.signal(libc::SIGTERM);
    let (code, stderr, _) = vm.exit(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_STOPPED_HARD), "stderr: {stderr}");
    assert!(
        stderr.contains("stopped hard: SIGTERM with stop_timeout = \"0s\""),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("pressed the power button"),
        "stderr: {stderr}"
    );
}
