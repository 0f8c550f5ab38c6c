//! The string sets and the formatted area of each structure type, from [`SmbiosInfo`].

use uuid::Uuid;

use super::structures::*;
use super::{BiosInfo, SmbiosInfo, MAX_STRING_LEN, SYSTEM_FAMILY, VENDOR, VENDOR_VERSION};

/// The string set after a formatted area (DSP0134 §6.1.3): NUL-terminated strings, then one
/// more NUL; two NULs when there are none.
#[derive(Default)]
pub(super) struct Strings {
    bytes: Vec<u8>,
    count: u8,
}

impl Strings {
    /// Adds `s` (sanitized, see [`sanitize`]) and returns its string number, or 0 ("no
    /// string") when nothing is left of it.
    pub(super) fn add(&mut self, s: &str) -> u8 {
        let s = sanitize(s);
        if s.is_empty() || self.count == u8::MAX {
            return 0;
        }
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.count += 1;
        self.count
    }

    pub(super) fn finish_into(self, table: &mut Vec<u8>) {
        table.extend_from_slice(&self.bytes);
        if self.count == 0 {
            table.push(0);
        }
        table.push(0);
    }
}

/// A string as SMBIOS may hold it: printable ASCII (anything else, NUL included, becomes
/// `_`), no surrounding spaces, at most [`MAX_STRING_LEN`] bytes.
pub(super) fn sanitize(s: &str) -> String {
    let clean: String = s
        .trim()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STRING_LEN)
        .collect();
    clean.trim_end().to_owned()
}

pub(super) fn bios_info(handle: u16, bios: &BiosInfo<'_>, s: &mut Strings) -> Bios {
    use bios_characteristics::*;
    let mut ext2 = EXT2_TARGETED_CONTENT | EXT2_VIRTUAL_MACHINE;
    if bios.uefi {
        ext2 |= EXT2_UEFI;
    }
    Bios {
        header: Header::of::<Bios>(handle),
        vendor: s.add(VENDOR),
        version: s.add(bios.version),
        // The 64 KiB legacy BIOS area (the reset stub and the SMBIOS entry point live there);
        // "not applicable" (0) for UEFI.
        starting_segment: if bios.uefi { 0 } else { 0xF000 }.into(),
        release_date: s.add(bios.release_date),
        rom_size: 0, // 64 KiB
        characteristics: PCI.into(),
        characteristics_ext: [EXT1_ACPI, ext2],
        release_major: bios.release.0,
        release_minor: bios.release.1,
        ec_release_major: 0xFF,
        ec_release_minor: 0xFF,
    }
}

/// The UUID in SMBIOS byte order (DSP0134 §7.2.1): time_low, time_mid and
/// time_hi_and_version little-endian, the rest as in RFC 4122.
pub(super) fn smbios_uuid(rfc: [u8; 16]) -> [u8; 16] {
    Uuid::from_bytes(rfc).to_bytes_le()
}

pub(super) fn system_info(handle: u16, info: &SmbiosInfo<'_>, s: &mut Strings) -> System {
    System {
        header: Header::of::<System>(handle),
        manufacturer: s.add(VENDOR),
        product_name: s.add(info.vm_name),
        version: s.add(VENDOR_VERSION),
        serial_number: s.add(info.serial),
        uuid: smbios_uuid(info.uuid),
        wake_up_type: WAKE_UP_POWER_SWITCH,
        sku_number: 0,
        family: s.add(SYSTEM_FAMILY),
    }
}

pub(super) fn baseboard(handle: u16, chassis: u16, s: &mut Strings) -> Baseboard {
    Baseboard {
        header: Header::of::<Baseboard>(handle),
        manufacturer: s.add(VENDOR),
        product: s.add(VENDOR),
        version: s.add(VENDOR_VERSION),
        serial_number: 0,
        asset_tag: 0,
        feature_flags: BOARD_HOSTING,
        location_in_chassis: 0,
        chassis_handle: chassis.into(),
        board_type: BOARD_TYPE_MOTHERBOARD,
        contained_handles: 0,
    }
}

pub(super) fn chassis_info(handle: u16, s: &mut Strings) -> Chassis {
    Chassis {
        header: Header::of::<Chassis>(handle),
        manufacturer: s.add(VENDOR),
        chassis_type: CHASSIS_TYPE_OTHER,
        version: s.add(VENDOR_VERSION),
        serial_number: 0,
        asset_tag: 0,
        boot_up_state: CHASSIS_STATE_SAFE,
        power_supply_state: CHASSIS_STATE_SAFE,
        thermal_state: CHASSIS_STATE_SAFE,
        security_status: CHASSIS_SECURITY_UNKNOWN,
        oem_defined: 0.into(),
        height: 0,
        power_cords: 0,
        contained_count: 0,
        contained_record_length: 0,
        sku_number: 0,
    }
}

