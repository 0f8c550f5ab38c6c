//! Durations in the VM file: `"90s"`, `"2m"`, `"500ms"`, `"0s"`, or a plain number of seconds.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ParseValueError;

const DURATION: &str = "a duration";
const DURATION_HINT: &str = "use ms, s, m or h: \"90s\", \"2m\", or a plain number of seconds";
/// Longest duration accepted: a day. Longer is a typo, and keeps arithmetic on deadlines far
/// from overflow.
const MAX: Duration = Duration::from_secs(24 * 3600);

/// A length of time (`vm.stop_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeSpan(Duration);

impl TimeSpan {
    /// A span of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The span as a [`Duration`].
    pub const fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for TimeSpan {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(ParseValueError::new(s, DURATION, DURATION_HINT));
        }
        let millis_per_unit: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
            "ms" => 1,
            "" | "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" => 3_600_000,
            _ => return Err(ParseValueError::new(s, DURATION, DURATION_HINT)),
        };
        let too_long = || ParseValueError::new(s, DURATION, "at most a day (\"24h\")");
        let n: u64 = digits.parse().map_err(|_| too_long())?;
        let millis = n.checked_mul(millis_per_unit).ok_or_else(too_long)?;
        let span = Duration::from_millis(millis);
        if span > MAX {
            return Err(too_long());
        }
        Ok(Self(span))
    }
}

impl fmt::Display for TimeSpan {
    /// `90s`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;

        impl Visitor<'_> for SpanVisitor {
            type Value = TimeSpan;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or \"2m\", or a number of seconds")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeSpan, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeSpan, E> {
                let secs = u64::try_from(v).map_err(|_| {
                    E::custom(ParseValueError::number(
                        v,
                        DURATION,
                        "durations are not negative",
                    ))
                })?;
                self.visit_u64(secs)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeSpan, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SpanVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_seconds() {
        let secs = |s: &str| s.parse::<TimeSpan>().map(|t| t.duration());
        assert_eq!(secs("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(secs("0s"), Ok(Duration::ZERO));
        assert_eq!(secs("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(secs("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(secs("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(secs(" 15 S "), Ok(Duration::from_secs(15)));
        assert_eq!(secs("42"), Ok(Duration::from_secs(42)));
        assert_eq!(secs("24h"), Ok(MAX));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "90 seconds",
            "1d",
            "25h",
            "99999999999999999999s",
        ] {
            assert!(bad.parse::<TimeSpan>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn displays_as_written() {
        assert_eq!(TimeSpan::from_secs(90).to_string(), "90s");
        assert_eq!(
            "1500ms".parse::<TimeSpan>().map(|t| t.to_string()),
            Ok("1500ms".into())
        );
    }
}
