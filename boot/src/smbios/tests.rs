//! Tests of the SMBIOS tables, parsed back as firmware and Linux walk them, and decoded by
//! `dmidecode`.

use super::*;
use crate::layout::ram_regions;
use crate::test_utils::{guest_memory, read_bytes};

const GIB: u64 = 1 << 30;
/// `vm_uuid("workstation")`, computed independently (Python's `uuid.uuid5` with
/// [`VM_UUID_NAMESPACE`]).
const WORKSTATION_UUID: &str = "68dcc3d8-632a-536f-b769-93ded3b4bcf3";

/// One structure of a table: its header fields, formatted area and strings.
#[derive(Debug)]
struct Structure {
    ty: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    /// The string a string field at offset `at` names (`None` for string number 0).
    fn string(&self, at: usize) -> Option<&str> {
        match self.formatted[at] {
            0 => None,
            n => Some(&self.strings[usize::from(n) - 1]),
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.formatted[at..at + 2].try_into().expect("2 bytes"))
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.formatted[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.formatted[at..at + 8].try_into().expect("8 bytes"))
    }
}

/// Walks a structure table as OVMF's `SmbiosPlatformDxe` and Linux's `dmi_scan` do: the
/// formatted area (its length from the header), then strings up to the double NUL, until
/// Type 127, which must end the table exactly.
fn parse(table: &[u8]) -> Vec<Structure> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        assert!(
            at + 4 <= table.len(),
            "structure header past the end at {at}"
        );
        let (ty, len) = (table[at], usize::from(table[at + 1]));
        assert!(len >= 4, "type {ty}: length {len}");
        let formatted = table[at..at + len].to_vec();
        let strings_start = at + len;
        let end = (strings_start..table.len() - 1)
            .find(|&i| table[i] == 0 && table[i + 1] == 0)
            .unwrap_or_else(|| panic!("type {ty}: no double NUL"));
        let strings = table[strings_start..end]
            .split(|&b| b == 0)
            .filter(|_| end > strings_start)
            .map(|s| {
                assert!(!s.is_empty(), "type {ty}: empty string in the set");
                String::from_utf8(s.to_vec()).expect("ASCII string")
            })
            .collect();
        let handle = u16::from_le_bytes([table[at + 2], table[at + 3]]);
        out.push(Structure {
            ty,
            handle,
            formatted,
            strings,
        });
        at = end + 2;
        if ty == 127 {
            assert_eq!(at, table.len(), "bytes after End-of-Table");
            return out;
        }
    }
}

fn regions(ram: u64) -> Vec<(u64, u64)> {
    ram_regions(ram)
        .into_iter()
        .map(|(a, l)| (a.0, l as u64))
        .collect()
}

fn info<'a>(name: &'a str, regions: &'a [(u64, u64)]) -> SmbiosInfo<'a> {
    SmbiosInfo {
        vm_name: name,
        uuid: vm_uuid(name),
        serial: "",
        vcpus: 4,
        cpu_mhz: 2400,
        processor_id: 0x1789_0400_000a_0f82,
        ram_regions: regions,
        bios: None,
    }
}

fn find(structures: &[Structure], ty: u8) -> &Structure {
    structures
        .iter()
        .find(|s| s.ty == ty)
        .unwrap_or_else(|| panic!("no type {ty}"))
}

#[test]
fn entry_point_is_byte_exact() {
    let ep = entry_point(0x0001_2345_6789_abc0, 0x1f3).expect("entry point");
    #[rustfmt::skip]
    let mut expected = [
        b'_', b'S', b'M', b'3', b'_', 0, 0x18, 3, 0, 0, 1, 0,
        0xf3, 0x01, 0, 0,
        0xc0, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0,
    ];
    expected[5] = 0u8.wrapping_sub(checksum(&expected));
    assert_eq!(ep, expected);
    assert_eq!(checksum(&ep), 0, "entry point checksum");
}

#[test]
fn fw_cfg_anchor_is_what_ovmf_accepts() {
    let regions = regions(6 * GIB);
    let blobs = fw_cfg_blobs(&info("vm", &regions)).expect("blobs");
    let anchor = &blobs.anchor;
    // DetectSmbiosVersionLib: fw_cfg size 24, "_SM3_", major 3, TableMaximumSize == the
    // tables file's size.
    assert_eq!(anchor.len(), 24);
    assert_eq!(&anchor[..5], b"_SM3_");
    assert_eq!((anchor[7], anchor[8], anchor[9]), (3, 0, 0));
    assert_eq!(anchor[10], 1, "entry point revision");
    let max = u32::from_le_bytes(anchor[12..16].try_into().expect("4 bytes"));
    assert_eq!(max as usize, blobs.tables.len());
    assert_eq!(&anchor[16..24], &[0; 8], "table address: 0, as QEMU");
    assert_eq!(checksum(anchor), 0);
    assert_eq!(
        blobs.tables,
        smbios_tables(&info("vm", &regions)).expect("tables")
    );
}

