//! The vCPU state at the kernel's 64-bit entry point, as plain KVM structures for the VMM to
//! apply (`KVM_SET_REGS`, `KVM_SET_SREGS`, `KVM_SET_FPU`, `KVM_SET_MSRS`), and the GDT, IDT and
//! identity-mapped page tables that state refers to.
//!
//! The 64-bit boot protocol wants: long mode with paging, an identity map covering the kernel,
//! the zero page and the command line, flat 4 GiB code and data segments, interrupts disabled,
//! and `rsi` = the zero page.
//!
//! The GDT is null, code (0x08), data (0x10), TSS (0x18), as Firecracker and Cloud Hypervisor
//! use. boot.rst names 0x10/0x18 for `__BOOT_CS`/`__BOOT_DS`, but the kernel loads its own GDT
//! before it relies on any selector value, and [`crate::layout`] has room for four entries.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

/// Selector of the 64-bit code segment.
pub const BOOT_CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment (DS, ES, FS, GS, SS).
pub const BOOT_DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const BOOT_TSS_SELECTOR: u16 = 0x18;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set; IF is clear.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Page-table entry bits.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;
const PAGE_SIZE: usize = 0x1000;
const ENTRIES_PER_TABLE: u64 = 512;
/// Page directories of the identity map: 4 x 1 GiB.
const PD_COUNT: u64 = 4;
const HUGE_PAGE_SHIFT: u64 = 21;

/// MSR indices (Intel SDM vol. 4 / Linux `msr-index.h`).
mod msr {
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;

    /// IA32_MISC_ENABLE: fast-string operations enabled.
    pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
    /// MTRRdefType: MTRRs enabled (E), default type write-back.
    pub const MTRR_ENABLE: u64 = 1 << 11;
    pub const MTRR_TYPE_WB: u64 = 6;
}

/// A GDT segment descriptor, in the fields the CPU splits across its 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentDescriptor {
    base: u32,
    /// 20-bit limit (in 4 KiB units when `flags` has G).
    limit: u32,
    /// Access byte: P, DPL, S, type.
    access: u8,
    /// High nibble of byte 6: G, D/B, L, AVL.
    flags: u8,
}

const FLAG_G: u8 = 0x8;
const FLAG_DB: u8 = 0x4;
const FLAG_L: u8 = 0x2;
const FLAG_AVL: u8 = 0x1;

/// The boot GDT: null, 64-bit code, data, TSS (all flat 4 GiB).
const BOOT_GDT: [SegmentDescriptor; 4] = [
    SegmentDescriptor {
        base: 0,
        limit: 0,
        access: 0,
        flags: 0,
    },
    // Present, ring 0, code, execute/read, accessed; 4 KiB granularity, 64-bit.
    SegmentDescriptor {
        base: 0,
        limit: 0xfffff,
        access: 0x9b,
        flags: FLAG_G | FLAG_L,
    },
    // Present, ring 0, data, read/write, accessed; 4 KiB granularity, 32-bit.
    SegmentDescriptor {
        base: 0,
        limit: 0xfffff,
        access: 0x93,
        flags: FLAG_G | FLAG_DB,
    },
    // Present, system, busy 64-bit TSS (what VM entry requires of TR in long mode).
    SegmentDescriptor {
        base: 0,
        limit: 0xfffff,
        access: 0x8b,
        flags: FLAG_G,
    },
];

