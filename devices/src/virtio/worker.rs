//! The worker thread a virtio device serves its queues on.
//!
//! A worker runs one `event-manager` loop with the device's subscriber (queue notifiers,
//! backend fds) until the device is reset or dropped. Stopping is synchronous: [`Worker::stop`]
//! returns after the thread has exited, so the caller knows guest memory is no longer touched.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use ghost_sandbox::ThreadKind;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

struct StopWatcher {
    stop: EventFd,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl MutEventSubscriber for StopWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.stop, EventSet::IN)) {
            log::error!("worker: cannot watch the stop eventfd: {e}");
            self.stopped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.stop.as_raw_fd() {
            let _ = self.stop.read();
            self.stopped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Worker {
    /// Starts thread `name` serving `subscriber` until [`Worker::stop`] (or drop). The
    /// thread confines itself as `kind` ([`ghost_sandbox::confine_thread`]) before it
    /// touches the queues; if it cannot, it serves nothing and this fails.
    pub fn spawn<S>(name: String, kind: ThreadKind, subscriber: S) -> std::io::Result<Self>
    where
        S: MutEventSubscriber + Send + 'static,
    {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = StopWatcher {
            stop: stop.try_clone()?,
            stopped: stopped.clone(),
        };
        let mut events = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| std::io::Error::other(format!("event manager: {e:?}")))?;
        events.add_subscriber(Arc::new(Mutex::new(watcher)));
        events.add_subscriber(Arc::new(Mutex::new(subscriber)));
        let thread = ghost_sandbox::spawn_confined(name, kind, move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = events.run() {
                    log::error!("worker event loop failed: {e:?}");
                    break;
                }
            }
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
