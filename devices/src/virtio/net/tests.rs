//! Tests of the virtio-net device and its data path on `GuestMemoryMmap` + `MockSplitQueue`,
//! with a `PacketSocket` pair standing in for the TAP.

// Frame and buffer sizes here are small constants; casting them is clearer than converting.
#![allow(clippy::cast_possible_truncation)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::NetHandler;
use super::*;
use crate::virtio::{features as vfeat, ActivatedQueue, VirtioInterrupt};

const MEM_SIZE: usize = 4 << 20;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x8000;
/// Guest buffers live from here on.
const BUF_BASE: u64 = 0x10_0000;

#[derive(Debug, Default)]
struct TestIrq {
    queues: Mutex<Vec<u16>>,
}

impl TestIrq {
    fn take(&self) -> Vec<u16> {
        std::mem::take(&mut *self.queues.lock().unwrap())
    }
}

impl VirtioInterrupt for TestIrq {
    fn notify_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
    }
    fn notify_config(&self) {}
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A driver-side queue: adds chains, reads the used ring.
struct Ring<'a> {
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    mem: &'a GuestMemoryMmap,
    next_desc: u16,
}

impl<'a> Ring<'a> {
    fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        Ring {
            vq: MockSplitQueue::create(mem, GuestAddress(base), QUEUE_SIZE),
            mem,
            next_desc: 0,
        }
    }

    fn queue(&self) -> Queue {
        self.vq.create_queue().unwrap()
    }

    /// Adds one chain of `(guest address, length, device-writable)` descriptors.
    fn add(&mut self, descs: &[(u64, u32, bool)]) {
        let first = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let i = u16::try_from(i).unwrap();
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                if usize::from(i) + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, first + i + 1))
            })
            .collect();
        self.vq.add_desc_chains(&raw, first).unwrap();
        self.next_desc += u16::try_from(descs.len()).unwrap();
    }

    /// `(head, len)` of every used entry so far.
    fn used(&self) -> Vec<(u32, u32)> {
        let n = self.vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = self.vq.used().ring().ref_at(usize::from(i)).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    /// Sets `used_event` (the driver's "interrupt me after this entry", with EVENT_IDX).
    fn set_used_event(&self, value: u16) {
        let addr = self.vq.avail_addr().0 + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem.write_obj(value, GuestAddress(addr)).unwrap();
    }
}

struct Setup<'a> {
    mem: &'a GuestMemoryMmap,
    rx: Ring<'a>,
    tx: Ring<'a>,
    peer: PacketSocket,
    irq: Arc<TestIrq>,
    backend: Arc<PacketSocket>,
}

impl<'a> Setup<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        let (dev, peer) = PacketSocket::pair().unwrap();
        Setup {
            mem,
            rx: Ring::new(mem, RX_RING),
            tx: Ring::new(mem, TX_RING),
            peer,
            irq: Arc::new(TestIrq::default()),
            backend: Arc::new(dev),
        }
    }

    fn queues(&self, features: u64) -> NetQueues {
        NetQueues::new(
            self.mem.clone(),
            (RX_QUEUE, self.rx.queue()),
            (TX_QUEUE, self.tx.queue()),
            self.backend.clone(),
            self.irq.clone(),
            features,
        )
    }

    fn peer_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 128 * 1024];
        match self.peer.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A frame as a backend carries it: a header (with some GSO fields set) then `len` bytes.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; NET_HDR_LEN];
    f[0] = 1; // NEEDS_CSUM
    f[2] = 54; // hdr_len
    (0..len).for_each(|i| f.push(seed.wrapping_add((i % 251) as u8)));
    f
}

fn read_guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

const NO_FEATURES: u64 = 0;
const MRG: u64 = features::MRG_RXBUF;

#[test]
fn tx_frame_reaches_the_peer_byte_for_byte() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let f = frame(100, 7);
    mem.write_slice(&f, GuestAddress(BUF_BASE)).unwrap();
    s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
    let mut q = s.queues(NO_FEATURES);

    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.peer_recv().unwrap(), f);
    assert_eq!(s.peer_recv(), None);
    assert_eq!(s.tx.used(), vec![(0, 0)]);
    assert_eq!(s.irq.take(), vec![TX_QUEUE]);
    assert_eq!(q.stats().tx_frames, 1);
}

