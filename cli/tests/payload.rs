//! Tiny guest payloads run directly on this host's KVM (no test host): they need only a few
//! hundred instructions, which even an instruction-emulating KVM (PVM) runs quickly.
//!
//! Each payload is a minimal ELF64 "vmlinux" whose code runs in the 64-bit mode ghost-vmm
//! boots kernels in, talks to the emulated UART, and then uses the ACPI power device exactly
//! as a Linux guest's `poweroff`/`reboot` would.

mod common;

use std::path::Path;

use common::{ghost_vmm, kvm_available, print_then_power, Fixture};

#[test]
fn payload_prints_on_uart_and_powers_off() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let fx = Fixture::new();
    let vm = fx.vm(&print_then_power("GHOST-PAYLOAD-OK\n", 0x34), "");
    let out = ghost_vmm(&[Path::new("run"), &vm]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "GHOST-PAYLOAD-OK\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn payload_reset_with_on_reboot_exit_ends_the_run() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let fx = Fixture::new();
    let vm = fx.vm(
        &print_then_power("REBOOTING\n", 0x01),
        "on_reboot = \"exit\"",
    );
    let out = ghost_vmm(&[Path::new("run"), &vm]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "REBOOTING\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn payload_triple_fault_exits_nonzero_with_registers() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let fx = Fixture::new();
    // ud2 with an empty IDT: #UD -> #GP -> #DF -> triple fault.
    let vm = fx.vm(&[0x0f, 0x0b], "");
    let out = ghost_vmm(&[Path::new("run"), &vm]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("vCPU 0"), "stderr: {stderr}");
    assert!(stderr.contains("rip="), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