impl SegmentDescriptor {
    fn encode(self) -> u64 {
        let base = u64::from(self.base);
        let limit = u64::from(self.limit);
        (limit & 0xffff)
            | ((base & 0x00ff_ffff) << 16)
            | (u64::from(self.access) << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (u64::from(self.flags & 0xf) << 52)
            | (((base >> 24) & 0xff) << 56)
    }

    /// Inverse of [`Self::encode`] (tests check the GDT written to memory with it).
    #[cfg(test)]
    fn decode(raw: u64) -> Self {
        let field = |shift: u64, mask: u64| (raw >> shift) & mask;
        let base = field(16, 0x00ff_ffff) | (field(56, 0xff) << 24);
        let limit = field(0, 0xffff) | (field(48, 0xf) << 16);
        Self {
            base: u32::try_from(base).unwrap_or(u32::MAX),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            access: u8::try_from(field(40, 0xff)).unwrap_or(u8::MAX),
            flags: u8::try_from(field(52, 0xf)).unwrap_or(u8::MAX),
        }
    }

    /// The segment register contents KVM expects (limit in bytes, attributes split out).
    fn to_kvm_segment(self, selector: u16) -> kvm_segment {
        let bit = |v: u8, mask: u8| u8::from(v & mask != 0);
        let present = self.access >> 7;
        let g = bit(self.flags, FLAG_G);
        kvm_segment {
            base: u64::from(self.base),
            limit: if g == 1 {
                (self.limit << 12) | 0xfff
            } else {
                self.limit
            },
            selector,
            type_: self.access & 0xf,
            present,
            dpl: (self.access >> 5) & 0x3,
            db: bit(self.flags, FLAG_DB),
            s: (self.access >> 4) & 0x1,
            l: bit(self.flags, FLAG_L),
            g,
            avl: bit(self.flags, FLAG_AVL),
            unusable: u8::from(present == 0),
            padding: 0,
        }
    }
}

/// Errors writing the boot GDT and page tables.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// Writing into guest memory failed.
    #[error("cannot write the boot {what} into guest memory")]
    GuestMemory {
        /// "GDT", "IDT" or "page tables".
        what: &'static str,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Writes the boot GDT at [`BOOT_GDT_START`], a zero IDT entry at [`BOOT_IDT_START`], and the
/// identity map of the first 4 GiB with 2 MiB pages (PML4 at [`PML4_START`], PDPT at
/// [`PDPTE_START`], four page directories from [`PDE_START`]). Once per VM, before any vCPU runs.
pub fn write_gdt_and_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<(), CpuError> {
    let err = |what| move |source| CpuError::GuestMemory { what, source };

    let gdt: Vec<u8> = BOOT_GDT
        .iter()
        .flat_map(|d| d.encode().to_le_bytes())
        .collect();
    mem.write_slice(&gdt, GuestAddress(BOOT_GDT_START))
        .map_err(err("GDT"))?;
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(err("IDT"))?;

    let mut pml4 = vec![0u8; PAGE_SIZE];
    pml4[..8].copy_from_slice(&(PDPTE_START | PTE_PRESENT | PTE_WRITABLE).to_le_bytes());
    let mut pdpt = vec![0u8; PAGE_SIZE];
    for (i, slot) in pdpt.chunks_exact_mut(8).take(4).enumerate() {
        let pd = PDE_START + i as u64 * PAGE_SIZE as u64;
        slot.copy_from_slice(&(pd | PTE_PRESENT | PTE_WRITABLE).to_le_bytes());
    }
    let pds: Vec<u8> = (0..PD_COUNT * ENTRIES_PER_TABLE)
        .flat_map(|i| {
            ((i << HUGE_PAGE_SHIFT) | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE).to_le_bytes()
        })
        .collect();
    mem.write_slice(&pml4, GuestAddress(PML4_START))
        .and_then(|()| mem.write_slice(&pdpt, GuestAddress(PDPTE_START)))
        .and_then(|()| mem.write_slice(&pds, GuestAddress(PDE_START)))
        .map_err(err("page tables"))
}

/// General registers at the 64-bit entry: `rip` = `entry`, `rsi` = the zero page, the boot
/// stack, and only the reserved RFLAGS bit set (interrupts off).
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rip: entry.0,
        rsi: ZERO_PAGE_START,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// Special registers for 64-bit long mode on the boot GDT and page tables, starting from the
/// vCPU's current `base` (`KVM_GET_SREGS`; its APIC base and LDT are kept).
///
/// CR0 = PE | ET | NE | PG (caches enabled: the reset value's CD and NW are dropped),
/// CR4 = PAE, EFER = LME | LMA, CR3 = [`PML4_START`], CS = 64-bit code, DS/ES/FS/GS/SS = data,
/// TR = the TSS, GDTR/IDTR = the boot tables.
pub fn boot_sregs(base: kvm_sregs) -> kvm_sregs {
    let code = BOOT_GDT[1].to_kvm_segment(BOOT_CODE_SELECTOR);
    let data = BOOT_GDT[2].to_kvm_segment(BOOT_DATA_SELECTOR);
    let tss = BOOT_GDT[3].to_kvm_segment(BOOT_TSS_SELECTOR);
    let mut sregs = base;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = u16::try_from(BOOT_GDT.len() * 8 - 1).unwrap_or(u16::MAX);
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = u16::try_from(std::mem::size_of::<u64>() - 1).unwrap_or(u16::MAX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr2 = 0;
    sregs.cr3 = PML4_START;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// x87/SSE state at entry: FCW 0x37f (the FNINIT value), MXCSR 0x1f80 (all exceptions masked).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs at entry: SYSENTER and SYSCALL MSRs, KERNEL_GS_BASE and the TSC zeroed, fast strings on,
/// MTRRs enabled with write-back as the default memory type.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(msr::IA32_SYSENTER_CS, 0),
        entry(msr::IA32_SYSENTER_ESP, 0),
        entry(msr::IA32_SYSENTER_EIP, 0),
        entry(msr::STAR, 0),
        entry(msr::CSTAR, 0),
        entry(msr::KERNEL_GS_BASE, 0),
        entry(msr::SYSCALL_MASK, 0),
        entry(msr::LSTAR, 0),
        entry(msr::IA32_TSC, 0),
        entry(msr::IA32_MISC_ENABLE, msr::MISC_ENABLE_FAST_STRING),
        entry(msr::MTRR_DEF_TYPE, msr::MTRR_ENABLE | msr::MTRR_TYPE_WB),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{guest_memory, read_bytes};
    use vm_memory::GuestMemoryMmap;

    const MIB: u64 = 1 << 20;

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).expect("read")
    }

    /// Walks the boot page tables for `va` (2 MiB pages) and returns the physical address.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> Option<u64> {
        let idx = |shift: u64| (va >> shift) & 0x1ff;
        let pml4e = read_u64(mem, PML4_START + idx(39) * 8);
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = read_u64(mem, (pml4e & !0xfff) + idx(30) * 8);
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        let pde = read_u64(mem, (pdpte & !0xfff) + idx(21) * 8);
        if pde & PTE_PRESENT == 0 || pde & PTE_PAGE_SIZE == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn page_tables_identity_map_4_gib() {
        let mem = guest_memory(64 * MIB);
        write_gdt_and_page_tables(&mem).expect("write");
        for va in [
            0x0,
            0x1234,
            0x20_0000,
            0x100_0000,
            0xc000_0000,
            0xffe0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&mem, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, 0x1_0000_0000), None, "nothing above 4 GiB");
        assert_eq!(read_u64(&mem, PML4_START) & 0x3, 0x3);
    }

