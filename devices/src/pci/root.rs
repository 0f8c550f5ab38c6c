//! The root bus: functions by device/function number, config access through 0xCF8/0xCFC and
//! ECAM, and the BAR windows on the MMIO bus.

// Register code splits and packs fields (a u64 address into two u32 halves, a dword into
// bytes); those casts truncate on purpose, and every index is bounded by a table size.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use super::config::{read_from_dword, PciConfiguration, COMMAND_MEMORY};
use super::{DevFn, PciDevice, PciHeader};
use crate::bus::{Bus, BusDevice};
use crate::q35::ResetControl;

/// Errors from adding functions to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// Another function already sits at this address.
    #[error("PCI address {0} is already taken")]
    Occupied(DevFn),
    /// All 32 slots are taken.
    #[error("no free PCI slot left on bus 0")]
    NoFreeSlot,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host bridge at 00:00.0: an identity, no BARs.
struct HostBridge {
    config: PciConfiguration,
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, _data: &mut [u8]) {}
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

/// Red Hat's "QEMU PCIe host bridge" identity: generic, no quirks in any OS.
const HOST_BRIDGE: PciHeader = PciHeader {
    vendor_id: 0x1b36,
    device_id: 0x0008,
    class_code: 0x06_00_00,
    revision: 0,
    subsystem_vendor_id: 0x1b36,
    subsystem_id: 0x0008,
    header_type: 0,
    interrupt_pin: 0,
};

/// One BAR of one function as it sits on the MMIO bus.
struct BarWindow {
    device: Arc<Mutex<dyn PciDevice>>,
    bar: u8,
}

impl BusDevice for BarWindow {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        lock(&self.device).bar_read(self.bar, offset, data);
    }
    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        lock(&self.device).bar_write(self.bar, offset, data);
    }
}

/// PCI bus 0 of segment 0.
pub struct PciRoot {
    functions: BTreeMap<DevFn, Arc<Mutex<dyn PciDevice>>>,
    /// BARs currently on the MMIO bus, per function: `(index, base, size)`.
    mapped: BTreeMap<DevFn, Vec<(u8, u64, u64)>>,
    /// Weak: the bus holds the ECAM device, which holds this root; a strong reference back
    /// would keep every device alive forever (and a passed-through one open).
    mmio: Weak<Bus>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("mapped", &self.mapped)
            .finish()
    }
}

