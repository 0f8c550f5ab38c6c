//! What a passed-through function offers the VMM: its regions (BARs, ROM, config space) and
//! interrupts, behind [`DeviceAccess`] so the emulation above it can be tested without
//! hardware; and the host mappings of BARs that become KVM memory slots.

use std::io;
use std::ptr::NonNull;

use vmm_sys_util::eventfd::EventFd;

/// VFIO region index of the expansion ROM (BARs 0..5 are regions 0..5).
pub const ROM_REGION: u32 = 6;
/// VFIO region index of the configuration space.
pub const CONFIG_REGION: u32 = 7;

/// VFIO interrupt index of INTx.
pub const INTX_IRQ: u32 = 0;
/// VFIO interrupt index of MSI.
pub const MSI_IRQ: u32 = 1;
/// VFIO interrupt index of MSI-X.
pub const MSIX_IRQ: u32 = 2;

/// Host page size that KVM memory slots are made of.
pub const PAGE_SIZE: u64 = 4096;

/// One region of the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes (0: the region does not exist).
    pub size: u64,
    /// The region can be read.
    pub readable: bool,
    /// The region can be written.
    pub writable: bool,
    /// Parts of the region that can be mapped into the VMM, `(offset, size)`; empty if none.
    pub mmap_areas: Vec<(u64, u64)>,
}

/// Access to one host PCI function. Implemented over VFIO by [`crate::VfioHandle`], and by
/// fakes in tests.
pub trait DeviceAccess: Send {
    /// Region `index`'s shape.
    fn region(&self, index: u32) -> RegionInfo;
    /// Reads `data.len()` bytes at `offset` of region `index`.
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` of region `index`.
    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// How many interrupts of kind `index` (INTx, MSI, MSI-X) the function has.
    fn irq_count(&self, index: u32) -> u32;
    /// Has interrupts `0..fds.len()` of kind `index` signal `fds`; an empty list turns the
    /// kind off.
    fn set_irqs(&self, index: u32, fds: &[&EventFd]) -> io::Result<()>;
    /// Has VFIO unmask INTx when `fd` is signalled (KVM's resample eventfd: the guest
    /// acknowledged the level-triggered interrupt).
    fn set_intx_unmask(&self, fd: &EventFd) -> io::Result<()>;
    /// Maps `size` bytes at `offset` of region `index` into the VMM (shared, read/write).
    fn map(&self, index: u32, offset: u64, size: u64) -> io::Result<Mapping>;
    /// Resets the function (function-level reset) if it can be reset.
    fn reset(&self);
}

/// A shared mapping in the VMM's address space, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory (or device memory) owned by this value; it is only
// reached through raw pointers handed to KVM, never through references, so moving or sharing
// the owner between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` only exposes the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `size` bytes of `fd` at `offset`, shared and read/write.
    pub fn shared(fd: std::os::fd::BorrowedFd<'_>, offset: u64, size: u64) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let size =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh mapping chosen by the kernel; nothing else is touched. The result is
        // checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::checked(addr, size)
    }

    /// Anonymous shared memory (for tests and fakes).
    pub fn anonymous(size: u64) -> io::Result<Self> {
        let size =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: as in `shared`, without a file.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::checked(addr, size)
    }

    fn checked(addr: *mut libc::c_void, size: usize) -> io::Result<Self> {
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(addr.cast::<u8>())
            .map(|addr| Self { addr, size })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.size as u64
    }

    /// Whether the mapping is empty (never: mmap refuses zero lengths).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr+size` is the mapping this value created and still owns.
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.size);
        }
    }
}

/// Lays guest memory slots over a BAR: where the guest can reach the device directly.
pub trait GuestMappings: Send + Sync {
    /// Makes guest physical `gpa..gpa+size` reach host memory at `host`. Returns a handle
    /// for [`Self::unmap`].
    ///
    /// # Safety
    ///
    /// `host..host+size` must stay mapped until `unmap` is called with the returned handle.
    unsafe fn map(&self, gpa: u64, size: u64, host: *mut u8) -> io::Result<u32>;
    /// Removes a slot made by [`Self::map`].
    fn unmap(&self, slot: u32) -> io::Result<()>;
}

/// The parts of the mappable `areas` of a BAR left after cutting out the `traps` (MSI-X
/// table and PBA), widened to whole pages: `(offset, size)` in the BAR, page-aligned.
pub fn direct_ranges(areas: &[(u64, u64)], traps: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, size) in areas {
        let Some(end) = start.checked_add(size) else {
            continue;
        };
        // Whole pages of the area only.
        let mut pieces = vec![(start.next_multiple_of(PAGE_SIZE), end & !(PAGE_SIZE - 1))];
        for &(t, tsize) in traps {
            let t_lo = t & !(PAGE_SIZE - 1);
            let t_hi = t.saturating_add(tsize).next_multiple_of(PAGE_SIZE);
            pieces = pieces
                .into_iter()
                .flat_map(|(lo, hi)| {
                    if t_hi <= lo || t_lo >= hi {
                        vec![(lo, hi)]
                    } else {
                        vec![(lo, t_lo.max(lo)), (t_hi.min(hi), hi)]
                    }
                })
                .collect();
        }
        out.extend(
            pieces
                .into_iter()
                .filter(|(lo, hi)| hi > lo)
                .map(|(lo, hi)| (lo, hi - lo)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msix_pages_are_cut_out() {
        // nvme-like: 16 KiB BAR, table at 0x2000 (0x100 bytes), PBA at 0x3000.
        assert_eq!(
            direct_ranges(&[(0, 0x4000)], &[(0x2000, 0x100), (0x3000, 8)]),
            vec![(0, 0x2000)]
        );
        // Table in the middle of a big BAR.
        assert_eq!(
            direct_ranges(&[(0, 0x10_0000)], &[(0x8100, 0x40)]),
            vec![(0, 0x8000), (0x9000, 0xf7000)]
        );
        // No traps: the whole BAR.
        assert_eq!(direct_ranges(&[(0, 0x1000)], &[]), vec![(0, 0x1000)]);
    }

    #[test]
    fn partial_pages_and_bad_areas_are_dropped() {
        assert!(direct_ranges(&[(0, 0x800)], &[]).is_empty());
        assert_eq!(
            direct_ranges(&[(0x800, 0x2000)], &[]),
            vec![(0x1000, 0x1000)]
        );
        assert!(direct_ranges(&[(u64::MAX - 1, 0x10)], &[]).is_empty());
        // Sparse areas from the kernel, one of which is all trap.
        assert_eq!(
            direct_ranges(&[(0, 0x1000), (0x1000, 0x1000)], &[(0x1000, 0x10)]),
            vec![(0, 0x1000)]
        );
    }

    #[test]
    fn anonymous_mapping_is_usable() {
        let m = Mapping::anonymous(8192).unwrap();
        assert_eq!(m.len(), 8192);
        assert!(!m.is_empty());
        // SAFETY: the mapping is 8 KiB of fresh anonymous memory owned by `m`.
        unsafe { m.as_ptr().add(4096).write_volatile(7) };
    }
}
