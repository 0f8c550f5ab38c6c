//! Deferred activation. The driver's `DRIVER_OK` arrives on a vCPU thread, but starting a
//! device (its worker thread, an io_uring, the TAP's offloads) is work for the VMM thread:
//! a vCPU thread is the one guest data reaches first, so its sandbox filter allows neither
//! thread creation nor those setup calls.
//!
//! A transport given an [`ActivationQueue`] records the request and signals the queue's
//! eventfd; the [`Activator`] in the VMM thread's event loop then activates every transport
//! with a pending request. Until then the guest sees `DRIVER_OK` set and its queue kicks
//! wait in the ioeventfds, which the worker reads as soon as it runs. A reset before that
//! cancels the request.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::pci::VirtioPciDevice;

/// Where transports ask for activation: an eventfd shared by all of one VM's transports.
#[derive(Debug, Clone)]
pub struct ActivationQueue {
    evt: Arc<EventFd>,
}

impl ActivationQueue {
    /// A new queue.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            evt: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
    }

    /// A transport has a request pending.
    pub(crate) fn request(&self) {
        if let Err(e) = self.evt.write(1) {
            // Only an overflowing counter fails, and then a wakeup is pending anyway.
            log::warn!("virtio: cannot signal an activation: {e}");
        }
    }
}

/// The VMM thread's subscriber that carries out pending activations.
#[derive(Debug)]
pub struct Activator {
    queue: ActivationQueue,
    transports: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

impl Activator {
    /// Serves `queue` for `transports` (those given the queue).
    pub fn new(queue: ActivationQueue, transports: Vec<Arc<Mutex<VirtioPciDevice>>>) -> Self {
        Self { queue, transports }
    }

    /// Activates every transport with a pending request.
    pub fn run_pending(&self) {
        for t in &self.transports {
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .activate_pending();
        }
    }
}

impl MutEventSubscriber for Activator {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.queue.evt.as_ref(), EventSet::IN)) {
            log::error!("virtio: cannot watch activation requests: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.queue.evt.as_raw_fd() {
            let _ = self.queue.evt.read();
            self.run_pending();
        }
    }
}
