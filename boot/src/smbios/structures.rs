//! The formatted areas of the SMBIOS structures ghost-vmm builds, laid out as DMTF SMBIOS 3.0
//! (DSP0134 3.0.0) defines them: one `zerocopy` struct per type, its size checked against the
//! spec's length at build time. Offsets in the field comments are the spec's.
//!
//! String fields hold a string number (1-based index into the strings that follow the
//! formatted area; 0 = no string), made by [`super::builders::Strings::add`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes};

/// Structure types (DSP0134 §7).
pub(super) mod types {
    pub const BIOS: u8 = 0;
    pub const SYSTEM: u8 = 1;
    pub const BASEBOARD: u8 = 2;
    pub const CHASSIS: u8 = 3;
    pub const PROCESSOR: u8 = 4;
    pub const MEMORY_ARRAY: u8 = 16;
    pub const MEMORY_DEVICE: u8 = 17;
    pub const MEMORY_ARRAY_MAPPED_ADDRESS: u8 = 19;
    pub const SYSTEM_BOOT: u8 = 32;
    pub const END_OF_TABLE: u8 = 127;
}

/// A handle field that refers to no structure ("not provided", DSP0134 §7.17.3 and others).
pub(super) const HANDLE_NOT_PROVIDED: u16 = 0xFFFE;
/// A cache handle field of a processor without that cache structure.
pub(super) const HANDLE_NONE: u16 = 0xFFFF;

/// The structure header (§6.1.2): type, length of the formatted area, handle.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct Header {
    pub r#type: u8,
    pub length: u8,
    pub handle: U16,
}

/// A formatted area: its type and spec length (the header's `length`).
pub(super) trait Formatted: IntoBytes + Immutable {
    const TYPE: u8;
    /// The formatted area's length in SMBIOS 3.0, header included.
    const LENGTH: u8;
}

/// Implements [`Formatted`] and checks at build time that the struct is as long as the spec
/// says.
macro_rules! formatted {
    ($t:ty, $type:expr, $len:expr) => {
        impl Formatted for $t {
            const TYPE: u8 = $type;
            const LENGTH: u8 = $len;
        }
        const _: () = assert!(core::mem::size_of::<$t>() == $len as usize);
    };
}

impl Header {
    pub fn of<T: Formatted>(handle: u16) -> Self {
        Self {
            r#type: T::TYPE,
            length: T::LENGTH,
            handle: handle.into(),
        }
    }
}

/// Type 0, BIOS Information (§7.1), 2.4+ layout.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct Bios {
    pub header: Header,
    /// 04h string.
    pub vendor: u8,
    /// 05h string.
    pub version: u8,
    /// 06h: segment of the BIOS's start; its runtime size is (10000h - segment) * 16.
    pub starting_segment: U16,
    /// 08h string: mm/dd/yyyy.
    pub release_date: u8,
    /// 09h: 64 KiB * (n + 1).
    pub rom_size: u8,
    /// 0Ah (§7.1.1).
    pub characteristics: U64,
    /// 12h, 13h (§7.1.2).
    pub characteristics_ext: [u8; 2],
    /// 14h, 15h.
    pub release_major: u8,
    pub release_minor: u8,
    /// 16h, 17h: FFh = no embedded controller.
    pub ec_release_major: u8,
    pub ec_release_minor: u8,
}
formatted!(Bios, types::BIOS, 0x18);

/// BIOS characteristics (§7.1.1).
pub(super) mod bios_characteristics {
    /// Bit 7: PCI is supported.
    pub const PCI: u64 = 1 << 7;
    /// Extension byte 1, bit 0: ACPI is supported.
    pub const EXT1_ACPI: u8 = 1 << 0;
    /// Extension byte 2, bit 2: enable targeted content distribution (QEMU sets it for
    /// Microsoft's SVVP).
    pub const EXT2_TARGETED_CONTENT: u8 = 1 << 2;
    /// Extension byte 2, bit 3: UEFI Specification is supported.
    pub const EXT2_UEFI: u8 = 1 << 3;
    /// Extension byte 2, bit 4: the SMBIOS table describes a virtual machine.
    pub const EXT2_VIRTUAL_MACHINE: u8 = 1 << 4;
}

