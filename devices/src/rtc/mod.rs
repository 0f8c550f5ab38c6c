//! The MC146818 CMOS real-time clock and its 128 bytes of NVRAM, on I/O ports 0x70 (index)
//! and 0x71 (data), raising IRQ 8.
//!
//! What the guest sees:
//! - the time and date (registers 0x00-0x09 and the century at 0x32) start at the host's UTC
//!   and run from then on; BCD or binary and 12- or 24-hour as register B asks;
//! - register A's UIP bit, set only in the last 244 µs before each second boundary (as on the
//!   chip), so `mc146818_get_time` never spins long;
//! - register B's SET bit halts the clock while the guest writes a new time (Linux's
//!   `mc146818_set_time`, what `hwclock --systohc` ends in); the written time runs from the
//!   moment SET is cleared. Holding the divider in reset (register A's DV bits 11x) halts it
//!   too, and releasing it puts the next update 500 ms later, as the data sheet says;
//! - update-ended, alarm (with "don't care" values 0xC0-0xFF) and periodic interrupts, whose
//!   flags sit in register C until the guest reads it (reading clears them and lowers the
//!   line); register D always reports a good battery.
//!
//! Register B's daylight-saving (DSE) and square-wave (SQWE) bits are kept but do nothing;
//! the weekday register follows the date (a written weekday reads back only while the
//! clock is halted); there is no second NVRAM bank (ports 0x72/0x73).
//!
//! The clock keeps no frozen time: while it runs, the guest's time is the host's monotonic
//! clock plus an offset (the oscillator's divider chain plus the seconds the guest set), so
//! reads are always exact and nothing needs to run between them.
//!
//! A port access only happens on a vCPU, so interrupts need a time source: the VMM calls
//! [`Rtc::tick`] from its event loop (a timerfd), at the deadline `tick` returns. A guest
//! access that makes an interrupt due sooner (it enables one, changes the rate, sets the
//! time) reports the new deadline through [`RtcTimer`]. With the interrupt line already up
//! (register C not read yet) nothing more can reach the guest, so no deadline is asked for:
//! a guest that stops reading register C costs no host wake-ups, and missed periodic ticks
//! are coalesced into one flag rather than queued.
//!
//! Every byte the guest writes is untrusted: junk BCD, month 0 or 31 February in the time
//! registers are clamped to the nearest valid date when the clock starts from them, and
//! nothing a guest writes can panic, block or allocate.

mod calendar;
pub mod nvram;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::EventFd;

use self::calendar::{DateTime, Format, FIRST_YEAR, LAST_YEAR, SPAN_SECS};
use crate::bus::BusDevice;

/// Number of I/O ports the RTC occupies (index at offset 0, data at offset 1).
pub const RTC_PORT_LEN: u64 = 2;
/// Bytes of CMOS: the clock's registers (0x00-0x0d) and NVRAM (0x0e-0x7f).
pub const CMOS_SIZE: usize = 128;
/// The fastest periodic interrupt the chip makes (register A rate 3); slower rates halve it.
pub const MAX_PERIODIC_HZ: u32 = 8192;

// Register indices.
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const CENTURY: u8 = nvram::CMOS_CENTURY;
/// First NVRAM index.
const NVRAM_START: u8 = 0x0e;
/// The registers that hold the time and date.
const TIME_REGS: [u8; 8] = [SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY];

/// The index port's NMI mask bit, which this model ignores.
const INDEX_MASK: u8 = 0x7f;

// Register A.
const A_UIP: u8 = 0x80;
const A_DV_MASK: u8 = 0x70;
const A_RATE_MASK: u8 = 0x0f;
/// Divider 010: the 32.768 kHz time base, running. Rate 6: 1024 Hz.
const A_DEFAULT: u8 = 0x26;

// Register B.
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
/// 24-hour BCD with every interrupt off, as firmware leaves it (Linux's `rtc_cmos` refuses
/// a clock in 12-hour mode).
const B_DEFAULT: u8 = B_24H;

// Register C. The flags share their bit positions with register B's enables.
const C_IRQF: u8 = 0x80;
const C_PF: u8 = B_PIE;
const C_AF: u8 = B_AIE;
const C_UF: u8 = B_UIE;
const C_FLAGS: u8 = C_PF | C_AF | C_UF;

