//! CFI parallel flash with the Intel/Sharp command set, as QEMU's `pflash_cfi01` presents it
//! to OVMF: the firmware's CODE image (read-only) and its UEFI variable store (VARS), one
//! byte wide, just below 4 GiB.
//!
//! # Modes and the memory slot
//!
//! The flash's cells live in an [`MmapRegion`] shared with the VMM ([`Pflash::memory`]).
//! While the flash is in **read-array mode** the VMM maps that region into the guest as a
//! read-only KVM memory slot, so array reads never exit; writes still exit (the slot is
//! read-only) and reach [`BusDevice::write`]. A write that takes the flash out of read-array
//! mode (program, erase, read status, read ID, CFI query, ...) calls
//! [`FlashMapping::read_array`]`(false)` before it returns, and the VMM removes the slot, so
//! the reads that follow come here as MMIO and see the status register or the ID/CFI data; the
//! write that brings it back calls `read_array(true)` and the VMM maps the slot again. Only
//! transitions call it: OVMF's `QemuFlashWrite` of N bytes (`0x10`, data, N times, then
//! `0xff`) costs one unmap and one remap, since after a program the flash stays in its
//! status mode until the `0xff`.
//!
//! # Commands
//!
//! In read-array, read-status, read-ID and query mode a write is a command (its first byte):
//! `0x00`/`0xff`/`0xf0` read array; `0x10`/`0x40` program (the next write is the data);
//! `0x20` then `0xd0` erase the sector holding the confirm's address; `0x50` clear the status
//! register **and return to read array** (as QEMU does: OVMF 2022.11's probe writes `0x50`,
//! reads the array, then `0x70` and expects to read `0x00`); `0x60` then `0x01`/`0xd0`/`0x2f`
//! (block lock, unlock, lock-down: accepted, nothing is ever locked); `0x70` read status;
//! `0x90` read ID; `0x98` CFI query; `0xe8` buffered write (count - 1, then up to 256 data
//! bytes inside one aligned 256-byte window, then `0xd0` to commit them). Unknown commands
//! and broken sequences return to read array, as in QEMU. After a program, erase or lock the
//! flash reads its status (ready, bit 7) until the next command.
//!
//! Cells follow NOR rules: a program only clears bits (`new = old & data`), an erase sets the
//! whole sector to `0xff`. A read-only flash (the CODE image) ignores every write and never
//! leaves read-array mode, so OVMF's probe finds it behaving as ROM and the slot it executes
//! from is never removed.
//!
//! # Wider accesses
//!
//! The bank is one byte wide (OVMF on x86 uses byte accesses). A wider read returns what byte
//! reads at each of its addresses would (the array bytes, or the status, ID or CFI byte for
//! each address). A wider write takes its command from its first byte; the data cycle of a
//! program, and the data phase of a buffered write, use every byte of the access.
//!
//! # Persistence
//!
//! A writable flash may have a backing file (the VM's `firmware_vars`). Changes are written
//! back to it with `pwrite` and `fdatasync` (on the vCPU thread, as QEMU does) at these
//! points, so the guest never sees an operation complete before it is on disk:
//! - when the flash returns to read-array mode (OVMF ends every write with `0xff`): the bytes
//!   programmed since the last flush go out as one range;
//! - when the guest reads the status register while programmed bytes are pending (polling for
//!   completion is how a driver observes that a program finished);
//! - around every erase: bytes programmed before it are flushed first, then the erased sector
//!   by itself (OVMF erases without a `0xff` after it), so an erase never reaches the disk
//!   ahead of an earlier program, nor merged with a later one;
//! - [`Pflash::flush`], [`Pflash::reset`] and drop.
//!
//! An interrupted flush can leave part of one program sequence on disk and part not, as real
//! flash interrupted mid-sequence does; OVMF's variable and fault-tolerant-write drivers
//! commit each update with a later state-byte write, which is a flush of its own. A failed
//! flush is logged, the VM keeps running on the in-memory contents, and the bytes are tried
//! again at the next flush point.
//!
//! Every access is guest-controlled: no offset, width or sequence can panic, and the only
//! blocking is the flush above.

mod cfi;
mod store;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionError;
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use self::cfi::{CFI_LEN, WRITE_BUFFER_LEN};
pub use self::cfi::{DEVICE_ID, MANUFACTURER_ID};
use self::store::Store;
use crate::bus::BusDevice;

/// The erase sector size of OVMF's flash layout (`BLOCK_SIZE` in
/// `OvmfPkg/OvmfPkgDefines.fdf.inc`, `PcdOvmfFirmwareBlockSize`).
pub const OVMF_SECTOR_SIZE: u64 = 0x1000;
/// The flash's size must be a multiple of this, the host page size KVM memory slots are
/// made of.
pub const PAGE_SIZE: u64 = 0x1000;

