//! The ACPI Generic Event Device (GED, `ACPI0013`): how a hardware-reduced ACPI platform
//! tells the guest that something happened, here that the power button was pressed.
//!
//! The device is one event register on the MMIO bus and one edge-triggered interrupt. The
//! VMM calls [`GedDevice::notify`] with event bits; the bits are latched and the interrupt is
//! raised. The guest's `_EVT` method (in the DSDT) reads the register, which returns the
//! latched bits and clears them, and notifies the ACPI device each bit stands for. Which bit
//! means what is the contract between the VMM and its DSDT (`ghost_boot::layout`); this
//! model only latches and clears.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Bytes of the event register (a DWORD at offset 0 of the device's range).
pub const GED_REGISTER_LEN: u64 = 4;

/// The GED on the MMIO bus.
#[derive(Debug)]
pub struct GedDevice {
    pending: u32,
    irq: EventFd,
}

impl GedDevice {
    /// A GED that raises its interrupt by writing `irq` (a KVM irqfd on an edge-triggered
    /// GSI).
    pub fn new(irq: EventFd) -> Self {
        Self { pending: 0, irq }
    }

    /// Latches `events` (ORed into what the guest has not read yet) and raises the interrupt.
    /// Errors only if the interrupt's eventfd cannot be written.
    pub fn notify(&mut self, events: u32) -> std::io::Result<()> {
        self.pending |= events;
        self.irq.write(1)
    }

    /// The events latched and not yet read by the guest.
    pub fn pending(&self) -> u32 {
        self.pending
    }
}

impl BusDevice for GedDevice {
    /// Returns the bytes of the event register that `data` covers and clears them (bytes past
    /// the register read as zero). A partial read clears only the bytes it returned, so no
    /// event is lost to an odd access width.
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let bytes = self.pending.to_le_bytes();
        for (i, out) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .filter(|&at| at < GED_REGISTER_LEN);
            *out = match at.and_then(|at| usize::try_from(at).ok()) {
                Some(at) => {
                    self.pending &= !(0xff << (at * 8));
                    bytes[at]
                }
                None => 0,
            };
        }
    }

    /// The register is read-only: writes are ignored.
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn ged() -> (GedDevice, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let seen = irq.try_clone().expect("clone");
        (GedDevice::new(irq), seen)
    }

    #[test]
    fn notify_latches_raises_and_a_read_clears() {
        let (mut dev, irq) = ged();
        assert!(irq.read().is_err(), "no interrupt before an event");
        dev.notify(1).expect("notify");
        assert_eq!(irq.read().expect("interrupt raised"), 1);
        let mut reg = [0u8; 4];
        dev.read(0, 0, &mut reg);
        assert_eq!(u32::from_le_bytes(reg), 1);
        dev.read(0, 0, &mut reg);
        assert_eq!(u32::from_le_bytes(reg), 0, "read clears");
    }

    #[test]
    fn events_accumulate_until_read_and_partial_reads_lose_nothing() {
        let (mut dev, irq) = ged();
        dev.notify(1).expect("notify");
        dev.notify(1 << 9).expect("notify");
        assert_eq!(irq.read().expect("two interrupts"), 2);
        assert_eq!(dev.pending(), 1 | 1 << 9);
        let mut byte = [0u8; 1];
        dev.read(0, 1, &mut byte);
        assert_eq!(byte, [2], "second byte: bit 9");
        assert_eq!(dev.pending(), 1, "only the byte read was cleared");
        dev.read(0, 0, &mut byte);
        assert_eq!(byte, [1]);
        assert_eq!(dev.pending(), 0);
    }

    #[test]
    fn junk_accesses_neither_panic_nor_clear() {
        let (mut dev, _irq) = ged();
        dev.notify(0xffff_ffff).expect("notify");
        dev.write(0, 0, &[0; 4]);
        assert_eq!(dev.pending(), 0xffff_ffff, "writes are ignored");
        let mut far = [0xaau8; 8];
        dev.read(0, u64::MAX - 2, &mut far);
        assert_eq!(far, [0; 8]);
        dev.read(0, 4, &mut far);
        assert_eq!(far, [0; 8]);
        assert_eq!(dev.pending(), 0xffff_ffff);
        let mut wide = [0u8; 8];
        dev.read(0, 2, &mut wide);
        assert_eq!(wide, [0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(dev.pending(), 0x0000_ffff);
        dev.read(0, 0, &mut []);
        assert_eq!(dev.pending(), 0x0000_ffff);
    }
}
