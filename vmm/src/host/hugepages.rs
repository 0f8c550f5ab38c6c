//! Hugetlb pools: `/sys/kernel/mm/hugepages/hugepages-<N>kB/`.

use std::path::PathBuf;

use super::sysfs::read_u64;
use super::{Host, HostError};
use crate::config::ByteSize;

const TWO_MIB: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// One hugetlb pool, as the kernel counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePagePool {
    /// Bytes per page.
    pub size: u64,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not in use (`free_hugepages`); includes reserved ones.
    pub free: u64,
    /// Free pages promised to mappings that have not touched them yet (`resv_hugepages`).
    pub reserved: u64,
    /// Pages above the persistent pool, from overcommit (`surplus_hugepages`).
    pub surplus: u64,
}

impl HugePagePool {
    /// Pages a new VM can still get: free and not reserved for anyone.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }

    /// Bytes a new VM can still get.
    pub fn available_bytes(&self) -> u64 {
        self.available().saturating_mul(self.size)
    }
}

impl Host {
    /// The sysfs folder of the pool of `page_size`-byte pages.
    pub fn hugepage_dir(&self, page_size: u64) -> PathBuf {
        self.sys(&format!(
            "kernel/mm/hugepages/hugepages-{}kB",
            page_size / 1024
        ))
    }

    /// The pool of `page_size`-byte pages, or `None` if this host has no such pool.
    pub fn hugepage_pool(&self, page_size: u64) -> Result<Option<HugePagePool>, HostError> {
        let dir = self.hugepage_dir(page_size);
        if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(HugePagePool {
            size: page_size,
            total: read_u64(&dir.join("nr_hugepages"))?,
            free: read_u64(&dir.join("free_hugepages"))?,
            reserved: read_u64(&dir.join("resv_hugepages"))?,
            surplus: read_u64(&dir.join("surplus_hugepages"))?,
        }))
    }

    /// Checks that the pool of `page_size`-byte pages can back `needed_bytes` of guest RAM,
    /// and says how to grow it if not.
    pub fn check_hugepages(&self, needed_bytes: u64, page_size: u64) -> Result<(), HostError> {
        let label = ByteSize::from_bytes(page_size).to_string();
        let is_1g = page_size >= GIB;
        let Some(pool) = self.hugepage_pool(page_size)? else {
            return Err(HostError::NoHugepagePool {
                size: label,
                dir: self.hugepage_dir(page_size),
                hint: match page_size {
                    GIB => "this CPU or kernel has no 1G pages: use hugepage_size = \"2M\"",
                    TWO_MIB => "the host kernel has no hugetlbfs: set hugepages = false",
                    _ => "use hugepage_size = \"2M\" or \"1G\"",
                },
            });
        };
        let needed = needed_bytes.div_ceil(page_size.max(1));
        let available = pool.available();
        if needed <= available {
            return Ok(());
        }
        let persistent = pool.total.saturating_sub(pool.surplus);
        Err(HostError::NotEnoughHugepages {
            needed,
            available,
            total: pool.total,
            size: label,
            suggest: persistent.saturating_add(needed - available),
            nr_path: self.hugepage_dir(page_size).join("nr_hugepages"),
            note: if is_1g {
                " (1G pages are best reserved at boot: hugepagesz=1G hugepages=N on the host kernel command line)"
            } else {
                ""
            },
        })
    }
}
