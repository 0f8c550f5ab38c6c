//! An address-keyed bus that dispatches PIO or MMIO exits to devices.
//!
//! Each device occupies one `[base, base + len)` range. Lookups take a read lock on the range
//! map (shared by all vCPUs, never contended except while devices are added or moved) and then
//! the one device's own mutex: there is no global device lock on the exit path.
//!
//! Lock order: the bus map lock is never held while a device's lock is taken for an access.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a [`Bus`].
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` within the device's range, which starts at
    /// `base`. Fill `data`; whatever is left untouched reads as zero.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` within the device's range, which starts at `base`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors from building a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// A zero-length range, or one that wraps around the address space.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// No device at that range.
    #[error("no device at bus address {0:#x}")]
    NotFound(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A bus of devices keyed by address range.
#[derive(Default)]
pub struct Bus {
    devices: RwLock<BTreeMap<u64, Entry>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        f.debug_list()
            .entries(map.iter().map(|(b, e)| (*b, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        // The device starting at or below `base` must end before it; the next one must start
        // at or after `end`.
        if let Some((b, e)) = map.range(..=base).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        if let Some((b, _)) = map.range(base..).next() {
            if *b < end {
                return Err(BusError::Overlap { base, len });
            }
        }
        map.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the device whose range starts at `base`.
    pub fn remove(&self, base: u64) -> Result<Arc<Mutex<dyn BusDevice>>, BusError> {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&base)
            .map(|e| e.device)
            .ok_or(BusError::NotFound(base))
    }

    /// The device covering `addr..addr+len`, with its base. Accesses that straddle the end of
    /// a device's range find nothing.
    fn resolve(&self, addr: u64, len: usize) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = map.range(..=addr).next_back()?;
        let offset = addr - base;
        let end = offset.checked_add(len as u64)?;
        (end <= entry.len).then(|| (*base, entry.device.clone()))
    }

    /// Dispatches a read. Returns false when no device is there (the caller decides what an
    /// unclaimed read returns; `data` is left untouched).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(base, addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write. Returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Scratch {
        bytes: [u8; 16],
        last: Option<(u64, u64)>,
    }

    impl BusDevice for Scratch {
        fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
            self.last = Some((base, offset));
            let o = usize::try_from(offset).unwrap();
            data.copy_from_slice(&self.bytes[o..o + data.len()]);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last = Some((base, offset));
            let o = usize::try_from(offset).unwrap();
            self.bytes[o..o + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let bus = Bus::new();
        let a = Arc::new(Mutex::new(Scratch::default()));
        let b = Arc::new(Mutex::new(Scratch::default()));
        bus.insert(a.clone(), 0x100, 16).unwrap();
        bus.insert(b.clone(), 0x110, 16).unwrap();
        assert!(bus.write(0x104, &[1, 2, 3, 4]));
        assert!(bus.write(0x110, &[9]));
        let mut out = [0u8; 4];
        assert!(bus.read(0x104, &mut out));
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(a.lock().unwrap().last, Some((0x100, 4)));
        assert_eq!(b.lock().unwrap().bytes[0], 9);
    }

    #[test]
    fn unclaimed_and_straddling_accesses_find_nothing() {
        let bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Scratch::default())), 0x100, 16)
            .unwrap();
        let mut out = [0xaau8; 4];
        assert!(!bus.read(0xff, &mut out[..1]));
        assert!(!bus.read(0x10e, &mut out));
        assert!(!bus.write(0x110, &[0]));
        assert!(!bus.read(u64::MAX, &mut out));
        assert_eq!(out, [0xaa; 4]);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Scratch::default()));
        bus.insert(dev(), 0x100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0xf8, 0x10),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x0, 0x1000),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x200, 0),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), u64::MAX, 2),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(dev(), 0x110, 0x10).unwrap();
        bus.insert(dev(), 0xf0, 0x10).unwrap();
        assert!(bus.remove(0x100).is_ok());
        assert_eq!(bus.remove(0x100).err(), Some(BusError::NotFound(0x100)));
        bus.insert(dev(), 0x100, 0x10).unwrap();
    }
}