// Register D: valid RAM and time (the battery is good).
const D_VRT: u8 = 0x80;

/// An alarm register byte with both top bits set matches any value.
const ALARM_DONT_CARE: u8 = 0xc0;

const NS_PER_SEC: u64 = 1_000_000_000;
/// The oscillator: ticks per second of the divider chain.
const CHAIN_HZ: u64 = 32_768;
/// How long before a second boundary UIP is set.
const UIP_WINDOW_NS: u64 = 244_000;
/// Where the divider chain stands when the guest releases it from reset: the first update
/// comes 500 ms later.
const RESET_RELEASE_PHASE_NS: u64 = NS_PER_SEC / 2;

/// Wall-clock time: seconds and nanoseconds since 1970-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    /// Whole seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds into that second (below 1 000 000 000).
    pub nanos: u32,
}

/// Where the RTC gets its time from (a fake one in tests).
pub trait Clock: Send {
    /// The current UTC time; read once, when the RTC is made.
    fn wall(&self) -> WallTime;
    /// A monotonic instant; the clock runs on it (and never goes back with it).
    fn now(&self) -> Instant;
}

/// The host's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> WallTime {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => WallTime {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            // A host clock before 1970: the RTC starts at its first second anyway.
            Err(_) => WallTime { secs: 0, nanos: 0 },
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Learns when the RTC needs [`Rtc::tick`] sooner than the deadline last returned by `tick`
/// (the guest enabled an interrupt, changed the periodic rate, set the time or read
/// register C).
///
/// Called on a vCPU thread with the RTC's lock held: it must neither block nor lock the RTC.
/// Arming a timerfd, or writing an eventfd that makes the event loop call `tick`, is right.
pub trait RtcTimer: Send {
    /// Call [`Rtc::tick`] at `deadline` (perhaps already past).
    fn arm(&mut self, deadline: Instant);
}

/// Wakes an event loop, which then calls [`Rtc::tick`] and arms its timer with the result.
impl RtcTimer for EventFd {
    fn arm(&mut self, _deadline: Instant) {
        // A failed wake-up (the counter is full) means one is already pending.
        let _ = self.write(1);
    }
}

/// Errors from setting CMOS bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtcError {
    /// The index is one of the clock's registers (0x00-0x0d, the century at 0x32) or past
    /// the 128 bytes of CMOS.
    #[error("CMOS index {0:#x} is not an NVRAM byte (0x0e-0x7f, except the century at 0x32)")]
    NotNvram(u8),
}

/// The divider chain while it runs: where it stood (`phase` ns) at `start` ns on the
/// monotonic clock. It counts nanoseconds; a second boundary is every multiple of 10^9.
#[derive(Debug, Clone, Copy)]
struct Chain {
    start: u64,
    phase: u64,
}

impl Chain {
    fn at(self, mono: u64) -> u64 {
        mono.saturating_sub(self.start).saturating_add(self.phase)
    }

    /// The monotonic nanosecond at which the chain reads `chain_ns` (not before `start`).
    fn mono_at(self, chain_ns: u64) -> u64 {
        self.start
            .saturating_add(chain_ns.saturating_sub(self.phase))
    }
}

/// What an alarm register matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlarmField {
    Any,
    At(u32),
    Never,
}

impl AlarmField {
    /// The values in `0..limit` that `self` lets through.
    fn values(self, limit: u32) -> std::ops::Range<u32> {
        match self {
            Self::Any => 0..limit,
            Self::At(v) => v..v + 1,
            Self::Never => 0..0,
        }
    }
}

/// The MC146818 RTC on the PIO bus. See the module documentation.
pub struct Rtc<C: Clock = SystemClock> {
    clock: C,
    irq: EventFd,
    timer: Box<dyn RtcTimer>,
    /// NVRAM, the alarm and control registers, and the time registers as last written or
    /// frozen (while the clock runs, reads of those are computed instead).
    cmos: [u8; CMOS_SIZE],
    index: u8,
    /// Origin of the monotonic nanoseconds below.
    epoch: Instant,
    /// `None` while the guest holds the divider in reset.
    chain: Option<Chain>,
    /// The guest's time in seconds (before wrapping into the clock's span) is `secs_base`
    /// plus the chain's whole seconds, while the clock runs.
    secs_base: i64,
    /// Chain nanosecond up to which updates, alarms and periodic ticks have been flagged.
    seen: u64,
    /// Register C's PF/AF/UF.
    flags: u8,
    /// Register C's IRQF: the interrupt line.
    irq_line: bool,
    /// The deadline the VMM last learned (from `tick` or `RtcTimer::arm`).
    armed: Option<Instant>,
}

