//! Tests of the ACPI tables, read back from guest memory as the guest would.

use super::*;
use crate::layout::{
    ACPI_S5_SLP_TYP, CMOS_CENTURY_INDEX, CMOS_PORT, GED_EVENT_POWER_BUTTON, GED_EVENT_REGISTER_LEN,
    GED_GSI, GED_MMIO_START, PCI_MMIO32_SIZE, PCI_MMIO32_START, RTC_GSI,
};
use crate::test_utils::{guest_memory, read_bytes};
use vm_memory::GuestMemoryMmap;

const MIB: u64 = 1 << 20;
const MMIO64: (u64, u64) = (1 << 32, 64 << 30);

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the whole table at `addr` (length from its header).
fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let header = read_bytes(mem, addr, 36);
    read_bytes(mem, addr, u32_at(&header, 4) as usize)
}

/// Parses RSDP → XSDT and returns the XSDT's tables by signature.
fn tables(mem: &GuestMemoryMmap, rsdp: GuestAddress) -> Vec<([u8; 4], u64, Vec<u8>)> {
    let r = read_bytes(mem, rsdp.0, 36);
    assert_eq!(&r[..8], b"RSD PTR ");
    assert_eq!(checksum(&r[..20]), 0, "RSDP checksum");
    assert_eq!(checksum(&r), 0, "RSDP extended checksum");
    assert_eq!(r[15], 2, "RSDP revision");
    assert_eq!(u32_at(&r, 20), 36, "RSDP length");
    let xsdt = table(mem, u64_at(&r, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    assert_eq!(checksum(&xsdt), 0, "XSDT checksum");
    xsdt[36..]
        .chunks_exact(8)
        .map(|e| {
            let addr = u64_at(e, 0);
            assert!((ACPI_START..ACPI_END).contains(&addr));
            let t = table(mem, addr);
            let sig: [u8; 4] = t[..4].try_into().expect("signature");
            (sig, addr, t)
        })
        .collect()
}

fn find(tables: &[([u8; 4], u64, Vec<u8>)], sig: &[u8; 4]) -> Vec<u8> {
    tables
        .iter()
        .find(|(s, _, _)| s == sig)
        .map(|(_, _, t)| t.clone())
        .unwrap_or_else(|| panic!("no {} table", String::from_utf8_lossy(sig)))
}

#[test]
fn rsdp_xsdt_and_checksums() {
    let mem = guest_memory(256 * MIB);
    let rsdp = create_acpi_tables(&mem, 2, MMIO64).expect("tables");
    assert_eq!(rsdp, GuestAddress(ACPI_START));
    let tables = tables(&mem, rsdp);
    let sigs: Vec<&[u8; 4]> = tables.iter().map(|(s, _, _)| s).collect();
    assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);
    for (sig, addr, t) in &tables {
        assert_eq!(checksum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(addr % TABLE_ALIGN, 0);
        assert!(addr + t.len() as u64 <= ACPI_END);
    }
}

#[test]
fn fadt_is_hardware_reduced_with_power_port_registers() {
    let mem = guest_memory(256 * MIB);
    let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
    let fadt = find(&tables, b"FACP");
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "FADT major version");
    assert_eq!(fadt[131], 5, "FADT minor version");
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    let boot_arch = u16_at(&fadt, 109);
    assert_eq!(boot_arch & 0b11, 0, "no legacy devices, no 8042");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
    assert_eq!(boot_arch & (1 << 3), 0, "MSI must stay supported");
    assert_eq!(boot_arch & (1 << 5), 0, "a CMOS RTC is present");
    assert_eq!(
        fadt[108], CMOS_CENTURY_INDEX,
        "CENTURY: the RTC's century register"
    );
    // GAS: space id, bit width, bit offset, access size, address.
    for (name, at) in [
        ("reset", 116),
        ("sleep control", 244),
        ("sleep status", 256),
    ] {
        let gas = &fadt[at..at + 12];
        assert_eq!(gas[0], 1, "{name}: SystemIO");
        assert_eq!(gas[1], 8, "{name}: 8 bits");
        assert_eq!(gas[3], 1, "{name}: byte access");
        assert_eq!(u64_at(gas, 4), u64::from(ACPI_POWER_PORT), "{name}: port");
    }
    assert_eq!(fadt[128], ACPI_RESET_VALUE);
    // X_DSDT points at a valid DSDT; the 32-bit DSDT field is unused.
    assert_eq!(u32_at(&fadt, 40), 0);
    let dsdt = table(&mem, u64_at(&fadt, 140));
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(checksum(&dsdt), 0, "DSDT checksum");
}

#[test]
fn dsdt_has_s5_and_devices() {
    let mem = guest_memory(256 * MIB);
    let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
    let fadt = find(&tables, b"FACP");
    let dsdt = table(&mem, u64_at(&fadt, 140));
    let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    // NameOp "_S5_" PackageOp.
    assert!(has(b"\x08_S5_\x12"), "_S5_ package");
    // Package { BytePrefix ACPI_S5_SLP_TYP, Zero, Zero, Zero }.
    assert!(has(&[0x04, 0x0a, ACPI_S5_SLP_TYP, 0, 0, 0]));
    assert!(has(b"\\_SB_"));
    assert!(has(b"COM1"));
    assert!(has(b"MBRD"));
    // The host bridge, with the 64-bit window (QWordMemory: tag 0x8a, min then max).
    assert!(has(b"PCI0"));
    assert!(has(b"_PRT"), "INTx routing for passed-through devices");
    assert!(has(b"\x0c\x41\xd0\x0a\x08"), "_HID PNP0A08");
    let (start, size) = MMIO64;
    let mut window = start.to_le_bytes().to_vec();
    window.extend_from_slice(&(start + size - 1).to_le_bytes());
    assert!(has(&window), "64-bit window in _CRS");
    let lo = u32::try_from(PCI_MMIO32_START).unwrap();
    let hi = u32::try_from(PCI_MMIO32_START + PCI_MMIO32_SIZE - 1).unwrap();
    let mut mmio32 = lo.to_le_bytes().to_vec();
    mmio32.extend_from_slice(&hi.to_le_bytes());
    assert!(has(&mmio32), "32-bit window in _CRS");
}

/// The DSDT as ASL, disassembled by ACPICA's `iasl` (package `acpica-tools`, which
/// `tests/testhost/setup.sh` installs): proof that the AML is well formed, and what the
/// guest's interpreter will see, in words.
fn disassembled_dsdt() -> String {
    let mem = guest_memory(256 * MIB);
    let tables = tables(&mem, create_acpi_tables(&mem, 2, MMIO64).expect("tables"));
    let fadt = find(&tables, b"FACP");
    disassemble(&table(&mem, u64_at(&fadt, 140)))
}

/// `dsdt` as ASL (iasl's comments dropped, whitespace collapsed).
pub(super) fn disassemble(dsdt: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let aml = dir.path().join("dsdt.aml");
    std::fs::write(&aml, dsdt).expect("write dsdt.aml");
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&aml)
        .output()
        .expect("run iasl (install acpica-tools: tests/testhost/setup.sh does)");
    let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap_or_else(|e| {
        panic!(
            "iasl -d wrote no dsdt.dsl ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // The disassembler's own complaints are comments; any is a bug in our AML.
    for bad in ["Error", "Unknown", "Invalid", "Unresolved"] {
        let hit = dsl.lines().find(|l| l.contains(bad));
        assert!(hit.is_none(), "iasl: {hit:?} in\n{dsl}");
    }
    // Drop iasl's comments and collapse whitespace, so checks do not depend on its layout.
    let mut code = String::new();
    for line in dsl.lines() {
        let line = line.split("//").next().unwrap_or_default();
        code.push_str(line);
        code.push(' ');
    }
    while let Some(start) = code.find("/*") {
        let end = code[start..]
            .find("*/")
            .map_or(code.len(), |e| start + e + 2);
        code.replace_range(start..end, "");
    }
    code.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" )", ")")
}

#[test]
fn power_button_is_a_generic_event_device_notifying_pwrb() {
    let asl = disassembled_dsdt();
    let has = |s: &str| assert!(asl.contains(s), "{s:?} not in {asl}");
    has("Device (GED) { Name (_HID, \"ACPI0013\") Name (_UID, Zero)");
    // Its interrupt: the GED GSI, edge, active high.
    has(&format!(
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,,) {{ 0x{GED_GSI:08X}, }}"
    ));
    has(&format!(
        "OperationRegion (GDST, SystemMemory, 0x{GED_MMIO_START:08X}, 0x{GED_EVENT_REGISTER_LEN:02X})"
    ));
    has("Field (GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }");
    // iasl writes 1 as `One`.
    const _: () = assert!(GED_EVENT_POWER_BUTTON == 1);
    has("Method (_EVT, 1, Serialized) { Local0 = GDAT If (((Local0 & One) == One)) { Notify (\\_SB.PWRB, 0x80) } }");
    has("Device (PWRB) { Name (_HID, EisaId (\"PNP0C0C\")) Name (_UID, Zero) }");
}

#[test]
fn cmos_rtc_is_a_pnp0b00_device_with_its_ports_and_irq_8() {
    let asl = disassembled_dsdt();
    let want = format!(
        "Device (RTC) {{ Name (_HID, EisaId (\"PNP0B00\")) Name (_UID, Zero) Name (_CRS, ResourceTemplate () {{ IO (Decode16, 0x{CMOS_PORT:04X}, 0x{CMOS_PORT:04X}, 0x01, 0x02,) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,,) {{ 0x{RTC_GSI:08X}, }} }}) }}"
    );
    assert!(asl.contains(&want), "{want:?} not in {asl}");
}

fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut at = 44;
    while at < madt.len() {
        let (ty, len) = (madt[at], madt[at + 1] as usize);
        assert!(len >= 2, "MADT entry length");
        entries.push((ty, madt[at..at + len].to_vec()));
        at += len;
    }
    assert_eq!(at, madt.len());
    entries
}

