//! Calendar arithmetic for the RTC: UTC seconds since the Unix epoch to a civil date and
//! back, and the MC146818's register encodings (BCD or binary, 12- or 24-hour).
//!
//! Written by hand (the workspace has no `chrono` or `time`, and a device needs only this):
//! the day-count conversions are the well-known "days from civil" closed forms on the
//! proleptic Gregorian calendar, shifted so that years start on 1 March (the leap day is then
//! the last day of a year). The clock covers 1970-01-01 00:00:00 to 2199-12-31 23:59:59 and
//! wraps to 1970 after that, as a two-digit year wraps from 99 to 00.
//!
//! Nothing here trusts its input: out-of-range seconds wrap into the span, and a decoded
//! register that is not a valid value is clamped to the nearest one.

/// Seconds in a day.
pub(crate) const SECS_PER_DAY: i64 = 86_400;
/// First year the clock shows.
pub(crate) const FIRST_YEAR: u16 = 1970;
/// Last year the clock shows.
pub(crate) const LAST_YEAR: u16 = 2199;
/// Seconds from 1970-01-01 to 2200-01-01: the clock's span (a whole number of days, so the
/// time of day survives the wrap).
pub(crate) const SPAN_SECS: i64 = days_from_civil(LAST_YEAR + 1, 1, 1) * SECS_PER_DAY;

/// A civil date and time, every field in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    /// 1970..=2199.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=days in the month.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 1 = Sunday .. 7 = Saturday (the RTC's day-of-week register).
    pub weekday: u8,
}

