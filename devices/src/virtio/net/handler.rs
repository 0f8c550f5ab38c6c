//! The event subscriber a virtio-net device runs on its [`Worker`](crate::virtio::worker::Worker):
//! it turns queue kicks and backend readiness into [`NetQueues`] calls.
//!
//! No loop spins: the backend is watched for `EPOLLIN` only while the guest has posted receive
//! buffers (otherwise the frame waits in the backend until the guest kicks the RX queue), and
//! for `EPOLLOUT` only while a TX frame is waiting for room. A backend that hangs up or fails
//! is no longer watched.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::datapath::{NetQueues, RxOutcome, TxOutcome};
use super::NetBackend;

/// Event tokens.
const TOKEN_RX_KICK: u32 = 0;
const TOKEN_TX_KICK: u32 = 1;
const TOKEN_BACKEND: u32 = 2;

/// Serves one active virtio-net device.
pub(super) struct NetHandler {
    queues: NetQueues,
    rx_kick: EventFd,
    tx_kick: EventFd,
    backend: Arc<dyn NetBackend>,
    /// The events the backend fd is registered for (empty: not registered).
    watching: EventSet,
    /// The RX queue ran dry: wait for a kick before reading the backend again.
    rx_waits_for_buffers: bool,
    /// A TX frame is waiting for the backend to become writable.
    tx_waits_for_backend: bool,
    /// The backend hung up or failed; it is never watched again.
    backend_dead: bool,
}

impl NetHandler {
    pub(super) fn new(
        queues: NetQueues,
        rx_kick: EventFd,
        tx_kick: EventFd,
        backend: Arc<dyn NetBackend>,
    ) -> Self {
        NetHandler {
            queues,
            rx_kick,
            tx_kick,
            backend,
            watching: EventSet::empty(),
            rx_waits_for_buffers: false,
            tx_waits_for_backend: false,
            backend_dead: false,
        }
    }

    fn backend_fd(&self) -> RawFd {
        self.backend.as_raw_fd()
    }

    fn run_rx(&mut self) {
        match self.queues.process_rx() {
            RxOutcome::BackendEmpty | RxOutcome::Budget => self.rx_waits_for_buffers = false,
            RxOutcome::NoBuffers => self.rx_waits_for_buffers = true,
            RxOutcome::BackendError => self.backend_dead = true,
        }
    }

    fn run_tx(&mut self) {
        match self.queues.process_tx() {
            TxOutcome::Done => self.tx_waits_for_backend = false,
            TxOutcome::BackendFull => self.tx_waits_for_backend = true,
            TxOutcome::Budget => {
                self.tx_waits_for_backend = false;
                // Come back after the other events: kick ourselves.
                if let Err(e) = self.tx_kick.write(1) {
                    log::error!("virtio-net: cannot requeue TX work: {e}");
                }
            }
        }
    }

    /// Registers the backend fd for exactly the events the state calls for.
    fn update_backend_interest(&mut self, ops: &mut EventOps) {
        let mut want = EventSet::empty();
        if !self.backend_dead {
            if !self.rx_waits_for_buffers {
                want |= EventSet::IN;
            }
            if self.tx_waits_for_backend {
                want |= EventSet::OUT;
            }
        }
        if want == self.watching {
            return;
        }
        let fd = self.backend_fd();
        let result = if self.watching.is_empty() {
            ops.add(Events::with_data_raw(fd, TOKEN_BACKEND, want))
        } else if want.is_empty() {
            ops.remove(Events::with_data_raw(fd, TOKEN_BACKEND, self.watching))
        } else {
            ops.modify(Events::with_data_raw(fd, TOKEN_BACKEND, want))
        };
        match result {
            Ok(()) => self.watching = want,
            Err(e) => {
                log::error!("virtio-net: cannot watch the backend: {e:?}");
                self.backend_dead = true;
            }
        }
    }
}

impl MutEventSubscriber for NetHandler {
    fn init(&mut self, ops: &mut EventOps) {
        for (fd, token) in [
            (self.rx_kick.as_raw_fd(), TOKEN_RX_KICK),
            (self.tx_kick.as_raw_fd(), TOKEN_TX_KICK),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("virtio-net: cannot watch a queue notifier: {e:?}");
            }
        }
        // The driver may have queued buffers before the notifiers were wired: look at both
        // queues once.
        let _ = self.tx_kick.write(1);
        let _ = self.rx_kick.write(1);
        self.update_backend_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let set = events.event_set();
        match events.data() {
            TOKEN_RX_KICK => {
                let _ = self.rx_kick.read();
                if !self.backend_dead {
                    self.run_rx();
                }
            }
            TOKEN_TX_KICK => {
                let _ = self.tx_kick.read();
                if !self.tx_waits_for_backend {
                    self.run_tx();
                }
            }
            TOKEN_BACKEND => {
                if set.contains(EventSet::OUT) {
                    self.run_tx();
                }
                if set.contains(EventSet::IN) && !self.rx_waits_for_buffers {
                    self.run_rx();
                }
                if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                    log::warn!("virtio-net: the backend hung up; the link carries nothing more");
                    self.backend_dead = true;
                }
            }
            other => log::error!("virtio-net: unexpected event token {other}"),
        }
        self.update_backend_interest(ops);
    }
}
