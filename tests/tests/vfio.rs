//! Issue 4's acceptance in the nested test host: VFIO passthrough of QEMU-emulated PCI devices
//! (L1 QEMU emulates them and an Intel IOMMU; L2 binds them to vfio-pci; ghost-vmm gives
//! them to an L3 guest running the stock Debian cloud kernel).
//!
//! L2's devices: `edu` at 00:10.0, `nvme` at 00:11.0 (backed by an image this test writes),
//! and one multi-function slot 00:12 with `edu` (.0) and `nvme` (.1) in one IOMMU group, as a
//! GPU and its HDMI audio function are. All scenarios share one L2 boot:
//! - `edu`: `bind = true` moves edu to vfio-pci; the guest reads the ID, liveness and
//!   factorial registers through BAR0, DMAs a page through the IOMMU mapping and back,
//!   receives the device's MSI at the vector it programmed, then (MSI off) takes its INTx
//!   three times through `uio_pci_generic` (level-triggered, resampled), and reads the ROM
//!   file given as `rom = ...` through the ROM BAR; the device has no driver again afterwards.
//! - `nvme`: the guest's stock nvme driver binds (MSI-X, DMA) and reads the test's bytes; the
//!   device is back on L2's nvme driver afterwards, its disk visible again.
//! - `multifunction`: both functions of slot 12 go to one guest slot as .0 and .1.
//! - `usb`: a `qemu-xhci` controller at 00:13.0 with a USB keyboard behind it; the guest
//!   (Debian's generic kernel, which has xHCI) enumerates the keyboard.
//! - `bad-input`: a device not bound to vfio-pci, a group with a function bound to a host
//!   driver, a nonexistent address: exit 2, one line naming the key and the device, nothing
//!   rebound.
//! - `cli`: `ghost-vmm vfio bind` / `unbind` move nvme to vfio-pci and back.
//! - `user` (issue 15): `user = "65534"` with nvme (`bind = true`) and a TAP: ghost-vmm runs as
//!   65534 with no capabilities once root's part of setup is done, the device's group node is
//!   lent to it, a `ghost-vmm reboot` opens the device again as that user (behind landlock and
//!   seccomp), and after the poweroff its keeper has given nvme back to L2's driver; the TAP
//!   and the control socket are gone.
//! - `bar-direct`: 20,000 reads of edu's BAR0 in the guest take no MMIO exit (BAR pages are
//!   KVM memory slots), by ghost-vmm's own exit counts (`--exit-stats`). The figures against
//!   QEMU are taken by the benchmark harness, `benches/`.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ghost_tests::guest_tools::{build_static, vm_file};
use ghost_tests::testhost::{
    GuestInitramfs, KernelFlavor, KernelImages, RunReport, Scenario, ScenarioResult, TestHost,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
const KERNEL: &str = "/ghost/kernel/cloud/bzImage";
const EDU: &str = "0000:00:10.0";
const NVME: &str = "0000:00:11.0";
const MF_EDU: &str = "0000:00:12.0";
const MF_NVME: &str = "0000:00:12.1";
const XHCI: &str = "0000:00:13.0";
const GENERIC_KERNEL: &str = "/ghost/kernel/generic/bzImage";
/// Modules the generic kernel needs for xHCI and a USB keyboard.
const USB_MODULES: &[&str] = &["xhci_pci", "usbhid", "hid_generic"];
/// The interrupt vector the guest programs into edu's MSI capability. No guest driver owns
/// it, so the guest kernel logs it as "No irq handler for vector" (223 = 0xdf).
const MSI_VECTOR: u32 = 0xdf;
/// Bytes of each nvme image the guest reads back.
const NVME_CHECK_MIB: usize = 16;

fn vm_toml(name: &str, initrd: &str, devices: &str) -> String {
    vm_file(name, KERNEL, initrd, CMDLINE, devices)
}

/// Guest (generic kernel): wait for the xHCI root hub to enumerate the keyboard on port 1.
const USB_GUEST: &str = r#"
echo "PCI_FUNCTIONS=$(cd /sys/bus/pci/devices && echo *)"
n=0
until [ -e /sys/bus/usb/devices/1-1/idVendor ]; do
    n=$((n + 1)); [ $n -ge 300 ] && { echo USB_NEVER; break; }
    sleep 0.1
done
echo "USB_DEVICE=$(cat /sys/bus/usb/devices/1-1/idVendor):$(cat /sys/bus/usb/devices/1-1/idProduct)"
echo "USB_PRODUCT=$(cat /sys/bus/usb/devices/1-1/product)"
echo "XHCI_IRQS=$(grep -c xhci /proc/interrupts)"
echo USB-DONE
"#;

fn usb_l2() -> String {
    format!(
        r#"
echo "DRIVER_BEFORE=$(pci_driver {XHCI})"
vm_start usb $GHOST_VMM run /ghost/vm/usb.toml
vm_wait usb 200
echo "GHOST_RC=$?"
echo "DRIVER_AFTER=$(pci_driver {XHCI})"
"#
    )
}

fn vfio(host: &str, bind: bool) -> String {
    format!("[[vfio]]\nhost = \"{host}\"\nbind = {bind}\n")
}

/// Guest: exercise whatever passed-through functions it finds, then print PT-DONE.
const PT_GUEST: &str = r#"
find_dev() {
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat $d/$1)" = "$2" ] && echo $d
    done
}
echo "PCI_FUNCTIONS=$(cd /sys/bus/pci/devices && echo *)"
for d in $(find_dev device 0x11e8); do
    echo "EDU_AT=${d##*/}"
    echo 1 >$d/enable
    if [ -n "$ROM" ]; then
        echo 1 >$d/rom
        echo "ROM_SUM=$(sha256sum <$d/rom)"
        echo 0 >$d/rom
    fi
    /bin/edutest $d regs
    /bin/edutest $d dma
    /bin/edutest $d msi @VECTOR@
    dmesg | grep 'No irq handler for vector'
    echo "MSI_SEEN=$(dmesg | grep -c '\.@VECTOR_DEC@ No irq handler for vector')"
    if [ -n "$INTX" ]; then
        echo "1234 11e8" >/sys/bus/pci/drivers/uio_pci_generic/new_id
        n=0
        until [ -e /dev/uio0 ]; do
            n=$((n + 1)); [ $n -ge 100 ] && { echo UIO_NEVER; break; }
            sleep 0.1
        done
        /bin/edutest $d intx /dev/uio0
        echo "INTX_LINE=$(grep uio_pci_generic /proc/interrupts)"
    fi
    [ -n "$BENCH" ] && /bin/edutest $d latency 20000
