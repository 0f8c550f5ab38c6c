//! The event subscriber a virtio-blk device runs on its
//! [`Worker`](crate::virtio::worker::Worker): queue kicks (the ioeventfd) and, with the
//! io_uring engine, the ring's completion eventfd.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::disk::DiskImage;
use super::queue::{process_queue, QueueRun};
use super::uring::Uring;
use super::{IoEngine, BUDGET, ID_BYTES};
use crate::virtio::VirtioInterrupt;

/// Event tokens.
const TOKEN_QUEUE: u32 = 0;
const TOKEN_URING: u32 = 1;

/// The index of the request queue.
const QUEUE_INDEX: u16 = 0;

/// Serves one activated virtio-blk device.
pub(super) struct BlockHandler {
    /// `None`: the synchronous engine.
    uring: Option<Uring>,
    mem: GuestMemoryMmap,
    queue: Queue,
    notifier: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    disk: Arc<DiskImage>,
    id: [u8; ID_BYTES],
}

impl BlockHandler {
    pub(super) fn new(
        mem: GuestMemoryMmap,
        queue: Queue,
        notifier: EventFd,
        interrupt: Arc<dyn VirtioInterrupt>,
        disk: Arc<DiskImage>,
        id: [u8; ID_BYTES],
        engine: IoEngine,
    ) -> Self {
        let uring = match engine {
            IoEngine::Sync => None,
            IoEngine::Auto if disk.memory_backed() => {
                log::info!(
                    "disk {}: on a memory file system; serving requests synchronously",
                    disk.path().display()
                );
                None
            }
            IoEngine::Auto => match Uring::new() {
                Ok(ring) => Some(ring),
                Err(e) => {
                    log::info!(
                        "disk {}: io_uring unavailable ({e}); serving requests synchronously",
                        disk.path().display()
                    );
                    None
                }
            },
        };
        Self {
            uring,
            mem,
            queue,
            notifier,
            interrupt,
            disk,
            id,
        }
    }

    fn serve_queue(&mut self) {
        let run = match self.uring.as_mut() {
            Some(ring) => ring.pump(&mut self.queue, &self.mem, &self.disk, &self.id, BUDGET),
            None => process_queue(&mut self.queue, &self.mem, &self.disk, &self.id, BUDGET),
        };
        self.after(run);
    }

    fn reap(&mut self) {
        let Some(ring) = self.uring.as_mut() else {
            return;
        };
        let completed = ring.reap(&mut self.queue, &self.mem, &self.disk);
        if completed > 0 && self.queue.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.notify_queue(QUEUE_INDEX);
        }
        if ring.throttled() {
            self.serve_queue();
        }
    }

    fn after(&mut self, run: QueueRun) {
        if run.notify {
            self.interrupt.notify_queue(QUEUE_INDEX);
        }
        if run.more {
            // Come back after the other events (a reset among them): kick ourselves.
            if let Err(e) = self.notifier.write(1) {
                log::error!("virtio-blk: cannot requeue work: {e}");
            }
        }
    }
}

impl MutEventSubscriber for BlockHandler {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.notifier, TOKEN_QUEUE, EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the queue notifier: {e:?}");
        }
        if let Some(ring) = &self.uring {
            let fd = ring.eventfd().as_raw_fd();
            if let Err(e) = ops.add(Events::with_data_raw(fd, TOKEN_URING, EventSet::IN)) {
                log::warn!(
                    "virtio-blk: cannot watch io_uring completions ({e:?}); \
                     serving requests synchronously"
                );
                self.uring = None;
            }
        }
        // The driver may have made requests available before the notifier was wired.
        let _ = self.notifier.write(1);
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_QUEUE => {
                let _ = self.notifier.read();
                self.serve_queue();
            }
            TOKEN_URING => self.reap(),
            other => log::error!("virtio-blk: unexpected event token {other}"),
        }
    }
}

impl Drop for BlockHandler {
    fn drop(&mut self) {
        // Wait for the kernel to finish with guest memory before `mem` goes.
        if let Some(ring) = self.uring.as_mut() {
            ring.drain();
        }
    }
}