/// Whether `year` has a 29 February.
pub(crate) const fn is_leap(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` (1..=12) of `year`; 31 for an invalid month.
pub(crate) const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to `year`-`month`-`day` (valid, year >= 1).
const fn days_from_civil(year: u16, month: u8, day: u8) -> i64 {
    // Count years from 1 March, so February is the last month of a "year".
    let y = year as i64 - if month <= 2 { 1 } else { 0 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let m = month as i64;
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0 .. February = 11
    let doy = (153 * mp + 2) / 5 + day as i64 - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The civil date `days` after 1970-01-01 (`days` >= 0 and before year 10000).
fn civil_from_days(days: i64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1; // 1..=31
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // 1..=12
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        u16::try_from(year).unwrap_or(FIRST_YEAR),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// Small non-negative values (a remainder or a clamped field) as a byte.
fn byte(v: i64) -> u8 {
    u8::try_from(v).unwrap_or(0)
}

impl DateTime {
    /// The date and time `secs` seconds after 1970-01-01 00:00:00 UTC, wrapped into the
    /// clock's span.
    pub(crate) fn from_unix(secs: i64) -> Self {
        let secs = secs.rem_euclid(SPAN_SECS);
        let days = secs / SECS_PER_DAY;
        let tod = secs % SECS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: byte(tod / 3600),
            minute: byte(tod / 60 % 60),
            second: byte(tod % 60),
            // 1970-01-01 was a Thursday (weekday 5 when Sunday is 1).
            weekday: byte((days + 4) % 7 + 1),
        }
    }

    /// Seconds since 1970-01-01 00:00:00 UTC. The fields must be in range (as `clamped`
    /// makes them); the weekday is ignored.
    pub(crate) fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Each field moved to the nearest valid value (the year first, then the month, then
    /// the day within that month). The weekday is recomputed from the date.
    pub(crate) fn clamped(self) -> Self {
        let year = self.year.clamp(FIRST_YEAR, LAST_YEAR);
        let month = self.month.clamp(1, 12);
        let fixed = Self {
            year,
            month,
            day: self.day.clamp(1, days_in_month(year, month)),
            hour: self.hour.min(23),
            minute: self.minute.min(59),
            second: self.second.min(59),
            weekday: 1,
        };
        Self::from_unix(fixed.to_unix())
    }
}

/// How the guest asked for register values (register B's DM and 24/12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    /// Binary values (DM = 1) rather than BCD.
    pub binary: bool,
    /// 24-hour hours rather than 12-hour with a PM bit.
    pub hour24: bool,
}

/// The 12-hour mode's PM flag on the hours register.
pub(crate) const HOUR_PM: u8 = 0x80;

impl Format {
    /// `v` (0..=99) as the guest reads it.
    pub(crate) fn encode(self, v: u8) -> u8 {
        let v = v % 100;
        if self.binary {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    /// A register byte as a number: BCD nibbles taken at face value (0xFF is 165), so junk
    /// decodes to an out-of-range value for the caller to clamp.
    pub(crate) fn decode(self, b: u8) -> u8 {
        if self.binary {
            b
        } else {
            (b >> 4) * 10 + (b & 0x0f)
        }
    }

    /// The hours register for `hour` (0..=23).
    pub(crate) fn encode_hour(self, hour: u8) -> u8 {
        if self.hour24 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour % 24 >= 12 { HOUR_PM } else { 0 };
        self.encode(h12) | pm
    }

    /// The hour (0..=23) an hours register byte stands for, clamped when it is junk.
    pub(crate) fn decode_hour(self, b: u8) -> u8 {
        if self.hour24 {
            return self.decode(b).min(23);
        }
        let h12 = self.decode(b & !HOUR_PM).clamp(1, 12);
        let pm = if b & HOUR_PM != 0 { 12 } else { 0 };
        h12 % 12 + pm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> DateTime {
        DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday: 0,
        }
    }

    fn unix(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> i64 {
        dt(year, month, day, hour, minute, second).to_unix()
    }

    #[test]
    fn known_dates() {
        // Values from `date -u -d ... +%s`.
        assert_eq!(unix(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(unix(2000, 2, 29, 12, 0, 0), 951_825_600);
        assert_eq!(unix(2026, 12, 2, 0, 0, 0), 1_796_169_600);
        assert_eq!(unix(2038, 1, 19, 3, 14, 8), 1 << 31);
        assert_eq!(unix(2099, 12, 31, 23, 59, 59), 4_102_444_799);
        assert_eq!(SPAN_SECS, 7_258_118_400); // 2200-01-01

        let d = DateTime::from_unix(951_825_600);
        assert_eq!((d.year, d.month, d.day, d.hour), (2000, 2, 29, 12));
        assert_eq!(d.weekday, 3); // a Tuesday
        let d = DateTime::from_unix(1_796_169_600);
        assert_eq!((d.year, d.month, d.day), (2026, 12, 2));
        assert_eq!(d.weekday, 4); // a Wednesday
        assert_eq!(DateTime::from_unix(0).weekday, 5); // a Thursday
    }

    #[test]
    fn rollovers_and_leap_years() {
        let d = DateTime::from_unix(unix(2099, 12, 31, 23, 59, 59) + 1);
        assert_eq!(d, DateTime::from_unix(unix(2100, 1, 1, 0, 0, 0)));
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2100, 1, 1, 0, 0, 0)
        );
        assert_eq!(d.weekday, 6); // a Friday
                                  // 2100 is not a leap year: 28 February is followed by 1 March.
        assert!(!is_leap(2100) && is_leap(2000) && is_leap(2096) && !is_leap(1900));
        let d = DateTime::from_unix(unix(2100, 2, 28, 23, 59, 59) + 1);
        assert_eq!((d.month, d.day), (3, 1));
        let d = DateTime::from_unix(unix(2000, 2, 28, 23, 59, 59) + 1);
        assert_eq!((d.month, d.day), (2, 29));
        // The end of the span wraps to the start.
        assert_eq!(DateTime::from_unix(SPAN_SECS - 1).year, LAST_YEAR);
        assert_eq!(DateTime::from_unix(SPAN_SECS), DateTime::from_unix(0));
        assert_eq!(DateTime::from_unix(-1), DateTime::from_unix(SPAN_SECS - 1));
        assert_eq!(
            DateTime::from_unix(i64::MIN).year,
            DateTime::from_unix(i64::MIN).year
        );
        let _ = DateTime::from_unix(i64::MAX);
    }

    #[test]
    fn every_day_of_the_span_round_trips_and_counts_up() {
        let (mut year, mut month, mut day) = (FIRST_YEAR, 1u8, 1u8);
        let mut weekday = 5u8;
        for days in 0..SPAN_SECS / SECS_PER_DAY {
            let d = DateTime::from_unix(days * SECS_PER_DAY);
            assert_eq!(
                (d.year, d.month, d.day, d.weekday),
                (year, month, day, weekday)
            );
            assert_eq!(d.to_unix(), days * SECS_PER_DAY);
            weekday = weekday % 7 + 1;
            day += 1;
            if day > days_in_month(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
        assert_eq!(year, LAST_YEAR + 1);
    }

    #[test]
    fn clamping_fixes_every_field() {
        let c = dt(1969, 0, 0, 99, 99, 99).clamped();
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (1970, 1, 1, 23, 59, 59)
        );
        let c = dt(2100, 2, 31, 0, 0, 0).clamped();
        assert_eq!((c.month, c.day), (2, 28));
        let c = dt(u16::MAX, 200, 200, 0, 0, 0).clamped();
        assert_eq!((c.year, c.month, c.day), (2199, 12, 31));
        assert_eq!(dt(2026, 12, 2, 0, 0, 0).clamped().weekday, 4);
    }

    #[test]
    fn register_encodings() {
        let bcd24 = Format {
            binary: false,
            hour24: true,
        };
        let bin12 = Format {
            binary: true,
            hour24: false,
        };
        let bcd12 = Format {
            binary: false,
            hour24: false,
        };
        assert_eq!(bcd24.encode(59), 0x59);
        assert_eq!(bcd24.decode(0x59), 59);
        assert_eq!(bcd24.decode(0xff), 165);
        assert_eq!(bin12.encode(59), 59);
        for (h, bcd, bin) in [
            (0, 0x12, 12),
            (1, 0x01, 1),
            (11, 0x11, 11),
            (12, 0x92, 0x8c),
            (13, 0x81, 0x81),
            (23, 0x91, 0x8b),
        ] {
            assert_eq!(bcd12.encode_hour(h), bcd, "hour {h}");
            assert_eq!(bin12.encode_hour(h), bin, "hour {h}");
            assert_eq!(bcd12.decode_hour(bcd), h);
            assert_eq!(bin12.decode_hour(bin), h);
        }
        for b in 0..=255u8 {
            for f in [
                bcd24,
                bin12,
                bcd12,
                Format {
                    binary: true,
                    hour24: true,
                },
            ] {
                assert!(f.decode_hour(b) <= 23);
                let _ = f.encode(f.decode(b));
            }
        }
    }
}