#[test]
fn types_handles_and_references() {
    let regions = regions(6 * GIB);
    for bios in [None, Some(BiosInfo::ghost_vmm(false))] {
        let info = SmbiosInfo {
            bios,
            ..info("vm", &regions)
        };
        let s = parse(&smbios_tables(&info).expect("tables"));
        let types: Vec<u8> = s.iter().map(|s| s.ty).collect();
        let mut expected = vec![1, 2, 3, 4, 16, 17, 19, 19, 32, 127];
        if bios.is_some() {
            expected.insert(0, 0);
        }
        assert_eq!(types, expected);
        for (i, st) in s.iter().enumerate() {
            assert_eq!(usize::from(st.handle), i, "handles are sequential from 0");
        }
        // Spec lengths of the formatted areas (SMBIOS 3.0).
        for st in &s {
            let len = match st.ty {
                0 => 0x18,
                1 => 0x1B,
                2 => 0x0F,
                3 => 0x16,
                4 => 0x30,
                16 => 0x17,
                17 => 0x28,
                19 => 0x1F,
                32 => 0x0B,
                127 => 4,
                t => panic!("unexpected type {t}"),
            };
            assert_eq!(st.formatted.len(), len, "type {} length", st.ty);
        }
        let chassis = find(&s, 3).handle;
        assert_eq!(find(&s, 2).u16_at(0x0B), chassis, "board's chassis handle");
        let array = find(&s, 16).handle;
        assert_eq!(find(&s, 17).u16_at(0x04), array, "device's array handle");
        for st in s.iter().filter(|s| s.ty == 19) {
            assert_eq!(st.u16_at(0x0C), array, "mapped address's array handle");
        }
        // End-of-Table: header only, two NULs.
        assert!(s.last().expect("end").strings.is_empty());
    }
}

#[test]
fn system_information_names_the_vm_and_its_uuid() {
    let regions = regions(GIB);
    let info = SmbiosInfo {
        serial: "SN-42",
        ..info("workstation", &regions)
    };
    let s = parse(&smbios_tables(&info).expect("tables"));
    let system = find(&s, 1);
    assert_eq!(system.string(0x04), Some("ghost-vmm"), "sys_vendor");
    assert_eq!(system.string(0x05), Some("workstation"), "product_name");
    assert_eq!(system.string(0x06), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(system.string(0x07), Some("SN-42"), "product_serial");
    assert_eq!(system.string(0x19), None, "no SKU");
    assert_eq!(
        system.string(0x1A),
        Some("Virtual Machine"),
        "product_family"
    );
    assert_eq!(system.formatted[0x18], 0x06, "wake-up: power switch");
    // 68dcc3d8-632a-536f-b769-93ded3b4bcf3, first three fields little-endian.
    assert_eq!(
        system.formatted[0x08..0x18],
        [
            0xd8, 0xc3, 0xdc, 0x68, 0x2a, 0x63, 0x6f, 0x53, 0xb7, 0x69, 0x93, 0xde, 0xd3, 0xb4,
            0xbc, 0xf3
        ]
    );
    for ty in [2, 3] {
        assert_eq!(
            find(&s, ty).string(0x04),
            Some("ghost-vmm"),
            "type {ty} vendor"
        );
    }
    assert_eq!(find(&s, 3).formatted[0x05], 0x01, "chassis type: Other");
    // No serial: string number 0.
    let s = parse(&smbios_tables(&info_with_serial("")).expect("tables"));
    assert_eq!(find(&s, 1).string(0x07), None);
}

fn info_with_serial(serial: &str) -> SmbiosInfo<'_> {
    const REGIONS: &[(u64, u64)] = &[(0, GIB)];
    SmbiosInfo {
        serial,
        ..info("vm", REGIONS)
    }
}

#[test]
fn vm_uuid_is_name_based_version_5() {
    let uuid = vm_uuid("workstation");
    assert_eq!(Uuid::from_bytes(uuid).to_string(), WORKSTATION_UUID);
    assert_eq!(uuid[6] >> 4, 5, "version 5");
    assert_eq!(uuid[8] >> 6, 0b10, "RFC 4122 variant");
    assert_eq!(vm_uuid("workstation"), uuid, "stable");
    assert_ne!(vm_uuid("workstation2"), uuid);
}