#[test]
fn madt_has_one_enabled_lapic_per_vcpu() {
    for n in [1u8, 2, 4] {
        let mem = guest_memory(256 * MIB);
        let tables = tables(&mem, create_acpi_tables(&mem, n, MMIO64).expect("tables"));
        let madt = find(&tables, b"APIC");
        assert_eq!(u32_at(&madt, 36), 0xfee0_0000, "LAPIC address");
        assert_eq!(u32_at(&madt, 40), 0, "flags: no PCAT_COMPAT");
        let entries = madt_entries(&madt);
        let lapic_ids: Vec<u8> = entries
            .iter()
            .filter(|(ty, _)| *ty == 0)
            .map(|(_, e)| {
                assert_eq!(e.len(), 8);
                assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
                assert_eq!(e[2], e[3], "processor UID = APIC ID");
                e[3]
            })
            .collect();
        assert_eq!(lapic_ids, (0..n).collect::<Vec<_>>());

        let ioapics: Vec<&Vec<u8>> = entries
            .iter()
            .filter(|(ty, _)| *ty == 1)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(ioapics.len(), 1);
        assert_eq!(u32_at(ioapics[0], 4), 0xfec0_0000);
        assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");

        let iso: Vec<&Vec<u8>> = entries
            .iter()
            .filter(|(ty, _)| *ty == 2)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(iso.len(), 1);
        assert_eq!(iso[0].len(), 10);
        assert_eq!((iso[0][2], iso[0][3]), (0, 0), "ISA IRQ 0");
        assert_eq!(u32_at(iso[0], 4), 2, "-> GSI 2");
    }
}

