//! A PCI function's configuration space: the type 0 header, BARs with sizing semantics, and a
//! capability list, with per-bit write masks so a guest write only changes what hardware would
//! let it change.
//!
//! Devices own a [`PciConfiguration`] and delegate most config accesses to it; they intercept
//! the few registers they emulate themselves (an MSI-X message control word, say).

// Register code splits and packs fields (a u64 address into two u32 halves, a dword into
// bytes); those casts truncate on purpose, and every index is bounded by a table size.
#![allow(clippy::cast_possible_truncation)]

use super::{BarInfo, BarKind, PciHeader};

/// Size of the configuration space (PCIe: 4 KiB, of which the first 256 bytes are PCI).
pub const CONFIG_SPACE_SIZE: usize = 4096;
const REGISTERS: usize = CONFIG_SPACE_SIZE / 4;

/// Command register bit: the function decodes memory BARs.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register bit: the function decodes I/O BARs.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register bit: the function may master the bus (DMA, MSI).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register bit: INTx is disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register bit: the capability list at 0x34 is valid.
const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Register offsets in the type 0 header.
pub mod reg {
    /// Vendor ID (u16) and device ID (u16).
    pub const ID: u16 = 0x00;
    /// Command (u16) and status (u16).
    pub const COMMAND: u16 = 0x04;
    /// Revision, programming interface, subclass, class.
    pub const CLASS: u16 = 0x08;
    /// Cache line size, latency timer, header type, BIST.
    pub const HEADER_TYPE_DWORD: u16 = 0x0c;
    /// First BAR.
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor ID and subsystem ID.
    pub const SUBSYSTEM: u16 = 0x2c;
    /// Expansion ROM BAR.
    pub const ROM: u16 = 0x30;
    /// Capabilities pointer.
    pub const CAPABILITIES: u16 = 0x34;
    /// Interrupt line, interrupt pin, min grant, max latency.
    pub const INTERRUPT: u16 = 0x3c;
}

/// The index under which the expansion ROM BAR appears in [`PciConfiguration::active_memory_bars`]
/// and in [`super::PciDevice::bar_read`].
pub const ROM_BAR: u8 = 6;
const ROM_REGISTER: usize = reg::ROM as usize / 4;
const ROM_ENABLE: u32 = 1;
const ROM_ADDRESS_MASK: u32 = 0xffff_f800;
const ROM_MIN_SIZE: u64 = 0x800;

/// Where the first capability goes (just past the type 0 header).
const FIRST_CAPABILITY: usize = 0x40;
/// End of the legacy (non-extended) configuration space, where capabilities must fit.
const LEGACY_END: usize = 0x100;

/// Errors from building a configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// BAR index beyond 5, or a 64-bit BAR at index 5.
    #[error("BAR {0} does not exist or cannot hold this BAR")]
    BadBarIndex(u8),
    /// The BAR slot is already used (by this BAR or the upper half of a 64-bit one).
    #[error("BAR {0} is already in use")]
    BarInUse(u8),
    /// A BAR size that is not a power of two, or too small for its kind.
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes (4 for I/O)")]
    BadBarSize(u64),
    /// The capability does not fit in the 256-byte legacy space.
    #[error("capability of {0} bytes does not fit in the configuration space")]
    CapabilityFull(usize),
}

/// A function's configuration space.
#[derive(Clone)]
pub struct PciConfiguration {
    registers: [u32; REGISTERS],
    writable: [u32; REGISTERS],
    bars: [Option<BarInfo>; 6],
    rom: Option<u64>,
    last_capability: Option<usize>,
    next_capability: usize,
}

impl std::fmt::Debug for PciConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfiguration")
            .field("id", &format_args!("{:#010x}", self.registers[0]))
            .field("bars", &self.bars)
            .finish_non_exhaustive()
    }
}

