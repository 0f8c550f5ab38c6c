//! Fuzzes the virtio-net data path: the input is a script of device and network events and
//! the guest's memory (descriptor tables, rings and buffers). Whatever the guest puts there,
//! `NetQueues::process_tx`/`process_rx` must not panic, hang, or write outside guest memory.
//!
//! Input layout:
//! - byte 0: negotiated features (bit 0 MRG_RXBUF, bit 1 EVENT_IDX), and bit 2 "plausible
//!   descriptors": the image's descriptor tables get addresses inside RAM and lengths under
//!   8 KiB, so the fuzzer reaches the paths that move frames as easily as those that reject;
//! - byte 1: queue sizes (log2 of the RX size in bits 0-3, of the TX size in bits 4-7);
//! - byte 2: number of script steps;
//! - then the initial guest memory image (from address 0, where both queues' rings are);
//! - the script, two bytes per step, is the input's tail.

#![no_main]

use std::sync::Arc;

use ghost_devices::virtio::net::{features, NetQueues, PacketSocket, RX_QUEUE, TX_QUEUE};
use ghost_devices::virtio::{features as vfeat, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 128 KiB at 0, a hole, 64 KiB at 192 KiB (buffers may straddle or miss it).
const LOW_RAM: usize = 0x2_0000;
const HIGH_RAM: (u64, usize) = (0x3_0000, 0x1_0000);

/// Fixed ring addresses (descriptor table, available ring, used ring) at the start of the
/// memory image, so that short inputs already describe both queues (up to 8 entries each
/// without overlap; larger queues overlap, which a hostile guest may arrange too).
const RX_RING: (u32, u32, u32) = (0x00, 0x80, 0xa0);
const TX_RING: (u32, u32, u32) = (0x100, 0x180, 0x1a0);

#[derive(Debug)]
struct NoInterrupt;

impl VirtioInterrupt for NoInterrupt {
    fn notify_queue(&self, _queue: u16) {}
    fn notify_config(&self) {}
}

fn queue(size_log2: u8, (desc, avail, used): (u32, u32, u32)) -> Option<Queue> {
    let size = 1u16 << (size_log2 % 9); // 1..=256
    let mut q = Queue::new(256).ok()?;
    q.set_size(size);
    q.set_desc_table_address(Some(desc), Some(0));
    q.set_avail_ring_address(Some(avail), Some(0));
    q.set_used_ring_address(Some(used), Some(0));
    q.set_ready(true);
    Some(q)
}

/// Rewrites the descriptor tables in `mem` so that each descriptor points into RAM with a
/// modest length (flags and next indices stay as the fuzzer made them).
fn make_descriptors_plausible(mem: &GuestMemoryMmap, queues: [(&Queue, u32); 2]) {
    for (q, table) in queues {
        for i in 0..u64::from(q.size()) {
            let at = GuestAddress(u64::from(table) + 16 * i);
            let (Ok(addr), Ok(len)) = (
                mem.read_obj::<u64>(at),
                mem.read_obj::<u32>(at.unchecked_add(8)),
            ) else {
                break;
            };
            let _ = mem.write_obj(0x200 + addr % (LOW_RAM as u64 - 0x200), at);
            let _ = mem.write_obj(len % 0x2000, at.unchecked_add(8));
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let (head, rest) = data.split_at(3);
    let steps = usize::from(head[2]).min(rest.len() / 2);
    let (image, script) = rest.split_at(rest.len() - steps * 2);

    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), LOW_RAM),
        (GuestAddress(HIGH_RAM.0), HIGH_RAM.1),
    ])
    .expect("guest memory");
    let n = image.len().min(LOW_RAM);
    mem.write_slice(&image[..n], GuestAddress(0))
        .expect("image");
    // Bytes of the image past what the initial memory took feed the script's frames.
    let mut payload = image[n..].iter().copied().cycle();

    let mut acked = vfeat::VERSION_1 | features::OFFLOADS;
    if head[0] & 1 != 0 {
        acked |= features::MRG_RXBUF;
    }
    if head[0] & 2 != 0 {
        acked |= vfeat::RING_EVENT_IDX;
    }
    let rx = queue(head[1] & 0xf, RX_RING);
    let tx = queue(head[1] >> 4, TX_RING);
    let (Some(rx), Some(tx)) = (rx, tx) else {
        return;
    };
    if head[0] & 4 != 0 {
        make_descriptors_plausible(&mem, [(&rx, RX_RING.0), (&tx, TX_RING.0)]);
    }
    let (dev, peer) = PacketSocket::pair().expect("socketpair");
    let mut net = NetQueues::new(
        mem.clone(),
        (RX_QUEUE, rx),
        (TX_QUEUE, tx),
        Arc::new(dev),
        Arc::new(NoInterrupt),
        acked,
    );

    let mut buf = vec![0u8; 128 * 1024];
    for step in script.chunks_exact(2) {
        let (op, arg) = (step[0], step[1]);
        match op % 5 {
            0 => {
                net.process_tx();
            }
            1 => {
                net.process_rx();
            }
            2 => {
                // The network sends a frame of up to ~76 KiB (beyond the largest legal one).
                let len = usize::from(arg) * 300 + usize::from(op >> 3);
                let frame: Vec<u8> = (0..len).map(|_| payload.next().unwrap_or(0)).collect();
                let _ = peer.send(&frame);
            }
            3 => while peer.recv(&mut buf).is_ok() {},
            _ => {
                // The guest rewrites 8 bytes of its rings between two device runs.
                let addr = (u64::from(op >> 3) << 8 | u64::from(arg)) * 2 % 0x400;
                let bytes: Vec<u8> = (0..8).map(|_| payload.next().unwrap_or(0xff)).collect();
                let _ = mem.write_slice(&bytes, GuestAddress(addr));
            }
        }
    }
    net.process_tx();
    net.process_rx();
}
