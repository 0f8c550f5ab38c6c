//! Issue 14 under ghost-vmm in the nested test host: Debian's OVMF with what a workstation
//! brings, passed-through devices and install media (`firmware.rs` has the virtio-blk boot,
//! the variable store and the QEMU oracle).
//!
//! All scenarios share one L2 boot, whose L1 gives it an NVMe controller holding the installed
//! Debian (`efi.img`), two e1000e NICs, one with QEMU's iPXE EFI option ROM and one without
//! a ROM, and the hybrid ISO of `tests/testhost/iso-image.sh` as a virtio disk:
//! - `ghost-nvme`: the workstation pattern. The NVMe controller passed through (`bind = true`:
//!   ghost-vmm binds it to vfio-pci and gives it back after), `hyperv = true`: OVMF finds the
//!   disk behind the passed-through controller and boots it; the guest reaches multi-user with
//!   root on `/dev/nvme0n1p2`, sees UEFI, the controller, SMBIOS naming the VM and a Microsoft
//!   hypervisor, and `systemctl poweroff` exits 0; L2's `nvme` driver has the device again.
//! - `ghost-ipxe`: the e1000e with its ROM passed through to a VM without a disk: OVMF runs
//!   the device's own EFI option ROM; iPXE's driver brings the NIC up (DHCP from L1's user
//!   network, through DMA into guest RAM) and offers its network boot; `ghost-vmm stop`.
//! - `ghost-rom-file`: the e1000e without a ROM, and `rom = "efi-e1000e.rom"` in the VM file:
//!   the same iPXE runs from the file.
//! - `ghost-iso`: the hybrid ISO attached read-only: GRUB's menu shows on the console, Enter
//!   starts its first entry, the kernel and initramfs it loads from the ISO run (a live
//!   system that reports and powers off: exit 0).
//! - `ghost-secboot`: Debian's Secure Boot build (it needs SMM) is refused with one line as
//!   soon as its PlatformPei asks the MCH for TSEG: exit 2, no variable store left behind.

use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::testhost::{
    hybrid_iso, l2_nvme_address, DebianImage, KernelFlavor, RunReport, Scenario, ScenarioResult,
    TestHost, DEBIAN_GUEST_SHELL, DEBIAN_READY, DEBIAN_SHELL_READY,
};

/// L2's PCI address of the e1000e with the iPXE ROM (L1 `addr=0x10`).
const E1000E_ROM: &str = "0000:00:10.0";
/// L2's PCI address of the e1000e without a ROM (L1 `addr=0x11`, `romfile=`).
const E1000E_BARE: &str = "0000:00:11.0";
/// QEMU's iPXE EFI ROM for e1000e (Debian's `ipxe-qemu`), in L1 and in L2.
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000e.rom";
/// The ISO, L2's first virtio disk.
const ISO_DISK: &str = "/dev/vda";

/// A ghost-vmm VM file booting Debian's OVMF from L2's `/usr/share/OVMF`, its variable store
/// created in /tmp.
fn vm_file(name: &str, code: &str, vm_extra: &str, devices: &str) -> String {
    format!(
        "[vm]\nname = \"{name}\"\nvcpus = 2\n{vm_extra}\n\n[memory]\nsize = \"1G\"\n\n[boot]\n\
         firmware = \"/usr/share/OVMF/{code}\"\nfirmware_vars = \"/tmp/{name}.vars\"\n\n{devices}"
    )
}

