//! Unit tests for host facts, on sysfs/procfs fixtures in a temporary folder.

#![allow(clippy::unwrap_used)]

mod cpu;
mod doctor;
mod hugepages;
mod iommu;
mod kvm;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::Host;

/// A fake host root: `sys/`, `proc/`, `dev/` under a temporary folder.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn host(&self) -> Host {
        Host::at_root(self.dir.path())
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn mkdir(&self, relative: &str) {
        fs::create_dir_all(self.path(relative)).unwrap();
    }

    fn link(&self, target: &str, relative: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// A hugepage pool of `kb`-KiB pages.
    fn hugepages(&self, kb: u64, total: u64, free: u64, reserved: u64, surplus: u64) {
        let dir = format!("sys/kernel/mm/hugepages/hugepages-{kb}kB");
        self.write(&format!("{dir}/nr_hugepages"), &format!("{total}\n"));
        self.write(&format!("{dir}/free_hugepages"), &format!("{free}\n"));
        self.write(&format!("{dir}/resv_hugepages"), &format!("{reserved}\n"));
        self.write(&format!("{dir}/surplus_hugepages"), &format!("{surplus}\n"));
    }

    /// A PCI device as sysfs shows it, optionally bound and in an IOMMU group.
    fn pci(
        &self,
        address: &str,
        ids: (u16, u16),
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
    ) {
        let dir = format!("sys/bus/pci/devices/{address}");
        self.write(&format!("{dir}/vendor"), &format!("0x{:04x}\n", ids.0));
        self.write(&format!("{dir}/device"), &format!("0x{:04x}\n", ids.1));
        self.write(&format!("{dir}/class"), &format!("0x{class:06x}\n"));
        if let Some(driver) = driver {
            self.mkdir(&format!("sys/bus/pci/drivers/{driver}"));
            self.link(
                &format!("../../../bus/pci/drivers/{driver}"),
                &format!("{dir}/driver"),
            );
        }
        if let Some(group) = group {
            self.link(
                &format!("../../../kernel/iommu_groups/{group}"),
                &format!("{dir}/iommu_group"),
            );
            self.link(
                &format!("../../../../bus/pci/devices/{address}"),
                &format!("sys/kernel/iommu_groups/{group}/devices/{address}"),
            );
        }
    }

    fn cpuinfo(&self, flags: &str) {
        let mut text = String::new();
        for cpu in 0..2 {
            text.push_str(&format!(
                "processor\t: {cpu}\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\nbugs\t\t: sysret_ss_attrs\n\n"
            ));
        }
        self.write("proc/cpuinfo", &text);
    }

    fn module(&self, name: &str) {
        self.mkdir(&format!("sys/module/{name}"));
    }
}

/// Asserts a message is one line and has every part.
fn assert_message(message: &str, parts: &[&str]) {
    assert!(!message.contains('\n'), "not one line: {message:?}");
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}
