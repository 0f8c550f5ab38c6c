//! The IOMMU, its groups and the PCI devices in them, as sysfs shows them.

use std::path::PathBuf;

use super::sysfs::{dir_names, link_name, read_hex};
use super::{Host, HostError};
use crate::config::PciAddress;

/// Drivers that leave an IOMMU group usable by VFIO (besides vfio-pci and its variants).
const HARMLESS_DRIVERS: [&str; 2] = ["pci-stub", "pcieport"];

/// A PCI function on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceInfo {
    /// Its address.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class, subclass, programming interface): `0x030000` is VGA.
    pub class: u32,
    /// The driver it is bound to, if any.
    pub driver: Option<String>,
    /// Its IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
}

impl PciDeviceInfo {
    /// Whether it is bound to vfio-pci (or a vfio-pci variant driver).
    pub fn is_vfio_bound(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| d.starts_with("vfio"))
    }

    /// Whether it is a PCI-to-PCI bridge (bridges do not stop a group from being assigned).
    pub fn is_bridge(&self) -> bool {
        matches!(self.class >> 8, 0x0604 | 0x0609)
    }

    /// Whether its binding makes its IOMMU group unusable for VFIO: bound to a host driver
    /// other than vfio-pci, pci-stub or pcieport.
    pub fn blocks_group(&self) -> bool {
        match &self.driver {
            None => false,
            Some(_) if self.is_vfio_bound() || self.is_bridge() => false,
            Some(d) => !HARMLESS_DRIVERS.contains(&d.as_str()),
        }
    }

    /// The device's kind in a word or two, from its class code.
    pub fn class_name(&self) -> &'static str {
        match self.class >> 8 {
            0x0300 => "VGA",
            0x0302 => "3D controller",
            0x0403 => "audio",
            0x0106 => "SATA",
            0x0108 => "NVMe",
            0x0200 => "ethernet",
            0x0280 => "wireless",
            0x0c03 => "USB",
            0x0604 | 0x0609 => "PCI bridge",
            0x0600 => "host bridge",
            0x0601 => "ISA bridge",
            _ => match self.class >> 16 {
                0x01 => "storage",
                0x02 => "network",
                0x03 => "display",
                0x04 => "multimedia",
                0x06 => "bridge",
                0x08 => "system",
                0x0c => "serial bus",
                _ => "other",
            },
        }
    }
}

/// One IOMMU group: the devices that can only be given to a VM together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuGroup {
    /// The group number (`/sys/kernel/iommu_groups/<id>`, `/dev/vfio/<id>`).
    pub id: u32,
    /// Its PCI devices.
    pub devices: Vec<PciDeviceInfo>,
}

impl IommuGroup {
    /// Devices whose driver keeps the group from being passed through.
    pub fn blockers(&self) -> Vec<&PciDeviceInfo> {
        self.devices.iter().filter(|d| d.blocks_group()).collect()
    }

    /// Whether some device is bound to vfio-pci.
    pub fn has_vfio_device(&self) -> bool {
        self.devices.iter().any(PciDeviceInfo::is_vfio_bound)
    }

    /// Whether the group is half given to VFIO: a device is vfio-bound while another is bound
    /// to a host driver, so passing it through will fail until that one is rebound.
    pub fn is_split(&self) -> bool {
        self.has_vfio_device() && !self.blockers().is_empty()
    }
}

/// The IOMMU as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuStatus {
    /// Whether DMA remapping is on (there are IOMMU groups).
    pub enabled: bool,
    /// IOMMU units (`/sys/class/iommu`: `dmar0`, `ivhd0`, ...).
    pub units: Vec<String>,
    /// The groups, by number.
    pub groups: Vec<IommuGroup>,
    /// Whether the vfio-pci driver is available (loaded or built in).
    pub vfio_pci_loaded: bool,
}

impl Host {
    fn pci_device_dir(&self, address: PciAddress) -> PathBuf {
        self.sys(&format!("bus/pci/devices/{address}"))
    }

    /// Whether `address` is a PCI device on this host.
    pub fn pci_device_exists(&self, address: PciAddress) -> bool {
        self.pci_device_dir(address).exists()
    }

    /// The device at `address`, or `None` if there is none.
    pub fn pci_device(&self, address: PciAddress) -> Result<Option<PciDeviceInfo>, HostError> {
        let dir = self.pci_device_dir(address);
        if !dir.exists() {
            return Ok(None);
        }
        let id = |name: &str| -> Result<u16, HostError> {
            let path = dir.join(name);
            let value = read_hex(&path)?;
            u16::try_from(value).map_err(|_| {
                HostError::read(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 16-bit ID"),
                )
            })
        };
        Ok(Some(PciDeviceInfo {
            address,
            vendor: id("vendor")?,
            device: id("device")?,
            class: read_hex(&dir.join("class"))?,
            driver: link_name(&dir.join("driver")),
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        }))
    }

    /// The IOMMU groups with their PCI devices, by number; empty if the IOMMU is off.
    pub fn iommu_groups(&self) -> Vec<IommuGroup> {
        let root = self.sys("kernel/iommu_groups");
        let mut ids: Vec<u32> = dir_names(&root)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let devices = dir_names(&root.join(id.to_string()).join("devices"))
                    .iter()
                    .filter_map(|name| name.parse::<PciAddress>().ok())
                    .filter_map(|address| match self.pci_device(address) {
                        Ok(Some(mut device)) => {
                            device.iommu_group = Some(id);
                            Some(device)
                        }
                        Ok(None) => None,
                        Err(e) => {
                            log::debug!("iommu group {id}: {e}");
                            None
                        }
                    })
                    .collect();
                IommuGroup { id, devices }
            })
            .collect()
    }

    /// Whether the vfio-pci driver is available (loaded as a module or built in).
    pub fn vfio_pci_loaded(&self) -> bool {
        self.sys("bus/pci/drivers/vfio-pci").exists() || self.sys("module/vfio_pci").exists()
    }

    /// The IOMMU: on or off, its units, groups, and whether vfio-pci is there.
    pub fn iommu_status(&self) -> IommuStatus {
        let groups = self.iommu_groups();
        IommuStatus {
            enabled: !dir_names(&self.sys("kernel/iommu_groups")).is_empty(),
            units: dir_names(&self.sys("class/iommu")),
            groups,
            vfio_pci_loaded: self.vfio_pci_loaded(),
        }
    }
}
