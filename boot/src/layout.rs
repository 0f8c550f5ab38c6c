//! The x86_64 guest physical memory map: every fixed guest address ghost-vmm uses.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BIOS data area (RAM)
//! 0x0000_0500  GDT                     (BOOT_GDT_START)
//! 0x0000_0520  IDT                     (BOOT_IDT_START)
//! 0x0000_7000  boot_params "zero page" (ZERO_PAGE_START)
//! 0x0000_8ff0  initial stack top       (BOOT_STACK_POINTER)
//! 0x0000_9000  PML4, PDPT, 4 x PD      (PML4_START .. PD_START + 4 pages): identity map of 4 GiB
//! 0x0002_0000  kernel command line     (CMDLINE_START, CMDLINE_MAX_SIZE)
//! 0x0009_fc00  EBDA start: reserved up to 1 MiB
//! 0x000e_0000  ACPI RSDP and tables    (ACPI_START .. ACPI_END)
//! 0x000f_0000  SMBIOS entry point      (SMBIOS_START), its tables from SMBIOS_TABLES_START
//! 0x000f_fff0  reset entry stub        (BIOS_RESET_ENTRY): writes the ACPI reset register
//! 0x0010_0000  kernel (bzImage protected-mode part) (HIMEM_START)
//! ...          RAM
//! 0xc000_0000  32-bit MMIO hole        (MMIO_HOLE_START .. 4 GiB), never RAM:
//!              0xc000_0000 PCI 32-bit MMIO window (PCI_MMIO32_START, PCI_MMIO32_SIZE)
//!              0xe000_0000 PCI ECAM             (PCI_ECAM_START, PCI_ECAM_SIZE)
//!              0xfec0_0000 IOAPIC               (IOAPIC_START)
//!              0xfee0_0000 LAPIC                (LAPIC_START)
//! 0x1_0000_0000  RAM above 4 GiB       (RAM_HIGH_START)
//! ```

/// Start of the GDT the vCPUs boot with.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) IDT the vCPUs boot with.
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux boot protocol's `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories (2 MiB pages) of the boot identity map (4 GiB mapped).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line accepted (including the NUL).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the Extended BIOS Data Area; RAM ends here in the low 1 MiB.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables region (the RSDP first, where a legacy scan finds it).
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the ACPI tables region.
pub const ACPI_END: u64 = 0xf_0000;
/// The legacy BIOS area: ghost-vmm has no BIOS, but Linux jumps to its reset entry point
/// (F000:FFF0, physical [`BIOS_RESET_ENTRY`]) when it reboots through the "BIOS" method, which
/// it picks on hardware-reduced ACPI without EFI. See `crate::reset_stub`.
pub const BIOS_AREA_START: u64 = 0xf_0000;
/// The SMBIOS 3.0 entry point of a direct kernel boot: in the legacy BIOS area, 16-byte
/// aligned, where Linux's `dmi_scan` looks for `_SM3_` when there is no EFI.
pub const SMBIOS_START: u64 = BIOS_AREA_START;
/// The SMBIOS structure table of a direct kernel boot, after its entry point; it must end at
/// or before [`BIOS_RESET_ENTRY`].
pub const SMBIOS_TABLES_START: u64 = SMBIOS_START + 0x20;
/// Physical address of the real-mode reset entry point F000:FFF0.
pub const BIOS_RESET_ENTRY: u64 = 0xf_fff0;
/// Where the protected-mode kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: guest RAM is never mapped in `[MMIO_HOLE_START, 4 GiB)`.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// 32-bit PCI MMIO window (non-prefetchable BARs).
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI Express enhanced configuration access mechanism (ECAM), segment 0.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// ECAM size: 256 buses x 32 devices x 8 functions x 4 KiB.
pub const PCI_ECAM_SIZE: u64 = 0x1000_0000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Guest RAM beyond what fits below the hole continues here.
pub const RAM_HIGH_START: u64 = 0x1_0000_0000;

