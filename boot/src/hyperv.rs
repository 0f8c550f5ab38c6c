//! Hyper-V enlightenments: the CPUID leaves 0x4000_0000.. that make a guest see a Microsoft
//! hypervisor, built from what KVM can emulate (`KVM_GET_SUPPORTED_HV_CPUID`).
//!
//! Windows runs markedly better on a hypervisor that offers these (relaxed timing instead of
//! watchdog BSODs on a descheduled vCPU, paravirtual EOI and IPIs instead of APIC exits,
//! spinlock yields, a reference TSC page instead of a PM timer); Linux has a complete
//! Hyper-V guest side, which is how they are shown without Windows. The enlightenments
//! offered are those the VM file's `hyperv = true` documents, each only if KVM offers it:
//!
//! | name | CPUID bits (TLFS) |
//! |------|-------------------|
//! | relaxed | 0x4000_0004 EAX\[5\] relaxed timing |
//! | vapic | 0x4000_0003 EAX\[4\] APIC MSRs, 0x4000_0004 EAX\[3\] their use |
//! | spinlocks | 0x4000_0004 EBX retries before a yield hypercall (KVM's count) |
//! | vpindex | 0x4000_0003 EAX\[6\] |
//! | runtime | 0x4000_0003 EAX\[0\] |
//! | time | 0x4000_0003 EAX\[1\], \[9\]: reference counter and TSC page (stimer needs it) |
//! | synic | 0x4000_0003 EAX\[2\], EBX\[4\], \[5\] (post messages, signal events) |
//! | stimer | 0x4000_0003 EAX\[3\], EDX\[19\] direct mode |
//! | frequencies | 0x4000_0003 EAX\[11\], EDX\[8\] TSC/APIC frequency MSRs |
//! | tlbflush | 0x4000_0004 EAX\[2\] remote flush hypercalls |
//! | ipi | 0x4000_0004 EAX\[10\], \[11\] cluster and sparse-mask IPIs |
//!
//! The hypercall MSR (0x4000_0003 EAX\[5\]) is always there: every enlightenment goes
//! through it. Not offered, although KVM can: the reset MSR, crash MSRs, re-enlightenment
//! (for migration), enlightened VMCS (nested), synthetic debugging.
//!
//! The vendor leaf says "Microsoft Hv" (KVM's own says "Linux KVM Hv", which Windows and
//! Linux both ignore), and KVM's paravirtual leaves are not offered beside it: a guest meets
//! one hypervisor, the one Windows expects.

use kvm_bindings::kvm_cpuid_entry2;

/// The vendor and maximum leaf.
pub const LEAF_VENDOR: u32 = 0x4000_0000;
/// The interface signature ("Hv#1").
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// The hypervisor version.
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// Partition privileges (EAX, EBX) and features (EDX).
pub const LEAF_FEATURES: u32 = 0x4000_0003;
/// Implementation recommendations (EAX) and the spinlock retry count (EBX).
pub const LEAF_RECOMMENDATIONS: u32 = 0x4000_0004;
/// Implementation limits (virtual and logical processors).
pub const LEAF_LIMITS: u32 = 0x4000_0005;
/// Hardware features in use (none offered).
pub const LEAF_HARDWARE: u32 = 0x4000_0006;

/// The hypervisor leaves KVM's own (`KVMKVMKVM`) range covers: replaced when Hyper-V is on.
const KVM_LEAVES: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

/// 0x4000_0003 EAX: the hypercall MSRs, without which nothing else works.
const HYPERCALL: u32 = 1 << 5;

/// One enlightenment: its name and its bits in the leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enlightenment {
    /// As the VM file's documentation and the log name it.
    pub name: &'static str,
    /// 0x4000_0003 EAX bits.
    features_eax: u32,
    /// 0x4000_0003 EBX bits.
    features_ebx: u32,
    /// 0x4000_0003 EDX bits.
    features_edx: u32,
    /// 0x4000_0004 EAX bits.
    recommendations: u32,
}

const fn enlightenment(
    name: &'static str,
    eax: u32,
    ebx: u32,
    edx: u32,
    rec: u32,
) -> Enlightenment {
    Enlightenment {
        name,
        features_eax: eax,
        features_ebx: ebx,
        features_edx: edx,
        recommendations: rec,
    }
}

