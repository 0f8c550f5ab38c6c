//! Fuzzes the CMOS RTC (`ghost_devices::rtc::Rtc`) against any sequence of guest port
//! accesses, VMM ticks and clock jumps: it must never panic or hang, register D must always
//! report a good battery, every deadline it asks for must lie ahead (a past one would spin
//! the VMM's timer), and once the guest writes sane control registers the clock must run and
//! UIP must clear.
//!
//! Input layout:
//! - bytes 0..8: the host's UTC seconds at creation (i64, little endian; any value);
//! - bytes 8..12: its nanoseconds (u32; any value);
//! - then 3-byte operations `[op, a, b]`, `op % 7`:
//!   0 write `a` to the index port; 1 write `b` to the data port; 2 read the data port;
//!   3 advance the clock by `b << (a % 48)` ns (up to about a year);
//!   4 `tick()`, and with `a` odd jump to the deadline it returns and tick again (what the
//!   VMM's timerfd does);
//!   5 a 16-bit write `[a, b]` at the index port (index, then data);
//!   6 a read of `a % 4` bytes at offset `b % 4`.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ghost_devices::rtc::{Clock, Rtc, RtcTimer, WallTime};
use ghost_devices::BusDevice;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A clock that moves only when the input says so.
#[derive(Clone)]
struct FakeClock {
    wall: WallTime,
    base: Instant,
    elapsed_ns: Arc<AtomicU64>,
}

impl FakeClock {
    fn advance(&self, ns: u64) {
        let now = self.elapsed_ns.load(Ordering::Relaxed);
        self.elapsed_ns
            .store(now.saturating_add(ns), Ordering::Relaxed);
    }

    fn advance_to(&self, t: Instant) {
        let ns = t.saturating_duration_since(self.now()).as_nanos();
        self.advance(u64::try_from(ns).unwrap_or(u64::MAX));
    }
}

impl Clock for FakeClock {
    fn wall(&self) -> WallTime {
        self.wall
    }

    fn now(&self) -> Instant {
        let ns = self.elapsed_ns.load(Ordering::Relaxed);
        self.base
            .checked_add(Duration::from_nanos(ns))
            .unwrap_or(self.base)
    }
}

/// Checks that every deadline the RTC reports on a guest access lies ahead.
struct CheckedTimer(FakeClock);

impl RtcTimer for CheckedTimer {
    fn arm(&mut self, deadline: Instant) {
        assert!(deadline > self.0.now(), "armed deadline not ahead");
    }
}

const INDEX: u64 = 0;
const DATA: u64 = 1;

fn read_reg(rtc: &mut Rtc<FakeClock>, index: u8) -> u8 {
    rtc.write(0x70, INDEX, &[index]);
    let mut b = [0];
    rtc.read(0x70, DATA, &mut b);
    b[0]
}

fn write_reg(rtc: &mut Rtc<FakeClock>, index: u8, value: u8) {
    rtc.write(0x70, INDEX, &[index]);
    rtc.write(0x70, DATA, &[value]);
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let (head, ops) = data.split_at(12);
    let secs = i64::from_le_bytes(head[..8].try_into().unwrap());
    let nanos = u32::from_le_bytes(head[8..12].try_into().unwrap());
    let clock = FakeClock {
        wall: WallTime { secs, nanos },
        base: Instant::now(),
        elapsed_ns: Arc::default(),
    };
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let timer = CheckedTimer(clock.clone());
    let mut rtc = Rtc::new(clock.clone(), irq, Box::new(timer));

    for op in ops.chunks_exact(3) {
        let (a, b) = (op[1], op[2]);
        match op[0] % 7 {
            0 => rtc.write(0x70, INDEX, &[a]),
            1 => rtc.write(0x70, DATA, &[b]),
            2 => {
                let mut v = [0];
                rtc.read(0x70, DATA, &mut v);
            }
            3 => clock.advance(u64::from(b) << (a % 48)),
            4 => {
                let next = rtc.tick();
                if let Some(t) = next {
                    assert!(t > clock.now(), "tick deadline not ahead");
                    if a & 1 == 1 {
                        clock.advance_to(t);
                        let _ = rtc.tick();
                    }
                }
            }
            5 => rtc.write(0x70, INDEX, &[a, b]),
            _ => {
                let mut v = [0u8; 3];
                let len = usize::from(a % 4);
                rtc.read(0x70, u64::from(b % 4), &mut v[..len]);
            }
        }
    }

    // Whatever came before, the battery is good, and sane control registers make the clock
    // run with UIP clear outside the last 244 µs of a second.
    assert_eq!(read_reg(&mut rtc, 0x0d), 0x80);
    write_reg(&mut rtc, 0x0a, 0x26);
    write_reg(&mut rtc, 0x0b, 0x02);
    let uip_clear = (0..3).any(|_| {
        clock.advance(300_000);
        read_reg(&mut rtc, 0x0a) & 0x80 == 0
    });
    assert!(uip_clear, "UIP stuck");
    let before = read_reg(&mut rtc, 0x00);
    clock.advance(1_000_000_000);
    if clock.elapsed_ns.load(Ordering::Relaxed) < u64::MAX {
        assert_ne!(read_reg(&mut rtc, 0x00), before, "clock stopped");
    }
}
