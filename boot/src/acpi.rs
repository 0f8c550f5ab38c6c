//! ACPI tables: RSDP, XSDT, FADT, MADT, DSDT and MCFG, built with the `acpi_tables` crate and
//! written into `[ACPI_START, ACPI_END)`.
//!
//! The platform is **hardware-reduced ACPI** (FADT flag `HW_REDUCED_ACPI`): no PM1 blocks, no
//! SCI, no GPEs, no legacy PIC. Power off and reset go through one I/O port,
//! [`ACPI_POWER_PORT`]: the FADT's sleep control and status registers and its reset register.
//! What Linux does with the FADT:
//! - `HW_REDUCED_ACPI`: `acpi_reduced_hw_init()` swaps in the null legacy PIC and skips
//!   `timer_init` (no PIT/HPET): the LAPIC timer (TSC deadline) and kvmclock/TSC do the job.
//! - S5 (`poweroff`) is offered only if `\_S5_` exists *and* both sleep control and sleep status
//!   registers are non-zero (`acpi_sleep_state_supported()`); Linux then writes
//!   `SLP_TYP << 2 | SLP_EN (0x20)` to the sleep control register.
//! - `RESET_REG_SUP` + a SystemIO reset register: `acpi_reboot()` writes [`ACPI_RESET_VALUE`]
//!   there. But Linux only tries it when `reboot_type` is ACPI, and on hardware-reduced ACPI
//!   `reboot_init()` switches the default to EFI (`efi_reboot_required()`), even without EFI;
//!   the EFI attempt does nothing and Linux falls back to a real-mode jump to the BIOS reset
//!   vector (F000:FFF0). [`crate::reset_stub`] puts code there that performs the ACPI reset, so
//!   `reboot` works with any `reboot=` setting.
//! - Before entering S5, Linux writes `WAK_STS` (0x80) to the sleep status register (the same
//!   port): the power device must ignore that write.
//! - `IAPC_BOOT_ARCH`: "8042" clear makes the i8042 driver give up (no PS/2 keyboard),
//!   `VGA_NOT_PRESENT` stops VGA probing, `CMOS_RTC_NOT_PRESENT` skips the rtc_cmos platform
//!   device (wall clock comes from kvmclock), `PCIE_ASPM_CONTROLS` disables ASPM.
//!   `MSI_NOT_SUPPORTED` is deliberately clear: Linux would otherwise disable PCI MSI/MSI-X.
//!
//! What `acpi_tables` lacks and is hand-packed here: the MADT Interrupt Source Override and
//! Processor Local x2APIC structures (`zerocopy` structs, below).

use acpi_tables::aml::{
    self, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes};

use crate::layout::{
    ACPI_END, ACPI_POWER_PORT, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_START, COM1_GSI, COM1_PORT,
    IOAPIC_START, LAPIC_START, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};

/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"GHOSTV";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;
/// FADT "hypervisor vendor identity" (ACPI 6.0+).
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"GHOSTVMM";
/// DSDT revision 2 or later means 64-bit AML integers.
const DSDT_REVISION: u8 = 6;
/// Tables start this far into the ACPI area; the RSDP comes first.
const TABLES_OFFSET: u64 = 0x40;
/// Every table starts at a multiple of this.
const TABLE_ALIGN: u64 = 16;
/// Size of an ACPI table header.
const SDT_HEADER_LEN: u32 = 36;

/// FADT `IAPC_BOOT_ARCH` bits (ACPI 6.5, table 5.11).
mod iapc_boot_arch {
    /// VGA not present: do not probe for VGA.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    /// OSPM must not enable PCIe ASPM.
    pub const PCIE_ASPM_CONTROLS: u16 = 1 << 4;
    /// No CMOS RTC at the legacy ports.
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

/// MADT structure types this module packs itself.
const MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const MADT_TYPE_LOCAL_X2APIC: u8 = 9;
/// xAPIC IDs are 8 bits and 0xff is the broadcast ID: larger IDs need x2APIC entries.
const MAX_XAPIC_ID: u32 = 0xfe;
/// MADT Processor Local (x2)APIC flag: enabled.
const LAPIC_ENABLED: u32 = 1;
/// The IOAPIC's ID (KVM's in-kernel IOAPIC resets its ID register to 0).
const IOAPIC_ID: u8 = 0;
/// ISA bus in Interrupt Source Overrides.
const ISA_BUS: u8 = 0;
/// The PIT's ISA IRQ and the IOAPIC input PCs wire it to.
const PIT_ISA_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;
/// MPS INTI flags: conforms to the bus (ISA: edge, active high).
const MPS_INTI_CONFORMS: u16 = 0;

/// MADT Interrupt Source Override (ACPI 6.5 §5.2.12.5), missing from `acpi_tables`.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32,
    flags: U16,
}

