//! Sizes in the VM file: `"512M"`, `"16G"`, a plain number of MiB; hugepage sizes.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ParseValueError;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

const SIZE: &str = "a size";
const SIZE_HINT: &str = "use K, M, G or a plain number of MiB";

/// A size in bytes. In the VM file: a string with a K, M, G or T suffix (binary units;
/// `KiB`/`KB` spellings too), a plain number string or a TOML integer meaning MiB, or a
/// `B` suffix for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes` bytes.
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// A size of `mib` MiB, or `None` if that does not fit in 64 bits.
    pub const fn from_mib(mib: u64) -> Option<Self> {
        match mib.checked_mul(MIB) {
            Some(bytes) => Some(Self(bytes)),
            None => None,
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        let unit = unit.trim_start();
        if digits.is_empty() {
            return Err(ParseValueError::new(s, SIZE, SIZE_HINT));
        }
        if unit.starts_with('.') || unit.starts_with(',') {
            return Err(ParseValueError::new(
                s,
                SIZE,
                "use whole numbers: \"1536M\", not \"1.5G\"",
            ));
        }
        let multiplier = match unit.to_ascii_lowercase().as_str() {
            "" => MIB,
            "b" => 1,
            "k" | "kb" | "kib" => KIB,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => GIB,
            "t" | "tb" | "tib" => TIB,
            _ => return Err(ParseValueError::new(s, SIZE, SIZE_HINT)),
        };
        let too_large = || ParseValueError::new(s, SIZE, "too large");
        let n: u64 = digits.parse().map_err(|_| too_large())?;
        n.checked_mul(multiplier).map(Self).ok_or_else(too_large)
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that shows the size exactly: `16G`, `1536M`, `4K`, `100B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, suffix) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
            // Units are powers of two: a mask tests divisibility.
            if n != 0 && n & (unit - 1) == 0 {
                return write!(f, "{}{suffix}", n / unit);
            }
        }
        if n == 0 {
            write!(f, "0")
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512M\" or \"16G\", or a number of MiB")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                let mib = u64::try_from(v).map_err(|_| {
                    E::custom(ParseValueError::number(v, SIZE, "sizes are not negative"))
                })?;
                self.visit_u64(mib)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                ByteSize::from_mib(v).ok_or_else(|| {
                    E::custom(ParseValueError::number(
                        i64::try_from(v).unwrap_or(i64::MAX),
                        SIZE,
                        "too large",
                    ))
                })
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// The page size of the hugetlb pool that backs guest RAM (`memory.hugepage_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HugepageSize {
    /// 2 MiB pages (`"2M"`), the default: every x86-64 host has them.
    #[default]
    Size2M,
    /// 1 GiB pages (`"1G"`): fewer TLB misses; best reserved at host boot.
    Size1G,
}

impl HugepageSize {
    /// Bytes per page.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size2M => 2 * MIB,
            Self::Size1G => GIB,
        }
    }
}

impl TryFrom<ByteSize> for HugepageSize {
    type Error = ParseValueError;

    fn try_from(size: ByteSize) -> Result<Self, Self::Error> {
        match size.bytes() {
            b if b == 2 * MIB => Ok(Self::Size2M),
            GIB => Ok(Self::Size1G),
            _ => Err(ParseValueError::new(
                &size.to_string(),
                "a hugepage size",
                "use \"2M\" or \"1G\"",
            )),
        }
    }
}

impl FromStr for HugepageSize {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<ByteSize>()?.try_into()
    }
}

impl fmt::Display for HugepageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size2M => "2M",
            Self::Size1G => "1G",
        })
    }
}

impl<'de> Deserialize<'de> for HugepageSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ByteSize::deserialize(deserializer)?
            .try_into()
            .map_err(de::Error::custom)
    }
}
