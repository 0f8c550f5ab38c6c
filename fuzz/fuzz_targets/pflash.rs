//! Fuzzes the CFI flash (`ghost_devices::pflash::Pflash`) against any sequence of guest MMIO
//! reads and writes of any width at any offset, on an 8 KiB flash of 1 KiB sectors. It must
//! never panic; its cells may only lose bits (program) or become all ones (erase); the
//! mapping callback must report strict on/off alternation that always matches the mode; a
//! read-only flash must never change or leave read-array mode; enough `0xff` writes must
//! always bring it back to read array; and then the backing file must hold exactly the
//! flash's contents.
//!
//! Input layout:
//! - byte 0: bit 0 set for a read-only flash, bit 1 for one without a backing file;
//! - then the initial contents' seed byte (cell `i` starts as `seed ^ i`);
//! - then 4-byte operations `[op, hi, lo, value]` at offset `(hi << 8 | lo)` (so up to
//!   64 KiB: most of it past the 8 KiB flash), or at `u64::MAX - lo` when `op & 0x80`;
//!   `op % 4`: 0 a one-byte write of `value`; 1 a read of `1 << (value % 4)` bytes; 2 a
//!   write of `1 << (op >> 2 & 3)` bytes all `value`; 3 OVMF's byte program (`0x10`,
//!   `value`, then `0xff`). Only the first 512 operations count: each write compares every
//!   cell with the one before it.

#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use ghost_devices::pflash::{Backing, FlashMapping, Pflash};
use ghost_devices::BusDevice;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, VolatileMemory};

const SIZE: usize = 8 * 1024;
const SECTOR: u64 = 1024;

/// Records the transitions, checking that they alternate.
#[derive(Clone)]
struct Mapping(Arc<Mutex<bool>>);

impl FlashMapping for Mapping {
    fn read_array(&mut self, on: bool) {
        let mut state = self.0.lock().unwrap();
        assert_ne!(*state, on, "read-array transition reported twice");
        *state = on;
    }
}

fn cells(flash: &Pflash) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    flash
        .memory()
        .as_volatile_slice()
        .read_slice(&mut v, 0)
        .unwrap();
    v
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [flags, seed, ops @ ..] = data else {
        return;
    };
    let read_only = flags & 1 != 0;
    let with_file = flags & 2 == 0 && !read_only;
    let image: Vec<u8> = (0..SIZE).map(|i| seed ^ (i as u8)).collect();
    let mut file = None;
    let backing = if read_only {
        Backing::ReadOnly
    } else if with_file {
        // tmpfs when there is one: fdatasync on a real disk would slow the fuzzer down.
        let mut f = tempfile::tempfile_in("/dev/shm")
            .or_else(|_| tempfile::tempfile())
            .unwrap();
        f.write_all(&image).unwrap();
        file = Some(f.try_clone().unwrap());
        Backing::File(f)
    } else {
        Backing::Volatile
    };
    let mut flash = Pflash::new(&image, SECTOR, backing).unwrap();
    let state = Arc::new(Mutex::new(true));
    flash.set_mapping(Box::new(Mapping(state.clone())));

    let mut before = image.clone();
    for op in ops.chunks_exact(4).take(512) {
        let (kind, value) = (op[0], op[3]);
        let offset = if kind & 0x80 != 0 {
            u64::MAX - u64::from(op[2])
        } else {
            u64::from(op[1]) << 8 | u64::from(op[2])
        };
        match kind % 4 {
            0 => flash.write(0, offset, &[value]),
            1 => {
                let mut buf = [0u8; 8];
                flash.read(0, offset, &mut buf[..1 << (value % 4)]);
            }
            2 => {
                let buf = [value; 8];
                flash.write(0, offset, &buf[..1 << (kind >> 2 & 3)]);
            }
            _ => {
                flash.write(0, offset, &[0x10]);
                flash.write(0, offset, &[value]);
                flash.write(0, offset, &[0xff]);
            }
        }
        assert_eq!(*state.lock().unwrap(), flash.in_read_array(), "mapping out of step");
        if kind % 4 != 1 {
            let after = cells(&flash);
            for (i, (&old, &new)) in before.iter().zip(&after).enumerate() {
                assert!(new == 0xff || new & !old == 0, "cell {i} gained bits: {old:#x} -> {new:#x}");
            }
            before = after;
        }
    }

    if read_only {
        assert!(flash.in_read_array());
        assert_eq!(cells(&flash), image, "a read-only flash changed");
    }
    // A buffered write may be waiting for its count (1 write) and up to 256 data bytes, then
    // its confirm: 258 writes of 0xff always end in read array.
    for _ in 0..258 {
        if flash.in_read_array() {
            break;
        }
        flash.write(0, 0, &[0xff]);
    }
    assert!(flash.in_read_array(), "0xff does not return to read array");
    assert!(*state.lock().unwrap());
    if let Some(file) = file {
        let mut disk = vec![0u8; SIZE];
        file.read_exact_at(&mut disk, 0).unwrap();
        assert!(disk == cells(&flash), "the file differs from the flash after read array");
    }
}
