//! Issue 14's reference oracle in the nested test host: Debian's QEMU (q35, KVM in L2) boots
//! Debian's OVMF, and OVMF boots the installed Debian 12 of `tests/testhost/debian-image.sh`
//! (`efi.img`: GPT, an ESP with systemd-boot, root on ext4 by PARTUUID) to multi-user. What
//! ghost-vmm's firmware boot has to match.
//!
//! L1 must be the project's QEMU with the CR8 fix (`tests/testhost/l1-qemu.sh`; Debian's
//! aborts about 35 s into OVMF): `TestHost::with_ovmf` makes sure of it.
//!
//! All scenarios share one L2 boot:
//! - `ovmf-virtio`: the disk as virtio-blk. The guest says it booted through UEFI
//!   (`/sys/firmware/efi`, its EFI variables, `efibootmgr`), what SMBIOS and ACPI tables QEMU
//!   gave it, root on `/dev/vda2`; QMP's `system_powerdown` powers it off through logind.
//! - `ovmf-nvme`: the same disk on L1's emulated NVMe controller, passed through to L3
//!   (`vfio-pci`): the workstation pattern; root on `/dev/nvme0n1p2`.
//! - `ovmf-ipxe`: an L1 e1000e with QEMU's iPXE EFI option ROM passed through to an L3 with
//!   no disk: OVMF runs the device's ROM, and iPXE's lines on the serial console are what a
//!   ghost-vmm test of option ROMs can look for.
//!
//! - `ghost-virtio`: the same installed Debian under **ghost-vmm** and the same OVMF, from
//!   virtio-blk with a virtio-net NIC: the guest sees UEFI, SMBIOS naming the VM, ghost-vmm's
//!   ACPI tables, its disk and NIC; `efibootmgr` creates a boot entry; `systemctl reboot`
//!   goes back through the firmware, whose boot manager now starts that entry (Boot0003); once
//!   the guest is at multi-user again, SIGTERM presses
//!   the (fixed-feature ACPI) power button and logind powers off (exit 0); a second run finds
//!   the entry in the variable store, boots it, and `systemctl poweroff` exits 0.
//!
//! Every phase's time is printed (`-- --nocapture`): VMM start to OVMF's first output, to the
//! kernel's banner (`Linux version`, shown through `quiet` by the entry's `loglevel=6`), to
//! `GHOST-READY`, and the guest's own uptime then.

use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::testhost::{
    l2_nvme_address, qemu_ovmf_args, DebianImage, KernelFlavor, Line, RunReport, Scenario,
    ScenarioResult, TestHost, DEBIAN_GUEST_SHELL, DEBIAN_READY, DEBIAN_SHELL_READY,
};

/// The EFI disk on virtio-blk in L2 (and so in L3).
const VIRTIO_DISK: &str = "/dev/vda";
/// L2's PCI address of the passed-through e1000e (L1 `-device e1000e,addr=0x10`).
const E1000E: &str = "0000:00:10.0";
/// Its option ROM in L1: QEMU's iPXE EFI ROM for e1000e (Debian's `ipxe-qemu`).
const E1000E_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000e.rom";

/// How long OVMF plus the guest may take to reach multi-user (about 100 s seen nested).
const READY_TIMEOUT_S: u32 = 420;