impl PciConfiguration {
    /// A type 0 header with these IDs. Command and status start at zero, except that the
    /// status register announces a capability list once one is added.
    pub fn new(header: &PciHeader) -> Self {
        let mut c = Self {
            registers: [0; REGISTERS],
            writable: [0; REGISTERS],
            bars: [None; 6],
            rom: None,
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        };
        c.registers[0] = u32::from(header.vendor_id) | (u32::from(header.device_id) << 16);
        c.registers[2] = u32::from(header.revision) | (header.class_code << 8);
        c.registers[3] = u32::from(header.header_type) << 16;
        c.registers[11] =
            u32::from(header.subsystem_vendor_id) | (u32::from(header.subsystem_id) << 16);
        c.registers[15] = u32::from(header.interrupt_pin) << 8;
        // Command: I/O, memory, bus master, INTx disable. Status: write-1-to-clear bits are
        // not modelled (no errors are ever reported), so status is read-only.
        c.writable[1] =
            u32::from(COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE);
        // Cache line size and latency timer are plain storage.
        c.writable[3] = 0x0000_ffff;
        // Interrupt line: storage for the OS.
        c.writable[15] = 0xff;
        c
    }

    /// Declares BAR `index`. Its address starts at 0 until [`Self::set_bar_address`].
    pub fn add_bar(&mut self, index: u8, bar: BarInfo) -> Result<(), ConfigError> {
        let i = usize::from(index);
        let is64 = bar.kind == BarKind::Memory64;
        if i >= 6 || (is64 && i == 5) {
            return Err(ConfigError::BadBarIndex(index));
        }
        let min = if bar.kind == BarKind::Io { 4 } else { 16 };
        if !bar.size.is_power_of_two() || bar.size < min {
            return Err(ConfigError::BadBarSize(bar.size));
        }
        if self.bars[i].is_some()
            || (i > 0 && self.bars[i - 1].is_some_and(|b| b.kind == BarKind::Memory64))
            || (is64 && self.bars[i + 1].is_some())
        {
            return Err(ConfigError::BarInUse(index));
        }
        let reg = 4 + i;
        let mask = !(bar.size - 1);
        match bar.kind {
            BarKind::Io => {
                self.registers[reg] = 1;
                self.writable[reg] = (mask as u32) & !0x3;
            }
            BarKind::Memory32 => {
                self.registers[reg] = if bar.prefetchable { 0x8 } else { 0 };
                self.writable[reg] = (mask as u32) & !0xf;
            }
            BarKind::Memory64 => {
                self.registers[reg] = 0x4 | if bar.prefetchable { 0x8 } else { 0 };
                self.writable[reg] = (mask as u32) & !0xf;
                self.writable[reg + 1] = (mask >> 32) as u32;
            }
        }
        self.bars[i] = Some(bar);
        Ok(())
    }

    /// Declares the expansion ROM BAR (register 0x30) of `size` bytes, a power of two of at
    /// least 2 KiB. The guest enables it with bit 0; the bus then maps it as BAR
    /// [`ROM_BAR`] while memory decoding is on.
    pub fn add_rom(&mut self, size: u64) -> Result<(), ConfigError> {
        if !size.is_power_of_two() || !(ROM_MIN_SIZE..=1 << 31).contains(&size) {
            return Err(ConfigError::BadBarSize(size));
        }
        self.rom = Some(size);
        self.registers[ROM_REGISTER] = 0;
        self.writable[ROM_REGISTER] = ((!(size - 1)) as u32 & ROM_ADDRESS_MASK) | ROM_ENABLE;
        Ok(())
    }

    /// The ROM BAR's size, if declared.
    pub fn rom_size(&self) -> Option<u64> {
        self.rom
    }

    /// Sets the ROM BAR's address as firmware would (the enable bit is left as it was).
    pub fn set_rom_address(&mut self, address: u64) {
        if self.rom.is_some() {
            let w = self.writable[ROM_REGISTER] & ROM_ADDRESS_MASK;
            let r = &mut self.registers[ROM_REGISTER];
            *r = (*r & !w) | (address as u32 & w);
        }
    }