/// Type 1, System Information (§7.2), 2.4+ layout.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct System {
    pub header: Header,
    /// 04h..07h strings.
    pub manufacturer: u8,
    pub product_name: u8,
    pub version: u8,
    pub serial_number: u8,
    /// 08h: the UUID, first three fields little-endian (§7.2.1, SMBIOS 2.6+).
    pub uuid: [u8; 16],
    /// 18h (§7.2.2).
    pub wake_up_type: u8,
    /// 19h, 1Ah strings.
    pub sku_number: u8,
    pub family: u8,
}
formatted!(System, types::SYSTEM, 0x1B);

/// Wake-up type "power switch" (§7.2.2).
pub(super) const WAKE_UP_POWER_SWITCH: u8 = 0x06;

/// Type 2, Baseboard Information (§7.3), with no contained object handles.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct Baseboard {
    pub header: Header,
    /// 04h..08h strings.
    pub manufacturer: u8,
    pub product: u8,
    pub version: u8,
    pub serial_number: u8,
    pub asset_tag: u8,
    /// 09h (§7.3.1).
    pub feature_flags: u8,
    /// 0Ah string.
    pub location_in_chassis: u8,
    /// 0Bh: the Type 3 this board is in.
    pub chassis_handle: U16,
    /// 0Dh (§7.3.2).
    pub board_type: u8,
    /// 0Eh.
    pub contained_handles: u8,
}
formatted!(Baseboard, types::BASEBOARD, 0x0F);

/// Baseboard feature flag: the hosting board (motherboard).
pub(super) const BOARD_HOSTING: u8 = 1 << 0;
/// Board type "motherboard" (§7.3.2).
pub(super) const BOARD_TYPE_MOTHERBOARD: u8 = 0x0A;

/// Type 3, System Enclosure or Chassis (§7.4), with no contained elements (so the SKU string
/// follows at 15h).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct Chassis {
    pub header: Header,
    /// 04h string.
    pub manufacturer: u8,
    /// 05h (§7.4.1): bit 7 = chassis lock.
    pub chassis_type: u8,
    /// 06h..08h strings.
    pub version: u8,
    pub serial_number: u8,
    pub asset_tag: u8,
    /// 09h..0Bh (§7.4.2).
    pub boot_up_state: u8,
    pub power_supply_state: u8,
    pub thermal_state: u8,
    /// 0Ch (§7.4.3).
    pub security_status: u8,
    /// 0Dh.
    pub oem_defined: U32,
    /// 11h: in rack units, 0 = unspecified.
    pub height: u8,
    /// 12h: 0 = unspecified.
    pub power_cords: u8,
    /// 13h, 14h: count and record length of the contained elements (none).
    pub contained_count: u8,
    pub contained_record_length: u8,
    /// 15h string.
    pub sku_number: u8,
}
formatted!(Chassis, types::CHASSIS, 0x16);

/// Chassis type "Other" (§7.4.1), as QEMU reports.
pub(super) const CHASSIS_TYPE_OTHER: u8 = 0x01;
/// Chassis state "Safe" (§7.4.2).
pub(super) const CHASSIS_STATE_SAFE: u8 = 0x03;
/// Chassis security status "Unknown" (§7.4.3).
pub(super) const CHASSIS_SECURITY_UNKNOWN: u8 = 0x02;

