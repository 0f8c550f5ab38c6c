//! Unit tests of the virtio-blk device: requests on `GuestMemoryMmap` fixtures driven through
//! `MockSplitQueue`, the disk lock, and the worker end to end.

// Test fixtures convert small constants freely.
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{STATUS_IOERR, STATUS_OK, STATUS_UNSUPP};
use super::uring::Uring;
use super::*;
use crate::virtio::{ActivateContext, ActivatedQueue, VirtioInterrupt};

const QSIZE: u16 = 64;
/// Guest RAM: two adjacent regions, so one buffer can span both.
const REGION: u64 = 0x2_0000;
const MEM_END: u64 = 2 * REGION;

const HDR: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x9000;
const ID: [u8; ID_BYTES] = *b"test-vm-0\0\0\0\0\0\0\0\0\0\0\0";

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), REGION as usize),
        (GuestAddress(REGION), REGION as usize),
    ])
    .unwrap()
}

/// The byte at `offset` of a fresh test disk.
fn pattern(offset: u64) -> u8 {
    ((offset / 512) * 7 + offset % 251) as u8
}

fn disk_file(sectors: u64) -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..sectors * 512).map(pattern).collect();
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    file
}

fn open(file: &NamedTempFile, readonly: bool) -> Arc<DiskImage> {
    Arc::new(DiskImage::open(file.path(), readonly).unwrap())
}

fn file_bytes(file: &NamedTempFile) -> Vec<u8> {
    let mut f = file.reopen().unwrap();
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut out).unwrap();
    out
}

/// The driver side of a split queue at guest address 0.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: u16,
    avail_idx: u16,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self {
            mem,
            vq: MockSplitQueue::create(mem, GuestAddress(0), QSIZE),
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn queue(&self) -> Queue {
        self.vq.create_queue().unwrap()
    }

    /// Writes a chain of `(addr, len, device-writable)` buffers and makes it available.
    fn add(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            let next = (idx + 1) % QSIZE;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            self.store(idx, SplitDescriptor::new(addr, len, flags as u16, next));
            self.next_desc = next;
        }
        self.publish(head);
        head
    }

    fn store(&self, idx: u16, desc: SplitDescriptor) {
        self.vq
            .desc_table()
            .store(idx, RawDescriptor::from(desc))
            .unwrap();
    }

    fn publish(&mut self, head: u16) {
        let avail = self.vq.avail_addr().0;
        let slot = avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(avail + 2))
            .unwrap();
    }

    fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.vq.avail_addr().0 + 2))
            .unwrap();
    }

    fn set_used_event(&self, value: u16) {
        let addr = self.vq.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
        self.mem.write_obj(value, GuestAddress(addr)).unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.vq.used_addr().0 + 2))
            .unwrap()
    }

    /// `(head, len)` of used element `i`.
    fn used(&self, i: u16) -> (u32, u32) {
        let addr = self.vq.used_addr().0 + 4 + 8 * u64::from(i % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (id, len)
    }
}

fn header(mem: &GuestMemoryMmap, addr: u64, req_type: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&req_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(addr)).unwrap();
}

fn status(mem: &GuestMemoryMmap, addr: u64) -> u8 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

fn read_guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
    out
}

fn run(queue: &mut Queue, mem: &GuestMemoryMmap, disk: &DiskImage) -> QueueRun {
    process_queue(queue, mem, disk, &ID, 1000)
}

/// Runs one chain made of a header and `rest`, with the status byte at `STATUS`; returns
/// (status, used length).
fn one_request(
    disk: &DiskImage,
    req_type: u32,
    sector: u64,
    data: &[(u64, u32, bool)],
    setup: impl FnOnce(&GuestMemoryMmap),
) -> (GuestMemoryMmap, u8, u32) {
    let mem = guest_memory();
    setup(&mem);
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    header(&mem, HDR, req_type, sector);
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let mut bufs = vec![(HDR, 16, false)];
    bufs.extend_from_slice(data);
    bufs.push((STATUS, 1, true));
    driver.add(&bufs);
    let result = run(&mut queue, &mem, disk);
    assert_eq!(result.completed, 1);
    assert_eq!(driver.used_idx(), 1);
    let (_, len) = driver.used(0);
    let st = status(&mem, STATUS);
    (mem, st, len)
}

fn discard_range(mem: &GuestMemoryMmap, addr: u64, sector: u64, num: u32, flags: u32) {
    let mut r = [0u8; 16];
    r[0..8].copy_from_slice(&sector.to_le_bytes());
    r[8..12].copy_from_slice(&num.to_le_bytes());
    r[12..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&r, GuestAddress(addr)).unwrap();
}

