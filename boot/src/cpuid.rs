//! Per-vCPU CPUID, derived from `KVM_GET_SUPPORTED_CPUID`.
//!
//! Topology: `vcpus` cores, one thread each, in one package; the vCPU index is its (x2)APIC ID,
//! matching the MADT ([`crate::acpi`]) and KVM's LAPIC ID (the vCPU id the VMM creates it with).
//! Linux cross-checks these, so they must agree.
//!
//! Which leaves Linux reads for topology depends on the vendor:
//! - Intel: leaf 0x1F if present, else 0xB; leaf 1 EBX\[23:16\] and leaf 4 EAX\[31:26\] on old
//!   kernels or without 0xB.
//! - AMD (QEMU's TCG `-cpu max` is `AuthenticAMD`, so the nested test host is AMD): leaf
//!   0x8000_0008 ECX (NC and ApicIdSize), 0x8000_001E and 0xB only with TOPOEXT, leaf 1 with
//!   HTT and CmpLegacy (with CmpLegacy set Linux does not read leaf 1's count as SMT siblings).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 ECX: x2APIC.
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX: TSC deadline timer. KVM emulates it with its in-kernel LAPIC but does not report
/// it in `KVM_GET_SUPPORTED_CPUID` (it is `KVM_CAP_TSC_DEADLINE_TIMER`, always present on x86).
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: HTT, "leaf 1 EBX\[23:16\] is valid" (more than one logical processor).
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 6 EAX: APIC timer always running (ARAT), the one power-management bit kept.
const LEAF6_EAX_ARAT: u32 = 1 << 2;
/// Leaf 0x8000_0001 ECX: CmpLegacy (AMD).
const EXT1_ECX_CMP_LEGACY: u32 = 1 << 1;
/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// CPU vendor from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` or `HygonGenuine` (same topology leaves).
    Amd,
    /// Anything else (no vendor-specific leaves are touched).
    Other,
}

/// Errors building a vCPU's CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The vCPU index is not below the vCPU count.
    #[error("vCPU index {index} is out of range for a VM with {vcpus} vCPUs")]
    InvalidTopology {
        /// The vCPU index.
        index: u8,
        /// The vCPU count.
        vcpus: u8,
    },
    /// A topology subleaf had to be added but the CPUID table is full.
    #[error("cannot add CPUID leaf {function:#x} subleaf {index}: the CPUID table is full")]
    TooManyEntries {
        /// Leaf.
        function: u32,
        /// Subleaf.
        index: u32,
    },
}

/// The vendor KVM reports in leaf 0.
pub fn cpu_vendor(cpuid: &CpuId) -> CpuVendor {
    let Some(leaf0) = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0 && e.index == 0)
    else {
        return CpuVendor::Other;
    };
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &vendor {
        b"GenuineIntel" => CpuVendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

/// The guest physical address space the CPUID `cpuid` describes: its physical address width
/// (leaf 0x8000_0008 EAX\[7:0\], [`crate::layout::DEFAULT_PHYS_BITS`] without the leaf) and
/// whether the AMD HyperTransport hole applies.
pub fn address_space(cpuid: &CpuId) -> crate::layout::AddressSpace {
    let phys_bits = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008 && e.index == 0)
        .map(|e| e.eax.to_le_bytes()[0])
        .filter(|bits| *bits != 0)
        .unwrap_or(crate::layout::DEFAULT_PHYS_BITS);
    crate::layout::AddressSpace {
        phys_bits,
        amd: cpu_vendor(cpuid) == CpuVendor::Amd,
    }
}