/// I/O port of the ghost-vmm ACPI power device: the FADT's sleep control, sleep status and
/// reset registers all point here (hardware-reduced ACPI).
pub const ACPI_POWER_PORT: u16 = 0x600;
/// Value written to [`ACPI_POWER_PORT`] through the FADT reset register to reboot.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// SLP_TYP the DSDT's `_S5_` object tells the guest to use for soft-off.
pub const ACPI_S5_SLP_TYP: u8 = 5;
/// The boot timer's I/O port: the guest writes a milestone byte, the VMM logs the time since
/// its start (free on QEMU's q35 and microvm as well, so one guest program serves both).
pub const BOOT_TIMER_PORT: u16 = 0x440;
/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 interrupt line (GSI).
pub const COM1_GSI: u32 = 4;
/// The CMOS RTC's index port (MC146818: index at 0x70, data at 0x71).
pub const CMOS_PORT: u16 = 0x70;
/// The CMOS RTC's ports: index and data.
pub const CMOS_PORT_LEN: u64 = 2;
/// The CMOS index of the RTC's century register (the FADT's `CENTURY` names it).
pub const CMOS_CENTURY_INDEX: u8 = 0x32;
/// The CMOS RTC's interrupt line (ISA IRQ 8, edge, active high; GSI 8 on the IOAPIC).
pub const RTC_GSI: u32 = 8;
/// The ACPI Generic Event Device's event register (one MMIO page in the hole, clear of the
/// IOAPIC and LAPIC): the guest's `_EVT` reads which events are pending, and the read clears
/// them.
pub const GED_MMIO_START: u64 = 0xfeb0_0000;
/// Size of the GED's MMIO region.
pub const GED_MMIO_SIZE: u64 = 0x1000;
/// Width of the GED's event register, in bytes (a DWORD at [`GED_MMIO_START`]).
pub const GED_EVENT_REGISTER_LEN: u64 = 4;
/// Bit of the GED's event register that means "the power button was pressed" (the DSDT's
/// `_EVT` notifies `\_SB_.PWRB` for it).
pub const GED_EVENT_POWER_BUTTON: u32 = 1 << 0;
/// The GED's interrupt line: an IOAPIC pin clear of the ISA IRQs (and so of the legacy PIC)
/// and of the PCI INTx pins, edge-triggered, active high.
pub const GED_GSI: u32 = 20;

/// First of the four IOAPIC pins that PCI INTx lines are wired to (level, active low, as on
/// PC chipsets).
pub const PCI_INTX_GSI_BASE: u32 = 16;

/// The GSI that INTx pin `pin` (1 = INTA# .. 4 = INTD#) of slot `slot` is wired to: the usual
/// swizzle over four lines, so neighbouring slots spread over all four. The DSDT's `_PRT`
/// says the same to the guest.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSI_BASE + (u32::from(slot) + u32::from(pin.saturating_sub(1))) % 4
}

