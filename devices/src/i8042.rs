//! A minimal i8042 keyboard controller: just enough for the PC reset path.
//!
//! Linux falls back to "pulse the reset line" (command 0xFE on port 0x64) when ACPI reset is
//! not taken. There is no keyboard, and reads say so the way an absent controller does: all
//! ones (status with the parity and time-out error bits set). UEFI firmware's PS/2 keyboard
//! driver takes that as "no controller" at once; with an always-empty controller it would
//! spend a quarter of a million port reads on time-outs before giving up.

use crate::bus::BusDevice;
use crate::power::{PowerAction, PowerHandler};

/// First port of the controller (data); the command/status port is at +4.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Ports spanned from [`I8042_DATA_PORT`] (0x60..=0x64).
pub const I8042_PORT_LEN: u64 = 5;
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 on the PIO bus.
#[derive(Debug)]
pub struct I8042Device<H: PowerHandler> {
    handler: H,
}

impl<H: PowerHandler> I8042Device<H> {
    /// A controller that reports a CPU reset command to `handler`.
    pub fn new(handler: H) -> Self {
        Self { handler }
    }
}

impl<H: PowerHandler> BusDevice for I8042Device<H> {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        // Nobody decodes the ports: all ones, status and data.
        data.fill(0xff);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.handler.power_action(PowerAction::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Count(Arc<AtomicUsize>);
    impl PowerHandler for Count {
        fn power_action(&self, a: PowerAction) {
            assert_eq!(a, PowerAction::Reset);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_reset_command_resets() {
        let c = Count::default();
        let mut dev = I8042Device::new(c.clone());
        dev.write(0x60, 0, &[CMD_RESET_CPU]);
        dev.write(0x60, 4, &[0xad]);
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        dev.write(0x60, 4, &[CMD_RESET_CPU]);
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        let mut s = [0u8];
        dev.read(0x60, 4, &mut s);
        assert_eq!(s, [0xff], "no controller: parity and time-out bits set");
    }
}