/// Type 4, Processor Information (§7.5), 3.0 layout (with the *2 count fields).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct Processor {
    pub header: Header,
    /// 04h string.
    pub socket_designation: u8,
    /// 05h (§7.5.1).
    pub processor_type: u8,
    /// 06h (§7.5.2): FEh = see `family2`.
    pub family: u8,
    /// 07h string.
    pub manufacturer: u8,
    /// 08h: CPUID leaf 1 EAX, then EDX.
    pub processor_id: U64,
    /// 10h string.
    pub version: u8,
    /// 11h: 0 = unknown.
    pub voltage: u8,
    /// 12h..17h: MHz, 0 = unknown.
    pub external_clock: U16,
    pub max_speed: U16,
    pub current_speed: U16,
    /// 18h: bit 6 socket populated, bits 2:0 status.
    pub status: u8,
    /// 19h (§7.5.5).
    pub upgrade: u8,
    /// 1Ah..1Fh: Type 7 handles.
    pub l1_cache: U16,
    pub l2_cache: U16,
    pub l3_cache: U16,
    /// 20h..22h strings.
    pub serial_number: u8,
    pub asset_tag: u8,
    pub part_number: u8,
    /// 23h..25h: FFh = see the *2 fields.
    pub core_count: u8,
    pub core_enabled: u8,
    pub thread_count: u8,
    /// 26h (§7.5.9).
    pub characteristics: U16,
    /// 28h..2Fh.
    pub family2: U16,
    pub core_count2: U16,
    pub core_enabled2: U16,
    pub thread_count2: U16,
}
formatted!(Processor, types::PROCESSOR, 0x30);

/// Processor type "central processor" (§7.5.1).
pub(super) const PROCESSOR_TYPE_CENTRAL: u8 = 0x03;
/// Processor family "Other" (§7.5.2), as QEMU reports: the vCPU model is the host's.
pub(super) const PROCESSOR_FAMILY_OTHER: u8 = 0x01;
/// Processor status: socket populated, CPU enabled.
pub(super) const PROCESSOR_STATUS_ENABLED: u8 = 0x41;
/// Processor upgrade "Other" (§7.5.5).
pub(super) const PROCESSOR_UPGRADE_OTHER: u8 = 0x01;
/// Processor characteristics (§7.5.9): 64-bit capable.
pub(super) const PROCESSOR_64BIT: u16 = 1 << 2;

/// Type 16, Physical Memory Array (§7.17), 2.7+ layout.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct MemoryArray {
    pub header: Header,
    /// 04h (§7.17.1).
    pub location: u8,
    /// 05h (§7.17.2).
    pub r#use: u8,
    /// 06h (§7.17.3).
    pub error_correction: u8,
    /// 07h: KiB; 8000_0000h = see `extended_maximum_capacity`.
    pub maximum_capacity: U32,
    /// 0Bh.
    pub error_information: U16,
    /// 0Dh.
    pub devices: U16,
    /// 0Fh: bytes.
    pub extended_maximum_capacity: U64,
}
formatted!(MemoryArray, types::MEMORY_ARRAY, 0x17);

/// Memory array location "Other" (§7.17.1).
pub(super) const ARRAY_LOCATION_OTHER: u8 = 0x01;
/// Memory array use "System memory" (§7.17.2).
pub(super) const ARRAY_USE_SYSTEM: u8 = 0x03;
/// Memory array error correction "Multi-bit ECC" (§7.17.3): what QEMU and SeaBIOS report,
/// "for Microsoft".
pub(super) const ARRAY_ECC_MULTI_BIT: u8 = 0x06;
/// `maximum_capacity` value meaning "see `extended_maximum_capacity`".
pub(super) const ARRAY_CAPACITY_EXTENDED: u32 = 0x8000_0000;

/// Type 17, Memory Device (§7.18), 2.8+ layout.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct MemoryDevice {
    pub header: Header,
    /// 04h: the Type 16 it belongs to.
    pub memory_array: U16,
    /// 06h.
    pub error_information: U16,
    /// 08h, 0Ah: bits, FFFFh = unknown.
    pub total_width: U16,
    pub data_width: U16,
    /// 0Ch: MiB (bit 15 clear); 7FFFh = see `extended_size`.
    pub size: U16,
    /// 0Eh (§7.18.1).
    pub form_factor: u8,
    /// 0Fh: 0 = not part of a set.
    pub device_set: u8,
    /// 10h, 11h strings.
    pub device_locator: u8,
    pub bank_locator: u8,
    /// 12h (§7.18.2).
    pub memory_type: u8,
    /// 13h (§7.18.3).
    pub type_detail: U16,
    /// 15h: MT/s, 0 = unknown.
    pub speed: U16,
    /// 17h..1Ah strings.
    pub manufacturer: u8,
    pub serial_number: u8,
    pub asset_tag: u8,
    pub part_number: u8,
    /// 1Bh: bits 3:0 rank, 0 = unknown.
    pub attributes: u8,
    /// 1Ch: MiB.
    pub extended_size: U32,
    /// 20h: MT/s, 0 = unknown.
    pub configured_speed: U16,
    /// 22h..27h: millivolts, 0 = unknown.
    pub minimum_voltage: U16,
    pub maximum_voltage: U16,
    pub configured_voltage: U16,
}
formatted!(MemoryDevice, types::MEMORY_DEVICE, 0x28);

