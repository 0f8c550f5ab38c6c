//! Every key of the VM file, its default, and relative-path resolution.

use std::path::Path;

use super::{in_dir, load, Fixture, MINIMAL};
use crate::config::{
    ByteSize, HugepageSize, MacAddr, OnReboot, PciAddress, SerialMode, VmConfig, DEFAULT_CMDLINE,
};

/// The example from docs/config.md, with paths into the fixture.
const FULL: &str = r#"
[vm]
name = "workstation"
vcpus = 4
cpu_affinity = [0, 1, 2, 3]
on_reboot = "exit"
stop_timeout = "2m"
control_socket = "ctl/ws.sock"

[memory]
size = "16G"
hugepages = true
hugepage_size = "1G"
prefault = true

[boot]
kernel = "vmlinuz"
initramfs = "initrd.img"
cmdline = "console=ttyS0 root=/dev/vda rw"

[serial]
mode = "file"
path = "console.log"

[[disk]]
path = "root.img"

[[disk]]
path = "data.img"
readonly = true

[[net]]
tap = "tap-ws0"
mac = "52:54:00:12:34:56"

[[net]]
tap = "tap-ws1"

[[vfio]]
host = "0000:01:00.0"
rom = "vbios.rom"
bind = true

[[vfio]]
host = "01:00.1"
rombar = false
"#;

#[test]
fn minimal_file_gets_the_defaults() {
    let fixture = Fixture::new();
    let c = fixture.load(MINIMAL).unwrap();
    assert_eq!(c.vm.name, "test");
    assert_eq!(c.vm.vcpus, 1);
    assert_eq!(c.vm.cpu_affinity, None);
    assert_eq!(c.vm.on_reboot, OnReboot::Restart);
    assert_eq!(c.vm.stop_timeout.duration().as_secs(), 90);
    assert_eq!(c.vm.control_socket, None);
    assert_eq!(
        c.vm.control_socket_path(),
        ghost_api::socket_dir().join("test.sock")
    );
    assert_eq!(
        c.vm.console_socket_path(),
        ghost_api::socket_dir().join("test.console")
    );
    assert_eq!(c.memory.size, ByteSize::from_bytes(512 << 20));
    assert!(!c.memory.hugepages);
    assert_eq!(c.memory.hugepage_size, HugepageSize::Size2M);
    assert!(!c.memory.prefault);
    assert_eq!(c.boot.kernel, Some(fixture.path("vmlinuz")));
    assert_eq!(c.boot.initramfs, None);
    assert_eq!(c.boot.cmdline(), DEFAULT_CMDLINE);
    assert_eq!(c.serial.mode, SerialMode::Stdio);
    assert_eq!(c.serial.path, None);
    assert!(c.disk.is_empty() && c.net.is_empty() && c.vfio.is_empty());
    assert!(!c.prefault_memory());
}

#[test]
fn every_key() {
    let fixture = Fixture::new();
    let c = fixture.load(FULL).unwrap();
    assert_eq!(c.vm.name, "workstation");
    assert_eq!(c.vm.vcpus, 4);
    assert_eq!(c.vm.cpu_affinity, Some(vec![0, 1, 2, 3]));
    assert_eq!(c.vm.on_reboot, OnReboot::Exit);
    assert_eq!(c.vm.stop_timeout.duration().as_secs(), 120);
    assert_eq!(c.vm.control_socket_path(), fixture.path("ctl/ws.sock"));
    assert_eq!(c.vm.console_socket_path(), fixture.path("ctl/ws.console"));
    assert_eq!(c.memory.size.bytes(), 16 << 30);
    assert!(c.memory.hugepages);
    assert_eq!(c.memory.hugepage_size, HugepageSize::Size1G);
    assert!(c.memory.prefault);
    assert_eq!(c.boot.kernel, Some(fixture.path("vmlinuz")));
    assert_eq!(c.boot.initramfs, Some(fixture.path("initrd.img")));
    assert_eq!(c.boot.cmdline(), "console=ttyS0 root=/dev/vda rw");
    assert_eq!(c.serial.mode, SerialMode::File);
    assert_eq!(c.serial.path, Some(fixture.path("console.log")));
    assert_eq!(c.disk.len(), 2);
    assert_eq!(c.disk[0].path, fixture.path("root.img"));
    assert!(!c.disk[0].readonly);
    assert!(c.disk[1].readonly);
    assert_eq!(c.net[0].tap, "tap-ws0");
    assert_eq!(c.net[0].mac, Some("52:54:00:12:34:56".parse().unwrap()));
    assert_eq!(c.net[1].mac, None);
    assert_eq!(
        c.net[1].effective_mac("workstation", 1),
        MacAddr::derived("workstation", 1)
    );
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    let audio: PciAddress = "0000:01:00.1".parse().unwrap();
    assert_eq!(c.vfio[0].host, gpu);
    assert_eq!(c.vfio[0].rom, Some(fixture.path("vbios.rom")));
    assert!(c.vfio[0].rombar);
    assert!(c.vfio[0].bind);
    assert_eq!(c.vfio[1].host, audio);
    assert!(!c.vfio[1].rombar);
    assert!(!c.vfio[1].bind);
    assert!(c.prefault_memory());
}