done
if [ -n "$(find_dev class 0x010802)" ]; then
    n=0
    until [ -b /dev/nvme0n1 ]; do
        n=$((n + 1)); [ $n -ge 300 ] && { echo NVME_NEVER; break; }
        sleep 0.1
    done
    echo "NVME_SUM=$(dd if=/dev/nvme0n1 bs=1M count=@MIB@ 2>/dev/null | sha256sum)"
    nv=$(find_dev class 0x010802)
    echo "NVME_MSIX=$(cat $nv/msi_irqs/* 2>/dev/null | grep -c msix)"
    echo "NVME_IRQ_LINES=$(grep -c nvme /proc/interrupts)"
fi
echo PT-DONE
if [ -n "$HOLD" ]; then
    read -r _line
    echo PT-RELEASED
fi
"#;

fn edu_l2() -> String {
    format!(
        r#"
echo "DRIVER_BEFORE=$(pci_driver {EDU})"
vm_start edu $GHOST_VMM run /ghost/vm/edu.toml
vm_wait_for edu PT-DONE 150 && echo "DRIVER_DURING=$(pci_driver {EDU})"
vm_wait edu 60
echo "GHOST_RC=$?"
echo "DRIVER_AFTER=$(pci_driver {EDU})"
"#
    )
}

fn nvme_l2() -> String {
    format!(
        r#"
echo "DRIVER_BEFORE=$(pci_driver {NVME})"
vm_start nvme $GHOST_VMM run /ghost/vm/nvme.toml
vm_wait_for nvme PT-DONE 150 && echo "DRIVER_DURING=$(pci_driver {NVME})"
vm_wait nvme 60
echo "GHOST_RC=$?"
echo "DRIVER_AFTER=$(pci_driver {NVME})"
n=0
until ls -d /sys/bus/pci/devices/{NVME}/nvme/nvme*/nvme*n1 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -ge 100 ] && break
    sleep 0.1
done
ls -d /sys/bus/pci/devices/{NVME}/nvme/nvme*/nvme*n1 >/dev/null 2>&1 && echo HOST_DISK_BACK=yes
"#
    )
}

