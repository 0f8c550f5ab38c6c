//! QEMU's ACPI "linker/loader" script (`etc/table-loader`): how UEFI firmware gets the VMM's
//! ACPI tables through fw_cfg.
//!
//! The VMM hands the firmware blobs (here `etc/acpi/tables` and `etc/acpi/rsdp`) whose pointer
//! fields hold offsets into the blob they point at, plus a script of 128-byte commands:
//! ALLOCATE a blob in guest memory, ADD_POINTER (add the base address the firmware chose for
//! one blob to a pointer field in another), ADD_CHECKSUM (compute a table's checksum once its
//! pointers are final). edk2's `OvmfPkg/AcpiPlatformDxe` (QemuFwCfgAcpi.c) runs the script,
//! then installs every table an ADD_POINTER points at through the ACPI table protocol (which
//! builds its own RSDP and XSDT). Without these three files OVMF gives the guest no ACPI tables
//! at all.
//!
//! OVMF's checksum command *sets* the byte to the 8-bit checksum of the range including the
//! byte itself, so every checksum field must be zero in the blob (see
//! [`zero_checksum`]).

/// The loader script's fw_cfg file name.
pub const TABLE_LOADER_FILE: &str = "etc/table-loader";
/// The blob with every ACPI table but the RSDP.
pub const ACPI_TABLES_FILE: &str = "etc/acpi/tables";
/// The blob with the RSDP.
pub const ACPI_RSDP_FILE: &str = "etc/acpi/rsdp";

/// Size of one command.
pub const COMMAND_LEN: usize = 128;
/// Size of a file-name field in a command (NUL-padded).
const FILE_NAME_LEN: usize = 56;

const COMMAND_ALLOCATE: u32 = 1;
const COMMAND_ADD_POINTER: u32 = 2;
const COMMAND_ADD_CHECKSUM: u32 = 3;

/// Where the firmware may place a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Anywhere in 32-bit memory.
    High = 1,
    /// The legacy F segment (0xF0000–0xFFFFF), where a legacy RSDP scan looks.
    FSeg = 2,
}

/// A loader script under construction.
#[derive(Debug, Default, Clone)]
pub struct TableLoader {
    commands: Vec<[u8; COMMAND_LEN]>,
}

fn put_name(command: &mut [u8; COMMAND_LEN], at: usize, name: &str) {
    // Names are this crate's constants: shorter than the field (checked in tests).
    let bytes = name.as_bytes();
    let n = bytes.len().min(FILE_NAME_LEN - 1);
    command[at..at + n].copy_from_slice(&bytes[..n]);
}