    /// The BARs declared, by index.
    pub fn bars(&self) -> impl Iterator<Item = (u8, BarInfo)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|b| (i as u8, b)))
    }

    /// Sets BAR `index`'s address as firmware would. Bits below the BAR's size are dropped.
    pub fn set_bar_address(&mut self, index: u8, address: u64) {
        let i = usize::from(index);
        let Some(bar) = self.bars.get(i).copied().flatten() else {
            return;
        };
        let reg = 4 + i;
        let lo = address as u32;
        self.registers[reg] =
            (self.registers[reg] & !self.writable[reg]) | (lo & self.writable[reg]);
        if bar.kind == BarKind::Memory64 {
            let hi = (address >> 32) as u32;
            self.registers[reg + 1] = hi & self.writable[reg + 1];
        }
    }

    /// BAR `index`'s programmed address, if declared.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        let i = usize::from(index);
        let bar = self.bars.get(i).copied().flatten()?;
        let reg = 4 + i;
        Some(match bar.kind {
            BarKind::Io => u64::from(self.registers[reg] & !0x3),
            BarKind::Memory32 => u64::from(self.registers[reg] & !0xf),
            BarKind::Memory64 => {
                u64::from(self.registers[reg] & !0xf) | (u64::from(self.registers[reg + 1]) << 32)
            }
        })
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.registers[1] as u16
    }

    /// Sets command register bits as firmware would (e.g. memory decoding on at boot).
    pub fn set_command(&mut self, command: u16) {
        self.registers[1] = (self.registers[1] & 0xffff_0000) | u32::from(command);
    }

    /// The memory BARs the function decodes now: `(index, base, size)`. Empty while memory
    /// decoding is off, so the transient all-ones value of BAR sizing is never mapped.
    pub fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        if self.command() & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        let mut active: Vec<_> = self
            .bars()
            .filter(|(_, b)| b.kind != BarKind::Io)
            .filter_map(|(i, b)| {
                let base = self.bar_address(i)?;
                // An address that would wrap is not decodable.
                base.checked_add(b.size).map(|_| (i, base, b.size))
            })
            .collect();
        let rom = self.registers[ROM_REGISTER];
        if let Some(size) = self.rom {
            // A ROM at 0 is one the guest has not placed (sizing leaves the enable bit clear).
            let base = u64::from(rom & ROM_ADDRESS_MASK);
            if rom & ROM_ENABLE != 0 && base != 0 {
                active.push((ROM_BAR, base, size));
            }
        }
        active
    }

    /// Appends a capability. `body` starts with the capability ID and a placeholder "next"
    /// byte, which is filled in here; `writable` gives per-byte write masks for the body (may
    /// be shorter than it; the rest is read-only). Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        let len = body.len().max(2);
        let offset = self.next_capability;
        let end = offset + len;
        if end > LEGACY_END {
            return Err(ConfigError::CapabilityFull(len));
        }
        for (i, b) in body.iter().enumerate() {
            self.set_byte(offset + i, *b);
        }
        self.set_byte(offset + 1, 0);
        for (i, m) in writable.iter().take(body.len()).enumerate() {
            let at = offset + i;
            let shift = (at % 4) * 8;
            self.writable[at / 4] |= u32::from(*m) << shift;
        }
        match self.last_capability {
            None => {
                self.set_byte(usize::from(reg::CAPABILITIES), offset as u8);
                self.registers[1] |= u32::from(STATUS_CAPABILITIES) << 16;
            }
            Some(last) => self.set_byte(last + 1, offset as u8),
        }
        self.last_capability = Some(offset);
        self.next_capability = (end + 3) & !3;
        Ok(offset)
    }

    fn set_byte(&mut self, at: usize, value: u8) {
        let shift = (at % 4) * 8;
        let r = &mut self.registers[at / 4];
        *r = (*r & !(0xff << shift)) | (u32::from(value) << shift);
    }

    /// Declares a device-specific register: the dword at `offset & !3` starts as `value` and
    /// the guest may change the bits set in `writable`. For chipset registers beyond the
    /// standard header (the q35 host bridge's PCIEXBAR, the LPC bridge's PMBASE).
    pub fn set_register(&mut self, offset: u16, value: u32, writable: u32) {
        let i = usize::from(offset) / 4;
        if let (Some(r), Some(w)) = (self.registers.get_mut(i), self.writable.get_mut(i)) {
            *r = value;
            *w = writable;
        }
    }

    /// Reads the 32-bit register at byte `offset & !3`.
    pub fn read_dword(&self, offset: u16) -> u32 {
        self.registers
            .get(usize::from(offset) / 4)
            .copied()
            .unwrap_or(0xffff_ffff)
    }

    /// Overwrites stored bits of the dword at `offset & !3` (device-side update, no mask).
    pub fn set_dword(&mut self, offset: u16, value: u32) {
        if let Some(r) = self.registers.get_mut(usize::from(offset) / 4) {
            *r = value;
        }
    }

    /// Reads `data.len()` (1, 2 or 4) bytes at `offset`; other sizes or an access that
    /// crosses a dword read all ones.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        read_from_dword(self.read_dword(offset), offset, data);
    }

    /// A guest write of 1, 2 or 4 bytes at `offset`, applied through the write masks. Others
    /// are ignored.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        let Some((value, mask)) = dword_update(offset, data) else {
            return;
        };
        let i = usize::from(offset) / 4;
        if i >= REGISTERS {
            return;
        }
        let m = mask & self.writable[i];
        self.registers[i] = (self.registers[i] & !m) | (value & m);
    }
}

