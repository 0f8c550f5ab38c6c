//! The ACPI power device: the one I/O port that the FADT's sleep control, sleep status and
//! reset registers point at (hardware-reduced ACPI, as Cloud Hypervisor does).
//!
//! The guest's `poweroff` writes `SLP_TYP << 2 | SLP_EN` with the `_S5_` sleep type; its
//! `reboot` writes the FADT's reset value.

use crate::bus::BusDevice;

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Soft-off (ACPI S5).
    PowerOff,
    /// Reset the machine.
    Reset,
}

/// Receives the guest's power actions (the VMM stops the vCPUs and acts).
pub trait PowerHandler: Send {
    /// Called on the vCPU thread that made the request.
    fn power_action(&self, action: PowerAction);
}

/// `SLP_EN` in the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// `SLP_TYP` field in the sleep control register.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// Decodes a write to the power port.
pub fn decode(value: u8, s5_slp_typ: u8, reset_value: u8) -> Option<PowerAction> {
    if value & SLP_EN != 0 {
        ((value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == s5_slp_typ).then_some(PowerAction::PowerOff)
    } else {
        (value == reset_value).then_some(PowerAction::Reset)
    }
}

/// The ACPI power device on the PIO bus (one byte wide).
pub struct AcpiPowerDevice<H: PowerHandler> {
    handler: H,
    s5_slp_typ: u8,
    reset_value: u8,
}

impl<H: PowerHandler> std::fmt::Debug for AcpiPowerDevice<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPowerDevice")
            .field("s5_slp_typ", &self.s5_slp_typ)
            .field("reset_value", &self.reset_value)
            .finish()
    }
}

impl<H: PowerHandler> AcpiPowerDevice<H> {
    /// A power device that reports soft-off for `s5_slp_typ` (the DSDT's `_S5_`) and reset for
    /// `reset_value` (the FADT's reset value).
    pub fn new(handler: H, s5_slp_typ: u8, reset_value: u8) -> Self {
        Self {
            handler,
            s5_slp_typ,
            reset_value,
        }
    }
}

impl<H: PowerHandler> BusDevice for AcpiPowerDevice<H> {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; reads as zero.
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset != 0 {
            return;
        }
        if let Some(action) = data
            .first()
            .and_then(|&v| decode(v, self.s5_slp_typ, self.reset_value))
        {
            self.handler.power_action(action);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<PowerAction>>>);
    impl PowerHandler for Record {
        fn power_action(&self, action: PowerAction) {
            self.0.lock().unwrap().push(action);
        }
    }

    #[test]
    fn decodes_s5_and_reset_only() {
        assert_eq!(decode(5 << 2 | SLP_EN, 5, 1), Some(PowerAction::PowerOff));
        assert_eq!(decode(1, 5, 1), Some(PowerAction::Reset));
        // S3 (suspend) is not soft-off; SLP_TYP without SLP_EN does nothing.
        assert_eq!(decode(3 << 2 | SLP_EN, 5, 1), None);
        assert_eq!(decode(5 << 2, 5, 1), None);
        assert_eq!(decode(0, 5, 1), None);
    }

    #[test]
    fn device_reports_actions_and_ignores_junk() {
        let rec = Record::default();
        let mut dev = AcpiPowerDevice::new(rec.clone(), 5, 1);
        for v in 0..=255u8 {
            let s5 = v & SLP_EN != 0 && (v >> 2) & 0b111 == 5;
            if !s5 && v != 1 {
                dev.write(0x600, 0, &[v]);
            }
        }
        dev.write(0x600, 1, &[1]);
        dev.write(0x600, 0, &[]);
        assert!(rec.0.lock().unwrap().is_empty());
        dev.write(0x600, 0, &[1]);
        dev.write(0x600, 0, &[5 << 2 | SLP_EN, 0, 0, 0]);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![PowerAction::Reset, PowerAction::PowerOff]
        );
        let mut b = [0xffu8; 2];
        dev.read(0x600, 0, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