#[test]
fn odd_and_long_names_are_sanitized() {
    let regions = regions(GIB);
    let long = "x".repeat(300);
    for (name, expected) in [
        ("  bad\0name\n\t\u{e9}t\u{e9}  ", Some("bad_name___t_")),
        ("   ", None),
        ("", None),
        (long.as_str(), Some(&long[..MAX_STRING_LEN])),
    ] {
        let table = smbios_tables(&info(name, &regions)).expect("tables");
        let s = parse(&table);
        assert_eq!(s.len(), 9, "{name:?}: the walk still finds every structure");
        let product = find(&s, 1).string(0x05);
        assert_eq!(product, expected, "{name:?}");
        for st in &s {
            for string in &st.strings {
                assert!(string.len() <= MAX_STRING_LEN);
                assert!(string.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
            }
        }
    }
}

#[test]
fn memory_structures_describe_ram_and_its_regions() {
    let regions = regions(6 * GIB);
    let s = parse(&smbios_tables(&info("vm", &regions)).expect("tables"));
    let array = find(&s, 16);
    assert_eq!(array.formatted[0x05], 0x03, "system memory");
    assert_eq!(array.u32_at(0x07), 6 << 20, "capacity in KiB");
    assert_eq!(array.u64_at(0x0F), 0);
    assert_eq!(array.u16_at(0x0D), 1, "one device");
    let device = find(&s, 17);
    assert_eq!(device.u16_at(0x0C), 6 << 10, "size in MiB");
    assert_eq!(device.u32_at(0x1C), 0);
    assert_eq!(device.string(0x10), Some("DIMM 0"));
    let mapped: Vec<(u32, u32, u64, u64)> = s
        .iter()
        .filter(|s| s.ty == 19)
        .map(|m| (m.u32_at(4), m.u32_at(8), m.u64_at(0x0F), m.u64_at(0x17)))
        .collect();
    // [0, 3 GiB) and [4 GiB, 7 GiB), ends inclusive, in KiB.
    assert_eq!(
        mapped,
        [(0, (3 << 20) - 1, 0, 0), (4 << 20, (7 << 20) - 1, 0, 0)]
    );

    // Past the 16-bit size and the 32-bit KiB fields: the extended ones.
    let big = [(0, 3 * GIB), (8 << 40, 64 * GIB)];
    let s = parse(&smbios_tables(&info("vm", &big)).expect("tables"));
    let device = find(&s, 17);
    assert_eq!(device.u16_at(0x0C), 0x7FFF);
    assert_eq!(device.u32_at(0x1C), 67 << 10, "extended size in MiB");
    let high = s.iter().filter(|s| s.ty == 19).nth(1).expect("high region");
    assert_eq!((high.u32_at(4), high.u32_at(8)), (u32::MAX, u32::MAX));
    assert_eq!(high.u64_at(0x0F), 8 << 40);
    assert_eq!(high.u64_at(0x17), (8 << 40) + 64 * GIB - 1);
}

#[test]
fn bios_and_processor_information() {
    let regions = regions(GIB);
    let info = SmbiosInfo {
        bios: Some(BiosInfo::ghost_vmm(true)),
        ..info("vm", &regions)
    };
    let s = parse(&smbios_tables(&info).expect("tables"));
    let bios = find(&s, 0);
    assert_eq!(bios.string(0x04), Some("ghost-vmm"), "bios_vendor");
    assert_eq!(
        bios.string(0x05),
        Some(env!("CARGO_PKG_VERSION")),
        "bios_version"
    );
    assert_eq!(
        bios.string(0x08),
        Some(GHOST_BIOS_RELEASE_DATE),
        "bios_date"
    );
    assert_eq!(bios.formatted[0x09], 0, "64 KiB ROM");
    let ext2 = bios.formatted[0x13];
    assert_ne!(ext2 & (1 << 3), 0, "UEFI supported");
    assert_ne!(ext2 & (1 << 4), 0, "virtual machine");
    assert_eq!(bios.formatted[0x12] & 1, 1, "ACPI supported");
    let cpu = find(&s, 4);
    assert_eq!(cpu.string(0x04), Some("CPU 0"));
    assert_eq!(cpu.formatted[0x18], 0x41, "populated, enabled");
    assert_eq!(cpu.u64_at(0x08), info.processor_id);
    assert_eq!((cpu.u16_at(0x14), cpu.u16_at(0x16)), (2400, 2400));
    assert_eq!(
        cpu.formatted[0x23..0x26],
        [4, 4, 4],
        "cores, enabled, threads"
    );
    assert_eq!(
        (cpu.u16_at(0x2A), cpu.u16_at(0x2C), cpu.u16_at(0x2E)),
        (4, 4, 4)
    );
}

#[test]
fn bad_input_is_an_error() {
    let regions = regions(GIB);
    let no_cpu = SmbiosInfo {
        vcpus: 0,
        ..info("vm", &regions)
    };
    assert!(matches!(smbios_tables(&no_cpu), Err(SmbiosError::NoVcpus)));
    assert!(matches!(
        smbios_tables(&info("vm", &[])),
        Err(SmbiosError::NoRam)
    ));
    for bad in [(0, 0), (u64::MAX - 10, 100)] {
        assert!(matches!(
            smbios_tables(&info("vm", &[bad])),
            Err(SmbiosError::BadRamRegion { .. })
        ));
    }
    let many = vec![(0, 4096); MAX_RAM_REGIONS + 1];
    assert!(matches!(
        smbios_tables(&info("vm", &many)),
        Err(SmbiosError::TooManyRamRegions { count: 65 })
    ));
}

#[test]
fn direct_boot_writes_the_entry_point_at_f0000() {
    let mem = guest_memory(256 << 20);
    let regions = regions(256 << 20);
    let info = SmbiosInfo {
        bios: Some(BiosInfo::ghost_vmm(false)),
        ..info("vm", &regions)
    };
    let ep_addr = write_smbios(&mem, &info).expect("write");
    assert_eq!(ep_addr.0, 0xf_0000);
    let ep = read_bytes(&mem, ep_addr.0, ENTRY_POINT_LEN);
    assert_eq!(&ep[..5], b"_SM3_");
    assert_eq!(checksum(&ep), 0);
    let len = u32::from_le_bytes(ep[12..16].try_into().expect("4 bytes")) as usize;
    let addr = u64::from_le_bytes(ep[16..24].try_into().expect("8 bytes"));
    assert_eq!(addr, SMBIOS_TABLES_START);
    assert!(
        addr + len as u64 <= BIOS_RESET_ENTRY,
        "clear of the reset stub"
    );
    let table = read_bytes(&mem, addr, len);
    assert_eq!(table, smbios_tables(&info).expect("tables"));
    assert_eq!(parse(&table).len(), 10);
}

/// `dmidecode` (package `dmidecode`, which `tests/testhost/setup.sh` installs) decodes the
/// tables from a dump file: the entry point at offset 0 pointing at the table at offset 0x20
/// (its `--dump-bin` format).
fn dmidecode(info: &SmbiosInfo<'_>, args: &[&str]) -> String {
    const TABLE_OFFSET: usize = 0x20;
    let tables = smbios_tables(info).expect("tables");
    let mut dump = entry_point(TABLE_OFFSET as u64, tables.len())
        .expect("entry point")
        .to_vec();
    dump.resize(TABLE_OFFSET, 0);
    dump.extend_from_slice(&tables);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("smbios.bin");
    std::fs::write(&file, &dump).expect("write the dump");
    let out = std::process::Command::new("dmidecode")
        .arg("--from-dump")
        .arg(&file)
        .args(args)
        .output()
        .expect("run dmidecode (install dmidecode: tests/testhost/setup.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dmidecode failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn dmidecode_decodes_the_tables() {
    let regions = regions(6 * GIB);
    let info = SmbiosInfo {
        bios: Some(BiosInfo::ghost_vmm(true)),
        ..info("workstation", &regions)
    };
    let text = dmidecode(&info, &[]);
    // dmidecode's complaints about malformed tables.
    for bad in [
        "Invalid",
        "Wrong",
        "TRUNCATED",
        "OUT OF SPEC",
        "Bad ",
        "Unsupported",
    ] {
        let hit = text.lines().find(|l| l.contains(bad));
        assert!(hit.is_none(), "dmidecode: {hit:?} in\n{text}");
    }
    let has = |s: &str| assert!(text.contains(s), "{s:?} not in\n{text}");
    has("SMBIOS 3.0.0 present.");
    let handles = text.lines().filter(|l| l.starts_with("Handle 0x")).count();
    assert_eq!(handles, 11, "structures decoded");
    has("Handle 0x0000, DMI type 0, 24 bytes\nBIOS Information\n\tVendor: ghost-vmm");
    has("UEFI is supported");
    has("System is a virtual machine");
    has("Handle 0x0001, DMI type 1, 27 bytes\nSystem Information\n\tManufacturer: ghost-vmm\n\tProduct Name: workstation");
    has(&format!("UUID: {WORKSTATION_UUID}"));
    has("Wake-up Type: Power Switch");
    has("Family: Virtual Machine");
    has("Chassis Information\n\tManufacturer: ghost-vmm\n\tType: Other");
    has("Core Count: 4");
    has("Thread Count: 4");
    has("Maximum Capacity: 6 GB");
    has("Size: 6 GB");
    has("Starting Address: 0x00100000000");
    has("End Of Table");
    for (key, value) in [
        ("system-manufacturer", "ghost-vmm"),
        ("system-product-name", "workstation"),
        ("system-uuid", WORKSTATION_UUID),
        ("bios-vendor", "ghost-vmm"),
        ("chassis-type", "Other"),
    ] {
        let got = dmidecode(&info, &["-s", key]);
        assert_eq!(got.lines().last(), Some(value), "-s {key}: {got}");
    }
}