#[test]
fn large_apic_ids_use_x2apic_entries() {
    let mut madt = MADT::new(
        OEM_ID,
        table_id(b"APIC"),
        1,
        LocalInterruptController::Address(0),
    );
    for id in [0xfe, 0xff, 300] {
        add_cpu(&mut madt, id);
    }
    let bytes = aml_bytes(&madt);
    assert_eq!(checksum(&bytes), 0);
    let entries = madt_entries(&bytes);
    assert_eq!(entries[0].0, 0);
    assert_eq!(entries[0].1[3], 0xfe);
    for ((ty, e), id) in entries[1..].iter().zip([0xff, 300]) {
        assert_eq!(*ty, 9);
        assert_eq!(e.len(), 16);
        assert_eq!(u32_at(e, 4), id, "x2APIC ID");
        assert_eq!(u32_at(e, 8), 1, "enabled");
        assert_eq!(u32_at(e, 12), id, "UID");
    }
}

#[test]
fn mcfg_covers_the_ecam() {
    let mem = guest_memory(256 * MIB);
    let tables = tables(&mem, create_acpi_tables(&mem, 1, MMIO64).expect("tables"));
    let mcfg = find(&tables, b"MCFG");
    assert_eq!(mcfg.len(), 44 + 16);
    assert_eq!(u64_at(&mcfg, 44), PCI_ECAM_START);
    assert_eq!(u16_at(&mcfg, 52), 0, "segment");
    assert_eq!((mcfg[54], mcfg[55]), (0, 0), "buses: the root bus only");
}

#[test]
fn tables_fit_even_for_the_largest_vm() {
    let mem = guest_memory(256 * MIB);
    create_acpi_tables(&mem, u8::MAX, MMIO64).expect("255 vCPUs fit");
    assert!(matches!(
        create_acpi_tables(&mem, 0, MMIO64),
        Err(AcpiError::NoVcpus)
    ));
}

#[test]
fn overflow_is_an_error() {
    let mem = guest_memory(256 * MIB);
    let mut w = TableWriter {
        mem: &mem,
        next: ACPI_END - 16,
    };
    let err = w
        .place(&[
            b'T', b'E', b'S', b'T', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .unwrap_err();
    assert!(matches!(err, AcpiError::Overflow { ref table, .. } if table == "TEST"));
}
