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
//!   `VGA_NOT_PRESENT` stops VGA probing, `PCIE_ASPM_CONTROLS` disables ASPM.
//!   `CMOS_RTC_NOT_PRESENT` is clear: there is a CMOS RTC, found through the DSDT's PNP0B00
//!   device; the FADT's `CENTURY` names its century register, so `rtc_cmos` reads years
//!   past 2099.
//!   `MSI_NOT_SUPPORTED` is deliberately clear: Linux would otherwise disable PCI MSI/MSI-X.
//!
//! What `acpi_tables` lacks and is hand-packed here: the MADT Interrupt Source Override and
//! Processor Local x2APIC structures (`zerocopy` structs, below).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes};

use crate::layout::{
    ACPI_END, ACPI_POWER_PORT, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_START, CMOS_CENTURY_INDEX,
    IOAPIC_START, LAPIC_START, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};

mod dsdt;
pub mod firmware;
#[cfg(test)]
mod firmware_tests;
pub mod loader;
#[cfg(test)]
mod tests;

use dsdt::{dsdt, PowerButton};
pub use firmware::{firmware_tables, FirmwareAcpi, Q35Platform};

/// The PCI host bridge's address windows, as the DSDT and MCFG describe them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciWindows {
    /// Base of the ECAM (segment 0, bus 0 up).
    pub ecam_base: u64,
    /// Size of the ECAM window the chipset decodes (reserved as motherboard resources).
    pub ecam_size: u64,
    /// 32-bit memory windows, `(start, size)`.
    pub mmio32: Vec<(u64, u64)>,
    /// The 64-bit memory window, `(start, size)`, if any.
    pub mmio64: Option<(u64, u64)>,
}

impl PciWindows {
    /// The direct-boot platform's fixed windows, with the 64-bit window `mmio64`.
    pub fn direct(mmio64: (u64, u64)) -> Self {
        Self {
            ecam_base: PCI_ECAM_START,
            ecam_size: PCI_ECAM_SIZE,
            mmio32: vec![(PCI_MMIO32_START, PCI_MMIO32_SIZE)],
            mmio64: Some(mmio64),
        }
    }
}

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

    let pci = PciWindows::direct(pci_mmio64);
    let dsdt = writer.place(&dsdt(&pci, ACPI_S5_SLP_TYP, PowerButton::Ged)?)?;
    let fadt = writer.place(&fadt(dsdt))?;
    let madt = writer.place(&madt(u32::from(vcpus), &[])?)?;
    let mcfg = writer.place(&mcfg(pci.ecam_base))?;

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
    fadt.iapc_boot_arch =
        (iapc_boot_arch::VGA_NOT_PRESENT | iapc_boot_arch::PCIE_ASPM_CONTROLS).into();
    fadt.century = CMOS_CENTURY_INDEX;
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
/// `overrides` are further Interrupt Source Overrides `(ISA IRQ, GSI, MPS INTI flags)`.
fn madt(vcpus: u32, overrides: &[(u8, u32, u16)]) -> Result<Vec<u8>, AcpiError> {
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
    for &(irq, gsi, flags) in overrides {
        madt.add_structure(InterruptSourceOverride::new(irq, gsi, flags));
    }
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
fn mcfg(ecam_base: u64) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, table_id(b"MCFG"), OEM_REVISION);
    // The smallest ECAM a q35 PCIEXBAR decodes (64 MiB) still holds every bus described.
    const _: () = assert!(((LAST_BUS as u64) + 1) << 20 <= 64 << 20);
    mcfg.add_ecam(ecam_base, 0, 0, LAST_BUS);
    aml_bytes(&mcfg)
}
