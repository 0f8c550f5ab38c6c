//! A host PCI function as a guest PCI function: [`VfioPciDevice`].
//!
//! Config space is the hardware's (through VFIO, which already hides and virtualizes what a
//! user may not touch), except for what the VMM must own:
//! - the BARs and the expansion ROM BAR: the guest's addresses, with sizing semantics, kept
//!   in a shadow [`PciConfiguration`];
//! - the MSI capability ([`MsiCapability`]) and the MSI-X enable and function-mask bits
//!   ([`Msix`]): guest vectors become KVM routes whose eventfds VFIO signals;
//! - the interrupt line (the guest's) and the multi-function bit, which the bus sets from
//!   the guest topology. INTx is offered (the hardware's pin) once the VMM has wired it to a
//!   GSI ([`VfioPciDevice::connect_intx`]); it is on whenever MSI and MSI-X are off.
//!
//! BAR pages VFIO lets us map become KVM memory slots wherever the guest places the BAR, so
//! guest accesses cause no exit; the pages of the MSI-X table and PBA stay trapped.

// Register code packs fields into bytes and dwords: those casts truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::sync::Arc;

use ghost_devices::pci::config::{dword_update, read_from_dword, reg, ROM_BAR};
use ghost_devices::pci::msix::{MsiVectors, Msix};
use ghost_devices::pci::{BarInfo, BarKind, PciConfiguration, PciDevice, PciHeader};
use vmm_sys_util::eventfd::EventFd;

use crate::msi::{MsiCapability, MsiChange, MSI_CAPABILITY_ID};
use crate::region::{
    direct_ranges, DeviceAccess, GuestMappings, Mapping, CONFIG_REGION, INTX_IRQ, MSIX_IRQ,
    MSI_IRQ, ROM_REGION,
};

/// Capability ID of MSI-X.
const MSIX_CAPABILITY_ID: u8 = 0x11;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const STATUS_CAPABILITIES: u32 = 1 << 20;
/// Header type byte's multi-function bit, in the header dword.
const MULTIFUNCTION: u32 = 0x80 << 16;

