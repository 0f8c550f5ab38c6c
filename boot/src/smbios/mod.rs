//! SMBIOS tables (DMTF DSP0134 3.0): what the guest is told about the machine it runs on,
//! as Linux's `/sys/class/dmi/id`, `dmidecode` and Windows' `msinfo32` show it.
//!
//! [`smbios_tables`] builds the structure table, in the order and the shape QEMU's
//! `hw/smbios/smbios.c` does: Type 0 BIOS (optional, see [`SmbiosInfo::bios`]), 1 System
//! (manufacturer `ghost-vmm`, product = the VM's name, its UUID), 2 Baseboard, 3 Chassis,
//! 4 Processor (one socket), 16 Physical Memory Array, 17 Memory Device (one, all of RAM),
//! 19 Memory Array Mapped Address (one per RAM region), 32 System Boot, 127 End-of-Table.
//! Handles are sequential from 0. [`entry_point`] builds the SMBIOS 3.0 "_SM3_" entry point
//! that points at them. Two ways to hand them to the guest:
//!
//! - **UEFI firmware** ([`fw_cfg_blobs`]): the fw_cfg files [`FW_CFG_TABLES_FILE`] (the
//!   structures, End-of-Table included) and [`FW_CFG_ANCHOR_FILE`] (the entry point, table
//!   address 0 as QEMU gives it: the firmware places the tables itself). What OVMF (edk2
//!   2022.11) does with them:
//!   - `DetectSmbiosVersionLib` takes the anchor only if its fw_cfg size is exactly 24 (a 3.0
//!     entry point: `_SM3_`, major 3, `TableMaximumSize` equal to the tables file's size) or
//!     31 (2.1: `_SM_`, `_DMI_`, major 2, `TableLength` equal to that size); else OVMF
//!     ignores the tables. It sets `PcdSmbiosVersion` (3.0) and `PcdSmbiosDocRev` from it. It
//!     does not check the checksum; we compute it all the same.
//!   - `SmbiosPlatformDxe` walks the blob structure by structure (formatted area, then the
//!     strings up to the double NUL) until Type 127, which it does not add, and passes each
//!     to `EFI_SMBIOS_PROTOCOL.Add` with its own handle: handles must be unique and below
//!     0xFF00. If no Type 0 came, it adds its own ("EFI Development Kit II / OVMF", its
//!     version and date, "UEFI supported" and "virtual machine" set): so for OVMF, leave
//!     [`SmbiosInfo::bios`] `None` (as QEMU does) and the guest sees the real firmware.
//!   - `SmbiosDxe` then publishes the tables with its own 3.0 and 2.x entry points, in the
//!     EFI configuration table, where Linux and Windows find them.
//! - **Direct kernel boot** ([`write_smbios`]): the entry point at
//!   [`SMBIOS_START`] (0xF0000) and the tables after it, below the
//!   reset stub. Without EFI, Linux's `dmi_scan` scans 0xF0000–0xFFFFF on 16-byte boundaries
//!   for `_SM3_` (tried before `_SM_` at each; shorter than 32 bytes, checksum 0) and reads
//!   the table at its 64-bit address, up to Type 127 or `TableMaximumSize` bytes.
//!
//! Only the 3.0 entry point is built: OVMF 2022.11 and every Linux since 3.19 read it, and
//! under OVMF, Windows and old Linux get the 2.x entry point `SmbiosDxe` makes anyway. A 2.1
//! "_SM_" entry point would matter only for a direct boot of a pre-3.19 kernel.
//!
//! What Linux reads (`drivers/firmware/dmi_scan.c`, `/sys/class/dmi/id`): `bios_vendor`,
//! `bios_version`, `bios_date`, `bios_release` (Type 0 04h, 05h, 08h, 14h–15h);
//! `sys_vendor`, `product_name`, `product_version`, `product_serial`, `product_uuid`,
//! `product_sku`, `product_family` (Type 1); `board_*` (Type 2); `chassis_vendor`,
//! `chassis_type` (Type 3). The UUID is printed with its first three fields little-endian
//! because the entry point says SMBIOS ≥ 2.6; an all-zero or all-FFh UUID counts as absent.

use uuid::Uuid;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};
use zerocopy::IntoBytes;