impl InterruptSourceOverride {
    fn new(source: u8, gsi: u32, flags: u16) -> Self {
        Self {
            r#type: MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE,
            length: 10,
            bus: ISA_BUS,
            source,
            gsi: gsi.into(),
            flags: flags.into(),
        }
    }
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// MADT Processor Local x2APIC (ACPI 6.5 §5.2.12.12), missing from `acpi_tables`.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct ProcessorLocalX2Apic {
    r#type: u8,
    length: u8,
    reserved: U16,
    x2apic_id: U32,
    flags: U32,
    processor_uid: U32,
}

impl ProcessorLocalX2Apic {
    fn new(x2apic_id: u32, uid: u32) -> Self {
        Self {
            r#type: MADT_TYPE_LOCAL_X2APIC,
            length: 16,
            reserved: 0.into(),
            x2apic_id: x2apic_id.into(),
            flags: LAPIC_ENABLED.into(),
            processor_uid: uid.into(),
        }
    }
}

impl Aml for ProcessorLocalX2Apic {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// Errors building or writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// A VM needs at least one vCPU.
    #[error("cannot describe a VM with no vCPUs")]
    NoVcpus,
    /// The tables do not fit in `[ACPI_START, ACPI_END)`.
    #[error(
        "the ACPI {table} table ({len} bytes at {addr:#x}) overflows the ACPI area ending at \
         {ACPI_END:#x}"
    )]
    Overflow {
        /// Table signature.
        table: String,
        /// Where it would start.
        addr: u64,
        /// Its length.
        len: usize,
    },
    /// A 32-bit table field cannot hold an address or size.
    #[error("{what} {value:#x} does not fit in a 32-bit ACPI field")]
    Above4G {
        /// What it is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// Writing a table into guest memory failed.
    #[error("cannot write the ACPI {table} table into guest memory")]
    GuestMemory {
        /// Table signature.
        table: String,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Builds the ACPI tables for `vcpus` vCPUs (APIC IDs `0..vcpus`) and a PCI host bridge whose
/// 64-bit MMIO window is `pci_mmio64` (`(start, size)`), writes them into
/// `[ACPI_START, ACPI_END)` of `mem`, and returns the RSDP's address (for
/// `boot_params.acpi_rsdp_addr`).
pub fn create_acpi_tables<M: GuestMemoryBackend>(
    mem: &M,
    vcpus: u8,
    pci_mmio64: (u64, u64),
) -> Result<GuestAddress, AcpiError> {
    if vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    let mut writer = TableWriter {
        mem,
        next: ACPI_START + TABLES_OFFSET,
    };

    let dsdt = writer.place(&dsdt(pci_mmio64)?)?;
    let fadt = writer.place(&fadt(dsdt))?;
    let madt = writer.place(&madt(u32::from(vcpus))?)?;
    let mcfg = writer.place(&mcfg())?;

    let mut xsdt = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    for table in [fadt, madt, mcfg] {
        xsdt.add_entry(table.0);
    }
    let xsdt = writer.place(&aml_bytes(&xsdt))?;

    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt.0));
    writer.write_at(ACPI_START, &rsdp)?;
    Ok(GuestAddress(ACPI_START))
}

/// Writes tables one after the other into the ACPI area.
struct TableWriter<'a, M> {
    mem: &'a M,
    next: u64,
}

impl<M: GuestMemoryBackend> TableWriter<'_, M> {
    /// Writes `table` at the next aligned address and returns that address.
    fn place(&mut self, table: &[u8]) -> Result<GuestAddress, AcpiError> {
        let addr = self.next.div_ceil(TABLE_ALIGN) * TABLE_ALIGN;
        self.write_at(addr, table)?;
        self.next = addr + table.len() as u64;
        Ok(GuestAddress(addr))
    }

    fn write_at(&self, addr: u64, table: &[u8]) -> Result<(), AcpiError> {
        let name = String::from_utf8_lossy(table.get(..4).unwrap_or_default()).into_owned();
        if addr + table.len() as u64 > ACPI_END {
            return Err(AcpiError::Overflow {
                table: name,
                addr,
                len: table.len(),
            });
        }
        self.mem
            .write_slice(table, GuestAddress(addr))
            .map_err(|source| AcpiError::GuestMemory {
                table: name,
                source,
            })
    }
}

