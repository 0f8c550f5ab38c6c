//! Firmware boot on this host's KVM, with a tiny "firmware" of our own instead of OVMF (which
//! needs the nested test host: `tests/tests/firmware.rs`). The flash image starts at the
//! architectural reset vector in real mode, like any PC firmware, and uses what OVMF uses:
//! the debug console (0x402), fw_cfg's signature, the LPC bridge's PMBASE/ACPI_CNTL through
//! 0xCF8, and soft-off through the PM block it placed there.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{kvm_available, Fixture};

/// The code (GNU as, `.code16`, linked at 0xFFFFF000). Real mode only: this host's KVM (PVM)
/// runs real-mode code by emulation but not the switch to protected mode, so the flash write
/// (which needs 32-bit addressing) is left to the test host's real KVM.
///
/// ```text
/// start: mov $0x402,%dx; mov $'G',%al; out %al,%dx          # debug console: "G"
///        mov $0x510,%dx; xor %ax,%ax; out %ax,%dx           # fw_cfg: select the signature
///        mov $4,%cx
///    1:  mov $0x511,%dx; in %dx,%al; mov $0x402,%dx; out %al,%dx; loop 1b   # "QEMU"
///        mov $10,%al; out %al,%dx                            # end of line
///        mov $0xcf8,%dx; mov $0x8000f840,%eax; out %eax,%dx  # 00:1f.0 PMBASE
///        mov $0xcfc,%dx; mov $0x601,%eax; out %eax,%dx       #   = 0x600
///        mov $0xcf8,%dx; mov $0x8000f844,%eax; out %eax,%dx  # 00:1f.0 ACPI_CNTL
///        mov $0xcfc,%dx; mov $0x80,%al; out %al,%dx          #   = ACPI_EN
///        mov $0x604,%dx; mov $0x2000,%ax; out %ax,%dx        # PM1_CNT: SLP_TYP 0 + SLP_EN
///    2:  hlt; jmp 2b
/// ```
const FIRMWARE_CODE: [u8; 77] = [
    0xba, 0x02, 0x04, 0xb0, 0x47, 0xee, 0xba, 0x10, 0x05, 0x31, 0xc0, 0xef, 0xb9, 0x04, 0x00, 0xba,
    0x11, 0x05, 0xec, 0xba, 0x02, 0x04, 0xee, 0xe2, 0xf6, 0xb0, 0x0a, 0xee, 0xba, 0xf8, 0x0c, 0x66,
    0xb8, 0x40, 0xf8, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c, 0x66, 0xb8, 0x01, 0x06, 0x00, 0x00,
    0x66, 0xef, 0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x44, 0xf8, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c,
    0xb0, 0x80, 0xee, 0xba, 0x04, 0x06, 0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd,
];
/// 112 KiB of code and 16 KiB of variables: a 128 KiB "build" (the sizes must add up to a
/// power of two), the code ending at 4 GiB and the variables at 0xFFFE_0000.
const CODE_LEN: usize = 0x1c000;
const VARS_LEN: usize = 0x4000;
/// Where the code above sits in the image (physical 0xFFFF_F000).
const CODE_AT: usize = CODE_LEN - 0x1000;

/// A flash image of `len` bytes of 0xFF starting with a firmware volume header.
fn volume(len: usize) -> Vec<u8> {
    let mut image = vec![0xffu8; len];
    image[..40].fill(0);
    image[32..40].copy_from_slice(&(len as u64).to_le_bytes());
    image[40..44].copy_from_slice(b"_FVH");
    image
}

fn firmware_fixture() -> (Fixture, std::path::PathBuf) {
    fixture_running(&FIRMWARE_CODE)
}

/// A VM whose flash holds `program` (real-mode code run from the reset vector).
fn fixture_running(program: &[u8]) -> (Fixture, std::path::PathBuf) {
    let fx = Fixture::new();
    let mut code = volume(CODE_LEN);
    code[CODE_AT..CODE_AT + program.len()].copy_from_slice(program);
    // The reset vector (F000:FFF0): jmp near to offset 0xF000 of the segment.
    code[CODE_LEN - 16..CODE_LEN - 13].copy_from_slice(&[0xe9, 0x0d, 0xf0]);
    std::fs::write(fx.path("FW_CODE.fd"), code).expect("write code");
    std::fs::write(fx.path("FW_VARS.fd"), volume(VARS_LEN)).expect("write template");
    let toml = "[vm]\nname = \"fw\"\nvcpus = 1\ncontrol_socket = \"ctl.sock\"\n[memory]\n\
                size = \"64M\"\n[boot]\nfirmware = \"FW_CODE.fd\"\n";
    let vm = fx.path("vm.toml");
    std::fs::write(&vm, toml).expect("write vm.toml");
    (fx, vm)
}