#[test]
fn tx_frame_spanning_several_descriptors() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let f = frame(3000, 3);
    // Header alone, then the payload in three uneven, scattered pieces.
    let pieces = [
        (0usize, NET_HDR_LEN),
        (NET_HDR_LEN, 1000),
        (NET_HDR_LEN + 1000, 1),
        (NET_HDR_LEN + 1001, 1999),
    ];
    let descs: Vec<(u64, u32, bool)> = pieces
        .iter()
        .enumerate()
        .map(|(i, &(start, len))| {
            let addr = BUF_BASE + 0x1_0000 * i as u64;
            mem.write_slice(&f[start..start + len], GuestAddress(addr))
                .unwrap();
            (addr, len as u32, false)
        })
        .collect();
    s.tx.add(&descs);
    let mut q = s.queues(NO_FEATURES);

    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.peer_recv().unwrap(), f);
    assert_eq!(s.tx.used(), vec![(0, 0)]);
}

#[test]
fn rx_frame_lands_in_guest_buffers_with_num_buffers() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    mem.write_slice(&[0xAA; 4096], GuestAddress(BUF_BASE))
        .unwrap();
    s.rx.add(&[(BUF_BASE, 2048, true)]);
    let f = frame(200, 9);
    s.peer.send(&f).unwrap();
    let mut q = s.queues(NO_FEATURES);

    // Every buffer is used: the device now waits for more.
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert_eq!(s.rx.used(), vec![(0, f.len() as u32)]);
    let mut expect = f.clone();
    expect[10..12].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(read_guest(&mem, BUF_BASE, f.len()), expect);
    assert_eq!(s.irq.take(), vec![RX_QUEUE]);
    assert_eq!(q.stats().rx_frames, 1);
}

#[test]
fn rx_header_split_over_descriptors() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    // A 4-byte descriptor, then the rest: num_buffers lands in the second one.
    s.rx.add(&[(BUF_BASE, 4, true), (BUF_BASE + 0x1000, 2000, true)]);
    let f = frame(64, 1);
    s.peer.send(&f).unwrap();
    let mut q = s.queues(NO_FEATURES);

    // Every buffer is used: the device now waits for more.
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert_eq!(s.rx.used(), vec![(0, f.len() as u32)]);
    let mut got = read_guest(&mem, BUF_BASE, 4);
    got.extend(read_guest(&mem, BUF_BASE + 0x1000, f.len() - 4));
    let mut expect = f;
    expect[10..12].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(got, expect);
}

#[test]
fn large_rx_frame_spreads_over_mergeable_buffers() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    const BUF: u32 = 2048;
    let nbufs = 40u16;
    let mut heads = Vec::new();
    for i in 0..nbufs {
        heads.push(s.rx.next_desc);
        s.rx.add(&[(BUF_BASE + u64::from(i) * 0x1000, BUF, true)]);
    }
    let big = frame(60_000, 5);
    let small = frame(60, 6);
    s.peer.send(&big).unwrap();
    s.peer.send(&small).unwrap();
    let mut q = s.queues(MRG);

    assert_eq!(q.process_rx(), RxOutcome::BackendEmpty);
    let used = s.rx.used();
    let chains = big.len().div_ceil(BUF as usize);
    assert_eq!(used.len(), chains + 1);
    // The big frame: consecutive buffers, full but the last; num_buffers in the first.
    let mut got = Vec::new();
    for (i, &(head, len)) in used[..chains].iter().enumerate() {
        assert_eq!(head, u32::from(heads[i]));
        let expect_len = if i + 1 < chains {
            BUF as usize
        } else {
            big.len() - (chains - 1) * BUF as usize
        };
        assert_eq!(len as usize, expect_len);
        got.extend(read_guest(&mem, BUF_BASE + i as u64 * 0x1000, len as usize));
    }
    let mut expect = big.clone();
    expect[10..12].copy_from_slice(&(chains as u16).to_le_bytes());
    assert_eq!(got, expect);
    // The small frame takes the next buffer, alone.
    assert_eq!(used[chains], (u32::from(heads[chains]), small.len() as u32));
    let got = read_guest(&mem, BUF_BASE + chains as u64 * 0x1000, small.len());
    assert_eq!(&got[10..12], &1u16.to_le_bytes());
    assert_eq!(&got[12..], &small[12..]);
    // One interrupt for the batch.
    assert_eq!(s.irq.take(), vec![RX_QUEUE]);
}