/// OEM table ID: "GHOSTVMM" style, `GHST` + the table signature.
fn table_id(signature: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"GHST____";
    id[4..].copy_from_slice(signature);
    id
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

fn u32_field(what: &'static str, value: u64) -> Result<u32, AcpiError> {
    u32::try_from(value).map_err(|_| AcpiError::Above4G { what, value })
}

fn power_port_register() -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(ACPI_POWER_PORT),
    )
}

/// FADT (ACPI 6.5): hardware-reduced, power port registers, X_DSDT.
fn fadt(dsdt: GuestAddress) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt.0)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power/sleep buttons (there is no PM1 block to hold them).
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = (iapc_boot_arch::VGA_NOT_PRESENT
        | iapc_boot_arch::PCIE_ASPM_CONTROLS
        | iapc_boot_arch::CMOS_RTC_NOT_PRESENT)
        .into();
    fadt.reset_reg = power_port_register();
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = power_port_register();
    fadt.sleep_status_reg = power_port_register();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

/// MADT: one enabled local APIC per vCPU (APIC ID = processor UID = vCPU index), the IOAPIC at
/// GSI 0, and ISA IRQ 0 → GSI 2. Flags are 0: PCAT_COMPAT is clear because there is no 8259
/// pair (Linux does not read the flag; hardware-reduced mode already uses the null PIC).
fn madt(vcpus: u32) -> Result<Vec<u8>, AcpiError> {
    let mut madt = MADT::new(
        OEM_ID,
        table_id(b"APIC"),
        OEM_REVISION,
        LocalInterruptController::Address(u32_field("LAPIC address", LAPIC_START)?),
    );
    for id in 0..vcpus {
        add_cpu(&mut madt, id);
    }
    madt.add_structure(IoApic::new(
        IOAPIC_ID,
        u32_field("IOAPIC address", IOAPIC_START)?,
        0,
    ));
    madt.add_structure(InterruptSourceOverride::new(
        PIT_ISA_IRQ,
        PIT_GSI,
        MPS_INTI_CONFORMS,
    ));
    Ok(aml_bytes(&madt))
}

/// Adds the vCPU with APIC ID (and processor UID) `id`: an xAPIC entry when the ID fits in
/// 8 bits (and is not the broadcast 0xff), else an x2APIC entry.
fn add_cpu(madt: &mut MADT, id: u32) {
    match u8::try_from(id) {
        Ok(id8) if id <= MAX_XAPIC_ID => {
            madt.add_structure(ProcessorLocalApic::new(id8, id8, EnabledStatus::Enabled));
        }
        _ => madt.add_structure(ProcessorLocalX2Apic::new(id, id)),
    }
}

/// The last PCI bus the guest is told of: the topology is one root bus.
const LAST_BUS: u8 = 0;

/// MCFG: the ECAM window of segment 0, for the buses that exist ([`LAST_BUS`]). Not the
/// whole window the ECAM has room for: Linux takes the MCFG's last bus as the highest bus
/// number and, at boot, probes every slot of every bus up to it through 0xCF8/0xCFC
/// (`pcibios_fixup_peer_bridges`): 255 empty buses cost 16 000 exits, over a second of boot
/// under nested virtualization (counted with `ghost-vmm run --exit-stats`).
fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, table_id(b"MCFG"), OEM_REVISION);
    const _: () = assert!(((LAST_BUS as u64) + 1) << 20 <= PCI_ECAM_SIZE);
    mcfg.add_ecam(PCI_ECAM_START, 0, 0, LAST_BUS);
    aml_bytes(&mcfg)
}

/// DSDT: `\_S5_` for soft-off and the devices under `\_SB_`.
fn dsdt(pci_mmio64: (u64, u64)) -> Result<Vec<u8>, AcpiError> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        SDT_HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        table_id(b"DSDT"),
        OEM_REVISION,
    );
    let mut body = Vec::new();
    // \_S5_: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }.
    Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&ACPI_S5_SLP_TYP, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    body.extend(Scope::raw(
        Path::new("\\_SB_"),
        system_bus_devices(pci_mmio64)?,
    ));
    dsdt.append_slice(&body);
    Ok(dsdt.as_slice().to_vec())
}

