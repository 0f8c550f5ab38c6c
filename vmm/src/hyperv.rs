//! `[vm] hyperv = true`: asks KVM which Hyper-V enlightenments it emulates and readies each
//! vCPU for them ([`ghost_boot::hyperv`] builds the CPUID leaves).

use kvm_bindings::{
    kvm_cpuid2, kvm_enable_cap, CpuId, KVM_CAP_HYPERV_CPUID, KVM_CAP_HYPERV_SYNIC2,
    KVM_CAP_SYS_HYPERV_CPUID, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use vmm_sys_util::ioctl::ioctl_with_mut_ptr;
use vmm_sys_util::ioctl_iowr_nr;

use ghost_boot::hyperv::{HypervError, HypervLeaves};

/// `KVMIO`, the KVM ioctl type.
const KVMIO: u32 = 0xAE;
ioctl_iowr_nr!(KVM_GET_SUPPORTED_HV_CPUID, KVMIO, 0xc1, kvm_cpuid2);

/// Why Hyper-V enlightenments cannot be offered.
#[derive(Debug, thiserror::Error)]
pub enum HypervSetupError {
    /// This host's KVM has no Hyper-V emulation to ask about.
    #[error("vm.hyperv: this host's KVM does not emulate Hyper-V (no KVM_CAP_HYPERV_CPUID; Linux 5.0 or later has it)")]
    Unsupported,
    /// `KVM_GET_SUPPORTED_HV_CPUID` failed.
    #[error("vm.hyperv: KVM_GET_SUPPORTED_HV_CPUID failed: {0}")]
    Query(#[source] kvm_ioctls::Error),
    /// What KVM reported cannot make a Hyper-V guest.
    #[error("vm.hyperv: {0}")]
    Leaves(#[from] HypervError),
    /// Enabling the synthetic interrupt controller on a vCPU failed.
    #[error("vm.hyperv: cannot enable SynIC on vCPU {vcpu}: {source}")]
    Synic {
        /// The vCPU.
        vcpu: u8,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The Hyper-V leaves for this host's KVM: asked of the system when KVM answers there (Linux
/// 5.11+), else of `vcpu0` (its answer does not depend on the vCPU's state).
pub(crate) fn leaves(kvm: &Kvm, vcpu0: &VcpuFd) -> Result<HypervLeaves, HypervSetupError> {
    if kvm.check_extension_raw(u64::from(KVM_CAP_HYPERV_CPUID)) <= 0 {
        return Err(HypervSetupError::Unsupported);
    }
    let mut cpuid = CpuId::new(KVM_MAX_CPUID_ENTRIES)
        .map_err(|_| HypervSetupError::Query(kvm_ioctls::Error::new(libc::ENOMEM)))?;
    let system = kvm.check_extension_raw(u64::from(KVM_CAP_SYS_HYPERV_CPUID)) > 0;
    // SAFETY: the ioctl writes at most `nent` entries (set to the allocated count by
    // `CpuId::new`) into the FAM struct, which lives for the call; the fd is KVM's.
    let ret = unsafe {
        if system {
            ioctl_with_mut_ptr(
                kvm,
                KVM_GET_SUPPORTED_HV_CPUID(),
                cpuid.as_mut_fam_struct_ptr(),
            )
        } else {
            ioctl_with_mut_ptr(
                vcpu0,
                KVM_GET_SUPPORTED_HV_CPUID(),
                cpuid.as_mut_fam_struct_ptr(),
            )
        }
    };
    if ret < 0 {
        return Err(HypervSetupError::Query(kvm_ioctls::Error::last()));
    }
    Ok(HypervLeaves::new(cpuid.as_slice())?)
}

/// Readies vCPU `index` for what `leaves` offers: the synthetic interrupt controller (its
/// MSRs and auto-EOI) is off in KVM until enabled per vCPU.
pub(crate) fn enable(
    fd: &VcpuFd,
    index: u8,
    leaves: &HypervLeaves,
) -> Result<(), HypervSetupError> {
    if leaves.synic() {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_HYPERV_SYNIC2,
            ..Default::default()
        };
        fd.enable_cap(&cap)
            .map_err(|source| HypervSetupError::Synic {
                vcpu: index,
                source,
            })?;
    }
    Ok(())
}
