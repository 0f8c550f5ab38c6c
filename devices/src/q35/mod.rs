//! The q35 chipset personality that UEFI firmware (edk2's OVMF) recognises: the MCH host
//! bridge at 00:00.0, the ICH9 LPC bridge at 00:1f.0 with its ACPI power-management block, and
//! the reset control register at port 0xCF9.
//!
//! OVMF decides what platform it runs on by the host bridge's device ID (Q35 MCH `0x29C0`),
//! then programs the chipset itself: it writes PCIEXBAR (where the ECAM lives), PMBASE and
//! ACPI_CNTL (where the PM block decodes), and RCBA. These devices emulate those registers and
//! tell the VMM, through small traits, when a window moves; they never hard-code where the
//! firmware puts things (edk2 2022.11 puts the ECAM at 0xB000_0000, later versions elsewhere).
//!
//! - [`mch::Mch`]: 8086:29C0 with PCIEXBAR (the ECAM window, reported to an [`EcamHost`]), PAM,
//!   SMRAM and the extended-TSEG query register. A firmware that asks for SMRAM (an SMM build
//!   of OVMF, such as Debian's `secboot` images) is reported through [`EcamHost::smm_requested`]
//!   so the VMM can refuse it with a message instead of letting it hang.
//! - [`lpc::Lpc`]: 8086:2918 with PMBASE, ACPI_CNTL, the PIRQ routing bytes and RCBA; it moves
//!   the PM block ([`pm::PmRegisters`]) through a [`PmHost`].
//! - [`pm::PmRegisters`]: PM1 status/enable/control, the 3.58 MHz PM timer, and the SCI (a
//!   level interrupt through [`IrqLevel`]); the fixed-feature power button and soft-off (S5)
//!   live here.
//! - [`reset::ResetControl`]: port 0xCF9, which sits inside the 0xCF8 config-address dword; the
//!   PCI config port device forwards byte accesses there to it.

pub mod lpc;
pub mod mch;
pub mod pm;
pub mod reset;

#[cfg(test)]
mod tests;

pub use lpc::Lpc;
pub use mch::Mch;
pub use pm::PmRegisters;
pub use reset::ResetControl;

/// Where the q35 chipset's devices sit on bus 0.
pub mod devfn {
    /// The MCH host bridge: device 0, function 0.
    pub const MCH: (u8, u8) = (0, 0);
    /// The ICH9 LPC bridge: device 0x1f, function 0.
    pub const LPC: (u8, u8) = (0x1f, 0);
}

/// The VMM side of the host bridge: it maps the ECAM where the firmware asks.
pub trait EcamHost: Send {
    /// The ECAM now decodes at `window` (`(base, size)`), or nowhere (`None`).
    fn ecam_moved(&mut self, window: Option<(u64, u64)>);
    /// The firmware probed for SMRAM/TSEG, which only an SMM build does.
    fn smm_requested(&mut self);
}

/// The VMM side of the LPC bridge: it places the PM block on the I/O bus.
pub trait PmHost: Send {
    /// The PM block now decodes at I/O port `base` (`None`: decoding is off).
    fn pm_moved(&mut self, base: Option<u16>);
}

/// A level-triggered interrupt line (the SCI): the VMM asserts or deasserts its GSI.
pub trait IrqLevel: Send {
    /// Drives the line high (`true`, asserted) or low.
    fn set_level(&self, asserted: bool);
}