// ---- requests ----

#[test]
fn read_returns_the_file_bytes() {
    let file = disk_file(64);
    let disk = open(&file, false);
    // Two data buffers, the second spanning the boundary between the memory regions.
    let second = REGION - 0x100;
    let (mem, st, len) = one_request(
        &disk,
        VIRTIO_BLK_T_IN,
        3,
        &[(DATA, 512, true), (second, 1024, true)],
        |_| {},
    );
    assert_eq!(st, STATUS_OK);
    assert_eq!(len, 1536 + 1);
    let expect: Vec<u8> = (3 * 512..3 * 512 + 1536).map(pattern).collect();
    let mut got = read_guest(&mem, DATA, 512);
    got.extend(read_guest(&mem, second, 1024));
    assert_eq!(got, expect);
}

#[test]
fn write_lands_in_the_file() {
    let file = disk_file(64);
    let disk = open(&file, false);
    let (_, st, len) = one_request(&disk, VIRTIO_BLK_T_OUT, 10, &[(DATA, 1024, false)], |mem| {
        mem.write_slice(&[0xab; 1024], GuestAddress(DATA)).unwrap()
    });
    assert_eq!(st, STATUS_OK);
    assert_eq!(len, 1);
    let bytes = file_bytes(&file);
    assert!(bytes[10 * 512..12 * 512].iter().all(|&b| b == 0xab));
    assert_eq!(bytes[12 * 512], pattern(12 * 512));
    assert_eq!(bytes[10 * 512 - 1], pattern(10 * 512 - 1));
}

#[test]
fn flush_succeeds() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let (_, st, len) = one_request(&disk, VIRTIO_BLK_T_FLUSH, 0, &[], |_| {});
    assert_eq!((st, len), (STATUS_OK, 1));
}

#[test]
fn get_id_writes_the_serial() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let (mem, st, len) = one_request(&disk, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20, true)], |mem| {
        mem.write_slice(&[0xee; 20], GuestAddress(DATA)).unwrap()
    });
    assert_eq!((st, len), (STATUS_OK, 21));
    assert_eq!(read_guest(&mem, DATA, 20), ID.to_vec());

    // A shorter buffer gets what fits.
    let (mem, st, len) = one_request(&disk, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 4, true)], |_| {});
    assert_eq!((st, len), (STATUS_OK, 5));
    assert_eq!(read_guest(&mem, DATA, 4), b"test".to_vec());
}

#[test]
fn get_id_without_a_buffer_is_an_error() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let (_, st, len) = one_request(&disk, VIRTIO_BLK_T_GET_ID, 0, &[], |_| {});
    assert_eq!((st, len), (STATUS_IOERR, 1));
}

#[test]
fn discard_and_write_zeroes_zero_the_range() {
    let file = disk_file(64);
    let disk = open(&file, false);
    assert!(disk.supports_discard(), "ext4/tmpfs punch holes");
    let block = Block::new(disk.clone(), "x".into()).unwrap();
    assert_ne!(block.features() & features::DISCARD, 0);
    assert_ne!(block.features() & features::WRITE_ZEROES, 0);

    let (_, st, _) = one_request(
        &disk,
        VIRTIO_BLK_T_DISCARD,
        0,
        &[(DATA, 32, false)],
        |mem| {
            discard_range(mem, DATA, 8, 8, 0);
            discard_range(mem, DATA + 16, 40, 1, 0);
        },
    );
    assert_eq!(st, STATUS_OK);
    let bytes = file_bytes(&file);
    assert_eq!(bytes.len(), 64 * 512, "the size is kept");
    assert!(bytes[8 * 512..16 * 512].iter().all(|&b| b == 0));
    assert!(bytes[40 * 512..41 * 512].iter().all(|&b| b == 0));
    assert_eq!(bytes[16 * 512], pattern(16 * 512));

    for (sector, flags) in [(20u64, 0u32), (30, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)] {
        let (_, st, _) = one_request(
            &disk,
            VIRTIO_BLK_T_WRITE_ZEROES,
            0,
            &[(DATA, 16, false)],
            |mem| discard_range(mem, DATA, sector, 3, flags),
        );
        assert_eq!(st, STATUS_OK);
        let bytes = file_bytes(&file);
        let start = sector as usize * 512;
        assert!(bytes[start..start + 3 * 512].iter().all(|&b| b == 0));
        assert_eq!(bytes[start + 3 * 512], pattern(start as u64 + 3 * 512));
        assert_eq!(bytes.len(), 64 * 512);
    }
}