/// Memory device form factor "DIMM" (§7.18.1).
pub(super) const FORM_FACTOR_DIMM: u8 = 0x09;
/// Memory type "RAM" (§7.18.2).
pub(super) const MEMORY_TYPE_RAM: u8 = 0x07;
/// Memory type detail "Other" (§7.18.3, bit 1).
pub(super) const MEMORY_DETAIL_OTHER: u16 = 1 << 1;
/// Width "unknown".
pub(super) const WIDTH_UNKNOWN: u16 = 0xFFFF;
/// `size` value meaning "see `extended_size`".
pub(super) const DEVICE_SIZE_EXTENDED: u16 = 0x7FFF;
/// Largest `extended_size` (bit 31 is reserved), in MiB.
pub(super) const DEVICE_EXTENDED_SIZE_MAX: u64 = 0x7FFF_FFFF;

/// Type 19, Memory Array Mapped Address (§7.20), 2.7+ layout.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct MemoryArrayMappedAddress {
    pub header: Header,
    /// 04h, 08h: KiB (the last KiB for the end); FFFF_FFFFh = see the extended fields.
    pub starting_address: U32,
    pub ending_address: U32,
    /// 0Ch: the Type 16 it maps.
    pub memory_array: U16,
    /// 0Eh: memory devices that form one row.
    pub partition_width: u8,
    /// 0Fh, 17h: bytes (the last byte for the end).
    pub extended_starting_address: U64,
    pub extended_ending_address: U64,
}
formatted!(
    MemoryArrayMappedAddress,
    types::MEMORY_ARRAY_MAPPED_ADDRESS,
    0x1F
);

/// `starting_address`/`ending_address` value meaning "see the extended fields".
pub(super) const MAPPED_ADDRESS_EXTENDED: u32 = 0xFFFF_FFFF;

/// Type 32, System Boot Information (§7.33), with the one-byte status.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct SystemBoot {
    pub header: Header,
    /// 04h.
    pub reserved: [u8; 6],
    /// 0Ah (§7.33.2): 0 = no errors detected.
    pub boot_status: u8,
}
formatted!(SystemBoot, types::SYSTEM_BOOT, 0x0B);

/// Type 127, End-of-Table (§7.46).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct EndOfTable {
    pub header: Header,
}
formatted!(EndOfTable, types::END_OF_TABLE, 0x04);

/// The SMBIOS 3.0 (64-bit) entry point structure (§5.2.2).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
pub(super) struct EntryPoint3 {
    /// 00h: "_SM3_".
    pub anchor: [u8; 5],
    /// 05h: makes the bytes of the whole entry point add up to 0.
    pub checksum: u8,
    /// 06h: 18h.
    pub length: u8,
    /// 07h..09h: the SMBIOS version the tables follow.
    pub major: u8,
    pub minor: u8,
    pub docrev: u8,
    /// 0Ah: 01h = SMBIOS 3.0 entry point.
    pub revision: u8,
    /// 0Bh.
    pub reserved: u8,
    /// 0Ch: the structure table's maximum size (all structures, strings included).
    pub table_max_size: U32,
    /// 10h: the structure table's physical address.
    pub table_address: U64,
}
const _: () = assert!(core::mem::size_of::<EntryPoint3>() == super::ENTRY_POINT_LEN);
