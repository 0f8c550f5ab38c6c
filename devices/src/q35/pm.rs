//! The ICH9 ACPI power-management block: 128 I/O ports at PMBASE (where the LPC bridge's
//! PMBASE/ACPI_CNTL put it), the fixed-hardware ACPI registers the FADT points at.
//!
//! | offset | register | here |
//! |---|---|---|
//! | 0x00 | PM1_STS (16) | write-1-to-clear; PWRBTN_STS is set by [`PmRegisters::press_power_button`] |
//! | 0x02 | PM1_EN (16) | TMR_EN, GBL_EN, PWRBTN_EN, RTC_EN |
//! | 0x04 | PM1_CNT (16) | SCI_EN reads 1 (always in ACPI mode: no SMI_CMD), SLP_TYP, SLP_EN |
//! | 0x08 | PM_TMR (32) | the 24-bit 3.579545 MHz ACPI timer (read-only) |
//! | 0x20 | GPE0_STS (8 bytes) | write-1-to-clear; no GPE ever fires |
//! | 0x28 | GPE0_EN (8 bytes) | storage |
//! | 0x30 | SMI_EN (32), 0x34 SMI_STS (32) | storage (no SMM) |
//!
//! The SCI is level-triggered: it is asserted while any enabled status bit is set, and the
//! guest's write-1-to-clear deasserts it. Writing SLP_EN with SLP_TYP = [`S5_SLP_TYP`] is
//! soft-off, reported to the [`PowerHandler`]; other sleep types are ignored (the DSDT offers
//! only `\_S5_`).

// Offsets are matched against small ranges before they index the register arrays, so the
// casts to usize cannot truncate; the timer is masked to 24 bits before narrowing.
#![allow(clippy::cast_possible_truncation)]

use std::time::Instant;

use super::IrqLevel;
use crate::bus::BusDevice;
use crate::power::{PowerAction, PowerHandler};

/// Size of the PM block in I/O ports.
pub const PM_BLOCK_LEN: u64 = 0x80;
/// Offset of PM1a_EVT_BLK (PM1_STS, then PM1_EN), 4 bytes.
pub const PM1_EVT_OFFSET: u16 = 0x00;
/// Offset of PM1a_CNT_BLK, 2 bytes.
pub const PM1_CNT_OFFSET: u16 = 0x04;
/// Offset of PM_TMR_BLK, 4 bytes.
pub const PM_TMR_OFFSET: u16 = 0x08;
/// Offset of GPE0_BLK, [`GPE0_LEN`] bytes (status half, then enable half).
pub const GPE0_OFFSET: u16 = 0x20;
/// Length of GPE0_BLK.
pub const GPE0_LEN: u8 = 16;
/// The SLP_TYP value that means soft-off (S5), as on QEMU's ICH9 and in OVMF's reset library.
pub const S5_SLP_TYP: u8 = 0;
/// The ACPI PM timer's frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// PM1_STS / PM1_EN bits.
const TMR: u16 = 1 << 0;
const GBL: u16 = 1 << 5;
const PWRBTN: u16 = 1 << 8;
const RTC: u16 = 1 << 10;
/// Status bits that raise the SCI when enabled.
const SCI_EVENTS: u16 = TMR | GBL | PWRBTN | RTC;
/// PM1_STS bits that exist (TMR, BM, GBL, PWRBTN, SLPBTN, RTC, WAK).
const PM1_STS_BITS: u16 = TMR | (1 << 4) | GBL | PWRBTN | (1 << 9) | RTC | (1 << 15);
/// PM1_CNT: SCI_EN (read-only 1), BM_RLD, GBL_RLS, SLP_TYP (stored), SLP_EN (write-only).
const SCI_EN: u16 = 1 << 0;
const PM1_CNT_STORED: u16 = (1 << 1) | (1 << 2) | (0b111 << 10);
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;

/// The PM block.
pub struct PmRegisters {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe0: [u8; GPE0_LEN as usize],
    smi: [u8; 8],
    start: Instant,
    sci: Box<dyn IrqLevel>,
    sci_asserted: bool,
    power: Box<dyn PowerHandler>,
}