#[test]
fn memory_size_as_integer_is_mib() {
    let c = load(&format!("{MINIMAL}[memory]\nsize = 2048\n"));
    assert_eq!(c.memory.size.bytes(), 2 << 30);
    let c = load(&format!("{MINIMAL}[memory]\nsize = \"1024\"\n"));
    assert_eq!(c.memory.size.bytes(), 1 << 30);
}

#[test]
fn vfio_makes_memory_prefaulted() {
    let c = load(&format!("{MINIMAL}[[vfio]]\nhost = \"01:00.0\"\n"));
    assert!(!c.memory.prefault);
    assert!(c.prefault_memory());
}

#[test]
fn serial_modes() {
    for (mode, expected) in [
        ("stdio", SerialMode::Stdio),
        ("socket", SerialMode::Socket),
        ("off", SerialMode::Off),
    ] {
        let c = load(&format!("{MINIMAL}[serial]\nmode = \"{mode}\"\n"));
        assert_eq!(c.serial.mode, expected);
        assert_eq!(c.serial.mode.to_string(), mode);
    }
}

#[test]
fn the_console_socket_goes_with_the_control_socket() {
    use crate::config::console_socket_of;
    for (control, console) in [
        ("/run/ghost-vmm/web.sock", "/run/ghost-vmm/web.console"),
        ("/tmp/ctl.sock", "/tmp/ctl.console"),
        ("/tmp/vm.ctl", "/tmp/vm.ctl.console"),
        ("/tmp/api", "/tmp/api.console"),
    ] {
        assert_eq!(console_socket_of(Path::new(control)), Path::new(console));
    }
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let fixture = Fixture::new();
    let sub = fixture.path("vms");
    std::fs::create_dir(&sub).unwrap();
    let file = in_dir(&sub, "vm.toml");
    let initrd = fixture.path("initrd.img");
    let text = format!(
        "[vm]\nname = \"a\"\n[boot]\nkernel = \"../vmlinuz\"\ninitramfs = {:?}\n",
        initrd.display().to_string()
    );
    let c = VmConfig::from_toml(&text, &file).unwrap();
    assert_eq!(c.boot.kernel, Some(sub.join("../vmlinuz")));
    assert_eq!(c.boot.initramfs.as_deref(), Some(initrd.as_path()));
    // And it validates: ../vmlinuz exists.
    c.validate_on(&fixture.host()).unwrap();
}

#[test]
fn a_file_named_without_folder_resolves_against_the_current_folder() {
    let c = VmConfig::from_toml(MINIMAL, Path::new("vm.toml")).unwrap();
    let kernel = c.boot.kernel.as_deref().unwrap();
    assert!(kernel.is_absolute(), "{kernel:?}");
    assert!(kernel.ends_with("vmlinuz"));
    assert_eq!(
        kernel.parent(),
        Some(std::env::current_dir().unwrap().as_path())
    );
}

#[test]
fn from_toml_does_not_validate() {
    let c = VmConfig::from_toml(
        "[vm]\nname = \"bad name\"\nvcpus = 2\ncpu_affinity = [99]\n[boot]\nkernel = \"/nope\"\n",
        Path::new("/tmp/x.toml"),
    )
    .unwrap();
    assert_eq!(c.vm.name, "bad name");
    assert!(c.validate().is_err());
}

#[test]
fn inline_tables_and_dotted_keys_work() {
    let c = load(
        "vm = { name = \"inline\", vcpus = 2 }\nboot.kernel = \"vmlinuz\"\ndisk = [{ path = \"root.img\" }]\n",
    );
    assert_eq!(c.vm.name, "inline");
    assert_eq!(c.vm.vcpus, 2);
    assert_eq!(c.disk.len(), 1);
}
