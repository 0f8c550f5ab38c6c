//! Serving the request queue synchronously: pop every available chain, execute it on the
//! calling thread, put it in the used ring, with the notification suppression loop of the
//! virtio spec (`EVENT_IDX` or `VRING_USED_F_NO_NOTIFY`).

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::disk::DiskImage;
use super::request::{self, Parsed};
use super::ID_BYTES;

/// What one pass over the queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueRun {
    /// Chains completed (put in the used ring).
    pub completed: usize,
    /// The driver wants an interrupt for them (notification suppression already applied).
    pub notify: bool,
    /// The pass stopped at its budget with chains perhaps still available: run it again
    /// after serving other events.
    pub more: bool,
}

/// Serves every chain available in `queue` (at most `budget`) synchronously against `disk`,
/// on the calling thread. `id` is the GET_ID string, NUL-padded.
///
/// This is the whole request path of the synchronous engine, usable without a worker
/// thread: unit tests and the fuzz target drive it directly. Nothing the guest put in the
/// queue makes it panic or loop: malformed chains are answered with an error status, and a
/// corrupt available ring ends the pass.
#[doc(hidden)]
pub fn process_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    id: &[u8; ID_BYTES],
    budget: usize,
) -> QueueRun {
    let mut run = QueueRun::default();
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            log::debug!("virtio-blk: cannot disable notifications: {e}");
            break;
        }
        let mut popped = 0usize;
        while run.completed < budget {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            popped += 1;
            let (head, len) = match request::parse(chain, mem, disk) {
                Parsed::Valid(req) => {
                    let (status, written) = request::execute(&req, mem, disk, id);
                    (req.head, answer(mem, req.status, status, written))
                }
                Parsed::Rejected {
                    head,
                    status_addr,
                    status,
                } => (head, answer(mem, status_addr, status, 0)),
                Parsed::Unanswerable { head } => (head, 0),
            };
            complete(queue, mem, head, len);
            run.completed += 1;
        }
        if run.completed >= budget {
            run.more = true;
            break;
        }
        match queue.enable_notification(mem) {
            // The driver added chains while notifications were off.
            Ok(true) if popped > 0 => continue,
            Ok(true) => {
                // Chains announced but none could be popped: the available ring is corrupt.
                log::debug!("virtio-blk: the available ring index is invalid; waiting for a kick");
                break;
            }
            Ok(false) => break,
            Err(e) => {
                log::debug!("virtio-blk: cannot enable notifications: {e}");
                break;
            }
        }
    }
    if run.completed > 0 {
        run.notify = queue.needs_notification(mem).unwrap_or(true);
    }
    run
}

/// Writes the status byte; returns the used length (data written + the status byte).
pub(crate) fn answer(mem: &GuestMemoryMmap, addr: GuestAddress, status: u8, written: u32) -> u32 {
    match mem.write_obj(status, addr) {
        Ok(()) => written.saturating_add(1),
        // Checked during parsing; only a region vanishing under us gets here.
        Err(_) => 0,
    }
}

/// Puts chain `head` in the used ring with `len` bytes written.
pub(crate) fn complete(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) {
    if let Err(e) = queue.add_used(mem, head, len) {
        log::debug!("virtio-blk: cannot complete chain {head}: {e}");
    }
}