fn multifunction_l2() -> String {
    format!(
        r#"
echo "GROUP_0=$(readlink /sys/bus/pci/devices/{MF_EDU}/iommu_group | sed 's|.*/||')"
echo "GROUP_1=$(readlink /sys/bus/pci/devices/{MF_NVME}/iommu_group | sed 's|.*/||')"
vm_start mf $GHOST_VMM run /ghost/vm/mf.toml
vm_wait mf 200
echo "GHOST_RC=$?"
echo "DRIVER_AFTER_0=$(pci_driver {MF_EDU})"
echo "DRIVER_AFTER_1=$(pci_driver {MF_NVME})"
"#
    )
}

/// The nvme VM as user 65534: checked while it runs, rebooted, powered off, then what it
/// left on the host.
fn user_l2() -> String {
    format!(
        r#"
echo "DRIVER_BEFORE=$(pci_driver {NVME})"
vm_start user $GHOST_VMM run /ghost/vm/user.toml
vm_wait_for user PT-DONE 150 || {{ vm_kill user; exit 1; }}
pid=$(cat "$GHOST_VM_DIR/user.pid")
g=$(readlink /sys/bus/pci/devices/{NVME}/iommu_group | sed 's|.*/||')
echo "UIDS=$(grep '^Uid:' /proc/$pid/status | tr -s '\t ' ' ' | cut -d' ' -f2-)"
echo "CAPS=$(grep '^CapEff:' /proc/$pid/status | tr -s '\t ' ' ' | cut -d' ' -f2)"
echo "SECCOMP=$(grep '^Seccomp:' /proc/$pid/status | tr -s '\t ' ' ' | cut -d' ' -f2)"
echo "NODE_OWNER=$(stat -c %u /dev/vfio/$g)"
[ -e /sys/class/net/tapu ] && echo TAP_DURING=yes
: >"$GHOST_VM_DIR/user.log"
$GHOST_VMM reboot user
echo "REBOOT_RC=$?"
vm_wait_for user PT-DONE 150 || {{ vm_kill user; exit 1; }}
echo "SECOND_BOOT_NVME: $(grep NVME_SUM= "$GHOST_VM_DIR/user.log")"
vm_send user go
vm_wait user 60
echo "GHOST_RC=$?"
echo "DRIVER_AFTER=$(pci_driver {NVME})"
[ -e /sys/class/net/tapu ] && echo TAP_LEFT=yes || echo TAP_LEFT=no
[ -e /run/ghost-vmm/user.sock ] && echo SOCKET_LEFT=yes || echo SOCKET_LEFT=no
"#
    )
}

fn bad_input_l2() -> String {
    let case = |name: &str| {
        format!(
            r#"$GHOST_VMM run /ghost/vm/{name}.toml </dev/null >/tmp/{name}.out 2>&1
echo "{name}_RC=$?"
echo "{name}_SAID: $(cat /tmp/{name}.out)"
echo "{name}_LINES=$(wc -l </tmp/{name}.out)"
"#
        )
    };
    format!(
        r#"
{}{}{}
echo "EDU_DRIVER=$(pci_driver {EDU})"
echo "MF_DRIVERS=$(pci_driver {MF_EDU}),$(pci_driver {MF_NVME})"
"#,
        case("unbound"),
        case("splitgroup"),
        case("nowhere")
    )
}

fn cli_l2() -> String {
    format!(
        r#"
$GHOST_VMM vfio bind {NVME}
echo "BIND_RC=$?"
echo "BOUND_TO=$(pci_driver {NVME})"
$GHOST_VMM vfio bind {NVME}
$GHOST_VMM vfio unbind {NVME}
echo "UNBIND_RC=$?"
echo "BACK_TO=$(pci_driver {NVME})"
$GHOST_VMM vfio bind 0000:00:1f.7
echo "MISSING_RC=$?"
"#
    )
}