fn nvme_script() -> String {
    let vm = "n4";
    let nvme = l2_nvme_address(0);
    format!(
        r#"{DEBIAN_GUEST_SHELL}
echo "DRIVER_BEFORE=$(pci_driver {nvme})"
ghost_mark vm-start
vm_start {vm} $GHOST_VMM run /ghost/vm/{vm}.toml
vm_wait_for {vm} {DEBIAN_SHELL_READY} 420 || {{ vm_kill {vm}; exit 1; }}
echo "DRIVER_WHILE=$(pci_driver {nvme})"
debian_shell_setup {vm}
ask {vm} L3_STATE 'systemctl is-system-running --wait' 180 || {{ vm_kill {vm}; exit 1; }}
ghost_mark multi-user
ask {vm} L3_EFI 'sh -c "test -d /sys/firmware/efi && echo present || echo absent"' || exit 1
ask {vm} L3_ROOT 'findmnt -no SOURCE,FSTYPE /' || exit 1
ask {vm} L3_PRODUCT 'cat /sys/class/dmi/id/product_name' || exit 1
ask {vm} L3_NVME_CLASS 'sh -c "cat /sys/class/nvme/nvme0/device/class"' || exit 1
ask {vm} L3_HYPERVISOR 'sh -c "dmesg | sed -n \"s/.*Hypervisor detected: //p\""' || exit 1
ask {vm} L3_CLOCK 'cat /sys/devices/system/clocksource/clocksource0/current_clocksource' || exit 1
ask {vm} L3_CPUS nproc || exit 1
ghost_mark poweroff
vm_send {vm} 'systemctl poweroff'
vm_wait {vm} 120
echo "VM_RC=$?"
ghost_mark vm-exited
echo "DRIVER_AFTER=$(pci_driver {nvme})"
"#
    )
}

/// A VM without a disk whose passed-through e1000e's iPXE runs; stopped once iPXE has had its
/// say (`Nothing to boot`: the user network has no boot server).
fn ipxe_script(vm: &str) -> String {
    format!(
        r#"
ghost_mark vm-start
vm_start {vm} $GHOST_VMM run /ghost/vm/{vm}.toml
vm_wait_for {vm} 'Open Source Network Boot Firmware' 300 || {{ echo NO_IPXE; vm_kill {vm}; exit 1; }}
ghost_mark ipxe
vm_wait_for {vm} 'Nothing to boot' 120 || {{ echo NO_NET_BOOT; vm_kill {vm}; exit 1; }}
$GHOST_VMM stop {vm}
vm_wait {vm} 60
echo "VM_RC=$?"
"#
    )
}

const ISO_SCRIPT: &str = r#"
ghost_mark vm-start
vm_start iso $GHOST_VMM run /ghost/vm/iso.toml
vm_wait_for iso 'ghost-iso halt' 300 || { echo NO_MENU; vm_kill iso; exit 1; }
ghost_mark menu
# The menu waits: Enter (a carriage return, as a terminal sends it) starts the first entry.
printf '\r' 1<>"$GHOST_VM_DIR/iso.in"
vm_wait_for iso GHOST-ISO-LIVE 300 || { echo NO_LIVE; vm_kill iso; exit 1; }
vm_wait iso 60
echo "VM_RC=$?"
"#;

const SECBOOT_SCRIPT: &str = r#"
ghost_mark vm-start
vm_start sb $GHOST_VMM run /ghost/vm/sb.toml
vm_wait sb 240
echo "VM_RC=$?"
ghost_mark vm-exited
[ -e /tmp/sb.vars ] && echo VARS=created || echo VARS=absent
"#;

