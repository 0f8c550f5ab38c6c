//! `[boot] firmware`: the firmware pair's checks, each a one-line error naming the key, with
//! nothing created.

use std::fs;
use std::path::Path;

use super::{error_in, Fixture};
use crate::config::BootMode;

/// A fake flash image of `len` bytes that starts with a firmware volume of `volume` bytes.
fn flash(path: &Path, len: usize, volume: u64) {
    let mut image = vec![0xffu8; len];
    image[32..40].copy_from_slice(&volume.to_le_bytes());
    image[40..44].copy_from_slice(b"_FVH");
    fs::write(path, image).unwrap();
}

/// A 128 KiB "build": 112 KiB of code and 16 KiB of variables, as `OVMF_*_TEST.fd`.
fn fixture() -> Fixture {
    let f = Fixture::new();
    flash(&f.path("OVMF_CODE_TEST.fd"), 0x1c000, 0x1c000);
    flash(&f.path("OVMF_VARS_TEST.fd"), 0x4000, 0x4000);
    f
}

const FIRMWARE: &str = "[vm]\nname = \"ws\"\n\n[boot]\nfirmware = \"OVMF_CODE_TEST.fd\"\n";

#[test]
fn defaults_vars_beside_the_vm_file_and_template_beside_the_code() {
    let f = fixture();
    let c = f.load(FIRMWARE).unwrap();
    match c.boot.mode() {
        BootMode::Firmware {
            code,
            vars,
            template,
        } => {
            assert_eq!(code, f.path("OVMF_CODE_TEST.fd"));
            assert_eq!(vars, f.path("ws.vars"));
            assert_eq!(template, Some(f.path("OVMF_VARS_TEST.fd").as_path()));
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.path("ws.vars").exists(), "a check creates nothing");
}

#[test]
fn kernel_keys_and_firmware_exclude_each_other() {
    let f = fixture();
    for (key, line) in [
        ("kernel", "kernel = \"vmlinuz\""),
        ("initramfs", "initramfs = \"initrd.img\""),
        ("cmdline", "cmdline = \"quiet\""),
    ] {
        let e = error_in(&f, &format!("{FIRMWARE}{line}\n"));
        assert!(
            e.contains(&format!("boot.{key}: cannot be used with boot.firmware")),
            "{e}"
        );
    }
}

#[test]
fn missing_or_foreign_firmware_files_are_refused() {
    let f = fixture();
    let e = error_in(&f, "[vm]\nname = \"ws\"\n[boot]\nfirmware = \"nope.fd\"\n");
    assert!(
        e.contains("boot.firmware: cannot read") && e.contains("nope.fd"),
        "{e}"
    );
    let e = error_in(&f, "[vm]\nname = \"ws\"\n[boot]\nfirmware = \"vmlinuz\"\n");
    assert!(
        e.contains("boot.firmware:") && e.contains("is not a UEFI firmware flash image"),
        "{e}"
    );
    fs::write(f.path("junk.fd"), vec![0u8; 0x1c000]).unwrap();
    let e = error_in(&f, "[vm]\nname = \"ws\"\n[boot]\nfirmware = \"junk.fd\"\n");
    assert!(e.contains("no firmware volume header"), "{e}");
}

#[test]
fn vars_of_another_build_do_not_pair() {
    let f = fixture();
    flash(&f.path("big.vars"), 0x84000, 0x84000);
    let e = error_in(&f, &format!("{FIRMWARE}firmware_vars = \"big.vars\"\n"));
    assert!(
        e.contains("boot.firmware_vars: a 528 KiB variable store does not pair with the 112 KiB"),
        "{e}"
    );
    // The same through a template, for a store that does not exist yet.
    let e = error_in(
        &f,
        &format!("{FIRMWARE}firmware_vars_template = \"big.vars\"\n"),
    );
    assert!(e.contains("boot.firmware_vars_template: a 528 KiB"), "{e}");
    assert!(!f.path("ws.vars").exists());
}

/// Drops CAP_DAC_OVERRIDE from this thread's effective capabilities (capabilities are per
/// thread), so that file modes apply to it even when the tests run as root.
fn obey_file_modes() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset read and write exactly one header and two data structs, which
    // live on this stack frame for the duration of the calls.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_DAC_OVERRIDE);
        assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0);
    }
}

#[test]
fn vars_must_be_writable_or_creatable() {
    let f = fixture();
    flash(&f.path("ro.vars"), 0x4000, 0x4000);
    let mut mode = fs::metadata(f.path("ro.vars")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o444);
    fs::set_permissions(f.path("ro.vars"), mode).unwrap();
    obey_file_modes();
    let e = error_in(&f, &format!("{FIRMWARE}firmware_vars = \"ro.vars\"\n"));
    assert!(
        e.contains("boot.firmware_vars: cannot open") && e.contains("for writing"),
        "{e}"
    );
    let e = error_in(&f, &format!("{FIRMWARE}firmware_vars = \"host\"\n"));
    assert!(e.contains("is not a regular file"), "{e}");
    let e = error_in(
        &f,
        &format!("{FIRMWARE}firmware_vars = \"no/such/dir/ws.vars\"\n"),
    );
    assert!(
        e.contains("boot.firmware_vars:") && e.contains("cannot be created"),
        "{e}"
    );
}

#[test]
fn a_missing_store_needs_a_template() {
    let f = fixture();
    fs::remove_file(f.path("OVMF_VARS_TEST.fd")).unwrap();
    let e = error_in(&f, FIRMWARE);
    assert!(
        e.contains("boot.firmware_vars_template:") && e.contains("no VARS image was found"),
        "{e}"
    );
    // An existing store needs none.
    flash(&f.path("ws.vars"), 0x4000, 0x4000);
    f.load(FIRMWARE).unwrap();
}