/// Status register: the write state machine is ready (the operation completed).
pub const STATUS_READY: u8 = 0x80;
/// Status register: an erase failed (or a command sequence was wrong).
pub const STATUS_ERASE_ERROR: u8 = 0x20;
/// Status register: a program failed (for a buffered write: a byte outside its window).
pub const STATUS_PROGRAM_ERROR: u8 = 0x10;

/// Told when the flash enters or leaves read-array mode, so the VMM can map its memory as a
/// read-only slot exactly while array reads may bypass the device.
pub trait FlashMapping: Send {
    /// `on`: the flash is back in read-array mode (map the slot); `!on`: it left it (remove
    /// the slot before returning, so the guest's next read of the flash exits). Called with
    /// the device's lock held, on the vCPU thread that made the write: it must not touch the
    /// device.
    fn read_array(&mut self, on: bool);
}

/// Where a flash's contents come from and where its changes go.
#[derive(Debug)]
pub enum Backing {
    /// Contents only; program and erase commands are ignored (the CODE image).
    ReadOnly,
    /// Writable, changes kept in memory only (lost when the flash is dropped).
    Volatile,
    /// Writable, every change written back to this file, opened for writing, at the flash's
    /// offset 0 (the VM's `firmware_vars`).
    File(File),
}

/// Errors from building a [`Pflash`].
#[derive(Debug, thiserror::Error)]
pub enum PflashError {
    /// The sector size is zero or not a power of two.
    #[error("flash sector size {0:#x} is not a power of two")]
    SectorSize(u64),
    /// The flash is empty, not whole sectors, or not whole host pages.
    #[error(
        "flash size {size:#x} is not a non-zero multiple of its {sector_size:#x}-byte sectors \
         and of the {PAGE_SIZE:#x}-byte page"
    )]
    Size {
        /// The rejected size.
        size: u64,
        /// Its sector size.
        sector_size: u64,
    },
    /// Reading the image failed.
    #[error("cannot read the flash image")]
    Read(#[source] io::Error),
    /// Allocating the flash's memory failed.
    #[error("cannot allocate {size:#x} bytes of flash memory")]
    Memory {
        /// The flash's size.
        size: u64,
        /// What mmap said.
        #[source]
        source: MmapRegionError,
    },
}

/// What the flash does with the next write, and what reads return meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads return the cells; writes are commands.
    ReadArray,
    /// Reads return the status register; writes are commands.
    Status,
    /// Reads return the ID codes; writes are commands.
    ReadId,
    /// Reads return the CFI table; writes are commands.
    Query,
    /// After `0x10`/`0x40`: the next write is the data to program.
    Program,
    /// After `0x20`: the next write must be the `0xd0` confirm.
    Erase,
    /// After `0x60`: the next write is the lock operation.
    Lock,
    /// After `0xe8`: the next write is the byte count minus one.
    BufferCount,
    /// Collecting a buffered write's data bytes.
    BufferData {
        /// Bytes still to come.
        remaining: usize,
    },
    /// All data bytes in: the next write must be the `0xd0` confirm.
    BufferConfirm,
}

/// A buffered write being collected: the aligned window its bytes must fall in.
struct WriteBuffer {
    start: usize,
    bytes: [u8; WRITE_BUFFER_LEN],
}

/// One CFI flash device on the MMIO bus (see the module documentation).
pub struct Pflash {
    store: Store,
    sector_size: usize,
    read_only: bool,
    mode: Mode,
    status: u8,
    buffer: Option<WriteBuffer>,
    cfi: [u8; CFI_LEN],
    mapping: Option<Box<dyn FlashMapping>>,
}