fn put_u32(command: &mut [u8; COMMAND_LEN], at: usize, value: u32) {
    command[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

impl TableLoader {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    fn command(&mut self, kind: u32) -> &mut [u8; COMMAND_LEN] {
        let mut command = [0u8; COMMAND_LEN];
        put_u32(&mut command, 0, kind);
        self.commands.push(command);
        let last = self.commands.len() - 1;
        &mut self.commands[last]
    }

    /// ALLOCATE: the firmware places `file` in guest memory, aligned to `align` bytes.
    pub fn allocate(&mut self, file: &str, align: u32, zone: Zone) {
        let c = self.command(COMMAND_ALLOCATE);
        put_name(c, 4, file);
        put_u32(c, 4 + FILE_NAME_LEN, align);
        c[4 + FILE_NAME_LEN + 4] = zone as u8;
    }

    /// ADD_POINTER: the `size`-byte (1, 2, 4 or 8) little-endian field at `offset` in `dest`
    /// gets the base address of `src` added to it.
    pub fn add_pointer(&mut self, dest: &str, offset: u32, size: u8, src: &str) {
        let c = self.command(COMMAND_ADD_POINTER);
        put_name(c, 4, dest);
        put_name(c, 4 + FILE_NAME_LEN, src);
        put_u32(c, 4 + 2 * FILE_NAME_LEN, offset);
        c[4 + 2 * FILE_NAME_LEN + 4] = size;
    }

    /// ADD_CHECKSUM: the byte at `offset` in `file` becomes the checksum of
    /// `[start, start + len)`.
    pub fn add_checksum(&mut self, file: &str, offset: u32, start: u32, len: u32) {
        let c = self.command(COMMAND_ADD_CHECKSUM);
        put_name(c, 4, file);
        put_u32(c, 4 + FILE_NAME_LEN, offset);
        put_u32(c, 4 + FILE_NAME_LEN + 4, start);
        put_u32(c, 4 + FILE_NAME_LEN + 8, len);
    }

    /// The number of commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the script is empty.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The script as the fw_cfg file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.commands.concat()
    }
}

/// Clears the checksum byte of the ACPI table at `table` in `blob` (offset 9 of its header),
/// for a firmware that computes it with ADD_CHECKSUM.
pub fn zero_checksum(blob: &mut [u8], table: usize) {
    if let Some(b) = blob.get_mut(table + 9) {
        *b = 0;
    }
}

#[cfg(test)]
pub(crate) mod run {
    //! A loader interpreter with OVMF's semantics, for the tests.

    use std::collections::BTreeMap;

    use super::*;

    fn name(bytes: &[u8]) -> String {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// Runs `script` over `files`: blobs are "allocated" at made-up addresses (aligned as
    /// asked, in command order, from `base`), pointers patched and checksums set. Returns each
    /// blob's address and patched bytes.
    pub(crate) fn run(
        script: &[u8],
        files: &BTreeMap<String, Vec<u8>>,
        base: u64,
    ) -> BTreeMap<String, (u64, Vec<u8>)> {
        assert_eq!(script.len() % COMMAND_LEN, 0, "whole commands");
        let mut placed: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
        let mut next = base;
        for c in script.chunks_exact(COMMAND_LEN) {
            match u32_at(c, 0) {
                COMMAND_ALLOCATE => {
                    let file = name(&c[4..4 + FILE_NAME_LEN]);
                    let align = u64::from(u32_at(c, 4 + FILE_NAME_LEN));
                    assert!(align.is_power_of_two(), "alignment {align}");
                    let addr = next.div_ceil(align) * align;
                    let blob = files.get(&file).unwrap_or_else(|| panic!("no file {file}"));
                    next = addr + blob.len() as u64;
                    placed.insert(file, (addr, blob.clone()));
                }
                COMMAND_ADD_POINTER => {
                    let dest = name(&c[4..4 + FILE_NAME_LEN]);
                    let src = name(&c[4 + FILE_NAME_LEN..4 + 2 * FILE_NAME_LEN]);
                    let offset = u32_at(c, 4 + 2 * FILE_NAME_LEN) as usize;
                    let size = usize::from(c[4 + 2 * FILE_NAME_LEN + 4]);
                    let src_addr = placed.get(&src).expect("src allocated").0;
                    let blob = &mut placed.get_mut(&dest).expect("dest allocated").1;
                    let mut raw = [0u8; 8];
                    raw[..size].copy_from_slice(&blob[offset..offset + size]);
                    let value = u64::from_le_bytes(raw) + src_addr;
                    blob[offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
                }
                COMMAND_ADD_CHECKSUM => {
                    let file = name(&c[4..4 + FILE_NAME_LEN]);
                    let offset = u32_at(c, 4 + FILE_NAME_LEN) as usize;
                    let start = u32_at(c, 4 + FILE_NAME_LEN + 4) as usize;
                    let len = u32_at(c, 4 + FILE_NAME_LEN + 8) as usize;
                    let blob = &mut placed.get_mut(&file).expect("allocated").1;
                    // OVMF: CalculateCheckSum8 over the range as it is, stored.
                    let sum = blob[start..start + len]
                        .iter()
                        .fold(0u8, |a, b| a.wrapping_add(*b));
                    blob[offset] = 0u8.wrapping_sub(sum);
                }
                other => panic!("unknown loader command {other}"),
            }
        }
        placed
    }
}