#[test]
fn rx_without_buffers_keeps_the_frame_until_buffers_come() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let f = frame(500, 2);
    s.peer.send(&f).unwrap();
    let mut q = s.queues(MRG | vfeat::RING_EVENT_IDX);

    let start = Instant::now();
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(s.rx.used().is_empty());
    assert!(s.irq.take().is_empty());

    s.rx.add(&[(BUF_BASE, 4096, true)]);
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert_eq!(s.rx.used(), vec![(0, f.len() as u32)]);
    assert_eq!(&read_guest(&mem, BUF_BASE + 12, 500)[..], &f[12..]);
}

#[test]
fn handler_stops_watching_the_backend_without_rx_buffers() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let queues = s.queues(MRG);
    let rx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let tx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let rx_kick_driver = rx_kick.try_clone().unwrap();
    let handler = NetHandler::new(queues, rx_kick, tx_kick, s.backend.clone());
    let mut events = EventManager::<NetHandler>::new().unwrap();
    events.add_subscriber(handler);

    // The initial self-kicks find no buffers and nothing to send.
    while events.run_with_timeout(0).unwrap() > 0 {}
    // A frame arrives; with no buffers the loop must sleep, not spin on the readable socket.
    let f = frame(100, 4);
    s.peer.send(&f).unwrap();
    assert_eq!(events.run_with_timeout(50).unwrap(), 0);
    assert_eq!(events.run_with_timeout(50).unwrap(), 0);
    assert!(s.rx.used().is_empty());

    // The driver posts a buffer and kicks: the frame is delivered.
    s.rx.add(&[(BUF_BASE, 4096, true)]);
    rx_kick_driver.write(1).unwrap();
    assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
    assert_eq!(s.rx.used(), vec![(0, f.len() as u32)]);
    assert_eq!(s.irq.take(), vec![RX_QUEUE]);
    // Nothing more to read: the loop sleeps.
    assert_eq!(events.run_with_timeout(50).unwrap(), 0);
}

#[test]
fn tx_waits_when_the_backend_is_full() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    // Fill the socket until it refuses.
    let filler = vec![0u8; 32 * 1024];
    let mut sent = 0;
    while s.backend.send(&filler).is_ok() {
        sent += 1;
        assert!(sent < 10_000);
    }
    let f = frame(100, 8);
    mem.write_slice(&f, GuestAddress(BUF_BASE)).unwrap();
    s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
    let mut q = s.queues(NO_FEATURES);

    assert_eq!(q.process_tx(), TxOutcome::BackendFull);
    assert!(s.tx.used().is_empty());
    // Drain the peer; the frame goes out on the next call.
    for _ in 0..sent {
        assert_eq!(s.peer_recv().unwrap().len(), filler.len());
    }
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.peer_recv().unwrap(), f);
    assert_eq!(s.tx.used(), vec![(0, 0)]);
}

#[test]
fn malformed_tx_chains_are_completed_and_dropped() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let f = frame(100, 1);
    mem.write_slice(&f, GuestAddress(BUF_BASE)).unwrap();
    // Outside guest memory.
    s.tx.add(&[(MEM_SIZE as u64 + 0x1000, 200, false)]);
    // Straddling the end of guest memory.
    s.tx.add(&[(MEM_SIZE as u64 - 10, 200, false)]);
    // A device-writable descriptor.
    s.tx.add(&[(BUF_BASE, 12, false), (BUF_BASE + 0x1000, 100, true)]);
    // Longer than the largest frame.
    s.tx.add(&[(BUF_BASE, (NET_HDR_LEN + MAX_FRAME_LEN + 1) as u32, false)]);
    // Zero-length, and shorter than the header.
    s.tx.add(&[(BUF_BASE, 0, false)]);
    s.tx.add(&[(BUF_BASE, 11, false)]);
    // Address overflow.
    s.tx.add(&[(u64::MAX - 4, 100, false)]);
    // Then a good one.
    s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
    let mut q = s.queues(NO_FEATURES);

    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.peer_recv().unwrap(), f);
    assert_eq!(s.peer_recv(), None);
    let used = s.tx.used();
    assert_eq!(used.len(), 8);
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(q.stats().tx_dropped, 7);
    assert_eq!(q.stats().tx_frames, 1);
}

