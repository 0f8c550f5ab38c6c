//! The ACPI tables of the q35 firmware platform, as the fw_cfg blobs UEFI firmware loads
//! (see [`super::loader`]).
//!
//! Unlike the direct-boot tables, this platform has fixed ACPI hardware: the ICH9 PM block
//! (PM1 event and control blocks, the PM timer, GPE0) at whatever PMBASE the firmware chose,
//! the SCI on ISA IRQ 9 (level, active high), the fixed-feature power button, and reset
//! through the 0xCF9 reset control register. There is no SMI command port: the platform is
//! always in ACPI mode (SCI_EN reads 1). A FACS exists, as non-reduced ACPI requires.
//!
//! The tables are generated when the firmware reads them, after it has enumerated PCI, so
//! the DSDT's windows and the MCFG follow what the firmware programmed ([`Q35Platform`]).

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;

use super::loader::{zero_checksum, TableLoader, Zone, ACPI_RSDP_FILE, ACPI_TABLES_FILE};
use super::{
    aml_bytes, dsdt, iapc_boot_arch, madt, mcfg, table_id, AcpiError, PciWindows, PowerButton,
    HYPERVISOR_VENDOR_ID, OEM_ID, OEM_REVISION, TABLE_ALIGN,
};
use crate::layout::CMOS_CENTURY_INDEX;

/// Offsets of the PM block's registers from PMBASE (ICH9).
const PM1_EVT: u16 = 0x00;
const PM1_CNT: u16 = 0x04;
const PM_TMR: u16 = 0x08;
const GPE0: u16 = 0x20;
const GPE0_LEN: u8 = 16;
/// The SCI: ISA IRQ 9, level-triggered, active high (MPS INTI flags).
const SCI_IRQ: u8 = 9;
const SCI_INTI_FLAGS: u16 = 0b1101;
/// FADT offsets of the pointer fields the loader patches.
const FADT_FIRMWARE_CTRL: usize = 36;
const FADT_X_DSDT: usize = 140;
/// RSDP offsets: XSDT address, checksum (first 20 bytes), extended checksum (36 bytes).
const RSDP_XSDT: u32 = 24;
const RSDP_CHECKSUM: u32 = 8;
const RSDP_V1_LEN: u32 = 20;
const RSDP_EXT_CHECKSUM: u32 = 32;
/// Header offsets.
const HEADER_CHECKSUM: u32 = 9;
const XSDT_ENTRIES: usize = 36;
/// The FACS must be 64-byte aligned; it opens the tables blob.
const FACS_ALIGN: u32 = 64;
/// C2/C3 latencies that mean "not supported".
const NO_C2: u16 = 101;
const NO_C3: u16 = 1001;
/// Room left at the end of the tables blob: its size is fixed when the VM is built (the fw_cfg
/// directory lists it) while its content is generated later, and AML integers grow with their
/// values.
pub const TABLES_SLACK: usize = 4096;

/// What the q35 tables describe, read from the chipset when the firmware asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Q35Platform {
    /// vCPUs (APIC IDs `0..vcpus`).
    pub vcpus: u8,
    /// Where the PM block decodes (the LPC bridge's PMBASE).
    pub pm_base: u16,
    /// The reset register's port and value.
    pub reset: (u16, u8),
    /// The sleep type the PM block treats as soft-off.
    pub s5_slp_typ: u8,
    /// The PCI host bridge's windows.
    pub pci: PciWindows,
}

/// The three fw_cfg blobs that carry the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareAcpi {
    /// `etc/acpi/tables`: FACS, DSDT, FADT, MADT, MCFG, XSDT, pointers as blob offsets.
    pub tables: Vec<u8>,
    /// `etc/acpi/rsdp`: the RSDP, pointing at the XSDT in `tables`.
    pub rsdp: Vec<u8>,
    /// `etc/table-loader`: the script that links them.
    pub loader: Vec<u8>,
}

fn io_gas(bits: u8, port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        bits,
        0,
        AccessSize::Undefined,
        u64::from(port),
    )
}

fn fadt(p: &Q35Platform) -> Vec<u8> {
    let base = p.pm_base;
    let mut f = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // The power button is the fixed-feature one (flag clear); there is no sleep button.
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .gpe_info(u32::from(base + GPE0), 0, GPE0_LEN, 0, 0);
    f.sci_int = u16::from(SCI_IRQ).into();
    f.pm1a_evt_blk = u32::from(base + PM1_EVT).into();
    f.pm1_evt_len = 4;
    f.pm1a_cnt_blk = u32::from(base + PM1_CNT).into();
    f.pm1_cnt_len = 2;
    f.pm_tmr_blk = u32::from(base + PM_TMR).into();
    f.pm_tmr_len = 4;
    f.x_pm1a_evt_blk = io_gas(32, base + PM1_EVT);
    f.x_pm1a_cnt_blk = io_gas(16, base + PM1_CNT);
    f.x_pm_tmr_blk = io_gas(32, base + PM_TMR);
    f.x_gpe0_blk = io_gas(GPE0_LEN * 8, base + GPE0);
    f.p_lvl2_lat = NO_C2.into();
    f.p_lvl3_lat = NO_C3.into();
    f.iapc_boot_arch = iapc_boot_arch::PCIE_ASPM_CONTROLS.into();
    f.century = CMOS_CENTURY_INDEX;
    f.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(p.reset.0),
    );
    f.reset_value = p.reset.1;
    f.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&f.finalize())
}