/// edu's BAR reads under ghost-vmm with its exit counts, the device bound by `vfio bind`.
fn bar_direct_l2() -> String {
    format!(
        r#"
$GHOST_VMM vfio bind {EDU} >/dev/null
vm_start bd env GHOST_LOG=info $GHOST_VMM run --exit-stats /ghost/vm/bench.toml
vm_wait bd 200
echo "VMM_RC=$?"
$GHOST_VMM vfio unbind {EDU} >/dev/null
"#
    )
}

/// A raw image of pseudo-random bytes; returns the sha256 of its first `NVME_CHECK_MIB` MiB.
fn nvme_image(path: &Path, mib: usize, seed: u64) -> String {
    let mut x = seed;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    std::fs::write(path, &bytes).expect("nvme image");
    sha256(&bytes[..NVME_CHECK_MIB << 20])
}

/// A minimal valid PCI option ROM for edu (2 KiB, one image): 0x55AA, its length, and a PCI
/// data structure naming 1234:11e8. Linux only shows a ROM with these in sysfs.
fn option_rom() -> Vec<u8> {
    let mut rom = vec![0u8; 2048];
    rom[0] = 0x55;
    rom[1] = 0xaa;
    rom[2] = 4; // length in 512-byte units
    rom[0x18] = 0x1c; // offset of the PCI data structure
    rom[0x1c..0x20].copy_from_slice(b"PCIR");
    rom[0x20..0x22].copy_from_slice(&0x1234u16.to_le_bytes());
    rom[0x22..0x24].copy_from_slice(&0x11e8u16.to_le_bytes());
    rom[0x26..0x28].copy_from_slice(&0x18u16.to_le_bytes()); // structure length
    rom[0x2c..0x2e].copy_from_slice(&4u16.to_le_bytes()); // image length
    rom[0x31] = 0x80; // last image
    for (i, b) in rom.iter_mut().enumerate().skip(0x40) {
        *b = i.to_le_bytes()[0] ^ 0x5a;
    }
    rom
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blob");
    std::fs::write(&path, bytes).expect("blob");
    let out = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

struct Run {
    report: RunReport,
    nvme_sum: String,
    mf_sum: String,
    rom_sum: String,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let work = tempfile::tempdir().expect("tempdir");
        let nvme_img = work.path().join("nvme.img");
        let mf_img = work.path().join("mf.img");
        let nvme_sum = nvme_image(&nvme_img, 64, 0x1234_5678_9abc_def1);
        let mf_sum = nvme_image(&mf_img, 16, 0x0fed_cba9_8765_4321);
        let edutest = build_static(work.path(), "edutest");
        let rom = option_rom();
        let rom_sum = sha256(&rom);
        let body = PT_GUEST
            .replace("@VECTOR@", &format!("{MSI_VECTOR:#x}"))
            .replace("@VECTOR_DEC@", &MSI_VECTOR.to_string())
            .replace("@MIB@", &NVME_CHECK_MIB.to_string());
        let guest = |vars: &str| {
            GuestInitramfs::new(format!("{vars}\n{body}"))
                .modules(["uio_pci_generic"])
                .file("/bin/edutest", edutest.clone(), 0o755)
        };
        let vms = [
            (
                "edu",
                vm_toml(
                    "edu",
                    "ptintx",
                    &format!("{}rom = \"/ghost/test.rom\"\n", vfio(EDU, true)),
                ),
            ),
            ("nvme", vm_toml("nvme", "pt", &vfio(NVME, true))),
            (
                "mf",
                vm_toml(
                    "mf",
                    "pt",
                    &format!("{}{}", vfio(MF_EDU, true), vfio(MF_NVME, true)),
                ),
            ),
            (
                "usb",
                vm_file("usb", GENERIC_KERNEL, "usb", CMDLINE, &vfio(XHCI, true)),
            ),
            ("unbound", vm_toml("unbound", "pt", &vfio(EDU, false))),
            (
                "splitgroup",
                vm_toml("splitgroup", "pt", &vfio(MF_EDU, true)),
            ),
            (
                "nowhere",
                vm_toml("nowhere", "pt", &vfio("0000:00:1f.7", true)),
            ),
            ("bench", vm_toml("bench", "ptbench", &vfio(EDU, false))),
            (
                "user",
                vm_toml(
                    "user",
                    "pthold",
                    &format!("{}[[net]]\ntap = \"tapu\"\n", vfio(NVME, true)),
                )
                .replace("[vm]\n", "[vm]\nuser = \"65534\"\n"),
            ),
        ];
        let drive =
            |img: &Path, id: &str| format!("file={},if=none,id={id},format=raw", img.display());
        let mut host = TestHost::new("vfio")
            .expect("test-host assets (tests/testhost/setup.sh)")
            .with_built_ghost_vmm()
            .expect("a built ghost-vmm (cargo build --release -p ghost-cli)")
            .qemu_args([
                "-device".to_owned(),
                "edu,addr=0x10".to_owned(),
                "-drive".to_owned(),
                drive(&nvme_img, "nv0"),
                "-device".to_owned(),
                "nvme,drive=nv0,serial=ghost-nvme,addr=0x11".to_owned(),
                "-device".to_owned(),
                "edu,addr=0x12.0,multifunction=on".to_owned(),
                "-drive".to_owned(),
                drive(&mf_img, "nv1"),
                "-device".to_owned(),
                "nvme,drive=nv1,serial=ghost-mf,addr=0x12.1".to_owned(),
                "-device".to_owned(),
                "qemu-xhci,id=xhci,addr=0x13".to_owned(),
                "-device".to_owned(),
                "usb-kbd,bus=xhci.0".to_owned(),
            ])
            .l3_kernel(KernelFlavor::Generic, KernelImages::BzImage)
            .guest(
                "usb",
                GuestInitramfs::new(USB_GUEST)
                    .kernel(KernelFlavor::Generic)
                    .modules(USB_MODULES),
            )
            .guest("pt", guest(""))
            .guest("ptintx", guest("INTX=1 ROM=1"))
            .file("/ghost/test.rom", rom.clone(), 0o644)
            .guest("ptbench", guest("BENCH=1"))
            .guest("pthold", guest("HOLD=1"));
        for (name, toml) in vms {
            host = host.file(format!("/ghost/vm/{name}.toml"), toml, 0o644);
        }
        let t = Duration::from_secs(240);
        let report = host
            .run(&[
                Scenario::new("edu", edu_l2()).timeout(t),
                Scenario::new("nvme", nvme_l2()).timeout(t),
                Scenario::new("multifunction", multifunction_l2()).timeout(t),
                Scenario::new("usb", usb_l2()).timeout(t),
                Scenario::new("bad-input", bad_input_l2()).timeout(t),
                Scenario::new("cli", cli_l2()).timeout(Duration::from_secs(60)),
                Scenario::new("bar-direct", bar_direct_l2()).timeout(t),
                Scenario::new("user", user_l2()).timeout(Duration::from_secs(400)),
            ])
            .expect("the test host boots");
        Run {
            report,
            nvme_sum,
            mf_sum,
            rom_sum,
        }
    })
}