#[test]
fn write_zeroes_falls_back_to_writing() {
    let file = disk_file(16);
    let disk = open(&file, false);
    disk.force_zero_method_for_test(u8::MAX);
    let (_, st, _) = one_request(
        &disk,
        VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        &[(DATA, 16, false)],
        |mem| discard_range(mem, DATA, 2, 5, 0),
    );
    assert_eq!(st, STATUS_OK);
    let bytes = file_bytes(&file);
    assert!(bytes[2 * 512..7 * 512].iter().all(|&b| b == 0));
    assert_eq!(bytes[7 * 512], pattern(7 * 512));
}

#[test]
fn bad_discard_requests() {
    let file = disk_file(16);
    let before = file_bytes(&file);
    let disk = open(&file, false);
    type Setup = Box<dyn Fn(&GuestMemoryMmap)>;
    let cases: Vec<(u32, u32, Setup, u8)> = vec![
        // Discard takes no flags.
        (
            VIRTIO_BLK_T_DISCARD,
            16,
            Box::new(|m| discard_range(m, DATA, 0, 1, 1)),
            STATUS_UNSUPP,
        ),
        // Unknown write-zeroes flag.
        (
            VIRTIO_BLK_T_WRITE_ZEROES,
            16,
            Box::new(|m| discard_range(m, DATA, 0, 1, 2)),
            STATUS_UNSUPP,
        ),
        // Past the end.
        (
            VIRTIO_BLK_T_DISCARD,
            16,
            Box::new(|m| discard_range(m, DATA, 15, 2, 0)),
            STATUS_IOERR,
        ),
        (
            VIRTIO_BLK_T_WRITE_ZEROES,
            16,
            Box::new(|m| discard_range(m, DATA, u64::MAX, 1, 0)),
            STATUS_IOERR,
        ),
        // Not a whole number of ranges.
        (
            VIRTIO_BLK_T_DISCARD,
            15,
            Box::new(|m| discard_range(m, DATA, 0, 1, 0)),
            STATUS_IOERR,
        ),
        // Too many ranges.
        (
            VIRTIO_BLK_T_DISCARD,
            16 * (MAX_DISCARD_SEG + 1),
            Box::new(|_| {}),
            STATUS_UNSUPP,
        ),
        (
            VIRTIO_BLK_T_WRITE_ZEROES,
            16 * (MAX_WRITE_ZEROES_SEG + 1),
            Box::new(|_| {}),
            STATUS_UNSUPP,
        ),
        // Over the per-range limit.
        (
            VIRTIO_BLK_T_DISCARD,
            16,
            Box::new(|m| discard_range(m, DATA, 0, MAX_DISCARD_SECTORS + 1, 0)),
            STATUS_IOERR,
        ),
    ];
    for (i, (req_type, len, setup, want)) in cases.into_iter().enumerate() {
        let (_, st, used) = one_request(&disk, req_type, 0, &[(DATA, len, false)], setup);
        assert_eq!((st, used), (want, 1), "case {i}");
    }
    assert_eq!(file_bytes(&file), before);
}

#[test]
fn readonly_refuses_writes() {
    let file = disk_file(16);
    let before = file_bytes(&file);
    let disk = open(&file, true);
    let block = Block::new(disk.clone(), "ro".into()).unwrap();
    assert_ne!(block.features() & features::RO, 0);
    assert_eq!(
        block.features() & (features::DISCARD | features::WRITE_ZEROES),
        0
    );

    let (_, st, len) = one_request(&disk, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)], |m| {
        m.write_slice(&[0x55; 512], GuestAddress(DATA)).unwrap()
    });
    assert_eq!((st, len), (STATUS_IOERR, 1));
    for req_type in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let (_, st, _) = one_request(&disk, req_type, 0, &[(DATA, 16, false)], |m| {
            discard_range(m, DATA, 0, 1, 0)
        });
        assert_eq!(st, STATUS_UNSUPP);
    }
    assert_eq!(file_bytes(&file), before);

    // Reads and flushes still work.
    let (_, st, _) = one_request(&disk, VIRTIO_BLK_T_IN, 1, &[(DATA, 512, true)], |_| {});
    assert_eq!(st, STATUS_OK);
    let (_, st, _) = one_request(&disk, VIRTIO_BLK_T_FLUSH, 0, &[], |_| {});
    assert_eq!(st, STATUS_OK);
}