impl std::fmt::Debug for Pflash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pflash")
            .field("size", &self.store.len())
            .field("sector_size", &self.sector_size)
            .field("read_only", &self.read_only)
            .field("file", &self.store.has_file())
            .field("mode", &self.mode)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Pflash {
    /// A flash holding `contents`, erased in `sector_size` blocks, whose changes go to
    /// `backing`. The size is `contents.len()`: non-zero, whole sectors and whole pages; the
    /// sector size a power of two. It starts in read-array mode with its status ready.
    pub fn new(contents: &[u8], sector_size: u64, backing: Backing) -> Result<Self, PflashError> {
        let size = contents.len() as u64;
        let (len, sector) = check_sizes(size, sector_size)?;
        let memory = MmapRegion::new(len).map_err(|source| PflashError::Memory { size, source })?;
        memory
            .as_volatile_slice()
            .write_slice(contents, 0)
            .map_err(|e| PflashError::Read(io::Error::other(e)))?;
        let (read_only, file) = match backing {
            Backing::ReadOnly => (true, None),
            Backing::Volatile => (false, None),
            Backing::File(f) => (false, Some(f)),
        };
        Ok(Self {
            store: Store::new(Arc::new(memory), file),
            sector_size: sector,
            read_only,
            mode: Mode::ReadArray,
            status: STATUS_READY,
            buffer: None,
            cfi: cfi::table(size, sector_size),
            mapping: None,
        })
    }

    /// A flash holding the whole of `file`. With `writable`, changes are written back to it
    /// (it must be open for writing: [`Backing::File`]); otherwise it is read-only.
    pub fn from_file(file: File, sector_size: u64, writable: bool) -> Result<Self, PflashError> {
        let size = file.metadata().map_err(PflashError::Read)?.len();
        check_sizes(size, sector_size)?;
        let len = usize::try_from(size).map_err(|_| PflashError::Size { size, sector_size })?;
        let mut contents = vec![0u8; len];
        file.read_exact_at(&mut contents, 0)
            .map_err(PflashError::Read)?;
        let backing = if writable {
            Backing::File(file)
        } else {
            Backing::ReadOnly
        };
        Self::new(&contents, sector_size, backing)
    }

    /// Sets who is told about read-array transitions (replacing any earlier one). The flash is
    /// in read-array mode when built, so the VMM maps the slot before the guest runs.
    pub fn set_mapping(&mut self, mapping: Box<dyn FlashMapping>) {
        self.mapping = Some(mapping);
    }

    /// The flash's cells, for the VMM to map as a read-only memory slot (`as_ptr()`,
    /// `size()`) while [`Self::in_read_array`]. The device writes them only outside
    /// read-array mode.
    pub fn memory(&self) -> Arc<MmapRegion> {
        self.store.memory().clone()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.store.len() as u64
    }

    /// The erase sector size in bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector_size as u64
    }

    /// Whether program and erase commands are ignored.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether reads return the cells (the memory slot should be mapped).
    pub fn in_read_array(&self) -> bool {
        self.mode == Mode::ReadArray
    }

    /// The status register as the guest would read it.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Writes pending changes to the backing file and waits for them to reach the disk.
    pub fn flush(&mut self) -> io::Result<()> {
        self.store.flush()
    }

    /// A hardware reset (the guest rebooted): pending changes are flushed (logged if that
    /// fails), an unfinished buffered write is dropped, the status is ready and the flash is
    /// back in read-array mode (telling the mapping if it was not).
    pub fn reset(&mut self) {
        self.store.persist();
        self.buffer = None;
        self.status = STATUS_READY;
        self.set_mode(Mode::ReadArray);
    }

    /// Moves to `mode`, flushing when it is read array and telling the mapping when
    /// read-array mode starts or ends.
    fn set_mode(&mut self, mode: Mode) {
        let was = self.mode == Mode::ReadArray;
        self.mode = mode;
        let now = mode == Mode::ReadArray;
        if now {
            self.store.persist();
        }
        if was != now {
            if let Some(m) = self.mapping.as_mut() {
                m.read_array(now);
            }
        }
    }

    /// The mode a command byte written in a command-taking mode leads to.
    fn command(&mut self, cmd: u8) -> Mode {
        match cmd {
            0x00 | 0xf0 | 0xff => Mode::ReadArray,
            0x10 | 0x40 => Mode::Program,
            0x20 => Mode::Erase,
            0x50 => {
                self.status = 0;
                Mode::ReadArray
            }
            0x60 => Mode::Lock,
            0x70 => Mode::Status,
            0x90 => Mode::ReadId,
            0x98 => Mode::Query,
            0xe8 => {
                self.status |= STATUS_READY;
                Mode::BufferCount
            }
            _ => {
                log::debug!("pflash: unknown command {cmd:#04x}, back to read array");
                Mode::ReadArray
            }
        }
    }

    /// Erases the sector holding `offset`: pending programs are flushed first, then the sector
    /// by itself.
    fn erase_sector(&mut self, offset: u64) {
        let start = usize::try_from(offset)
            .ok()
            .map(|o| o & !(self.sector_size - 1));
        let range = start.and_then(|s| Some(s..s.checked_add(self.sector_size)?));
        self.store.persist();
        if range.is_some_and(|r| self.store.erase(r)) {
            self.store.persist();
        } else {
            self.status |= STATUS_ERASE_ERROR;
        }
        self.status |= STATUS_READY;
    }

    /// Programs `data` at `offset` (each byte ANDed into its cell).
    fn program(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let cell = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if !cell.is_some_and(|c| self.store.program(c, b)) {
                self.status |= STATUS_PROGRAM_ERROR;
            }
        }
        self.status |= STATUS_READY;
    }

    /// Takes a buffered write's data bytes into its window (the aligned window of the first
    /// byte); bytes outside it set the program error bit and are dropped.
    fn buffer_data(&mut self, offset: u64, data: &[u8], mut remaining: usize) -> Mode {
        for (i, &b) in data.iter().enumerate() {
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            let Some(at) = usize::try_from(offset).ok().and_then(|o| o.checked_add(i)) else {
                self.status |= STATUS_PROGRAM_ERROR;
                continue;
            };
            let buffer = self.buffer.get_or_insert(WriteBuffer {
                start: at & !(WRITE_BUFFER_LEN - 1),
                bytes: [0xff; WRITE_BUFFER_LEN],
            });
            match at
                .checked_sub(buffer.start)
                .and_then(|i| buffer.bytes.get_mut(i))
            {
                Some(cell) => *cell &= b,
                None => self.status |= STATUS_PROGRAM_ERROR,
            }
        }
        self.status |= STATUS_READY;
        if remaining == 0 {
            Mode::BufferConfirm
        } else {
            Mode::BufferData { remaining }
        }
    }

    /// Commits the collected buffered write (the `0xd0` confirm).
    fn buffer_commit(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            for (i, &b) in buffer.bytes.iter().enumerate() {
                if b != 0xff && !self.store.program(buffer.start + i, b) {
                    self.status |= STATUS_PROGRAM_ERROR;
                }
            }
        }
        self.status |= STATUS_READY;
    }

    /// One guest write: what it does in the current mode, and the mode after it.
    fn step(&mut self, offset: u64, data: &[u8]) -> Mode {
        let Some(&cmd) = data.first() else {
            return self.mode;
        };
        match self.mode {
            Mode::ReadArray | Mode::Status | Mode::ReadId | Mode::Query => self.command(cmd),
            Mode::Program => {
                self.program(offset, data);
                Mode::Status
            }
            Mode::Erase if cmd == 0xd0 => {
                self.erase_sector(offset);
                Mode::Status
            }
            Mode::Lock if matches!(cmd, 0x01 | 0xd0 | 0x2f) => {
                self.status |= STATUS_READY;
                Mode::Status
            }
            Mode::BufferCount => {
                self.buffer = None;
                Mode::BufferData {
                    remaining: usize::from(cmd) + 1,
                }
            }
            Mode::BufferData { remaining } => self.buffer_data(offset, data, remaining),
            Mode::BufferConfirm if cmd == 0xd0 && self.status & STATUS_PROGRAM_ERROR == 0 => {
                self.buffer_commit();
                Mode::Status
            }
            Mode::Erase | Mode::Lock | Mode::BufferConfirm => {
                if cmd != 0xff {
                    log::debug!(
                        "pflash: {cmd:#04x} does not complete a {:?} sequence, back to read array",
                        self.mode
                    );
                }
                self.buffer = None;
                Mode::ReadArray
            }
        }
    }
}

