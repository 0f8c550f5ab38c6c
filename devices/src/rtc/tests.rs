//! Device tests for the RTC, on a fake clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;

/// 2026-12-02 13:45:30 UTC (a Wednesday).
const START: i64 = 1_796_219_130;
const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);

#[derive(Clone)]
struct FakeClock {
    wall: WallTime,
    base: Instant,
    elapsed: Arc<Mutex<Duration>>,
}

impl Clock for FakeClock {
    fn wall(&self) -> WallTime {
        self.wall
    }
    fn now(&self) -> Instant {
        self.base + *self.elapsed.lock().unwrap()
    }
}

/// Records what the RTC asked its timer for.
#[derive(Clone, Default)]
struct Armed(Arc<Mutex<Vec<Instant>>>);

impl RtcTimer for Armed {
    fn arm(&mut self, deadline: Instant) {
        self.0.lock().unwrap().push(deadline);
    }
}

struct Fixture {
    rtc: Rtc<FakeClock>,
    clock: FakeClock,
    irq: EventFd,
    armed: Armed,
}

fn fixture(secs: i64, nanos: u32) -> Fixture {
    let clock = FakeClock {
        wall: WallTime { secs, nanos },
        base: Instant::now(),
        elapsed: Arc::default(),
    };
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let armed = Armed::default();
    let rtc = Rtc::new(
        clock.clone(),
        irq.try_clone().unwrap(),
        Box::new(armed.clone()),
    );
    Fixture {
        rtc,
        clock,
        irq,
        armed,
    }
}

impl Fixture {
    fn read(&mut self, index: u8) -> u8 {
        self.rtc.write(0x70, 0, &[index]);
        let mut b = [0];
        self.rtc.read(0x70, 1, &mut b);
        b[0]
    }

    fn write(&mut self, index: u8, value: u8) {
        self.rtc.write(0x70, 0, &[index]);
        self.rtc.write(0x70, 1, &[value]);
    }

