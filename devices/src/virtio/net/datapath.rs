//! The virtio-net data path, synchronous and thread-free: [`NetQueues`] moves frames between
//! the guest's queues and a [`NetBackend`] when asked to. The worker ([`super::handler`])
//! calls it on events; unit tests and the fuzz target call it directly.
//!
//! Every descriptor is guest-controlled. A chain that is malformed (a descriptor outside guest
//! memory, a device-writable descriptor in a TX chain or a device-readable one in an RX chain,
//! a frame shorter than the header or longer than [`MAX_FRAME_LEN`], too many segments) is
//! completed with length 0 and counted; nothing panics, and every loop is bounded.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::backend::{NetBackend, MAX_IOVECS};
use super::{features, NET_HDR_LEN};
use crate::virtio::VirtioInterrupt;

/// Largest frame (after the virtio-net header) either direction carries: a 64 KiB GSO
/// super-frame plus an Ethernet header with a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_536 + 18;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Frames (or loop turns) one [`NetQueues::process_rx`] call handles before yielding, so a
/// flood from the backend cannot starve the TX queue.
const RX_BUDGET: usize = 64;

/// Chains one [`NetQueues::process_tx`] call handles before yielding.
const TX_BUDGET: usize = 256;

/// Why [`NetQueues::process_rx`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// The backend has no more frames: wait for it to become readable.
    BackendEmpty,
    /// The guest posted no receive buffers: stop watching the backend until it kicks the RX
    /// queue (notifications are enabled, so it will).
    NoBuffers,
    /// The budget ran out with work left: call again after serving other events.
    Budget,
    /// Reading the backend failed for good (not `EAGAIN`): stop watching it.
    BackendError,
}

/// Why [`NetQueues::process_tx`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// The TX queue is empty (notifications are enabled again).
    Done,
    /// The backend cannot take a frame now (`EAGAIN`); the frame stays in the queue. Call
    /// again when the backend is writable.
    BackendFull,
    /// The budget ran out with chains left: call again after serving other events.
    Budget,
}

/// Frame counters, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest sent that reached the backend.
    pub tx_frames: u64,
    /// TX chains completed without sending (malformed, or refused by the backend).
    pub tx_dropped: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames read from the backend and lost (larger than the guest's buffers, runts).
    pub rx_dropped: u64,
    /// RX chains completed unused because they were malformed.
    pub rx_bad_buffers: u64,
}

/// A receive chain taken from the RX queue but not yet used: its head and its writable
/// segments, already checked to lie in guest memory.
#[derive(Debug)]
struct RxChain {
    head: u16,
    segments: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

/// Counts an event and says whether to log it: on the 1st, 2nd, 4th, 8th... occurrence, so a
/// misbehaving guest cannot flood the log.
#[derive(Debug, Default)]
struct LogLimit(u64);

impl LogLimit {
    fn hit(&mut self) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0.is_power_of_two()
    }
}

/// What one attempt to receive a frame did.
enum RxStep {
    /// A frame went to the guest, or was lost; either way there may be more.
    Progress,
    NoBuffers,
    Empty,
    Broken,
}

/// What one attempt to send a chain did.
enum TxStep {
    Completed,
    Full,
    Empty,
}

/// The two queues of an active virtio-net device and its backend.
pub struct NetQueues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    rx_index: u16,
    tx_index: u16,
    backend: Arc<dyn NetBackend>,
    interrupt: Arc<dyn VirtioInterrupt>,
    mrg_rxbuf: bool,
    /// RX chains popped ahead of a read (with `MRG_RXBUF`, enough for the largest frame).
    rx_reserve: VecDeque<RxChain>,
    rx_reserve_capacity: usize,
    rx_used: bool,
    tx_used: bool,
    stats: NetStats,
    bad_chain_log: LogLimit,
    backend_log: LogLimit,
}

