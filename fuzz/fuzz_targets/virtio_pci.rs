//! The virtio-pci transport and the PCI root against guest-chosen config-space and BAR
//! accesses: any sequence of reads and writes, of any size at any offset, through 0xCF8/0xCFC,
//! ECAM and the MMIO bus (where the guest may have moved the BAR), must neither panic nor
//! hang, and must leave the bus consistent.
//!
//! Input: a sequence of 12-byte operations `[kind, len, offset (u16), value (u64)]`.
//! `kind % 6`: 0/1 config read/write through ECAM (function 00:01.0, or a random one when
//! bit 7 is set), 2/3 BAR read/write at the BAR's current base + offset, 4 a write to 0xCF8
//! followed by a read of 0xCFC, 5 a 4-byte write to 0xCFC. `len` is taken as is (1..=8 and
//! odd sizes included).

#![no_main]

use std::sync::{Arc, Mutex};

use ghost_devices::pci::msix::testing::RecordingVectors;
use ghost_devices::pci::{DevFn, PciConfigIo, PciConfigMmio, PciRoot};
use ghost_devices::virtio::pci::{IoEventRegistrar, VirtioPciDevice};
use ghost_devices::virtio::{ActivateContext, ActivateError, VirtioDevice};
use ghost_devices::{Bus, BusDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// A two-queue device that accepts activation without starting threads.
struct Quiet;

impl VirtioDevice for Quiet {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 8]
    }
    fn features(&self) -> u64 {
        (1 << 32) | (1 << 29) | 0x3
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        ghost_devices::virtio::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.is_empty() {
            return Err(ActivateError::Queues { got: 0, need: 1 });
        }
        Ok(())
    }
    fn reset(&mut self) {}
}

struct NoIoEvents;

impl IoEventRegistrar for NoIoEvents {
    fn register(&self, _fd: &vmm_sys_util::eventfd::EventFd, _address: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn unregister(
        &self,
        _fd: &vmm_sys_util::eventfd::EventFd,
        _address: u64,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

const BAR: u64 = 0xc000_0000;

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]) else {
        return;
    };
    let mmio = Arc::new(Bus::new());
    let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone())));
    let Ok(dev) = VirtioPciDevice::new(
        "fuzz".into(),
        Box::new(Quiet),
        mem,
        RecordingVectors::new(VirtioPciDevice::vectors_needed(2)),
        Arc::new(NoIoEvents),
        BAR,
    ) else {
        return;
    };
    let Some(devfn) = DevFn::new(1, 0) else {
        return;
    };
    if root
        .lock()
        .unwrap()
        .add(devfn, Arc::new(Mutex::new(dev)))
        .is_err()
    {
        return;
    }
    let mut ecam = PciConfigMmio::new(root.clone());
    let mut cf8 = PciConfigIo::new(root.clone());
    let mut buf = [0u8; 16];
    for op in data.chunks_exact(12) {
        let kind = op[0];
        let len = usize::from(op[1] % 17);
        let offset = u64::from(u16::from_le_bytes([op[2], op[3]]));
        let value: [u8; 8] = op[4..12].try_into().unwrap_or_default();
        buf[..8].copy_from_slice(&value);
        buf[8..].copy_from_slice(&value);
        let func = if kind & 0x80 != 0 {
            u64::from(op[2] >> 5)
        } else {
            1 << 3
        };
        let cfg = (func << 12) | (offset & 0xfff);
        match kind % 6 {
            0 => ecam.read(0, cfg, &mut buf[..len]),
            1 => ecam.write(0, cfg, &buf[..len]),
            2 => {
                mmio.read(BAR + offset, &mut buf[..len]);
            }
            3 => {
                mmio.write(BAR + offset, &buf[..len]);
            }
            4 => {
                cf8.write(0, 0, &buf[..4]);
                cf8.read(0, 4 + (offset & 3), &mut buf[..len.min(4)]);
            }
            _ => cf8.write(0, 4, &buf[..4]),
        }
    }
});