/// The enlightenments `hyperv = true` offers (see the module documentation).
pub const ENLIGHTENMENTS: &[Enlightenment] = &[
    enlightenment("relaxed", 0, 0, 0, 1 << 5),
    enlightenment("vapic", 1 << 4, 0, 0, 1 << 3),
    enlightenment("spinlocks", 0, 0, 0, 0),
    enlightenment("vpindex", 1 << 6, 0, 0, 0),
    enlightenment("runtime", 1 << 0, 0, 0, 0),
    enlightenment("time", (1 << 1) | (1 << 9), 0, 0, 0),
    enlightenment("synic", 1 << 2, (1 << 4) | (1 << 5), 0, 0),
    enlightenment("stimer", 1 << 3, 0, 1 << 19, 0),
    enlightenment("frequencies", 1 << 11, 0, 1 << 8, 0),
    enlightenment("tlbflush", 0, 0, 0, 1 << 2),
    enlightenment("ipi", 0, 0, 0, (1 << 10) | (1 << 11)),
];

/// Why Hyper-V leaves cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HypervError {
    /// KVM's Hyper-V CPUID lacks a leaf every guest reads.
    #[error("KVM's Hyper-V CPUID has no leaf {0:#x}")]
    MissingLeaf(u32),
    /// KVM does not emulate the hypercall MSRs.
    #[error("KVM does not emulate the Hyper-V hypercall MSRs")]
    NoHypercalls,
}

/// The Hyper-V leaves for a VM: KVM's `supported` ones (`KVM_GET_SUPPORTED_HV_CPUID`), cut
/// down to [`ENLIGHTENMENTS`], with the Microsoft vendor signature.
#[derive(Debug, Clone, PartialEq)]
pub struct HypervLeaves {
    entries: Vec<kvm_cpuid_entry2>,
    offered: Vec<&'static str>,
}

