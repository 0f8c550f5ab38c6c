//! The asynchronous engine: reads, writes and flushes go to an io_uring, up to a queue's
//! worth in flight; the ring signals completions through an eventfd the worker watches.
//!
//! Parsing and validation are those of the synchronous path ([`request::parse`]); GET_ID,
//! discard and write-zeroes (rare, and some have no io_uring operation for block devices)
//! run synchronously on the worker thread. A short transfer is finished synchronously.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring, Probe};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::{advance, DiskImage};
use super::queue::{answer, complete, QueueRun};
use super::request::{self, iovecs, Kind, Parsed, Request, STATUS_IOERR, STATUS_OK};
use super::{ID_BYTES, QUEUE_SIZE};

/// Most iovecs one io_uring read or write takes; a request with more runs synchronously.
const URING_IOV_MAX: usize = 1024;

/// Host iovecs pointing into guest memory, kept alive while the kernel may use them.
struct IoVecs(Box<[libc::iovec]>);

// SAFETY: the iovecs are plain (pointer, length) pairs into guest memory mappings that the
// handler owning this engine keeps alive (its `GuestMemoryMmap` clone) until every operation
// has completed (`Uring::drain`). Nothing dereferences them in Rust; they only travel with
// the engine to its worker thread.
unsafe impl Send for IoVecs {}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Flush,
}

/// A request the kernel is working on.
struct Inflight {
    head: u16,
    status: GuestAddress,
    op: Op,
    offset: u64,
    expected: u64,
    iovs: IoVecs,
}

/// The io_uring of one activated device.
pub(crate) struct Uring {
    ring: IoUring,
    eventfd: EventFd,
    slots: Vec<Option<Inflight>>,
    free: Vec<usize>,
    /// Every slot was busy when the queue was last served: serve it again after completions.
    throttled: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// Sets up a ring if the kernel has io_uring with vectored read/write and fsync
    /// (Linux 5.6 or later, and not disabled by sysctl or seccomp).
    pub(crate) fn new() -> io::Result<Self> {
        let slots = usize::from(QUEUE_SIZE);
        let ring = IoUring::new(u32::from(QUEUE_SIZE))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for code in [
            opcode::Readv::CODE,
            opcode::Writev::CODE,
            opcode::Fsync::CODE,
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
        }
        // The completion queue (twice the submission queue) never overflows: at most
        // `slots` operations are in flight.
        let eventfd = EventFd::new(EFD_NONBLOCK)?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        Ok(Self {
            ring,
            eventfd,
            slots: (0..slots).map(|_| None).collect(),
            free: (0..slots).rev().collect(),
            throttled: false,
        })
    }

    /// Readable when operations have completed.
    pub(crate) fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// Operations the kernel is working on.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether the last [`Uring::pump`] stopped because every slot was busy.
    pub(crate) fn throttled(&self) -> bool {
        self.throttled
    }