impl PciRoot {
    /// A bus with the host bridge at 00:00.0, whose BARs go on `mmio`.
    pub fn new(mmio: Arc<Bus>) -> Self {
        let mut root = Self {
            functions: BTreeMap::new(),
            mapped: BTreeMap::new(),
            mmio: Arc::downgrade(&mmio),
        };
        let mut config = PciConfiguration::new(&HOST_BRIDGE);
        config.set_command(COMMAND_MEMORY);
        let bridge: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(HostBridge { config }));
        root.functions
            .insert(DevFn::new(0, 0).unwrap_or(DevFn(0)), bridge);
        root
    }

    /// The first slot with no function in it.
    pub fn free_slot(&self) -> Result<u8, PciError> {
        (0..32u8)
            .find(|d| !self.functions.keys().any(|f| f.device() == *d))
            .ok_or(PciError::NoFreeSlot)
    }

    /// Plugs `device` in at `devfn` and maps the BARs it decodes.
    pub fn add(&mut self, devfn: DevFn, device: Arc<Mutex<dyn PciDevice>>) -> Result<(), PciError> {
        if self.functions.contains_key(&devfn) {
            return Err(PciError::Occupied(devfn));
        }
        self.functions.insert(devfn, device);
        self.sync_bars(devfn);
        Ok(())
    }

    /// Unplugs the function at `devfn`, unmapping its BARs.
    pub fn remove(&mut self, devfn: DevFn) -> Option<Arc<Mutex<dyn PciDevice>>> {
        let device = self.functions.remove(&devfn)?;
        for (bar, base, _) in self.mapped.remove(&devfn).unwrap_or_default() {
            if let Some(mmio) = self.mmio.upgrade() {
                let _ = mmio.remove(base);
            }
            lock(&device).bar_moved(bar, None);
        }
        Some(device)
    }

    /// Every BAR window on the MMIO bus now, `(base, size)`, in address order: what the
    /// firmware assigned, for the ACPI tables written after it enumerated the bus.
    pub fn bar_windows(&self) -> Vec<(u64, u64)> {
        let mut windows: Vec<(u64, u64)> = self
            .mapped
            .values()
            .flatten()
            .map(|&(_, base, size)| (base, size))
            .collect();
        windows.sort_unstable();
        windows
    }

    /// Config read; absent functions read all ones.
    pub fn config_read(&self, devfn: DevFn, offset: u16, data: &mut [u8]) {
        let Some(device) = self.functions.get(&devfn) else {
            data.fill(0xff);
            return;
        };
        if !valid_access(offset, data.len()) {
            data.fill(0xff);
            return;
        }
        lock(device).config_read(offset, data);
        // Function 0 of a slot with more functions announces it (header type bit 7).
        let header_type = 0x0e;
        if devfn.function() == 0
            && offset <= header_type
            && usize::from(header_type) < usize::from(offset) + data.len()
            && self
                .functions
                .keys()
                .any(|f| f.device() == devfn.device() && f.function() != 0)
        {
            data[usize::from(header_type - offset)] |= 0x80;
        }
    }

    /// Config write; absent functions ignore it. Afterwards the function's BAR windows follow
    /// its BARs and command register.
    pub fn config_write(&mut self, devfn: DevFn, offset: u16, data: &[u8]) {
        let Some(device) = self.functions.get(&devfn) else {
            return;
        };
        if !valid_access(offset, data.len()) {
            return;
        }
        lock(device).config_write(offset, data);
        // Only the command register and the BARs (and ROM) can move windows.
        if offset < 0x34 {
            self.sync_bars(devfn);
        }
    }

    /// Brings the MMIO bus in line with what `devfn` decodes now.
    fn sync_bars(&mut self, devfn: DevFn) {
        let Some(device) = self.functions.get(&devfn).cloned() else {
            return;
        };
        let wanted = lock(&device).active_memory_bars();
        let current = self.mapped.get(&devfn).cloned().unwrap_or_default();
        if wanted == current {
            return;
        }
        let mut now = Vec::with_capacity(wanted.len());
        for old in &current {
            if wanted.contains(old) {
                now.push(*old);
            } else {
                if let Some(mmio) = self.mmio.upgrade() {
                    let _ = mmio.remove(old.1);
                }
                lock(&device).bar_moved(old.0, None);
            }
        }
        for new in wanted {
            if current.contains(&new) {
                continue;
            }
            let (bar, base, size) = new;
            let window = Arc::new(Mutex::new(BarWindow {
                device: device.clone(),
                bar,
            }));
            let Some(mmio) = self.mmio.upgrade() else {
                continue;
            };
            match mmio.insert(window, base, size) {
                Ok(()) => {
                    now.push(new);
                    lock(&device).bar_moved(bar, Some(base));
                }
                Err(e) => {
                    log::warn!("PCI {devfn}: BAR {bar} at {base:#x}+{size:#x} not mapped: {e}")
                }
            }
        }
        self.mapped.insert(devfn, now);
    }
}

/// Config accesses are 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB space.
fn valid_access(offset: u16, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && usize::from(offset) % len == 0 && usize::from(offset) + len <= 4096
}

/// Configuration mechanism #1: the address register at 0xCF8 and the data window at 0xCFC.
#[derive(Debug)]
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
    reset: Option<ResetControl>,
}

/// First port of [`PciConfigIo`].
pub const CONFIG_IO_PORT: u16 = 0xcf8;
/// Ports [`PciConfigIo`] covers (address and data registers).
pub const CONFIG_IO_LEN: u64 = 8;

impl PciConfigIo {
    /// The port pair for `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self {
            root,
            address: 0,
            reset: None,
        }
    }

    /// The port pair with the chipset's reset control register at 0xCF9 (byte accesses to
    /// the config address dword's second byte go to it, as on ICH9).
    pub fn with_reset_control(mut self, reset: ResetControl) -> Self {
        self.reset = Some(reset);
        self
    }

    /// The function and register the address register selects, if enabled and on bus 0.
    fn target(&self, data_offset: u64) -> Option<(DevFn, u16)> {
        if self.address & 0x8000_0000 == 0 || (self.address >> 16) & 0xff != 0 {
            return None;
        }
        let devfn = DevFn(((self.address >> 8) & 0xff) as u8);
        // Extended register bits 27:24 (AMD's extension) select the upper 3840 bytes.
        let reg = ((self.address & 0xfc) | ((self.address >> 16) & 0xf00)) as u16;
        Some((devfn, reg + data_offset as u16))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match (offset, &self.reset) {
            (1, Some(reset)) if data.len() == 1 => data[0] = reset.read(),
            _ => self.read_config(offset, data),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match (offset, &mut self.reset) {
            (1, Some(reset)) if data.len() == 1 => reset.write(data[0]),
            _ => self.write_config(offset, data),
        }
    }
}

