//! The 16550A UART (from `vm-superio`) as a [`BusDevice`].
//!
//! Output goes to any `Write` (stdout, a file, a sink). Input is pushed in by the VMM's event
//! loop with [`SerialDevice::enqueue_input`]; when the guest has drained the receive FIFO the
//! `input_ready` eventfd fires so the loop can feed more, without ever blocking a vCPU.

use std::io::Write;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Number of I/O ports a 16550 occupies.
pub const SERIAL_PORT_LEN: u64 = 8;

/// Raises the UART's interrupt by writing an eventfd (wired to an irqfd by the VMM).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Tells the VMM, through an eventfd, that the guest emptied the receive FIFO.
#[derive(Debug)]
pub struct InputReady(EventFd);

impl SerialEvents for InputReady {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A failed wake-up only delays input until the next one; nothing to recover.
        let _ = self.0.write(1);
    }
}

/// Sink for the guest's serial output.
pub type SerialOutput = Box<dyn Write + Send>;

/// A 16550A UART on the PIO bus.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, InputReady, SerialOutput>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART that raises `irq`, signals `input_ready` when its receive FIFO drains, and
    /// writes what the guest transmits to `out`.
    pub fn new(irq: EventFd, input_ready: EventFd, out: SerialOutput) -> Self {
        Self {
            uart: Serial::with_events(EventFdTrigger(irq), InputReady(input_ready), out),
        }
    }

    /// Room left in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues bytes typed at the console for the guest; returns how many were taken (at most
    /// [`Self::input_capacity`]).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.uart.fifo_capacity());
        if n == 0 {
            return 0;
        }
        // Only fails if raising the interrupt fails; the bytes are queued either way and the
        // guest finds them on its next poll of the line status register.
        let _ = self.uart.enqueue_raw_bytes(&bytes[..n]);
        n
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        // The UART's registers are bytes; a wider access reads the first register only.
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // A failed console write loses that byte (vm-superio counts it); the guest must
            // never stall on a slow or closed terminal.
            let _ = self.uart.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn efd() -> EventFd {
        EventFd::new(libc_nonblock()).unwrap()
    }

    fn libc_nonblock() -> i32 {
        vmm_sys_util::eventfd::EFD_NONBLOCK
    }

    #[test]
    fn transmits_bytes_and_raises_irq() {
        let out = Shared::default();
        let irq = efd();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), efd(), Box::new(out.clone()));
        // Enable the THR-empty interrupt, then send "hi".
        dev.write(0x3f8, 1, &[0x02]);
        dev.write(0x3f8, 0, b"h");
        dev.write(0x3f8, 0, b"i");
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi");
        assert!(irq.read().unwrap() >= 1);
    }

    #[test]
    fn input_is_bounded_by_fifo_and_signals_when_drained() {
        let ready = efd();
        let mut dev = SerialDevice::new(efd(), ready.try_clone().unwrap(), Box::new(Vec::new()));
        let cap = dev.input_capacity();
        let big = vec![b'x'; cap + 10];
        assert_eq!(dev.enqueue_input(&big), cap);
        assert_eq!(dev.enqueue_input(b"y"), 0);
        let mut b = [0u8; 1];
        for _ in 0..cap {
            dev.read(0x3f8, 0, &mut b);
            assert_eq!(b[0], b'x');
        }
        assert_eq!(ready.read().unwrap(), 1);
        assert_eq!(dev.input_capacity(), cap);
    }

    #[test]
    fn odd_offsets_and_sizes_do_not_panic() {
        let mut dev = SerialDevice::new(efd(), efd(), Box::new(std::io::sink()));
        let mut empty: [u8; 0] = [];
        dev.read(0, 0, &mut empty);
        dev.write(0, 0, &[]);
        let mut wide = [0u8; 4];
        for off in [0u64, 7, 8, 255, 256, u64::MAX] {
            dev.read(0, off, &mut wide);
            dev.write(0, off, &wide);
        }
    }
}
