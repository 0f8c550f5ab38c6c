//! PCI: one root bus (segment 0, bus 0) behind a host bridge, reached through the legacy
//! 0xCF8/0xCFC ports and through ECAM, with devices that all implement one small trait,
//! [`PciDevice`]. Virtio devices and (with the `vfio` crate) passed-through host devices both
//! plug in here; several functions of one slot form a multi-function device.
//!
//! - [`config::PciConfiguration`]: a function's config space with BAR sizing semantics and a
//!   capability list; devices delegate to it.
//! - [`msix::Msix`]: the MSI-X table and PBA, on top of an interrupt backend
//!   ([`msix::MsiVectors`]) that the VMM implements with KVM GSI routes and irqfds.
//! - [`root::PciRoot`]: the bus. It routes config accesses by device/function, and maps each
//!   BAR a function decodes onto the MMIO [`crate::Bus`], following the guest when it moves
//!   a BAR or turns memory decoding off.

pub mod config;
pub mod msix;
pub mod root;

pub use config::PciConfiguration;
pub use root::{PciConfigIo, PciConfigMmio, PciRoot};

/// The identity of a function, written into its config header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class code, subclass and programming interface (`0xCCSSPP`).
    pub class_code: u32,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Header type byte (0 for an endpoint; the bus adds the multi-function bit itself).
    pub header_type: u8,
    /// Interrupt pin (0 = none, 1 = INTA#, ...).
    pub interrupt_pin: u8,
}

/// What kind of address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Memory32,
    /// 64-bit memory (takes two BAR slots).
    Memory64,
}

/// A BAR's shape (its address lives in the config space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    /// Size in bytes, a power of two.
    pub size: u64,
    /// Address space.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// A slot and function number on bus 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevFn(u8);

impl DevFn {
    /// Device `device` (0..32), function `function` (0..8); `None` when out of range.
    pub fn new(device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self((device << 3) | function))
    }

    /// The device (slot) number.
    pub fn device(self) -> u8 {
        self.0 >> 3
    }

    /// The function number.
    pub fn function(self) -> u8 {
        self.0 & 7
    }
}

impl std::fmt::Display for DevFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00:{:02x}.{}", self.device(), self.function())
    }
}

/// A PCI function as the bus sees it. Every method is reached from a vCPU exit with
/// guest-chosen offsets and values: none may panic or block.
pub trait PciDevice: Send {
    /// Reads 1, 2 or 4 bytes of config space at `offset` (< 4096, not crossing a dword).
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// Writes 1, 2 or 4 bytes of config space at `offset` (< 4096, not crossing a dword).
    fn config_write(&mut self, offset: u16, data: &[u8]);
    /// The BARs the function decodes now, `(index, base, size)`; see
    /// [`PciConfiguration::active_memory_bars`]. The bus maps exactly these.
    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)>;
    /// The guest reads BAR `bar` at `offset`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// The guest writes BAR `bar` at `offset`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
    /// The bus mapped BAR `bar` at `base`, or unmapped it (`None`). Devices with state tied
    /// to the BAR's address (ioeventfds, KVM memory slots) move it here.
    fn bar_moved(&mut self, bar: u8, base: Option<u64>) {
        let _ = (bar, base);
    }
}
