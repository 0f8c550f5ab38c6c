use std::sync::{Arc, Mutex};

use super::lpc::{pm_base, ACPI_CNTL, PMBASE};
use super::mch::pciexbar_window;
use super::pm::{PM1_CNT_OFFSET, PM_TMR_OFFSET};
use super::*;
use crate::bus::BusDevice;
use crate::pci::PciDevice;
use crate::power::{PowerAction, PowerHandler};

#[derive(Default, Clone)]
struct Record(Arc<Mutex<Vec<String>>>);

impl Record {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

impl EcamHost for Record {
    fn ecam_moved(&mut self, window: Option<(u64, u64)>) {
        self.push(format!("ecam {window:x?}"));
    }
    fn smm_requested(&mut self) {
        self.push("smm".into());
    }
}

impl PmHost for Record {
    fn pm_moved(&mut self, base: Option<u16>) {
        self.push(format!("pm {base:x?}"));
    }
}

impl IrqLevel for Record {
    fn set_level(&self, asserted: bool) {
        self.push(format!("sci {asserted}"));
    }
}

impl PowerHandler for Record {
    fn power_action(&self, action: PowerAction) {
        self.push(format!("{action:?}"));
    }
}

fn read32(dev: &mut dyn PciDevice, offset: u16) -> u32 {
    let mut b = [0; 4];
    dev.config_read(offset, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn mch_identity_is_what_ovmf_checks() {
    let mut mch = Mch::new(0x8000_0000, Box::new(Record::default()));
    assert_eq!(read32(&mut mch, 0), 0x29c0_8086);
    assert_eq!(read32(&mut mch, 8) >> 8, 0x06_00_00);
    // TOLUD: 2 GiB in MiB units, bits 15:4.
    assert_eq!(read32(&mut mch, 0xb0) & 0xffff, 0x800);
}

#[test]
fn pciexbar_follows_ovmf_programming_sequence() {
    let rec = Record::default();
    let mut mch = Mch::new(0x8000_0000, Box::new(rec.clone()));
    // edk2's PciExBarInitialization: low = 0, high, then low = base | EN.
    mch.config_write(0x60, &0u32.to_le_bytes());
    mch.config_write(0x64, &0u32.to_le_bytes());
    assert!(rec.take().is_empty(), "still disabled: nothing moves");
    mch.config_write(0x60, &0xb000_0001u32.to_le_bytes());
    assert_eq!(rec.take(), vec!["ecam Some((b0000000, 10000000))"]);
    assert_eq!(mch.ecam(), Some((0xb000_0000, 0x1000_0000)));
    assert_eq!(read32(&mut mch, 0x60), 0xb000_0001);
    // A later edk2 moves it; disabling unmaps it.
    mch.config_write(0x60, &0xe000_0001u32.to_le_bytes());
    mch.config_write(0x60, &0u32.to_le_bytes());
    assert_eq!(
        rec.take(),
        vec!["ecam Some((e0000000, 10000000))", "ecam None"]
    );
}

#[test]
fn pciexbar_lengths_and_high_bits() {
    assert_eq!(pciexbar_window(0xb000_0000, 0), None);
    assert_eq!(
        pciexbar_window(0xb800_0003, 0x1),
        Some((0x1_b800_0000, 128 << 20))
    );
    assert_eq!(
        pciexbar_window(0xbc00_0005, 0),
        Some((0xbc00_0000, 64 << 20))
    );
    // 256 MiB ignores base bits below 28; the reserved length decodes nothing.
    assert_eq!(
        pciexbar_window(0xbc00_0001, 0),
        Some((0xb000_0000, 256 << 20))
    );
    assert_eq!(pciexbar_window(0xb000_0007, 0), None);
}

#[test]
fn smm_probe_is_reported_once_and_reads_zero() {
    let rec = Record::default();
    let mut mch = Mch::new(0x8000_0000, Box::new(rec.clone()));
    // GGC, in the same dword, is plain storage and no SMM request.
    mch.config_write(0x52, &0x1234u16.to_le_bytes());
    assert!(rec.take().is_empty());
    // OVMF's query (PlatformPei's Q35TsegMbytesInitialization: a 16-bit write of 0xFFFF).
    mch.config_write(0x50, &0xffffu16.to_le_bytes());
    assert_eq!(
        rec.take(),
        vec!["smm"],
        "the extended-TSEG query is an SMM request"
    );
    let mut b = [0; 2];
    mch.config_read(0x50, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0);
    mch.config_read(0x52, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0x1234, "GGC kept");
    // Enabling SMRAM afterwards is not reported again.
    mch.config_write(0x9e, &[1]);
    assert!(rec.take().is_empty());
}

#[test]
fn lpc_moves_pm_block_only_when_enabled() {
    let rec = Record::default();
    let mut lpc = Lpc::new(Box::new(rec.clone()));
    assert_eq!(read32(&mut lpc, 0), 0x2918_8086);
    lpc.config_write(PMBASE, &0x0600u32.to_le_bytes());
    assert!(rec.take().is_empty());
    assert_eq!(read32(&mut lpc, PMBASE), 0x0601);
    lpc.config_write(ACPI_CNTL, &[0x80]);
    assert_eq!(rec.take(), vec!["pm Some(600)"]);
    lpc.config_write(PMBASE, &0xb07fu32.to_le_bytes());
    assert_eq!(rec.take(), vec!["pm Some(b000)"]);
    lpc.config_write(ACPI_CNTL, &[0]);
    assert_eq!(rec.take(), vec!["pm None"]);
    assert_eq!(pm_base(0x601, 0x80), Some(0x600));
}

fn pm(rec: &Record) -> PmRegisters {
    PmRegisters::new(Box::new(rec.clone()), Box::new(rec.clone()))
}

fn pm_read16(pm: &mut PmRegisters, offset: u64) -> u16 {
    let mut b = [0; 2];
    pm.read(0x600, offset, &mut b);
    u16::from_le_bytes(b)
}

#[test]
fn power_button_raises_sci_until_cleared() {
    let rec = Record::default();
    let mut pm = pm(&rec);
    assert!(!pm.press_power_button(), "not enabled yet");
    assert!(rec.take().is_empty());
    // The OS enables PWRBTN_EN: the pending press raises the SCI.
    pm.write(0x600, 2, &0x0100u16.to_le_bytes());
    assert_eq!(rec.take(), vec!["sci true"]);
    assert_eq!(pm_read16(&mut pm, 0) & 0x100, 0x100);
    // Write-1-to-clear, byte-wide as some OSes do.
    pm.write(0x600, 1, &[0x01]);
    assert_eq!(rec.take(), vec!["sci false"]);
    assert_eq!(pm_read16(&mut pm, 0), 0);
    assert!(pm.press_power_button());
    assert_eq!(rec.take(), vec!["sci true"]);
}

#[test]
fn soft_off_is_slp_typ_zero_with_slp_en() {
    let rec = Record::default();
    let mut pm = pm(&rec);
    assert_eq!(pm_read16(&mut pm, 4) & 1, 1, "SCI_EN reads 1");
    // S3-style type: ignored; S5 (0) with SLP_EN: off. OVMF: bitfield write, then OR SLP_EN.
    pm.write(
        0x600,
        u64::from(PM1_CNT_OFFSET),
        &(0x2000u16 | (1 << 10)).to_le_bytes(),
    );
    assert!(rec.take().is_empty());
    pm.write(0x600, u64::from(PM1_CNT_OFFSET), &0u16.to_le_bytes());
    pm.write(0x600, u64::from(PM1_CNT_OFFSET), &0x2000u16.to_le_bytes());
    assert_eq!(rec.take(), vec!["PowerOff"]);
    assert_eq!(pm_read16(&mut pm, 4) & 0x2000, 0, "SLP_EN is write-only");
}

#[test]
fn pm_timer_runs_at_3_58_mhz_in_24_bits() {
    let rec = Record::default();
    let mut pm = pm(&rec);
    let read = |pm: &mut PmRegisters| {
        let mut b = [0; 4];
        pm.read(0x600, u64::from(PM_TMR_OFFSET), &mut b);
        u32::from_le_bytes(b)
    };
    let t0 = read(&mut pm);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t1 = read(&mut pm);
    let ticks = t1.wrapping_sub(t0) & 0xff_ffff;
    // 20 ms is 71 591 ticks; allow a slow CI machine's scheduling.
    assert!((71_000..3_000_000).contains(&ticks), "{ticks} ticks");
    assert!(t1 <= 0xff_ffff);
    // Read-only.
    pm.write(0x600, u64::from(PM_TMR_OFFSET), &[0; 4]);
}

#[test]
fn gpe_and_out_of_range_accesses_are_harmless() {
    let rec = Record::default();
    let mut pm = pm(&rec);
    pm.write(0x600, 0x28, &[0xff]);
    pm.write(0x600, 0x20, &[0xff]);
    let mut b = [0xaa; 4];
    pm.read(0x600, 0x7e, &mut b);
    pm.write(0x600, u64::MAX, &[1, 2, 3, 4]);
    pm.read(0x600, u64::MAX - 1, &mut b);
    assert!(rec.take().is_empty());
}

#[test]
fn reset_control_resets_on_rst_cpu() {
    let rec = Record::default();
    let mut rc = ResetControl::new(Box::new(rec.clone()));
    rc.write(0x02);
    assert!(rec.take().is_empty());
    assert_eq!(rc.read(), 0x02);
    rc.write(reset::RESET_VALUE);
    assert_eq!(rec.take(), vec!["Reset"]);
}