/// Splits a 1/2/4-byte access at `offset` into (value shifted into its dword, byte mask).
/// `None` for a bad size or an access that crosses a dword.
pub fn dword_update(offset: u16, data: &[u8]) -> Option<(u32, u32)> {
    let shift = u32::from(offset % 4) * 8;
    let (value, mask) = match data.len() {
        1 => (u32::from(data[0]), 0xff),
        2 => (u32::from(u16::from_le_bytes([data[0], data[1]])), 0xffff),
        4 => (
            u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            0xffff_ffff,
        ),
        _ => return None,
    };
    if usize::from(offset % 4) + data.len() > 4 {
        return None;
    }
    Some((value << shift, mask << shift))
}

/// Extracts the bytes at `offset` of a dword into `data` (1, 2 or 4 bytes, not crossing the
/// dword); anything else reads all ones.
pub fn read_from_dword(dword: u32, offset: u16, data: &mut [u8]) {
    let start = usize::from(offset % 4);
    if !matches!(data.len(), 1 | 2 | 4) || start + data.len() > 4 {
        data.fill(0xff);
        return;
    }
    let bytes = dword.to_le_bytes();
    data.copy_from_slice(&bytes[start..start + data.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class_code: 0x01_80_00,
            revision: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x42,
            header_type: 0,
            interrupt_pin: 0,
        }
    }

    fn read32(c: &PciConfiguration, off: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn ids_and_class() {
        let c = PciConfiguration::new(&header());
        assert_eq!(read32(&c, 0), 0x1042_1af4);
        assert_eq!(read32(&c, 8), 0x0180_0001);
        let mut w = [0u8; 2];
        c.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1042);
    }

    #[test]
    fn ids_are_read_only() {
        let mut c = PciConfiguration::new(&header());
        c.write(0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read32(&c, 0), 0x1042_1af4);
    }

    #[test]
    fn bar_sizing_64bit() {
        let mut c = PciConfiguration::new(&header());
        let bar = BarInfo {
            size: 0x4_0000_0000,
            kind: BarKind::Memory64,
            prefetchable: true,
        };
        c.add_bar(0, bar).unwrap();
        c.set_bar_address(0, 0x40_0000_0000);
        assert_eq!(c.bar_address(0), Some(0x40_0000_0000));
        // Sizing: write all ones to both halves.
        c.write(0x10, &[0xff; 4]);
        c.write(0x14, &[0xff; 4]);
        assert_eq!(read32(&c, 0x10), 0x0000_000c);
        assert_eq!(read32(&c, 0x14), 0xffff_fffc);
        // A second 64-bit BAR cannot start in the upper half of the first.
        assert_eq!(c.add_bar(1, bar), Err(ConfigError::BarInUse(1)));
    }

    #[test]
    fn bar_sizing_32bit_and_io() {
        let mut c = PciConfiguration::new(&header());
        c.add_bar(
            2,
            BarInfo {
                size: 0x1000,
                kind: BarKind::Memory32,
                prefetchable: false,
            },
        )
        .unwrap();
        c.add_bar(
            3,
            BarInfo {
                size: 0x20,
                kind: BarKind::Io,
                prefetchable: false,
            },
        )
        .unwrap();
        c.write(0x18, &[0xff; 4]);
        assert_eq!(read32(&c, 0x18), 0xffff_f000);
        c.write(0x1c, &[0xff; 4]);
        assert_eq!(read32(&c, 0x1c), 0xffff_ffe1);
        // Unused BARs read zero and stay zero.
        c.write(0x10, &[0xff; 4]);
        assert_eq!(read32(&c, 0x10), 0);
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut c = PciConfiguration::new(&header());
        let b = |size| BarInfo {
            size,
            kind: BarKind::Memory64,
            prefetchable: false,
        };
        assert_eq!(c.add_bar(5, b(0x1000)), Err(ConfigError::BadBarIndex(5)));
        assert_eq!(c.add_bar(6, b(0x1000)), Err(ConfigError::BadBarIndex(6)));
        assert_eq!(
            c.add_bar(0, b(0x1001)),
            Err(ConfigError::BadBarSize(0x1001))
        );
        assert_eq!(c.add_bar(0, b(8)), Err(ConfigError::BadBarSize(8)));
    }

    #[test]
    fn active_bars_follow_memory_decoding() {
        let mut c = PciConfiguration::new(&header());
        c.add_bar(
            0,
            BarInfo {
                size: 0x4000,
                kind: BarKind::Memory64,
                prefetchable: false,
            },
        )
        .unwrap();
        c.set_bar_address(0, 0xc000_0000);
        assert!(c.active_memory_bars().is_empty());
        c.write(0x04, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(c.active_memory_bars(), vec![(0, 0xc000_0000, 0x4000)]);
        // Sizing with decoding on would expose a wrapping address: never active.
        c.write(0x10, &[0xff; 4]);
        c.write(0x14, &[0xff; 4]);
        assert!(c.active_memory_bars().is_empty());
    }

    #[test]
    fn rom_bar_sizes_and_maps_only_when_enabled() {
        let mut c = PciConfiguration::new(&header());
        assert_eq!(c.add_rom(0x3000), Err(ConfigError::BadBarSize(0x3000)));
        c.add_rom(0x2_0000).unwrap();
        assert_eq!(c.add_rom(0x100), Err(ConfigError::BadBarSize(0x100)));
        // Sizing: all ones reads back the size mask and the enable bit.
        c.write(0x30, &[0xff; 4]);
        assert_eq!(read32(&c, 0x30), 0xfffe_0001);
        c.write(0x04, &COMMAND_MEMORY.to_le_bytes());
        // Enabled but at the sizing value's address: not 0, so mapped where the guest said.
        c.write(0x30, &0xfeb0_0000u32.to_le_bytes());
        assert!(c.active_memory_bars().is_empty(), "enable bit clear");
        c.write(0x30, &0xfeb0_0001u32.to_le_bytes());
        assert_eq!(
            c.active_memory_bars(),
            vec![(ROM_BAR, 0xfeb0_0000, 0x2_0000)]
        );
        c.write(0x04, &[0, 0]);
        assert!(c.active_memory_bars().is_empty(), "memory decoding off");
        c.set_rom_address(0xfea0_0000);
        assert_eq!(read32(&c, 0x30), 0xfea0_0001);
    }

    #[test]
    fn capabilities_chain() {
        let mut c = PciConfiguration::new(&header());
        let a = c.add_capability(&[0x09, 0, 4, 1], &[]).unwrap();
        let b = c
            .add_capability(&[0x11, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 0xc0])
            .unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x44);
        let mut one = [0u8; 1];
        c.read(0x34, &mut one);
        assert_eq!(one[0], 0x40);
        c.read(0x41, &mut one);
        assert_eq!(one[0], 0x44);
        c.read(0x45, &mut one);
        assert_eq!(one[0], 0);
        // Status announces the list.
        assert_ne!(read32(&c, 4) & (1 << 20), 0);
        // Only the writable bits change.
        c.write(0x47, &[0xff]);
        c.read(0x47, &mut one);
        assert_eq!(one[0], 0xc0);
        assert_eq!(
            c.add_capability(&[0u8; 200], &[]),
            Err(ConfigError::CapabilityFull(200))
        );
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut c = PciConfiguration::new(&header());
        let mut three = [0u8; 3];
        c.read(0, &mut three);
        assert_eq!(three, [0xff; 3]);
        let mut two = [0u8; 2];
        c.read(3, &mut two);
        assert_eq!(two, [0xff; 2]);
        c.write(3, &[1, 2]);
        c.write(0xfff, &[1]);
        c.read(0xfff, &mut [0u8; 1]);
        c.read(0x2000, &mut [0u8; 4]);
        c.write(0x2000, &[0; 4]);
    }
}
