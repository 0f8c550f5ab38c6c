//! Facts about the host that ghost-vmm runs on, for `ghost-vmm doctor`, `check` and the checks
//! `run` makes before it builds a VM: CPUs, KVM and guest speed, hugepage pools, the IOMMU and
//! its groups, vfio-pci, RLIMIT_MEMLOCK.
//!
//! Everything is read through a [`Host`], which names the sysfs, procfs and /dev roots, so tests
//! can point it at fixtures in a temporary folder. The free functions use the real host.

mod cpu;
mod doctor;
mod error;
mod hugepages;
mod iommu;
mod kvm;
mod passthrough;
mod sysfs;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use cpu::parse_cpuinfo_flags;
pub use doctor::{CheckStatus, DoctorCheck, DoctorReport};
pub use error::HostError;
pub use hugepages::HugePagePool;
pub use iommu::{IommuGroup, IommuStatus, PciDeviceInfo};
pub use kvm::{CpuVirt, GuestSpeed, KvmDevice, KvmStatus, KVM_API_VERSION};
pub use passthrough::memlock_limit;
pub use sysfs::{format_cpulist, parse_cpulist};

use crate::config::VfioConfig;

/// Where a host's sysfs, procfs and device nodes are: `/sys`, `/proc`, `/dev` for the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    sys: PathBuf,
    proc: PathBuf,
    dev: PathBuf,
}

impl Host {
    /// The host this process runs on.
    pub fn system() -> Self {
        Self::at_root(Path::new("/"))
    }

    /// A host whose `sys`, `proc` and `dev` folders are under `root` (fixtures in tests).
    pub fn at_root(root: &Path) -> Self {
        Self {
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
        }
    }

    /// A path under sysfs.
    pub(crate) fn sys(&self, relative: &str) -> PathBuf {
        self.sys.join(relative)
    }

    /// A path under procfs.
    pub(crate) fn proc(&self, relative: &str) -> PathBuf {
        self.proc.join(relative)
    }

    /// A path under /dev.
    pub(crate) fn dev(&self, relative: &str) -> PathBuf {
        self.dev.join(relative)
    }
}

/// The hugetlb pool of `page_size`-byte pages on this host, or `None` if there is none.
pub fn hugepage_pool(page_size: u64) -> Result<Option<HugePagePool>, HostError> {
    Host::system().hugepage_pool(page_size)
}

/// Checks that this host's pool of `page_size`-byte hugepages can back `needed_bytes`.
pub fn check_hugepages(needed_bytes: u64, page_size: u64) -> Result<(), HostError> {
    Host::system().check_hugepages(needed_bytes, page_size)
}

/// KVM on this host, and whether stock guests run at native speed.
pub fn kvm_status() -> KvmStatus {
    Host::system().kvm_status()
}

/// The IOMMU on this host and its groups.
pub fn iommu_status() -> IommuStatus {
    Host::system().iommu_status()
}

/// Checks that the `[[vfio]]` devices can be passed through on this host now.
pub fn check_vfio(devices: &[VfioConfig]) -> Result<(), HostError> {
    Host::system().check_vfio(devices)
}

/// Checks that VFIO can pin `needed_bytes` of guest RAM in this process.
pub fn check_memlock(needed_bytes: u64) -> Result<(), HostError> {
    Host::system().check_memlock(needed_bytes)
}

/// The `ghost-vmm doctor` report for this host.
pub fn doctor_report() -> DoctorReport {
    Host::system().doctor_report()
}