#[test]
fn malformed_rx_chains_are_completed_and_skipped() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    s.rx.add(&[(MEM_SIZE as u64 + 0x1000, 2048, true)]); // outside memory
    s.rx.add(&[(BUF_BASE, 2048, false)]); // device-readable
    s.rx.add(&[(BUF_BASE, 11, true)]); // smaller than the header
    s.rx.add(&[(BUF_BASE, 0, true)]); // empty
    s.rx.add(&[(BUF_BASE + 0x1000, 2048, true)]); // good
    let f = frame(300, 3);
    s.peer.send(&f).unwrap();
    let mut q = s.queues(NO_FEATURES);

    // Every buffer is used: the device now waits for more.
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert_eq!(
        s.rx.used(),
        vec![(0, 0), (1, 0), (2, 0), (3, 0), (4, f.len() as u32)]
    );
    assert_eq!(q.stats().rx_bad_buffers, 4);
    assert_eq!(&read_guest(&mem, BUF_BASE + 0x1000 + 12, 300)[..], &f[12..]);
}

#[test]
fn rx_frame_larger_than_the_buffer_is_not_a_panic() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    s.rx.add(&[(BUF_BASE, 100, true)]);
    s.peer.send(&frame(1000, 3)).unwrap();
    let mut q = s.queues(NO_FEATURES);
    // A socket truncates (a TAP would fail with EFAULT and the frame would be dropped).
    // Every buffer is used: the device now waits for more.
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    assert_eq!(s.rx.used(), vec![(0, 100)]);
}

#[test]
fn corrupt_rings_do_not_hang() {
    let mem = memory();
    let s = Setup::new(&mem);
    // The avail index runs ahead of the ring by more than its size.
    s.tx.vq.avail().idx().store(1000);
    s.rx.vq.avail().idx().store(1000);
    let mut q = s.queues(MRG | vfeat::RING_EVENT_IDX);
    s.peer.send(&frame(10, 0)).unwrap();
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);

    // A descriptor chain that loops on itself, and a head past the table.
    let mem = memory();
    let s = Setup::new(&mem);
    let raw = RawDescriptor::from(SplitDescriptor::new(
        BUF_BASE,
        64,
        VRING_DESC_F_NEXT as u16,
        0,
    ));
    s.tx.vq.add_desc_chains(&[raw], 0).unwrap();
    s.tx.vq.avail().ring().ref_at(0).unwrap().store(0);
    let raw = RawDescriptor::from(SplitDescriptor::new(
        BUF_BASE,
        64,
        (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
        0,
    ));
    s.rx.vq.add_desc_chains(&[raw], 0).unwrap();
    s.rx.vq
        .avail()
        .ring()
        .ref_at(1)
        .unwrap()
        .store(QUEUE_SIZE + 5);
    s.rx.vq.avail().idx().store(2);
    let mut q = s.queues(MRG);
    s.peer.send(&frame(10, 0)).unwrap();
    assert_eq!(q.process_tx(), TxOutcome::Done);
    // The loop is cut at the queue size: 256 × 64 bytes, sent as one frame.
    assert_eq!(s.peer_recv().unwrap().len(), 256 * 64);
    assert_eq!(q.process_rx(), RxOutcome::NoBuffers);
    // The looping chain took the frame; the bogus head could not be returned.
    assert_eq!(s.rx.used(), vec![(0, (NET_HDR_LEN + 10) as u32)]);
    assert_eq!(q.stats().rx_frames, 1);
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mem = memory();
    let mut s = Setup::new(&mem);
    let f = frame(50, 1);
    mem.write_slice(&f, GuestAddress(BUF_BASE)).unwrap();
    s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
    s.tx.set_used_event(5); // interrupt me once entry 5 is used
    let mut q = s.queues(vfeat::RING_EVENT_IDX);
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.tx.used().len(), 1);
    assert!(s.irq.take().is_empty());

    s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
    s.tx.set_used_event(1); // interrupt me once entry 1 is used
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(s.irq.take(), vec![TX_QUEUE]);
}

