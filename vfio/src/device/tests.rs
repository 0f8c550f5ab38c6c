//! [`VfioPciDevice`] over a fake function: what the guest sees in config space and BARs, and
//! what reaches the hardware side.

use std::sync::Mutex;

use ghost_devices::pci::msix::testing::RecordingVectors;
use ghost_devices::pci::msix::MsiMessage;

use super::*;
use crate::testing::{fake, HwLog, Slots};

struct Rig {
    dev: VfioPciDevice,
    hw: Arc<Mutex<HwLog>>,
    slots: Arc<Slots>,
    vectors: Vec<Arc<RecordingVectors>>,
}

fn rig(msix: bool, rom: RomSource, rom_region: u64) -> Rig {
    let (hw, f) = fake(msix, rom_region);
    let slots = Arc::new(Slots::default());
    let mut vectors = Vec::new();
    let mut make = |n: u16| -> io::Result<Arc<dyn MsiVectors>> {
        let v = RecordingVectors::new(n);
        vectors.push(v.clone());
        Ok(v)
    };
    let dev = VfioPciDevice::new("test".into(), Box::new(f), rom, &mut make, slots.clone())
        .expect("device");
    Rig {
        dev,
        hw,
        slots,
        vectors,
    }
}

fn cfg32(d: &mut VfioPciDevice, off: u16) -> u32 {
    let mut b = [0u8; 4];
    d.config_read(off, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn identity_comes_from_hardware_topology_from_the_vmm() {
    let mut r = rig(false, RomSource::Device, 0);
    assert_eq!(cfg32(&mut r.dev, 0), 0x11e8_1234);
    assert_eq!(cfg32(&mut r.dev, 8), 0x00ff_0010);
    // The bus sets the multi-function bit from the guest's slots, not the host's.
    assert_eq!(cfg32(&mut r.dev, 0x0c) & MULTIFUNCTION, 0);
    // No INTx pin; the line is the guest's storage and never reaches the hardware.
    assert_eq!(cfg32(&mut r.dev, 0x3c) & 0xff00, 0);
    r.dev.config_write(0x3c, &[11]);
    assert_eq!(cfg32(&mut r.dev, 0x3c) & 0xff, 11);
    assert!(r
        .hw
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .config_writes
        .is_empty());
    // Other registers pass through both ways.
    r.dev.config_write(0x0c, &[0x10]);
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).config_writes,
        vec![(0x0c, vec![0x10])]
    );
}

#[test]
fn bars_size_and_move_in_the_shadow_only() {
    let mut r = rig(false, RomSource::Device, 0);
    assert_eq!(
        r.dev.bars(),
        vec![(
            0,
            BarInfo {
                size: 0x10_0000,
                kind: BarKind::Memory32,
                prefetchable: false
            }
        )]
    );
    r.dev.config_write(0x10, &[0xff; 4]);
    assert_eq!(cfg32(&mut r.dev, 0x10), 0xfff0_0000);
    r.dev.config_write(0x10, &0xc000_0000u32.to_le_bytes());
    assert_eq!(cfg32(&mut r.dev, 0x10), 0xc000_0000);
    assert!(r
        .hw
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .config_writes
        .is_empty());
    // Decoding on: the BAR is active, and the command write reaches the hardware too.
    r.dev.config_write(0x04, &[0x06, 0]);
    assert_eq!(
        r.dev.active_memory_bars(),
        vec![(0, 0xc000_0000, 0x10_0000)]
    );
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).config_writes,
        vec![(4, vec![6, 0])]
    );
}

#[test]
fn mapped_bars_become_slots_that_follow_the_guest() {
    let mut r = rig(false, RomSource::Device, 0);
    assert_eq!(r.dev.direct_bytes(0), 0x10_0000);
    r.dev.bar_moved(0, Some(0xc000_0000));
    assert_eq!(
        r.slots
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        vec![(1, 0xc000_0000, 0x10_0000)]
    );
    r.dev.bar_moved(0, None);
    assert!(r
        .slots
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty());
    r.dev.bar_moved(0, Some(0xd000_0000));
    assert_eq!(
        r.slots
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        vec![(2, 0xd000_0000, 0x10_0000)]
    );
    drop(r.dev);
    assert!(
        r.slots
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty(),
        "slots go with the device"
    );
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).resets,
        1,
        "reset on the way out"
    );
}