/// Errors opening a passed-through function.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The config space cannot be read.
    #[error("cannot read its config space: {0}")]
    Config(#[source] io::Error),
    /// A BAR has an unusable shape.
    #[error("BAR {index}: {source}")]
    Bar {
        /// BAR index.
        index: u8,
        /// Why.
        #[source]
        source: ghost_devices::pci::config::ConfigError,
    },
    /// The ROM file cannot be read.
    #[error("cannot read ROM file {path}: {source}")]
    RomFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Interrupt vectors cannot be set up.
    #[error("cannot set up its interrupt vectors: {0}")]
    Vectors(#[source] io::Error),
    /// A BAR cannot be mapped into the VMM.
    #[error("cannot map BAR {index}: {source}")]
    Map {
        /// BAR index.
        index: u8,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What the guest sees as the expansion ROM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RomSource {
    /// The device's own ROM (if it has one).
    #[default]
    Device,
    /// These bytes (a ROM file the user gave).
    Bytes(Vec<u8>),
    /// No ROM BAR.
    Hidden,
}

/// The largest device ROM copied into memory (a PCI ROM BAR decodes at most 16 MiB).
const MAX_ROM: u64 = 16 << 20;

/// The device's ROM, read whole; `None` when it has none, it is larger than [`MAX_ROM`], or
/// it cannot be read (said in the log).
fn snapshot_rom(name: &str, dev: &dyn DeviceAccess) -> Option<Vec<u8>> {
    let size = dev.region(ROM_REGION).size;
    if size == 0 {
        return None;
    }
    let Some(len) = usize::try_from(size).ok().filter(|_| size <= MAX_ROM) else {
        log::warn!("{name}: its {size}-byte ROM is too large to show; the ROM BAR is hidden");
        return None;
    };
    let mut bytes = vec![0u8; len];
    match dev.read(ROM_REGION, 0, &mut bytes) {
        Ok(()) => Some(bytes),
        Err(e) => {
            log::warn!("{name}: cannot read its ROM ({e}); the ROM BAR is hidden");
            None
        }
    }
}

/// Creates the guest-side vectors for MSI or MSI-X, given how many.
pub type VectorFactory<'a> = &'a mut dyn FnMut(u16) -> io::Result<Arc<dyn MsiVectors>>;

/// A BAR as the guest sees it.
#[derive(Debug)]
struct Bar {
    /// Size of the VFIO region (may be smaller than the BAR when not a power of two).
    region_size: u64,
    /// Direct ranges `(offset in BAR, size, mapping, offset in mapping)`.
    direct: Vec<(u64, u64, Arc<Mapping>, u64)>,
    /// KVM slots while the BAR is mapped.
    slots: Vec<u32>,
}

/// MSI-X: the emulated table and PBA, and where they live.
#[derive(Debug)]
struct MsixState {
    cap: u16,
    table_bar: u8,
    table_offset: u64,
    pba_bar: u8,
    pba_offset: u64,
    msix: Msix,
    /// Whether VFIO signals the vectors now.
    on: bool,
}

impl MsixState {
    fn table(&self, bar: u8, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(self.table_offset)?;
        (bar == self.table_bar && rel < self.msix.table_size()).then_some(rel)
    }

    fn pba(&self, bar: u8, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(self.pba_offset)?;
        (bar == self.pba_bar && rel < self.msix.pba_size()).then_some(rel)
    }
}

/// INTx wired to a level-triggered GSI: VFIO signals `trigger` (a KVM irqfd) and masks the
/// line; KVM signals `resample` when the guest acknowledges, and VFIO unmasks.
#[derive(Debug)]
struct Intx {
    trigger: EventFd,
    resample: EventFd,
    on: bool,
}

/// A passed-through PCI function.
pub struct VfioPciDevice {
    name: String,
    dev: Box<dyn DeviceAccess>,
    shadow: PciConfiguration,
    bars: [Option<Bar>; 6],
    /// What the ROM BAR shows (the device's own ROM is read once, at open).
    rom: Option<Vec<u8>>,
    msi: Option<MsiCapability>,
    msix: Option<MsixState>,
    intx: Option<Intx>,
    mappings: Arc<dyn GuestMappings>,
}

impl std::fmt::Debug for VfioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioPciDevice")
            .field("name", &self.name)
            .field("bars", &self.bars)
            .field("msi", &self.msi)
            .field("msix", &self.msix)
            .finish_non_exhaustive()
    }
}

impl VfioPciDevice {
    /// Wraps `dev` (already reset by its opener) as a guest function called `name`. `rom`
    /// says what the ROM BAR shows; `vectors` makes MSI and MSI-X vectors; `mappings` lays
    /// BAR pages into guest memory.
    pub fn new(
        name: String,
        dev: Box<dyn DeviceAccess>,
        rom: RomSource,
        vectors: VectorFactory<'_>,
        mappings: Arc<dyn GuestMappings>,
    ) -> Result<Self, DeviceError> {
        let hw = |off: u16| -> Result<u32, DeviceError> {
            let mut b = [0u8; 4];
            dev.read(CONFIG_REGION, u64::from(off), &mut b)
                .map_err(DeviceError::Config)?;
            Ok(u32::from_le_bytes(b))
        };
        let id = hw(0)?;
        if id & 0xffff == 0xffff {
            return Err(DeviceError::Config(io::Error::other(
                "the device answers all ones (is it powered off or gone?)",
            )));
        }
        let mut shadow = PciConfiguration::new(&PciHeader {
            vendor_id: id as u16,
            device_id: (id >> 16) as u16,
            class_code: 0,
            revision: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            header_type: 0,
            interrupt_pin: 0,
        });

        // BARs: shape from the hardware's BAR flags and VFIO's region sizes.
        let mut bars: [Option<Bar>; 6] = Default::default();
        let mut i = 0u8;
        while i < 6 {
            let flags = hw(reg::BAR0 + 4 * u16::from(i))?;
            let region = dev.region(u32::from(i));
            let is64 = flags & 1 == 0 && (flags >> 1) & 3 == 2;
            let next = if is64 { i + 2 } else { i + 1 };
            if region.size == 0 {
                i = next;
                continue;
            }
            if flags & 1 == 1 {
                log::warn!("{name}: I/O BAR {i} is not passed through (hidden from the guest)");
                i = next;
                continue;
            }
            let info = BarInfo {
                size: region.size.next_power_of_two().max(16),
                kind: if is64 {
                    BarKind::Memory64
                } else {
                    BarKind::Memory32
                },
                prefetchable: flags & 8 != 0,
            };
            shadow
                .add_bar(i, info)
                .map_err(|source| DeviceError::Bar { index: i, source })?;
            bars[usize::from(i)] = Some(Bar {
                region_size: region.size,
                direct: Vec::new(),
                slots: Vec::new(),
            });
            i = next;
        }

        // The ROM: the device's is read once, here (as QEMU does), and served from memory.
        // Read through VFIO access by access, a firmware copying a NIC's 64 KiB ROM in dword
        // reads makes 16384 round trips to the device (minutes nested, noticeable on metal).
        let rom = match rom {
            RomSource::Device => snapshot_rom(&name, dev.as_ref()),
            RomSource::Bytes(bytes) => Some(bytes),
            RomSource::Hidden => None,
        }
        .filter(|bytes| !bytes.is_empty());
        if let Some(bytes) = &rom {
            shadow
                .add_rom((bytes.len() as u64).next_power_of_two().max(0x800))
                .map_err(|source| DeviceError::Bar {
                    index: ROM_BAR,
                    source,
                })?;
        }

        // Capabilities: MSI and MSI-X are emulated.
        let mut msi = None;
        let mut msix = None;
        if hw(reg::COMMAND)? & STATUS_CAPABILITIES != 0 {
            let mut at = (hw(reg::CAPABILITIES)? & 0xfc) as u16;
            let mut seen = 0;
            while at >= 0x40 && seen < 48 {
                seen += 1;
                let head = hw(at)?;
                let (cap_id, next) = (head as u8, ((head >> 8) & 0xfc) as u16);
                let control = (head >> 16) as u16;
                if cap_id == MSI_CAPABILITY_ID && dev.irq_count(MSI_IRQ) > 0 {
                    let n = MsiCapability::vectors_wanted(control)
                        .min(dev.irq_count(MSI_IRQ).min(32) as u16);
                    let v = vectors(n).map_err(DeviceError::Vectors)?;
                    msi = Some(MsiCapability::new(at, next as u8, control, v));
                } else if cap_id == MSIX_CAPABILITY_ID && dev.irq_count(MSIX_IRQ) > 0 {
                    let table = hw(at + 4)?;
                    let pba = hw(at + 8)?;
                    let n = ((control & 0x7ff) + 1).min(dev.irq_count(MSIX_IRQ) as u16);
                    let v = vectors(n).map_err(DeviceError::Vectors)?;
                    msix = Some(MsixState {
                        cap: at,
                        table_bar: (table & 7) as u8,
                        table_offset: u64::from(table & !7),
                        pba_bar: (pba & 7) as u8,
                        pba_offset: u64::from(pba & !7),
                        msix: Msix::new(v),
                        on: false,
                    });
                }
                at = next;
            }
        }

        // Direct ranges: mappable pages minus the MSI-X structures.
        for (index, bar) in bars.iter_mut().enumerate() {
            let Some(bar) = bar else { continue };
            let index = index as u8;
            let mut traps = Vec::new();
            if let Some(m) = &msix {
                if m.table_bar == index {
                    traps.push((m.table_offset, m.msix.table_size()));
                }
                if m.pba_bar == index {
                    traps.push((m.pba_offset, m.msix.pba_size()));
                }
            }
            let region = dev.region(u32::from(index));
            for &(area_off, area_size) in &region.mmap_areas {
                let ranges = direct_ranges(&[(area_off, area_size)], &traps);
                if ranges.is_empty() {
                    continue;
                }
                let map = Arc::new(
                    dev.map(u32::from(index), area_off, area_size)
                        .map_err(|source| DeviceError::Map { index, source })?,
                );
                for (off, size) in ranges {
                    bar.direct.push((off, size, map.clone(), off - area_off));
                }
            }
        }

        Ok(Self {
            name,
            dev,
            shadow,
            bars,
            rom,
            msi,
            msix,
            intx: None,
            mappings,
        })
    }

    /// The hardware's INTx pin (1 = INTA# .. 4 = INTD#), or 0 if it has none (or VFIO offers
    /// no INTx for it).
    pub fn interrupt_pin(&self) -> u8 {
        if self.dev.irq_count(INTX_IRQ) == 0 {
            return 0;
        }
        match (self.hw_dword(reg::INTERRUPT) >> 8) as u8 {
            pin @ 1..=4 => pin,
            _ => 0,
        }
    }

    /// Wires INTx: the VMM has made `trigger` a KVM irqfd on the pin's level-triggered GSI,
    /// with `resample` as its resample eventfd. INTx is on from now whenever MSI and MSI-X
    /// are off, and the guest sees the pin.
    pub fn connect_intx(&mut self, trigger: EventFd, resample: EventFd) -> io::Result<()> {
        self.intx = Some(Intx {
            trigger,
            resample,
            on: false,
        });
        self.intx_on()
    }

    fn intx_on(&mut self) -> io::Result<()> {
        let Some(intx) = self.intx.as_mut() else {
            return Ok(());
        };
        if intx.on {
            return Ok(());
        }
        self.dev.set_irqs(INTX_IRQ, &[&intx.trigger])?;
        if let Err(e) = self.dev.set_intx_unmask(&intx.resample) {
            let _ = self.dev.set_irqs(INTX_IRQ, &[]);
            return Err(e);
        }
        intx.on = true;
        Ok(())
    }

    fn intx_off(&mut self) {
        if let Some(intx) = self.intx.as_mut().filter(|i| i.on) {
            if let Err(e) = self.dev.set_irqs(INTX_IRQ, &[]) {
                log::warn!("{}: cannot turn INTx off: {e}", self.name);
            }
            intx.on = false;
        }
    }

    /// Whether MSI or MSI-X is on (on the hardware side).
    fn msi_active(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| m.on)
            || self.msi.as_ref().is_some_and(|m| m.enabled_vectors() > 0)
    }

    /// After an MSI or MSI-X change: INTx is on exactly when neither is.
    fn settle_intx(&mut self) {
        if self.msi_active() {
            return;
        }
        if let Err(e) = self.intx_on() {
            log::warn!("{}: cannot turn INTx on: {e}", self.name);
        }
    }

    /// The function's name (its host address).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The BARs the guest sees, by index (the VMM places them before boot).
    pub fn bars(&self) -> Vec<(u8, BarInfo)> {
        self.shadow.bars().collect()
    }

    /// The ROM BAR's size, if the guest sees one.
    pub fn rom_size(&self) -> Option<u64> {
        self.shadow.rom_size()
    }

    /// Places BAR `index` at `address` as firmware would.
    pub fn set_bar_address(&mut self, index: u8, address: u64) {
        if index == ROM_BAR {
            self.shadow.set_rom_address(address);
        } else {
            self.shadow.set_bar_address(index, address);
        }
    }

    /// Bytes of BAR `index` that the guest reaches without exits.
    pub fn direct_bytes(&self, index: u8) -> u64 {
        self.bars
            .get(usize::from(index))
            .and_then(Option::as_ref)
            .map_or(0, |b| b.direct.iter().map(|d| d.1).sum())
    }

    fn hw_dword(&self, offset: u16) -> u32 {
        let mut b = [0xffu8; 4];
        if let Err(e) = self.dev.read(CONFIG_REGION, u64::from(offset), &mut b) {
            log::debug!("{}: config read at {offset:#x}: {e}", self.name);
            return u32::MAX;
        }
        u32::from_le_bytes(b)
    }

    fn hw_write(&self, offset: u16, data: &[u8]) {
        if let Err(e) = self.dev.write(CONFIG_REGION, u64::from(offset), data) {
            log::debug!("{}: config write at {offset:#x}: {e}", self.name);
        }
    }

    fn is_shadowed(offset: u16) -> bool {
        (reg::BAR0..reg::SUBSYSTEM).contains(&offset) || (reg::ROM..reg::ROM + 4).contains(&offset)
    }

    fn dword(&self, offset: u16) -> u32 {
        let off = offset & !3;
        if Self::is_shadowed(off) {
            return self.shadow.read_dword(off);
        }
        match off {
            reg::HEADER_TYPE_DWORD => return self.hw_dword(off) & !MULTIFUNCTION,
            // The line is the guest's; the pin is the hardware's once INTx is wired.
            reg::INTERRUPT => {
                let pin = if self.intx.is_some() {
                    u32::from(self.interrupt_pin()) << 8
                } else {
                    0
                };
                return (self.hw_dword(off) & 0xffff_0000)
                    | pin
                    | (self.shadow.read_dword(off) & 0xff);
            }
            _ => {}
        }
        if let Some(msi) = self
            .msi
            .as_ref()
            .filter(|m| m.contains(off) || m.contains(off + 3))
        {
            return msi.read_dword(off, self.hw_dword(off));
        }
        if let Some(m) = self.msix.as_ref().filter(|m| m.cap == off) {
            let flags = u32::from(m.msix.control() & (MSIX_ENABLE | MSIX_FUNCTION_MASK)) << 16;
            return (self.hw_dword(off) & !(u32::from(MSIX_ENABLE | MSIX_FUNCTION_MASK) << 16))
                | flags;
        }
        self.hw_dword(off)
    }

    fn msix_control_write(&mut self, offset: u16, data: &[u8]) {
        let Some(m) = self.msix.as_mut() else { return };
        let Some((value, mask)) = dword_update(offset, data) else {
            return;
        };
        let old = u32::from(m.msix.control()) << 16;
        let control = (((old & !mask) | (value & mask)) >> 16) as u16;
        m.msix.set_control(control);
        let want = m.msix.enabled();
        if want == m.on {
            return;
        }
        let vectors = m.msix.vectors().clone();
        if want {
            // VFIO runs one interrupt kind at a time.
            self.intx_off();
        }
        let Some(m) = self.msix.as_mut() else { return };
        let result = if want {
            let fds: Vec<&EventFd> = (0..vectors.count())
                .filter_map(|v| vectors.notifier(v))
                .collect();
            self.dev.set_irqs(MSIX_IRQ, &fds)
        } else {
            self.dev.set_irqs(MSIX_IRQ, &[])
        };
        match result {
            Ok(()) => m.on = want,
            Err(e) => log::warn!(
                "{}: cannot turn MSI-X {}: {e}",
                self.name,
                if want { "on" } else { "off" }
            ),
        }
        self.settle_intx();
    }

    fn msi_write(&mut self, offset: u16, data: &[u8]) {
        let Some(msi) = self.msi.as_mut() else { return };
        let change = msi.write(offset, data);
        let result = match change {
            None => return,
            Some(MsiChange::Enabled(n)) => {
                let vectors = msi.vectors().clone();
                self.intx_off();
                // Re-enabling with another count needs VFIO to drop the old set first.
                let _ = self.dev.set_irqs(MSI_IRQ, &[]);
                let fds: Vec<&EventFd> = (0..n).filter_map(|v| vectors.notifier(v)).collect();
                self.dev.set_irqs(MSI_IRQ, &fds)
            }
            Some(MsiChange::Disabled) => self.dev.set_irqs(MSI_IRQ, &[]),
        };
        if let Err(e) = result {
            log::warn!("{}: cannot change MSI ({change:?}): {e}", self.name);
        }
        self.settle_intx();
    }

    fn map_bar(&mut self, index: u8, base: u64) {
        let Some(bar) = self
            .bars
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        else {
            return;
        };
        for (off, size, map, map_off) in &bar.direct {
            let Some(gpa) = base.checked_add(*off) else {
                continue;
            };
            // SAFETY: `map` is a live mapping of at least `map_off + size` bytes (the range
            // came from one of its areas), kept in `bar.direct` until the slot is removed in
            // `unmap_bar`, which runs before the mapping can be dropped.
            let slot = unsafe {
                self.mappings
                    .map(gpa, *size, map.as_ptr().add(*map_off as usize))
            };
            match slot {
                Ok(slot) => bar.slots.push(slot),
                Err(e) => log::warn!(
                    "{}: BAR {index}+{off:#x} stays trapped (no memory slot: {e})",
                    self.name
                ),
            }
        }
    }

    fn unmap_bar(&mut self, index: u8) {
        let Some(bar) = self
            .bars
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        else {
            return;
        };
        for slot in bar.slots.drain(..) {
            if let Err(e) = self.mappings.unmap(slot) {
                log::warn!("{}: cannot remove memory slot {slot}: {e}", self.name);
            }
        }
    }

    fn rom_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let (Some(bytes), Ok(start)) = (&self.rom, usize::try_from(offset)) else {
            return;
        };
        if let Some(src) = bytes.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    /// Turns interrupts off on the hardware side and removes the memory slots.
    fn quiesce(&mut self) {
        self.intx_off();
        if self.msix.as_ref().is_some_and(|m| m.on) {
            let _ = self.dev.set_irqs(MSIX_IRQ, &[]);
        }
        if self.msi.as_ref().is_some_and(MsiCapability::enabled) {
            let _ = self.dev.set_irqs(MSI_IRQ, &[]);
        }
        for i in 0..6 {
            self.unmap_bar(i);
        }
    }
}