    fn advance(&self, by: Duration) {
        *self.clock.elapsed.lock().unwrap() += by;
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Moves the clock to `deadline` (not back) and ticks.
    fn tick_at(&mut self, deadline: Instant) -> Option<Instant> {
        let now = self.now();
        self.advance(deadline.saturating_duration_since(now));
        self.rtc.tick()
    }

    /// Interrupts raised since the last call.
    fn irqs(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    /// Seconds, minutes, hours, weekday, day, month, year, century as read.
    fn time(&mut self) -> [u8; 8] {
        [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|i| self.read(i))
    }

    fn uip(&mut self) -> bool {
        self.read(REG_A) & A_UIP != 0
    }

    /// Linux's `mc146818_set_time`: SET, divider reset, the fields, then both restored.
    fn set_time_like_linux(&mut self, fields: [u8; 7]) {
        let b = self.read(REG_B);
        self.write(REG_B, b | B_SET);
        let a = self.read(REG_A);
        self.write(REG_A, a | 0x70);
        let [year, month, day, hour, minute, second, century] = fields;
        for (i, v) in [
            (9, year),
            (8, month),
            (7, day),
            (4, hour),
            (2, minute),
            (0, second),
        ] {
            self.write(i, v);
        }
        self.write(0x32, century);
        self.write(REG_B, b);
        self.write(REG_A, a);
    }
}

#[test]
fn starts_at_host_utc_in_bcd_then_binary() {
    let mut f = fixture(START, 100_000_000);
    assert_eq!(f.read(REG_A), 0x26);
    assert_eq!(f.read(REG_B), 0x02);
    assert_eq!(f.read(REG_C), 0);
    assert_eq!(f.read(REG_D), 0x80);
    assert_eq!(f.time(), [0x30, 0x45, 0x13, 4, 0x02, 0x12, 0x26, 0x20]);
    f.write(REG_B, B_24H | B_DM_BINARY);
    assert_eq!(f.time(), [30, 45, 13, 4, 2, 12, 26, 20]);
    f.advance(Duration::from_secs(3600 * 11 + 60 * 14 + 29) + 800 * MS);
    // 2026-12-03 00:59:59.9 (Thursday)
    assert_eq!(f.time(), [59, 59, 0, 5, 3, 12, 26, 20]);
}

#[test]
fn twelve_hour_mode_sets_pm_bit() {
    let mut f = fixture(START, 0);
    f.write(REG_B, 0); // 12-hour BCD
    assert_eq!(f.read(HOURS), 0x81); // 1 PM
    f.write(REG_B, B_DM_BINARY);
    assert_eq!(f.read(HOURS), 0x81);
    f.advance(Duration::from_secs(10 * 3600 + 15 * 60)); // 00:00:30
    assert_eq!(f.read(HOURS), 12); // 12 AM
    f.write(REG_B, 0);
    assert_eq!(f.read(HOURS), 0x12);
    f.advance(Duration::from_secs(12 * 3600)); // 12:00:30
    assert_eq!(f.read(HOURS), 0x92); // 12 PM
                                     // A 12-hour time written under SET starts the clock at that hour (the format is the
                                     // one in force when SET clears).
    f.write(REG_B, B_SET);
    f.write(HOURS, 0x87); // 7 PM
    f.write(REG_B, 0);
    f.write(REG_B, B_24H);
    assert_eq!(f.read(HOURS), 0x19);
}

#[test]
fn runs_across_the_century() {
    // 2099-12-31 23:59:59.5 in a running clock.
    let mut f = fixture(4_102_444_799, 500_000_000);
    assert_eq!(f.time(), [0x59, 0x59, 0x23, 5, 0x31, 0x12, 0x99, 0x20]);
    f.advance(500 * MS);
    assert_eq!(f.time(), [0, 0, 0, 6, 0x01, 0x01, 0, 0x21]);
}

#[test]
fn time_set_like_hwclock_runs_from_when_set_clears() {
    let mut f = fixture(START, 250_000_000);
    f.advance(3 * MS);
    // 2030-06-15 08:09:10.
    f.set_time_like_linux([0x30, 0x06, 0x15, 0x08, 0x09, 0x10, 0x20]);
    assert_eq!(f.time(), [0x10, 0x09, 0x08, 7, 0x15, 0x06, 0x30, 0x20]);
    // Released from divider reset, the first update comes 500 ms later.
    f.advance(499 * MS);
    assert_eq!(f.read(SECONDS), 0x10);
    f.advance(MS);
    assert_eq!(f.read(SECONDS), 0x11);
    f.advance(Duration::from_secs(60));
    assert_eq!(f.time(), [0x11, 0x10, 0x08, 7, 0x15, 0x06, 0x30, 0x20]);
}

#[test]
fn set_bit_freezes_the_clock_and_keeps_the_chain_phase() {
    let mut f = fixture(START, 250_000_000);
    f.write(REG_B, B_24H | B_SET);
    assert_eq!(f.read(REG_B), B_24H | B_SET);
    f.advance(Duration::from_secs(5));
    // Frozen at the moment SET went up, and UIP stays clear.
    assert_eq!(f.read(SECONDS), 0x30);
    for _ in 0..1000 {
        f.advance(MS);
        assert!(!f.uip());
    }
    f.write(SECONDS, 0x00);
    f.write(MINUTES, 0x00);
    // The chain is now 0.25 s into a second: the next update is 0.75 s away.
    f.write(REG_B, B_24H);
    assert_eq!(f.time()[..3], [0x00, 0x00, 0x13]);
    f.advance(749 * MS);
    assert_eq!(f.read(SECONDS), 0x00);
    f.advance(MS);
    assert_eq!(f.read(SECONDS), 0x01);
}

#[test]
fn writing_one_field_of_a_running_clock_keeps_the_rest() {
    let mut f = fixture(START, 0);
    f.write(MINUTES, 0x05);
    assert_eq!(f.time()[..3], [0x30, 0x05, 0x13]);
    f.advance(Duration::from_secs(31));
    assert_eq!(f.time()[..3], [0x01, 0x06, 0x13]);
    // The date determines the weekday; a written weekday is not kept once the clock runs.
    f.write(WEEKDAY, 1);
    assert_eq!(f.read(WEEKDAY), 4);
}

#[test]
fn junk_time_registers_start_a_clamped_clock() {
    let mut f = fixture(START, 0);
    f.write(REG_B, B_24H | B_SET);
    for i in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32] {
        f.write(i, 0xff);
    }
    // Frozen registers read back as written.
    assert_eq!(f.time(), [0xff; 8]);
    f.write(REG_B, B_24H);
    // 165 is clamped to 99 (year), 12, 31, 23, 59, 59; century 165 is ignored: 1999.
    assert_eq!(f.time(), [0x59, 0x59, 0x23, 6, 0x31, 0x12, 0x99, 0x19]);
    f.advance(Duration::from_secs(1));
    assert_eq!(f.time(), [0, 0, 0, 7, 0x01, 0x01, 0x00, 0x20]);
    // Month 0, day 0, 31 February.
    f.write(REG_B, B_24H | B_SET);
    f.write(MONTH, 0);
    f.write(DAY, 0);
    f.write(REG_B, B_24H);
    assert_eq!(f.time()[4..6], [0x01, 0x01]);
    f.write(REG_B, B_24H | B_SET);
    f.write(MONTH, 2);
    f.write(DAY, 0x31);
    f.write(REG_B, B_24H);
    assert_eq!(f.time()[4..6], [0x29, 0x02]); // 2000 is a leap year
}

#[test]
fn update_flag_is_read_to_clear_and_raises_irq_only_when_enabled() {
    let mut f = fixture(START, 900_000_000);
    // PF is set at the periodic rate whether PIE is on or not: rate 0 keeps it out of here.
    f.write(REG_A, 0x20);
    f.advance(100 * MS);
    // UF is set at every update, enabled or not; no IRQF without UIE.
    assert_eq!(f.read(REG_C), C_UF);
    assert_eq!(f.read(REG_C), 0);
    assert_eq!(f.irqs(), 0);
    f.write(REG_B, B_24H | B_UIE);
    f.advance(Duration::from_secs(3));
    assert_eq!(f.irqs(), 0); // nothing ran: the VMM's tick raises it
    assert_eq!(f.rtc.tick(), None); // line up: no deadline until register C is read
    assert_eq!(f.irqs(), 1);
    assert_eq!(f.read(REG_C), C_IRQF | C_UF);
    assert_eq!(f.read(REG_C), 0);
    // Enabling an interrupt whose flag is already set raises the line at once.
    f.write(REG_B, B_24H);
    f.advance(Duration::from_secs(1));
    f.write(REG_B, B_24H | B_UIE);
    assert_eq!(f.irqs(), 1);
    // Disabling it lowers the line; IRQF follows.
    f.write(REG_B, B_24H);
    assert_eq!(f.read(REG_C), C_UF);
}

#[test]
fn update_interrupts_follow_tick_deadlines() {
    let mut f = fixture(START, 400_000_000);
    f.write(REG_A, 0x20); // no PF
    assert_eq!(f.rtc.tick(), None);
    f.write(REG_B, B_24H | B_UIE);
    // The write asked the VMM for the next second boundary.
    let boundary = f.now() + 600 * MS;
    assert_eq!(*f.armed.0.lock().unwrap(), [boundary]);
    assert_eq!(f.rtc.next_deadline(), Some(boundary));
    // Early ticks change nothing.
    assert_eq!(f.tick_at(boundary - US), Some(boundary));
    assert_eq!(f.irqs(), 0);
    assert_eq!(f.tick_at(boundary), None);
    assert_eq!(f.irqs(), 1);
    assert_eq!(f.read(SECONDS), 0x31);
    // Reading register C lowers the line and re-arms for the next second.
    f.advance(10 * MS);
    assert_eq!(f.read(REG_C), C_IRQF | C_UF);
    let next = boundary + Duration::from_secs(1);
    assert_eq!(f.armed.0.lock().unwrap().last(), Some(&next));
    for i in 0..5 {
        assert_eq!(f.tick_at(next + Duration::from_secs(i)), None);
        assert_eq!(f.irqs(), 1);
        f.read(REG_C);
    }
    // A halted clock makes no updates.
    f.write(REG_B, B_24H | B_SET | B_UIE);
    assert_eq!(f.rtc.tick(), None);
}

#[test]
fn alarm_matches_with_dont_care_fields() {
    let mut f = fixture(START, 0); // 13:45:30
    f.write(REG_A, 0x20); // no PF
    f.write(HOURS_ALARM, 0xff);
    f.write(MINUTES_ALARM, 0xc0);
    f.write(SECONDS_ALARM, 0x35);
    assert_eq!(f.rtc.next_deadline(), None); // AIE off
    f.write(REG_B, B_24H | B_AIE);
    let at = f.now() + Duration::from_secs(5);
    assert_eq!(f.armed.0.lock().unwrap().last(), Some(&at));
    assert_eq!(f.tick_at(at - MS), Some(at));
    assert_eq!(f.read(REG_C), C_UF); // the updates so far, but no alarm yet
    assert_eq!(f.tick_at(at), None);
    assert_eq!(f.irqs(), 1);
    assert_eq!(f.read(SECONDS), 0x35);
    assert_eq!(f.read(REG_C), C_IRQF | C_AF | C_UF);
    // Every minute at :35.
    assert_eq!(f.rtc.tick(), Some(at + Duration::from_secs(60)));

    // An exact alarm (Linux's: hh:mm:ss) a day away when it has just passed.
    f.write(HOURS_ALARM, 0x13);
    f.write(MINUTES_ALARM, 0x45);
    f.write(SECONDS_ALARM, 0x35);
    assert_eq!(f.rtc.tick(), Some(at + Duration::from_secs(86_400)));
    // An hour-only alarm (minute and second don't care) fires at the top of the hour.
    f.write(HOURS_ALARM, 0x14);
    f.write(MINUTES_ALARM, 0xff);
    f.write(SECONDS_ALARM, 0xff);
    let top = at + Duration::from_secs(14 * 60 + 25);
    assert_eq!(f.rtc.tick(), Some(top));
    // Without AIE the flag is still set when the time comes.
    f.write(REG_B, B_24H);
    f.advance(Duration::from_secs(3600));
    assert_eq!(f.read(REG_C), C_AF | C_UF);
    // An impossible value (not 0xC0-0xFF) never matches.
    f.write(SECONDS_ALARM, 0x60);
    f.write(REG_B, B_24H | B_AIE);
    assert_eq!(f.rtc.tick(), None);
    f.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(f.read(REG_C), C_UF);
}

#[test]
fn alarm_in_binary_twelve_hour_mode() {
    let mut f = fixture(START, 0); // 13:45:30 = 1 PM
    f.write(REG_B, B_DM_BINARY | B_AIE);
    f.write(HOURS_ALARM, 0x81); // 1 PM
    f.write(MINUTES_ALARM, 46);
    f.write(SECONDS_ALARM, 0);
    let at = f.now() + Duration::from_secs(30);
    assert_eq!(f.rtc.tick(), Some(at));
    f.write(HOURS_ALARM, 1); // 1 AM: 12 hours later
    assert_eq!(f.rtc.tick(), Some(at + Duration::from_secs(12 * 3600)));
}

#[test]
fn periodic_interrupts_at_register_a_rate_coalesce() {
    let mut f = fixture(START, 0);
    f.write(REG_B, B_24H | B_PIE);
    // 1024 Hz (rate 6): 32 ticks of 32.768 kHz = 976 562.5 ns.
    let d = f.rtc.tick().unwrap() - f.now();
    assert_eq!(d, Duration::from_nanos(976_563));
    // The VMM is late by 10 ms: one interrupt, not ten.
    f.advance(10 * MS);
    assert_eq!(f.rtc.tick(), None);
    assert_eq!(f.irqs(), 1);
    f.advance(10 * MS);
    assert_eq!(f.rtc.tick(), None);
    assert_eq!(f.irqs(), 0);
    assert_eq!(f.read(REG_C) & (C_IRQF | C_PF), C_IRQF | C_PF);
    // The fastest rate is 8192 Hz (rate 3); rates 1 and 2 are 256 and 128 Hz.
    for (rate, ns) in [
        (3u8, 122_071u64),
        (1, 3_906_250),
        (2, 7_812_500),
        (15, 500_000_000),
    ] {
        f.write(REG_A, 0x20 | rate);
        f.read(REG_C);
        // Align to a chain tick boundary by ticking once first.
        let first = f.rtc.tick().unwrap();
        f.tick_at(first);
        f.read(REG_C);
        let next = f.rtc.tick().unwrap();
        let gap = (next - first).as_nanos();
        assert!(gap.abs_diff(u128::from(ns)) <= 1, "rate {rate}: {gap} ns");
    }
    assert_eq!(u64::from(MAX_PERIODIC_HZ), CHAIN_HZ / 4);
    // Rate 0 turns it off; so does a divider held in reset, but not SET.
    f.write(REG_A, 0x20);
    assert_eq!(f.rtc.tick(), None);
    f.write(REG_A, 0x76);
    assert_eq!(f.rtc.tick(), None);
    f.write(REG_A, 0x26);
    f.write(REG_B, B_24H | B_PIE | B_SET);
    assert!(f.rtc.tick().is_some());
}

#[test]
fn uip_is_set_only_just_before_each_update() {
    let mut f = fixture(START, 0);
    let mut set = 0;
    let mut run = 0;
    let mut longest = 0;
    let mut seconds = std::collections::BTreeSet::new();
    for _ in 0..40_000 {
        f.advance(50 * US);
        if f.uip() {
            set += 1;
            run += 1;
            longest = longest.max(run);
            // The time does not change while UIP is set.
            seconds.insert(f.read(SECONDS));
        } else {
            run = 0;
        }
    }
    // 2 s of samples: about 244 µs (5 samples) before each of the two updates.
    assert!((8..=10).contains(&set), "{set}");
    assert!(longest <= 5);
    assert_eq!(seconds.len(), 2);
    // 100 µs before an update it is set; 150 µs after, clear again.
    f.advance(Duration::from_nanos(999_900_000));
    assert!(f.uip());
    f.advance(250 * US);
    assert!(!f.uip());
    // Halted (divider reset) or frozen (SET): never set.
    f.write(REG_A, 0x66);
    f.advance(Duration::from_nanos(999_900_000));
    assert!(!f.uip());
    assert_eq!(f.read(REG_A), 0x66);
}

/// Linux's `mc146818_get_time` (through `mc146818_avoid_UIP`), with every port access
/// taking 2 µs of guest time and `mdelay(1)` taking 1 ms: minutes and seconds, or `None`
/// after ten tries.
fn linux_get_time(f: &mut Fixture) -> Option<(u8, u8)> {
    let read = |f: &mut Fixture, index| {
        f.advance(2 * US);
        f.read(index)
    };
    for _ in 0..10 {
        let seconds = read(f, SECONDS);
        if read(f, REG_A) & A_UIP != 0 {
            f.advance(MS);
            continue;
        }
        if seconds != read(f, SECONDS) {
            continue;
        }
        let minutes = read(f, MINUTES);
        let _ = read(f, HOURS);
        let _ = read(f, DAY);
        let _ = read(f, MONTH);
        let _ = read(f, YEAR);
        let _ = read(f, CENTURY);
        let _ = read(f, REG_B);
        if read(f, REG_A) & A_UIP != 0 {
            f.advance(MS);
            continue;
        }
        if seconds != read(f, SECONDS) {
            continue;
        }
        return Some((minutes, seconds));
    }
    None
}

#[test]
fn linux_reads_a_consistent_time_at_every_phase() {
    let mut f = fixture(START, 0); // 13:45:30.000
    let bcd = Format {
        binary: false,
        hour24: true,
    };
    let expect = |secs: i64| {
        let t = DateTime::from_unix(secs);
        (bcd.encode(t.minute), bcd.encode(t.second))
    };
    // Probe k starts k minutes and 59 s + 17k µs (mod 1 s) in: the last second of a
    // minute, where a torn read would pair second 59 with the next minute.
    for k in 0..(1_000_000 / 17) {
        let phase = Duration::from_nanos(17_000 * k % 1_000_000_000);
        let at = f.clock.base + Duration::from_secs(29 + 60 * k) + phase;
        f.advance(at.saturating_duration_since(f.now()));
        let first = START + 29 + 60 * i64::try_from(k).unwrap();
        let got = linux_get_time(&mut f);
        assert!(
            got == Some(expect(first)) || got == Some(expect(first + 1)),
            "probe {k}: {got:x?}"
        );
    }
}

#[test]
fn index_port_masks_the_nmi_bit() {
    let mut f = fixture(START, 0);
    f.write(0x80 | 0x40, 0x5a);
    assert_eq!(f.read(0x40), 0x5a);
    assert_eq!(f.read(0x80 | 0x40), 0x5a);
    assert_eq!(f.read(0x80 | REG_D), D_VRT);
    // The index port itself reads as 0xff.
    let mut b = [0];
    f.rtc.read(0x70, 0, &mut b);
    assert_eq!(b, [0xff]);
    // A 16-bit write reaches the index then the data port.
    f.rtc.write(0x70, 0, &[0x41, 0xa5]);
    assert_eq!(f.read(0x41), 0xa5);
    let mut w = [0u8; 2];
    f.rtc.write(0x70, 0, &[0x41]);
    f.rtc.read(0x70, 0, &mut w);
    assert_eq!(w, [0xff, 0xa5]);
}

#[test]
fn nvram_round_trips_between_vmm_and_guest() {
    let mut f = fixture(START, 0);
    f.rtc
        .set_nvram_bytes(&nvram::memory_size_bytes(3 << 30, 1 << 30))
        .unwrap();
    f.rtc.set_nvram_bytes(&[nvram::cpu_count_byte(4)]).unwrap();
    assert_eq!((f.read(0x34), f.read(0x35)), (0x00, 0xbf));
    assert_eq!(
        (f.read(0x5b), f.read(0x5c), f.read(0x5d)),
        (0x00, 0x40, 0x00)
    );
    assert_eq!(f.read(0x5f), 3);
    for i in (0x0e..=0x7f).filter(|&i| i != 0x32) {
        f.write(i, i ^ 0xa5);
    }
    for i in (0x0e..=0x7fu8).filter(|&i| i != 0x32) {
        assert_eq!(f.read(i), i ^ 0xa5);
        assert_eq!(f.rtc.nvram(i), Ok(i ^ 0xa5));
        f.rtc.set_nvram(i, i).unwrap();
        assert_eq!(f.read(i), i);
    }
    for i in [0x00, 0x0a, 0x0d, 0x32, 0x80, 0xff] {
        assert_eq!(f.rtc.set_nvram(i, 0), Err(RtcError::NotNvram(i)));
        assert_eq!(f.rtc.nvram(i), Err(RtcError::NotNvram(i)));
    }
    assert_eq!(
        f.rtc.set_nvram_bytes(&[(0x40, 1), (0x0c, 1), (0x41, 1)]),
        Err(RtcError::NotNvram(0x0c))
    );
    // Registers C and D ignore writes.
    f.write(REG_C, 0xff);
    f.write(REG_D, 0);
    assert_eq!((f.read(REG_C), f.read(REG_D)), (0, D_VRT));
}

#[test]
fn junk_at_every_index_never_panics_or_sticks() {
    let mut f = fixture(START, 0);
    let mut step = 0u64;
    for index in 0..=255u8 {
        for value in 0..=255u8 {
            step = step
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f.write(index, value);
            f.advance(Duration::from_nanos(step >> 44));
            let _ = f.read(index.wrapping_add(value));
            if value % 16 == 0 {
                let _ = f.rtc.tick();
            }
        }
        let _ = f.time();
    }
    // Restored to sane control values, the clock runs again and UIP clears.
    f.write(REG_A, 0x26);
    f.write(REG_B, B_24H);
    let s = f.read(SECONDS);
    f.advance(Duration::from_secs(1));
    assert_ne!(f.read(SECONDS), s);
    for _ in 0..3 {
        f.advance(300 * US);
        if !f.uip() {
            break;
        }
    }
    assert!(!f.uip());
    // Odd offsets and sizes.
    let mut empty: [u8; 0] = [];
    f.rtc.read(0x70, 0, &mut empty);
    f.rtc.write(0x70, 0, &[]);
    let mut wide = [0u8; 8];
    for off in [0u64, 1, 2, 255, u64::MAX] {
        f.rtc.read(0x70, off, &mut wide);
        f.rtc.write(0x70, off, &wide);
    }
}

#[test]
fn extreme_host_times_and_clock_jumps_stay_defined() {
    for secs in [i64::MIN, -1, 0, SPAN_SECS - 1, SPAN_SECS, i64::MAX] {
        let mut f = fixture(secs, u32::MAX);
        let t = f.time();
        assert!(
            t[0] <= 0x59 && (0x19..=0x21).contains(&t[7]),
            "{secs}: {t:x?}"
        );
        f.write(REG_B, B_24H | B_UIE | B_AIE | B_PIE);
        f.write(SECONDS_ALARM, 0xff);
        f.advance(Duration::from_secs(u64::from(u32::MAX)) * 1000);
        let _ = f.rtc.tick();
        let _ = f.time();
        f.read(REG_C);
        let _ = f.rtc.tick();
    }
    // The span wraps 2199 to 1970.
    let mut f = fixture(SPAN_SECS - 1, 999_999_999);
    assert_eq!(f.time()[6..], [0x99, 0x21]);
    f.advance(US);
    assert_eq!(f.time(), [0, 0, 0, 5, 0x01, 0x01, 0x70, 0x19]);
}

#[test]
fn eventfd_timer_wakes_the_event_loop() {
    let wake = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut rtc = Rtc::new(SystemClock, irq, Box::new(wake.try_clone().unwrap()));
    rtc.write(0x70, 0, &[REG_B, B_24H | B_UIE]);
    assert_eq!(wake.read().unwrap(), 1);
    let deadline = rtc.tick().unwrap();
    assert!(deadline <= Instant::now() + Duration::from_secs(1));
    assert!(format!("{rtc:?}").starts_with("Rtc"));
}