#[test]
fn out_of_range_and_malformed_io_is_an_error() {
    let file = disk_file(16);
    let before = file_bytes(&file);
    let disk = open(&file, false);
    type Buffers = Vec<(u64, u32, bool)>;
    let cases: &[(u32, u64, Buffers)] = &[
        // Starts at the end.
        (VIRTIO_BLK_T_IN, 16, vec![(DATA, 512, true)]),
        // Ends past the end.
        (VIRTIO_BLK_T_IN, 15, vec![(DATA, 1024, true)]),
        (VIRTIO_BLK_T_OUT, 15, vec![(DATA, 1024, false)]),
        // sector * 512 overflows.
        (VIRTIO_BLK_T_IN, u64::MAX / 256, vec![(DATA, 512, true)]),
        (VIRTIO_BLK_T_OUT, u64::MAX, vec![(DATA, 512, false)]),
        // Not whole sectors.
        (VIRTIO_BLK_T_IN, 0, vec![(DATA, 513, true)]),
        (VIRTIO_BLK_T_OUT, 0, vec![(DATA, 100, false)]),
        // Data in the wrong direction.
        (VIRTIO_BLK_T_IN, 0, vec![(DATA, 512, false)]),
        (VIRTIO_BLK_T_OUT, 0, vec![(DATA, 512, true)]),
        // Buffers outside guest memory.
        (VIRTIO_BLK_T_IN, 0, vec![(MEM_END, 512, true)]),
        (VIRTIO_BLK_T_IN, 0, vec![(MEM_END - 256, 512, true)]),
        (VIRTIO_BLK_T_OUT, 0, vec![(u64::MAX - 100, 512, false)]),
        // A huge length.
        (VIRTIO_BLK_T_IN, 0, vec![(DATA, 0xffff_fe00, true)]),
    ];
    for (i, (req_type, sector, data)) in cases.iter().enumerate() {
        let (_, st, len) = one_request(&disk, *req_type, *sector, data, |_| {});
        assert_eq!((st, len), (STATUS_IOERR, 1), "case {i}");
    }
    assert_eq!(file_bytes(&file), before);
}

#[test]
fn unknown_request_type_is_unsupported() {
    let file = disk_file(8);
    let disk = open(&file, false);
    for req_type in [
        2,
        3,
        VIRTIO_BLK_T_SECURE_ERASE,
        VIRTIO_BLK_T_ZONE_REPORT,
        u32::MAX,
    ] {
        let (_, st, len) = one_request(&disk, req_type, 0, &[(DATA, 512, true)], |_| {});
        assert_eq!((st, len), (STATUS_UNSUPP, 1), "type {req_type}");
    }
}

#[test]
fn malformed_chains_are_answered_or_dropped() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    for s in 0..8 {
        mem.write_obj(0xffu8, GuestAddress(STATUS + s)).unwrap();
    }

    // 0: no writable descriptor at all: no status to write.
    driver.add(&[(HDR, 16, false), (DATA, 512, false)]);
    // 1: header too short.
    driver.add(&[(HDR, 8, false), (STATUS + 1, 1, true)]);
    // 2: header in a writable descriptor.
    driver.add(&[(HDR, 16, true), (STATUS + 2, 1, true)]);
    // 3: status byte outside guest memory.
    driver.add(&[(HDR, 16, false), (DATA, 512, true), (MEM_END, 1, true)]);
    // 4: a readable descriptor after a writable one.
    driver.add(&[
        (HDR, 16, false),
        (DATA, 512, true),
        (HDR, 16, false),
        (STATUS + 4, 1, true),
    ]);
    // 5: header outside guest memory.
    driver.add(&[(MEM_END + 0x1000, 16, false), (STATUS + 5, 1, true)]);
    // 6: a good one after all that.
    driver.add(&[(HDR, 16, false), (DATA, 512, true), (STATUS + 6, 1, true)]);

    let result = run(&mut queue, &mem, &disk);
    assert_eq!(result.completed, 7);
    assert_eq!(driver.used_idx(), 7);
    let lens: Vec<u32> = (0..7).map(|i| driver.used(i).1).collect();
    assert_eq!(lens, [0, 1, 1, 0, 1, 1, 513]);
    let statuses: Vec<u8> = (1..7).map(|i| status(&mem, STATUS + i)).collect();
    assert_eq!(
        statuses,
        [
            STATUS_IOERR,
            STATUS_IOERR,
            0xff,
            STATUS_IOERR,
            STATUS_IOERR,
            STATUS_OK
        ]
    );
}

