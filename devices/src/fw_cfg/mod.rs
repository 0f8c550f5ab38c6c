//! QEMU's firmware configuration device (fw_cfg), the channel through which OVMF learns the
//! machine: CPU counts, the memory map, the boot order, SMBIOS and the ACPI tables.
//!
//! The device is a set of *items*, each a byte string under a 16-bit key. Low keys are
//! numbered items with fixed meanings (signature, ID, CPU counts, ...); keys from
//! [`FW_CFG_FILE_FIRST`] up are named *files*, listed in the file directory item
//! ([`FW_CFG_FILE_DIR`]) that the firmware searches by name. Which items exist and what they
//! hold is the VMM's business ([`FwCfg::add_item`], [`FwCfg::add_file`]); this model serves
//! them.
//!
//! What the guest sees, on I/O ports [`FW_CFG_PORT`]`..+`[`FW_CFG_PORT_LEN`] (QEMU's x86
//! layout):
//! - offset 0 (port 0x510), selector: a 16-bit write selects an item and rewinds it. An 8-bit
//!   write selects that byte's value (zero-extended), as QEMU does; so a 16-bit selector
//!   written as two byte writes selects only its low byte (the high byte lands on the data
//!   port, where writes are ignored). Other widths are ignored; reads return 0.
//! - offset 1 (port 0x511), data: a read returns the selected item's next bytes, one per byte
//!   of the access, and advances; bytes past the item's end read as 0 (and do not advance).
//!   A read wider than a byte is taken as a string read (`rep insb`, which KVM delivers as
//!   one exit of `count` bytes). Writes are ignored (no item is writable).
//! - offsets 4..12 (ports 0x514-0x51b), the DMA address register: two 32-bit big-endian
//!   halves, the high one at 4 and the low one at 8. Writing the high half stores it;
//!   writing the low half starts a DMA transfer at the address the two make and clears the
//!   stored high half (so a guest below 4 GiB may write the low half only). Only 4-byte
//!   writes count. Reads return the DMA signature `"QEMU CFG"`, byte for byte.
//! - anything else is ignored and reads 0.
//!
//! DMA: the guest puts a 16-byte access structure in its RAM (`u32` control, `u32` length,
//! `u64` address, all big-endian) and writes its address to the DMA register. The control
//! word's SELECT bit (with the key in bits 31:16) selects an item first; then READ copies
//! `length` bytes of the item to `address` (zeros past the item's end), SKIP advances over
//! them, and WRITE fails (no item is writable: OVMF writes fw_cfg only for SMM, S3, ramfb and
//! the loader's WRITE_POINTER commands, none of which ghost-vmm offers). The transfer runs to
//! completion on the vCPU before the write returns, and the control word is then written
//! back as 0 (done) or ERROR. A structure or buffer outside guest RAM is an ERROR.
//!
//! A *generated* file ([`FwCfgFile::generated`]) has its length fixed when it is added (the
//! directory lists it before the guest looks) and its bytes produced each time the guest
//! selects it: ACPI tables built after the firmware has enumerated PCI (QEMU builds its
//! tables on the first select the same way). The generator runs on the vCPU thread with this
//! device's lock held: it must not touch this device, and should be quick.
//!
//! Nothing the guest does can panic or loop without bound, and the device allocates only
//! what generators return: every copy is bounded by the item the VMM gave or by the guest's
//! own RAM.

mod dma;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use vm_memory::GuestMemoryMmap;

use crate::bus::BusDevice;

/// First I/O port of the device (the selector; the data port is the next one).
pub const FW_CFG_PORT: u64 = 0x510;
/// Ports the device occupies: selector, data, two unused ports and the 8-byte DMA register.
pub const FW_CFG_PORT_LEN: u64 = 12;