impl BusDevice for Pflash {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match self.mode {
            Mode::ReadArray => match usize::try_from(offset) {
                Ok(o) => self.store.read(o, data),
                Err(_) => data.fill(0xff),
            },
            Mode::ReadId => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = cfi::id_byte(offset.wrapping_add(i as u64));
                }
            }
            Mode::Query => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = cfi::query_byte(&self.cfi, offset.wrapping_add(i as u64));
                }
            }
            _ => {
                // A driver polling for completion must not see "ready" before the data is
                // on disk.
                self.store.persist();
                data.fill(self.status);
            }
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if self.read_only {
            return;
        }
        let next = self.step(offset, data);
        self.set_mode(next);
    }
}

impl Drop for Pflash {
    fn drop(&mut self) {
        self.store.persist();
    }
}

/// Checks a flash's size and sector size; returns both as `usize`.
fn check_sizes(size: u64, sector_size: u64) -> Result<(usize, usize), PflashError> {
    if !sector_size.is_power_of_two() {
        return Err(PflashError::SectorSize(sector_size));
    }
    let bad = PflashError::Size { size, sector_size };
    if size == 0 || !size.is_multiple_of(sector_size) || !size.is_multiple_of(PAGE_SIZE) {
        return Err(bad);
    }
    match (usize::try_from(size), usize::try_from(sector_size)) {
        (Ok(len), Ok(sector)) => Ok((len, sector)),
        _ => Err(bad),
    }
}
