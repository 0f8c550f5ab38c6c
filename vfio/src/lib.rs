//! VFIO PCI passthrough for ghost-vmm: a host PCI function (a GPU and its audio function, a
//! USB controller, an NVMe drive) given to a guest as one of its PCI functions.
//!
//! - [`VfioPciDevice`]: the guest-side function, a [`ghost_devices::pci::PciDevice`]. Its
//!   config space is the hardware's except for BARs, ROM, MSI and MSI-X, which the VMM owns;
//!   its BARs are KVM memory slots (no exits), apart from the trapped MSI-X table and PBA.
//! - [`Container`] / [`VfioHandle`]: the VFIO objects, with guest RAM mapped for DMA.
//! - [`bind`]: moving functions to vfio-pci and back to their own driver.
//!
//! The VMM supplies the two things that need KVM: MSI vectors
//! ([`ghost_devices::pci::msix::MsiVectors`]) and memory slots ([`GuestMappings`]).

mod device;
mod handle;
mod msi;
mod region;

pub mod bind;
#[doc(hidden)]
pub mod testing;

pub use device::{DeviceError, RomSource, VectorFactory, VfioPciDevice};
pub use handle::{Container, OpenError, VfioHandle};
pub use msi::{MsiCapability, MsiChange};
pub use region::{direct_ranges, DeviceAccess, GuestMappings, Mapping, RegionInfo, PAGE_SIZE};
pub use vfio_ioctls::VfioDeviceFd;

/// This process's soft RLIMIT_MEMLOCK in bytes; `None` if unlimited (or unknown). VFIO pins
/// all guest RAM against it unless the process has CAP_IPC_LOCK.
pub fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `limit`.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if ret != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}
