//! The Q35 MCH host bridge (8086:29C0) at 00:00.0.
//!
//! Registers (Intel datasheet 316966, as QEMU's q35 models them and edk2's
//! `OvmfPkg/Include/IndustryStandard/Q35MchIch9.h` names them):
//! - `0x50` MCH_EXT_TSEG_MB: the extended-TSEG size query; writing `0xFFFF` is how an SMM
//!   build of OVMF asks how much TSEG there is. There is no SMRAM here: it reads 0, and the
//!   query is reported to the host.
//! - `0x60`/`0x64` PCIEXBAR: ECAM base (bits 35:26 by length), length (bits 2:1: 256, 128 or
//!   64 MiB) and enable (bit 0). Every write re-evaluates the window.
//! - `0x90..=0x96` PAM0–6: the legacy BIOS shadowing attributes, storage only (the region
//!   below 1 MiB is always RAM here, as it is once any firmware has shadowed itself).
//! - `0x9C`..`0x9E` default-SMBASE control, SMRAM, ESMRAMC: storage; enabling any SMRAM is
//!   reported as an SMM request.
//! - `0xB0` TOLUD: the top of low usable DRAM, read-only, set by the VMM.

use super::EcamHost;
use crate::pci::config::{reg, PciConfiguration, COMMAND_MEMORY};
use crate::pci::{PciDevice, PciHeader};

/// The Q35 MCH's device ID: what OVMF keys its platform code on.
pub const Q35_MCH_DEVICE_ID: u16 = 0x29c0;

const HEADER: PciHeader = PciHeader {
    vendor_id: 0x8086,
    device_id: Q35_MCH_DEVICE_ID,
    class_code: 0x06_00_00,
    revision: 0x02,
    // QEMU's subsystem IDs: what guests that special-case the q35 MCH are used to.
    subsystem_vendor_id: 0x1af4,
    subsystem_id: 0x1100,
    header_type: 0,
    interrupt_pin: 0,
};

/// MCH_EXT_TSEG_MB (16 bits).
const EXT_TSEG_MB: u16 = 0x50;
/// The value an SMM firmware writes to [`EXT_TSEG_MB`] to query the extended TSEG size.
const EXT_TSEG_MB_QUERY: u32 = 0xffff;
/// GGC, the graphics control register (storage): the upper half of [`EXT_TSEG_MB`]'s dword.
const GGC: u16 = 0x52;
const _: () = assert!(GGC & !3 == EXT_TSEG_MB);
/// PCIEXBAR, low and high dwords.
const PCIEXBAR_LOW: u16 = 0x60;
const PCIEXBAR_HIGH: u16 = 0x64;
/// PCIEXBAR enable bit.
const PCIEXBAR_EN: u32 = 1;
/// PCIEXBAR writable bits: base 31:26, length 2:1, enable 0 (low); base 35:32 (high).
const PCIEXBAR_LOW_WRITABLE: u32 = 0xfc00_0007;
const PCIEXBAR_HIGH_WRITABLE: u32 = 0x0000_000f;
/// PAM0..PAM6 (0x90..=0x96) and the SMRAM registers (0x9C..=0x9E) in two dwords.
const PAM_DWORD0: u16 = 0x90;
const PAM_DWORD1: u16 = 0x94;
const SMRAM_DWORD: u16 = 0x9c;
/// SMRAM's G_SMRAME (bit 3 of 0x9D) and ESMRAMC's T_EN (bit 0 of 0x9E), in the 0x9C dword.
const SMRAM_ENABLE_BITS: u32 = (1 << (8 + 3)) | (1 << 16);
/// TOLUD (16 bits, 1/16 GiB units in bits 15:4).
const TOLUD: u16 = 0xb0;

/// Decodes PCIEXBAR into the ECAM window `(base, size)`, or `None` while it is disabled or
/// the length field holds the reserved value.
pub fn pciexbar_window(low: u32, high: u32) -> Option<(u64, u64)> {
    if low & PCIEXBAR_EN == 0 {
        return None;
    }
    let size: u64 = match (low >> 1) & 0b11 {
        0 => 256 << 20,
        1 => 128 << 20,
        2 => 64 << 20,
        _ => return None,
    };
    let raw = (u64::from(high & PCIEXBAR_HIGH_WRITABLE) << 32) | u64::from(low & 0xfc00_0000);
    // The base is aligned to the window's size: lower base bits are ignored.
    Some((raw & !(size - 1), size))
}

/// The MCH host bridge.
pub struct Mch {
    config: PciConfiguration,
    host: Box<dyn EcamHost>,
    ecam: Option<(u64, u64)>,
    smm_reported: bool,
}

impl std::fmt::Debug for Mch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mch").field("ecam", &self.ecam).finish()
    }
}

impl Mch {
    /// The host bridge of a VM whose low RAM ends at `low_ram_end` (TOLUD), reporting ECAM
    /// moves to `host`. PCIEXBAR starts disabled, as after a real reset.
    pub fn new(low_ram_end: u64, host: Box<dyn EcamHost>) -> Self {
        let mut config = PciConfiguration::new(&HEADER);
        config.set_command(COMMAND_MEMORY);
        // MCH_EXT_TSEG_MB and GGC share a dword: both halves writable.
        config.set_register(EXT_TSEG_MB, 0, 0xffff_ffff);
        config.set_register(PCIEXBAR_LOW, 0, PCIEXBAR_LOW_WRITABLE);
        config.set_register(PCIEXBAR_HIGH, 0, PCIEXBAR_HIGH_WRITABLE);
        config.set_register(PAM_DWORD0, 0, 0xffff_ffff);
        config.set_register(PAM_DWORD1, 0, 0x00ff_ffff);
        config.set_register(SMRAM_DWORD, 0x0002_0000, 0x00ff_ffff);
        let tolud = u32::try_from(low_ram_end >> 20).unwrap_or(u32::MAX) & 0xfff0;
        config.set_register(TOLUD, tolud, 0);
        Self {
            config,
            host,
            ecam: None,
            smm_reported: false,
        }
    }

    /// Where the ECAM decodes now.
    pub fn ecam(&self) -> Option<(u64, u64)> {
        self.ecam
    }

    fn sync_ecam(&mut self) {
        let window = pciexbar_window(
            self.config.read_dword(PCIEXBAR_LOW),
            self.config.read_dword(PCIEXBAR_HIGH),
        );
        if window != self.ecam {
            self.ecam = window;
            self.host.ecam_moved(window);
        }
    }

    fn report_smm(&mut self) {
        if !self.smm_reported {
            self.smm_reported = true;
            self.host.smm_requested();
        }
    }
}

impl PciDevice for Mch {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        match offset & !3 {
            PCIEXBAR_LOW | PCIEXBAR_HIGH => self.sync_ecam(),
            o if o == EXT_TSEG_MB & !3
                && self.config.read_dword(EXT_TSEG_MB) & 0xffff == EXT_TSEG_MB_QUERY =>
            {
                // No extended TSEG: the query reads back 0.
                let dword = self.config.read_dword(EXT_TSEG_MB) & !0xffff;
                self.config.set_register(EXT_TSEG_MB, dword, 0xffff);
                self.report_smm();
            }
            SMRAM_DWORD if self.config.read_dword(SMRAM_DWORD) & SMRAM_ENABLE_BITS != 0 => {
                self.report_smm();
            }
            _ => {}
        }
    }

    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        Vec::new()
    }

    fn bar_read(&mut self, _bar: u8, _offset: u64, _data: &mut [u8]) {}

    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

// The header registers this device leaves alone.
const _: () = assert!(EXT_TSEG_MB > reg::INTERRUPT);