#[test]
fn config_space_has_mac_status_and_one_queue_pair() {
    let (dev, _peer) = PacketSocket::pair().unwrap();
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let net = Net::new(Box::new(dev), mac);
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    assert_eq!(net.mac(), mac);
    let mut cfg = [0xFFu8; 16];
    net.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &mac);
    assert_eq!(&cfg[6..8], &[1, 0]); // VIRTIO_NET_S_LINK_UP
    assert_eq!(&cfg[8..10], &[1, 0]); // max_virtqueue_pairs
    assert_eq!(&cfg[10..], &[0; 6]);
    let mut status = [0u8; 2];
    net.read_config(6, &mut status);
    assert_eq!(status, [1, 0]);
    let mut far = [0xFFu8; 4];
    net.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
    let mut net = net;
    net.write_config(0, &[0; 6]);
    assert_eq!(net.mac(), mac);
}

#[test]
fn features_and_offload_mapping() {
    let (dev, _peer) = PacketSocket::pair().unwrap();
    let net = Net::new(Box::new(dev), [0; 6]);
    let f = net.features();
    for bit in [
        vfeat::VERSION_1,
        vfeat::RING_EVENT_IDX,
        features::MAC,
        features::STATUS,
        features::MRG_RXBUF,
        features::CSUM,
        features::GUEST_CSUM,
        features::GUEST_TSO4,
        features::GUEST_TSO6,
        features::GUEST_ECN,
        features::GUEST_UFO,
        features::HOST_TSO4,
        features::HOST_TSO6,
        features::HOST_ECN,
        features::HOST_UFO,
    ] {
        assert_ne!(f & bit, 0, "{bit:#x}");
    }
    assert_eq!(f & vfeat::ACCESS_PLATFORM, 0);
    let plain = net.with_offloads(false).features();
    assert_eq!(plain & features::OFFLOADS, 0);
    assert_ne!(plain & features::MRG_RXBUF, 0);

    assert_eq!(offload_flags(0), 0);
    assert_eq!(
        offload_flags(features::GUEST_TSO4),
        0,
        "TSO without checksum offload"
    );
    assert_eq!(offload_flags(features::GUEST_CSUM), libc::TUN_F_CSUM);
    assert_eq!(
        offload_flags(features::OFFLOADS),
        libc::TUN_F_CSUM
            | libc::TUN_F_TSO4
            | libc::TUN_F_TSO6
            | libc::TUN_F_TSO_ECN
            | libc::TUN_F_UFO
    );
}