#[test]
fn trapped_bar_accesses_reach_the_hardware_within_bounds() {
    let mut r = rig(false, RomSource::Device, 0);
    r.dev.bar_write(0, 0x8, &10u32.to_le_bytes());
    assert_eq!(
        &r.hw.lock().unwrap_or_else(|e| e.into_inner()).bar0[8..12],
        &10u32.to_le_bytes()
    );
    let mut b = [0u8; 4];
    r.dev.bar_read(0, 0x8, &mut b);
    assert_eq!(u32::from_le_bytes(b), 10);
    // Past the region, and on BARs that do not exist: all ones, nothing written.
    r.dev.bar_read(0, 0x10_0000 - 2, &mut b);
    assert_eq!(b, [0xff; 4]);
    r.dev.bar_read(3, 0, &mut b);
    assert_eq!(b, [0xff; 4]);
    r.dev.bar_write(0, u64::MAX - 1, &[1, 2, 3, 4]);
    r.dev.bar_write(5, 0, &[1]);
}

#[test]
fn msi_is_emulated_and_handed_to_vfio() {
    let mut r = rig(false, RomSource::Device, 0);
    assert_eq!(cfg32(&mut r.dev, 0x40) & 0xff, 0x05);
    r.dev.config_write(0x44, &0xfee0_0000u32.to_le_bytes());
    r.dev.config_write(0x48, &0u32.to_le_bytes());
    r.dev.config_write(0x4c, &0x0041u16.to_le_bytes());
    r.dev.config_write(0x42, &1u16.to_le_bytes());
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.last(),
        Some(&(MSI_IRQ, 1))
    );
    assert_eq!(
        r.vectors[0]
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())[0],
        Some(MsiMessage {
            address: 0xfee0_0000,
            data: 0x41
        })
    );
    assert_eq!(
        cfg32(&mut r.dev, 0x40) >> 16 & 1,
        1,
        "the guest reads enable back"
    );
    assert!(
        r.hw.lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_writes
            .is_empty(),
        "the hardware's MSI capability is never written"
    );
    r.dev.config_write(0x42, &0u16.to_le_bytes());
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.last(),
        Some(&(MSI_IRQ, 0))
    );
}

#[test]
fn intx_is_on_exactly_while_msi_is_off() {
    let mut r = rig(false, RomSource::Device, 0);
    assert_eq!(r.dev.interrupt_pin(), 1);
    let fd = || EventFd::new(0).unwrap();
    r.dev.connect_intx(fd(), fd()).unwrap();
    // The pin shows once wired; trigger and unmask eventfds went to VFIO.
    assert_eq!(cfg32(&mut r.dev, 0x3c) >> 8 & 0xff, 1);
    let irqs = |r: &Rig| r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.clone();
    assert_eq!(irqs(&r), vec![(INTX_IRQ, 1), (u32::MAX, 1)]);
    // MSI on: INTx off first (VFIO runs one kind at a time).
    r.dev.config_write(0x42, &1u16.to_le_bytes());
    assert_eq!(irqs(&r)[2..], [(INTX_IRQ, 0), (MSI_IRQ, 0), (MSI_IRQ, 1)]);
    // MSI off: INTx back.
    r.dev.config_write(0x42, &0u16.to_le_bytes());
    assert_eq!(irqs(&r)[5..], [(MSI_IRQ, 0), (INTX_IRQ, 1), (u32::MAX, 1)]);
    let hw = r.hw.clone();
    drop(r);
    let last = hw
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .irqs
        .last()
        .copied();
    assert_eq!(last, Some((INTX_IRQ, 0)), "off on the way out");
}