/// Turns `KVM_GET_SUPPORTED_CPUID`'s output into vCPU `vcpu_index`'s CPUID in a VM of `vcpus`
/// vCPUs (for `KVM_SET_CPUID2`). Call it on a fresh copy per vCPU.
///
/// - leaf 1: hypervisor, x2APIC and TSC-deadline bits set; EBX APIC ID = `vcpu_index`, logical
///   processor count = `vcpus`; HTT set iff `vcpus > 1`.
/// - leaf 4 (Intel): cores per package and L3 sharing = the package; L1/L2 per core.
/// - leaf 6: power management hidden (only ARAT kept).
/// - leaves 0xB and 0x1F (if reported): SMT level (1 thread) and core level (`vcpus`), EDX =
///   x2APIC ID; missing subleaves 0..=2 are added.
/// - AMD: 0x8000_0001 CmpLegacy iff `vcpus > 1`; 0x8000_0008 ECX NC = `vcpus - 1` and
///   ApicIdSize; 0x8000_001D L3 shared by the package; 0x8000_001E extended APIC ID, core ID,
///   one thread per core, one node.
///
/// Everything else, including KVM's 0x4000_0000 signature and feature leaves, is kept.
pub fn filter_cpuid(cpuid: &mut CpuId, vcpu_index: u8, vcpus: u8) -> Result<(), CpuidError> {
    if vcpu_index >= vcpus {
        return Err(CpuidError::InvalidTopology {
            index: vcpu_index,
            vcpus,
        });
    }
    let topo = Topology {
        apic_id: u32::from(vcpu_index),
        vcpus: u32::from(vcpus),
    };
    let vendor = cpu_vendor(cpuid);

    for leaf in [0xb, 0x1f] {
        if cpuid.as_slice().iter().any(|e| e.function == leaf) {
            for index in 0..=2 {
                ensure_subleaf(cpuid, leaf, index)?;
            }
        }
    }

    for e in cpuid.as_mut_slice() {
        match (e.function, vendor) {
            (0x1, _) => topo.leaf1(e),
            (0x4, CpuVendor::Intel) => topo.leaf4(e),
            (0x6, _) => {
                e.eax &= LEAF6_EAX_ARAT;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            (0xb | 0x1f, _) => topo.extended_topology(e),
            (0x8000_0001, CpuVendor::Amd) => set_bit(&mut e.ecx, EXT1_ECX_CMP_LEGACY, vcpus > 1),
            (0x8000_0008, CpuVendor::Amd) => topo.amd_size_identifiers(e),
            (0x8000_001d, CpuVendor::Amd) => topo.amd_cache(e),
            (0x8000_001e, CpuVendor::Amd) => topo.amd_extended_apic_id(e),
            _ => {}
        }
    }
    Ok(())
}

fn set_bit(reg: &mut u32, bit: u32, on: bool) {
    if on {
        *reg |= bit;
    } else {
        *reg &= !bit;
    }
}

/// Adds an empty `function`/`index` entry if KVM did not report one.
fn ensure_subleaf(cpuid: &mut CpuId, function: u32, index: u32) -> Result<(), CpuidError> {
    if cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == function && e.index == index)
    {
        return Ok(());
    }
    cpuid
        .push(kvm_cpuid_entry2 {
            function,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            ..Default::default()
        })
        .map_err(|_| CpuidError::TooManyEntries { function, index })
}

/// One package of `vcpus` single-thread cores; this vCPU's APIC ID.
struct Topology {
    apic_id: u32,
    vcpus: u32,
}

impl Topology {
    /// APIC ID bits that number the cores in the package.
    fn core_bits(&self) -> u32 {
        self.vcpus.next_power_of_two().trailing_zeros()
    }

    /// Largest core ID the package's APIC ID bits can hold: `2^core_bits - 1`.
    fn max_core_id(&self) -> u32 {
        (1 << self.core_bits()) - 1
    }

    fn leaf1(&self, e: &mut kvm_cpuid_entry2) {
        e.ebx = (e.ebx & 0xffff) | ((self.vcpus & 0xff) << 16) | ((self.apic_id & 0xff) << 24);
        e.ecx |= LEAF1_ECX_HYPERVISOR | LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE;
        set_bit(&mut e.edx, LEAF1_EDX_HTT, self.vcpus > 1);
    }

    /// Intel deterministic cache parameters: EAX\[31:26\] cores per package - 1, EAX\[25:14\]
    /// logical processors sharing the cache - 1.
    fn leaf4(&self, e: &mut kvm_cpuid_entry2) {
        if e.eax & 0x1f == 0 {
            return; // no more caches
        }
        let level = (e.eax >> 5) & 0x7;
        let sharing = if level >= 3 { self.max_core_id() } else { 0 };
        e.eax &= !((0x3f << 26) | (0xfff << 14));
        e.eax |= (self.max_core_id().min(0x3f) << 26) | (sharing.min(0xfff) << 14);
    }

    /// Leaf 0xB / 0x1F subleaf `e.index`.
    fn extended_topology(&self, e: &mut kvm_cpuid_entry2) {
        let (shift, count, level_type) = match e.index {
            0 => (0, 1, LEVEL_TYPE_SMT),
            1 => (self.core_bits(), self.vcpus, LEVEL_TYPE_CORE),
            _ => (0, 0, 0),
        };
        e.eax = shift;
        e.ebx = count;
        e.ecx = (level_type << 8) | (e.index & 0xff);
        e.edx = self.apic_id;
        e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    }

    /// AMD 0x8000_0008 ECX: \[7:0\] NC = threads in package - 1, \[15:12\] ApicIdSize.
    fn amd_size_identifiers(&self, e: &mut kvm_cpuid_entry2) {
        e.ecx &= !0xf0ff;
        e.ecx |= (self.core_bits() << 12) | ((self.vcpus - 1) & 0xff);
    }