fn run(vm: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .arg("run")
        .arg(vm)
        .env("GHOST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .expect("spawn ghost-vmm");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn firmware_runs_from_the_reset_vector_and_powers_off_through_its_pm_block() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let (fx, vm) = firmware_fixture();
    let vars = fx.path("fw.vars");
    assert!(!vars.exists());
    let (code, stderr) = run(&vm);
    // Exit 0: the S5 write reached the PM block where the firmware put it.
    assert_eq!(code, Some(0), "{stderr}");
    // The firmware's own words, through its debug console: fw_cfg answered "QEMU".
    assert!(stderr.contains("fw: GQEMU"), "fw_cfg signature: {stderr}");
    // The store was created from the template beside the code.
    let store = std::fs::read(&vars).expect("fw.vars created");
    assert_eq!(store, volume(VARS_LEN));
    // Again: the store is reused.
    let (code, stderr) = run(&vm);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_store_in_use_by_another_vm_is_refused() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let (fx, vm) = firmware_fixture();
    std::fs::write(fx.path("fw.vars"), volume(VARS_LEN)).expect("store");
    let holder = std::fs::File::open(fx.path("fw.vars")).expect("open");
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&holder),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(locked, 0);
    let (code, stderr) = run(&vm);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("boot.firmware_vars:") && stderr.contains("in use by another VM"),
        "{stderr}"
    );
}

/// What an SMM build of OVMF does first (PlatformPei's `Q35TsegMbytesInitialization`): write
/// the extended-TSEG query to the MCH's 0x50 with a 16-bit `out` through 0xCF8/0xCFC.
///
/// ```text
/// mov $0xcf8,%dx; mov $0x80000050,%eax; out %eax,%dx
/// mov $0xcfc,%dx; mov $0xffff,%ax; out %ax,%dx
/// 2: hlt; jmp 2b
/// ```
const SMM_PROBE: [u8; 21] = [
    0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x50, 0x00, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c, 0xb8, 0xff,
    0xff, 0xef, 0xf4, 0xeb, 0xfd,
];

#[test]
fn a_firmware_that_asks_for_smm_is_stopped_with_one_line() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let (fx, vm) = fixture_running(&SMM_PROBE);
    let (code, stderr) = run(&vm);
    // Exit 2: the file `boot.firmware` names is the problem.
    assert_eq!(code, Some(2), "{stderr}");
    // The store this run created for it is gone again: nothing left behind.
    assert!(!fx.path("fw.vars").exists(), "{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("needs SMM")).collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("boot.firmware:"), "{stderr}");
}

/// String port I/O, as firmware reads fw_cfg without DMA: `rep insb` of fw_cfg's signature
/// (four 1-byte reads of the data port in one exit) into RAM, `rep outsb` of it to the debug
/// console (four 1-byte writes), then soft-off as [`FIRMWARE_CODE`] does. Hardware KVM
/// hands the four accesses over in one exit; this host's emulating KVM may hand them over one
/// by one (the splitting itself is unit-tested in `ghost-vmm`'s `vcpu` module).
///
/// ```text
/// mov $0x510,%dx; xor %ax,%ax; out %ax,%dx                  # select the signature
/// xor %ax,%ax; mov %ax,%es; mov %ax,%ds
/// mov $0x1000,%di; mov $0x511,%dx; mov $4,%cx; cld; rep insb
/// mov $0x1000,%si; mov $0x402,%dx; mov $4,%cx; rep outsb
/// mov $10,%al; out %al,%dx
/// (PMBASE, ACPI_EN and PM1_CNT as in FIRMWARE_CODE); 2: hlt; jmp 2b
/// ```
const STRING_IO: [u8; 87] = [
    0xba, 0x10, 0x05, 0x31, 0xc0, 0xef, 0x31, 0xc0, 0x8e, 0xc0, 0x8e, 0xd8, 0xbf, 0x00, 0x10, 0xba,
    0x11, 0x05, 0xb9, 0x04, 0x00, 0xfc, 0xf3, 0x6c, 0xbe, 0x00, 0x10, 0xba, 0x02, 0x04, 0xb9, 0x04,
    0x00, 0xf3, 0x6e, 0xb0, 0x0a, 0xee, 0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x40, 0xf8, 0x00, 0x80, 0x66,
    0xef, 0xba, 0xfc, 0x0c, 0x66, 0xb8, 0x01, 0x06, 0x00, 0x00, 0x66, 0xef, 0xba, 0xf8, 0x0c, 0x66,
    0xb8, 0x44, 0xf8, 0x00, 0x80, 0x66, 0xef, 0xba, 0xfc, 0x0c, 0xb0, 0x80, 0xee, 0xba, 0x04, 0x06,
    0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd,
];

#[test]
fn string_port_io_reaches_the_device_one_access_at_a_time() {
    assert!(kvm_available(), "these tests need /dev/kvm");
    let (_fx, vm) = fixture_running(&STRING_IO);
    let (code, stderr) = run(&vm);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("fw: QEMU"),
        "the signature through string I/O: {stderr}"
    );
}