/// AML of the devices in `\_SB_`.
fn system_bus_devices(pci_mmio64: (u64, u64)) -> Result<Vec<u8>, AcpiError> {
    let mut sb = Vec::new();
    com1(&mut sb);
    motherboard_resources(&mut sb)?;
    pci_host_bridge(&mut sb, pci_mmio64)?;
    Ok(sb)
}

/// `\_SB_.PCI0`: the PCIe host bridge of segment 0, bus 0. Its `_CRS` gives the windows the
/// OS may place BARs in: all I/O ports but the 0xCF8 config ports, the 32-bit window
/// [`PCI_MMIO32_START`] and the 64-bit window above RAM. `_CBA` points at the ECAM (also in
/// the MCFG) for OSes that look there.
fn pci_host_bridge(
    sink: &mut Vec<u8>,
    (mmio64_start, mmio64_size): (u64, u64),
) -> Result<(), AcpiError> {
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, u16::from(LAST_BUS));
    let config_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::<u16>::new_io(0x0000, 0x0cf7, None);
    let io_high = aml::AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let mmio32 = aml::AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        u32_field("PCI 32-bit window", PCI_MMIO32_START)?,
        u32_field("PCI 32-bit window", PCI_MMIO32_START + PCI_MMIO32_SIZE - 1)?,
        None,
    );
    let mmio64 = aml::AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        mmio64_start,
        mmio64_start + mmio64_size - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![
        &bus,
        &config_ports,
        &io_low,
        &io_high,
        &mmio32,
        &mmio64,
    ]);
    // _PRT: every slot's INTA#..INTD# straight to IOAPIC GSIs (no link devices).
    let routes: Vec<(u32, u8, u32)> = (0..32u8)
        .flat_map(|slot| {
            (1..=4u8).map(move |pin| {
                (
                    (u32::from(slot) << 16) | 0xffff,
                    pin - 1,
                    crate::layout::pci_intx_gsi(slot, pin),
                )
            })
        })
        .collect();
    let entries: Vec<Package> = routes
        .iter()
        .map(|(address, pin, gsi)| Package::new(vec![address, pin, &aml::ZERO, gsi]))
        .collect();
    let prt = Package::new(entries.iter().map(|e| e as &dyn acpi_tables::Aml).collect());
    Device::new(
        Path::new("PCI0"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0A08")),
            &Name::new(Path::new("_CID"), &EISAName::new("PNP0A03")),
            &Name::new(Path::new("_ADR"), &aml::ZERO),
            &Name::new(Path::new("_SEG"), &aml::ZERO),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_BBN"), &aml::ZERO),
            &Name::new(Path::new("_CBA"), &PCI_ECAM_START),
            &Name::new(Path::new("_CRS"), &crs),
            &Name::new(Path::new("_PRT"), &prt),
        ],
    )
    .to_aml_bytes(sink);
    Ok(())
}

/// `\_SB_.COM1`: the 16550 UART at [`COM1_PORT`], IRQ [`COM1_GSI`] (edge, active high).
fn com1(sink: &mut Vec<u8>) {
    let ports = IO::new(COM1_PORT, COM1_PORT, 1, 8);
    // Consumer, edge triggered, active high, exclusive.
    let irq = Interrupt::new(true, true, false, false, COM1_GSI);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(sink);
}