/// Item key: the signature, `"QEMU"`.
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Item key: the interface ID, a `u32` (little-endian) of [`FW_CFG_F_TRADITIONAL`] and
/// [`FW_CFG_F_DMA`].
pub const FW_CFG_ID: u16 = 0x0001;
/// Item key: the VM's UUID, 16 bytes (SMBIOS byte order).
pub const FW_CFG_UUID: u16 = 0x0002;
/// Item key: the RAM size in bytes, a `u64` (little-endian).
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Item key: the number of CPUs present at boot, a `u16` (little-endian).
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// Item key: the maximum number of CPUs, a `u16` (little-endian).
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
/// Item key: the file directory (built by this device).
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// Key of the first file; files get consecutive keys in the order they are added.
pub const FW_CFG_FILE_FIRST: u16 = 0x0020;
/// The bit of a selector that asks for the write channel; this model ignores it, as QEMU
/// does, so `key | FW_CFG_WRITE_CHANNEL` selects `key`. No item may be added with it set.
pub const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;

/// ID bit: the port (byte-wise) interface.
pub const FW_CFG_F_TRADITIONAL: u32 = 1 << 0;
/// ID bit: the DMA interface.
pub const FW_CFG_F_DMA: u32 = 1 << 1;

/// Bytes of a file name in the directory, the terminating NUL included.
pub const FW_CFG_FILE_NAME_SIZE: usize = 56;
/// Longest file name (without its NUL).
pub const FW_CFG_MAX_NAME_LEN: usize = FW_CFG_FILE_NAME_SIZE - 1;
/// Most files the device holds (QEMU's modern machines allow as many).
pub const FW_CFG_MAX_FILES: usize = 0x400;

/// The signature item's bytes.
const SIGNATURE: &[u8; 4] = b"QEMU";
/// What the DMA address register reads as (QEMU's `FW_CFG_DMA_SIGNATURE`, big-endian).
pub const FW_CFG_DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";

/// Offsets within the device's port range.
const SELECTOR: u64 = 0;
const DATA: u64 = 1;
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;
/// Bytes of one directory entry: size, select, reserved, name.
const DIR_ENTRY_LEN: usize = 4 + 2 + 2 + FW_CFG_FILE_NAME_SIZE;

/// Errors from adding items and files.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file of that name is already there.
    #[error("fw_cfg already has a file named {0:?}")]
    DuplicateName(String),
    /// The name does not fit the directory's 56 bytes with its NUL.
    #[error("fw_cfg file name {0:?} is longer than {FW_CFG_MAX_NAME_LEN} bytes")]
    NameTooLong(String),
    /// An empty name, or one with a NUL byte in it.
    #[error("fw_cfg file name {0:?} is empty or holds a NUL byte")]
    BadName(String),
    /// [`FW_CFG_MAX_FILES`] files are there already.
    #[error("fw_cfg holds at most {FW_CFG_MAX_FILES} files")]
    TooManyFiles,
    /// The key is taken: by the device's own items, an earlier item, or a file (a file's key
    /// is the next one from [`FW_CFG_FILE_FIRST`], so a numbered item there collides).
    #[error("fw_cfg key {0:#06x} is already in use")]
    KeyInUse(u16),
    /// The key has the write-channel bit set.
    #[error("fw_cfg key {0:#06x} has the write-channel bit set")]
    BadKey(u16),
    /// An item larger than its `u32` size field can say.
    #[error("fw_cfg item of {0} bytes is larger than 4 GiB")]
    TooLarge(usize),
}

/// What makes a generated file's bytes.
pub type FwCfgGenerator = Box<dyn FnMut() -> Vec<u8> + Send>;

/// The contents of a fw_cfg file.
pub struct FwCfgFile(Content);

enum Content {
    Fixed(Vec<u8>),
    Generated { len: u32, generate: FwCfgGenerator },
}

impl FwCfgFile {
    /// A file that always holds `data`.
    pub fn fixed(data: Vec<u8>) -> Self {
        Self(Content::Fixed(data))
    }

    /// A file of `len` bytes whose contents `generate` makes each time the guest selects it
    /// (by the selector port or a DMA SELECT). What it returns is cut or zero-padded to `len`
    /// (a warning is logged the first time it is cut).
    pub fn generated(len: u32, generate: FwCfgGenerator) -> Self {
        Self(Content::Generated { len, generate })
    }
}