#[test]
fn any_framing_is_accepted() {
    let file = disk_file(16);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();

    // A write whose header and data share one descriptor.
    header(&mem, DATA, VIRTIO_BLK_T_OUT, 4);
    mem.write_slice(&[0x77; 512], GuestAddress(DATA + 16))
        .unwrap();
    driver.add(&[(DATA, 16 + 512, false), (STATUS, 1, true)]);
    // A read whose data and status share one descriptor, the header split in two.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 4);
    driver.add(&[(HDR, 5, false), (HDR + 5, 11, false), (0x4000, 513, true)]);

    let result = run(&mut queue, &mem, &disk);
    assert_eq!(result.completed, 2);
    assert_eq!(status(&mem, STATUS), STATUS_OK);
    assert_eq!(status(&mem, 0x4000 + 512), STATUS_OK);
    assert_eq!(driver.used(1).1, 513);
    assert_eq!(read_guest(&mem, 0x4000, 512), vec![0x77; 512]);
}

#[test]
fn indirect_chains_work() {
    let file = disk_file(16);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 2);
    let table = 0x8000u64;
    let descs = [
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
            2,
        ),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    for (i, d) in descs.iter().enumerate() {
        mem.write_obj(RawDescriptor::from(*d), GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    driver.store(
        0,
        SplitDescriptor::new(table, 48, VRING_DESC_F_INDIRECT as u16, 0),
    );
    driver.publish(0);
    let result = run(&mut queue, &mem, &disk);
    assert_eq!(result.completed, 1);
    assert_eq!(status(&mem, STATUS), STATUS_OK);
    let expect: Vec<u8> = (1024..1536).map(pattern).collect();
    assert_eq!(read_guest(&mem, DATA, 512), expect);
}

#[test]
fn event_idx_suppresses_notifications() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    queue.set_event_idx(true);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);

    // The driver wants an interrupt after used entry 5 only.
    driver.set_used_event(5);
    for _ in 0..2 {
        driver.add(&[(HDR, 16, false), (STATUS, 1, true)]);
    }
    let r = run(&mut queue, &mem, &disk);
    assert_eq!((r.completed, r.notify), (2, false));
    // The device asked to be kicked at the next available entry.
    let avail_event: u16 = mem
        .read_obj(GuestAddress(
            driver.vq.used_addr().0 + 4 + 8 * u64::from(QSIZE),
        ))
        .unwrap();
    assert_eq!(avail_event, 2);

    for _ in 0..4 {
        driver.add(&[(HDR, 16, false), (STATUS, 1, true)]);
    }
    let r = run(&mut queue, &mem, &disk);
    assert_eq!((r.completed, r.notify), (4, true));
}

#[test]
fn budget_and_corrupt_rings_end_the_pass() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    for _ in 0..5 {
        driver.add(&[(HDR, 16, false), (STATUS, 1, true)]);
    }
    let r = process_queue(&mut queue, &mem, &disk, &ID, 3);
    assert_eq!((r.completed, r.more), (3, true));
    let r = process_queue(&mut queue, &mem, &disk, &ID, 3);
    assert_eq!((r.completed, r.more), (2, false));

    // The driver claims more chains than the queue holds: nothing is served, nothing hangs.
    driver.set_avail_idx(5 + QSIZE + 1);
    let r = run(&mut queue, &mem, &disk);
    assert_eq!(r.completed, 0);

    // A head index past the queue size: completed with nothing (the used ring refuses it).
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    driver.publish(QSIZE + 3);
    let r = run(&mut queue, &mem, &disk);
    assert_eq!(r.completed, 1);
    assert_eq!(driver.used_idx(), 0);
}

#[test]
fn descriptor_loops_end() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    driver.store(
        0,
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
    );
    driver.store(
        1,
        SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
            0,
        ),
    );
    driver.publish(0);
    let r = run(&mut queue, &mem, &disk);
    assert_eq!(r.completed, 1);
    assert_eq!(driver.used_idx(), 1);
}

// ---- configuration ----