impl PciConfigIo {
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0..=3 => read_from_dword(self.address, offset as u16, data),
            _ => match self.target(offset - 4) {
                Some((devfn, reg)) => lock(&self.root).config_read(devfn, reg, data),
                None => data.fill(0xff),
            },
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            0..=3 => {}
            _ => {
                if let Some((devfn, reg)) = self.target(offset - 4) {
                    lock(&self.root).config_write(devfn, reg, data);
                }
            }
        }
    }
}

/// ECAM: config space memory-mapped, 4 KiB per function, 1 MiB per bus.
#[derive(Debug)]
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    /// The ECAM window for `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }

    fn target(offset: u64) -> Option<(DevFn, u16)> {
        if offset >> 20 != 0 {
            return None; // Only bus 0 exists.
        }
        Some((
            DevFn(((offset >> 12) & 0xff) as u8),
            (offset & 0xfff) as u16,
        ))
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match Self::target(offset) {
            Some((devfn, reg)) => lock(&self.root).config_read(devfn, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let Some((devfn, reg)) = Self::target(offset) {
            lock(&self.root).config_write(devfn, reg, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BarInfo, BarKind};
    use super::*;

    /// A function with one 64-bit BAR whose registers are bytes it remembers.
    struct Scratch {
        config: PciConfiguration,
        regs: [u8; 64],
        moves: Vec<(u8, Option<u64>)>,
    }

    impl Scratch {
        fn new(base: u64) -> Self {
            let mut config = PciConfiguration::new(&PciHeader {
                vendor_id: 0x1234,
                device_id: 0x5678,
                class_code: 0xff_00_00,
                revision: 0,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                header_type: 0,
                interrupt_pin: 0,
            });
            config
                .add_bar(
                    0,
                    BarInfo {
                        size: 0x1000,
                        kind: BarKind::Memory64,
                        prefetchable: false,
                    },
                )
                .unwrap();
            config.set_bar_address(0, base);
            config.set_command(COMMAND_MEMORY);
            Self {
                config,
                regs: [0; 64],
                moves: Vec::new(),
            }
        }
    }

    impl PciDevice for Scratch {
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            self.config.read(offset, data);
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            self.config.write(offset, data);
        }
        fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
            self.config.active_memory_bars()
        }
        fn bar_read(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            if o + data.len() <= 64 {
                data.copy_from_slice(&self.regs[o..o + data.len()]);
            }
        }
        fn bar_write(&mut self, _bar: u8, offset: u64, data: &[u8]) {
            let o = offset as usize;
            if o + data.len() <= 64 {
                self.regs[o..o + data.len()].copy_from_slice(data);
            }
        }
        fn bar_moved(&mut self, bar: u8, base: Option<u64>) {
            self.moves.push((bar, base));
        }
    }

    #[test]
    fn devices_are_dropped_with_the_buses() {
        // As the VMM wires it: the ECAM device on the MMIO bus holds the root, the root maps
        // BAR windows (holding the device) on that bus. Nothing may keep the device alive
        // once the VM lets go of the bus and the root: a passed-through device must be closed.
        let mmio = Arc::new(Bus::new());
        let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone())));
        mmio.insert(
            Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            0xe000_0000,
            0x1000_0000,
        )
        .unwrap();
        let dev = Arc::new(Mutex::new(Scratch::new(0xc000_0000)));
        let weak = Arc::downgrade(&dev);
        root.lock()
            .unwrap()
            .add(DevFn::new(3, 0).unwrap(), dev)
            .unwrap();
        assert!(mmio.write(0xc000_0000, &[1]), "BAR mapped");
        drop(root);
        drop(mmio);
        assert!(
            weak.upgrade().is_none(),
            "the device outlived the VM's buses"
        );
    }

    fn cf8(io: &mut PciConfigIo, devfn: DevFn, reg: u32) {
        let addr = 0x8000_0000 | (u32::from(devfn.0) << 8) | (reg & 0xfc);
        io.write(0, 0, &addr.to_le_bytes());
    }

    fn setup() -> (Arc<Bus>, Arc<Mutex<PciRoot>>, Arc<Mutex<Scratch>>) {
        let mmio = Arc::new(Bus::new());
        let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone())));
        let dev = Arc::new(Mutex::new(Scratch::new(0xc000_0000)));
        lock(&root)
            .add(DevFn::new(1, 0).unwrap(), dev.clone())
            .unwrap();
        (mmio, root, dev)
    }

    #[test]
    fn cf8_reads_ids_and_absent_functions() {
        let (_mmio, root, _dev) = setup();
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, DevFn::new(0, 0).unwrap(), 0);
        let mut d = [0u8; 4];
        io.read(0, 4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        cf8(&mut io, DevFn::new(1, 0).unwrap(), 0);
        io.read(0, 4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x5678_1234);
        let mut w = [0u8; 2];
        io.read(0, 6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x5678);
        cf8(&mut io, DevFn::new(2, 0).unwrap(), 0);
        io.read(0, 4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // The address register reads back (Linux's type 1 probe).
        io.write(0, 0, &0x8000_0000u32.to_le_bytes());
        io.read(0, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        // Disabled address: all ones.
        io.write(0, 0, &0u32.to_le_bytes());
        io.read(0, 4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn ecam_matches_cf8_and_other_buses_are_empty() {
        let (_mmio, root, _dev) = setup();
        let mut ecam = PciConfigMmio::new(root);
        let mut d = [0u8; 4];
        ecam.read(0, 1 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x5678_1234);
        ecam.read(0, 1 << 20, &mut d);
        assert_eq!(d, [0xff; 4]);
        ecam.read(0, (1 << 15) | 0xffd, &mut d);
        assert_eq!(d, [0xff; 4], "a misaligned access reads all ones");
    }

    #[test]
    fn bar_windows_follow_relocation_and_decoding() {
        let (mmio, root, dev) = setup();
        let f = DevFn::new(1, 0).unwrap();
        assert!(mmio.write(0xc000_0010, &[0xab]));
        assert_eq!(lock(&dev).regs[0x10], 0xab);
        // Decoding off: the window goes away.
        lock(&root).config_write(f, 4, &0u16.to_le_bytes());
        assert!(!mmio.write(0xc000_0010, &[0xcd]));
        // Move the BAR to 0xd000_0000, turn decoding on: the window appears there.
        lock(&root).config_write(f, 0x10, &0xd000_0000u32.to_le_bytes());
        lock(&root).config_write(f, 4, &COMMAND_MEMORY.to_le_bytes());
        let mut b = [0u8; 1];
        assert!(mmio.read(0xd000_0010, &mut b));
        assert_eq!(b[0], 0xab);
        assert!(!mmio.read(0xc000_0010, &mut b));
        assert_eq!(
            lock(&dev).moves,
            vec![(0, Some(0xc000_0000)), (0, None), (0, Some(0xd000_0000))]
        );
    }

    #[test]
    fn overlapping_bar_is_left_unmapped() {
        let (mmio, root, _dev) = setup();
        let other = Arc::new(Mutex::new(Scratch::new(0xc000_0000)));
        lock(&root)
            .add(DevFn::new(2, 0).unwrap(), other.clone())
            .unwrap();
        assert!(lock(&other).moves.is_empty());
        // The first device still owns the range.
        assert!(mmio.write(0xc000_0000, &[1]));
    }

    #[test]
    fn multifunction_bit_and_slots() {
        let (_mmio, root, _dev) = setup();
        let mut r = lock(&root);
        let mut b = [0u8; 1];
        r.config_read(DevFn::new(1, 0).unwrap(), 0x0e, &mut b);
        assert_eq!(b[0], 0);
        r.add(
            DevFn::new(1, 1).unwrap(),
            Arc::new(Mutex::new(Scratch::new(0xc100_0000))),
        )
        .unwrap();
        r.config_read(DevFn::new(1, 0).unwrap(), 0x0e, &mut b);
        assert_eq!(b[0], 0x80);
        let mut d = [0u8; 4];
        r.config_read(DevFn::new(1, 0).unwrap(), 0x0c, &mut d);
        assert_eq!(d[2], 0x80);
        assert_eq!(r.free_slot(), Ok(2));
        assert_eq!(
            r.add(
                DevFn::new(1, 1).unwrap(),
                Arc::new(Mutex::new(Scratch::new(0)))
            ),
            Err(PciError::Occupied(DevFn::new(1, 1).unwrap()))
        );
    }
}
