//! Validation: each rule, with the key (and its line) in the message.

use std::path::Path;

use super::{assert_error, error, error_in, load, with, Fixture, MINIMAL};
use crate::config::{ConfigError, VmConfig};

fn vm(extra_vm: &str) -> String {
    format!("[vm]\nname = \"test\"\n{extra_vm}\n[boot]\nkernel = \"vmlinuz\"\n")
}

#[test]
fn names() {
    let e = error("[vm]\nname = \"\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 2, &["vm.name: must not be empty"]);
    let e = error("[vm]\nname = \"my vm\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 2, &["vm.name: \"my vm\" has ' '", "letters, digits"]);
    let e = error("[vm]\nname = \"../etc\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 2, &["vm.name:", "'/'"]);
    let e = error("[vm]\nname = \".hidden\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        2,
        &["vm.name: \".hidden\" must start with a letter or digit"],
    );
    let long = "a".repeat(65);
    let e = error(&format!(
        "[vm]\nname = \"{long}\"\n[boot]\nkernel = \"vmlinuz\"\n"
    ));
    assert_error(&e, 2, &["vm.name: is longer than 64"]);
    for ok in ["web-1", "db_2", "vm.example", "9"] {
        load(&format!(
            "[vm]\nname = \"{ok}\"\n[boot]\nkernel = \"vmlinuz\"\n"
        ));
    }
}

#[test]
fn vcpus_built_in_code_are_checked_too() {
    let fixture = Fixture::new();
    let mut c = fixture.load(MINIMAL).unwrap();
    c.vm.vcpus = 0;
    let e = c.validate_on(&fixture.host()).unwrap_err().to_string();
    assert_eq!(e, "vm.vcpus: 0 is out of range (1 to 254)");
    c.vm.vcpus = 255;
    assert!(c.validate_on(&fixture.host()).is_err());
}

#[test]
fn cpu_affinity_needs_one_online_cpu_per_vcpu() {
    let e = error(&vm("vcpus = 2\ncpu_affinity = [0]"));
    assert_error(
        &e,
        4,
        &["vm.cpu_affinity: lists 1 host CPU(s) but vm.vcpus = 2: give one host CPU per vCPU"],
    );
    let e = error(&vm("vcpus = 2\ncpu_affinity = [1, 7]"));
    assert_error(
        &e,
        4,
        &["vm.cpu_affinity[1]: host CPU 7 is not online on this host (online: 0-3)"],
    );
    let c = load(&vm("vcpus = 2\ncpu_affinity = [3, 3]"));
    assert_eq!(c.vm.cpu_affinity, Some(vec![3, 3]));
}

#[test]
fn cpu_affinity_is_not_checked_when_the_host_does_not_say() {
    let fixture = Fixture::new();
    std::fs::remove_file(fixture.path("host/sys/devices/system/cpu/online")).unwrap();
    fixture.load(&vm("cpu_affinity = [99]")).unwrap();
}

#[test]
fn memory_rules() {
    let e = error(&with("[memory]\nsize = \"32M\"\n"));
    assert_error(&e, 7, &["memory.size: 32M is too small (at least 64M)"]);
    let e = error(&with("[memory]\nsize = \"1025M\"\nhugepages = true\n"));
    assert_error(
        &e,
        7,
        &["memory.size: 1025M is not a multiple of the 2M hugepage size (hugepages = true): use 1026M"],
    );
    let e = error(&with(
        "[memory]\nsize = \"1536M\"\nhugepages = true\nhugepage_size = \"1G\"\n",
    ));
    assert_error(
        &e,
        7,
        &[
            "memory.size: 1536M is not a multiple of the 1G hugepage size",
            "use 2G",
        ],
    );
    let e = error(&with("[memory]\nsize = \"65537K\"\n"));
    assert_error(
        &e,
        7,
        &["memory.size: 65537K is not a multiple of the 4K page size"],
    );
    load(&with("[memory]\nsize = \"64M\"\n"));
    load(&with(
        "[memory]\nsize = \"2G\"\nhugepages = true\nhugepage_size = \"1G\"\n",
    ));
    // Without hugepages the hugepage size does not matter.
    load(&with(
        "[memory]\nsize = \"1025M\"\nhugepage_size = \"1G\"\n",
    ));
}

#[test]
fn boot_files_must_exist() {
    let fixture = Fixture::new();
    let e = error_in(&fixture, "[vm]\nname = \"a\"\n[boot]\nkernel = \"nope\"\n");
    let nope = fixture.path("nope");
    assert_error(
        &e,
        4,
        &[&format!(
            "boot.kernel: cannot read {}: No such file or directory",
            nope.display()
        )],
    );
    let e = error_in(&fixture, "[vm]\nname = \"a\"\n[boot]\nkernel = \".\"\n");
    assert_error(&e, 4, &["boot.kernel: cannot read", "not a regular file"]);
    let e = error(&format!("{MINIMAL}initramfs = \"initrd.gz\"\n"));
    assert_error(
        &e,
        6,
        &[
            "boot.initramfs: cannot read",
            "initrd.gz: No such file or directory",
        ],
    );
}

#[test]
fn cmdline_length() {
    let long = "x".repeat(65_536);
    let e = error(&format!("{MINIMAL}cmdline = \"{long}\"\n"));
    assert_error(
        &e,
        6,
        &["boot.cmdline: is 65536 bytes long (at most 65535)"],
    );
    load(&format!("{MINIMAL}cmdline = \"{}\"\n", "x".repeat(65_535)));
    let e = error(&format!("{MINIMAL}cmdline = \"a\\u0000b\"\n"));
    assert_error(&e, 6, &["boot.cmdline: contains a NUL character"]);
}

#[test]
fn serial_path_iff_file_mode() {
    let e = error(&with("[serial]\nmode = \"file\"\n"));
    assert_error(&e, 6, &["serial.path: required with mode = \"file\""]);
    let e = error(&with(
        "[serial]\nmode = \"stdio\"\npath = \"console.log\"\n",
    ));
    assert_error(
        &e,
        8,
        &["serial.path: only used with mode = \"file\" or \"socket\" (mode is \"stdio\")"],
    );
    let e = error(&with("[serial]\npath = \"console.log\"\n"));
    assert_error(&e, 7, &["serial.path: only used with mode = \"file\""]);
    let e = error(&with(
        "[serial]\nmode = \"file\"\npath = \"no/such/dir/console.log\"\n",
    ));
    assert_error(
        &e,
        8,
        &["serial.path: folder", "no/such/dir does not exist"],
    );
    let e = error(&with("[serial]\nmode = \"file\"\npath = \".\"\n"));
    assert_error(&e, 8, &["serial.path:", "is a folder, not a file"]);
    load(&with("[serial]\nmode = \"file\"\npath = \"console.log\"\n"));
    load(&with("[serial]\nmode = \"off\"\n"));
    let e = error(&with("[serial]\nmode = \"off\"\npath = \"console.log\"\n"));
    assert_error(&e, 8, &["serial.path: only used with", "(mode is \"off\")"]);
}

#[test]
fn serial_socket_mode_takes_an_optional_log_path() {
    load(&with("[serial]\nmode = \"socket\"\n"));
    load(&with(
        "[serial]\nmode = \"socket\"\npath = \"console.log\"\n",
    ));
    let e = error(&with(
        "[serial]\nmode = \"socket\"\npath = \"no/such/dir/console.log\"\n",
    ));
    assert_error(
        &e,
        8,
        &["serial.path: folder", "no/such/dir does not exist"],
    );
    let e = error(&with("[serial]\nmode = \"socket\"\npath = \".\"\n"));
    assert_error(&e, 8, &["serial.path:", "is a folder, not a file"]);
}

#[test]
fn disks() {
    let e = error(&with("[[disk]]\npath = \"missing.img\"\n"));
    assert_error(
        &e,
        7,
        &[
            "disk[0].path: cannot open",
            "missing.img: No such file or directory",
        ],
    );
    let e = error(&with("[[disk]]\npath = \".\"\n"));
    assert_error(
        &e,
        7,
        &["disk[0].path:", "is not a disk image file or block device"],
    );
    let e = error(&with(
        "[[disk]]\npath = \"root.img\"\n[[disk]]\npath = \"./root.img\"\nreadonly = true\n",
    ));
    assert_error(&e, 9, &["disk[1].path:", "root.img is already disk[0]"]);
    load(&with(
        "[[disk]]\npath = \"root.img\"\n[[disk]]\npath = \"data.img\"\n",
    ));
}

#[test]
fn read_only_disk_image_needs_readonly() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return; // root can write any file: nothing to test.
    }
    let fixture = Fixture::new();
    let image = fixture.path("ro.img");
    std::fs::write(&image, b"x").unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o444)).unwrap();
    let e = error_in(&fixture, &with("[[disk]]\npath = \"ro.img\"\n"));
    assert_error(
        &e,
        7,
        &["disk[0].path: cannot open", "read-write", "readonly = true"],
    );
    fixture
        .load(&with("[[disk]]\npath = \"ro.img\"\nreadonly = true\n"))
        .unwrap();
}

