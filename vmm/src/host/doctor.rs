//! `ghost-vmm doctor`: the host facts a user needs, one plain line each, with what to fix.

use std::fmt;

use super::hugepages::HugePagePool;
use super::iommu::{IommuGroup, IommuStatus};
use super::kvm::{GuestSpeed, KvmDevice, KvmStatus};
use super::passthrough::memlock_limit;
use super::sysfs::format_cpulist;
use super::Host;
use crate::config::{ByteSize, HugepageSize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Fine for some VMs; the line says what would not work.
    Warn,
    /// VMs cannot run (or not usefully) until this is fixed.
    Fail,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorCheck {
    /// How it came out.
    pub status: CheckStatus,
    /// What was checked: `kvm`, `hugepages 2M`, `iommu group 14`.
    pub topic: String,
    /// What was found and, if it is not ok, what to do.
    pub detail: String,
}

/// The host report: facts, and one line per check.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    /// KVM and guest speed.
    pub kvm: KvmStatus,
    /// The IOMMU and its groups.
    pub iommu: IommuStatus,
    /// The 2M and 1G hugepage pools (`None`: no such pool, or unreadable).
    pub hugepages: Vec<(HugepageSize, Option<HugePagePool>)>,
    /// The report's lines, in order.
    pub checks: Vec<DoctorCheck>,
}

impl DoctorReport {
    /// Whether stock guest kernels run at native speed on this host.
    pub fn can_run_stock_guests(&self) -> bool {
        self.kvm.can_run_stock_guests()
    }

    /// Whether any line is `FAIL`.
    pub fn has_failures(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Fail)
    }

    fn push(&mut self, status: CheckStatus, topic: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(DoctorCheck {
            status,
            topic: topic.into(),
            detail: detail.into(),
        });
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{:<4}  {}: {}", check.status, check.topic, check.detail)?;
        }
        Ok(())
    }
}

impl Host {
    /// Checks this host: CPUs, KVM and guest speed, hugepage pools, IOMMU, vfio-pci, memlock,
    /// and every IOMMU group.
    pub fn doctor_report(&self) -> DoctorReport {
        let mut report = DoctorReport {
            kvm: self.kvm_status(),
            iommu: self.iommu_status(),
            hugepages: Vec::new(),
            checks: Vec::new(),
        };
        match self.online_cpus() {
            Ok(cpus) => report.push(
                CheckStatus::Ok,
                "cpus",
                format!("{} online ({})", cpus.len(), format_cpulist(&cpus)),
            ),
            Err(e) => report.push(CheckStatus::Warn, "cpus", e.to_string()),
        }
        kvm_lines(&mut report);
        for size in [HugepageSize::Size2M, HugepageSize::Size1G] {
            let pool = hugepage_line(self, &mut report, size);
            report.hugepages.push((size, pool));
        }
        iommu_lines(&mut report);
        memlock_line(self, &mut report);
        group_lines(&mut report);
        report
    }
}

fn kvm_lines(report: &mut DoctorReport) {
    let kvm = report.kvm.clone();
    let modules = if kvm.modules.is_empty() {
        "no KVM module loaded".to_owned()
    } else {
        format!("modules {}", kvm.modules.join(", "))
    };
    match (&kvm.device, &kvm.speed) {
        (_, GuestSpeed::Unavailable(reason)) => {
            report.push(CheckStatus::Fail, "kvm", format!("{reason} ({modules})"));
        }
        (KvmDevice::Open { api_version }, speed) => {
            report.push(
                CheckStatus::Ok,
                "kvm",
                format!(
                    "{} opens read-write, API version {api_version} ({modules})",
                    kvm.path.display()
                ),
            );
            let status = if *speed == GuestSpeed::Native {
                CheckStatus::Ok
            } else {
                CheckStatus::Fail
            };
            let virt = kvm
                .cpu_virt
                .map(|v| format!(" with {v}"))
                .unwrap_or_default();
            let detail = match speed {
                GuestSpeed::Native => format!("{speed}{virt}"),
                _ => speed.to_string(),
            };
            report.push(status, "guests", detail);
        }
        (_, speed) => report.push(CheckStatus::Fail, "kvm", format!("{speed} ({modules})")),
    }
}

