//! Tests of the q35 firmware tables, linked by a loader interpreter with OVMF's semantics.

#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;

use super::loader::{run::run, ACPI_RSDP_FILE, ACPI_TABLES_FILE, COMMAND_LEN};
use super::tests::disassemble;
use super::*;

fn platform() -> Q35Platform {
    Q35Platform {
        vcpus: 3,
        pm_base: 0x600,
        reset: (0xcf9, 0x06),
        s5_slp_typ: 0,
        pci: PciWindows {
            ecam_base: 0xb000_0000,
            ecam_size: 0x1000_0000,
            mmio32: vec![(0xc000_0000, 0x3c00_0000)],
            mmio64: Some((0x80_0000_0000, 0x8_0000_0000)),
        },
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The guest's view after the firmware ran the loader: table by signature → bytes.
struct Linked {
    tables_addr: u64,
    tables: Vec<u8>,
    rsdp: Vec<u8>,
}

impl Linked {
    fn new(p: &Q35Platform) -> Self {
        let blobs = firmware_tables(p).expect("tables");
        assert_eq!(blobs.loader.len() % COMMAND_LEN, 0);
        let files = BTreeMap::from([
            (ACPI_TABLES_FILE.to_string(), blobs.tables.clone()),
            (ACPI_RSDP_FILE.to_string(), blobs.rsdp.clone()),
        ]);
        let placed = run(&blobs.loader, &files, 0x7e00_0000);
        let (tables_addr, tables) = placed[ACPI_TABLES_FILE].clone();
        Self {
            tables_addr,
            tables,
            rsdp: placed[ACPI_RSDP_FILE].1.clone(),
        }
    }

    fn at(&self, addr: u64) -> &[u8] {
        let off = (addr - self.tables_addr) as usize;
        let len = u32_at(&self.tables, off + 4) as usize;
        &self.tables[off..off + len]
    }

    /// XSDT entries by signature.
    fn table(&self, sig: &[u8; 4]) -> Vec<u8> {
        let xsdt = self.at(u64_at(&self.rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        xsdt[36..]
            .chunks_exact(8)
            .map(|e| self.at(u64_at(e, 0)).to_vec())
            .find(|t| &t[..4] == sig)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(sig)))
    }
}

#[test]
fn loader_links_every_table_with_valid_checksums() {
    let l = Linked::new(&platform());
    assert_eq!(&l.rsdp[..8], b"RSD PTR ");
    assert_eq!(checksum(&l.rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(checksum(&l.rsdp), 0, "RSDP extended checksum");
    let xsdt = l.at(u64_at(&l.rsdp, 24)).to_vec();
    assert_eq!(checksum(&xsdt), 0, "XSDT checksum");
    for sig in [b"FACP", b"APIC", b"MCFG"] {
        assert_eq!(checksum(&l.table(sig)), 0, "{sig:?} checksum");
    }
    let fadt = l.table(b"FACP");
    let dsdt = l.at(u64_at(&fadt, 140));
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(checksum(dsdt), 0, "DSDT checksum");
    assert_eq!(u32_at(&fadt, 40), 0, "only X_DSDT is set");
    let facs = u64::from(u32_at(&fadt, 36));
    assert_eq!(facs % 64, 0, "FACS alignment");
    let off = (facs - l.tables_addr) as usize;
    assert_eq!(&l.tables[off..off + 4], b"FACS");
}

#[test]
fn fadt_describes_the_ich9_pm_block_at_pmbase() {
    let mut p = platform();
    p.pm_base = 0xb000;
    let fadt = Linked::new(&p).table(b"FACP");
    let flags = u32_at(&fadt, 112);
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    assert_eq!(flags & (1 << 4), 0, "fixed power button present");
    assert_ne!(flags & (1 << 10), 0, "reset register supported");
    assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI_INT");
    assert_eq!(u32_at(&fadt, 48), 0, "no SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(&fadt, 56), 0xb000, "PM1a_EVT_BLK");
    assert_eq!(u32_at(&fadt, 64), 0xb004, "PM1a_CNT_BLK");
    assert_eq!(u32_at(&fadt, 76), 0xb008, "PM_TMR_BLK");
    assert_eq!(u32_at(&fadt, 80), 0xb020, "GPE0_BLK");
    assert_eq!(&fadt[88..93], &[4, 2, 0, 4, 16], "block lengths");
    // Reset register: SystemIO 0xCF9, value 6.
    assert_eq!(fadt[116], 1);
    assert_eq!(u64_at(&fadt, 120), 0xcf9);
    assert_eq!(fadt[128], 6);
    assert_eq!(fadt[108], CMOS_CENTURY_INDEX);
}

#[test]
fn madt_has_every_cpu_and_the_sci_override() {
    let madt = Linked::new(&platform()).table(b"APIC");
    let mut cpus = 0;
    let mut sci = None;
    let mut at = 44;
    while at < madt.len() {
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        if kind == 0 {
            cpus += 1;
        }
        if kind == 2 && madt[at + 3] == 9 {
            sci = Some((
                u32_at(&madt, at + 4),
                u16::from_le_bytes([madt[at + 8], madt[at + 9]]),
            ));
        }
        at += len;
    }
    assert_eq!(cpus, 3);
    assert_eq!(sci, Some((9, 0x000d)), "IRQ 9 → GSI 9, level, active high");
}

#[test]
fn mcfg_and_dsdt_follow_the_firmware_windows() {
    let l = Linked::new(&platform());
    let mcfg = l.table(b"MCFG");
    assert_eq!(u64_at(&mcfg, 44), 0xb000_0000, "ECAM where PCIEXBAR put it");
    let fadt = l.table(b"FACP");
    let asl = disassemble(l.at(u64_at(&fadt, 140)));
    let has = |s: &str| assert!(asl.contains(s), "{s}\nnot in\n{asl}");
    has("Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })");
    has("NonCacheable, ReadWrite, 0x00000000, 0xC0000000, 0xFBFFFFFF,");
    has("Name (_CBA, 0xB0000000)");
    has("Cacheable, ReadWrite, 0x0000000000000000, 0x0000008000000000, 0x00000087FFFFFFFF,");
    has("Memory32Fixed (ReadOnly, 0xB0000000, 0x10000000,)");
    assert!(!asl.contains("ACPI0013"), "no GED on q35: {asl}");
    assert!(!asl.contains("PNP0C0C"), "fixed power button: {asl}");
}

#[test]
fn blob_sizes_stay_put_when_windows_change() {
    let a = firmware_tables(&platform()).expect("tables");
    let mut p = platform();
    p.pci.mmio32.push((0xe000_0000, 0x1000_0000));
    p.pci.mmio64 = None;
    let b = firmware_tables(&p).expect("tables");
    assert_eq!(a.loader.len(), b.loader.len(), "same commands");
    assert_eq!(a.rsdp.len(), b.rsdp.len());
    let grown = b.tables.len().abs_diff(a.tables.len());
    assert!(grown < firmware::TABLES_SLACK, "{grown} bytes");
}

#[test]
fn no_vcpus_is_an_error() {
    let mut p = platform();
    p.vcpus = 0;
    assert!(matches!(firmware_tables(&p), Err(AcpiError::NoVcpus)));
}
