//! KVM probing and the guest-speed verdict.

use super::{assert_message, FakeHost};
use crate::host::kvm::classify;
use crate::host::{CpuVirt, GuestSpeed, KvmDevice, KVM_API_VERSION};

const OPEN: KvmDevice = KvmDevice::Open {
    api_version: KVM_API_VERSION,
};

fn reason(speed: GuestSpeed) -> String {
    match speed {
        GuestSpeed::Unavailable(reason) => reason,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn hardware_virtualization_without_pvm_is_native() {
    assert_eq!(
        classify(&OPEN, Some(CpuVirt::Svm), false),
        GuestSpeed::Native
    );
    assert_eq!(
        classify(&OPEN, Some(CpuVirt::Vmx), false),
        GuestSpeed::Native
    );
}

#[test]
fn pvm_is_emulated_even_with_cpu_flags() {
    assert_eq!(classify(&OPEN, None, true), GuestSpeed::PvmEmulated);
    assert_eq!(
        classify(&OPEN, Some(CpuVirt::Svm), true),
        GuestSpeed::PvmEmulated
    );
    let text = GuestSpeed::PvmEmulated.to_string();
    assert_message(
        &text,
        &[
            "PVM: only PVM-aware guest kernels run natively",
            "instruction emulation",
            "nested test host",
        ],
    );
}

#[test]
fn missing_device_says_which_module_to_load() {
    let amd = reason(classify(&KvmDevice::Missing, Some(CpuVirt::Svm), false));
    assert_message(
        &amd,
        &[
            "/dev/kvm does not exist",
            "modprobe kvm_amd",
            "firmware setup",
        ],
    );
    let intel = reason(classify(&KvmDevice::Missing, Some(CpuVirt::Vmx), false));
    assert_message(&intel, &["modprobe kvm_intel"]);
    let none = reason(classify(&KvmDevice::Missing, None, false));
    assert_message(
        &none,
        &[
            "neither svm nor vmx",
            "enable virtualization",
            "nested virtualization",
        ],
    );
}

#[test]
fn other_device_problems() {
    let denied = reason(classify(
        &KvmDevice::PermissionDenied,
        Some(CpuVirt::Svm),
        false,
    ));
    assert_message(&denied, &["permission denied", "kvm group"]);
    let old = reason(classify(
        &KvmDevice::Open { api_version: 11 },
        Some(CpuVirt::Svm),
        false,
    ));
    assert_message(&old, &["API version 11", "needs 12"]);
    let not_kvm = reason(classify(
        &KvmDevice::Open { api_version: -1 },
        Some(CpuVirt::Svm),
        false,
    ));
    assert_message(&not_kvm, &["not a KVM device"]);
    let no_flags = reason(classify(&OPEN, None, false));
    assert_message(&no_flags, &["neither svm nor vmx", "native speed"]);
}

#[test]
fn probing_a_fake_host() {
    let fake = FakeHost::new();
    fake.cpuinfo("fpu svm");
    fake.module("kvm");
    fake.module("kvm_amd");
    let status = fake.host().kvm_status();
    assert_eq!(status.device, KvmDevice::Missing);
    assert_eq!(status.cpu_virt, Some(CpuVirt::Svm));
    assert!(!status.pvm);
    assert_eq!(status.modules, ["kvm", "kvm_amd"]);
    assert!(!status.can_run_stock_guests());
    assert_message(&reason(status.speed), &["modprobe kvm_amd"]);

    // A regular file where /dev/kvm should be opens, but is no KVM device.
    fake.write("dev/kvm", "");
    let status = fake.host().kvm_status();
    assert_eq!(status.device, KvmDevice::Open { api_version: -1 });
    assert_message(&reason(status.speed), &["not a KVM device"]);
}

#[test]
fn pvm_is_detected_from_its_module() {
    let fake = FakeHost::new();
    fake.cpuinfo("fpu sse2");
    fake.module("kvm");
    fake.module("kvm_pvm");
    let status = fake.host().kvm_status();
    assert!(status.pvm);
    assert_eq!(status.cpu_virt, None);
    assert_eq!(status.modules, ["kvm", "kvm_pvm"]);
}

#[test]
fn the_real_host_does_not_panic() {
    let status = crate::host::kvm_status();
    assert_eq!(
        status.can_run_stock_guests(),
        status.speed == GuestSpeed::Native
    );
}
