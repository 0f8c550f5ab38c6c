//! IOMMU groups, device bindings, and the passthrough checks built on them.

use super::{assert_message, FakeHost};
use crate::config::{PciAddress, VfioConfig};
use crate::host::HostError;

const GPU: &str = "0000:01:00.0";
const AUDIO: &str = "0000:01:00.1";

fn addr(text: &str) -> PciAddress {
    text.parse().unwrap()
}

fn vfio(host: &str, bind: bool) -> VfioConfig {
    VfioConfig {
        host: addr(host),
        rom: None,
        rombar: true,
        bind,
    }
}

/// A desktop: a host bridge alone, a GPU + HDMI audio in group 14, a USB controller.
fn desktop(audio_driver: &str) -> FakeHost {
    let fake = FakeHost::new();
    fake.pci("0000:00:00.0", (0x1022, 0x14d8), 0x060000, None, Some(0));
    fake.pci(GPU, (0x10de, 0x2204), 0x030000, Some("vfio-pci"), Some(14));
    fake.pci(
        AUDIO,
        (0x10de, 0x1aef),
        0x040300,
        Some(audio_driver),
        Some(14),
    );
    fake.pci(
        "0000:0c:00.3",
        (0x1022, 0x15b6),
        0x0c0330,
        Some("xhci_hcd"),
        Some(27),
    );
    fake.mkdir("sys/class/iommu/ivhd0");
    fake
}