/// `\_SB_.MBRD`: motherboard resources (PNP0C02) reserving the ECAM window, which is how Linux
/// validates the MCFG once ACPI is up (`is_acpi_reserved()` in arch/x86/pci/mmconfig-shared.c).
fn motherboard_resources(sink: &mut Vec<u8>) -> Result<(), AcpiError> {
    let ecam = Memory32Fixed::new(
        false,
        u32_field("PCI ECAM base", PCI_ECAM_START)?,
        u32_field("PCI ECAM size", PCI_ECAM_SIZE)?,
    );
    let crs = ResourceTemplate::new(vec![&ecam]);
    Device::new(
        Path::new("MBRD"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0C02")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{guest_memory, read_bytes};
    use vm_memory::GuestMemoryMmap;

    const MIB: u64 = 1 << 20;
    const MMIO64: (u64, u64) = (1 << 32, 64 << 30);

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Reads the whole table at `addr` (length from its header).
    fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let header = read_bytes(mem, addr, 36);
        read_bytes(mem, addr, u32_at(&header, 4) as usize)
    }

    /// Parses RSDP → XSDT and returns the XSDT's tables by signature.
    fn tables(mem: &GuestMemoryMmap, rsdp: GuestAddress) -> Vec<([u8; 4], u64, Vec<u8>)> {
        let r = read_bytes(mem, rsdp.0, 36);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(checksum(&r[..20]), 0, "RSDP checksum");
        assert_eq!(checksum(&r), 0, "RSDP extended checksum");
        assert_eq!(r[15], 2, "RSDP revision");
        assert_eq!(u32_at(&r, 20), 36, "RSDP length");
        let xsdt = table(mem, u64_at(&r, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(checksum(&xsdt), 0, "XSDT checksum");
        xsdt[36..]
            .chunks_exact(8)
            .map(|e| {
                let addr = u64_at(e, 0);
                assert!((ACPI_START..ACPI_END).contains(&addr));
                let t = table(mem, addr);
                let sig: [u8; 4] = t[..4].try_into().expect("signature");
                (sig, addr, t)
            })
            .collect()
    }

    fn find(tables: &[([u8; 4], u64, Vec<u8>)], sig: &[u8; 4]) -> Vec<u8> {
        tables
            .iter()
            .find(|(s, _, _)| s == sig)
            .map(|(_, _, t)| t.clone())
            .unwrap_or_else(|| panic!("no {} table", String::from_utf8_lossy(sig)))
    }

    #[test]
    fn rsdp_xsdt_and_checksums() {
        let mem = guest_memory(256 * MIB);
        let rsdp = create_acpi_tables(&mem, 2, MMIO64).expect("tables");
        assert_eq!(rsdp, GuestAddress(ACPI_START));
        let tables = tables(&mem, rsdp);
        let sigs: Vec<&[u8; 4]> = tables.iter().map(|(s, _, _)| s).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);
        for (sig, addr, t) in &tables {
            assert_eq!(checksum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(addr % TABLE_ALIGN, 0);
            assert!(addr + t.len() as u64 <= ACPI_END);
        }
    }

    #[test]
    fn fadt_is_hardware_reduced_with_power_port_registers() {
        let mem = guest_memory(256 * MIB);
        let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
        let fadt = find(&tables, b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6, "FADT major version");
        assert_eq!(fadt[131], 5, "FADT minor version");
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let boot_arch = u16_at(&fadt, 109);
        assert_eq!(boot_arch & 0b11, 0, "no legacy devices, no 8042");
        assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
        assert_eq!(boot_arch & (1 << 3), 0, "MSI must stay supported");
        assert_ne!(boot_arch & (1 << 5), 0, "CMOS RTC not present");
        // GAS: space id, bit width, bit offset, access size, address.
        for (name, at) in [
            ("reset", 116),
            ("sleep control", 244),
            ("sleep status", 256),
        ] {
            let gas = &fadt[at..at + 12];
            assert_eq!(gas[0], 1, "{name}: SystemIO");
            assert_eq!(gas[1], 8, "{name}: 8 bits");
            assert_eq!(gas[3], 1, "{name}: byte access");
            assert_eq!(u64_at(gas, 4), u64::from(ACPI_POWER_PORT), "{name}: port");
        }
        assert_eq!(fadt[128], ACPI_RESET_VALUE);
        // X_DSDT points at a valid DSDT; the 32-bit DSDT field is unused.
        assert_eq!(u32_at(&fadt, 40), 0);
        let dsdt = table(&mem, u64_at(&fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(checksum(&dsdt), 0, "DSDT checksum");
    }

    #[test]
    fn dsdt_has_s5_and_devices() {
        let mem = guest_memory(256 * MIB);
        let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
        let fadt = find(&tables, b"FACP");
        let dsdt = table(&mem, u64_at(&fadt, 140));
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        // NameOp "_S5_" PackageOp.
        assert!(has(b"\x08_S5_\x12"), "_S5_ package");
        // Package { BytePrefix ACPI_S5_SLP_TYP, Zero, Zero, Zero }.
        assert!(has(&[0x04, 0x0a, ACPI_S5_SLP_TYP, 0, 0, 0]));
        assert!(has(b"\\_SB_"));
        assert!(has(b"COM1"));
        assert!(has(b"MBRD"));
        // The host bridge, with the 64-bit window (QWordMemory: tag 0x8a, min then max).
        assert!(has(b"PCI0"));
        assert!(has(b"_PRT"), "INTx routing for passed-through devices");
        assert!(has(b"\x0c\x41\xd0\x0a\x08"), "_HID PNP0A08");
        let (start, size) = MMIO64;
        let mut window = start.to_le_bytes().to_vec();
        window.extend_from_slice(&(start + size - 1).to_le_bytes());
        assert!(has(&window), "64-bit window in _CRS");
        let lo = u32::try_from(PCI_MMIO32_START).unwrap();
        let hi = u32::try_from(PCI_MMIO32_START + PCI_MMIO32_SIZE - 1).unwrap();
        let mut mmio32 = lo.to_le_bytes().to_vec();
        mmio32.extend_from_slice(&hi.to_le_bytes());
        assert!(has(&mmio32), "32-bit window in _CRS");
    }

    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (ty, len) = (madt[at], madt[at + 1] as usize);
            assert!(len >= 2, "MADT entry length");
            entries.push((ty, madt[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, madt.len());
        entries
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu() {
        for n in [1u8, 2, 4] {
            let mem = guest_memory(256 * MIB);
            let tables = tables(&mem, create_acpi_tables(&mem, n, MMIO64).expect("tables"));
            let madt = find(&tables, b"APIC");
            assert_eq!(u32_at(&madt, 36), 0xfee0_0000, "LAPIC address");
            assert_eq!(u32_at(&madt, 40), 0, "flags: no PCAT_COMPAT");
            let entries = madt_entries(&madt);
            let lapic_ids: Vec<u8> = entries
                .iter()
                .filter(|(ty, _)| *ty == 0)
                .map(|(_, e)| {
                    assert_eq!(e.len(), 8);
                    assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
                    assert_eq!(e[2], e[3], "processor UID = APIC ID");
                    e[3]
                })
                .collect();
            assert_eq!(lapic_ids, (0..n).collect::<Vec<_>>());

            let ioapics: Vec<&Vec<u8>> = entries
                .iter()
                .filter(|(ty, _)| *ty == 1)
                .map(|(_, e)| e)
                .collect();
            assert_eq!(ioapics.len(), 1);
            assert_eq!(u32_at(ioapics[0], 4), 0xfec0_0000);
            assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");

            let iso: Vec<&Vec<u8>> = entries
                .iter()
                .filter(|(ty, _)| *ty == 2)
                .map(|(_, e)| e)
                .collect();
            assert_eq!(iso.len(), 1);
            assert_eq!(iso[0].len(), 10);
            assert_eq!((iso[0][2], iso[0][3]), (0, 0), "ISA IRQ 0");
            assert_eq!(u32_at(iso[0], 4), 2, "-> GSI 2");
        }
    }

    #[test]
    fn large_apic_ids_use_x2apic_entries() {
        let mut madt = MADT::new(
            OEM_ID,
            table_id(b"APIC"),
            1,
            LocalInterruptController::Address(0),
        );
        for id in [0xfe, 0xff, 300] {
            add_cpu(&mut madt, id);
        }
        let bytes = aml_bytes(&madt);
        assert_eq!(checksum(&bytes), 0);
        let entries = madt_entries(&bytes);
        assert_eq!(entries[0].0, 0);
        assert_eq!(entries[0].1[3], 0xfe);
        for ((ty, e), id) in entries[1..].iter().zip([0xff, 300]) {
            assert_eq!(*ty, 9);
            assert_eq!(e.len(), 16);
            assert_eq!(u32_at(e, 4), id, "x2APIC ID");
            assert_eq!(u32_at(e, 8), 1, "enabled");
            assert_eq!(u32_at(e, 12), id, "UID");
        }
    }

    #[test]
    fn mcfg_covers_the_ecam() {
        let mem = guest_memory(256 * MIB);
        let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
        let mcfg = find(&tables, b"MCFG");
        assert_eq!(mcfg.len(), 44 + 16);
        assert_eq!(u64_at(&mcfg, 44), PCI_ECAM_START);
        assert_eq!(u16_at(&mcfg, 52), 0, "segment");
        assert_eq!((mcfg[54], mcfg[55]), (0, 0), "buses: the root bus only");
    }

    #[test]
    fn tables_fit_even_for_the_largest_vm() {
        let mem = guest_memory(256 * MIB);
        create_acpi_tables(&mem, u8::MAX, MMIO64).expect("255 vCPUs fit");
        assert!(matches!(
            create_acpi_tables(&mem, 0, MMIO64),
            Err(AcpiError::NoVcpus)
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        let mem = guest_memory(256 * MIB);
        let mut w = TableWriter {
            mem: &mem,
            next: ACPI_END - 16,
        };
        let err = w
            .place(&[
                b'T', b'E', b'S', b'T', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ])
            .unwrap_err();
        assert!(matches!(err, AcpiError::Overflow { ref table, .. } if table == "TEST"));
    }
}