#[test]
fn nets() {
    let e = error(&with("[[net]]\ntap = \"\"\n"));
    assert_error(&e, 7, &["net[0].tap: must not be empty"]);
    let e = error(&with("[[net]]\ntap = \"a-very-long-tap-name\"\n"));
    assert_error(
        &e,
        7,
        &["net[0].tap: \"a-very-long-tap-name\" is longer than 15 bytes"],
    );
    let e = error(&with("[[net]]\ntap = \"tap 0\"\n"));
    assert_error(
        &e,
        7,
        &["net[0].tap: \"tap 0\" is not a valid interface name"],
    );
    let e = error(&with("[[net]]\ntap = \"tap0\"\n[[net]]\ntap = \"tap0\"\n"));
    assert_error(&e, 9, &["net[1].tap: \"tap0\" is already used by net[0]"]);
    let e = error(&with(
        "[[net]]\ntap = \"tap0\"\nmac = \"01:00:5e:00:00:01\"\n",
    ));
    assert_error(
        &e,
        8,
        &[
            "net[0].mac: 01:00:5e:00:00:01 cannot be a NIC's address",
            "unicast",
        ],
    );
    let e = error(&with(
        "[[net]]\ntap = \"tap0\"\nmac = \"52:54:00:00:00:01\"\n[[net]]\ntap = \"tap1\"\nmac = \"52:54:00:00:00:01\"\n",
    ));
    assert_error(
        &e,
        11,
        &["net[1].mac: 52:54:00:00:00:01 is already the MAC of net[0]"],
    );
    load(&with("[[net]]\ntap = \"tap0\"\n[[net]]\ntap = \"tap1\"\n"));
}

