//! A passed-through PCI function's emulation (`ghost_vfio::VfioPciDevice`: shadow BARs and
//! ROM BAR, emulated MSI and MSI-X, INTx switching, direct and trapped BAR accesses, memory
//! slots following BAR moves) against guest-chosen accesses, over a fake host function. No
//! sequence may panic, hang or leave a memory slot behind once the device is gone.
//!
//! Input: one mode byte (bit 0: an nvme-like function with MSI-X in BAR0, else edu-like with
//! MSI only; bit 1: a ROM file; bit 2: INTx wired), then 12-byte operations
//! `[kind, len, offset (u16), value (u64)]`. `kind % 5`: 0/1 config read/write (1, 2 or 4
//! bytes, aligned, as the bus delivers them), 2/3 BAR read/write of 0..=8 bytes on BAR
//! `value % 8` (6 is the ROM) at any offset, 4 the bus moving or unmapping a BAR.

#![no_main]

use std::sync::Arc;

use ghost_devices::pci::msix::testing::RecordingVectors;
use ghost_devices::pci::msix::MsiVectors;
use ghost_devices::pci::PciDevice;
use ghost_vfio::testing::{fake, Slots};
use ghost_vfio::{RomSource, VfioPciDevice};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, ops)) = data.split_first() else {
        return;
    };
    let (_hw, function) = fake(mode & 1 != 0, 0x1_0000);
    let rom = if mode & 2 != 0 {
        RomSource::Bytes(vec![0x55; 3000])
    } else {
        RomSource::Device
    };
    let slots = Arc::new(Slots::default());
    let mut vectors =
        |n: u16| -> std::io::Result<Arc<dyn MsiVectors>> { Ok(RecordingVectors::new(n)) };
    let mut dev = VfioPciDevice::new(
        "fuzz".into(),
        Box::new(function),
        rom,
        &mut vectors,
        slots.clone(),
    )
    .expect("the fake function opens");
    if mode & 4 != 0 {
        let fd = || EventFd::new(0).expect("eventfd");
        dev.connect_intx(fd(), fd()).expect("INTx on the fake");
    }
    for op in ops.chunks_exact(12) {
        let value = u64::from_le_bytes([op[4], op[5], op[6], op[7], op[8], op[9], op[10], op[11]]);
        let offset = u16::from_le_bytes([op[2], op[3]]);
        let bar = (value % 8) as u8;
        let bar_offset = u64::from(offset) << (op[1] >> 4);
        match op[0] % 5 {
            0 | 1 => {
                let len = [1usize, 2, 4][usize::from(op[1] % 3)];
                let at = (offset % 4096) & !(len as u16 - 1);
                if op[0] % 5 == 0 {
                    dev.config_read(at, &mut vec![0u8; len]);
                } else {
                    dev.config_write(at, &value.to_le_bytes()[..len]);
                }
            }
            2 => dev.bar_read(bar, bar_offset, &mut vec![0u8; usize::from(op[1] % 9)]),
            3 => dev.bar_write(
                bar,
                bar_offset,
                &value.to_le_bytes()[..usize::from(op[1] % 9)],
            ),
            _ => {
                let base = (value >> 3) & !0xfff;
                dev.bar_moved(bar, (op[1] & 1 == 0).then_some(base));
            }
        }
    }
    drop(dev);
    assert!(
        slots
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty(),
        "memory slots left behind"
    );
});