fn hugepage_line(
    host: &Host,
    report: &mut DoctorReport,
    size: HugepageSize,
) -> Option<HugePagePool> {
    let topic = format!("hugepages {size}");
    let nr_path = host.hugepage_dir(size.bytes()).join("nr_hugepages");
    match host.hugepage_pool(size.bytes()) {
        Err(e) => {
            report.push(CheckStatus::Warn, topic, e.to_string());
            None
        }
        Ok(None) => {
            let detail = match size {
                HugepageSize::Size1G => {
                    "none: this CPU or kernel has no 1G pages; use hugepage_size = \"2M\""
                }
                HugepageSize::Size2M => {
                    "none: the host kernel has no hugetlbfs; hugepages = true will not work"
                }
            };
            report.push(CheckStatus::Warn, topic, detail);
            None
        }
        Ok(Some(pool)) if pool.total == 0 => {
            let boot_hint = match size {
                HugepageSize::Size1G => {
                    " (1G pages are best reserved at boot: hugepagesz=1G hugepages=N)"
                }
                HugepageSize::Size2M => "",
            };
            report.push(
                CheckStatus::Ok,
                topic,
                format!(
                    "none reserved; for VMs with hugepages = true: echo N > {}{boot_hint}",
                    nr_path.display()
                ),
            );
            Some(pool)
        }
        Ok(Some(pool)) => {
            report.push(
                CheckStatus::Ok,
                topic,
                format!(
                    "{} in the pool, {} free for VMs ({})",
                    pool.total,
                    pool.available(),
                    ByteSize::from_bytes(pool.available_bytes())
                ),
            );
            Some(pool)
        }
    }
}

fn iommu_lines(report: &mut DoctorReport) {
    let iommu = report.iommu.clone();
    if iommu.enabled {
        let units = if iommu.units.is_empty() {
            String::new()
        } else {
            format!(" (units {})", iommu.units.join(", "))
        };
        report.push(
            CheckStatus::Ok,
            "iommu",
            format!("on, {} groups{units}", iommu.groups.len()),
        );
    } else {
        report.push(
            CheckStatus::Warn,
            "iommu",
            "off (no IOMMU groups); PCI passthrough needs it: enable AMD-Vi / VT-d in the firmware \
             setup and boot with intel_iommu=on (Intel) or amd_iommu=on (AMD)",
        );
    }
    if iommu.vfio_pci_loaded {
        report.push(CheckStatus::Ok, "vfio-pci", "loaded");
    } else {
        report.push(
            CheckStatus::Warn,
            "vfio-pci",
            "not loaded; PCI passthrough needs it: modprobe vfio-pci",
        );
    }
}

fn group_lines(report: &mut DoctorReport) {
    let groups = report.iommu.groups.clone();
    for group in &groups {
        let (status, detail) = group_line(group);
        report.push(status, format!("iommu group {}", group.id), detail);
    }
}

fn memlock_line(host: &Host, report: &mut DoctorReport) {
    match memlock_limit() {
        None => report.push(CheckStatus::Ok, "memlock", "unlimited"),
        Some(limit) if host.has_cap_ipc_lock() => report.push(
            CheckStatus::Ok,
            "memlock",
            format!(
                "{} but this process has CAP_IPC_LOCK, so VFIO can pin guest RAM",
                ByteSize::from_bytes(limit)
            ),
        ),
        Some(limit) => report.push(
            CheckStatus::Warn,
            "memlock",
            format!(
                "{}; PCI passthrough pins all guest RAM: raise it (`ulimit -l unlimited`, \
                 LimitMEMLOCK=infinity in a systemd unit) or run as root",
                ByteSize::from_bytes(limit)
            ),
        ),
    }
}

fn group_line(group: &IommuGroup) -> (CheckStatus, String) {
    if group.devices.is_empty() {
        return (CheckStatus::Ok, "no PCI devices".to_owned());
    }
    let devices: Vec<String> = group
        .devices
        .iter()
        .map(|d| {
            format!(
                "{} {:04x}:{:04x} {} [{}]",
                d.address,
                d.vendor,
                d.device,
                d.class_name(),
                d.driver.as_deref().unwrap_or("no driver")
            )
        })
        .collect();
    let mut detail = devices.join(", ");
    if !group.is_split() {
        return (CheckStatus::Ok, detail);
    }
    let blockers: Vec<String> = group
        .blockers()
        .iter()
        .map(|d| d.address.to_string())
        .collect();
    detail.push_str(&format!(
        " — cannot be passed through: bind {} to vfio-pci too",
        blockers.join(" and ")
    ));
    (CheckStatus::Warn, detail)
}