use crate::layout::{BIOS_RESET_ENTRY, SMBIOS_START, SMBIOS_TABLES_START};

mod builders;
mod structures;
#[cfg(test)]
mod tests;

use builders::*;
use structures::*;

/// The fw_cfg file that holds the structure table (QEMU's name, which OVMF looks up).
pub const FW_CFG_TABLES_FILE: &str = "etc/smbios/smbios-tables";
/// The fw_cfg file that holds the entry point ("anchor").
pub const FW_CFG_ANCHOR_FILE: &str = "etc/smbios/smbios-anchor";
/// Length of the SMBIOS 3.0 entry point.
pub const ENTRY_POINT_LEN: usize = EP_LEN as usize;
const EP_LEN: u8 = 0x18;
/// The SMBIOS version the tables follow (3.0.0), as the entry point states it.
pub const SMBIOS_VERSION: (u8, u8, u8) = (3, 0, 0);
/// Manufacturer of the system, board, chassis, processor and memory; vendor of the BIOS.
pub const VENDOR: &str = "ghost-vmm";
/// System family (Type 1).
pub const SYSTEM_FAMILY: &str = "Virtual Machine";
/// Longest string kept, in bytes: SMBIOS before 2.7 (and edk2's `SmbiosDxe` for such
/// versions) caps strings at 64 bytes; longer ones are cut.
pub const MAX_STRING_LEN: usize = 64;
/// The most RAM regions (Type 19 structures) one table describes.
pub const MAX_RAM_REGIONS: usize = 64;
/// The release date ghost-vmm's own Type 0 states ([`BiosInfo::ghost_vmm`]), mm/dd/yyyy:
/// the date of this crate's version.
pub const GHOST_BIOS_RELEASE_DATE: &str = "12/02/2026";
/// The namespace of [`vm_uuid`]'s name-based UUIDs, chosen at random for ghost-vmm once and
/// fixed forever: changing it changes every VM's UUID (which Windows activation and licence
/// managers key on).
pub const VM_UUID_NAMESPACE: [u8; 16] = [
    0x13, 0x34, 0x8e, 0xc9, 0x0c, 0xc9, 0x4b, 0xbc, 0x83, 0xfc, 0x93, 0x12, 0x27, 0x0a, 0x50, 0x6a,
];

/// The version ghost-vmm states in Type 1 (`product_version`), 2, 3 and 4.
const VENDOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the tables describe.
#[derive(Clone, Copy, Debug)]
pub struct SmbiosInfo<'a> {
    /// The VM's name: the system's product name (`/sys/class/dmi/id/product_name`). User
    /// input: sanitized like every string (printable ASCII, at most [`MAX_STRING_LEN`]).
    pub vm_name: &'a str,
    /// The system UUID in RFC 4122 byte order (as [`vm_uuid`] returns it); the table holds it
    /// in SMBIOS order (first three fields little-endian).
    pub uuid: [u8; 16],
    /// The system serial number (`product_serial`); empty for none (QEMU's default).
    pub serial: &'a str,
    /// vCPUs: one socket with this many single-thread cores (as `crate::cpuid` presents them).
    pub vcpus: u8,
    /// The vCPUs' speed in MHz (e.g. the TSC frequency); 0 = unknown.
    pub cpu_mhz: u16,
    /// The Type 4 processor ID: CPUID leaf 1 EAX (low half) and EDX (high half) of the
    /// guest's CPUID; 0 if unknown.
    pub processor_id: u64,
    /// Guest RAM as `(start, length)` in bytes, one Type 19 each (the e820 RAM ranges: below
    /// the 32-bit hole and above 4 GiB). Their sum is the RAM size of Types 16 and 17.
    pub ram_regions: &'a [(u64, u64)],
    /// Type 0, or `None` to leave it to the firmware: OVMF adds its own Type 0 when none is
    /// given. Use [`BiosInfo::ghost_vmm`] for a direct kernel boot, where ghost-vmm is the
    /// "BIOS".
    pub bios: Option<BiosInfo<'a>>,
}