    #[test]
    fn gdt_entries_decode() {
        let mem = guest_memory(64 * MIB);
        write_gdt_and_page_tables(&mem).expect("write");
        let raw = read_bytes(&mem, BOOT_GDT_START, 32);
        let entries: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(
            entries,
            [
                0,
                0x00af_9b00_0000_ffff,
                0x00cf_9300_0000_ffff,
                0x008f_8b00_0000_ffff
            ]
        );
        for (raw, d) in entries.iter().zip(BOOT_GDT) {
            assert_eq!(SegmentDescriptor::decode(*raw), d);
        }
        let code = SegmentDescriptor::decode(entries[1]).to_kvm_segment(BOOT_CODE_SELECTOR);
        assert_eq!(
            (code.l, code.db, code.g, code.present, code.s),
            (1, 0, 1, 1, 1)
        );
        assert_eq!((code.type_, code.limit, code.base), (0xb, 0xffff_ffff, 0));
        let tss = SegmentDescriptor::decode(entries[3]).to_kvm_segment(BOOT_TSS_SELECTOR);
        assert_eq!(
            (tss.type_, tss.s, tss.present, tss.unusable),
            (0xb, 0, 1, 0)
        );
        let null = SegmentDescriptor::decode(entries[0]).to_kvm_segment(0);
        assert_eq!(null.unusable, 1);
        assert_eq!(read_u64(&mem, BOOT_IDT_START), 0);
    }

    #[test]
    fn sregs_are_long_mode() {
        let base = kvm_sregs {
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let s = boot_sregs(base);
        assert_eq!(s.cr0, 0x8000_0031);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.efer, 0x500);
        assert_eq!(s.apic_base, 0xfee0_0900, "kept from base");
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
        assert_eq!((s.idt.base, s.idt.limit), (BOOT_IDT_START, 7));
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db), (0x08, 1, 0));
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!((seg.selector, seg.type_, seg.db, seg.g), (0x10, 0x3, 1, 1));
        }
        assert_eq!(s.tr.selector, 0x18);
    }

    #[test]
    fn regs_fpu_msrs() {
        let r = boot_regs(GuestAddress(0x10_0200));
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rbp, r.rflags),
            (0x10_0200, 0x7000, 0x8ff0, 0x8ff0, 2)
        );
        let f = boot_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
        let msrs = boot_msrs();
        let get = |i| msrs.iter().find(|m| m.index == i).map(|m| m.data);
        assert_eq!(get(msr::MTRR_DEF_TYPE), Some(0x806));
        assert_eq!(get(msr::IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(msr::LSTAR), Some(0));
        assert_eq!(get(msr::IA32_TSC), Some(0));
        assert_eq!(msrs.len(), 11);
    }
}