impl std::fmt::Debug for NetQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetQueues")
            .field("backend", &self.backend)
            .field("mrg_rxbuf", &self.mrg_rxbuf)
            .field("rx_reserve", &self.rx_reserve.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl NetQueues {
    /// The data path of a device activated with `acked_features`: RX queue `rx` (index
    /// `rx_index`) and TX queue `tx` (index `tx_index`). Enables `EVENT_IDX` handling on both
    /// queues if it was negotiated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mem: GuestMemoryMmap,
        (rx_index, mut rx): (u16, Queue),
        (tx_index, mut tx): (u16, Queue),
        backend: Arc<dyn NetBackend>,
        interrupt: Arc<dyn VirtioInterrupt>,
        acked_features: u64,
    ) -> Self {
        let event_idx = acked_features & crate::virtio::features::RING_EVENT_IDX != 0;
        rx.set_event_idx(event_idx);
        tx.set_event_idx(event_idx);
        NetQueues {
            mem,
            rx,
            tx,
            rx_index,
            tx_index,
            backend,
            interrupt,
            mrg_rxbuf: acked_features & features::MRG_RXBUF != 0,
            rx_reserve: VecDeque::new(),
            rx_reserve_capacity: 0,
            rx_used: false,
            tx_used: false,
            stats: NetStats::default(),
            bad_chain_log: LogLimit::default(),
            backend_log: LogLimit::default(),
        }
    }

    /// Counters since activation.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sends what the guest queued on the TX queue to the backend, then signals the driver
    /// (respecting notification suppression).
    pub fn process_tx(&mut self) -> TxOutcome {
        let mut budget = TX_BUDGET;
        let mut rechecking = false;
        let outcome = 'outer: loop {
            // Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY; with it, it is a no-op.
            let _ = self.tx.disable_notification(&self.mem);
            let mut completed = 0usize;
            loop {
                if budget == 0 {
                    break 'outer TxOutcome::Budget;
                }
                budget -= 1;
                match self.tx_one() {
                    TxStep::Completed => completed += 1,
                    TxStep::Full => break 'outer TxOutcome::BackendFull,
                    TxStep::Empty => break,
                }
            }
            // Re-enabling tells us whether chains came in meanwhile. If it says so twice
            // without a chain we could take, the ring is corrupt: wait for the next kick.
            if rechecking && completed == 0 {
                break TxOutcome::Done;
            }
            match self.tx.enable_notification(&self.mem) {
                Ok(true) => rechecking = true,
                Ok(false) | Err(_) => break TxOutcome::Done,
            }
        };
        if std::mem::take(&mut self.tx_used) {
            self.signal(false);
        }
        outcome
    }

    /// Moves frames from the backend into the guest's RX buffers until one of them runs out,
    /// then signals the driver (respecting notification suppression).
    pub fn process_rx(&mut self) -> RxOutcome {
        let mut rechecking = false;
        let mut outcome = RxOutcome::Budget;
        for _ in 0..RX_BUDGET {
            match self.rx_one() {
                RxStep::Progress => rechecking = false,
                RxStep::Empty => {
                    outcome = RxOutcome::BackendEmpty;
                    break;
                }
                RxStep::Broken => {
                    outcome = RxOutcome::BackendError;
                    break;
                }
                RxStep::NoBuffers => {
                    outcome = RxOutcome::NoBuffers;
                    // Ask for a kick when buffers arrive; if some arrived meanwhile, go on.
                    // Twice with nothing to take means a corrupt ring: wait for a kick.
                    if rechecking {
                        break;
                    }
                    match self.rx.enable_notification(&self.mem) {
                        Ok(true) => {
                            rechecking = true;
                            outcome = RxOutcome::Budget;
                        }
                        Ok(false) | Err(_) => break,
                    }
                }
            }
        }
        if std::mem::take(&mut self.rx_used) {
            self.signal(true);
        }
        outcome
    }

    /// Takes one TX chain and sends it.
    fn tx_one(&mut self) -> TxStep {
        let mem = &self.mem;
        let chain = match self.tx.iter(mem) {
            Ok(mut iter) => match iter.next() {
                Some(chain) => chain,
                None => return TxStep::Empty,
            },
            Err(e) => {
                if self.bad_chain_log.hit() {
                    log::warn!("virtio-net: the driver corrupted the TX queue: {e}");
                }
                return TxStep::Empty;
            }
        };
        let head = chain.head_index();
        let result = match tx_slices(mem, chain) {
            Ok(slices) => self.backend.write_frame(&slices).map(drop),
            Err(reason) => {
                if self.bad_chain_log.hit() {
                    log::warn!("virtio-net: dropped a malformed TX chain: {reason}");
                }
                self.stats.tx_dropped += 1;
                self.complete_tx(head);
                return TxStep::Completed;
            }
        };
        match result {
            Ok(()) => self.stats.tx_frames += 1,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                // Leave the chain in the ring and retry it when the backend is writable.
                self.tx.go_to_previous_position();
                return TxStep::Full;
            }
            Err(e) => {
                // The kernel refused the frame (a bad GSO header, the interface is down...).
                if self.backend_log.hit() {
                    log::warn!("virtio-net: the backend refused a TX frame: {e}");
                }
                self.stats.tx_dropped += 1;
            }
        }
        self.complete_tx(head);
        TxStep::Completed
    }

    /// Reads one frame into the reserved RX buffers and hands them to the guest.
    fn rx_one(&mut self) -> RxStep {
        if !self.fill_rx_reserve() {
            return RxStep::NoBuffers;
        }
        let mem = &self.mem;
        // Gather the reserve's buffers, up to the iovec limit.
        let mut slices: Vec<VolatileSlice<'_>> = Vec::new();
        let mut chains = 0;
        for chain in &self.rx_reserve {
            let before = slices.len();
            if !push_slices(mem, &chain.segments, &mut slices) || slices.len() > MAX_IOVECS {
                slices.truncate(before);
                break;
            }
            chains += 1;
        }
        if chains == 0 {
            // The first chain alone has too many segments: give it back unused.
            if let Some(chain) = self.rx_reserve.pop_front() {
                self.rx_reserve_capacity -= chain.capacity;
                self.drop_rx_chain(chain.head, "too many segments");
            }
            return RxStep::Progress;
        }

        let len = match self.backend.read_frame(&slices) {
            Ok(len) => len,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::WouldBlock => RxStep::Empty,
                    io::ErrorKind::Interrupted => RxStep::Progress,
                    // The frame did not fit the buffers (a TAP says EFAULT) or was refused;
                    // it is gone, the buffers stay reserved.
                    _ if matches!(
                        e.raw_os_error(),
                        Some(libc::EFAULT | libc::EINVAL | libc::EMSGSIZE | libc::ENOBUFS)
                    ) =>
                    {
                        self.stats.rx_dropped += 1;
                        if self.backend_log.hit() {
                            log::warn!(
                                "virtio-net: lost an RX frame larger than the guest's buffers: {e}"
                            );
                        }
                        RxStep::Progress
                    }
                    _ => {
                        log::error!("virtio-net: reading the backend failed: {e}");
                        RxStep::Broken
                    }
                };
            }
        };
        if len < NET_HDR_LEN {
            // An empty message (a socket peer) or a runt: nothing for the guest.
            self.stats.rx_dropped += 1;
            return RxStep::Progress;
        }

        // Spread the frame over as many reserved chains as it filled.
        let mut used = Vec::new();
        let mut left = len;
        for chain in self.rx_reserve.iter().take(chains) {
            if left == 0 {
                break;
            }
            let n = left.min(chain.capacity);
            used.push((chain.head, n));
            left -= n;
        }
        let num_buffers = u16::try_from(used.len()).unwrap_or(u16::MAX);
        // Every RX chain holds at least a header, so `num_buffers` lies in the first one.
        let written = write_at(&slices, NUM_BUFFERS_OFFSET, &num_buffers.to_le_bytes());
        drop(slices);
        for _ in 0..used.len() {
            if let Some(chain) = self.rx_reserve.pop_front() {
                self.rx_reserve_capacity -= chain.capacity;
            }
        }
        for (head, n) in used {
            // `n` is at most one chain's capacity, which the chain iterator bounds to u32.
            self.complete_rx(head, u32::try_from(n).unwrap_or(u32::MAX));
        }
        if written {
            self.stats.rx_frames += 1;
        } else {
            self.stats.rx_dropped += 1;
        }
        RxStep::Progress
    }

    /// Pops RX chains until the reserve can take the largest frame (with `MRG_RXBUF`) or holds
    /// one chain (without). Returns whether the reserve has any buffer.
    fn fill_rx_reserve(&mut self) -> bool {
        let want = if self.mrg_rxbuf {
            NET_HDR_LEN + MAX_FRAME_LEN
        } else {
            1
        };
        // Bounded: each turn pops a chain, and the queue holds at most `size` of them.
        while self.rx_reserve_capacity < want && self.rx_reserve.len() < usize::from(self.rx.size())
        {
            if !self.mrg_rxbuf && !self.rx_reserve.is_empty() {
                break;
            }
            let mem = &self.mem;
            let chain = match self.rx.iter(mem) {
                Ok(mut iter) => match iter.next() {
                    Some(chain) => chain,
                    None => break,
                },
                Err(e) => {
                    if self.bad_chain_log.hit() {
                        log::warn!("virtio-net: the driver corrupted the RX queue: {e}");
                    }
                    break;
                }
            };
            let head = chain.head_index();
            match rx_segments(mem, chain) {
                Ok(chain) => {
                    self.rx_reserve_capacity += chain.capacity;
                    self.rx_reserve.push_back(chain);
                }
                Err(reason) => self.drop_rx_chain(head, reason),
            }
        }
        !self.rx_reserve.is_empty()
    }

    fn drop_rx_chain(&mut self, head: u16, reason: &str) {
        if self.bad_chain_log.hit() {
            log::warn!("virtio-net: dropped a malformed RX chain: {reason}");
        }
        self.stats.rx_bad_buffers += 1;
        self.complete_rx(head, 0);
    }

    fn complete_tx(&mut self, head: u16) {
        if complete(&mut self.tx, &self.mem, head, 0) {
            self.tx_used = true;
        }
    }

    fn complete_rx(&mut self, head: u16, len: u32) {
        if complete(&mut self.rx, &self.mem, head, len) {
            self.rx_used = true;
        }
    }

    fn signal(&mut self, rx: bool) {
        let (queue, index) = if rx {
            (&mut self.rx, self.rx_index)
        } else {
            (&mut self.tx, self.tx_index)
        };
        // If the suppression fields cannot be read, signal: a spurious interrupt is harmless.
        if queue.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.notify_queue(index);
        }
    }
}