impl<C: Clock> std::fmt::Debug for Rtc<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("reg_a", &self.cmos[usize::from(REG_A)])
            .field("reg_b", &self.cmos[usize::from(REG_B)])
            .field("flags", &self.flags)
            .field("irq_line", &self.irq_line)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Rtc<C> {
    /// An RTC showing `clock`'s current UTC time, raising IRQ 8 through `irq` (an irqfd;
    /// the line is edge-triggered) and asking for [`Self::tick`] through `timer`.
    ///
    /// Registers start as firmware leaves them: 32.768 kHz divider with 1024 Hz rate (A =
    /// 0x26), 24-hour BCD with interrupts off (B = 0x02), no flags, battery good; NVRAM
    /// zero.
    pub fn new(clock: C, irq: EventFd, timer: Box<dyn RtcTimer>) -> Self {
        let wall = clock.wall();
        let epoch = clock.now();
        let nanos = u64::from(wall.nanos).min(NS_PER_SEC - 1);
        let mut cmos = [0u8; CMOS_SIZE];
        cmos[usize::from(REG_A)] = A_DEFAULT;
        cmos[usize::from(REG_B)] = B_DEFAULT;
        cmos[usize::from(REG_D)] = D_VRT;
        Self {
            clock,
            irq,
            timer,
            cmos,
            index: 0,
            epoch,
            // The chain's phase follows the host's, so guest seconds tick with host seconds.
            chain: Some(Chain {
                start: 0,
                phase: nanos,
            }),
            secs_base: wall.secs.clamp(0, SPAN_SECS - 1),
            seen: nanos,
            flags: 0,
            irq_line: false,
            armed: None,
        }
    }

    /// Sets NVRAM byte `index` (0x0e-0x7f except the century at 0x32), e.g. the memory size
    /// bytes from [`nvram::memory_size_bytes`]. The guest may overwrite it.
    pub fn set_nvram(&mut self, index: u8, value: u8) -> Result<(), RtcError> {
        self.cmos[nvram_slot(index)?] = value;
        Ok(())
    }

    /// Sets several NVRAM bytes (index, value); stops at the first index that is not NVRAM.
    pub fn set_nvram_bytes(&mut self, bytes: &[(u8, u8)]) -> Result<(), RtcError> {
        bytes
            .iter()
            .try_for_each(|&(index, value)| self.set_nvram(index, value))
    }

    /// NVRAM byte `index` (0x0e-0x7f except the century at 0x32) as the guest last left it.
    pub fn nvram(&self, index: u8) -> Result<u8, RtcError> {
        Ok(self.cmos[nvram_slot(index)?])
    }

    /// Raises the interrupts that are due and returns when to call again: `None` while no
    /// enabled interrupt can fire (none is enabled, the clock is halted, or the line is
    /// already up until the guest reads register C). The VMM calls it from its event loop
    /// when the timer it armed with the last result (or through [`RtcTimer::arm`]) expires;
    /// calling it early or late is harmless (late interrupts are coalesced). It reads the
    /// time from the RTC's own [`Clock`], the one guest accesses see.
    pub fn tick(&mut self) -> Option<Instant> {
        let mono = self.mono_now();
        self.catch_up(mono);
        self.armed = self.deadline(mono);
        self.armed
    }

    /// When [`Self::tick`] is next needed, without raising anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline(self.mono_now())
    }

    fn mono_now(&self) -> u64 {
        let since = self.clock.now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, mono: u64) -> Option<Instant> {
        self.epoch.checked_add(Duration::from_nanos(mono))
    }

    fn reg(&self, index: u8) -> u8 {
        self.cmos[usize::from(index & INDEX_MASK)]
    }

    fn format(&self) -> Format {
        let b = self.reg(REG_B);
        Format {
            binary: b & B_DM_BINARY != 0,
            hour24: b & B_24H != 0,
        }
    }

    /// The clock counts seconds: the divider runs and SET is clear.
    fn counting(&self) -> bool {
        self.chain.is_some() && self.reg(REG_B) & B_SET == 0
    }

    /// The guest's time in seconds since 1970 (unwrapped) at chain nanosecond `chain_ns`.
    fn guest_secs(&self, chain_ns: u64) -> i64 {
        let whole = i64::try_from(chain_ns / NS_PER_SEC).unwrap_or(i64::MAX);
        self.secs_base.saturating_add(whole)
    }

    /// The guest's time now, while the clock counts.
    fn now_datetime(&self, mono: u64) -> Option<DateTime> {
        let chain = self.chain.filter(|_| self.counting())?;
        Some(DateTime::from_unix(self.guest_secs(chain.at(mono))))
    }

    /// Writes the running time into the time registers, so they hold it while the clock is
    /// halted (or until it restarts from them).
    fn freeze_time(&mut self, mono: u64) {
        let Some(t) = self.now_datetime(mono) else {
            return;
        };
        let f = self.format();
        let year = t.year % 100;
        let century = t.year / 100;
        for (index, value) in [
            (SECONDS, f.encode(t.second)),
            (MINUTES, f.encode(t.minute)),
            (HOURS, f.encode_hour(t.hour)),
            (WEEKDAY, f.encode(t.weekday)),
            (DAY, f.encode(t.day)),
            (MONTH, f.encode(t.month)),
            (YEAR, f.encode(u8::try_from(year).unwrap_or(0))),
            (CENTURY, f.encode(u8::try_from(century).unwrap_or(0))),
        ] {
            self.cmos[usize::from(index)] = value;
        }
    }

    /// The time the registers hold, as seconds since 1970, clamped to a valid date. The
    /// weekday register is not used (the date determines it). A century register that is
    /// not 19-21 is ignored and the year taken as 1970-2069, as Linux does without one.
    fn written_secs(&self) -> i64 {
        let f = self.format();
        let yy = f.decode(self.reg(YEAR)).min(99);
        let century = match f.decode(self.reg(CENTURY)) {
            c @ 19..=21 => u16::from(c),
            _ if yy < 70 => 20,
            _ => 19,
        };
        DateTime {
            year: (century * 100 + u16::from(yy)).clamp(FIRST_YEAR, LAST_YEAR),
            month: f.decode(self.reg(MONTH)),
            day: f.decode(self.reg(DAY)),
            hour: f.decode_hour(self.reg(HOURS)),
            minute: f.decode(self.reg(MINUTES)),
            second: f.decode(self.reg(SECONDS)),
            weekday: 1,
        }
        .clamped()
        .to_unix()
    }

    /// Starts counting from the time registers, keeping the chain's phase: the next second
    /// boundary comes when the chain reaches one.
    fn start_from_registers(&mut self, mono: u64) {
        if let Some(chain) = self.chain {
            let whole = i64::try_from(chain.at(mono) / NS_PER_SEC).unwrap_or(i64::MAX);
            self.secs_base = self.written_secs().saturating_sub(whole);
        }
    }

    /// The periodic interrupt's period in chain ticks, if register A selects one.
    fn periodic_ticks(&self) -> Option<u64> {
        let rate = self.reg(REG_A) & A_RATE_MASK;
        // Rates 1 and 2 repeat 8 and 9 (256 and 128 Hz) on a 32.768 kHz time base.
        let rate = match rate {
            0 => return None,
            1 | 2 => rate + 7,
            r => r,
        };
        let fastest = CHAIN_HZ / u64::from(MAX_PERIODIC_HZ);
        Some((1u64 << (rate - 1)).max(fastest))
    }

    /// What the three alarm registers match, in the current format.
    fn alarm_fields(&self) -> [AlarmField; 3] {
        let f = self.format();
        let field = |index: u8, limit: u8, encode: &dyn Fn(u8) -> u8| {
            let b = self.reg(index);
            if b & ALARM_DONT_CARE == ALARM_DONT_CARE {
                return AlarmField::Any;
            }
            (0..limit)
                .find(|&v| encode(v) == b)
                .map_or(AlarmField::Never, |v| AlarmField::At(u32::from(v)))
        };
        [
            field(HOURS_ALARM, 24, &|h| f.encode_hour(h)),
            field(MINUTES_ALARM, 60, &|m| f.encode(m)),
            field(SECONDS_ALARM, 60, &|s| f.encode(s)),
        ]
    }

    /// Seconds (1..=86400) from guest time `secs` to the next second the alarm matches.
    fn next_alarm_after(&self, secs: i64) -> Option<u64> {
        let [hours, minutes, seconds] = self.alarm_fields();
        let tod = u64::try_from(secs.rem_euclid(calendar::SECS_PER_DAY)).unwrap_or(0);
        let first = tod + 1;
        for day in 0..2u64 {
            for h in hours.values(24) {
                let hour_start = day * 86_400 + u64::from(h) * 3600;
                if hour_start + 3599 < first {
                    continue;
                }
                for m in minutes.values(60) {
                    let minute_start = hour_start + u64::from(m) * 60;
                    if minute_start + 59 < first {
                        continue;
                    }
                    let at = match seconds {
                        AlarmField::Any => minute_start.max(first),
                        AlarmField::At(s) if minute_start + u64::from(s) >= first => {
                            minute_start + u64::from(s)
                        }
                        _ => continue,
                    };
                    return Some(at - tod);
                }
            }
        }
        None
    }

    /// Flags the updates, alarms and periodic ticks between the last look and `mono`.
    fn catch_up(&mut self, mono: u64) {
        let Some(chain) = self.chain else {
            return;
        };
        let now = chain.at(mono);
        let seen = self.seen;
        if now <= seen {
            return;
        }
        self.seen = now;
        let mut new = 0;
        if let Some(period) = self.periodic_ticks() {
            if chain_ticks(now) / period > chain_ticks(seen) / period {
                new |= C_PF;
            }
        }
        let (s0, s1) = (seen / NS_PER_SEC, now / NS_PER_SEC);
        if self.counting() && s1 > s0 {
            new |= C_UF;
            let from = self.guest_secs(seen);
            if self
                .next_alarm_after(from)
                .is_some_and(|d| s0.saturating_add(d) <= s1)
            {
                new |= C_AF;
            }
        }
        self.flags |= new;
        self.update_line();
    }

    /// Follows register C's IRQF: raises an edge when the line goes up.
    fn update_line(&mut self) {
        let up = self.flags & self.reg(REG_B) & C_FLAGS != 0;
        if up && !self.irq_line {
            // A failed irqfd write loses this interrupt; the flag stays in register C.
            let _ = self.irq.write(1);
        }
        self.irq_line = up;
    }

    /// When an enabled interrupt is next due.
    fn deadline(&self, mono: u64) -> Option<Instant> {
        if self.irq_line {
            return None;
        }
        let chain = self.chain?;
        let now = chain.at(mono).max(self.seen);
        let enabled = self.reg(REG_B) & C_FLAGS;
        let mut next: Option<u64> = None;
        let mut consider = |chain_ns: Option<u64>| {
            if let Some(t) = chain_ns {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if enabled & B_PIE != 0 {
            if let Some(period) = self.periodic_ticks() {
                let tick = (chain_ticks(now) / period)
                    .saturating_add(1)
                    .saturating_mul(period);
                consider(Some(chain_ns_of_tick(tick)));
            }
        }
        if self.counting() {
            let this_second = now / NS_PER_SEC;
            let boundary = |secs: u64| this_second.saturating_add(secs).saturating_mul(NS_PER_SEC);
            if enabled & B_UIE != 0 {
                consider(Some(boundary(1)));
            }
            if enabled & B_AIE != 0 {
                consider(self.next_alarm_after(self.guest_secs(now)).map(boundary));
            }
        }
        // Only a saturated clock (centuries of uptime) could make a deadline that is not
        // ahead; asking for it would spin the VMM's timer.
        next.filter(|&t| t > now)
            .and_then(|t| self.instant(chain.mono_at(t)))
    }

    /// Tells the VMM when a guest access made an interrupt due sooner than it expects.
    fn rearm(&mut self, mono: u64) {
        let Some(deadline) = self.deadline(mono) else {
            return;
        };
        if self.armed.is_none_or(|armed| deadline < armed) {
            self.armed = Some(deadline);
            self.timer.arm(deadline);
        }
    }

    fn uip(&self, mono: u64) -> bool {
        match self.chain {
            Some(chain) if self.counting() => {
                chain.at(mono) % NS_PER_SEC >= NS_PER_SEC - UIP_WINDOW_NS
            }
            _ => false,
        }
    }

    fn read_register(&mut self, mono: u64) -> u8 {
        let index = self.index;
        match index {
            REG_A => self.reg(REG_A) | if self.uip(mono) { A_UIP } else { 0 },
            REG_C => {
                let value = self.flags | if self.irq_line { C_IRQF } else { 0 };
                self.flags = 0;
                self.update_line();
                value
            }
            REG_D => D_VRT,
            _ if TIME_REGS.contains(&index) && self.counting() => {
                self.freeze_time(mono);
                self.reg(index)
            }
            _ => self.reg(index),
        }
    }

    fn write_register(&mut self, mono: u64, value: u8) {
        let index = self.index;
        match index {
            REG_A => self.write_reg_a(mono, value),
            REG_B => self.write_reg_b(mono, value),
            // Flags and battery status are read-only.
            REG_C | REG_D => {}
            _ if TIME_REGS.contains(&index) => {
                // While the clock runs, a write changes that one field of the running time.
                let counting = self.counting();
                self.freeze_time(mono);
                self.cmos[usize::from(index)] = value;
                if counting {
                    self.start_from_registers(mono);
                }
            }
            _ => self.cmos[usize::from(index)] = value,
        }
    }

    fn write_reg_a(&mut self, mono: u64, value: u8) {
        let was_running = self.chain.is_some();
        let runs = divider_runs(value);
        if was_running && !runs {
            self.freeze_time(mono);
            self.chain = None;
        }
        self.cmos[usize::from(REG_A)] = value & !A_UIP;
        if !was_running && runs {
            self.chain = Some(Chain {
                start: mono,
                phase: RESET_RELEASE_PHASE_NS,
            });
            self.seen = RESET_RELEASE_PHASE_NS;
            if self.counting() {
                self.start_from_registers(mono);
            }
        }
    }

    fn write_reg_b(&mut self, mono: u64, mut value: u8) {
        let was_counting = self.counting();
        if value & B_SET != 0 {
            // Setting SET aborts any update cycle and clears UIE (data sheet).
            value &= !B_UIE;
            self.freeze_time(mono);
        }
        self.cmos[usize::from(REG_B)] = value;
        if !was_counting && self.counting() {
            self.start_from_registers(mono);
        }
        self.update_line();
    }
}

/// Where NVRAM byte `index` is in the CMOS array, if it is one.
fn nvram_slot(index: u8) -> Result<usize, RtcError> {
    if (NVRAM_START..=INDEX_MASK).contains(&index) && index != CENTURY {
        Ok(usize::from(index))
    } else {
        Err(RtcError::NotNvram(index))
    }
}

/// Divider bits 000, 001 and 010 run the chain (010 is the 32.768 kHz time base; the others
/// were other crystals on the original part); 011 and 11x hold it in reset.
fn divider_runs(reg_a: u8) -> bool {
    reg_a & A_DV_MASK <= 0x20
}

/// Whole 32.768 kHz ticks in `chain_ns` nanoseconds.
fn chain_ticks(chain_ns: u64) -> u64 {
    let ticks = u128::from(chain_ns) * u128::from(CHAIN_HZ) / u128::from(NS_PER_SEC);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first chain nanosecond at which `tick` whole ticks have passed.
fn chain_ns_of_tick(tick: u64) -> u64 {
    let ns = (u128::from(tick) * u128::from(NS_PER_SEC)).div_ceil(u128::from(CHAIN_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The port (offset from 0x70) that byte `k` of an access at `offset` reaches.
fn port_at(offset: u64, k: usize) -> Option<u64> {
    offset.checked_add(u64::try_from(k).ok()?)
}

impl<C: Clock> BusDevice for Rtc<C> {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let mono = self.mono_now();
        self.catch_up(mono);
        // A wider access reaches the ports after `offset` byte by byte, as the ISA bus
        // splits it.
        for (k, byte) in data.iter_mut().enumerate() {
            *byte = match port_at(offset, k) {
                // The index register is write-only.
                Some(0) => 0xff,
                Some(1) => self.read_register(mono),
                _ => 0,
            };
        }
        self.rearm(mono);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let mono = self.mono_now();
        self.catch_up(mono);
        for (k, &value) in data.iter().enumerate() {
            match port_at(offset, k) {
                Some(0) => self.index = value & INDEX_MASK,
                Some(1) => self.write_register(mono, value),
                _ => {}
            }
        }
        self.rearm(mono);
    }
}