impl std::fmt::Debug for FwCfgFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Content::Fixed(data) => f.debug_tuple("Fixed").field(&data.len()).finish(),
            Content::Generated { len, .. } => f.debug_tuple("Generated").field(len).finish(),
        }
    }
}

/// A generated file's maker and what the device knows about it.
struct Generator {
    len: u32,
    generate: FwCfgGenerator,
    warned: bool,
}

/// One item under one key.
struct Item {
    /// What the guest reads (a generated file's latest contents, `len` bytes).
    data: Vec<u8>,
    /// The file's name, for files.
    name: Option<String>,
    generator: Option<Generator>,
}

impl Item {
    fn numbered(data: Vec<u8>) -> Self {
        Self {
            data,
            name: None,
            generator: None,
        }
    }

    /// The item's size as the directory gives it.
    fn len(&self) -> u32 {
        match &self.generator {
            Some(g) => g.len,
            // Checked when the item was added.
            None => u32::try_from(self.data.len()).unwrap_or(u32::MAX),
        }
    }

    /// Called when the guest selects the item: a generated file makes its contents anew.
    fn refresh(&mut self) {
        let Some(g) = &mut self.generator else {
            return;
        };
        let mut data = (g.generate)();
        let len = usize::try_from(g.len).unwrap_or(usize::MAX);
        if data.len() > len && !g.warned {
            g.warned = true;
            log::warn!(
                "fw_cfg: file {:?} generated {} bytes, more than its {} (cut)",
                self.name.as_deref().unwrap_or(""),
                data.len(),
                g.len
            );
        }
        data.resize(len, 0);
        self.data = data;
    }
}

/// The fw_cfg device, on the PIO bus at [`FW_CFG_PORT`] with length [`FW_CFG_PORT_LEN`].
pub struct FwCfg {
    memory: GuestMemoryMmap,
    items: BTreeMap<u16, Item>,
    /// Names of the files, for the directory and duplicate checks, with their keys.
    files: BTreeMap<String, u16>,
    /// The selected key (write-channel bit cleared) and the offset of the next byte.
    selected: u16,
    offset: usize,
    /// The DMA register's high half, waiting for the low one.
    dma_high: u32,
    /// A DMA error was logged (later ones go to the debug log only).
    dma_error_logged: bool,
}