/// Puts `head` in the used ring with `len` bytes written. Returns whether it was added.
fn complete(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) -> bool {
    // A head past the ring came from a corrupt available ring: there is nothing to return.
    if head >= queue.size() {
        return false;
    }
    queue.add_used(mem, head, len).is_ok()
}

/// The guest memory a TX chain describes, checked: device-readable only, a header and at
/// most [`MAX_FRAME_LEN`] bytes after it, in guest memory, at most [`MAX_IOVECS`] pieces.
fn tx_slices<'m>(
    mem: &'m GuestMemoryMmap,
    chain: DescriptorChain<&'m GuestMemoryMmap>,
) -> Result<Vec<VolatileSlice<'m>>, &'static str> {
    let mut slices = Vec::new();
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return Err("a device-writable descriptor");
        }
        let len = usize::try_from(desc.len()).map_err(|_| "a descriptor too long")?;
        total = total.saturating_add(len);
        if total > NET_HDR_LEN + MAX_FRAME_LEN {
            return Err("a frame longer than 64 KiB");
        }
        if !push_slices(mem, &[(desc.addr(), len)], &mut slices) {
            return Err("a descriptor outside guest memory");
        }
        if slices.len() > MAX_IOVECS {
            return Err("too many segments");
        }
    }
    if total < NET_HDR_LEN {
        return Err("shorter than the virtio-net header");
    }
    Ok(slices)
}

