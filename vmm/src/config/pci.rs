//! PCI addresses as `lspci -D` and sysfs write them: `0000:01:00.0`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::error::ParseValueError;

/// A PCI function address: segment (domain), bus, device (0..32) and function (0..8).
///
/// Parses `"0000:01:00.0"` and the short `"01:00.0"` (segment 0), in hex, either case.
/// Displays in sysfs form, `0000:01:00.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    segment: u16,
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// The address, or `None` if `device` >= 32 or `function` >= 8.
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        if device < 32 && function < 8 {
            Some(Self {
                segment,
                bus,
                device,
                function,
            })
        } else {
            None
        }
    }

    /// The PCI segment (domain).
    pub const fn segment(self) -> u16 {
        self.segment
    }

    /// The bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// The device (slot) number, 0..32.
    pub const fn device(self) -> u8 {
        self.device
    }

    /// The function number, 0..8.
    pub const fn function(self) -> u8 {
        self.function
    }
}

impl FromStr for PciAddress {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || {
            ParseValueError::new(
                s,
                "a PCI address",
                "write it as lspci -D shows it, e.g. 0000:01:00.0 or 01:00.0",
            )
        };
        let hex = |part: &str, max_digits: usize| {
            if part.is_empty()
                || part.len() > max_digits
                || !part.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return None;
            }
            u32::from_str_radix(part, 16).ok()
        };
        let text = s.trim();
        let (prefix, function) = text.rsplit_once('.').ok_or_else(error)?;
        let parts: Vec<&str> = prefix.split(':').collect();
        let (segment, bus, device) = match parts.as_slice() {
            [bus, device] => ("0", *bus, *device),
            [segment, bus, device] => (*segment, *bus, *device),
            _ => return Err(error()),
        };
        let segment = hex(segment, 4).and_then(|v| u16::try_from(v).ok());
        let bus = hex(bus, 2).and_then(|v| u8::try_from(v).ok());
        let device = hex(device, 2).and_then(|v| u8::try_from(v).ok());
        let function = hex(function, 1).and_then(|v| u8::try_from(v).ok());
        match (segment, bus, device, function) {
            (Some(s), Some(b), Some(d), Some(f)) => Self::new(s, b, d, f).ok_or_else(error),
            _ => Err(error()),
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}