fn scenario(name: &str) -> &'static ScenarioResult {
    let report = &run().report;
    report
        .scenario(name)
        .unwrap_or_else(|| panic!("no scenario {name}:\n{}", report.tail(80)))
}

fn sum(s: &ScenarioResult, marker: &str) -> String {
    s.line_after(marker)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker}:\n{}", s.transcript()))
        .to_owned()
}

#[test]
fn edu_registers_dma_msi_and_intx_work_in_the_guest() {
    let s = scenario("edu");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.line_after("EDU_ID="), Some("0x010000ed"), "{t}");
    assert_eq!(s.line_after("EDU_LIVENESS="), Some("0xedcba987"), "{t}");
    assert_eq!(
        s.line_after("EDU_FACTORIAL="),
        Some("0x375f00"),
        "10! = 0x375F00:\n{t}"
    );
    assert_eq!(
        s.line_after("DMA_SAME="),
        Some("yes"),
        "a page went to the device and back by DMA:\n{t}"
    );
    assert_eq!(s.value::<u32>("MSI_ENABLED="), Some(1), "{t}");
    assert!(
        s.value::<u32>("MSI_SEEN=").unwrap_or(0) >= 1,
        "the guest took the device's MSI at vector {MSI_VECTOR}:\n{t}"
    );
    assert_eq!(
        sum(s, "ROM_SUM="),
        run().rom_sum,
        "the guest read the ROM file given as rom = ... through the ROM BAR:\n{t}"
    );
    assert_eq!(
        s.value::<u32>("INTX_TAKEN="),
        Some(3),
        "INTx raised, taken and re-armed three times:\n{t}"
    );
    let line = s.line_after("INTX_LINE=").unwrap_or_default();
    assert!(
        line.contains("IO-APIC") && line.contains("fasteoi"),
        "a level-triggered IOAPIC interrupt: {line}\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("DRIVER_BEFORE="), Some("none"), "{t}");
    assert_eq!(s.line_after("DRIVER_DURING="), Some("vfio-pci"), "{t}");
    assert_eq!(
        s.line_after("DRIVER_AFTER="),
        Some("none"),
        "back as it was (no driver):\n{t}"
    );
}

