//! Ethernet MAC addresses for `[[net]]`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::error::ParseValueError;

/// The locally administered prefix QEMU and most VMMs use for guest NICs.
const DERIVED_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

/// An Ethernet MAC address. Parses `"52:54:00:12:34:56"` (or with `-` separators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address with these bytes.
    pub const fn new(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// The six bytes.
    pub const fn bytes(self) -> [u8; 6] {
        self.0
    }

    /// Whether this is a multicast (group) address, which a NIC cannot have.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The default MAC of the `index`-th NIC of VM `vm_name`: `52:54:00:xx:yy:zz` with the last
    /// three bytes from a hash of both, so it is the same on every run and every build.
    pub fn derived(vm_name: &str, index: usize) -> Self {
        // FNV-1a, 64-bit: stable across Rust versions, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let index = u64::try_from(index).unwrap_or(u64::MAX);
        for byte in vm_name.bytes().chain([0]).chain(index.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let [a, b, c, ..] = hash.to_le_bytes();
        let [p0, p1, p2] = DERIVED_PREFIX;
        Self([p0, p1, p2, a, b, c])
    }
}

impl FromStr for MacAddr {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error =
            || ParseValueError::new(s, "a MAC address", "six hex bytes like 52:54:00:12:34:56");
        let text = s.trim();
        let separator = if text.contains('-') { '-' } else { ':' };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(separator);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(error)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| error())?;
        }
        if parts.next().is_some() {
            return Err(error());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}
