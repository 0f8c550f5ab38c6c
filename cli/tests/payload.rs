//! Tiny guest payloads run directly on this host's KVM (no test host): they need only a few
//! hundred instructions, which even an instruction-emulating KVM (PVM) runs quickly.
//!
//! Each payload is a minimal ELF64 "vmlinux" whose code runs in the 64-bit mode ghost-vmm
//! boots kernels in, talks to the emulated UART, and then uses the ACPI power device exactly
//! as a Linux guest's `poweroff`/`reboot` would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where the payload's code is loaded (physical), as a Linux vmlinux is.
const LOAD_ADDR: u64 = 0x100_0000;
const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;

/// Builds an ELF64 executable with one PT_LOAD segment holding `code` at LOAD_ADDR+120.
fn elf_with_code(code: &[u8]) -> Vec<u8> {
    let code_off = usize::from(EHDR_LEN + PHDR_LEN);
    let total = code_off + code.len();
    let entry = LOAD_ADDR + code_off as u64;
    let mut f = Vec::with_capacity(total);
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR_LEN.to_le_bytes());
    f.extend_from_slice(&PHDR_LEN.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(f.len(), usize::from(EHDR_LEN));
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&7u32.to_le_bytes()); // RWX
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(total as u64).to_le_bytes()); // p_filesz
    f.extend_from_slice(&(total as u64).to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.extend_from_slice(code);
    f
}

/// Code that prints `msg` on COM1, then writes `power_value` to the ACPI power port (0x600),
/// then halts forever.
fn print_then_power(msg: &str, power_value: u8) -> Vec<u8> {
    let mut c = vec![
        0x48,
        0x8d,
        0x35,
        0x16,
        0,
        0,
        0, // lea rsi, [rip + 0x16] (the message)
        0x66,
        0xba,
        0xf8,
        0x03, // mov dx, 0x3f8
        0xac, // loop: lodsb
        0x84,
        0xc0, // test al, al
        0x74,
        0x03, // jz done
        0xee, // out dx, al
        0xeb,
        0xf8, // jmp loop
        0x66,
        0xba,
        0x00,
        0x06, // done: mov dx, 0x600
        0xb0,
        power_value, // mov al, power_value
        0xee,        // out dx, al
        0xf4,        // halt: hlt
        0xeb,
        0xfd, // jmp halt
    ];
    assert_eq!(c.len(), 29);
    c.extend_from_slice(msg.as_bytes());
    c.push(0);
    c
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the payload and a VM file that boots it; returns the VM file's path.
    fn vm(&self, code: &[u8], extra_vm: &str) -> PathBuf {
        std::fs::write(self.path("payload.elf"), elf_with_code(code)).expect("write payload");
        let toml = format!(
            "[vm]\nname = \"payload\"\nvcpus = 1\n{extra_vm}\n[memory]\nsize = \"64M\"\n[boot]\nkernel = \"payload.elf\"\ncmdline = \"console=ttyS0\"\n"
        );
        let p = self.path("vm.toml");
        std::fs::write(&p, toml).expect("write vm.toml");
        p
    }
}

fn ghost_vmm(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn ghost-vmm")
}

fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

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
