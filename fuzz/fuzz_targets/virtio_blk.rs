//! virtio-blk request processing against guest-controlled memory.
//!
//! Input layout: byte 0 picks the queue size N (1 to 64), byte 1 the options (bit 0:
//! EVENT_IDX, bit 1: the read-only disk), bytes 2..6 the device's starting `next_avail` and
//! `next_used`. Then, each as far as the input goes (zeroes after it): the available ring
//! (4 + 2N + 2 bytes, at 0x400), the descriptor table (16N bytes, at 0x0), and the rest of
//! guest RAM from 0x1000 (headers, data, indirect tables). The used ring is at 0x600. Guest
//! RAM is 64 KiB in two regions, so buffers can straddle them.
//!
//! The synchronous request path runs against a small real disk file; it must neither panic
//! nor loop.

#![no_main]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use ghost_devices::virtio::block::{process_queue, DiskImage, ID_BYTES};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const REGION: usize = 0x8000;
// virtio-queue takes an available ring at address 0 for an unset one.
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x400;
const USED_RING: u64 = 0x600;
const BUFFERS: u64 = 0x1000;
const HEADER: usize = 6;
const DISK_SECTORS: u64 = 64;

struct Disks {
    writable: Arc<DiskImage>,
    readonly: Arc<DiskImage>,
    // Kept so the files outlive the images.
    _files: Vec<tempfile::NamedTempFile>,
}

fn disks() -> &'static Disks {
    static DISKS: OnceLock<Disks> = OnceLock::new();
    DISKS.get_or_init(|| {
        let make = || {
            let mut file = tempfile::NamedTempFile::new().expect("tempfile");
            let bytes: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
            file.write_all(&bytes).expect("fill the disk");
            file
        };
        let (w, r) = (make(), make());
        Disks {
            writable: Arc::new(DiskImage::open(w.path(), false).expect("open the disk")),
            readonly: Arc::new(DiskImage::open(r.path(), true).expect("open the disk")),
            _files: vec![w, r],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let size = 1u16 << (data[0] % 7);
    let event_idx = data[1] & 1 != 0;
    let readonly = data[1] & 2 != 0;
    let next_avail = u16::from_le_bytes([data[2], data[3]]);
    let next_used = u16::from_le_bytes([data[4], data[5]]);
    let mut rest = &data[HEADER..];

    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), REGION),
        (GuestAddress(REGION as u64), REGION),
    ])
    .expect("guest memory");
    let avail_len = 4 + 2 * usize::from(size) + 2;
    let desc_len = 16 * usize::from(size);
    let buffers_len = 2 * REGION - BUFFERS as usize;
    for (addr, len) in [
        (AVAIL_RING, avail_len),
        (DESC_TABLE, desc_len),
        (BUFFERS, buffers_len),
    ] {
        let (chunk, tail) = rest.split_at(rest.len().min(len));
        mem.write_slice(chunk, GuestAddress(addr))
            .expect("fill guest memory");
        rest = tail;
    }

    let mut queue = Queue::new(64).expect("queue");
    queue.set_size(size);
    queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
    queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
    queue.set_event_idx(event_idx);
    queue.set_next_avail(next_avail);
    queue.set_next_used(next_used);
    queue.set_ready(true);
    if !queue.is_valid(&mem) {
        return;
    }

    let d = disks();
    let disk = if readonly { &d.readonly } else { &d.writable };
    let id = [b'f'; ID_BYTES];
    // Twice: the second pass sees what the first left in the rings.
    for _ in 0..2 {
        let run = process_queue(&mut queue, &mem, disk, &id, 256);
        assert!(run.completed <= 256);
    }
});