/// Appends `table` to `blob` at the next aligned offset; returns that offset.
fn push(blob: &mut Vec<u8>, table: &[u8], align: usize) -> usize {
    let at = blob.len().div_ceil(align) * align;
    blob.resize(at, 0);
    blob.extend_from_slice(table);
    at
}

fn offset_u32(offset: usize) -> Result<u32, AcpiError> {
    u32::try_from(offset).map_err(|_| AcpiError::Above4G {
        what: "ACPI blob offset",
        value: offset as u64,
    })
}

/// Builds the tables, the RSDP and the loader script for `p`.
pub fn firmware_tables(p: &Q35Platform) -> Result<FirmwareAcpi, AcpiError> {
    if p.vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    let align = usize::try_from(TABLE_ALIGN).unwrap_or(16);
    let mut tables = Vec::new();
    let facs = push(&mut tables, &aml_bytes(&FACS::new()), FACS_ALIGN as usize);
    let dsdt = push(
        &mut tables,
        &dsdt(&p.pci, p.s5_slp_typ, PowerButton::Fixed)?,
        align,
    );
    let fadt = push(&mut tables, &fadt(p), align);
    let madt = push(
        &mut tables,
        &madt(
            u32::from(p.vcpus),
            &[(SCI_IRQ, u32::from(SCI_IRQ), SCI_INTI_FLAGS)],
        )?,
        align,
    );
    let mcfg = push(&mut tables, &mcfg(p.pci.ecam_base), align);
    let mut xsdt_table = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    for entry in [fadt, madt, mcfg] {
        xsdt_table.add_entry(entry as u64);
    }
    let xsdt = push(&mut tables, &aml_bytes(&xsdt_table), align);

    // Pointer fields hold offsets into their target blob; the loader adds its address.
    let facs32 = offset_u32(facs)?;
    tables[fadt + FADT_FIRMWARE_CTRL..fadt + FADT_FIRMWARE_CTRL + 4]
        .copy_from_slice(&facs32.to_le_bytes());
    tables[fadt + FADT_X_DSDT..fadt + FADT_X_DSDT + 8]
        .copy_from_slice(&(dsdt as u64).to_le_bytes());
    let mut rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt as u64));
    rsdp[RSDP_CHECKSUM as usize] = 0;
    rsdp[RSDP_EXT_CHECKSUM as usize] = 0;

    let mut loader = TableLoader::new();
    loader.allocate(ACPI_TABLES_FILE, FACS_ALIGN, Zone::High);
    loader.allocate(ACPI_RSDP_FILE, 16, Zone::FSeg);
    loader.add_pointer(
        ACPI_TABLES_FILE,
        offset_u32(fadt + FADT_FIRMWARE_CTRL)?,
        4,
        ACPI_TABLES_FILE,
    );
    loader.add_pointer(
        ACPI_TABLES_FILE,
        offset_u32(fadt + FADT_X_DSDT)?,
        8,
        ACPI_TABLES_FILE,
    );
    for i in 0..3 {
        loader.add_pointer(
            ACPI_TABLES_FILE,
            offset_u32(xsdt + XSDT_ENTRIES + 8 * i)?,
            8,
            ACPI_TABLES_FILE,
        );
    }
    loader.add_pointer(ACPI_RSDP_FILE, RSDP_XSDT, 8, ACPI_TABLES_FILE);
    for table in [dsdt, fadt, madt, mcfg, xsdt] {
        zero_checksum(&mut tables, table);
        let len = u32::from_le_bytes([
            tables[table + 4],
            tables[table + 5],
            tables[table + 6],
            tables[table + 7],
        ]);
        let start = offset_u32(table)?;
        loader.add_checksum(ACPI_TABLES_FILE, start + HEADER_CHECKSUM, start, len);
    }
    loader.add_checksum(ACPI_RSDP_FILE, RSDP_CHECKSUM, 0, RSDP_V1_LEN);
    loader.add_checksum(
        ACPI_RSDP_FILE,
        RSDP_EXT_CHECKSUM,
        0,
        offset_u32(rsdp.len())?,
    );
    Ok(FirmwareAcpi {
        tables,
        rsdp,
        loader: loader.to_bytes(),
    })
}
