//! [`DeviceAccess`] over VFIO: a host PCI function opened through its IOMMU group in a
//! container, and the container that maps guest RAM for the functions' DMA.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use crate::region::{DeviceAccess, Mapping, RegionInfo, CONFIG_REGION};

const REGION_READ: u32 = 1 << 0;
const REGION_WRITE: u32 = 1 << 1;
const REGION_MMAP: u32 = 1 << 2;

/// Errors opening VFIO objects.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The container (`/dev/vfio/vfio`) cannot be opened or set up.
    #[error("cannot open the VFIO container /dev/vfio/vfio (is vfio-pci loaded?): {0}")]
    Container(#[source] VfioError),
    /// The device cannot be opened through its group.
    #[error("cannot open it through VFIO: {0}")]
    Device(#[source] VfioError),
    /// A handle could not be duplicated.
    #[error("cannot duplicate its VFIO file descriptor: {0}")]
    Dup(#[source] io::Error),
    /// Guest RAM cannot be mapped for DMA.
    #[error(
        "cannot map {bytes} bytes of guest RAM for device DMA: {source}{hint}",
        hint = memlock_hint(*bytes)
    )]
    DmaMap {
        /// Bytes of guest RAM.
        bytes: u64,
        /// Why.
        #[source]
        source: VfioError,
    },
}

fn memlock_hint(bytes: u64) -> String {
    let limit = crate::memlock_limit();
    match limit {
        Some(limit) if limit < bytes => format!(
            " (VFIO pins all guest RAM: {} MiB, but RLIMIT_MEMLOCK is {} MiB; raise it with \
             `ulimit -l` or LimitMEMLOCK=, or run with CAP_IPC_LOCK)",
            bytes >> 20,
            limit >> 20
        ),
        _ => String::new(),
    }
}

/// One VFIO container: an IOMMU domain with the VM's guest RAM mapped at IOVA = guest
/// physical address, shared by all the VM's passed-through functions.
pub struct Container {
    inner: Arc<VfioContainer>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").finish_non_exhaustive()
    }
}

impl Container {
    /// Opens `/dev/vfio/vfio`. `kvm_device` is the VM's KVM VFIO device (`KVM_DEV_TYPE_VFIO`)
    /// that each group is registered with, so KVM knows about non-coherent DMA.
    pub fn new(kvm_device: Option<VfioDeviceFd>) -> Result<Self, OpenError> {
        VfioContainer::new(kvm_device.map(Arc::new))
            .map(|c| Self { inner: Arc::new(c) })
            .map_err(OpenError::Container)
    }

    /// Maps guest RAM region `host..host+size` at IOVA `gpa` for DMA (pinning it).
    ///
    /// # Safety
    ///
    /// `host..host+size` must stay mapped for as long as this container lives (or until it
    /// is unmapped), and the memory may be written by devices at any time.
    pub unsafe fn map_dma(&self, gpa: u64, size: u64, host: *mut u8) -> Result<(), OpenError> {
        let len = usize::try_from(size).map_err(|_| OpenError::DmaMap {
            bytes: size,
            source: VfioError::InvalidPath,
        })?;
        // SAFETY: the caller upholds the mapping's lifetime.
        unsafe { self.inner.vfio_dma_map(gpa, len, host) }.map_err(|source| OpenError::DmaMap {
            bytes: size,
            source,
        })
    }

    /// Opens the function whose sysfs directory is `sysfs` (`/sys/bus/pci/devices/<addr>`),
    /// adding its group to the container, and resets it.
    pub fn open(&self, sysfs: &Path) -> Result<VfioHandle, OpenError> {
        let device =
            VfioDevice::new(sysfs, self.inner.clone(), false).map_err(OpenError::Device)?;
        // SAFETY: the fd belongs to `device`, which outlives this borrow (it is only used to
        // duplicate the fd).
        let borrowed = unsafe { BorrowedFd::borrow_raw(device.as_raw_fd()) };
        let file = File::from(borrowed.try_clone_to_owned().map_err(OpenError::Dup)?);
        let regions = (0..=CONFIG_REGION)
            .map(|i| region_info(&device, i))
            .collect();
        device.reset();
        Ok(VfioHandle {
            file,
            device,
            regions,
        })
    }
}

fn region_info(device: &VfioDevice, index: u32) -> (RegionInfo, u64) {
    let flags = device.get_region_flags(index);
    let size = device.get_region_size(index);
    let mut info = RegionInfo {
        size,
        readable: flags & REGION_READ != 0,
        writable: flags & REGION_WRITE != 0,
        mmap_areas: Vec::new(),
    };
    if flags & REGION_MMAP != 0 && size > 0 {
        let sparse = device
            .get_region_caps(index)
            .into_iter()
            .find_map(|c| match c {
                VfioRegionInfoCap::SparseMmap(s) => Some(s),
                _ => None,
            });
        info.mmap_areas = match sparse {
            Some(s) => s.areas.iter().map(|a| (a.offset, a.size)).collect(),
            None => vec![(0, size)],
        };
    }
    (info, device.get_region_offset(index))
}

/// An open host function.
pub struct VfioHandle {
    /// A duplicate of the device fd for positioned I/O. Declared (so dropped) before
    /// `device`: the group can only leave the container once no fd of the device is open.
    file: File,
    device: VfioDevice,
    /// Per region: its shape and its offset in the device fd.
    regions: Vec<(RegionInfo, u64)>,
}

impl std::fmt::Debug for VfioHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioHandle")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl VfioHandle {
    /// The file offset of `offset..offset+len` in region `index`, if inside it.
    fn at(&self, index: u32, offset: u64, len: usize) -> io::Result<u64> {
        let (info, base) = self
            .regions
            .get(index as usize)
            .ok_or_else(|| io::Error::other(format!("no region {index}")))?;
        match offset.checked_add(len as u64) {
            Some(end) if end <= info.size => Ok(base + offset),
            _ => Err(io::Error::other(format!(
                "{len} bytes at {offset:#x} are outside region {index} ({:#x} bytes)",
                info.size
            ))),
        }
    }
}

impl DeviceAccess for VfioHandle {
    fn region(&self, index: u32) -> RegionInfo {
        self.regions
            .get(index as usize)
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let at = self.at(index, offset, data.len())?;
        self.file.read_exact_at(data, at)
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = self.at(index, offset, data.len())?;
        self.file.write_all_at(data, at)
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.device.get_irq_info(index).map_or(0, |i| i.count)
    }

    fn set_irqs(&self, index: u32, fds: &[&EventFd]) -> io::Result<()> {
        let result = if fds.is_empty() {
            self.device.disable_irq(index)
        } else {
            self.device.enable_irq(index, fds.to_vec())
        };
        result.map_err(|e| io::Error::other(e.to_string()))
    }

    fn set_intx_unmask(&self, fd: &EventFd) -> io::Result<()> {
        self.device
            .set_irq_resample_fd(crate::region::INTX_IRQ, vec![fd])
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn map(&self, index: u32, offset: u64, size: u64) -> io::Result<Mapping> {
        let len =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let at = self.at(index, offset, len)?;
        Mapping::shared(self.file.as_fd(), at, size)
    }

    fn reset(&self) {
        self.device.reset();
    }
}