// The fixed areas must not overlap: checked at build time.
const _: () = {
    // GDT (4 entries), IDT (1 entry), zero page, stack, page tables, command line, EBDA, ACPI.
    assert!(BOOT_GDT_START + 4 * 8 <= BOOT_IDT_START);
    assert!(BOOT_IDT_START + 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PML4_START + 0x1000 <= PDPTE_START);
    assert!(PDPTE_START + 0x1000 <= PDE_START);
    assert!(PDE_START + 4 * 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(EBDA_START <= ACPI_START && ACPI_END <= BIOS_AREA_START);
    assert!(BIOS_AREA_START <= BIOS_RESET_ENTRY && BIOS_RESET_ENTRY + 16 <= HIMEM_START);
    assert!(ACPI_END <= SMBIOS_START && SMBIOS_START & 0xf == 0);
    assert!(SMBIOS_START + 24 <= SMBIOS_TABLES_START && SMBIOS_TABLES_START < BIOS_RESET_ENTRY);
    assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
    assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
    assert!(MMIO_HOLE_START <= PCI_MMIO32_START && MMIO_HOLE_END == RAM_HIGH_START);
};

/// Guest RAM regions for `size` bytes of RAM, as `(guest address, length)` pairs to map.
///
/// RAM fills `[0, MMIO_HOLE_START)` first; whatever does not fit continues at
/// [`RAM_HIGH_START`] (4 GiB), so `[MMIO_HOLE_START, 4 GiB)` is never RAM. `size == 0` gives no
/// regions. The e820 map ([`crate::bootparams::e820_map`]) describes the same split.
pub fn ram_regions(size: u64) -> Vec<(vm_memory::GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let high = size - low;
    let mut regions = Vec::with_capacity(2);
    if low > 0 {
        regions.push((vm_memory::GuestAddress(0), host_usize(low)));
    }
    if high > 0 {
        regions.push((vm_memory::GuestAddress(RAM_HIGH_START), host_usize(high)));
    }
    regions
}

/// Alignment of the 64-bit PCI MMIO window's start.
pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;
/// Preferred size of the 64-bit PCI MMIO window: room for large prefetchable BARs (GPUs).
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// Start of the range AMD CPUs reserve for HyperTransport, `[0xfd_0000_0000, 1 TiB)`: the host
/// IOMMU cannot map DMA there and the range is not decoded as memory, so an AMD guest gets
/// neither RAM nor BARs in it.
pub const AMD_HT_HOLE_START: u64 = 0xfd_0000_0000;
/// End (exclusive) of AMD's HyperTransport range.
pub const AMD_HT_HOLE_END: u64 = 1 << 40;
/// Physical address width a CPU has when it does not report one (CPUID 0x8000_0008 missing).
pub const DEFAULT_PHYS_BITS: u8 = 36;

/// What bounds the guest physical address space: the guest CPU's physical address width
/// (CPUID 0x8000_0008 EAX\[7:0\], as KVM reports it) and, on AMD, the HyperTransport hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSpace {
    /// Physical address bits the guest's CPU reports.
    pub phys_bits: u8,
    /// Whether the guest CPU is AMD's (the HyperTransport hole applies).
    pub amd: bool,
}

impl AddressSpace {
    /// The first address beyond the guest's physical address space.
    pub fn limit(&self) -> u64 {
        1u64.checked_shl(u32::from(self.phys_bits))
            .unwrap_or(u64::MAX)
    }
}

/// The guest physical address space cannot hold what the VM file asks for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressSpaceError {
    /// Guest RAM ends beyond the CPU's physical address width.
    #[error(
        "memory.size: guest RAM would end at {ram_end:#x}, beyond the {phys_bits}-bit physical \
         address space ({limit_gib} GiB) this host's CPU gives guests"
    )]
    RamBeyondPhysBits {
        /// First address after guest RAM.
        ram_end: u64,
        /// The CPU's physical address bits.
        phys_bits: u8,
        /// `2^phys_bits` in GiB.
        limit_gib: u64,
    },
    /// Guest RAM would reach into AMD's HyperTransport hole.
    #[error(
        "memory.size: guest RAM would end at {ram_end:#x}, inside the range AMD CPUs reserve \
         for HyperTransport ({AMD_HT_HOLE_START:#x}..1 TiB); give the VM at most 1011 GiB"
    )]
    RamInHyperTransportHole {
        /// First address after guest RAM.
        ram_end: u64,
    },
    /// The passed-through devices' 64-bit BARs do not fit above RAM.
    #[error(
        "vfio: the passed-through devices' 64-bit BARs ({bars_mib} MiB in all) do not fit \
         between guest RAM (ending at {ram_end:#x}) and the {phys_bits}-bit physical address \
         limit; give the VM less memory or pass fewer devices through"
    )]
    BarsDoNotFit {
        /// Sum of the 64-bit BAR sizes, in MiB.
        bars_mib: u64,
        /// First address after guest RAM.
        ram_end: u64,
        /// The CPU's physical address bits.
        phys_bits: u8,
    },
}

/// The first address after guest RAM of `ram_size` bytes: the end of the last of its
/// [`ram_regions`].
pub fn ram_end(ram_size: u64) -> u64 {
    ram_regions(ram_size)
        .last()
        .map_or(0, |&(start, len)| start.0.saturating_add(len as u64))
}