/// The writable segments of an RX chain, checked: device-writable only, in guest memory, at
/// least a header long.
fn rx_segments(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<RxChain, &'static str> {
    let head = chain.head_index();
    let mut segments = Vec::new();
    let mut capacity = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            return Err("a device-readable descriptor");
        }
        let len = usize::try_from(desc.len()).map_err(|_| "a descriptor too long")?;
        if len == 0 {
            continue;
        }
        if !mem.check_range(desc.addr(), len) {
            return Err("a descriptor outside guest memory");
        }
        if segments.len() >= MAX_IOVECS {
            return Err("too many segments");
        }
        segments.push((desc.addr(), len));
        // The chain iterator stops before 4 GiB in total, so this cannot overflow.
        capacity = capacity.saturating_add(len);
    }
    if capacity < NET_HDR_LEN {
        return Err("smaller than the virtio-net header");
    }
    Ok(RxChain {
        head,
        segments,
        capacity,
    })
}

/// Appends the host slices of guest ranges `segments` to `out`. False if any byte is not guest
/// memory.
fn push_slices<'m>(
    mem: &'m GuestMemoryMmap,
    segments: &[(GuestAddress, usize)],
    out: &mut Vec<VolatileSlice<'m>>,
) -> bool {
    for &(addr, len) in segments {
        if len == 0 {
            continue;
        }
        for slice in mem.get_slices(addr, len) {
            match slice {
                Ok(slice) => out.push(slice),
                Err(_) => return false,
            }
            // A guest can split a range over many regions only if it has many regions; stop
            // collecting early either way.
            if out.len() > MAX_IOVECS {
                return false;
            }
        }
    }
    true
}

/// Writes `data` at byte `offset` of the concatenation of `slices`. False if it does not fit.
fn write_at(slices: &[VolatileSlice<'_>], mut offset: usize, mut data: &[u8]) -> bool {
    for slice in slices {
        if data.is_empty() {
            break;
        }
        if offset >= slice.len() {
            offset -= slice.len();
            continue;
        }
        let n = data.len().min(slice.len() - offset);
        if slice.write_slice(&data[..n], offset).is_err() {
            return false;
        }
        data = &data[n..];
        offset = 0;
    }
    data.is_empty()
}