#[test]
fn nvme_driver_reads_the_test_bytes_and_the_host_gets_its_disk_back() {
    let s = scenario("nvme");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(
        sum(s, "NVME_SUM="),
        run().nvme_sum,
        "the guest's nvme driver read the image's bytes:\n{t}"
    );
    assert!(
        s.value::<u32>("NVME_MSIX=").unwrap_or(0) >= 1,
        "nvme uses MSI-X:\n{t}"
    );
    assert!(
        s.value::<u32>("NVME_IRQ_LINES=").unwrap_or(0) >= 1,
        "nvme's interrupts in /proc/interrupts:\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("DRIVER_BEFORE="), Some("nvme"), "{t}");
    assert_eq!(s.line_after("DRIVER_DURING="), Some("vfio-pci"), "{t}");
    assert_eq!(s.line_after("DRIVER_AFTER="), Some("nvme"), "{t}");
    assert_eq!(
        s.line_after("HOST_DISK_BACK="),
        Some("yes"),
        "L2's nvme driver has its disk again:\n{t}"
    );
}

#[test]
fn functions_of_one_host_slot_share_one_guest_slot() {
    let s = scenario("multifunction");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(
        s.line_after("GROUP_0="),
        s.line_after("GROUP_1="),
        "the two functions share an IOMMU group in L2:\n{t}"
    );
    let at = s.line_after("EDU_AT=").unwrap_or_else(|| panic!("{t}"));
    assert!(at.ends_with(".0"), "{t}");
    let slot = &at[..at.len() - 2];
    let functions = s.line_after("PCI_FUNCTIONS=").unwrap_or_default();
    assert!(
        functions.contains(&format!("{slot}.1")),
        "function 1 in the same slot: {functions}\n{t}"
    );
    assert_eq!(s.line_after("EDU_FACTORIAL="), Some("0x375f00"), "{t}");
    assert_eq!(sum(s, "NVME_SUM="), run().mf_sum, "{t}");
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("DRIVER_AFTER_0="), Some("none"), "{t}");
    assert_eq!(s.line_after("DRIVER_AFTER_1="), Some("nvme"), "{t}");
}

#[test]
fn usb_controller_enumerates_its_keyboard_in_the_guest() {
    let s = scenario("usb");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(
        s.line_after("USB_DEVICE="),
        Some("0627:0001"),
        "QEMU's USB keyboard behind the passed-through xHCI:\n{t}"
    );
    assert_eq!(
        s.line_after("USB_PRODUCT="),
        Some("QEMU USB Keyboard"),
        "{t}"
    );
    assert!(
        s.value::<u32>("XHCI_IRQS=").unwrap_or(0) >= 1,
        "xHCI interrupts:\n{t}"
    );
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(s.line_after("DRIVER_BEFORE="), Some("none"), "{t}");
    assert_eq!(s.line_after("DRIVER_AFTER="), Some("none"), "{t}");
}