#[test]
fn msix_table_is_trapped_and_enable_goes_to_vfio() {
    let mut r = rig(true, RomSource::Device, 0);
    // MSI-X pages are cut out of the direct mapping.
    assert_eq!(r.dev.direct_bytes(0), 0x2000);
    let msix = r.vectors.last().unwrap().clone();
    // Program vector 2 through the trapped table.
    r.dev
        .bar_write(0, 0x2000 + 32, &0xfee0_0000u32.to_le_bytes());
    r.dev.bar_write(0, 0x2000 + 40, &0x51u32.to_le_bytes());
    r.dev.bar_write(0, 0x2000 + 44, &0u32.to_le_bytes());
    let mut b = [0u8; 4];
    r.dev.bar_read(0, 0x2000 + 40, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x51);
    // The table never reaches the hardware.
    assert_eq!(
        &r.hw.lock().unwrap_or_else(|e| e.into_inner()).bar0[0x2000 + 40..0x2000 + 44],
        &[0; 4]
    );
    // Enable with a one-byte write to the top of the control word.
    r.dev.config_write(0x53, &[0x80]);
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.last(),
        Some(&(MSIX_IRQ, 4))
    );
    assert_eq!(cfg32(&mut r.dev, 0x50) >> 16, 0x8003);
    assert_eq!(
        msix.routes.lock().unwrap_or_else(|e| e.into_inner())[2].map(|m| m.data),
        Some(0x51)
    );
    // Function mask: vectors off, VFIO left alone.
    r.dev.config_write(0x52, &0xc000u16.to_le_bytes());
    assert_eq!(
        msix.routes.lock().unwrap_or_else(|e| e.into_inner())[2],
        None
    );
    assert_eq!(r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.len(), 1);
    r.dev.config_write(0x52, &0u16.to_le_bytes());
    assert_eq!(
        r.hw.lock().unwrap_or_else(|e| e.into_inner()).irqs.last(),
        Some(&(MSIX_IRQ, 0))
    );
    // The PBA reads as the emulation's; writes to it are dropped.
    r.dev.bar_write(0, 0x3000, &[0xff; 8]);
    let mut q = [0u8; 8];
    r.dev.bar_read(0, 0x3000, &mut q);
    assert_eq!(q, [0; 8]);
}

#[test]
fn rom_from_a_file_or_hidden() {
    let mut r = rig(false, RomSource::Bytes(vec![0x55, 0xaa, 7]), 0x1_0000);
    assert_eq!(r.dev.rom_size(), Some(0x800));
    r.dev.config_write(0x30, &[0xff; 4]);
    assert_eq!(cfg32(&mut r.dev, 0x30), 0xffff_f801);
    let mut b = [0u8; 4];
    r.dev.bar_read(ROM_BAR, 0, &mut b);
    assert_eq!(b, [0x55, 0xaa, 7, 0xff]);
    r.dev.bar_read(ROM_BAR, u64::MAX, &mut b);
    assert_eq!(b, [0xff; 4]);
    let hidden = rig(false, RomSource::Hidden, 0x1_0000);
    assert_eq!(hidden.dev.rom_size(), None);
    // The device's own ROM: read once, whole, when the device is opened; the guest's reads
    // are served from that copy.
    let mut device = rig(false, RomSource::Device, 0x1_0000);
    assert_eq!(device.dev.rom_size(), Some(0x1_0000));
    let mut b = [0u8; 4];
    for offset in [0u64, 0x100, 0xfffc] {
        device.dev.bar_read(ROM_BAR, offset, &mut b);
        let want: Vec<u8> = (0..4)
            .map(|i| ((offset as usize + i) % 251) as u8)
            .collect();
        assert_eq!(b.to_vec(), want, "ROM byte at {offset:#x}");
    }
    device.dev.bar_read(ROM_BAR, 0x1_0000, &mut b);
    assert_eq!(b, [0xff; 4], "beyond the ROM");
    assert_eq!(device.hw.lock().unwrap().rom_reads, vec![(0, 0x1_0000)]);
    // No ROM on the device: no ROM BAR.
    let none = rig(false, RomSource::Device, 0);
    assert_eq!(none.dev.rom_size(), None);
}

#[test]
fn guest_garbage_never_panics() {
    for msix in [false, true] {
        let mut r = rig(msix, RomSource::Bytes(vec![1; 100]), 0);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = [1usize, 2, 4, 8, 3][(x % 5) as usize];
            let bytes = x.to_le_bytes();
            let off = ((x >> 8) % 0x1000) as u16;
            let bar = ((x >> 24) % 8) as u8;
            let bar_off = (x >> 32) % 0x11_0000;
            match (x >> 60) % 5 {
                0 => r
                    .dev
                    .config_write(off & !(len as u16 - 1).min(3), &bytes[..len.min(4)]),
                1 => r.dev.config_read(off & !3, &mut [0u8; 4]),
                2 => r.dev.bar_write(bar, bar_off, &bytes[..len]),
                3 => r.dev.bar_read(bar, bar_off, &mut vec![0u8; len]),
                _ => r.dev.bar_moved(bar, Some(bar_off << 12)),
            }
        }
    }
}