/// L2 helpers: `bind_vfio BDF` moves a PCI function to vfio-pci (`VFIO_<BDF>=<driver>` says
/// where it is after), `qmp PORT COMMAND` sends one QMP command to L2's loopback.
const L2_SHELL: &str = r#"
bind_vfio() {
    d=/sys/bus/pci/devices/$1
    [ -e "$d" ] || { echo "NO_DEVICE $1"; return 1; }
    [ -e "$d/driver" ] && echo "$1" >"$d/driver/unbind"
    echo vfio-pci >"$d/driver_override"
    echo "$1" >/sys/bus/pci/drivers_probe
    echo "VFIO_$1=$(basename "$(readlink "$d/driver")")"
}
qmp() {
    (printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$2"; sleep 2) \
        | nc 127.0.0.1 "$1" >/tmp/qmp.out 2>&1
    echo "QMP_RC=$?"
    echo "QMP_SAID=$(tr '\n' ' ' </tmp/qmp.out)"
}
"#;

/// QEMU in L2 with OVMF: q35, 2 vCPUs, 1 GiB, the console on stdio, QMP on `qmp_port`, the
/// VM's own copy of the variable store in `/tmp/<vm>.vars`; then `devices`. QEMU logs every
/// CPU reset with the registers before it to `/tmp/<vm>.qemu.log` ([`qemu_resets`] prints
/// them). A guest reset reboots the VM, as a user's QEMU does: nested, OVMF now and then
/// resets early in its boot (seen twice in some twenty boots, never on bare metal), and a
/// second boot then succeeds; the log shows each.
fn qemu_ovmf(vm: &str, qmp_port: u16, devices: &str) -> String {
    format!(
        "cp $GHOST_OVMF_VARS /tmp/{vm}.vars\n\
         ghost_mark vm-start\n\
         vm_start {vm} $QEMU -accel kvm -machine q35 -cpu host -smp 2 -m 1G -nographic \
         {ovmf} {devices} -qmp tcp:127.0.0.1:{qmp_port},server=on,wait=off \
         -d cpu_reset,guest_errors -D /tmp/{vm}.qemu.log",
        ovmf = qemu_ovmf_args(&format!("/tmp/{vm}.vars")),
    )
}

/// After the VM exited: how many CPU resets QEMU logged (`RESETS=`; 4 at start with 2 vCPUs:
/// each vCPU's at creation and the machine's), the registers QEMU logged before any later
/// one (a guest reset, after which the VM boots again), and a count of each
/// guest error QEMU logged (OVMF probes a TPM at 0xFED40000: rejected, harmless).
fn qemu_resets(vm: &str) -> String {
    format!(
        r#"echo "RESETS=$(grep -c 'CPU Reset' /tmp/{vm}.qemu.log)"
awk '/CPU Reset/ {{ n++ }} n > 4 && /CPU Reset|^RIP|^RAX|^CR0|^EFER|^CS /' /tmp/{vm}.qemu.log | head -n 40 | sed 's/^/QEMU-RESET: /'
grep -v 'CPU Reset' /tmp/{vm}.qemu.log | grep -v '^[A-Z0-9]* *[=]' | sort | uniq -c | sort -rn | head -n 10 | sed 's/^/QEMU-GUEST-ERRORS: /'
"#
    )
}

/// What the guest says about its firmware and platform, at its root shell: `L3_*=` lines.
fn guest_questions(vm: &str) -> String {
    let fail = format!("|| {{ vm_kill {vm}; {} exit 1; }}", qemu_resets(vm));
    format!(
        r#"
vm_wait_for {vm} {DEBIAN_SHELL_READY} 120 || {{ echo NO_SHELL; vm_kill {vm}; exit 1; }}
debian_shell_setup {vm}
ask {vm} L3_STATE 'systemctl is-system-running --wait' 180 {fail}
ask {vm} L3_EFI 'sh -c "test -d /sys/firmware/efi && echo present || echo absent"' {fail}
ask {vm} L3_EFI_BITS 'cat /sys/firmware/efi/fw_platform_size' {fail}
ask {vm} L3_EFIVARS 'sh -c "ls /sys/firmware/efi/efivars | wc -l"' {fail}
ask {vm} L3_EFI_DMESG 'sh -c "dmesg | grep -m1 \"efi: EFI v\""' {fail}
ask {vm} L3_PRODUCT 'cat /sys/class/dmi/id/product_name' {fail}
ask {vm} L3_VENDOR 'cat /sys/class/dmi/id/sys_vendor' {fail}
ask {vm} L3_BIOS 'cat /sys/class/dmi/id/bios_vendor /sys/class/dmi/id/bios_version' {fail}
ask {vm} L3_ACPI_TABLES 'ls /sys/firmware/acpi/tables' {fail}
ask {vm} L3_CPUS nproc {fail}
ask {vm} L3_ROOT 'findmnt -no SOURCE,FSTYPE /' {fail}
ask {vm} L3_CMDLINE 'cat /proc/cmdline' {fail}
ask {vm} L3_DISKS 'lsblk -dno NAME,SIZE' {fail}
dump {vm} EFI_DMESG 'sh -c "dmesg | grep -i efi"' {fail}
ask {vm} L3_EFIBOOTMGR 'efibootmgr' {fail}
"#
    )
}

/// Boots the EFI disk given by `devices` to multi-user, asks [`guest_questions`], and powers
/// the guest off with QMP's `system_powerdown`.
fn boot_script(vm: &str, qmp_port: u16, setup: &str, devices: &str) -> String {
    format!(
        r#"{DEBIAN_GUEST_SHELL}{L2_SHELL}
{setup}
{start}
vm_wait_for {vm} {DEBIAN_READY} {READY_TIMEOUT_S} || {{ vm_kill {vm}; {resets} exit 1; }}
ghost_mark multi-user
{questions}
ghost_mark poweroff
qmp {qmp_port} system_powerdown
vm_wait {vm} 120
echo "VM_RC=$?"
ghost_mark vm-exited
{resets}"#,
        start = qemu_ovmf(vm, qmp_port, devices),
        questions = guest_questions(vm),
        resets = qemu_resets(vm),
    )
}

/// `ovmf-ipxe`: the passed-through e1000e in a VM without a disk; whatever the firmware and
/// iPXE print in the time given, then the VM is stopped.
fn ipxe_script() -> String {
    let vm = "i3";
    format!(
        r#"{L2_SHELL}
bind_vfio {E1000E} || exit 1
rom=/sys/bus/pci/devices/{E1000E}/rom
echo 1 >$rom && echo "ROM_BYTES=$(cat $rom | wc -c)"; echo 0 >$rom
{start}
vm_wait_for {vm} 'Network Boot Firmware' 400 || {{ echo NO_IPXE; vm_kill {vm}; {resets} exit 1; }}
ghost_mark ipxe
vm_wait_for {vm} 'Nothing to boot' 60
ghost_mark stop
vm_kill {vm}
ghost_mark vm-exited
{resets}"#,
        resets = qemu_resets(vm),
        start = qemu_ovmf(
            vm,
            4446,
            &format!("-nic none -device vfio-pci,host={E1000E}")
        ),
    )
}

/// The ghost-vmm VM: OVMF from L2's `/usr/share/OVMF`, its store created beside the VM file's
/// name in /tmp, the EFI disk and a TAP.
fn ghost_vm_file(vm: &str) -> String {
    format!(
        "[vm]\nname = \"{vm}\"\nvcpus = 2\n\n[memory]\nsize = \"1G\"\n\n[boot]\n\
         firmware = \"/usr/share/OVMF/OVMF_CODE_4M.fd\"\nfirmware_vars = \"/tmp/{vm}.vars\"\n\n\
         [[disk]]\npath = \"{VIRTIO_DISK}\"\n\n[[net]]\ntap = \"tap-{vm}\"\n"
    )
}

/// Waits until the VM's log holds `count` lines with `text` (or `timeout` seconds pass).
const WAIT_COUNT: &str = r#"
vm_wait_count() {
    _end=$(( $(cut -d. -f1 /proc/uptime) + $4 ))
    while [ "$(grep -cF -- "$2" "$GHOST_VM_DIR/$1.log")" -lt "$3" ]; do
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$_end" ] && return 1
        [ -f "$GHOST_VM_DIR/$1.rc" ] && return 1
        sleep 1
    done
}
"#;

/// `ghost-virtio`: ghost-vmm + OVMF (see the module docs).
fn ghost_script() -> String {
    let vm = "g3";
    let again = "g3b";
    format!(
        r#"{DEBIAN_GUEST_SHELL}{WAIT_COUNT}
[ -b {VIRTIO_DISK} ] || {{ echo NO_DISK; exit 1; }}
ghost_mark vm-start
vm_start {vm} $GHOST_VMM run /ghost/vm/{vm}.toml
vm_wait_for {vm} {DEBIAN_READY} {READY_TIMEOUT_S} || {{ vm_kill {vm}; exit 1; }}
ghost_mark multi-user
{questions}
ask {vm} L3_NIC 'sh -c "ls /sys/class/net | grep -v ^lo"' || exit 1
ask {vm} L3_NEW_ENTRY 'sh -c "efibootmgr -c -d /dev/vda -p 1 -L ghost-test -l /EFI/BOOT/BOOTX64.EFI >/dev/null && echo created"' || exit 1
ghost_mark reboot
vm_send {vm} 'systemctl reboot'
vm_wait_count {vm} {DEBIAN_READY} 2 {READY_TIMEOUT_S} || {{ echo NO_SECOND_BOOT; vm_kill {vm}; exit 1; }}
ghost_mark rebooted
echo "BOOTS=$(grep -c 'BdsDxe: starting' $GHOST_VM_DIR/{vm}.log)"
echo "ENTRY_BOOTS=$(grep -c 'starting Boot0003' $GHOST_VM_DIR/{vm}.log)"
ghost_mark poweroff
kill -TERM "$(cat $GHOST_VM_DIR/{vm}.pid)"
vm_wait {vm} 120
echo "VM_RC=$?"
ghost_mark vm-exited
vm_start {again} $GHOST_VMM run /ghost/vm/{vm}.toml
vm_wait_for {again} {DEBIAN_SHELL_READY} {READY_TIMEOUT_S} || {{ vm_kill {again}; exit 1; }}
debian_shell_setup {again}
ask {again} L3_KEPT_ENTRY 'sh -c "efibootmgr | grep -c ^Boot0003"' || {{ vm_kill {again}; exit 1; }}
echo "AGAIN_ENTRY_BOOTS=$(grep -c 'starting Boot0003' $GHOST_VM_DIR/{again}.log)"
vm_send {again} 'systemctl poweroff'
vm_wait {again} 120
echo "VM2_RC=$?"
"#,
        questions = guest_questions(vm),
    )
}

struct Run {
    report: RunReport,
    image: DebianImage,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let image =
            DebianImage::ensure().expect("the Debian image (tests/testhost/debian-image.sh)");
        eprintln!(
            "debian EFI disk: {} (root PARTUUID {}; entry: {})",
            image.efi_image.display(),
            image.efi_root_partuuid,
            image.efi_cmdline
        );
        let nvme = l2_nvme_address(0);
        let t = Duration::from_secs(600);
        let host = TestHost::new("firmware")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_ovmf()
            .expect("OVMF and the fixed L1 QEMU (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .file("/ghost/vm/g3.toml", ghost_vm_file("g3"), 0o644)
            .without_l3_kernel(KernelFlavor::Cloud)
            .disk(&image.efi_image) // VIRTIO_DISK
            .nvme_disk(&image.efi_image) // l2_nvme_address(0)
            .qemu_args([
                "-netdev".to_owned(),
                "user,id=ghost-pt-net".to_owned(),
                "-device".to_owned(),
                format!("e1000e,netdev=ghost-pt-net,romfile={E1000E_ROM},addr=0x10"),
            ]);
        eprintln!(
            "L1 QEMU: {} (fixed: {})",
            host.assets().l1_qemu.binary.display(),
            host.assets().l1_qemu.fixed
        );
        let report = host
            .run(&[
                Scenario::new(
                    "ovmf-virtio",
                    boot_script(
                        "q3",
                        4444,
                        &format!("[ -b {VIRTIO_DISK} ] || {{ echo NO_DISK; exit 1; }}"),
                        &format!("-nic none -drive file={VIRTIO_DISK},if=virtio,format=raw"),
                    ),
                )
                .timeout(t),
                Scenario::new(
                    "ovmf-nvme",
                    boot_script(
                        "n3",
                        4445,
                        &format!("bind_vfio {nvme} || exit 1"),
                        &format!("-nic none -device vfio-pci,host={nvme}"),
                    ),
                )
                .timeout(t),
                Scenario::new("ovmf-ipxe", ipxe_script()).timeout(t),
                Scenario::new("ghost-virtio", ghost_script()).timeout(Duration::from_secs(1200)),
            ])
            .expect("the test host boots");
        Run { report, image }
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = &run().report;
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(60)))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// The first line the guest printed after `vm_start` (OVMF's first output; not QEMU's own
/// messages).
fn first_vm_line(s: &ScenarioResult) -> Option<&Line> {
    s.lines
        .iter()
        .skip_while(|l| !l.text.contains("@@GHOST-MARK vm-start"))
        .skip(1)
        .find(|l| !l.text.trim().is_empty() && !l.text.starts_with("qemu-system-x86_64:"))
}

/// Prints the phases of a firmware boot: VMM start to OVMF's first output, to the boot
/// manager starting the loader, to the kernel's banner, to multi-user; the guest's uptime at
/// multi-user, and power-off.
fn print_phases(what: &str, s: &ScenarioResult) {
    let start = s.time_of("@@GHOST-MARK vm-start");
    let since = |needle: &str| Some(s.time_of(needle)?.saturating_sub(start?));
    let first = first_vm_line(s);
    eprintln!(
        "{what}: vm_start -> firmware's first output {} s ({:?}); -> 'BdsDxe: starting' {} s; \
         -> kernel banner {} s; -> {DEBIAN_READY} {} s (guest uptime then {} s); \
         system_powerdown -> exit {} s",
        secs(first.and_then(|l| Some(l.at.saturating_sub(start?)))),
        first.map(|l| l.text.as_str()).unwrap_or("-"),
        secs(since("BdsDxe: starting")),
        secs(since("Linux version")),
        secs(since(DEBIAN_READY)),
        s.value::<String>("GHOST-READY uptime=")
            .unwrap_or_else(|| "?".into()),
        secs(s.time_between("@@GHOST-MARK poweroff", "@@GHOST-MARK vm-exited")),
    );
    for key in [
        "L3_EFI=",
        "L3_EFI_BITS=",
        "L3_EFIVARS=",
        "L3_EFIBOOTMGR=",
        "L3_EFI_DMESG=",
        "L3_PRODUCT=",
        "L3_VENDOR=",
        "L3_BIOS=",
        "L3_ACPI_TABLES=",
        "L3_CPUS=",
        "L3_ROOT=",
        "L3_CMDLINE=",
        "L3_DISKS=",
    ] {
        eprintln!("{what}: {key}{}", s.line_after(key).unwrap_or("?"));
    }
}

/// Booted through UEFI to multi-user, root on `root_dev`, powered off cleanly.
fn assert_firmware_boot(s: &ScenarioResult, root_dev: &str) {
    let t = s.transcript();
    s.assert_success();
    assert!(s.contains(DEBIAN_READY), "no {DEBIAN_READY}:\n{t}");
    assert_eq!(s.line_after("L3_STATE="), Some("running"), "{t}");
    assert_eq!(s.line_after("L3_EFI="), Some("present"), "{t}");
    assert_eq!(s.line_after("L3_EFI_BITS="), Some("64"), "{t}");
    assert!(
        s.value::<u32>("L3_EFIVARS=").is_some_and(|n| n > 0),
        "efivarfs lists the firmware's variables:\n{t}"
    );
    assert!(
        s.line_after("L3_EFIBOOTMGR=")
            .is_some_and(|l| l.contains("BootCurrent")),
        "{t}"
    );
    assert!(
        s.line_after("L3_ACPI_TABLES=")
            .is_some_and(|l| ["APIC", "FACP", "DSDT", "MCFG"]
                .iter()
                .all(|t| l.split_whitespace().any(|w| w == *t))),
        "the ACPI tables (MADT, FADT, DSDT, MCFG):\n{t}"
    );
    assert_eq!(s.value::<u32>("L3_CPUS="), Some(2), "{t}");
    let root = s.line_after("L3_ROOT=").unwrap_or_default();
    assert!(
        root.split_whitespace().collect::<Vec<_>>() == [root_dev, "ext4"],
        "root on {root_dev}: {root}\n{t}"
    );
    let cmdline = s.line_after("L3_CMDLINE=").unwrap_or_default();
    assert!(
        cmdline.contains(&format!("root=PARTUUID={}", run().image.efi_root_partuuid)),
        "the loader entry's command line: {cmdline}\n{t}"
    );
    assert_eq!(s.value::<i32>("QMP_RC="), Some(0), "{t}");
    assert_eq!(s.value::<i32>("VM_RC="), Some(0), "{t}");
}

#[test]
fn qemu_and_ovmf_boot_the_installed_debian_from_virtio_blk() {
    let s = scenario("ovmf-virtio");
    print_phases("ovmf-virtio", s);
    assert_firmware_boot(s, "/dev/vda2");
}

#[test]
fn qemu_and_ovmf_boot_the_installed_debian_from_a_passed_through_nvme() {
    let s = scenario("ovmf-nvme");
    print_phases("ovmf-nvme", s);
    let t = s.transcript();
    assert_eq!(
        s.line_after(&format!("VFIO_{}=", l2_nvme_address(0))),
        Some("vfio-pci"),
        "{t}"
    );
    assert_firmware_boot(s, "/dev/nvme0n1p2");
}

#[test]
fn ovmf_runs_a_passed_through_nics_ipxe_option_rom() {
    let s = scenario("ovmf-ipxe");
    let t = s.transcript();
    let start = s.time_of("@@GHOST-MARK vm-start");
    eprintln!(
        "ovmf-ipxe: ROM {} bytes; vm_start -> firmware's first output {} s; -> first iPXE line {} s",
        s.line_after("ROM_BYTES=").unwrap_or("?"),
        secs(first_vm_line(s).and_then(|l| Some(l.at.saturating_sub(start?)))),
        secs(s.time_of("iPXE").and_then(|a| Some(a.saturating_sub(start?)))),
    );
    for line in s.lines.iter().filter(|l| {
        [
            "iPXE",
            "PXE",
            "Ctrl-B",
            "BdsDxe",
            "Boot0",
            "net0",
            "Nothing to boot",
        ]
        .iter()
        .any(|k| l.text.contains(k))
    }) {
        eprintln!("ovmf-ipxe: [{:8.3}] {}", line.at.as_secs_f64(), line.text);
    }
    s.assert_success();
    assert_eq!(
        s.line_after(&format!("VFIO_{E1000E}=")),
        Some("vfio-pci"),
        "{t}"
    );
    assert!(
        s.value::<u64>("ROM_BYTES=").is_some_and(|n| n > 0),
        "L2 reads the device's ROM BAR:\n{t}"
    );
    assert!(
        s.contains("iPXE 1.") && s.contains("Open Source Network Boot Firmware"),
        "iPXE's banner:\n{t}"
    );
    assert!(
        s.contains("Press Ctrl-B for the iPXE command line"),
        "iPXE's prompt:\n{t}"
    );
}

#[test]
fn ghost_vmm_and_ovmf_boot_the_installed_debian_keep_its_variables_and_power_off() {
    let s = scenario("ghost-virtio");
    print_phases("ghost-virtio", s);
    let t = s.transcript();
    s.assert_success();
    assert_eq!(s.line_after("L3_STATE="), Some("running"), "{t}");
    assert_eq!(s.line_after("L3_EFI="), Some("present"), "{t}");
    assert_eq!(s.line_after("L3_EFI_BITS="), Some("64"), "{t}");
    // SMBIOS from ghost-vmm: the product is the VM's name.
    assert_eq!(s.line_after("L3_PRODUCT="), Some("g3"), "{t}");
    assert_eq!(s.line_after("L3_VENDOR="), Some("ghost-vmm"), "{t}");
    assert!(
        s.line_after("L3_ACPI_TABLES=")
            .is_some_and(|l| ["APIC", "FACP", "FACS", "DSDT", "MCFG"]
                .iter()
                .all(|t| l.split_whitespace().any(|w| w == *t))),
        "ghost-vmm's ACPI tables (MADT, FADT, FACS, DSDT, MCFG) through the loader:\n{t}"
    );
    assert_eq!(s.value::<u32>("L3_CPUS="), Some(2), "the MADT's CPUs:\n{t}");
    let root = s.line_after("L3_ROOT=").unwrap_or_default();
    assert_eq!(
        root.split_whitespace().collect::<Vec<_>>(),
        ["/dev/vda2", "ext4"],
        "{t}"
    );
    assert!(
        s.line_after("L3_NIC=").is_some_and(|l| l.starts_with("en")),
        "the virtio-net NIC:\n{t}"
    );
    assert_eq!(s.line_after("L3_NEW_ENTRY="), Some("created"), "{t}");
    // Reboot went back through the firmware, whose boot manager started the new entry.
    assert_eq!(s.value::<u32>("BOOTS="), Some(2), "{t}");
    assert_eq!(s.value::<u32>("ENTRY_BOOTS="), Some(1), "{t}");
    // The power button (SIGTERM): logind powered the guest off, ghost-vmm exited 0.
    assert_eq!(s.value::<i32>("VM_RC="), Some(0), "{t}");
    // Stopped and started again: the entry is in the variable store, and it is what booted.
    assert_eq!(s.value::<u32>("L3_KEPT_ENTRY="), Some(1), "{t}");
    assert_eq!(s.value::<u32>("AGAIN_ENTRY_BOOTS="), Some(1), "{t}");
    assert_eq!(s.value::<i32>("VM2_RC="), Some(0), "{t}");
}
