//! Fakes of a host PCI function and of KVM memory slots, for tests and fuzzing of
//! [`crate::VfioPciDevice`] without hardware.

use std::io;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::region::{
    DeviceAccess, GuestMappings, Mapping, RegionInfo, CONFIG_REGION, MSIX_IRQ, MSI_IRQ, PAGE_SIZE,
    ROM_REGION,
};

/// Status register bit: capability list present (in the command/status dword).
const STATUS_CAPABILITIES: u32 = 1 << 20;

/// What the fake hardware saw: its config space and BAR0, config writes, interrupt
/// changes `(kind, eventfds)` (`u32::MAX` for the INTx unmask fd), resets.
#[derive(Debug, Default)]
pub struct HwLog {
    pub config: Vec<u8>,
    pub config_writes: Vec<(u64, Vec<u8>)>,
    pub bar0: Vec<u8>,
    pub irqs: Vec<(u32, usize)>,
    pub resets: u32,
    /// Reads of the ROM region: `(offset, length)`.
    pub rom_reads: Vec<(u64, usize)>,
}

/// A host function: config space and BAR0 in memory, interrupts and resets recorded.
#[derive(Debug)]
pub struct Fake {
    log: Arc<Mutex<HwLog>>,
    bar0_size: u64,
    bar0_mmap: bool,
    msi: u32,
    msix: u32,
    rom: u64,
}

impl DeviceAccess for Fake {
    fn region(&self, index: u32) -> RegionInfo {
        match index {
            0 => RegionInfo {
                size: self.bar0_size,
                readable: true,
                writable: true,
                mmap_areas: if self.bar0_mmap {
                    vec![(0, self.bar0_size)]
                } else {
                    Vec::new()
                },
            },
            ROM_REGION => RegionInfo {
                size: self.rom,
                readable: true,
                ..RegionInfo::default()
            },
            CONFIG_REGION => RegionInfo {
                size: 4096,
                readable: true,
                writable: true,
                mmap_areas: Vec::new(),
            },
            _ => RegionInfo::default(),
        }
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let src = match index {
            CONFIG_REGION => &log.config,
            0 => &log.bar0,
            ROM_REGION => {
                // Byte i of the ROM reads as i (mod 251).
                for (at, b) in (offset..).zip(data.iter_mut()) {
                    *b = u8::try_from(at % 251).unwrap_or_default();
                }
                log.rom_reads.push((offset, data.len()));
                return Ok(());
            }
            _ => return Err(io::Error::other("no such region")),
        };
        let bytes = src
            .get(span(offset, data.len())?)
            .ok_or_else(|| io::Error::other("out of range"))?;
        data.copy_from_slice(bytes);
        Ok(())
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let range = span(offset, data.len())?;
        let out_of_range = || io::Error::other("out of range");
        match index {
            CONFIG_REGION => {
                log.config_writes.push((offset, data.to_vec()));
                log.config
                    .get_mut(range)
                    .ok_or_else(out_of_range)?
                    .copy_from_slice(data);
            }
            0 => log
                .bar0
                .get_mut(range)
                .ok_or_else(out_of_range)?
                .copy_from_slice(data),
            _ => return Err(io::Error::other("no such region")),
        }
        Ok(())
    }

    fn irq_count(&self, index: u32) -> u32 {
        match index {
            MSI_IRQ => self.msi,
            MSIX_IRQ => self.msix,
            _ => 1,
        }
    }

    fn set_irqs(&self, index: u32, fds: &[&EventFd]) -> io::Result<()> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .irqs
            .push((index, fds.len()));
        Ok(())
    }

    fn set_intx_unmask(&self, _fd: &EventFd) -> io::Result<()> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .irqs
            .push((u32::MAX, 1));
        Ok(())
    }

    fn map(&self, _index: u32, _offset: u64, size: u64) -> io::Result<Mapping> {
        Mapping::anonymous(size)
    }

    fn reset(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).resets += 1;
    }
}

/// `offset..offset+len` as indices, if they fit.
fn span(offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| Some(start..start.checked_add(len)?))
        .ok_or_else(|| io::Error::other("out of range"))
}

/// Memory slots, recorded.
#[derive(Debug, Default)]
pub struct Slots {
    /// `(slot, gpa, size)` of the live slots.
    pub live: Mutex<Vec<(u32, u64, u64)>>,
    next: Mutex<u32>,
}

impl GuestMappings for Slots {
    unsafe fn map(&self, gpa: u64, size: u64, host: *mut u8) -> io::Result<u32> {
        assert_eq!(host as u64 % PAGE_SIZE, 0);
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*next, gpa, size));
        Ok(*next)
    }

    fn unmap(&self, slot: u32) -> io::Result<()> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.0 != slot);
        Ok(())
    }
}

fn put(cfg: &mut [u8], at: usize, v: u32) {
    cfg[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// edu-like: 1234:11e8, BAR0 32-bit 1 MiB, 64-bit MSI at 0x40, multi-function bit set in
/// hardware. With `msix`: nvme-like instead, a 64-bit 16 KiB BAR0 with the MSI-X table at
/// 0x2000 (4 vectors) and the PBA at 0x3000, capability at 0x50 after MSI.
pub fn fake(msix: bool, rom: u64) -> (Arc<Mutex<HwLog>>, Fake) {
    let mut config = vec![0u8; 4096];
    put(&mut config, 0, 0x11e8_1234);
    put(&mut config, 4, STATUS_CAPABILITIES);
    put(&mut config, 8, 0x00ff_0010);
    put(&mut config, 0x0c, 0x0080_0000);
    put(&mut config, 0x34, 0x40);
    put(&mut config, 0x3c, 0x0000_0100);
    // MSI: 64-bit, 1 vector.
    put(
        &mut config,
        0x40,
        (0x0080 << 16) | if msix { 0x5005 } else { 0x0005 },
    );
    let bar0_size = if msix {
        put(&mut config, 0x10, 0x4);
        put(&mut config, 0x50, (3 << 16) | 0x0011);
        put(&mut config, 0x54, 0x2000);
        put(&mut config, 0x58, 0x3000);
        0x4000
    } else {
        put(&mut config, 0x10, 0x0);
        0x10_0000
    };
    let log = Arc::new(Mutex::new(HwLog {
        config,
        bar0: vec![0; usize::try_from(bar0_size).unwrap_or(0)],
        ..HwLog::default()
    }));
    let f = Fake {
        log: log.clone(),
        bar0_size,
        bar0_mmap: true,
        msi: 1,
        msix: if msix { 4 } else { 0 },
        rom,
    };
    (log, f)
}