impl std::fmt::Debug for PmRegisters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmRegisters")
            .field("pm1_sts", &format_args!("{:#06x}", self.pm1_sts))
            .field("pm1_en", &format_args!("{:#06x}", self.pm1_en))
            .field("pm1_cnt", &format_args!("{:#06x}", self.pm1_cnt))
            .finish_non_exhaustive()
    }
}

impl PmRegisters {
    /// A PM block whose SCI is `sci` and whose soft-off goes to `power`.
    pub fn new(sci: Box<dyn IrqLevel>, power: Box<dyn PowerHandler>) -> Self {
        Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: SCI_EN,
            gpe0: [0; GPE0_LEN as usize],
            smi: [0; 8],
            start: Instant::now(),
            sci,
            sci_asserted: false,
            power,
        }
    }

    /// Presses the fixed-feature power button: sets PWRBTN_STS, which raises the SCI if the
    /// guest has enabled the button. Returns whether it has (an OS that has not will not see
    /// the press until it enables it, like a PC).
    pub fn press_power_button(&mut self) -> bool {
        self.pm1_sts |= PWRBTN;
        self.update_sci();
        self.pm1_en & PWRBTN != 0
    }

    /// The PM timer's current value (24 bits).
    fn timer(&self) -> u32 {
        let ticks = self.start.elapsed().as_nanos() * u128::from(PM_TIMER_HZ) / 1_000_000_000;
        (ticks & 0x00ff_ffff) as u32
    }

    fn update_sci(&mut self) {
        let gpe = self
            .gpe0
            .iter()
            .take(usize::from(GPE0_LEN / 2))
            .zip(self.gpe0.iter().skip(usize::from(GPE0_LEN / 2)))
            .any(|(sts, en)| sts & en != 0);
        let asserted = self.pm1_sts & self.pm1_en & SCI_EVENTS != 0 || gpe;
        if asserted != self.sci_asserted {
            self.sci_asserted = asserted;
            self.sci.set_level(asserted);
        }
    }

    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        let byte = |v: u32, i: u64| v.to_le_bytes()[(i & 3) as usize];
        match offset {
            0..=1 => byte(u32::from(self.pm1_sts), offset),
            2..=3 => byte(u32::from(self.pm1_en), offset - 2),
            4..=5 => byte(u32::from(self.pm1_cnt), offset - 4),
            8..=11 => byte(timer, offset - 8),
            0x20..=0x2f => self.gpe0[(offset - 0x20) as usize],
            0x30..=0x37 => self.smi[(offset - 0x30) as usize],
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        let shift = (offset & 1) * 8;
        let v = u16::from(value) << shift;
        let lane = 0xffu16 << shift;
        match offset {
            0..=1 => self.pm1_sts &= !(v & PM1_STS_BITS),
            2..=3 => self.pm1_en = (self.pm1_en & !lane) | (v & SCI_EVENTS),
            4..=5 => {
                let stored = (self.pm1_cnt & !(lane & PM1_CNT_STORED)) | (v & PM1_CNT_STORED);
                self.pm1_cnt = stored | SCI_EN;
                if v & SLP_EN != 0 {
                    let slp_typ = ((self.pm1_cnt >> SLP_TYP_SHIFT) & 0b111) as u8;
                    if slp_typ == S5_SLP_TYP {
                        self.power.power_action(PowerAction::PowerOff);
                    } else {
                        log::warn!("guest asked for ACPI sleep type {slp_typ}: not supported");
                    }
                }
            }
            0x20..=0x27 => self.gpe0[(offset - 0x20) as usize] &= !value,
            0x28..=0x2f => self.gpe0[(offset - 0x20) as usize] = value,
            0x30..=0x37 => self.smi[(offset - 0x30) as usize] = value,
            _ => {}
        }
    }
}

impl BusDevice for PmRegisters {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let timer = self.timer();
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset.saturating_add(i as u64), timer);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.write_byte(offset.saturating_add(i as u64), *b);
        }
        self.update_sci();
    }
}