impl PciDevice for VfioPciDevice {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        read_from_dword(self.dword(offset), offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let off = offset & !3;
        if Self::is_shadowed(off) {
            self.shadow.write(offset, data);
            return;
        }
        if off == reg::INTERRUPT {
            // Only the line is writable, and it is the guest's.
            self.shadow.write(offset, data);
            return;
        }
        if off == reg::COMMAND {
            // Memory decoding is tracked for the BAR windows; the hardware gets it too.
            self.shadow.write(offset, data);
            self.hw_write(offset, data);
            return;
        }
        if self.msi.as_ref().is_some_and(|m| m.contains(offset)) {
            self.msi_write(offset, data);
            return;
        }
        if let Some(cap) = self.msix.as_ref().map(|m| m.cap) {
            if off == cap {
                // Only the control word (bytes 2..4) is ours to take.
                if offset + data.len() as u16 > cap + 2 {
                    self.msix_control_write(offset, data);
                }
                return;
            }
        }
        self.hw_write(offset, data);
    }

    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        self.shadow.active_memory_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == ROM_BAR {
            return self.rom_read(offset, data);
        }
        if let Some(m) = &self.msix {
            if let Some(rel) = m.table(bar, offset) {
                return m.msix.read_table(rel, data);
            }
            if let Some(rel) = m.pba(bar, offset) {
                return m.msix.read_pba(rel, data);
            }
        }
        data.fill(0xff);
        let Some(b) = self.bars.get(usize::from(bar)).and_then(Option::as_ref) else {
            return;
        };
        if offset.saturating_add(data.len() as u64) <= b.region_size {
            if let Err(e) = self.dev.read(u32::from(bar), offset, data) {
                log::debug!("{}: BAR {bar} read at {offset:#x}: {e}", self.name);
                data.fill(0xff);
            }
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == ROM_BAR {
            return;
        }
        if let Some(m) = &mut self.msix {
            if let Some(rel) = m.table(bar, offset) {
                return m.msix.write_table(rel, data);
            }
            if m.pba(bar, offset).is_some() {
                return;
            }
        }
        let Some(b) = self.bars.get(usize::from(bar)).and_then(Option::as_ref) else {
            return;
        };
        if offset.saturating_add(data.len() as u64) <= b.region_size {
            if let Err(e) = self.dev.write(u32::from(bar), offset, data) {
                log::debug!("{}: BAR {bar} write at {offset:#x}: {e}", self.name);
            }
        }
    }

    fn bar_moved(&mut self, bar: u8, base: Option<u64>) {
        if bar >= 6 {
            return;
        }
        self.unmap_bar(bar);
        if let Some(base) = base {
            self.map_bar(bar, base);
        }
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        self.quiesce();
        // Leave the function as the next user expects to find it.
        self.dev.reset();
    }
}

#[cfg(test)]
mod tests;
