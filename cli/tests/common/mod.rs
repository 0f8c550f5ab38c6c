//! What the payload tests share: a minimal ELF64 "vmlinux" builder, payload code, and a
//! folder with a VM file that boots it.

#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The GED's event register (ghost-boot's `layout::GED_MMIO_START`).
pub const GED_MMIO_START: u32 = 0xfeb0_0000;
/// Exit status of a hard stop.
pub const EXIT_STOPPED_HARD: i32 = 3;

/// Where the payload's code is loaded (physical), as a Linux vmlinux is.
const LOAD_ADDR: u64 = 0x100_0000;
const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;

/// Builds an ELF64 executable with one PT_LOAD segment holding `code` at LOAD_ADDR+120.
pub fn elf_with_code(code: &[u8]) -> Vec<u8> {
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
pub fn print_then_power(msg: &str, power_value: u8) -> Vec<u8> {
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

pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the payload and a VM file that boots it; returns the VM file's path.
    pub fn vm(&self, code: &[u8], extra_vm: &str) -> PathBuf {
        std::fs::write(self.path("payload.elf"), elf_with_code(code)).expect("write payload");
        let toml = format!(
            "[vm]\nname = \"payload\"\nvcpus = 1\ncontrol_socket = \"ctl.sock\"\n{extra_vm}\n[memory]\nsize = \"64M\"\n[boot]\nkernel = \"payload.elf\"\ncmdline = \"console=ttyS0\"\n"
        );
        let p = self.path("vm.toml");
        std::fs::write(&p, toml).expect("write vm.toml");
        p
    }
}

pub fn ghost_vmm(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn ghost-vmm")
}

pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Code that prints `msg` on COM1 and then runs `tail` (which must not fall through).
pub fn print_then(msg: &str, tail: &[u8]) -> Vec<u8> {
    let print: [u8; 12] = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xac, // loop: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp loop
    ];
    // lea rsi, [rip + disp]: the message follows the print loop and the tail.
    let disp = u32::try_from(print.len() + tail.len()).expect("short code");
    let mut c = vec![0x48, 0x8d, 0x35];
    c.extend_from_slice(&disp.to_le_bytes());
    c.extend_from_slice(&print);
    c.extend_from_slice(tail);
    c.extend_from_slice(msg.as_bytes());
    c.push(0);
    c
}

/// Halts forever: a guest that ignores its power button.
pub const HALT_FOREVER: [u8; 3] = [0xf4, 0xeb, 0xfd]; // halt: hlt; jmp halt

/// Polls the ACPI GED's event register (at `ged_base`) until the power-button bit (bit 0) is
/// set, then powers off through the ACPI power port (S5), as a guest's `_EVT` and logind
/// would, in a few instructions.
pub fn power_button_poller(ged_base: u32) -> Vec<u8> {
    let mut c = vec![0x48, 0xbb]; // mov rbx, imm64
    c.extend_from_slice(&u64::from(ged_base).to_le_bytes());
    c.extend_from_slice(&[
        0x8b, 0x03, // poll: mov eax, [rbx]
        0xa8, 0x01, // test al, 1
        0x74, 0xfa, // jz poll
        0x66, 0xba, 0x00, 0x06, // mov dx, 0x600
        0xb0, 0x34, // mov al, SLP_TYP 5 << 2 | SLP_EN
        0xee, // out dx, al
    ]);
    c.extend_from_slice(&HALT_FOREVER);
    c
}

/// Prints `.` and a newline on COM1 about every 100 000 loop iterations, forever: a guest
/// whose progress can be watched (and seen to stop while it is paused). Expects `dx` = 0x3f8
/// (as [`print_then`] leaves it).
pub const TICKER: [u8; 17] = [
    0xb9, 0xa0, 0x86, 0x01, 0x00, // loop: mov ecx, 100000
    0xff, 0xc9, // inner: dec ecx
    0x75, 0xfc, // jnz inner
    0xb0, b'.', // mov al, '.'
    0xee, // out dx, al
    0xb0, b'\n', // mov al, '\n'
    0xee,  // out dx, al
    0xeb, 0xef, // jmp loop
];

/// A running ghost-vmm whose stdout (the guest's console) is read line by line.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(fx: &Fixture, code: &[u8], extra_vm: &str) -> Self {
        Self::start_with_env(fx, code, extra_vm, &[])
    }

    /// [`Running::start`] with these environment variables set.
    pub fn start_with_env(fx: &Fixture, code: &[u8], extra_vm: &str, env: &[(&str, &str)]) -> Self {
        assert!(kvm_available(), "these tests need /dev/kvm");
        let vm = fx.vm(code, extra_vm);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
            .arg("run")
            .arg(&vm)
            .envs(env.iter().copied())
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
    pub fn wait_for(&mut self, line: &str) {
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

    /// Two SIGTERMs, the second once the first was taken (signals of one kind that are
    /// pending together merge into one): a hard stop.
    pub fn stop_hard(&self) {
        self.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        self.signal(libc::SIGTERM);
    }

    pub fn signal(&self, signo: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signo) }, 0, "kill");
    }

    /// Waits (at most `limit`) for ghost-vmm to exit; returns its status, stderr and how long
    /// it took.
    pub fn exit(&mut self, limit: Duration) -> (Option<i32>, String, Duration) {
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

/// A test that fails midway leaves no VM behind.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub trait StderrNow {
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

/// Echoes what arrives on COM1 forever: polls the line status register (0x3fd) until data
/// is ready (bit 0), reads the byte from 0x3f8 and writes it back. Ignores the power button.
pub const ECHO_FOREVER: [u8; 17] = [
    0x66, 0xba, 0xfd, 0x03, // poll: mov dx, 0x3fd
    0xec, // in al, dx
    0xa8, 0x01, // test al, 1
    0x74, 0xf7, // jz poll
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xec, // in al, dx
    0xee, // out dx, al
    0xeb, 0xef, // jmp poll
];
