//! The boot timer: one I/O port the guest writes a milestone number to, so the VMM can log
//! when the guest got there on its own clock (as Firecracker's boot-timer device and Cloud
//! Hypervisor's debug port do).
//!
//! From the guest, any program with port access writes one byte, e.g. `outb(42, port)` after
//! `ioperm(port, 1, 1)` (the port is `ghost_boot::layout::BOOT_TIMER_PORT`). Reads return zero.
//!
//! The guest controls how often it writes; only the first [`MAX_REPORTED`] milestones of a
//! boot reach the [`MilestoneSink`], the rest are counted.

use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// Milestones reported per boot; later writes are only counted.
pub const MAX_REPORTED: u32 = 32;

/// Receives the guest's milestones (called on the vCPU thread that wrote the port).
pub trait MilestoneSink: Send {
    /// The guest wrote `value`, `elapsed` after the timer's start.
    fn milestone(&self, value: u8, elapsed: Duration);
    /// The guest wrote more than [`MAX_REPORTED`] milestones; called once, on the first one
    /// not reported.
    fn suppressed(&self) {}
}

/// The boot timer on the PIO bus (one byte wide).
pub struct BootTimer<S: MilestoneSink> {
    start: Instant,
    sink: S,
    writes: u64,
}

impl<S: MilestoneSink> std::fmt::Debug for BootTimer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootTimer")
            .field("start", &self.start)
            .field("writes", &self.writes)
            .finish()
    }
}

impl<S: MilestoneSink> BootTimer<S> {
    /// A timer counting from `start` (the VMM's start, or the restart of a rebooted guest).
    pub fn new(start: Instant, sink: S) -> Self {
        Self {
            start,
            sink,
            writes: 0,
        }
    }

    /// Milestone writes so far, reported or not.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl<S: MilestoneSink> BusDevice for BootTimer<S> {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        // The port is one byte; a wider access counts by its low byte at offset 0.
        let (0, Some(&value)) = (offset, data.first()) else {
            return;
        };
        self.writes = self.writes.saturating_add(1);
        if self.writes <= u64::from(MAX_REPORTED) {
            self.sink.milestone(value, self.start.elapsed());
        } else if self.writes == u64::from(MAX_REPORTED) + 1 {
            self.sink.suppressed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>, Arc<Mutex<u32>>);

    impl MilestoneSink for Log {
        fn milestone(&self, value: u8, _elapsed: Duration) {
            self.0.lock().unwrap().push(value);
        }
        fn suppressed(&self) {
            *self.1.lock().unwrap() += 1;
        }
    }

    #[test]
    fn reports_each_milestone_with_its_value() {
        let log = Log::default();
        let mut timer = BootTimer::new(Instant::now(), log.clone());
        timer.write(0x440, 0, &[1]);
        timer.write(0x440, 0, &[7, 0, 0, 0]);
        let mut byte = [0xaa];
        timer.read(0x440, 0, &mut byte);
        assert_eq!(*log.0.lock().unwrap(), vec![1, 7]);
        assert_eq!(byte, [0], "reads return zero");
    }

    #[test]
    fn a_flooding_guest_is_cut_off_after_max_reported() {
        let log = Log::default();
        let mut timer = BootTimer::new(Instant::now(), log.clone());
        for i in 0..1000u32 {
            timer.write(0x440, 0, &i.to_le_bytes()[..1]);
        }
        assert_eq!(log.0.lock().unwrap().len(), MAX_REPORTED as usize);
        assert_eq!(*log.1.lock().unwrap(), 1, "one suppression notice");
        assert_eq!(timer.writes(), 1000);
    }

    #[test]
    fn empty_and_offset_writes_are_ignored() {
        let log = Log::default();
        let mut timer = BootTimer::new(Instant::now(), log.clone());
        timer.write(0x440, 0, &[]);
        timer.write(0x440, 1, &[5]);
        assert!(log.0.lock().unwrap().is_empty());
        assert_eq!(timer.writes(), 0);
    }
}