impl HypervLeaves {
    /// Builds the leaves from KVM's supported Hyper-V CPUID.
    pub fn new(supported: &[kvm_cpuid_entry2]) -> Result<Self, HypervError> {
        let leaf = |function| {
            supported
                .iter()
                .find(|e| e.function == function)
                .copied()
                .ok_or(HypervError::MissingLeaf(function))
        };
        let kvm_features = leaf(LEAF_FEATURES)?;
        let kvm_recommendations = leaf(LEAF_RECOMMENDATIONS)?;
        if kvm_features.eax & HYPERCALL == 0 {
            return Err(HypervError::NoHypercalls);
        }

        let mut features = kvm_cpuid_entry2 {
            function: LEAF_FEATURES,
            eax: HYPERCALL,
            ..Default::default()
        };
        let mut recommendations = kvm_cpuid_entry2 {
            function: LEAF_RECOMMENDATIONS,
            ..Default::default()
        };
        let mut offered = Vec::new();
        for e in ENLIGHTENMENTS {
            let has = |want: u32, kvm: u32| want & kvm == want;
            let spinlocks = e.name == "spinlocks";
            let available = if spinlocks {
                kvm_recommendations.ebx != 0
            } else {
                has(e.features_eax, kvm_features.eax)
                    && has(e.features_ebx, kvm_features.ebx)
                    && has(e.recommendations, kvm_recommendations.eax)
            };
            if !available {
                continue;
            }
            features.eax |= e.features_eax;
            features.ebx |= e.features_ebx;
            // Optional refinements (direct-mode timers, frequency MSRs) where KVM has them.
            features.edx |= e.features_edx & kvm_features.edx;
            recommendations.eax |= e.recommendations;
            if spinlocks {
                recommendations.ebx = kvm_recommendations.ebx;
            }
            offered.push(e.name);
        }

        let kvm_limits = leaf(LEAF_LIMITS)?;
        let version = leaf(LEAF_VERSION)?;
        let word = |s: &[u8; 12], i: usize| {
            u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]])
        };
        let vendor = b"Microsoft Hv";
        let entries = vec![
            kvm_cpuid_entry2 {
                function: LEAF_VENDOR,
                eax: LEAF_HARDWARE,
                ebx: word(vendor, 0),
                ecx: word(vendor, 1),
                edx: word(vendor, 2),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_INTERFACE,
                eax: u32::from_le_bytes(*b"Hv#1"),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_VERSION,
                eax: version.eax,
                ebx: version.ebx,
                ..Default::default()
            },
            features,
            recommendations,
            kvm_cpuid_entry2 {
                function: LEAF_LIMITS,
                eax: kvm_limits.eax,
                ebx: kvm_limits.ebx,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_HARDWARE,
                ..Default::default()
            },
        ];
        Ok(Self { entries, offered })
    }

    /// The enlightenments offered, by name, in [`ENLIGHTENMENTS`] order.
    pub fn offered(&self) -> &[&'static str] {
        &self.offered
    }

    /// Whether the synthetic interrupt controller is offered (the VMM must then enable
    /// `KVM_CAP_HYPERV_SYNIC2` on every vCPU).
    pub fn synic(&self) -> bool {
        self.offered.contains(&"synic")
    }

    /// The leaves, for [`apply`](Self::apply).
    pub fn entries(&self) -> &[kvm_cpuid_entry2] {
        &self.entries
    }

    /// Puts the leaves into a vCPU's CPUID `cpuid` (from [`crate::cpuid::filter_cpuid`]),
    /// in place of KVM's paravirtual leaves.
    pub fn apply(&self, cpuid: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
        cpuid
            .iter()
            .filter(|e| !KVM_LEAVES.contains(&e.function))
            .chain(self.entries.iter())
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// What Linux 6.1's `kvm_get_hv_cpuid` returns on a host without eVMCS (the vCPU ioctl):
    /// its vendor "Linux KVM Hv", every feature bit it emulates, its recommendations and
    /// spinlock count, and nested leaves.
    fn kvm_6_1() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(
                0x4000_0000,
                [0x4000_000a, 0x756e_694c, 0x564b_2078, 0x7648_204d],
            ),
            leaf(0x4000_0001, [0x3123_7648, 0, 0, 0]),
            leaf(0x4000_0002, [0x0000_3839, 0x000a_0000, 0, 0]),
            // EAX: runtime, time, synic, stimer, vapic, hypercall, vpindex, reset, ref TSC,
            // frequencies, reenlightenment, invariant TSC. EBX: post messages, signal events,
            // extended hypercalls. EDX: XMM input, frequency MSRs, crash MSRs, direct stimer.
            leaf(0x4000_0003, [0x6aff, 0x0010_0030, 0, 0x0008_0510]),
            // EAX: remote TLB flush, APIC access, relaxed, AEOI deprecated, cluster IPI,
            // sparse masks. EBX: 0xfff retries.
            leaf(0x4000_0004, [0x0000_0e2c, 0xfff, 0, 0]),
            leaf(0x4000_0005, [1024, 0, 0, 0]),
            leaf(0x4000_0006, [0x8, 0, 0, 0]),
            leaf(0x4000_000a, [0x0002_0000, 0, 0, 0]),
        ]
    }

    fn get(entries: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
        let mut found = entries.iter().filter(|e| e.function == function);
        let e = *found
            .next()
            .unwrap_or_else(|| panic!("no leaf {function:#x}"));
        assert!(found.next().is_none(), "leaf {function:#x} twice");
        e
    }

    #[test]
    fn the_vendor_is_microsoft_and_the_leaves_end_at_the_hardware_leaf() {
        let hv = HypervLeaves::new(&kvm_6_1()).expect("leaves");
        let v = get(hv.entries(), 0x4000_0000);
        let mut sig = Vec::new();
        for r in [v.ebx, v.ecx, v.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"Microsoft Hv");
        assert_eq!(v.eax, 0x4000_0006);
        assert_eq!(&get(hv.entries(), 0x4000_0001).eax.to_le_bytes(), b"Hv#1");
        assert_eq!(get(hv.entries(), 0x4000_0002).eax, 0x3839);
        assert!(hv.entries().iter().all(|e| e.function <= 0x4000_0006));
    }

    #[test]
    fn all_documented_enlightenments_kvm_has_are_offered_and_nothing_else() {
        let hv = HypervLeaves::new(&kvm_6_1()).expect("leaves");
        let names: Vec<_> = ENLIGHTENMENTS.iter().map(|e| e.name).collect();
        assert_eq!(hv.offered(), names.as_slice());
        assert!(hv.synic());
        let f = get(hv.entries(), 0x4000_0003);
        // runtime, time ref count, synic, stimer, vapic, hypercall, vpindex, ref TSC, freq.
        assert_eq!(f.eax, 0b1010_0111_1111);
        assert_eq!(f.eax & (1 << 7), 0, "no reset MSR");
        assert_eq!(f.eax & (1 << 13), 0, "no re-enlightenment");
        assert_eq!(f.ebx, 0x30, "post messages and signal events only");
        assert_eq!(f.edx, (1 << 19) | (1 << 8), "direct stimer, frequency MSRs");
        let r = get(hv.entries(), 0x4000_0004);
        assert_eq!(
            r.eax,
            (1 << 2) | (1 << 3) | (1 << 5) | (1 << 10) | (1 << 11)
        );
        assert_eq!(r.ebx, 0xfff);
        assert_eq!(get(hv.entries(), 0x4000_0005).eax, 1024);
        assert_eq!(
            get(hv.entries(), 0x4000_0006).eax,
            0,
            "no hardware features"
        );
    }

    #[test]
    fn what_kvm_lacks_is_not_offered() {
        let mut kvm = kvm_6_1();
        for e in &mut kvm {
            if e.function == 0x4000_0003 {
                e.eax &= !(1 << 2); // no synic
                e.edx = 0;
            }
            if e.function == 0x4000_0004 {
                e.eax &= !(1 << 11); // no sparse masks: no ipi
                e.ebx = 0;
            }
        }
        let hv = HypervLeaves::new(&kvm).expect("leaves");
        assert!(!hv.synic());
        assert!(!hv.offered().contains(&"ipi"));
        assert!(!hv.offered().contains(&"spinlocks"));
        assert!(
            hv.offered().contains(&"stimer"),
            "stimer does not need synic's bit"
        );
        let f = get(hv.entries(), 0x4000_0003);
        assert_eq!(f.eax & (1 << 2), 0);
        assert_eq!(f.edx, 0);
        let r = get(hv.entries(), 0x4000_0004);
        assert_eq!(r.eax & ((1 << 10) | (1 << 11)), 0);
        assert_eq!(r.ebx, 0);
    }

    #[test]
    fn no_hypercalls_or_missing_leaves_are_errors() {
        let mut kvm = kvm_6_1();
        kvm.retain(|e| e.function != 0x4000_0004);
        assert_eq!(
            HypervLeaves::new(&kvm),
            Err(HypervError::MissingLeaf(0x4000_0004))
        );
        let mut kvm = kvm_6_1();
        for e in &mut kvm {
            if e.function == 0x4000_0003 {
                e.eax &= !HYPERCALL;
            }
        }
        assert_eq!(HypervLeaves::new(&kvm), Err(HypervError::NoHypercalls));
        assert_eq!(
            HypervLeaves::new(&[]),
            Err(HypervError::MissingLeaf(0x4000_0003))
        );
    }

    #[test]
    fn apply_replaces_kvms_leaves_and_keeps_the_rest() {
        let hv = HypervLeaves::new(&kvm_6_1()).expect("leaves");
        let vcpu = vec![
            leaf(0, [0xd, 0, 0, 0]),
            leaf(1, [0x906ea, 0, 0, 0]),
            leaf(0x4000_0000, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
            leaf(0x4000_0001, [0x0100_7afb, 0, 0, 0]),
            leaf(0x8000_0000, [0x8000_0008, 0, 0, 0]),
        ];
        let out = hv.apply(&vcpu);
        assert_eq!(out.len(), 3 + hv.entries().len());
        assert_eq!(get(&out, 1).eax, 0x906ea);
        assert_eq!(get(&out, 0x8000_0000).eax, 0x8000_0008);
        assert_eq!(get(&out, 0x4000_0000).ebx, 0x7263_694d, "Micr");
        assert_eq!(&get(&out, 0x4000_0001).eax.to_le_bytes(), b"Hv#1");
    }
}
