//! Stopping a running VM from the host, with tiny payloads on this host's KVM: a stop
//! signal presses the guest's ACPI power button (the GED's event register, bit 0), a guest
//! that powers off in answer ends the run with status 0, and one that does not is stopped
//! hard after `stop_timeout` (status 3, one line saying why).
//!
//! The poller payload reads the GED register in a loop, as a guest's `_EVT` would after the
//! GED interrupt, and powers off through the ACPI power port when the bit is set.

mod common;

use std::time::Duration;

use common::{power_button_poller, print_then, Fixture, Running, HALT_FOREVER};

use common::{EXIT_STOPPED_HARD, GED_MMIO_START};

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
