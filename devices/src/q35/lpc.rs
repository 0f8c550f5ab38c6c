//! The ICH9 LPC bridge (8086:2918) at 00:1f.0: where the firmware places the ACPI PM block.
//!
//! Registers (Intel datasheet 316972; edk2's `Q35MchIch9.h`):
//! - `0x40` PMBASE: I/O base of the PM block, bits 15:7 (bit 0 reads 1: an I/O address).
//! - `0x44` ACPI_CNTL: ACPI_EN (bit 7) turns PM decoding on; SCI_IRQ_SEL (bits 2:0) is
//!   storage: the SCI is always IRQ 9 here, as the FADT says.
//! - `0x60..=0x63`, `0x68..=0x6B` PIRQA–H routing: storage (the DSDT's `_PRT` routes INTx to
//!   IOAPIC pins directly; OVMF still programs these and reads them back).
//! - `0xA0..=0xA7` GEN_PMCON: storage.
//! - `0xF0` RCBA: the root complex register block base and enable, storage.

use super::PmHost;
use crate::pci::config::PciConfiguration;
use crate::pci::{PciDevice, PciHeader};

/// The ICH9 LPC bridge's device ID.
pub const ICH9_LPC_DEVICE_ID: u16 = 0x2918;

const HEADER: PciHeader = PciHeader {
    vendor_id: 0x8086,
    device_id: ICH9_LPC_DEVICE_ID,
    class_code: 0x06_01_00,
    revision: 0x02,
    subsystem_vendor_id: 0x1af4,
    subsystem_id: 0x1100,
    header_type: 0,
    interrupt_pin: 0,
};

/// PMBASE.
pub const PMBASE: u16 = 0x40;
/// ACPI_CNTL (one byte).
pub const ACPI_CNTL: u16 = 0x44;
/// ACPI_CNTL's ACPI_EN: the PM block decodes.
pub const ACPI_EN: u32 = 1 << 7;
/// PMBASE's address bits.
const PMBASE_MASK: u32 = 0xff80;
const PIRQ_A_D: u16 = 0x60;
const PIRQ_E_H: u16 = 0x68;
/// Each PIRQ byte: IRQ number (3:0) and the routing-disabled bit (7); resets disabled.
const PIRQ_WRITABLE: u32 = 0x8f8f_8f8f;
const PIRQ_RESET: u32 = 0x8080_8080;
const GEN_PMCON: u16 = 0xa0;
const RCBA: u16 = 0xf0;
/// RCBA: base bits 31:14 and the enable bit.
const RCBA_WRITABLE: u32 = 0xffff_c001;

/// Where the PM block decodes for these PMBASE and ACPI_CNTL values (`None`: off).
pub fn pm_base(pmbase: u32, acpi_cntl: u32) -> Option<u16> {
    if acpi_cntl & ACPI_EN == 0 {
        return None;
    }
    u16::try_from(pmbase & PMBASE_MASK).ok()
}

/// The LPC bridge.
pub struct Lpc {
    config: PciConfiguration,
    host: Box<dyn PmHost>,
    pm: Option<u16>,
}

impl std::fmt::Debug for Lpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpc").field("pm", &self.pm).finish()
    }
}

impl Lpc {
    /// The LPC bridge, reporting PM block moves to `host`. The PM block starts off, as after
    /// a real reset: the firmware sets PMBASE and ACPI_EN.
    pub fn new(host: Box<dyn PmHost>) -> Self {
        let mut config = PciConfiguration::new(&HEADER);
        config.set_register(PMBASE, 1, PMBASE_MASK);
        config.set_register(ACPI_CNTL, 0, ACPI_EN | 0b111);
        config.set_register(PIRQ_A_D, PIRQ_RESET, PIRQ_WRITABLE);
        config.set_register(PIRQ_E_H, PIRQ_RESET, PIRQ_WRITABLE);
        config.set_register(GEN_PMCON, 0, 0xffff_ffff);
        config.set_register(GEN_PMCON + 4, 0, 0xffff_ffff);
        config.set_register(RCBA, 0, RCBA_WRITABLE);
        Self {
            config,
            host,
            pm: None,
        }
    }

    /// Where the PM block decodes now.
    pub fn pm(&self) -> Option<u16> {
        self.pm
    }
}

impl PciDevice for Lpc {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        if matches!(offset & !3, PMBASE | ACPI_CNTL) {
            let pm = pm_base(
                self.config.read_dword(PMBASE),
                self.config.read_dword(ACPI_CNTL),
            );
            if pm != self.pm {
                self.pm = pm;
                self.host.pm_moved(pm);
            }
        }
    }

    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        Vec::new()
    }

    fn bar_read(&mut self, _bar: u8, _offset: u64, _data: &mut [u8]) {}

    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}