/// Checks that guest RAM of `ram_size` bytes fits the guest physical address space `space`.
pub fn check_ram(ram_size: u64, space: AddressSpace) -> Result<(), AddressSpaceError> {
    let end = ram_end(ram_size);
    if end > space.limit() {
        return Err(AddressSpaceError::RamBeyondPhysBits {
            ram_end: end,
            phys_bits: space.phys_bits,
            limit_gib: space.limit() >> 30,
        });
    }
    if space.amd && end > AMD_HT_HOLE_START {
        return Err(AddressSpaceError::RamInHyperTransportHole { ram_end: end });
    }
    Ok(())
}

/// The 64-bit PCI MMIO window, `(start, size)`, for a guest with `ram_size` bytes of RAM whose
/// devices have 64-bit BARs of `bars` (sizes, powers of two), in the address space `space`.
///
/// The window needs twice the BARs' total (so any placement order fits) and is
/// [`PCI_MMIO64_SIZE`] when there is room. It starts at the first boundary above RAM (and
/// above 4 GiB) aligned to 1 GiB and to the largest BAR, so a 32 GiB GPU BAR is naturally
/// aligned; it ends below the CPU's physical address limit (a guest cannot reach a BAR beyond
/// it) and, on AMD, below the HyperTransport hole, or starts above it when it does not fit
/// below.
pub fn pci_mmio64_window(
    ram_size: u64,
    bars: &[u64],
    space: AddressSpace,
) -> Result<(u64, u64), AddressSpaceError> {
    check_ram(ram_size, space)?;
    let ram_end = ram_end(ram_size).max(RAM_HIGH_START);
    let largest = bars.iter().copied().max().unwrap_or(0);
    let align = largest.max(PCI_MMIO64_ALIGN).next_power_of_two();
    let total: u64 = bars.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let needed = total
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63);
    let wanted = needed.max(PCI_MMIO64_SIZE);
    let limit = space.limit();

    // Ranges `[from, to)` to place the window in, in order of preference.
    let ranges: &[(u64, u64)] = if space.amd {
        &[
            (ram_end, limit.min(AMD_HT_HOLE_START)),
            (ram_end.max(AMD_HT_HOLE_END), limit),
        ]
    } else {
        &[(ram_end, limit)]
    };
    // The first range the preferred size fits in; else the roomiest one that holds the BARs
    // (some room is needed even without BARs: virtio devices place theirs here too).
    let candidates: Vec<(u64, u64)> = ranges
        .iter()
        .filter_map(|&(from, to)| {
            let start = from.checked_next_multiple_of(align)?;
            Some((start, to.saturating_sub(start)))
        })
        .collect();
    if let Some(&(start, _)) = candidates.iter().find(|(_, room)| *room >= wanted) {
        return Ok((start, wanted));
    }
    if let Some(&(start, room)) = candidates
        .iter()
        .filter(|(_, room)| *room >= needed.max(PCI_MMIO64_ALIGN))
        .max_by_key(|(_, room)| *room)
    {
        return Ok((start, room));
    }
    Err(AddressSpaceError::BarsDoNotFit {
        bars_mib: total >> 20,
        ram_end,
        phys_bits: space.phys_bits,
    })
}

