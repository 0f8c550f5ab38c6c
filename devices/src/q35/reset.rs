//! The ICH9 reset control register (RST_CNT) at I/O port 0xCF9.
//!
//! Writing a value with RST_CPU (bit 2) set resets the machine: edk2's reset library writes
//! `0x06` (SYS_RST | RST_CPU), and the FADT's reset register points here with that value.
//! SYS_RST (bit 1) and FULL_RST (bit 3) are stored and read back. The port lies inside the
//! dword of the PCI config address register (0xCF8), so [`crate::pci::PciConfigIo`] forwards
//! byte accesses at 0xCF9 here.

use crate::power::{PowerAction, PowerHandler};

/// The reset control port.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// The value the FADT's reset register tells the OS to write.
pub const RESET_VALUE: u8 = 0x06;
const RST_CPU: u8 = 1 << 2;
const STORED: u8 = (1 << 1) | (1 << 3);

/// RST_CNT.
pub struct ResetControl {
    value: u8,
    power: Box<dyn PowerHandler>,
}

impl std::fmt::Debug for ResetControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetControl")
            .field("value", &self.value)
            .finish()
    }
}

impl ResetControl {
    /// The register, sending resets to `power`.
    pub fn new(power: Box<dyn PowerHandler>) -> Self {
        Self { value: 0, power }
    }

    /// The guest reads RST_CNT.
    pub fn read(&self) -> u8 {
        self.value
    }

    /// The guest writes RST_CNT.
    pub fn write(&mut self, value: u8) {
        self.value = value & STORED;
        if value & RST_CPU != 0 {
            self.power.power_action(PowerAction::Reset);
        }
    }
}