    /// Serves the available chains (at most `budget`): submits reads, writes and flushes,
    /// answers the rest at once. `completed` counts the chains answered at once.
    pub(crate) fn pump(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        disk: &DiskImage,
        id: &[u8; ID_BYTES],
        budget: usize,
    ) -> QueueRun {
        let mut run = QueueRun::default();
        let mut handled = 0usize;
        self.throttled = false;
        'serve: loop {
            if let Err(e) = queue.disable_notification(mem) {
                log::debug!("virtio-blk: cannot disable notifications: {e}");
                break;
            }
            let mut popped = 0usize;
            loop {
                if self.free.is_empty() {
                    self.throttled = true;
                    break 'serve;
                }
                if handled >= budget {
                    run.more = true;
                    break 'serve;
                }
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                popped += 1;
                handled += 1;
                let done = match request::parse(chain, mem, disk) {
                    Parsed::Valid(req) => self.start(req, mem, disk, id),
                    Parsed::Rejected {
                        head,
                        status_addr,
                        status,
                    } => Some((head, answer(mem, status_addr, status, 0))),
                    Parsed::Unanswerable { head } => Some((head, 0)),
                };
                if let Some((head, len)) = done {
                    complete(queue, mem, head, len);
                    run.completed += 1;
                }
            }
            self.submit();
            match queue.enable_notification(mem) {
                Ok(true) if popped > 0 => continue,
                Ok(true) => {
                    log::debug!(
                        "virtio-blk: the available ring index is invalid; waiting for a kick"
                    );
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    log::debug!("virtio-blk: cannot enable notifications: {e}");
                    break;
                }
            }
        }
        self.submit();
        if run.completed > 0 {
            run.notify = queue.needs_notification(mem).unwrap_or(true);
        }
        run
    }

    /// Starts `req`: on the ring for reads, writes and flushes, at once for the others.
    /// Returns `(head, used length)` if the request is already answered.
    fn start(
        &mut self,
        req: Request,
        mem: &GuestMemoryMmap,
        disk: &DiskImage,
        id: &[u8; ID_BYTES],
    ) -> Option<(u16, u32)> {
        let sync = |req: &Request| {
            let (status, written) = request::execute(req, mem, disk, id);
            Some((req.head, answer(mem, req.status, status, written)))
        };
        let (op, offset, iovs) = match &req.kind {
            Kind::In { offset, segs } => (Op::Read, *offset, iovecs(mem, segs, true)),
            Kind::Out { offset, segs } => (Op::Write, *offset, iovecs(mem, segs, false)),
            Kind::Flush => (Op::Flush, 0, Some(Vec::new())),
            _ => return sync(&req),
        };
        let Some(iovs) = iovs else {
            return Some((req.head, answer(mem, req.status, STATUS_IOERR, 0)));
        };
        let expected: u64 = iovs.iter().map(|v| v.iov_len as u64).sum();
        let Ok(count) = u32::try_from(iovs.len()) else {
            return sync(&req);
        };
        if iovs.len() > URING_IOV_MAX || (expected == 0 && !matches!(op, Op::Flush)) {
            return sync(&req);
        }
        let Some(slot) = self.free.pop() else {
            // pump() checks for a free slot before popping a chain.
            return sync(&req);
        };
        let iovs = IoVecs(iovs.into_boxed_slice());
        let fd = types::Fd(disk.as_raw_fd());
        let entry = match op {
            Op::Read => opcode::Readv::new(fd, iovs.0.as_ptr(), count)
                .offset(offset)
                .build(),
            Op::Write => opcode::Writev::new(fd, iovs.0.as_ptr(), count)
                .offset(offset)
                .build(),
            Op::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(slot as u64);
        // SAFETY: the entry points at `iovs`, a heap array moved into `self.slots[slot]`
        // right below and kept there (unmoved) until the operation's completion is reaped or
        // drained; the iovecs point into guest memory the handler keeps mapped until then;
        // the fd is the disk's, which the handler's `Arc<DiskImage>` keeps open.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Cannot happen: the submission queue has a place for every slot, and is
            // submitted after every pass. Do it here rather than fail.
            self.free.push(slot);
            return sync(&req);
        }
        self.slots[slot] = Some(Inflight {
            head: req.head,
            status: req.status,
            op,
            offset,
            expected,
            iovs,
        });
        None
    }

    fn submit(&mut self) {
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    // Left in the submission queue; the next pass submits them.
                    log::error!("virtio-blk: io_uring submit failed: {e}");
                    return;
                }
            }
        }
    }

    /// Answers every completed operation. Returns the number of chains completed.
    pub(crate) fn reap(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        disk: &DiskImage,
    ) -> usize {
        let _ = self.eventfd.read();
        let mut done = 0;
        loop {
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                return done;
            }
            for (key, result) in cqes {
                let Some(inflight) = self.take_slot(key) else {
                    continue;
                };
                let status = finish(&inflight, result, disk);
                let written = match (status, inflight.op) {
                    (STATUS_OK, Op::Read) => u32::try_from(inflight.expected).unwrap_or(0),
                    _ => 0,
                };
                let len = answer(mem, inflight.status, status, written);
                complete(queue, mem, inflight.head, len);
                done += 1;
            }
        }
    }

    fn take_slot(&mut self, key: u64) -> Option<Inflight> {
        let index = usize::try_from(key).ok()?;
        let inflight = self.slots.get_mut(index)?.take()?;
        self.free.push(index);
        Some(inflight)
    }

    /// Waits for every operation in flight and forgets them (the queue is being reset).
    pub(crate) fn drain(&mut self) {
        while self.in_flight() > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    log::error!("virtio-blk: cannot wait for io_uring completions: {e}");
                    return;
                }
            }
            let keys: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for key in keys {
                self.take_slot(key);
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.drain();
    }
}

/// The status of a completed operation; a short read or write is finished synchronously.
fn finish(inflight: &Inflight, result: i32, disk: &DiskImage) -> u8 {
    let Ok(done) = u64::try_from(result) else {
        log::warn!(
            "disk {}: request failed: {}",
            disk.path().display(),
            io::Error::from_raw_os_error(-result)
        );
        return STATUS_IOERR;
    };
    if matches!(inflight.op, Op::Flush) || done >= inflight.expected {
        return STATUS_OK;
    }
    let mut iovs = inflight.iovs.0.clone();
    let mut rest: &mut [libc::iovec] = &mut iovs;
    advance(&mut rest, usize::try_from(done).unwrap_or(usize::MAX));
    let offset = inflight.offset + done;
    let result = match inflight.op {
        Op::Read => disk.read_vectored_at(rest, offset),
        _ => disk.write_vectored_at(rest, offset),
    };
    match result {
        Ok(()) => STATUS_OK,
        Err(e) => {
            log::warn!("disk {}: request failed: {e}", disk.path().display());
            STATUS_IOERR
        }
    }
}