#[test]
fn config_space_and_features() {
    let file = disk_file(100);
    let disk = open(&file, false);
    let block = Block::new(disk, "cfg".into()).unwrap();
    assert_eq!(block.device_type(), 2);
    assert_eq!(block.queue_max_sizes(), &[QUEUE_SIZE]);
    let f = block.features();
    for bit in [
        crate::virtio::features::VERSION_1,
        crate::virtio::features::RING_EVENT_IDX,
        features::SEG_MAX,
        features::BLK_SIZE,
        features::FLUSH,
    ] {
        assert_ne!(f & bit, 0);
    }
    assert_eq!(f & features::RO, 0);

    let read_u32 = |off: u64| {
        let mut b = [0u8; 4];
        block.read_config(off, &mut b);
        u32::from_le_bytes(b)
    };
    let mut cap = [0u8; 8];
    block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 100);
    assert_eq!(read_u32(12), SEG_MAX);
    assert_eq!(read_u32(20), 512);
    assert_eq!(read_u32(36), MAX_DISCARD_SECTORS);
    assert_eq!(read_u32(40), MAX_DISCARD_SEG);
    assert!(read_u32(44) >= 1);
    assert_eq!(read_u32(48), MAX_WRITE_ZEROES_SECTORS);
    assert_eq!(read_u32(52), MAX_WRITE_ZEROES_SEG);
    let mut unmap = [0u8; 1];
    block.read_config(56, &mut unmap);
    assert_eq!(unmap[0], 1);
    // Past the end: zeroes. Writes are ignored.
    let mut past = [0xffu8; 8];
    block.read_config(4096, &mut past);
    assert_eq!(past, [0; 8]);
    let mut block = block;
    block.write_config(0, &[1, 2, 3, 4]);
    block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 100);
}

#[test]
fn serials_longer_than_20_bytes_are_refused() {
    let file = disk_file(8);
    let disk = open(&file, false);
    let err = Block::new(disk.clone(), "x".repeat(21)).unwrap_err();
    assert!(matches!(err, BlockError::Serial { .. }));
    assert!(Block::new(disk, "y".repeat(20)).is_ok());
}

// ---- the disk lock and opening ----