    /// AMD cache properties: EAX\[25:14\] logical processors sharing the cache - 1.
    fn amd_cache(&self, e: &mut kvm_cpuid_entry2) {
        if e.eax & 0x1f == 0 {
            return;
        }
        let level = (e.eax >> 5) & 0x7;
        let sharing = if level >= 3 { self.vcpus - 1 } else { 0 };
        e.eax = (e.eax & !(0xfff << 14)) | (sharing.min(0xfff) << 14);
    }

    /// AMD 0x8000_001E: EAX extended APIC ID; EBX \[7:0\] core ID, \[15:8\] threads per core - 1;
    /// ECX \[7:0\] node ID, \[10:8\] nodes per processor - 1.
    fn amd_extended_apic_id(&self, e: &mut kvm_cpuid_entry2) {
        e.eax = self.apic_id;
        e.ebx = (e.ebx & !0xffff) | (self.apic_id & 0xff);
        e.ecx &= !0x7ff;
        e.edx = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: 0,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn vendor_leaf(vendor: &[u8; 12], max_leaf: u32) -> kvm_cpuid_entry2 {
        let word = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().expect("4 bytes"));
        leaf(0, 0, [max_leaf, word(0), word(8), word(4)])
    }

    /// What KVM might report on an Intel host: leaf 1 with a host APIC ID, leaf 4 caches,
    /// leaf 6 with turbo, 0xB with SMT and core levels of the host, KVM signature leaf.
    fn intel_supported() -> CpuId {
        CpuId::from_entries(&[
            vendor_leaf(b"GenuineIntel", 0x1f),
            leaf(1, 0, [0x906ea, 0x0710_0800, 0x7ffa_fbbf, 0xbfeb_fbff]),
            leaf(4, 0, [0x1c00_4121, 0, 0, 0]),
            leaf(4, 1, [0x1c00_4122, 0, 0, 0]),
            leaf(4, 2, [0x1c00_4143, 0, 0, 0]),
            leaf(4, 3, [0x1c03_c163, 0, 0, 0]),
            leaf(4, 4, [0, 0, 0, 0]),
            leaf(6, 0, [0x77, 0x2, 0x9, 0]),
            leaf(0xb, 0, [1, 2, 0x100, 7]),
            leaf(0xb, 1, [4, 12, 0x201, 7]),
            leaf(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
        ])
        .expect("CpuId")
    }

    /// What KVM on the nested test host (QEMU TCG `-cpu max`, AuthenticAMD) might report.
    fn amd_supported() -> CpuId {
        CpuId::from_entries(&[
            vendor_leaf(b"AuthenticAMD", 0xd),
            leaf(1, 0, [0xf06b1, 0x0000_0800, 0x0000_2209, 0x0783_fbff]),
            leaf(6, 0, [0x4, 0, 0, 0]),
            leaf(0x8000_0000, 0, [0x8000_001f, 0, 0, 0]),
            leaf(0x8000_0001, 0, [0, 0, 0x0000_0005, 0x2000_0000]),
            leaf(0x8000_0008, 0, [0x3030, 0, 0x0003_0000, 0]),
            leaf(0x8000_001d, 0, [0x121, 0, 0, 0]),
            leaf(0x8000_001d, 3, [0x163, 0, 0, 0]),
            leaf(0x8000_001e, 0, [9, 0x105, 0x3, 0]),
        ])
        .expect("CpuId")
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
    }

    #[test]
    fn vendors_are_detected() {
        assert_eq!(cpu_vendor(&intel_supported()), CpuVendor::Intel);
        assert_eq!(cpu_vendor(&amd_supported()), CpuVendor::Amd);
    }

    #[test]
    fn address_space_comes_from_leaf_0x8000_0008() {
        // The AMD table reports 0x30 = 48 physical address bits.
        let amd = address_space(&amd_supported());
        assert_eq!(
            amd,
            crate::layout::AddressSpace {
                phys_bits: 48,
                amd: true
            }
        );
        // The Intel table has no leaf 0x8000_0008: the architectural default.
        let intel = address_space(&intel_supported());
        assert_eq!(intel.phys_bits, crate::layout::DEFAULT_PHYS_BITS);
        assert!(!intel.amd);
        assert_eq!(intel.limit(), 64 << 30);
    }

    #[test]
    fn intel_topology_per_vcpu() {
        for vcpus in [1u8, 2, 3, 4] {
            for index in 0..vcpus {
                let mut c = intel_supported();
                filter_cpuid(&mut c, index, vcpus).expect("filter");

                let l1 = get(&c, 1, 0);
                assert_eq!(l1.ebx >> 24, u32::from(index), "APIC ID");
                assert_eq!((l1.ebx >> 16) & 0xff, u32::from(vcpus), "logical count");
                assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
                assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
                assert_ne!(l1.ecx & LEAF1_ECX_X2APIC, 0);
                assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
                assert_eq!(l1.edx & LEAF1_EDX_HTT != 0, vcpus > 1);

                let smt = get(&c, 0xb, 0);
                assert_eq!([smt.eax, smt.ebx, smt.ecx], [0, 1, 0x100]);
                let core = get(&c, 0xb, 1);
                let bits = u32::from(vcpus).next_power_of_two().trailing_zeros();
                assert_eq!(
                    [core.eax, core.ebx, core.ecx],
                    [bits, u32::from(vcpus), 0x201]
                );
                let end = get(&c, 0xb, 2);
                assert_eq!((end.ecx >> 8) & 0xff, 0, "invalid level ends the list");
                for e in [smt, core, end] {
                    assert_eq!(e.edx, u32::from(index), "x2APIC ID");
                    assert_ne!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
                }
                // 0x1F was not reported: not invented.
                assert!(!c.as_slice().iter().any(|e| e.function == 0x1f));

                let max_id = (1u32 << bits) - 1;
                let l1d = get(&c, 4, 0);
                assert_eq!(l1d.eax >> 26, max_id, "cores per package - 1");
                assert_eq!((l1d.eax >> 14) & 0xfff, 0, "L1 per core");
                assert_eq!(l1d.eax & 0x3fff, 0x0121, "cache type/level kept");
                let l3 = get(&c, 4, 3);
                assert_eq!((l3.eax >> 14) & 0xfff, max_id, "L3 per package");
                assert_eq!(get(&c, 4, 4).eax, 0);

                let l6 = get(&c, 6, 0);
                assert_eq!([l6.eax, l6.ebx, l6.ecx, l6.edx], [LEAF6_EAX_ARAT, 0, 0, 0]);
                assert_eq!(get(&c, 0x4000_0000, 0).ebx, 0x4b4d_564b, "KVMKVMKVM kept");
            }
        }
    }

    #[test]
    fn amd_topology_per_vcpu() {
        for vcpus in [1u8, 2, 4, 5] {
            for index in 0..vcpus {
                let mut c = amd_supported();
                filter_cpuid(&mut c, index, vcpus).expect("filter");

                let l1 = get(&c, 1, 0);
                assert_eq!(l1.ebx >> 24, u32::from(index));
                assert_eq!((l1.ebx >> 16) & 0xff, u32::from(vcpus));
                assert_ne!(l1.ecx & LEAF1_ECX_X2APIC, 0);
                assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
                assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);

                let ext1 = get(&c, 0x8000_0001, 0);
                assert_eq!(ext1.ecx & EXT1_ECX_CMP_LEGACY != 0, vcpus > 1);
                assert_eq!(ext1.ecx & !EXT1_ECX_CMP_LEGACY, 0x5 & !EXT1_ECX_CMP_LEGACY);

                let sizes = get(&c, 0x8000_0008, 0);
                assert_eq!(sizes.ecx & 0xff, u32::from(vcpus) - 1, "NC");
                let bits = u32::from(vcpus).next_power_of_two().trailing_zeros();
                assert_eq!((sizes.ecx >> 12) & 0xf, bits, "ApicIdSize");
                assert_eq!(sizes.ecx >> 16, 0x3, "PerfTscSize kept");

                let ext_apic = get(&c, 0x8000_001e, 0);
                assert_eq!(ext_apic.eax, u32::from(index));
                assert_eq!(ext_apic.ebx & 0xffff, u32::from(index), "core id, 1 thread");
                assert_eq!(ext_apic.ecx & 0x7ff, 0, "node 0 of 1");

                assert_eq!((get(&c, 0x8000_001d, 0).eax >> 14) & 0xfff, 0);
                assert_eq!(
                    (get(&c, 0x8000_001d, 3).eax >> 14) & 0xfff,
                    u32::from(vcpus) - 1
                );
                // Intel-only leaf 4 and absent 0xB are left alone.
                assert!(!c.as_slice().iter().any(|e| e.function == 0xb));
            }
        }
    }

    #[test]
    fn missing_topology_subleaves_are_added() {
        let mut c = CpuId::from_entries(&[
            vendor_leaf(b"GenuineIntel", 0x1f),
            leaf(0xb, 0, [0, 0, 0, 0]),
            leaf(0x1f, 0, [0, 0, 0, 0]),
        ])
        .expect("CpuId");
        filter_cpuid(&mut c, 1, 2).expect("filter");
        for function in [0xb, 0x1f] {
            assert_eq!(get(&c, function, 1).ebx, 2);
            assert_eq!(get(&c, function, 2).edx, 1);
        }
    }

    #[test]
    fn index_out_of_range_is_refused() {
        let mut c = intel_supported();
        assert!(matches!(
            filter_cpuid(&mut c, 2, 2),
            Err(CpuidError::InvalidTopology { index: 2, vcpus: 2 })
        ));
        assert!(filter_cpuid(&mut c, 0, 0).is_err());
    }
}