fn run() -> &'static RunReport {
    static RUN: OnceLock<RunReport> = OnceLock::new();
    RUN.get_or_init(|| {
        let image =
            DebianImage::ensure().expect("the Debian image (tests/testhost/debian-image.sh)");
        let iso = hybrid_iso().expect("the hybrid ISO (tests/testhost/iso-image.sh)");
        let nvme = l2_nvme_address(0);
        let t = Duration::from_secs(600);
        TestHost::new("firmware-devices")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_ovmf()
            .expect("OVMF and the fixed L1 QEMU (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .file(
                "/ghost/vm/n4.toml",
                vm_file(
                    "n4",
                    "OVMF_CODE_4M.fd",
                    "hyperv = true",
                    &format!("[[vfio]]\nhost = \"{nvme}\"\nbind = true\n"),
                ),
                0o644,
            )
            .file(
                "/ghost/vm/ipxe.toml",
                vm_file(
                    "ipxe",
                    "OVMF_CODE_4M.fd",
                    "",
                    &format!("[[vfio]]\nhost = \"{E1000E_ROM}\"\nbind = true\n"),
                ),
                0o644,
            )
            .file(
                "/ghost/vm/romfile.toml",
                vm_file(
                    "romfile",
                    "OVMF_CODE_4M.fd",
                    "",
                    &format!(
                        "[[vfio]]\nhost = \"{E1000E_BARE}\"\nbind = true\nrom = \"{IPXE_ROM}\"\n"
                    ),
                ),
                0o644,
            )
            .file(
                "/ghost/vm/iso.toml",
                vm_file(
                    "iso",
                    "OVMF_CODE_4M.fd",
                    "",
                    &format!("[[disk]]\npath = \"{ISO_DISK}\"\nreadonly = true\n"),
                ),
                0o644,
            )
            .file(
                "/ghost/vm/sb.toml",
                vm_file("sb", "OVMF_CODE_4M.secboot.fd", "", ""),
                0o644,
            )
            .without_l3_kernel(KernelFlavor::Cloud)
            .disk(&iso) // ISO_DISK
            .nvme_disk(&image.efi_image) // l2_nvme_address(0)
            .qemu_args([
                "-netdev".to_owned(),
                "user,id=pt-rom".to_owned(),
                "-device".to_owned(),
                format!("e1000e,netdev=pt-rom,romfile={IPXE_ROM},addr=0x10"),
                "-netdev".to_owned(),
                "user,id=pt-bare".to_owned(),
                "-device".to_owned(),
                "e1000e,netdev=pt-bare,romfile=,addr=0x11".to_owned(),
            ])
            .run(&[
                Scenario::new("ghost-nvme", nvme_script()).timeout(t),
                Scenario::new("ghost-ipxe", ipxe_script("ipxe")).timeout(t),
                Scenario::new("ghost-rom-file", ipxe_script("romfile")).timeout(t),
                Scenario::new("ghost-iso", ISO_SCRIPT).timeout(t),
                Scenario::new("ghost-secboot", SECBOOT_SCRIPT).timeout(Duration::from_secs(300)),
            ])
            .expect("the test host boots")
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = run();
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(60)))
}