/// Activates `net` on fresh rings; returns the driver's kick eventfds.
fn activate(net: &mut Net, s: &Setup<'_>, features: u64) -> (EventFd, EventFd) {
    let rx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let tx_kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let ctx = ActivateContext {
        mem: s.mem.clone(),
        interrupt: s.irq.clone(),
        queues: vec![
            ActivatedQueue {
                index: RX_QUEUE,
                queue: s.rx.queue(),
                notifier: rx_kick.try_clone().unwrap(),
            },
            ActivatedQueue {
                index: TX_QUEUE,
                queue: s.tx.queue(),
                notifier: tx_kick.try_clone().unwrap(),
            },
        ],
        acked_features: features,
    };
    net.activate(ctx).unwrap();
    (rx_kick, tx_kick)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn activated_device_moves_frames_on_its_worker_and_survives_reset() {
    for round in 0..2u8 {
        let mem = memory();
        let mut s = Setup::new(&mem);
        let (dev, peer) = PacketSocket::pair().unwrap();
        s.peer = peer;
        let mut net = Net::new(Box::new(dev), [2, 0, 0, 0, 0, round]);
        for activation in 0..2u8 {
            if activation == 1 {
                // A fresh driver after reset: fresh rings.
                s.rx = Ring::new(&mem, RX_RING);
                s.tx = Ring::new(&mem, TX_RING);
            }
            let acked = net.features();
            let (rx_kick, tx_kick) = activate(&mut net, &s, acked);

            let f = frame(1400, round + activation);
            mem.write_slice(&f, GuestAddress(BUF_BASE)).unwrap();
            s.tx.add(&[(BUF_BASE, f.len() as u32, false)]);
            tx_kick.write(1).unwrap();
            let mut got = None;
            wait_for("the TX frame", || {
                got = s.peer_recv();
                got.is_some()
            });
            assert_eq!(got.unwrap(), f);

            let g = frame(900, 100 + activation);
            s.peer.send(&g).unwrap();
            s.rx.add(&[(BUF_BASE + 0x10000, 4096, true)]);
            rx_kick.write(1).unwrap();
            wait_for("the RX frame", || s.rx.used().len() == 1);
            assert_eq!(s.rx.used(), vec![(0, g.len() as u32)]);
            assert_eq!(
                &read_guest(&mem, BUF_BASE + 0x10000 + 12, 900)[..],
                &g[12..]
            );
            net.reset();
        }
    }
}

#[test]
fn activation_needs_both_queues() {
    let mem = memory();
    let s = Setup::new(&mem);
    let (dev, _peer) = PacketSocket::pair().unwrap();
    let mut net = Net::new(Box::new(dev), [2, 0, 0, 0, 0, 1]);
    let ctx = ActivateContext {
        mem: mem.clone(),
        interrupt: s.irq.clone(),
        queues: vec![ActivatedQueue {
            index: RX_QUEUE,
            queue: s.rx.queue(),
            notifier: EventFd::new(EFD_NONBLOCK).unwrap(),
        }],
        acked_features: net.features(),
    };
    let err = net.activate(ctx).unwrap_err();
    assert!(
        matches!(err, ActivateError::Queues { got: 1, need: 2 }),
        "{err}"
    );
}

/// Frames cross a real TAP both ways, with the 12-byte header in front: the guest's TX frame
/// shows up on the host interface, and a frame the host sends on it reaches guest buffers.
#[test]
fn frames_cross_a_real_tap() {
    // SAFETY: geteuid has no preconditions.
    if !std::path::Path::new("/dev/net/tun").exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and /dev/net/tun");
        return;
    }
    const ETHERTYPE: u16 = 0x88B5; // IEEE local experimental: nothing else sends it
    let name = format!("gvrt{}", std::process::id() % 100_000);
    let tap = Arc::new(Tap::open(&name).unwrap());
    let ifindex = {
        let cname = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: `cname` is a valid NUL-terminated string.
        i32::try_from(unsafe { libc::if_nametoindex(cname.as_ptr()) }).unwrap()
    };
    assert!(ifindex > 0);

    // A raw packet socket on the interface plays the host side.
    // SAFETY: plain socket(2); checked below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    assert!(raw >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor we own.
    let raw = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: all-zeroes is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    let sll_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    use std::os::fd::AsRawFd;
    // SAFETY: `sll` is a valid sockaddr_ll of the given length.
    let ret = unsafe {
        libc::bind(
            raw.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            sll_len,
        )
    };
    assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());

    let mem = memory();
    let mut s = Setup::new(&mem);
    let acked = vfeat::VERSION_1 | features::MRG_RXBUF | features::OFFLOADS;
    tap.set_offloads(acked).unwrap();
    let mut q = NetQueues::new(
        mem.clone(),
        (RX_QUEUE, s.rx.queue()),
        (TX_QUEUE, s.tx.queue()),
        tap.clone(),
        s.irq.clone(),
        acked,
    );
    let ethernet = |seed: u8| {
        let mut f = vec![0xff; 6]; // broadcast
        f.extend([0x02, 0, 0, 0, 0, seed]);
        f.extend(ETHERTYPE.to_be_bytes());
        f.extend((0..200).map(|i: u8| i.wrapping_add(seed)));
        f
    };

    // Guest → host.
    let out = ethernet(1);
    let mut tx = vec![0u8; NET_HDR_LEN];
    tx.extend(&out);
    mem.write_slice(&tx, GuestAddress(BUF_BASE)).unwrap();
    s.tx.add(&[(BUF_BASE, tx.len() as u32, false)]);
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(q.stats().tx_frames, 1);
    let mut buf = vec![0u8; 4096];
    wait_for("the frame on the host side", || {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(raw.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        n > 0 && buf[..n as usize] == out[..]
    });

    // A TCP segmentation offload frame (what a guest sends with HOST_TSO4 and CSUM): the
    // kernel accepts the header as the guest wrote it. One with a checksum offset past the
    // frame is refused, and dropped without harm.
    let tso = |csum_start: u16| {
        let payload = 8000usize;
        let mut f = vec![0u8; NET_HDR_LEN];
        f[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        f[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        f[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
        f[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
        f[6..8].copy_from_slice(&csum_start.to_le_bytes());
        f[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset (TCP checksum)
        f.extend([0x02, 0, 0, 0, 0, 9, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend(((20 + 20 + payload) as u16).to_be_bytes());
        ip.extend([0, 0, 0x40, 0, 64, 6, 0, 0, 10, 99, 0, 2, 10, 99, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend(ip);
        f.extend([
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.extend((0..payload).map(|i| i as u8));
        f
    };
    let good = tso(34);
    mem.write_slice(&good, GuestAddress(BUF_BASE)).unwrap();
    s.tx.add(&[(BUF_BASE, good.len() as u32, false)]);
    let bad = tso(60_000);
    mem.write_slice(&bad, GuestAddress(BUF_BASE + 0x4000))
        .unwrap();
    s.tx.add(&[(BUF_BASE + 0x4000, bad.len() as u32, false)]);
    assert_eq!(q.process_tx(), TxOutcome::Done);
    assert_eq!(q.stats().tx_frames, 2, "{:?}", q.stats());
    assert_eq!(q.stats().tx_dropped, 1, "{:?}", q.stats());
    assert_eq!(s.tx.used().len(), 3);

    // Host → guest. Other traffic (IPv6 autoconfiguration) may come first: post many buffers.
    for i in 0..32u64 {
        s.rx.add(&[(BUF_BASE + 0x1_0000 + i * 0x1000, 4096, true)]);
    }
    let back = ethernet(2);
    // SAFETY: `back` and `sll` are valid for the call.
    let n = unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            back.as_ptr().cast(),
            back.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            sll_len,
        )
    };
    assert_eq!(
        n,
        back.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    wait_for("the frame in guest buffers", || {
        q.process_rx();
        s.rx.used().iter().any(|&(head, len)| {
            let addr = BUF_BASE + 0x1_0000 + u64::from(head) * 0x1000;
            let got = read_guest(&mem, addr, len as usize);
            got.len() == NET_HDR_LEN + back.len()
                && got[NET_HDR_LEN..] == back[..]
                && got[10..12] == 1u16.to_le_bytes()
        })
    });

    // Host → guest, segmentation offloaded: a packet socket with PACKET_VNET_HDR sends an
    // 8 KB TCP super-frame; the TAP (told the guest takes TSO) hands it over whole, and it
    // spreads over mergeable buffers with the GSO header intact.
    const PACKET_VNET_HDR: libc::c_int = 15;
    // SAFETY: plain socket(2); checked below.
    let gso_sock = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(gso_sock >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `gso_sock` is a fresh descriptor we own.
    let gso_sock =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(gso_sock) };
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int valid for the call.
    let ret = unsafe {
        libc::setsockopt(
            gso_sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());
    let mut super_frame = good.clone();
    super_frame.drain(10..12); // PACKET_VNET_HDR takes the 10-byte header
    let used_before = s.rx.used().len();
    // SAFETY: `super_frame` and `sll` are valid for the call.
    let n = unsafe {
        libc::sendto(
            gso_sock.as_raw_fd(),
            super_frame.as_ptr().cast(),
            super_frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            sll_len,
        )
    };
    assert_eq!(
        n,
        super_frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    let mut found = false;
    wait_for("the super-frame in guest buffers", || {
        q.process_rx();
        let used = s.rx.used();
        let mut i = used_before;
        while i < used.len() {
            let read = |(head, len): (u32, u32)| {
                read_guest(
                    &mem,
                    BUF_BASE + 0x1_0000 + u64::from(head) * 0x1000,
                    len as usize,
                )
            };
            let first = read(used[i]);
            let nbuf = usize::from(u16::from_le_bytes([first[10], first[11]]));
            if i + nbuf > used.len() {
                break;
            }
            let mut got = first;
            for &u in &used[i + 1..i + nbuf] {
                got.extend(read(u));
            }
            if got.len() == good.len() && got[NET_HDR_LEN..] == good[NET_HDR_LEN..] {
                assert!(nbuf >= 2, "{nbuf}");
                assert_eq!(got[1], 1, "gso_type TCPV4");
                assert_eq!(&got[4..6], &1448u16.to_le_bytes(), "gso_size");
                found = true;
            }
            i += nbuf.max(1);
        }
        found
    });
    drop(q);
    drop(tap);
    assert!(!std::path::Path::new("/sys/class/net").join(&name).exists());
}