pub(super) fn processor_info(handle: u16, info: &SmbiosInfo<'_>, s: &mut Strings) -> Processor {
    let cores = info.vcpus;
    Processor {
        header: Header::of::<Processor>(handle),
        socket_designation: s.add("CPU 0"),
        processor_type: PROCESSOR_TYPE_CENTRAL,
        family: PROCESSOR_FAMILY_OTHER,
        manufacturer: s.add(VENDOR),
        processor_id: info.processor_id.into(),
        version: s.add(VENDOR_VERSION),
        voltage: 0,
        external_clock: 0.into(),
        max_speed: info.cpu_mhz.into(),
        current_speed: info.cpu_mhz.into(),
        status: PROCESSOR_STATUS_ENABLED,
        upgrade: PROCESSOR_UPGRADE_OTHER,
        l1_cache: HANDLE_NONE.into(),
        l2_cache: HANDLE_NONE.into(),
        l3_cache: HANDLE_NONE.into(),
        serial_number: 0,
        asset_tag: 0,
        part_number: 0,
        // vcpus is a u8, at most 255: the one-byte counts hold it (FFh would mean "see the
        // *2 field", which holds the same count).
        core_count: cores,
        core_enabled: cores,
        thread_count: cores,
        characteristics: PROCESSOR_64BIT.into(),
        family2: u16::from(PROCESSOR_FAMILY_OTHER).into(),
        core_count2: u16::from(cores).into(),
        core_enabled2: u16::from(cores).into(),
        thread_count2: u16::from(cores).into(),
    }
}

pub(super) fn memory_array(handle: u16, ram: u64) -> MemoryArray {
    let kib = ram.div_ceil(1 << 10);
    let (capacity, extended) = match u32::try_from(kib) {
        Ok(kib) if kib < ARRAY_CAPACITY_EXTENDED => (kib, 0),
        _ => (ARRAY_CAPACITY_EXTENDED, ram),
    };
    MemoryArray {
        header: Header::of::<MemoryArray>(handle),
        location: ARRAY_LOCATION_OTHER,
        r#use: ARRAY_USE_SYSTEM,
        error_correction: ARRAY_ECC_MULTI_BIT,
        maximum_capacity: capacity.into(),
        error_information: HANDLE_NOT_PROVIDED.into(),
        devices: 1.into(),
        extended_maximum_capacity: extended.into(),
    }
}

pub(super) fn memory_device(handle: u16, array: u16, ram: u64, s: &mut Strings) -> MemoryDevice {
    let mib = ram.div_ceil(1 << 20);
    let (size, extended) = match u16::try_from(mib) {
        Ok(mib) if mib < DEVICE_SIZE_EXTENDED => (mib, 0),
        // Saturates at 2 PiB - 1 MiB, the field's limit.
        _ => (
            DEVICE_SIZE_EXTENDED,
            u32::try_from(mib.min(DEVICE_EXTENDED_SIZE_MAX)).unwrap_or(u32::MAX),
        ),
    };
    MemoryDevice {
        header: Header::of::<MemoryDevice>(handle),
        memory_array: array.into(),
        error_information: HANDLE_NOT_PROVIDED.into(),
        total_width: WIDTH_UNKNOWN.into(),
        data_width: WIDTH_UNKNOWN.into(),
        size: size.into(),
        form_factor: FORM_FACTOR_DIMM,
        device_set: 0,
        device_locator: s.add("DIMM 0"),
        bank_locator: 0,
        memory_type: MEMORY_TYPE_RAM,
        type_detail: MEMORY_DETAIL_OTHER.into(),
        speed: 0.into(),
        manufacturer: s.add(VENDOR),
        serial_number: 0,
        asset_tag: 0,
        part_number: 0,
        attributes: 0,
        extended_size: extended.into(),
        configured_speed: 0.into(),
        minimum_voltage: 0.into(),
        maximum_voltage: 0.into(),
        configured_voltage: 0.into(),
    }
}

/// One RAM region `[start, start + len)` (`len > 0`, checked by the caller): in KiB when both
/// ends fit the 32-bit fields, else in bytes in the extended fields.
pub(super) fn mapped_address(
    handle: u16,
    array: u16,
    start: u64,
    len: u64,
) -> MemoryArrayMappedAddress {
    let end = start + (len - 1);
    let kib = |a: u64| {
        u32::try_from(a >> 10)
            .ok()
            .filter(|&k| k != MAPPED_ADDRESS_EXTENDED)
    };
    let (starting, ending, ext_start, ext_end) = match (kib(start), kib(end)) {
        (Some(s), Some(e)) => (s, e, 0, 0),
        _ => (MAPPED_ADDRESS_EXTENDED, MAPPED_ADDRESS_EXTENDED, start, end),
    };
    MemoryArrayMappedAddress {
        header: Header::of::<MemoryArrayMappedAddress>(handle),
        starting_address: starting.into(),
        ending_address: ending.into(),
        memory_array: array.into(),
        partition_width: 1,
        extended_starting_address: ext_start.into(),
        extended_ending_address: ext_end.into(),
    }
}
