//! Pre-start checks for `[[vfio]]` devices: bound to vfio-pci, whole IOMMU group assignable,
//! and enough locked memory for VFIO to pin guest RAM.

use super::iommu::PciDeviceInfo;
use super::{Host, HostError};
use crate::config::{ByteSize, PciAddress, VfioConfig};

/// `CAP_IPC_LOCK`: lifts RLIMIT_MEMLOCK, also for VFIO's page pinning.
const CAP_IPC_LOCK: u32 = 14;

impl Host {
    /// Checks that every `[[vfio]]` device can be passed through now: the IOMMU is on, the
    /// device exists, it is bound to vfio-pci (unless `bind = true`), and every other device
    /// in its IOMMU group is bound to vfio-pci, unbound, or a bridge.
    pub fn check_vfio(&self, devices: &[VfioConfig]) -> Result<(), HostError> {
        if devices.is_empty() {
            return Ok(());
        }
        let will_bind = |address: PciAddress| devices.iter().any(|d| d.host == address && d.bind);
        let groups = self.iommu_groups();
        let key = |i: usize| format!("vfio[{i}].host");
        // First each device on its own, so that the error names the device the user listed.
        let mut checked = Vec::with_capacity(devices.len());
        for (i, vfio) in devices.iter().enumerate() {
            let fail = |message: String| HostError::Vfio {
                key: key(i),
                message,
            };
            let address = vfio.host;
            if groups.is_empty() {
                return Err(fail(format!(
                    "{address}: the IOMMU is off on this host (no /sys/kernel/iommu_groups): \
                     enable AMD-Vi / VT-d in the firmware setup and boot with intel_iommu=on \
                     (Intel) or amd_iommu=on (AMD)"
                )));
            }
            let device = self.pci_device(address)?.ok_or_else(|| {
                fail(format!(
                    "there is no PCI device {address} on this host (`lspci -D` lists them)"
                ))
            })?;
            let group = device
                .iommu_group
                .and_then(|id| groups.iter().find(|g| g.id == id))
                .ok_or_else(|| fail(format!("{address} is in no IOMMU group")))?;
            if vfio.bind {
                if !self.vfio_pci_loaded() {
                    return Err(fail(
                        "the vfio-pci driver is not loaded: `modprobe vfio-pci`".to_owned(),
                    ));
                }
            } else if !device.is_vfio_bound() {
                return Err(fail(not_bound_message(&device)));
            }
            checked.push(group);
        }
        // Then the other devices in their groups.
        for (i, (vfio, group)) in devices.iter().zip(checked).enumerate() {
            let address = vfio.host;
            let blocker = group
                .devices
                .iter()
                .find(|d| d.address != address && d.blocks_group() && !will_bind(d.address));
            if let Some(other) = blocker {
                return Err(HostError::Vfio {
                    key: key(i),
                    message: format!(
                        "{address} shares IOMMU group {} with {} ({:04x}:{:04x}, {}) which is \
                         bound to {}; a group can only be passed through whole: bind {} to \
                         vfio-pci too (and add it as a [[vfio]] device if the guest should use it)",
                        group.id,
                        other.address,
                        other.vendor,
                        other.device,
                        other.class_name(),
                        other.driver.as_deref().unwrap_or("a driver"),
                        other.address
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether this process has CAP_IPC_LOCK (from `/proc/self/status`).
    pub fn has_cap_ipc_lock(&self) -> bool {
        let Ok(status) = std::fs::read_to_string(self.proc("self/status")) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
    }

    /// Checks that VFIO can pin `needed_bytes` of guest RAM: RLIMIT_MEMLOCK is at least that,
    /// or unlimited, or this process has CAP_IPC_LOCK.
    pub fn check_memlock(&self, needed_bytes: u64) -> Result<(), HostError> {
        match memlock_limit() {
            Some(limit) if limit < needed_bytes && !self.has_cap_ipc_lock() => {
                Err(HostError::Memlock {
                    needed: ByteSize::from_bytes(needed_bytes).to_string(),
                    limit: ByteSize::from_bytes(limit).to_string(),
                })
            }
            _ => Ok(()),
        }
    }
}

pub use ghost_vfio::memlock_limit;

fn not_bound_message(device: &PciDeviceInfo) -> String {
    let a = device.address;
    let bind = format!(
        "echo vfio-pci > /sys/bus/pci/devices/{a}/driver_override; echo {a} > /sys/bus/pci/drivers_probe"
    );
    match &device.driver {
        Some(driver) => format!(
            "{a} is bound to {driver}, not vfio-pci: rebind it with `echo {a} > \
             /sys/bus/pci/devices/{a}/driver/unbind; {bind}`, or set bind = true"
        ),
        None => format!(
            "{a} is bound to no driver: bind it to vfio-pci with `{bind}`, or set bind = true"
        ),
    }
}
