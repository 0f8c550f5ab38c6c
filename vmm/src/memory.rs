//! Guest RAM: anonymous or hugetlb-backed mappings laid out by `ghost_boot::layout`.

use std::fs::File;
use std::os::fd::FromRawFd;

use crate::config::HugepageSize;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// The `memfd_create` flags for a hugetlb file of `size` pages.
fn hugetlb_memfd_flags(size: HugepageSize) -> libc::c_uint {
    let shift = size.bytes().trailing_zeros();
    libc::MFD_HUGETLB | (shift << libc::MFD_HUGE_SHIFT)
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBacking {
    /// Back RAM with hugetlb pages of this size.
    pub hugepages: Option<HugepageSize>,
    /// Fault every page in before the guest starts.
    pub prefault: bool,
}

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `memfd_create` for the hugetlb file failed.
    #[error("memory.hugepages: cannot create a hugetlb memory file: {0}")]
    HugetlbFile(#[source] std::io::Error),
    /// Sizing the hugetlb file failed.
    #[error("memory.hugepages: cannot size the hugetlb memory file to {size} bytes: {source}")]
    HugetlbSize {
        /// Requested size.
        size: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Mapping a region failed.
    #[error("memory.size: cannot map {size} bytes of guest RAM at {gpa:#x}: {source}")]
    Map {
        /// Guest physical base of the region.
        gpa: u64,
        /// Region size.
        size: usize,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The regions did not form a valid guest memory.
    #[error("guest memory layout is invalid: {0}")]
    Layout(#[source] vm_memory::GuestRegionCollectionError),
    /// A region could not be built.
    #[error("guest memory region at {0:#x} is invalid")]
    Region(u64),
    /// Guest RAM could not be kept out of core dumps and forks.
    #[error("cannot keep guest RAM out of core dumps (madvise): {0}")]
    Advise(#[source] std::io::Error),
}

/// Maps guest RAM for `regions` (guest base, size) as `backing` asks.
///
/// Hugetlb memory is one `memfd` shared by all regions (each at its own offset), so it is
/// accounted in the host's hugepage pool and can later be shared with other processes.
pub fn create_guest_memory(
    regions: &[(GuestAddress, usize)],
    backing: &MemoryBacking,
) -> Result<GuestMemoryMmap, MemoryError> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let populate = if backing.prefault {
        libc::MAP_POPULATE
    } else {
        0
    };
    let memfd = match backing.hugepages {
        Some(size) => {
            let total: u64 = regions.iter().map(|(_, s)| *s as u64).sum();
            Some(hugetlb_file(size, total)?)
        }
        None => None,
    };

    let mut offset = 0u64;
    let mut mapped = Vec::with_capacity(regions.len());
    for &(gpa, size) in regions {
        let builder = MmapRegionBuilder::new(size).with_mmap_prot(prot);
        let builder = match &memfd {
            Some(file) => {
                let fo =
                    FileOffset::new(file.try_clone().map_err(MemoryError::HugetlbFile)?, offset);
                builder
                    .with_mmap_flags(libc::MAP_SHARED | populate)
                    .with_file_offset(fo)
                    .with_hugetlbfs(true)
            }
            None => builder.with_mmap_flags(
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | populate,
            ),
        };
        let region = builder.build().map_err(|source| MemoryError::Map {
            gpa: gpa.0,
            size,
            source,
        })?;
        if memfd.is_none() {
            // Transparent hugepages where the host allows them; purely advisory.
            // SAFETY: the range is exactly the mapping just created and owned by `region`.
            unsafe {
                libc::madvise(region.as_ptr().cast(), size, libc::MADV_HUGEPAGE);
            }
        }
        keep_private(region.as_ptr(), size)?;
        mapped.push(GuestRegionMmap::new(region, gpa).ok_or(MemoryError::Region(gpa.0))?);
        offset += size as u64;
    }
    GuestMemoryMmap::from_regions(mapped).map_err(MemoryError::Layout)
}

/// Guest RAM is the guest's: never in a core dump of ghost-vmm (`MADV_DONTDUMP`), never
/// shared with a child it forks (`MADV_DONTFORK`; none does, and VFIO-pinned pages must not
/// be copied-on-write anyway).
fn keep_private(addr: *mut u8, size: usize) -> Result<(), MemoryError> {
    for advice in [libc::MADV_DONTDUMP, libc::MADV_DONTFORK] {
        // SAFETY: the range is exactly a mapping just created and owned by a region.
        if unsafe { libc::madvise(addr.cast(), size, advice) } != 0 {
            return Err(MemoryError::Advise(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn hugetlb_file(size: HugepageSize, total: u64) -> Result<File, MemoryError> {
    let name = c"ghost-vmm-ram";
    // SAFETY: `name` is a valid NUL-terminated string; flags are valid memfd flags.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | hugetlb_memfd_flags(size)) };
    if fd < 0 {
        return Err(MemoryError::HugetlbFile(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(total)
        .map_err(|source| MemoryError::HugetlbSize {
            size: total,
            source,
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn anonymous_memory_has_the_requested_regions() {
        let regions = [
            (GuestAddress(0), 16 << 20),
            (GuestAddress(0x1_0000_0000), 8 << 20),
        ];
        let mem = create_guest_memory(
            &regions,
            &MemoryBacking {
                hugepages: None,
                prefault: true,
            },
        )
        .unwrap();
        assert_eq!(mem.iter().count(), 2);
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1_0000_0010))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1_0000_0010)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(0u8, GuestAddress(16 << 20)).is_err());
    }
}