#[test]
fn a_writable_disk_is_locked_exclusively() {
    let file = disk_file(8);
    let _first = DiskImage::open(file.path(), false).unwrap();
    let err = DiskImage::open(file.path(), false).unwrap_err();
    assert!(matches!(err, BlockError::Locked { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "disk {} is in use by another VM (it is locked)",
            file.path().display()
        )
    );
    let err = DiskImage::open(file.path(), true).unwrap_err();
    assert!(matches!(err, BlockError::Locked { .. }));
}

#[test]
fn readonly_disks_share_the_lock() {
    let file = disk_file(8);
    let a = DiskImage::open(file.path(), true).unwrap();
    let _b = DiskImage::open(file.path(), true).unwrap();
    assert!(matches!(
        DiskImage::open(file.path(), false),
        Err(BlockError::Locked { .. })
    ));
    drop(a);
    drop(_b);
    // Released with the images.
    DiskImage::open(file.path(), false).unwrap();
}

#[test]
fn open_errors_name_the_path() {
    let err = DiskImage::open(std::path::Path::new("/nonexistent/disk.img"), false).unwrap_err();
    assert!(matches!(err, BlockError::Open { .. }));
    assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let err = DiskImage::open(dir.path(), true).unwrap_err();
    assert!(matches!(err, BlockError::NotADisk { .. }));
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn capacity_ignores_a_partial_last_sector() {
    let mut file = disk_file(4);
    file.write_all(&[1; 100]).unwrap();
    let disk = open(&file, false);
    assert_eq!(disk.size(), 4 * 512 + 100);
    assert_eq!(disk.capacity_sectors(), 4);
    assert_eq!(disk.kind(), DiskKind::File);
}

// ---- the worker, end to end ----

#[derive(Default)]
struct CountingInterrupt {
    queue: AtomicUsize,
}

impl VirtioInterrupt for CountingInterrupt {
    fn notify_queue(&self, queue: u16) {
        assert_eq!(queue, 0);
        self.queue.fetch_add(1, Ordering::SeqCst);
    }
    fn notify_config(&self) {}
}

fn wait_for_used(driver: &Driver, count: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.used_idx() != count {
        assert!(
            Instant::now() < deadline,
            "the worker completed {} of {count}",
            driver.used_idx()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn activate(
    block: &mut Block,
    mem: &GuestMemoryMmap,
    queue: Queue,
    irq: &Arc<CountingInterrupt>,
) -> EventFd {
    let notifier = EventFd::new(EFD_NONBLOCK).unwrap();
    let features = block.features();
    block
        .activate(ActivateContext {
            mem: mem.clone(),
            interrupt: irq.clone(),
            queues: vec![ActivatedQueue {
                index: 0,
                queue,
                notifier: notifier.try_clone().unwrap(),
            }],
            acked_features: features,
        })
        .unwrap();
    notifier
}

/// Reads and writes every sector of a 16-sector disk through the worker, `QSIZE / 2`
/// requests at a time, then resets and activates again.
fn end_to_end(engine: IoEngine) {
    let file = disk_file(16);
    let disk = open(&file, false);
    let mut block = Block::new(disk, "e2e".into()).unwrap();
    block.set_io_engine(engine);
    let irq = Arc::new(CountingInterrupt::default());

    for round in 0..2u8 {
        let mem = guest_memory();
        let mut driver = Driver::new(&mem);
        let notifier = activate(&mut block, &mem, driver.queue(), &irq);
        let before = irq.queue.load(Ordering::SeqCst);

        // Writes: sector i gets bytes i + round.
        for i in 0..8u64 {
            let hdr = HDR + 16 * i;
            let data = DATA + 512 * i;
            header(&mem, hdr, VIRTIO_BLK_T_OUT, i);
            mem.write_slice(&[i as u8 + round; 512], GuestAddress(data))
                .unwrap();
            driver.add(&[(hdr, 16, false), (data, 512, false), (STATUS + i, 1, true)]);
        }
        notifier.write(1).unwrap();
        wait_for_used(&driver, 8);
        // Reads back into other buffers, then a flush.
        for i in 0..7u64 {
            let hdr = HDR + 0x200 + 16 * i;
            header(&mem, hdr, VIRTIO_BLK_T_IN, i);
            driver.add(&[
                (hdr, 16, false),
                (0x1_0000 + 512 * i, 512, true),
                (STATUS + 8 + i, 1, true),
            ]);
        }
        header(&mem, HDR + 0x300, VIRTIO_BLK_T_FLUSH, 0);
        driver.add(&[(HDR + 0x300, 16, false), (STATUS + 15, 1, true)]);
        notifier.write(1).unwrap();
        wait_for_used(&driver, 16);

        for i in 0..16 {
            assert_eq!(status(&mem, STATUS + i), STATUS_OK, "request {i}");
        }
        for i in 0..7u64 {
            assert_eq!(
                read_guest(&mem, 0x1_0000 + 512 * i, 512),
                vec![i as u8 + round; 512]
            );
        }
        let lens: Vec<u32> = (0..16).map(|i| driver.used(i).1).collect();
        assert_eq!(&lens[..8], &[1; 8]);
        assert_eq!(&lens[8..15], &[513; 7]);
        assert!(
            irq.queue.load(Ordering::SeqCst) > before,
            "the driver was notified"
        );
        block.reset();
    }
    let bytes = file_bytes(&file);
    assert!(bytes[..512].iter().all(|&b| b == 1));
    assert_eq!(bytes[8 * 512], pattern(8 * 512));
}

#[test]
fn worker_serves_the_queue_synchronously() {
    end_to_end(IoEngine::Sync);
}

#[test]
fn worker_serves_the_queue_with_io_uring() {
    if let Err(e) = Uring::new() {
        eprintln!("skipped: io_uring unavailable here ({e})");
        return;
    }
    end_to_end(IoEngine::Auto);
}

/// The io_uring engine on its own: many requests in flight, errors and odd requests mixed in.
#[test]
fn io_uring_engine_matches_the_sync_engine() {
    let Ok(mut ring) = Uring::new() else {
        eprintln!("skipped: io_uring unavailable here");
        return;
    };
    let file = disk_file(16);
    let disk = open(&file, false);
    let mem = guest_memory();
    let mut driver = Driver::new(&mem);
    let mut queue = driver.queue();
    for i in 0..4u64 {
        header(&mem, HDR + 16 * i, VIRTIO_BLK_T_IN, i * 2);
        driver.add(&[
            (HDR + 16 * i, 16, false),
            (DATA + 1024 * i, 1024, true),
            (STATUS + i, 1, true),
        ]);
    }
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_GET_ID, 0);
    driver.add(&[
        (HDR + 0x100, 16, false),
        (0x8000, 20, true),
        (STATUS + 4, 1, true),
    ]);
    header(&mem, HDR + 0x110, VIRTIO_BLK_T_IN, 99);
    driver.add(&[
        (HDR + 0x110, 16, false),
        (0x8100, 512, true),
        (STATUS + 5, 1, true),
    ]);
    header(&mem, HDR + 0x120, VIRTIO_BLK_T_FLUSH, 0);
    driver.add(&[(HDR + 0x120, 16, false), (STATUS + 6, 1, true)]);

    let run = ring.pump(&mut queue, &mem, &disk, &ID, 100);
    assert_eq!(
        run.completed, 2,
        "GET_ID and the bad read are answered at once"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = run.completed;
    while done < 7 {
        assert!(Instant::now() < deadline);
        done += ring.reap(&mut queue, &mem, &disk);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ring.in_flight(), 0);
    let statuses: Vec<u8> = (0..7).map(|i| status(&mem, STATUS + i)).collect();
    assert_eq!(statuses, [0, 0, 0, 0, 0, STATUS_IOERR, 0]);
    let expect: Vec<u8> = (0..4096).map(pattern).collect();
    assert_eq!(read_guest(&mem, DATA, 4096), expect);
    assert_eq!(read_guest(&mem, 0x8000, 20), ID.to_vec());
}

#[test]
fn activation_needs_the_queue() {
    let file = disk_file(8);
    let mut block = Block::new(open(&file, false), "q".into()).unwrap();
    let mem = guest_memory();
    let err = block
        .activate(ActivateContext {
            mem,
            interrupt: Arc::new(CountingInterrupt::default()),
            queues: Vec::new(),
            acked_features: 0,
        })
        .unwrap_err();
    assert!(matches!(
        err,
        crate::virtio::ActivateError::Queues { got: 0, need: 1 }
    ));
}

// ---- a host block device ----

/// Runs the request path against a scratch block device named by `GHOST_BLK_TEST_DEVICE`
/// (its contents are overwritten), e.g. a loop device:
/// `losetup -f --show img` then
/// `GHOST_BLK_TEST_DEVICE=/dev/loopN cargo test -p ghost-devices block_device -- --ignored`.
#[test]
#[ignore = "needs a scratch block device in GHOST_BLK_TEST_DEVICE"]
fn block_device_backend() {
    let path = std::env::var("GHOST_BLK_TEST_DEVICE").expect("GHOST_BLK_TEST_DEVICE");
    let path = std::path::Path::new(&path);
    let disk = Arc::new(DiskImage::open(path, false).unwrap());
    assert_eq!(disk.kind(), DiskKind::BlockDevice);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if let Ok(sectors) = std::fs::read_to_string(format!("/sys/class/block/{name}/size")) {
        assert_eq!(disk.size(), sectors.trim().parse::<u64>().unwrap() * 512);
    }
    eprintln!("discard: {}", disk.supports_discard());
    // A second writable open is refused (O_EXCL or the lock).
    assert!(matches!(
        DiskImage::open(path, false),
        Err(BlockError::Busy { .. } | BlockError::Locked { .. })
    ));

    let (_, st, _) = one_request(&disk, VIRTIO_BLK_T_OUT, 1, &[(DATA, 4096, false)], |m| {
        m.write_slice(&[0x5a; 4096], GuestAddress(DATA)).unwrap()
    });
    assert_eq!(st, STATUS_OK);
    let (mem, st, _) = one_request(&disk, VIRTIO_BLK_T_IN, 1, &[(DATA, 4096, true)], |_| {});
    assert_eq!(st, STATUS_OK);
    assert_eq!(read_guest(&mem, DATA, 4096), vec![0x5a; 4096]);
    let (_, st, _) = one_request(&disk, VIRTIO_BLK_T_FLUSH, 0, &[], |_| {});
    assert_eq!(st, STATUS_OK);
    let (_, st, _) = one_request(
        &disk,
        VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        &[(DATA, 16, false)],
        |m| discard_range(m, DATA, 1, 8, 0),
    );
    assert_eq!(st, STATUS_OK);
    let (mem, st, _) = one_request(&disk, VIRTIO_BLK_T_IN, 1, &[(DATA, 4096, true)], |_| {});
    assert_eq!(st, STATUS_OK);
    assert_eq!(read_guest(&mem, DATA, 4096), vec![0; 4096]);
    if disk.supports_discard() {
        let (_, st, _) = one_request(&disk, VIRTIO_BLK_T_DISCARD, 0, &[(DATA, 16, false)], |m| {
            discard_range(m, DATA, 0, 64, 0)
        });
        assert_eq!(st, STATUS_OK);
    }
}

#[test]
fn images_on_tmpfs_are_memory_backed() {
    // /dev/shm is tmpfs on every Linux host with glibc's POSIX shared memory.
    let shm = tempfile::Builder::new()
        .tempfile_in("/dev/shm")
        .expect("a file in /dev/shm");
    shm.as_file().set_len(4096).unwrap();
    let image = DiskImage::open(shm.path(), false).unwrap();
    assert!(image.memory_backed());
    // The repository lives on a disk file system.
    let on_disk = tempfile::Builder::new()
        .tempfile_in(env!("CARGO_MANIFEST_DIR"))
        .unwrap();
    on_disk.as_file().set_len(4096).unwrap();
    assert!(!DiskImage::open(on_disk.path(), false)
        .unwrap()
        .memory_backed());
}