/// The BIOS (Type 0) ghost-vmm states.
#[derive(Clone, Copy, Debug)]
pub struct BiosInfo<'a> {
    /// BIOS version (`bios_version`).
    pub version: &'a str,
    /// Release date, mm/dd/yyyy (`bios_date`).
    pub release_date: &'a str,
    /// System BIOS major and minor release (`bios_release`); `(0xFF, 0xFF)` = none.
    pub release: (u8, u8),
    /// Whether the BIOS supports UEFI (characteristics extension byte 2, bit 3).
    pub uefi: bool,
}

impl BiosInfo<'static> {
    /// ghost-vmm itself as the BIOS: vendor `ghost-vmm`, this crate's version, major and
    /// minor release, and [`GHOST_BIOS_RELEASE_DATE`].
    pub fn ghost_vmm(uefi: bool) -> Self {
        let part = |s: &str| s.parse().unwrap_or(0xFF);
        Self {
            version: VENDOR_VERSION,
            release_date: GHOST_BIOS_RELEASE_DATE,
            release: (
                part(env!("CARGO_PKG_VERSION_MAJOR")),
                part(env!("CARGO_PKG_VERSION_MINOR")),
            ),
            uefi,
        }
    }
}

/// The two fw_cfg files QEMU hands OVMF: [`FW_CFG_TABLES_FILE`] and [`FW_CFG_ANCHOR_FILE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosBlobs {
    /// The structure table, End-of-Table included.
    pub tables: Vec<u8>,
    /// The SMBIOS 3.0 entry point, table address 0, maximum size = `tables.len()`.
    pub anchor: Vec<u8>,
}

