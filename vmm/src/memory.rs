//! Guest RAM: anonymous or hugetlb-backed mappings laid out by `ghost_boot::layout`.

use std::fs::File;
use std::os::fd::FromRawFd;

use crate::config::HugepageSize;
use vm_memory::mmap::{MmapRegion, MmapRegionBuilder, MmapRegionError};
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
        let map_error = |source| MemoryError::Map {
            gpa: gpa.0,
            size,
            source,
        };
        let region = match &memfd {
            // hugetlbfs aligns its mappings to the page size itself.
            Some(file) => {
                let fo =
                    FileOffset::new(file.try_clone().map_err(MemoryError::HugetlbFile)?, offset);
                MmapRegionBuilder::new(size)
                    .with_mmap_prot(prot)
                    .with_mmap_flags(libc::MAP_SHARED | populate)
                    .with_file_offset(fo)
                    .with_hugetlbfs(true)
                    .build()
                    .map_err(map_error)?
            }
            None => map_aligned(gpa, size, || {
                MmapRegionBuilder::new(size)
                    .with_mmap_prot(prot)
                    .with_mmap_flags(
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | populate,
                    )
                    .build()
            })
            .map_err(map_error)?,
        };
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

/// The host alignment guest RAM is mapped at (modulo its guest address): the x86 PMD size.
/// KVM maps guest memory with 2 MiB pages only where the host address and the guest address
/// agree modulo 2 MiB, and only a 2 MiB-aligned range can be a transparent hugepage; an
/// anonymous `mmap` is only page-aligned (Linux before 6.7), and a misaligned slot costs the
/// guest a nested page fault per 4 KiB page it touches (issue 16: 17 000 to 28 000 of them
/// in a nested boot to init, about a second and a half).
const RAM_ALIGN: usize = 2 << 20;

/// A stretch of address space held with `PROT_NONE` around a hole of the requested size at
/// the aligned address: the kernel places a new mapping of that size in the highest gap
/// that fits, which is then the hole. Dropping it releases what is left of the reservation.
struct Hole {
    /// The reservation's two remaining parts (address, length), either may be empty.
    parts: [(usize, usize); 2],
}

impl Hole {
    /// Reserves `size + RAM_ALIGN` bytes and opens a hole of `size` at the first address of
    /// the reservation that is congruent to `gpa` modulo [`RAM_ALIGN`].
    fn open(gpa: GuestAddress, size: usize) -> Option<Self> {
        let len = size.checked_add(RAM_ALIGN)?;
        // SAFETY: a new anonymous PROT_NONE mapping at an address of the kernel's choice;
        // nothing else is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as usize;
        // RAM_ALIGN is a power of two: masks take the remainders.
        let mask = RAM_ALIGN - 1;
        let want = usize::try_from(gpa.0 & mask as u64).ok()?;
        let at = base + ((want + RAM_ALIGN - (base & mask)) & mask);
        // SAFETY: `[at, at + size)` lies inside the reservation just made, which nothing
        // else knows of.
        if unsafe { libc::munmap(at as *mut libc::c_void, size) } != 0 {
            // SAFETY: the whole reservation, still ours.
            unsafe { libc::munmap(base as *mut libc::c_void, len) };
            return None;
        }
        Some(Hole {
            parts: [(base, at - base), (at + size, base + len - (at + size))],
        })
    }
}

impl Drop for Hole {
    fn drop(&mut self) {
        for &(addr, len) in &self.parts {
            if len > 0 {
                // SAFETY: a part of the PROT_NONE reservation this `Hole` made and still
                // holds: no mapping can have been placed over it.
                unsafe { libc::munmap(addr as *mut libc::c_void, len) };
            }
        }
    }
}

/// Maps a region of guest RAM at `gpa` with `build` so that its host address is congruent to
/// `gpa` modulo [`RAM_ALIGN`]: into a [`Hole`] opened for it. A higher gap of the size (left by
/// an earlier mapping, as a previous boot's RAM) or another thread can take the mapping first:
/// then that mapping is kept for the moment, filling the gap, and it tries again. After
/// [`ALIGN_TRIES`] tries it keeps the last mapping where it is, which works, with 4 KiB pages.
fn map_aligned<F>(gpa: GuestAddress, size: usize, build: F) -> Result<MmapRegion, MmapRegionError>
where
    F: Fn() -> Result<MmapRegion, MmapRegionError>,
{
    let congruent =
        |r: &MmapRegion| (r.as_ptr() as u64).wrapping_sub(gpa.0) & (RAM_ALIGN as u64 - 1) == 0;
    // Mappings that missed the hole, each holding a gap above it until this returns.
    let mut missed = Vec::new();
    for _ in 0..ALIGN_TRIES {
        // Held only while `build` maps: a mapping in the hole is congruent by construction.
        let hole = Hole::open(gpa, size);
        let region = build()?;
        drop(hole);
        if congruent(&region) {
            return Ok(region);
        }
        missed.push(region);
    }
    log::info!(
        "guest RAM at {:#x}: not 2 MiB-aligned on the host; KVM maps it with 4 KiB pages",
        gpa.0
    );
    missed.pop().map_or_else(build, Ok)
}

/// How many mappings [`map_aligned`] makes before it keeps a misaligned one.
const ALIGN_TRIES: usize = 8;

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
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

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

    #[test]
    fn anonymous_ram_is_congruent_to_its_guest_address_modulo_2_mib() {
        // The layouts' regions: RAM from 0 and from 4 GiB, of any page-multiple size.
        // Several rounds, with the heap churning in between.
        let regions = [
            (GuestAddress(0), 64 << 20),
            (GuestAddress(0x1_0000_0000), (6 << 20) + 4096),
        ];
        let backing = MemoryBacking {
            hugepages: None,
            prefault: false,
        };
        let mut keep = Vec::new();
        for round in 0..8 {
            let mem = create_guest_memory(&regions, &backing).unwrap();
            for region in mem.iter() {
                let host = mem.get_host_address(region.start_addr()).unwrap() as u64;
                assert_eq!(
                    host.wrapping_sub(region.start_addr().0) & (RAM_ALIGN as u64 - 1),
                    0,
                    "round {round}: region {:#x} at host {host:#x}",
                    region.start_addr().0
                );
            }
            // Heap churn between rounds moves the gaps around.
            keep.push(vec![0x5au8; (round + 1) << 20]);
            drop(mem);
        }
    }

    #[test]
    fn the_reservation_around_the_hole_is_released() {
        let maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .count()
        };
        let regions = [(GuestAddress(0), 32 << 20)];
        let backing = MemoryBacking {
            hugepages: None,
            prefault: false,
        };
        // Warm up whatever the first call maps (the allocator's arenas).
        drop(create_guest_memory(&regions, &backing).unwrap());
        let before = maps();
        for _ in 0..16 {
            drop(create_guest_memory(&regions, &backing).unwrap());
        }
        assert!(
            maps() <= before + 2,
            "mappings leak: {before} -> {}",
            maps()
        );
    }
}