#[test]
fn lists_groups_with_their_devices() {
    let fake = desktop("snd_hda_intel");
    let status = fake.host().iommu_status();
    assert!(status.enabled);
    assert_eq!(status.units, ["ivhd0"]);
    assert!(status.vfio_pci_loaded, "vfio-pci has a driver folder");
    let ids: Vec<u32> = status.groups.iter().map(|g| g.id).collect();
    assert_eq!(ids, [0, 14, 27]);
    let gpu_group = &status.groups[1];
    assert_eq!(gpu_group.devices.len(), 2);
    let gpu = &gpu_group.devices[0];
    assert_eq!(gpu.address, addr(GPU));
    assert_eq!(
        (gpu.vendor, gpu.device, gpu.class),
        (0x10de, 0x2204, 0x030000)
    );
    assert_eq!(gpu.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(gpu.iommu_group, Some(14));
    assert_eq!(gpu.class_name(), "VGA");
    assert_eq!(gpu_group.devices[1].class_name(), "audio");
    assert_eq!(status.groups[2].devices[0].class_name(), "USB");
}

#[test]
fn a_half_vfio_group_is_flagged() {
    let fake = desktop("snd_hda_intel");
    let groups = fake.host().iommu_groups();
    let gpu_group = &groups[1];
    assert!(gpu_group.is_split());
    let blockers: Vec<_> = gpu_group.blockers().iter().map(|d| d.address).collect();
    assert_eq!(blockers, [addr(AUDIO)]);
    // The USB group has a host driver but nothing on vfio: that is just a host device.
    assert!(!groups[2].is_split());
    assert!(!groups[0].is_split());

    let fake = desktop("vfio-pci");
    assert!(!fake.host().iommu_groups()[1].is_split());
}

#[test]
fn bridges_and_stub_drivers_do_not_block_a_group() {
    let fake = FakeHost::new();
    fake.pci(
        "0000:00:01.1",
        (0x1022, 0x14db),
        0x060400,
        Some("pcieport"),
        Some(3),
    );
    fake.pci(
        "0000:02:00.0",
        (0x144d, 0xa808),
        0x010802,
        Some("vfio-pci"),
        Some(3),
    );
    fake.pci(
        "0000:02:00.1",
        (0x144d, 0xa808),
        0x010802,
        Some("pci-stub"),
        Some(3),
    );
    fake.pci("0000:02:00.2", (0x144d, 0xa808), 0x010802, None, Some(3));
    let group = &fake.host().iommu_groups()[0];
    assert!(group.blockers().is_empty());
    assert!(!group.is_split());
    assert_eq!(group.devices[0].class_name(), "PCI bridge");
    assert_eq!(group.devices[1].class_name(), "NVMe");
}

#[test]
fn iommu_off() {
    let fake = FakeHost::new();
    fake.pci(GPU, (0x10de, 0x2204), 0x030000, Some("nouveau"), None);
    let status = fake.host().iommu_status();
    assert!(!status.enabled);
    assert!(status.groups.is_empty());
    assert!(!status.vfio_pci_loaded);
    let device = fake.host().pci_device(addr(GPU)).unwrap().unwrap();
    assert_eq!(device.iommu_group, None);
    assert_eq!(device.driver.as_deref(), Some("nouveau"));
    assert!(fake
        .host()
        .pci_device(addr("0000:09:00.0"))
        .unwrap()
        .is_none());
    let e = fake
        .host()
        .check_vfio(&[vfio(GPU, false)])
        .unwrap_err()
        .to_string();
    assert_message(
        &e,
        &[
            "vfio[0].host: 0000:01:00.0: the IOMMU is off",
            "intel_iommu=on",
        ],
    );
}

#[test]
fn vfio_pci_module_without_driver_folder() {
    let fake = FakeHost::new();
    fake.module("vfio_pci");
    assert!(fake.host().vfio_pci_loaded());
}

#[test]
fn check_vfio_accepts_a_whole_vfio_group() {
    let fake = desktop("vfio-pci");
    fake.host()
        .check_vfio(&[vfio(GPU, false), vfio(AUDIO, false)])
        .unwrap();
    // Group mates bound to vfio-pci need not be given to the VM.
    fake.host().check_vfio(&[vfio(GPU, false)]).unwrap();
    fake.host().check_vfio(&[]).unwrap();
}

#[test]
fn check_vfio_names_the_device_in_the_way() {
    let fake = desktop("snd_hda_intel");
    let e = fake.host().check_vfio(&[vfio(GPU, false)]).unwrap_err();
    assert!(matches!(e, HostError::Vfio { ref key, .. } if key == "vfio[0].host"));
    assert_message(
        &e.to_string(),
        &[
            "vfio[0].host: 0000:01:00.0 shares IOMMU group 14 with 0000:01:00.1",
            "10de:1aef, audio",
            "bound to snd_hda_intel",
            "bind 0000:01:00.1 to vfio-pci too",
        ],
    );
    // If the VM binds the audio function itself, the group is fine.
    fake.host()
        .check_vfio(&[vfio(GPU, false), vfio(AUDIO, true)])
        .unwrap();
}

#[test]
fn check_vfio_wants_the_device_on_vfio_pci() {
    let fake = desktop("snd_hda_intel");
    let e = fake
        .host()
        .check_vfio(&[vfio(GPU, false), vfio(AUDIO, false)])
        .unwrap_err();
    assert_message(
        &e.to_string(),
        &[
            "vfio[1].host: 0000:01:00.1 is bound to snd_hda_intel, not vfio-pci",
            "driver_override",
            "drivers_probe",
            "or set bind = true",
        ],
    );
    let fake = FakeHost::new();
    fake.pci(GPU, (0x10de, 0x2204), 0x030000, None, Some(1));
    let e = fake.host().check_vfio(&[vfio(GPU, false)]).unwrap_err();
    assert_message(&e.to_string(), &["is bound to no driver"]);
    // With bind = true the VMM binds it, but vfio-pci must be there.
    let e = fake.host().check_vfio(&[vfio(GPU, true)]).unwrap_err();
    assert_message(
        &e.to_string(),
        &["vfio-pci driver is not loaded", "modprobe vfio-pci"],
    );
    fake.module("vfio_pci");
    fake.host().check_vfio(&[vfio(GPU, true)]).unwrap();
}

#[test]
fn check_vfio_unknown_device() {
    let fake = desktop("vfio-pci");
    let e = fake
        .host()
        .check_vfio(&[vfio("0000:05:00.0", false)])
        .unwrap_err();
    assert_message(
        &e.to_string(),
        &["vfio[0].host: there is no PCI device 0000:05:00.0"],
    );
}

#[test]
fn memlock_with_cap_ipc_lock_is_not_limited() {
    let fake = FakeHost::new();
    fake.write(
        "proc/self/status",
        "Name:\tghost-vmm\nCapEff:\t0000000000004000\n",
    );
    assert!(fake.host().has_cap_ipc_lock());
    fake.host().check_memlock(u64::MAX).unwrap();
    fake.write(
        "proc/self/status",
        "Name:\tghost-vmm\nCapEff:\t0000000000000000\n",
    );
    assert!(!fake.host().has_cap_ipc_lock());
    match crate::host::memlock_limit() {
        Some(limit) if limit < u64::MAX => {
            let e = fake.host().check_memlock(u64::MAX).unwrap_err().to_string();
            assert_message(&e, &["RLIMIT_MEMLOCK is", "ulimit -l unlimited"]);
        }
        _ => fake.host().check_memlock(u64::MAX).unwrap(),
    }
}