/// `u64` to `usize`: lossless, since the crate only builds for x86_64 (see `lib.rs`).
pub(crate) fn host_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// A host like most: 48 physical address bits, Intel.
    const WIDE: AddressSpace = AddressSpace {
        phys_bits: 48,
        amd: false,
    };

    /// A CPU with the architectural minimum of 36 bits (64 GiB).
    const NARROW: AddressSpace = AddressSpace {
        phys_bits: 36,
        amd: false,
    };

    fn window(ram: u64, bars: &[u64], space: AddressSpace) -> (u64, u64) {
        pci_mmio64_window(ram, bars, space).expect("window")
    }

    #[test]
    fn mmio64_window_sits_above_ram() {
        assert_eq!(window(512 * MIB, &[], WIDE), (4 * GIB, 64 * GIB));
        assert_eq!(window(6 * GIB, &[], WIDE), (7 * GIB, 64 * GIB));
        assert_eq!(window(6 * GIB + 1, &[], WIDE), (8 * GIB, 64 * GIB));
    }

    #[test]
    fn mmio64_window_grows_and_aligns_for_big_bars() {
        // A 32 GiB GPU BAR and a 256 MiB one: 64 GiB is room enough, aligned to 32 GiB.
        assert_eq!(
            window(16 * GIB, &[32 * GIB, 256 * MIB], WIDE),
            (32 * GIB, 128 * GIB)
        );
        // Two 64 GiB BARs need a 256 GiB window, aligned to 64 GiB.
        assert_eq!(
            window(4 * GIB, &[64 * GIB, 64 * GIB], WIDE),
            (64 * GIB, 256 * GIB)
        );
        assert_eq!(window(GIB, &[16 << 10], WIDE), (4 * GIB, 64 * GIB));
    }

    #[test]
    fn mmio64_window_shrinks_to_the_physical_address_limit() {
        // 36 bits (64 GiB) and 48 GiB of RAM (ending at 49 GiB): 15 GiB are left.
        assert_eq!(window(48 * GIB, &[], NARROW), (49 * GIB, 15 * GIB));
        // An 8 GiB BAR needs 16 GiB: it does not fit, and the error says why.
        let err = pci_mmio64_window(48 * GIB, &[8 * GIB], NARROW).unwrap_err();
        assert_eq!(
            err,
            AddressSpaceError::BarsDoNotFit {
                bars_mib: 8 << 10,
                ram_end: 49 * GIB,
                phys_bits: 36
            }
        );
        assert!(err.to_string().starts_with("vfio: "), "{err}");
        // With 8 GiB of RAM the same BAR fits, aligned to 8 GiB.
        assert_eq!(window(8 * GIB, &[8 * GIB], NARROW), (16 * GIB, 48 * GIB));
    }

    #[test]
    fn ram_beyond_the_physical_address_limit_is_refused() {
        let err = check_ram(64 * GIB, NARROW).unwrap_err();
        assert_eq!(
            err,
            AddressSpaceError::RamBeyondPhysBits {
                ram_end: 65 * GIB,
                phys_bits: 36,
                limit_gib: 64
            }
        );
        assert!(err.to_string().starts_with("memory.size: "), "{err}");
        // RAM that fills the space exactly leaves no window: refused, not a zero-size window.
        assert!(pci_mmio64_window(63 * GIB, &[], NARROW).is_err());
        assert_eq!(check_ram(63 * GIB, NARROW), Ok(()));
    }

    #[test]
    fn amd_windows_skip_the_hypertransport_hole() {
        let amd = AddressSpace {
            phys_bits: 48,
            amd: true,
        };
        // Plenty of room below the hole: unchanged.
        assert_eq!(window(16 * GIB, &[], amd), (17 * GIB, 64 * GIB));
        // 1000 GiB of RAM ends at 1001 GiB: the 64 GiB window does not fit below the hole
        // (1012 GiB), so it starts at 1 TiB.
        assert_eq!(window(1000 * GIB, &[], amd), (1024 * GIB, 64 * GIB));
        // A 40-bit AMD CPU has nothing above the hole: what is left below it is used.
        let amd40 = AddressSpace {
            phys_bits: 40,
            amd: true,
        };
        assert_eq!(window(1000 * GIB, &[], amd40), (1001 * GIB, 11 * GIB));
        // RAM reaching into the hole is refused.
        assert_eq!(
            check_ram(1012 * GIB, amd),
            Err(AddressSpaceError::RamInHyperTransportHole {
                ram_end: 1013 * GIB
            })
        );
        // One GiB less ends exactly where the hole starts: fine.
        assert_eq!(check_ram(1011 * GIB, amd), Ok(()));
        // The RAM refused on AMD is fine on Intel.
        assert_eq!(check_ram(1012 * GIB, WIDE), Ok(()));
    }

    #[test]
    fn small_guest_is_one_low_region() {
        assert_eq!(ram_regions(512 * MIB), vec![(GuestAddress(0), 512 << 20)]);
        assert!(ram_regions(0).is_empty());
    }

    #[test]
    fn exactly_the_low_part_has_no_high_region() {
        assert_eq!(
            ram_regions(MMIO_HOLE_START),
            vec![(GuestAddress(0), 0xc000_0000)]
        );
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let r = ram_regions(6 * GIB);
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), 3 << 30),
                (GuestAddress(RAM_HIGH_START), 3 << 30)
            ]
        );
    }
}