#[test]
fn bad_devices_get_one_line_errors_and_nothing_is_rebound() {
    let s = scenario("bad-input");
    s.assert_success();
    let t = s.transcript();
    let said = |name: &str| s.line_after(&format!("{name}_SAID:")).unwrap_or_default();
    for (name, words) in [
        (
            "unbound",
            vec!["vfio[0].host", EDU, "bound to no driver", "bind = true"],
        ),
        (
            "splitgroup",
            vec!["vfio[0].host", MF_EDU, MF_NVME, "nvme", "IOMMU group"],
        ),
        (
            "nowhere",
            vec!["vfio[0].host", "0000:00:1f.7", "no PCI device"],
        ),
    ] {
        assert_eq!(
            s.value::<i32>(&format!("{name}_RC=")),
            Some(2),
            "{name}:\n{t}"
        );
        assert_eq!(
            s.value::<u32>(&format!("{name}_LINES=")),
            Some(1),
            "{name}:\n{t}"
        );
        for w in words {
            assert!(
                said(name).contains(w),
                "{name}: {w:?} in {:?}\n{t}",
                said(name)
            );
        }
    }
    assert_eq!(s.line_after("EDU_DRIVER="), Some("none"), "{t}");
    assert_eq!(
        s.line_after("MF_DRIVERS="),
        Some("none,nvme"),
        "the refused group was left alone:\n{t}"
    );
}

#[test]
fn cli_binds_and_gives_back() {
    let s = scenario("cli");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.value::<i32>("BIND_RC="), Some(0), "{t}");
    assert!(s.contains(&format!("{NVME}: nvme -> vfio-pci")), "{t}");
    assert_eq!(s.line_after("BOUND_TO="), Some("vfio-pci"), "{t}");
    assert!(s.contains(&format!("{NVME}: already on vfio-pci")), "{t}");
    assert_eq!(s.value::<i32>("UNBIND_RC="), Some(0), "{t}");
    assert!(s.contains(&format!("{NVME}: vfio-pci -> nvme")), "{t}");
    assert_eq!(s.line_after("BACK_TO="), Some("nvme"), "{t}");
    assert_eq!(s.value::<i32>("MISSING_RC="), Some(2), "{t}");
}

/// Passed-through BARs are KVM memory slots: the guest's 20,000 reads of edu's BAR0 must not
/// show up among ghost-vmm's MMIO exits (the whole boot takes a few hundred).
#[test]
fn bar_reads_take_no_exit() {
    let s = scenario("bar-direct");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.value::<i32>("VMM_RC="), Some(0), "{t}");
    assert!(s.value::<f64>("BAR_READ_NS=").is_some(), "{t}");
    // "... exits 2345 (pio in 1200, pio out 900, mmio read 64, mmio write 175, ..."
    let mmio_reads = s
        .line_after("mmio read ")
        .and_then(|rest| rest.split(',').next()?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("ghost-vmm's exit counts:\n{t}"));
    assert!(
        mmio_reads < 5_000,
        "{mmio_reads} MMIO read exits: BAR reads are trapped, not direct:\n{t}"
    );
}

#[test]
fn a_vm_dropped_to_a_user_reboots_its_device_and_gives_everything_back() {
    let s = scenario("user");
    s.assert_success();
    let t = s.transcript();
    assert_eq!(s.line_after("DRIVER_BEFORE="), Some("nvme"), "{t}");
    assert_eq!(
        s.line_after("UIDS="),
        Some("65534 65534 65534 65534"),
        "{t}"
    );
    assert_eq!(s.line_after("CAPS="), Some("0000000000000000"), "{t}");
    assert_eq!(s.line_after("SECCOMP="), Some("2"), "{t}");
    assert_eq!(
        s.line_after("NODE_OWNER="),
        Some("65534"),
        "the group node is lent:\n{t}"
    );
    assert!(s.contains("TAP_DURING=yes"), "{t}");
    assert_eq!(s.value::<i32>("REBOOT_RC="), Some(0), "{t}");
    // The second boot, as 65534, opened the device again and read the disk.
    let second = s.line_after("SECOND_BOOT_NVME:").unwrap_or_default();
    assert!(second.contains(&run().nvme_sum), "{second}\n{t}");
    assert_eq!(s.value::<i32>("GHOST_RC="), Some(0), "{t}");
    assert_eq!(
        s.line_after("DRIVER_AFTER="),
        Some("nvme"),
        "the keeper gave it back:\n{t}"
    );
    assert_eq!(s.line_after("TAP_LEFT="), Some("no"), "{t}");
    assert_eq!(s.line_after("SOCKET_LEFT="), Some("no"), "{t}");
}
