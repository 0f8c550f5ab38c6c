//! Micro-benchmarks of the hot paths every guest I/O crosses, on plain guest memory (no KVM,
//! no guest): a virtio-blk queue pass of 4 KiB reads, and the exit dispatch of the device bus.
//!
//! `cargo bench -p ghost-benches --bench hot_paths` (criterion; reports in target/criterion).

use std::hint::black_box;
use std::io::Write;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ghost_devices::virtio::block::{process_queue, DiskImage, ID_BYTES};
use ghost_devices::{Bus, BusDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const QUEUE: u16 = 64;
const BATCH: u16 = 32;
const DESC_TABLE: u32 = 0x0;
const AVAIL_RING: u32 = 0x1000;
const USED_RING: u32 = 0x2000;
const HEADERS: u64 = 0x4000;
const STATUS: u64 = 0x8000;
const DATA: u64 = 0x10_0000;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

fn descriptor(mem: &GuestMemoryMmap, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = GuestAddress(u64::from(DESC_TABLE) + 16 * u64::from(index));
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&d, at).expect("descriptor");
}

/// `BATCH` three-descriptor read chains (header, 4 KiB data, status), made available each
/// iteration and served by `process_queue` against a page-cached 1 MiB disk file.
fn virtio_blk_reads(c: &mut Criterion) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("memory");
    for chain in 0..BATCH {
        let head = chain * 3;
        let chain = u64::from(chain);
        let header = HEADERS + chain * 16;
        // type IN (0), reserved, sector.
        mem.write_obj(0u32, GuestAddress(header)).expect("type");
        mem.write_obj(chain * 8, GuestAddress(header).unchecked_add(8))
            .expect("sector");
        descriptor(&mem, head, header, 16, DESC_F_NEXT, head + 1);
        descriptor(
            &mem,
            head + 1,
            DATA + chain * 4096,
            4096,
            DESC_F_NEXT | DESC_F_WRITE,
            head + 2,
        );
        descriptor(&mem, head + 2, STATUS + chain, 1, DESC_F_WRITE, 0);
    }
    let mut queue = Queue::new(QUEUE).expect("queue");
    queue.set_size(QUEUE);
    queue.set_desc_table_address(Some(DESC_TABLE), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING), Some(0));
    queue.set_used_ring_address(Some(USED_RING), Some(0));
    queue.set_ready(true);
    assert!(queue.is_valid(&mem));

    let mut file = tempfile::NamedTempFile::new().expect("disk file");
    file.write_all(&vec![0x5a; 1 << 20]).expect("disk contents");
    let disk = DiskImage::open(file.path(), true).expect("disk");
    let id = [b'b'; ID_BYTES];
    let mut avail_idx: u16 = 0;

    let mut group = c.benchmark_group("virtio_blk");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    group.bench_function("queue_pass_32x4k_reads", |b| {
        b.iter(|| {
            for chain in 0..BATCH {
                let slot = u64::from(avail_idx.wrapping_add(chain) % QUEUE);
                mem.write_obj(
                    chain * 3,
                    GuestAddress(u64::from(AVAIL_RING) + 4 + 2 * slot),
                )
                .expect("avail entry");
            }
            avail_idx = avail_idx.wrapping_add(BATCH);
            mem.write_obj(avail_idx, GuestAddress(u64::from(AVAIL_RING) + 2))
                .expect("avail idx");
            let run = process_queue(&mut queue, &mem, &disk, &id, usize::from(BATCH));
            assert_eq!(run.completed, usize::from(BATCH));
            black_box(run);
        })
    });
    group.finish();
}

struct Register(u32);

impl BusDevice for Register {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        let bytes = self.0.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }
    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Some(b) = data.first() {
            self.0 = u32::from(*b);
        }
    }
}

/// A 4-byte read dispatched on a bus of 16 devices: the userspace share of every exit.
fn bus_dispatch(c: &mut Criterion) {
    let bus = Bus::new();
    for i in 0..16u32 {
        bus.insert(
            Arc::new(Mutex::new(Register(i))),
            0x1000 * u64::from(i),
            0x100,
        )
        .expect("insert");
    }
    c.bench_function("bus/read_4_bytes_of_16_devices", |b| {
        let mut data = [0u8; 4];
        b.iter(|| {
            assert!(bus.read(black_box(0x7004), &mut data));
            black_box(data);
        })
    });
}

criterion_group!(benches, virtio_blk_reads, bus_dispatch);
criterion_main!(benches);
