//! Fuzzes the fw_cfg device (`ghost_devices::fw_cfg::FwCfg`) against any sequence of guest
//! port accesses and DMA transfers in a small guest RAM: it must never panic or hang, the DMA
//! register must always read the DMA signature, every transfer whose control word is in RAM
//! must leave it 0 or ERROR, and at the end the signature item must still read "QEMU".
//!
//! Guest RAM: 32 KiB at 0 and 32 KiB at 0x10000 (a hole between, and nothing above), so
//! structures and buffers can straddle a region's end or fall into the hole.
//!
//! The device holds the ID and signature, NB_CPUS, a fixed file, a small `bootorder` and a
//! generated file whose generator returns a different length on each call.
//!
//! Input: 12-byte operations `[op, a, b, c, d, e, f, g, h, i, j, k]`, `op % 8`:
//! 0 a 16-bit selector write (`a` odd: one of the known keys, picked by `b`; else `[b, c]`);
//! 1 an 8-bit selector write of `a`;
//! 2 a data-port read of `a % 40` bytes;
//! 3 a DMA transfer: the access structure at `[a, b] * 2` (`c` odd: above 4 GiB), control
//!   `d & 0x1f` with the key (a known one, picked by `e`) when SELECT is set, length
//!   `[f, g, h, i]`, buffer address `[j, k] * 2`, written to RAM and started through the
//!   register (high half, then low);
//! 4 a 4-byte write `[b, c, d, e]` to the register's high (`a` even) or low half;
//! 5 a write of `b % 9` bytes from `c..` at offset `a % 16`;
//! 6 a read of `b % 9` bytes at offset `a % 16`;
//! 7 a write of `[c, d, e, f]` to guest RAM at `[a, b] * 2`.

#![no_main]

use ghost_devices::fw_cfg::{
    FwCfg, FwCfgFile, FW_CFG_DMA_SIGNATURE, FW_CFG_FILE_DIR, FW_CFG_ID, FW_CFG_NB_CPUS,
    FW_CFG_PORT, FW_CFG_SIGNATURE,
};
use ghost_devices::BusDevice;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const REGION: usize = 0x8000;
const SECOND: u64 = 0x10000;
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;

fn device() -> (FwCfg, GuestMemoryMmap, Vec<u16>) {
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), REGION), (GuestAddress(SECOND), REGION)])
            .expect("guest memory");
    let mut dev = FwCfg::new(mem.clone());
    dev.add_item(FW_CFG_NB_CPUS, 2u16.to_le_bytes().to_vec())
        .expect("add");
    let fixed = dev
        .add_file("etc/fixed", FwCfgFile::fixed((0..=255).collect()))
        .expect("add");
    let boot = dev
        .add_file("bootorder", FwCfgFile::fixed(b"/pci@i0cf8/*@2\0".to_vec()))
        .expect("add");
    let mut calls = 0usize;
    let generated = dev
        .add_file(
            "etc/acpi/tables",
            FwCfgFile::generated(
                300,
                Box::new(move || {
                    calls += 1;
                    vec![0x5a; (calls * 97) % 700]
                }),
            ),
        )
        .expect("add");
    let keys = vec![
        FW_CFG_SIGNATURE,
        FW_CFG_ID,
        FW_CFG_FILE_DIR,
        FW_CFG_NB_CPUS,
        fixed,
        boot,
        generated,
        0x7777,
    ];
    (dev, mem, keys)
}

fn pick(keys: &[u16], i: u8) -> u16 {
    keys[usize::from(i) % keys.len()]
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let (mut dev, mem, keys) = device();
    for op in data.chunks_exact(12) {
        let [op, a, b, c, d, e, f, g, h, i, j, k] = op.try_into().expect("12 bytes");
        match op % 8 {
            0 => {
                let key = if a & 1 == 1 {
                    pick(&keys, b)
                } else {
                    u16::from_le_bytes([b, c])
                };
                dev.write(FW_CFG_PORT, 0, &key.to_le_bytes());
            }
            1 => dev.write(FW_CFG_PORT, 0, &[a]),
            2 => {
                let mut out = vec![0u8; usize::from(a % 40)];
                dev.read(FW_CFG_PORT, 1, &mut out);
            }
            3 => {
                let high = if c & 1 == 1 { 1u64 << 32 } else { 0 };
                let access = high | (u64::from(u16::from_le_bytes([a, b])) * 2);
                let control = u32::from(d & 0x1f) | (u32::from(pick(&keys, e)) << 16);
                let length = u32::from_le_bytes([f, g, h, i]);
                let address = u64::from(u16::from_le_bytes([j, k])) * 2;
                let mut raw = [0u8; 16];
                raw[..4].copy_from_slice(&control.to_be_bytes());
                raw[4..8].copy_from_slice(&length.to_be_bytes());
                raw[8..].copy_from_slice(&address.to_be_bytes());
                // May fail (or be cut) outside RAM: then the device finds junk or nothing.
                let _ = mem.write_slice(&raw, GuestAddress(access));
                let [h0, h1, h2, h3, l0, l1, l2, l3] = access.to_be_bytes();
                dev.write(FW_CFG_PORT, DMA_HIGH, &[h0, h1, h2, h3]);
                dev.write(FW_CFG_PORT, DMA_LOW, &[l0, l1, l2, l3]);
                let mut status = [0u8; 4];
                if mem.read_slice(&mut status, GuestAddress(access)).is_ok() {
                    let status = u32::from_be_bytes(status);
                    assert!(status == 0 || status == 1, "control word {status:#x} left");
                }
            }
            4 => {
                let at = if a & 1 == 0 { DMA_HIGH } else { DMA_LOW };
                dev.write(FW_CFG_PORT, at, &[b, c, d, e]);
            }
            5 => {
                let bytes = [c, d, e, f, g, h, i, j];
                let len = usize::from(b % 9).min(bytes.len());
                dev.write(FW_CFG_PORT, u64::from(a % 16), &bytes[..len]);
            }
            6 => {
                let offset = u64::from(a % 16);
                let mut out = vec![0u8; usize::from(b % 9)];
                dev.read(FW_CFG_PORT, offset, &mut out);
                if offset >= DMA_HIGH {
                    for (n, byte) in out.iter().enumerate() {
                        let at = offset + n as u64 - DMA_HIGH;
                        let want = usize::try_from(at)
                            .ok()
                            .and_then(|at| FW_CFG_DMA_SIGNATURE.get(at))
                            .copied()
                            .unwrap_or(0);
                        assert_eq!(*byte, want, "DMA register byte {at}");
                    }
                }
            }
            _ => {
                let addr = u64::from(u16::from_le_bytes([a, b])) * 2;
                let _ = mem.write_slice(&[c, d, e, f], GuestAddress(addr));
            }
        }
    }

    // Whatever came before, the signature item is still there.
    dev.write(FW_CFG_PORT, 0, &FW_CFG_SIGNATURE.to_le_bytes());
    let mut sig = [0u8; 4];
    dev.read(FW_CFG_PORT, 1, &mut sig);
    assert_eq!(&sig, b"QEMU");
}