fn secs(s: &ScenarioResult, from: &str, to: &str) -> String {
    s.time_between(from, to)
        .map_or_else(|| "?".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

#[test]
fn ghost_vmm_and_ovmf_boot_the_installed_debian_from_a_passed_through_nvme() {
    let s = scenario("ghost-nvme");
    let t = s.transcript();
    eprintln!(
        "ghost-nvme: vm_start -> 'BdsDxe: starting' {} s; -> {DEBIAN_READY} {} s; \
         poweroff -> exit {} s",
        secs(s, "@@GHOST-MARK vm-start", "BdsDxe: starting"),
        secs(s, "@@GHOST-MARK vm-start", DEBIAN_READY),
        secs(s, "@@GHOST-MARK poweroff", "@@GHOST-MARK vm-exited"),
    );
    s.assert_success();
    assert_eq!(s.line_after("DRIVER_BEFORE="), Some("nvme"), "{t}");
    assert_eq!(s.line_after("DRIVER_WHILE="), Some("vfio-pci"), "{t}");
    assert_eq!(s.line_after("L3_STATE="), Some("running"), "{t}");
    assert_eq!(s.line_after("L3_EFI="), Some("present"), "{t}");
    assert_eq!(
        s.line_after("L3_ROOT=")
            .map(|r| r.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["/dev/nvme0n1p2", "ext4"]),
        "root on the passed-through NVMe:\n{t}"
    );
    assert_eq!(s.line_after("L3_PRODUCT="), Some("n4"), "{t}");
    // PCI class 01 08 02: mass storage, NVM Express.
    assert_eq!(s.line_after("L3_NVME_CLASS="), Some("0x010802"), "{t}");
    assert_eq!(
        s.line_after("L3_HYPERVISOR="),
        Some("Microsoft Hyper-V"),
        "{t}"
    );
    assert_eq!(
        s.line_after("L3_CLOCK="),
        Some("hyperv_clocksource_tsc_page"),
        "{t}"
    );
    assert_eq!(s.value::<u32>("L3_CPUS="), Some(2), "{t}");
    assert_eq!(s.value::<i32>("VM_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("DRIVER_AFTER="), Some("nvme"), "{t}");
}

/// iPXE ran from the e1000e's ROM (whichever source) and drove the NIC.
fn assert_ipxe_ran(s: &ScenarioResult, vm: &str) {
    let t = s.transcript();
    eprintln!(
        "{vm}: vm_start -> iPXE banner {} s",
        secs(
            s,
            "@@GHOST-MARK vm-start",
            "Open Source Network Boot Firmware"
        )
    );
    s.assert_success();
    assert!(s.contains("iPXE 1."), "iPXE's banner:\n{t}");
    assert!(
        s.contains("Press Ctrl-B for the iPXE command line"),
        "iPXE's prompt:\n{t}"
    );
    // Its driver has the NIC (the guest's bus address, not L2's) and got a DHCP lease.
    assert!(
        s.lines
            .iter()
            .any(|l| l.text.contains("net0:") && l.text.contains("using 82574l")),
        "iPXE's e1000e driver:\n{t}"
    );
    assert!(
        s.lines
            .iter()
            .any(|l| l.text.contains("Configuring (net0") && l.text.contains("ok")),
        "DHCP through the passed-through NIC:\n{t}"
    );
    assert!(
        s.contains(&format!("{vm}: stopped hard")),
        "`ghost-vmm stop` stopped it:\n{t}"
    );
    assert_eq!(s.value::<i32>("VM_RC="), Some(3), "{t}");
}

#[test]
fn ovmf_runs_a_passed_through_nics_own_efi_option_rom() {
    assert_ipxe_ran(scenario("ghost-ipxe"), "ipxe");
}

#[test]
fn ovmf_runs_the_option_rom_file_the_vm_file_names() {
    assert_ipxe_ran(scenario("ghost-rom-file"), "romfile");
}

#[test]
fn a_hybrid_iso_attached_read_only_boots_to_its_menu_and_its_entry_runs() {
    let s = scenario("ghost-iso");
    let t = s.transcript();
    eprintln!(
        "ghost-iso: vm_start -> GRUB's menu {} s; Enter -> live system {} s",
        secs(s, "@@GHOST-MARK vm-start", "@@GHOST-MARK menu"),
        secs(s, "@@GHOST-MARK menu", "GHOST-ISO-LIVE"),
    );
    s.assert_success();
    assert!(s.contains("ghost-iso live"), "the menu's entries:\n{t}");
    assert!(
        s.contains("ghost-iso: loading the live system"),
        "the entry GRUB ran:\n{t}"
    );
    let live = s.line_after("GHOST-ISO-LIVE").unwrap_or_default();
    let version = run_kernel_version();
    assert!(
        live.contains(&format!("kernel={version}")) && live.contains("efi=yes"),
        "the live system's kernel, booted through UEFI: {live}\n{t}"
    );
    assert_eq!(s.value::<i32>("VM_RC="), Some(0), "{t}");
}

fn run_kernel_version() -> String {
    DebianImage::ensure()
        .expect("the Debian image")
        .kernel_version
}

#[test]
fn the_secure_boot_build_is_refused_with_one_line() {
    let s = scenario("ghost-secboot");
    let t = s.transcript();
    s.assert_success();
    assert!(
        s.contains("boot.firmware: this firmware build needs SMM"),
        "the refusal:\n{t}"
    );
    let refusals = s
        .lines
        .iter()
        .filter(|l| l.text.contains("needs SMM"))
        .count();
    assert_eq!(refusals, 1, "one line:\n{t}");
    // Exit 2 (the file the VM file names is the problem), promptly, and the store this run
    // created for it is gone again.
    assert_eq!(s.value::<i32>("VM_RC="), Some(2), "{t}");
    assert_eq!(s.line_after("VARS="), Some("absent"), "{t}");
}
