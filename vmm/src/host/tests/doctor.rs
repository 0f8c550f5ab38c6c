//! The doctor report on fake hosts.

use super::FakeHost;
use crate::host::{CheckStatus, DoctorReport};

fn line<'a>(report: &'a DoctorReport, topic: &str) -> (CheckStatus, &'a str) {
    let check = report
        .checks
        .iter()
        .find(|c| c.topic == topic)
        .unwrap_or_else(|| panic!("no {topic:?} line in:\n{report}"));
    (check.status, &check.detail)
}

/// A cloud VM with PVM, 2M pages reserved, no 1G pool, no IOMMU.
fn pvm_host() -> FakeHost {
    let fake = FakeHost::new();
    fake.write("sys/devices/system/cpu/online", "0-1\n");
    fake.cpuinfo("fpu sse2");
    fake.module("kvm");
    fake.module("kvm_pvm");
    fake.write("dev/kvm", "");
    fake.hugepages(2048, 256, 200, 0, 0);
    fake
}

#[test]
fn every_line_starts_with_a_status() {
    let report = pvm_host().host().doctor_report();
    let text = report.to_string();
    for l in text.lines() {
        assert!(
            l.starts_with("ok    ") || l.starts_with("warn  ") || l.starts_with("FAIL  "),
            "{l:?}"
        );
    }
    assert_eq!(text.lines().count(), report.checks.len());
}

#[test]
fn reports_cpus_pools_and_iommu() {
    let report = pvm_host().host().doctor_report();
    assert_eq!(line(&report, "cpus"), (CheckStatus::Ok, "2 online (0-1)"));
    let (status, detail) = line(&report, "hugepages 2M");
    assert_eq!(status, CheckStatus::Ok);
    assert_eq!(detail, "256 in the pool, 200 free for VMs (400M)");
    let (status, detail) = line(&report, "hugepages 1G");
    assert_eq!(status, CheckStatus::Warn);
    assert!(detail.contains("use hugepage_size = \"2M\""), "{detail}");
    let (status, detail) = line(&report, "iommu");
    assert_eq!(status, CheckStatus::Warn);
    assert!(detail.contains("intel_iommu=on"), "{detail}");
    assert_eq!(line(&report, "vfio-pci").0, CheckStatus::Warn);
    assert!(report.checks.iter().any(|c| c.topic == "memlock"));
    assert_eq!(report.hugepages.len(), 2);
}

#[test]
fn kvm_that_is_not_kvm_fails() {
    let report = pvm_host().host().doctor_report();
    let (status, detail) = line(&report, "kvm");
    assert_eq!(status, CheckStatus::Fail);
    assert!(detail.contains("not a KVM device"), "{detail}");
    assert!(detail.contains("modules kvm, kvm_pvm"), "{detail}");
    assert!(!report.can_run_stock_guests());
    assert!(report.has_failures());
}

#[test]
fn missing_kvm_says_how_to_fix_it() {
    let fake = FakeHost::new();
    fake.cpuinfo("fpu vmx");
    let report = fake.host().doctor_report();
    let (status, detail) = line(&report, "kvm");
    assert_eq!(status, CheckStatus::Fail);
    assert!(detail.contains("modprobe kvm_intel"), "{detail}");
    assert!(detail.contains("no KVM module loaded"), "{detail}");
    let (status, _) = line(&report, "cpus");
    assert_eq!(status, CheckStatus::Warn);
}

#[test]
fn groups_are_listed_and_split_ones_warned_about() {
    let fake = pvm_host();
    fake.pci(
        "0000:01:00.0",
        (0x10de, 0x2204),
        0x030000,
        Some("vfio-pci"),
        Some(14),
    );
    fake.pci(
        "0000:01:00.1",
        (0x10de, 0x1aef),
        0x040300,
        Some("snd_hda_intel"),
        Some(14),
    );
    fake.pci(
        "0000:0c:00.3",
        (0x1022, 0x15b6),
        0x0c0330,
        Some("xhci_hcd"),
        Some(27),
    );
    fake.mkdir("sys/kernel/iommu_groups/30/devices");
    let report = fake.host().doctor_report();
    let (status, detail) = line(&report, "iommu");
    assert_eq!(status, CheckStatus::Ok);
    assert_eq!(detail, "on, 3 groups");
    assert_eq!(line(&report, "vfio-pci").0, CheckStatus::Ok);
    let (status, detail) = line(&report, "iommu group 14");
    assert_eq!(status, CheckStatus::Warn);
    assert_eq!(
        detail,
        "0000:01:00.0 10de:2204 VGA [vfio-pci], 0000:01:00.1 10de:1aef audio [snd_hda_intel] \
         — cannot be passed through: bind 0000:01:00.1 to vfio-pci too"
    );
    assert_eq!(
        line(&report, "iommu group 27"),
        (CheckStatus::Ok, "0000:0c:00.3 1022:15b6 USB [xhci_hcd]")
    );
    assert_eq!(
        line(&report, "iommu group 30"),
        (CheckStatus::Ok, "no PCI devices")
    );
}

#[test]
fn the_real_host_report_is_plain_lines() {
    let report = crate::host::doctor_report();
    let text = report.to_string();
    assert!(text.lines().any(|l| l.contains("kvm")), "{text}");
    assert_eq!(
        report.can_run_stock_guests(),
        report.kvm.can_run_stock_guests()
    );
}