/// Errors building or placing SMBIOS tables.
#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    /// A VM needs at least one vCPU.
    #[error("cannot describe a VM with no vCPUs in SMBIOS")]
    NoVcpus,
    /// A VM needs RAM.
    #[error("cannot describe a VM with no RAM in SMBIOS")]
    NoRam,
    /// More RAM regions than [`MAX_RAM_REGIONS`].
    #[error("{count} RAM regions are more than the {MAX_RAM_REGIONS} SMBIOS describes")]
    TooManyRamRegions {
        /// How many there were.
        count: usize,
    },
    /// A RAM region is empty or ends past the 64-bit address space.
    #[error("RAM region of {len:#x} bytes at {start:#x} is empty or ends past 2^64")]
    BadRamRegion {
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// The structure table does not fit where it goes.
    #[error("the SMBIOS tables ({len} bytes) do not fit in {max} bytes")]
    TooBig {
        /// The tables' length.
        len: usize,
        /// The room there is.
        max: usize,
    },
    /// Writing the tables into guest memory failed.
    #[error("cannot write the SMBIOS tables into guest memory")]
    GuestMemory(#[source] GuestMemoryError),
}

/// A VM's stable UUID: the RFC 4122 name-based (version 5, SHA-1) UUID of `name` in
/// [`VM_UUID_NAMESPACE`], in RFC 4122 byte order. The same name always gives the same UUID,
/// on every host and across runs.
pub fn vm_uuid(name: &str) -> [u8; 16] {
    Uuid::new_v5(&Uuid::from_bytes(VM_UUID_NAMESPACE), name.as_bytes()).into_bytes()
}

/// The structure table for `info`, End-of-Table included.
pub fn smbios_tables(info: &SmbiosInfo<'_>) -> Result<Vec<u8>, SmbiosError> {
    if info.vcpus == 0 {
        return Err(SmbiosError::NoVcpus);
    }
    if info.ram_regions.len() > MAX_RAM_REGIONS {
        return Err(SmbiosError::TooManyRamRegions {
            count: info.ram_regions.len(),
        });
    }
    let mut ram = 0u64;
    for &(start, len) in info.ram_regions {
        if len == 0 || start.checked_add(len - 1).is_none() {
            return Err(SmbiosError::BadRamRegion { start, len });
        }
        ram = ram.saturating_add(len);
    }
    if ram == 0 {
        return Err(SmbiosError::NoRam);
    }

    // Handles in table order, from 0. Types 2, 17 and 19 refer to 3 and 16 by handle.
    let mut next = 0u16;
    let mut handle = || {
        let h = next;
        next += 1;
        h
    };
    let bios = info.bios.map(|b| (b, handle()));
    let (system, board, chassis, processor) = (handle(), handle(), handle(), handle());
    let (array, device) = (handle(), handle());
    let mapped: Vec<u16> = info.ram_regions.iter().map(|_| handle()).collect();
    let (boot, end) = (handle(), handle());

    let mut table = Vec::new();
    if let Some((b, h)) = bios {
        push(&mut table, |s| bios_info(h, &b, s));
    }
    push(&mut table, |s| system_info(system, info, s));
    push(&mut table, |s| baseboard(board, chassis, s));
    push(&mut table, |s| chassis_info(chassis, s));
    push(&mut table, |s| processor_info(processor, info, s));
    push(&mut table, |_| memory_array(array, ram));
    push(&mut table, |s| memory_device(device, array, ram, s));
    for (&h, &(start, len)) in mapped.iter().zip(info.ram_regions) {
        push(&mut table, |_| mapped_address(h, array, start, len));
    }
    push(&mut table, |_| SystemBoot {
        header: Header::of::<SystemBoot>(boot),
        reserved: [0; 6],
        boot_status: 0,
    });
    push(&mut table, |_| EndOfTable {
        header: Header::of::<EndOfTable>(end),
    });
    Ok(table)
}

/// The SMBIOS 3.0 entry point of a `tables_len`-byte structure table at `table_address`
/// (0 for the fw_cfg anchor: the firmware places the tables and writes its own entry point).
pub fn entry_point(
    table_address: u64,
    tables_len: usize,
) -> Result<[u8; ENTRY_POINT_LEN], SmbiosError> {
    let table_max_size = u32::try_from(tables_len).map_err(|_| SmbiosError::TooBig {
        len: tables_len,
        max: u32::MAX as usize,
    })?;
    let (major, minor, docrev) = SMBIOS_VERSION;
    let mut ep = EntryPoint3 {
        anchor: *b"_SM3_",
        checksum: 0,
        length: EP_LEN,
        major,
        minor,
        docrev,
        revision: 1,
        reserved: 0,
        table_max_size: table_max_size.into(),
        table_address: table_address.into(),
    };
    ep.checksum = 0u8.wrapping_sub(checksum(ep.as_bytes()));
    let mut bytes = [0; ENTRY_POINT_LEN];
    bytes.copy_from_slice(ep.as_bytes());
    Ok(bytes)
}

/// The fw_cfg files for UEFI firmware: the tables and their entry point (table address 0).
pub fn fw_cfg_blobs(info: &SmbiosInfo<'_>) -> Result<SmbiosBlobs, SmbiosError> {
    let tables = smbios_tables(info)?;
    let anchor = entry_point(0, tables.len())?.to_vec();
    Ok(SmbiosBlobs { tables, anchor })
}

/// For a direct kernel boot: writes the tables at
/// [`SMBIOS_TABLES_START`] and their entry point at
/// [`SMBIOS_START`], where Linux's legacy scan finds it, and
/// returns the entry point's address. The tables must end below the reset stub at
/// [`BIOS_RESET_ENTRY`].
pub fn write_smbios<M: GuestMemoryBackend>(
    mem: &M,
    info: &SmbiosInfo<'_>,
) -> Result<GuestAddress, SmbiosError> {
    let tables = smbios_tables(info)?;
    let max = usize::try_from(BIOS_RESET_ENTRY - SMBIOS_TABLES_START).unwrap_or(usize::MAX);
    if tables.len() > max {
        return Err(SmbiosError::TooBig {
            len: tables.len(),
            max,
        });
    }
    let ep = entry_point(SMBIOS_TABLES_START, tables.len())?;
    mem.write_slice(&tables, GuestAddress(SMBIOS_TABLES_START))
        .and_then(|()| mem.write_slice(&ep, GuestAddress(SMBIOS_START)))
        .map_err(SmbiosError::GuestMemory)?;
    Ok(GuestAddress(SMBIOS_START))
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// Appends one structure: the formatted area `build` returns, then the strings it added.
fn push<T: Formatted>(table: &mut Vec<u8>, build: impl FnOnce(&mut Strings) -> T) {
    let mut strings = Strings::default();
    let formatted = build(&mut strings);
    table.extend_from_slice(formatted.as_bytes());
    strings.finish_into(table);
}
