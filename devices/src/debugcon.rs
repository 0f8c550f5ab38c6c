//! The firmware debug console: QEMU's `isa-debugcon` at I/O port 0x402, where OVMF writes its
//! debug log one byte at a time.
//!
//! OVMF probes the port first and writes to it only if a read returns [`DEBUGCON_MAGIC`]. Each
//! line the firmware writes becomes one `debug`-level log record (target `firmware`), so
//! `GHOST_LOG=debug` shows the firmware's own account of a boot. Lines are cut at
//! [`MAX_LINE`] bytes; non-printable bytes are dropped.

use crate::bus::BusDevice;

/// The port OVMF's debug library writes to.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What a read of the port returns: how OVMF detects the console.
pub const DEBUGCON_MAGIC: u8 = 0xe9;
/// Longest line kept; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 512;

/// The debug console.
#[derive(Debug)]
pub struct DebugConsole {
    vm: String,
    line: Vec<u8>,
}

impl DebugConsole {
    /// A console whose lines are logged under the name `vm`.
    pub fn new(vm: String) -> Self {
        Self {
            vm,
            line: Vec::with_capacity(MAX_LINE),
        }
    }

    /// The line being written (not yet ended).
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    fn flush(&mut self) {
        if !self.line.is_empty() {
            log::debug!(target: "firmware", "{}: {}", self.vm, String::from_utf8_lossy(&self.line));
            self.line.clear();
        }
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = DEBUGCON_MAGIC;
        }
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        for &b in data {
            match b {
                b'\n' => self.flush(),
                b if (b.is_ascii_graphic() || b == b' ' || b == b'\t')
                    && self.line.len() < MAX_LINE =>
                {
                    self.line.push(b);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_magic_and_collects_lines() {
        let mut c = DebugConsole::new("vm".into());
        let mut b = [0u8; 1];
        c.read(0x402, 0, &mut b);
        assert_eq!(b[0], DEBUGCON_MAGIC);
        c.write(0x402, 0, b"Platform PEIM\r");
        assert_eq!(c.pending(), b"Platform PEIM");
        c.write(0x402, 0, b"\n");
        assert!(c.pending().is_empty());
        for _ in 0..2 * MAX_LINE {
            c.write(0x402, 0, b"x");
        }
        assert_eq!(c.pending().len(), MAX_LINE);
    }
}