impl std::fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field("items", &self.items.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("selected", &self.selected)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl FwCfg {
    /// A device with the signature, the ID (port and DMA interfaces) and an empty file
    /// directory. DMA transfers read and write `memory`.
    pub fn new(memory: GuestMemoryMmap) -> Self {
        let mut items = BTreeMap::new();
        items.insert(FW_CFG_SIGNATURE, Item::numbered(SIGNATURE.to_vec()));
        let id = FW_CFG_F_TRADITIONAL | FW_CFG_F_DMA;
        items.insert(FW_CFG_ID, Item::numbered(id.to_le_bytes().to_vec()));
        items.insert(FW_CFG_FILE_DIR, Item::numbered(Vec::new()));
        let mut dev = Self {
            memory,
            items,
            files: BTreeMap::new(),
            selected: FW_CFG_SIGNATURE,
            offset: 0,
            dma_high: 0,
            dma_error_logged: false,
        };
        dev.rebuild_directory();
        dev
    }

    /// Adds the numbered item `key` holding `data` (e.g. [`FW_CFG_NB_CPUS`] with a `u16` in
    /// little-endian). Fails if the key is already in use or has the write-channel bit.
    pub fn add_item(&mut self, key: u16, data: Vec<u8>) -> Result<(), FwCfgError> {
        if key & FW_CFG_WRITE_CHANNEL != 0 {
            return Err(FwCfgError::BadKey(key));
        }
        if self.items.contains_key(&key) {
            return Err(FwCfgError::KeyInUse(key));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(data.len()));
        }
        self.items.insert(key, Item::numbered(data));
        Ok(())
    }

    /// Adds the file `name` (at most 55 bytes, e.g. `etc/e820`) and returns its key, the next
    /// one from [`FW_CFG_FILE_FIRST`]. The directory lists files sorted by name.
    pub fn add_file(&mut self, name: &str, file: FwCfgFile) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(FwCfgError::BadName(name.to_owned()));
        }
        if name.len() > FW_CFG_MAX_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.to_owned()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::DuplicateName(name.to_owned()));
        }
        if self.files.len() >= FW_CFG_MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        // Below FW_CFG_MAX_FILES, so the key stays far below the write-channel bit.
        let key = u16::try_from(self.files.len())
            .ok()
            .and_then(|n| FW_CFG_FILE_FIRST.checked_add(n))
            .ok_or(FwCfgError::TooManyFiles)?;
        if self.items.contains_key(&key) {
            return Err(FwCfgError::KeyInUse(key));
        }
        let item = match file.0 {
            Content::Fixed(data) => {
                if u32::try_from(data.len()).is_err() {
                    return Err(FwCfgError::TooLarge(data.len()));
                }
                Item {
                    data,
                    name: Some(name.to_owned()),
                    generator: None,
                }
            }
            Content::Generated { len, generate } => Item {
                // Made on the first select; until then the guest reads zeros.
                data: Vec::new(),
                name: Some(name.to_owned()),
                generator: Some(Generator {
                    len,
                    generate,
                    warned: false,
                }),
            },
        };
        self.items.insert(key, item);
        self.files.insert(name.to_owned(), key);
        self.rebuild_directory();
        Ok(key)
    }

    /// The file directory: a big-endian count, then one entry per file sorted by name.
    fn rebuild_directory(&mut self) {
        let mut dir = Vec::with_capacity(4 + DIR_ENTRY_LEN * self.files.len());
        let count = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        dir.extend_from_slice(&count.to_be_bytes());
        for (name, key) in &self.files {
            let size = self.items.get(key).map_or(0, Item::len);
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FW_CFG_FILE_NAME_SIZE];
            let n = name.len().min(FW_CFG_MAX_NAME_LEN);
            field[..n].copy_from_slice(&name.as_bytes()[..n]);
            dir.extend_from_slice(&field);
        }
        if let Some(item) = self.items.get_mut(&FW_CFG_FILE_DIR) {
            item.data = dir;
        }
    }

    /// Selects `key` (the write-channel bit ignored) and rewinds; a generated file makes its
    /// contents now.
    fn select(&mut self, key: u16) {
        let key = key & !FW_CFG_WRITE_CHANNEL;
        self.selected = key;
        self.offset = 0;
        match self.items.get_mut(&key) {
            Some(item) => {
                if let Some(name) = &item.name {
                    log::debug!("fw_cfg: the guest selects file {name:?} ({key:#06x})");
                }
                item.refresh();
            }
            None => log::debug!("fw_cfg: the guest selects missing item {key:#06x}"),
        }
    }

    /// The selected item's bytes (empty for a missing key).
    fn selected_data(&self) -> &[u8] {
        self.items
            .get(&self.selected)
            .map_or(&[][..], |item| &item.data)
    }

    /// Fills `out` with the selected item's next bytes (zeros past its end) and advances.
    fn read_data(&mut self, out: &mut [u8]) {
        let data = self.selected_data();
        let rest = data.get(self.offset..).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        out[n..].fill(0);
        self.offset += n;
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if offset == DATA {
            self.read_data(data);
            return;
        }
        for (i, out) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .and_then(|at| at.checked_sub(DMA_HIGH))
                .and_then(|at| usize::try_from(at).ok());
            *out = at
                .and_then(|at| FW_CFG_DMA_SIGNATURE.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match (offset, data) {
            (SELECTOR, &[lo]) => self.select(u16::from(lo)),
            (SELECTOR, &[lo, hi]) => self.select(u16::from_le_bytes([lo, hi])),
            (DMA_HIGH, &[a, b, c, d]) => self.dma_high = u32::from_be_bytes([a, b, c, d]),
            (DMA_LOW, &[a, b, c, d]) => {
                let low = u32::from_be_bytes([a, b, c, d]);
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            _ => {}
        }
    }
}