#[test]
fn vfio_devices() {
    let e = error(&with(
        "[[vfio]]\nhost = \"0000:01:00.0\"\n[[vfio]]\nhost = \"01:00.0\"\n",
    ));
    assert_error(&e, 9, &["vfio[1].host: 0000:01:00.0 is already vfio[0]"]);
    let e = error(&with("[[vfio]]\nhost = \"0000:02:00.0\"\n"));
    assert_error(
        &e,
        7,
        &["vfio[0].host: there is no PCI device 0000:02:00.0 on this host (`lspci -D` lists them)"],
    );
    let e = error(&with(
        "[[vfio]]\nhost = \"01:00.0\"\nrom = \"vbios.rom\"\nrombar = false\n",
    ));
    assert_error(&e, 8, &["vfio[0].rom: a ROM file needs the ROM BAR"]);
    let e = error(&with(
        "[[vfio]]\nhost = \"01:00.0\"\nrom = \"missing.rom\"\n",
    ));
    assert_error(
        &e,
        8,
        &[
            "vfio[0].rom: cannot read",
            "missing.rom: No such file or directory",
        ],
    );
    load(&with(
        "[[vfio]]\nhost = \"01:00.0\"\n[[vfio]]\nhost = \"01:00.1\"\n",
    ));
}

#[test]
fn validation_errors_without_a_file_have_no_location() {
    let fixture = Fixture::new();
    let mut c = fixture.load(MINIMAL).unwrap();
    c.boot.cmdline = Some("x\0".to_owned());
    let e: ConfigError = c.validate_on(&fixture.host()).unwrap_err();
    assert!(e.location().is_none());
    assert_eq!(e.to_string(), "boot.cmdline: contains a NUL character");
}

#[test]
fn a_key_left_at_its_default_points_at_its_section() {
    // vcpus is not written: the error points at the [vm] header.
    let e = error("\n[vm]\nname = \"a\"\ncpu_affinity = [0, 1]\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        4,
        &["vm.cpu_affinity: lists 2 host CPU(s) but vm.vcpus = 1"],
    );
    let e =
        error("\n\n[serial]\nmode = \"file\"\n[vm]\nname = \"a\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 3, &["vm.toml:3:1: serial.path: required"]);
}

#[test]
fn validate_uses_paths_as_resolved() {
    let fixture = Fixture::new();
    let c = VmConfig::from_toml(MINIMAL, &fixture.path("vm.toml")).unwrap();
    c.validate_on(&fixture.host()).unwrap();
    let elsewhere = VmConfig::from_toml(MINIMAL, Path::new("/nonexistent/vm.toml")).unwrap();
    let e = elsewhere
        .validate_on(&fixture.host())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "boot.kernel: cannot read /nonexistent/vmlinuz: No such file or directory"
    );
}
