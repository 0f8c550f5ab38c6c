//! `serial.mode = "socket"`: the guest's console on a Unix socket, for headless VMs;
//! `ghost-vmm console NAME` attaches to it.
//!
//! The socket is `vm.console_socket_path()` (`/run/ghost-vmm/NAME.console` by default, next
//! to the control socket), mode 0600. What the guest writes goes to a ring holding the last
//! [`RING_SIZE`] bytes, to the optional `serial.path` log, and to the attached client, if
//! any. A client that connects gets the ring first (scrollback), then live output; what it
//! sends is typed into the guest's UART, as stdin is in stdio mode. A new client takes over:
//! the previous one gets a one-line notice and is closed. A client leaving does nothing to
//! the VM.
//!
//! # Never blocking the guest
//!
//! The UART's output is written on a vCPU thread, byte by byte. That writer
//! ([`SocketConsole::output`]) only appends to the ring and tries one nonblocking `send`
//! (`MSG_DONTWAIT`) to the client; what the socket does not take goes to the client's
//! bounded backlog, and later output is appended behind it without any system call. The
//! main thread's event loop sends the backlog when the socket is writable (EPOLLOUT, asked
//! for through the `wake` eventfd when a backlog begins). The vCPU's cost is a mutex, a
//! memcpy and at most one nonblocking system call per write; it never waits for a client.
//!
//! Why the event loop and not a console thread: each boot already runs one on the main
//! thread, and client input must go to that boot's UART and wait for its `input_ready`
//! eventfd ([`UartInput`]), which that loop holds. A thread of its own would need its own
//! wake-ups, a hand-over of the UART at every guest reboot, and a second place that feeds
//! the UART.
//!
//! A client more than [`BACKLOG_LIMIT`] behind (a suspended or very slow reader) skips
//! ahead rather than being dropped: the oldest unsent output is discarded and, where the gap
//! is, it reads one line `[ghost-vmm: N bytes of console output skipped ...]`. Its session
//! goes on, and the ring still holds the last 1 MiB for a later attach. The limit is twice
//! the ring, so a new client's replay plus 1 MiB of live output fit before anything is
//! skipped.
//!
//! # Lifetime
//!
//! [`SocketConsole`] lives for the whole `ghost-vmm run` (it is kept in `Backends`), so the
//! ring, the socket and an attached client survive guest reboots. Each boot takes a fresh
//! [`SocketConsole::output`] for its UART and a [`SocketConsoleEvents`] for its event loop.
//!
//! Lock order: the UART's mutex, then the console state's (the UART calls the writer with
//! its lock held; the event loop never takes the UART's lock while holding the state's).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, Events, MutEventSubscriber};
use ghost_api::socket_file::{bind_private, create_parent, SocketFile};
use ghost_devices::serial::{SerialDevice, SerialOutput};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ring::Ring;
use super::{open_console_log, UartInput};
use crate::VmmError;

/// Scrollback a new client is given: the last 1 MiB of output.
pub(crate) const RING_SIZE: usize = 1 << 20;
/// Most output waiting for one client; beyond it, the oldest waiting output is skipped.
pub(crate) const BACKLOG_LIMIT: usize = 2 * RING_SIZE;
/// Bytes read from the client at a time: the UART's receive FIFO.
const READ_CHUNK: usize = 64;
/// Connections the kernel queues while the main thread is busy.
const CONNECT_BACKLOG: libc::c_int = 8;
/// What a client hears when another console takes over.
pub(crate) const TAKEOVER_NOTICE: &[u8] = b"\r\n[ghost-vmm: another console attached]\r\n";
/// What a client hears when the run ends.
pub(crate) const STOPPED_NOTICE: &[u8] = b"\r\n[ghost-vmm: the VM has stopped]\r\n";

/// The console socket of one `ghost-vmm run`, its scrollback and its client.
///
/// Dropping it tells the client the VM stopped, closes it, and removes the socket file
/// (unless another file has replaced it since).
#[derive(Debug)]
pub(crate) struct SocketConsole {
    name: String,
    listener: Arc<UnixListener>,
    state: Arc<Mutex<State>>,
    wake: Arc<EventFd>,
    log: Option<Arc<File>>,
    // Last: the file is removed once the client and listener are closed.
    file: SocketFile,
}

/// What the writer (vCPU thread) and the event loop (main thread) share.
#[derive(Debug)]
struct State {
    ring: Ring,
    client: Option<Client>,
}

/// The attached client.
#[derive(Debug)]
struct Client {
    stream: Arc<UnixStream>,
    backlog: Backlog,
    /// A send or read failed, or it hung up: the event loop closes it.
    gone: bool,
    /// It shut down its sending side: nothing more to read (it may still read output).
    input_closed: bool,
}

impl Client {
    fn new(stream: Arc<UnixStream>, ring: &Ring) -> Self {
        let mut backlog = Backlog::new(BACKLOG_LIMIT);
        let (older, newer) = ring.contents();
        backlog.push(older);
        backlog.push(newer);
        Self {
            stream,
            backlog,
            gone: false,
            input_closed: false,
        }
    }

    /// Sends guest output, or queues what the socket does not take now; true when the event
    /// loop has something to do (a backlog began, or the client is gone).
    fn output(&mut self, bytes: &[u8]) -> bool {
        if self.gone {
            return false;
        }
        if !self.backlog.is_empty() {
            // Already waiting for EPOLLOUT: keep the order, skip the system call.
            self.backlog.push(bytes);
            return false;
        }
        match send_some(&self.stream, bytes) {
            Ok(n) if n == bytes.len() => false,
            Ok(n) => {
                self.backlog.push(bytes.get(n..).unwrap_or_default());
                true
            }
            Err(_) => {
                self.gone = true;
                true
            }
        }
    }
}

/// Output waiting for a client, at most `limit` bytes: beyond that the oldest is skipped and
/// a notice saying how much takes its place.
#[derive(Debug)]
struct Backlog {
    bytes: VecDeque<u8>,
    limit: usize,
    /// Bytes skipped since the last notice was begun.
    skipped: u64,
    /// The unsent rest of a skip notice; it goes before `bytes`.
    notice: Vec<u8>,
}

impl Backlog {
    fn new(limit: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            limit: limit.max(1),
            skipped: 0,
            notice: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.notice.is_empty() && self.skipped == 0
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn push(&mut self, data: &[u8]) {
        if data.len() >= self.limit {
            self.skip(self.bytes.len() + (data.len() - self.limit));
            self.bytes.clear();
            self.bytes
                .extend(data.get(data.len() - self.limit..).unwrap_or_default());
            return;
        }
        let over = (self.bytes.len() + data.len()).saturating_sub(self.limit);
        if over > 0 {
            self.bytes.drain(..over);
            self.skip(over);
        }
        self.bytes.extend(data);
    }

    fn skip(&mut self, n: usize) {
        self.skipped = self.skipped.saturating_add(n as u64);
    }

    /// Sends as much as `stream` takes without blocking; true when nothing is left.
    fn send(&mut self, stream: &UnixStream) -> io::Result<bool> {
        loop {
            if self.notice.is_empty() && self.skipped > 0 {
                self.notice = format!(
                    "\r\n[ghost-vmm: {} bytes of console output skipped: this console reads too slowly]\r\n",
                    self.skipped
                )
                .into_bytes();
                self.skipped = 0;
            }
            if !self.notice.is_empty() {
                let n = send_some(stream, &self.notice)?;
                self.notice.drain(..n);
                if !self.notice.is_empty() {
                    return Ok(false);
                }
                continue;
            }
            let (front, _) = self.bytes.as_slices();
            if front.is_empty() {
                return Ok(true);
            }
            let n = send_some(stream, front)?;
            let all = n == front.len();
            self.bytes.drain(..n);
            if !all {
                return Ok(false);
            }
        }
    }
}

impl SocketConsole {
    /// Creates the console socket at `path` (replacing a stale one) and opens the log at
    /// `log`, if any, for appending.
    ///
    /// A socket file already at `path` is removed and bound again: the control socket, bound
    /// first, already refuses a second live VM of the same name, so what is left here is
    /// from a VMM that was killed. Anything else at the path is an error and left alone.
    pub(crate) fn open(name: &str, path: &Path, log: Option<&Path>) -> Result<Self, VmmError> {
        let log = log
            .map(|p| {
                open_console_log(p)
                    .map(Arc::new)
                    .map_err(|e| VmmError::ConsoleFile(p.to_owned(), e))
            })
            .transpose()?;
        let socket_err = |e| VmmError::ConsoleSocket(path.to_owned(), e);
        let (listener, file) = bind_console_socket(path).map_err(socket_err)?;
        listener.set_nonblocking(true).map_err(socket_err)?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        log::info!(
            "{name}: console on {} (attach with `ghost-vmm console {name}`)",
            path.display()
        );
        Ok(Self {
            name: name.to_owned(),
            listener: Arc::new(listener),
            state: Arc::new(Mutex::new(State {
                ring: Ring::new(RING_SIZE),
                client: None,
            })),
            wake: Arc::new(wake),
            log,
            file,
        })
    }

    /// The UART output for one boot: the ring, the log and the client.
    pub(crate) fn output(&self) -> SerialOutput {
        Box::new(SocketOutput {
            name: self.name.clone(),
            state: self.state.clone(),
            wake: self.wake.clone(),
            log: self.log.clone(),
            log_failed: false,
        })
    }

    /// The event subscriber for one boot: accepts clients, sends their backlog, and types
    /// what they send into `serial` (whose FIFO-drained eventfd is `input_ready`).
    pub(crate) fn events(
        &self,
        serial: Arc<Mutex<SerialDevice>>,
        input_ready: EventFd,
    ) -> SocketConsoleEvents {
        SocketConsoleEvents {
            name: self.name.clone(),
            listener: self.listener.clone(),
            state: self.state.clone(),
            wake: self.wake.clone(),
            input: UartInput::new(serial),
            input_ready,
            watched: None,
        }
    }
}

impl Drop for SocketConsole {
    fn drop(&mut self) {
        let client = lock(&self.state).client.take();
        if let Some(mut client) = client {
            // Best effort, without blocking: what the client has not been sent yet, then
            // the notice if there was room for all of it.
            if !client.gone && client.backlog.send(&client.stream).unwrap_or(false) {
                let _ = send_some(&client.stream, STOPPED_NOTICE);
            }
            let _ = client.stream.shutdown(Shutdown::Both);
        }
        log::debug!(
            "{}: closing the console socket {}",
            self.name,
            self.file.path().display()
        );
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The UART's output in socket mode (see the module docs: it never blocks on a client).
struct SocketOutput {
    name: String,
    state: Arc<Mutex<State>>,
    wake: Arc<EventFd>,
    log: Option<Arc<File>>,
    log_failed: bool,
}

impl Write for SocketOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(log) = &self.log {
            match (&**log).write_all(buf) {
                Ok(()) => self.log_failed = false,
                Err(e) if !self.log_failed => {
                    log::warn!("{}: cannot write the console log: {e}", self.name);
                    self.log_failed = true;
                }
                Err(_) => {}
            }
        }
        let mut state = lock(&self.state);
        state.ring.push(buf);
        let act = state.client.as_mut().is_some_and(|c| c.output(buf));
        drop(state);
        if act {
            // A failed wake-up (the counter cannot overflow in practice) only delays the
            // backlog until the next event.
            let _ = self.wake.write(1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One boot's event subscriber for the console socket.
#[derive(Debug)]
pub(crate) struct SocketConsoleEvents {
    name: String,
    listener: Arc<UnixListener>,
    state: Arc<Mutex<State>>,
    wake: Arc<EventFd>,
    input: UartInput,
    input_ready: EventFd,
    /// The client this loop watches, and for what (empty: not registered).
    watched: Option<Watched>,
}

#[derive(Debug)]
struct Watched {
    stream: Arc<UnixStream>,
    set: EventSet,
}

impl SocketConsoleEvents {
    /// Accepts every pending connection; the last one is the client.
    fn accept(&mut self, ops: &mut EventOps) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.attach(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE and the like: a listener that stays readable would spin.
                    log::warn!(
                        "{}: console socket: cannot accept a connection ({e}); no new console can attach until the guest reboots",
                        self.name
                    );
                    let _ = ops.remove(Events::new(&*self.listener, EventSet::IN));
                    return;
                }
            }
        }
    }

    /// Makes `stream` the client: the previous one is told and closed, the new one is
    /// given the scrollback.
    fn attach(&mut self, stream: UnixStream) {
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("{}: console socket: {e}", self.name);
            return;
        }
        let mut state = lock(&self.state);
        let previous = state.client.take();
        if let Some(old) = &previous {
            let _ = send_some(&old.stream, TAKEOVER_NOTICE);
            let _ = old.stream.shutdown(Shutdown::Both);
        }
        let client = Client::new(Arc::new(stream), &state.ring);
        state.client = Some(client);
        drop(state);
        if previous.is_some() {
            log::info!(
                "{}: a console attached, replacing the previous one",
                self.name
            );
        } else {
            log::info!("{}: a console attached", self.name);
        }
        // The previous stream stays open until `sync` has removed it from epoll.
    }

    /// Runs `f` on the shared client if it is still `stream`.
    fn with_client(&self, stream: &Arc<UnixStream>, f: impl FnOnce(&mut Client)) {
        let mut state = lock(&self.state);
        if let Some(c) = state
            .client
            .as_mut()
            .filter(|c| Arc::ptr_eq(&c.stream, stream))
        {
            f(c);
        }
    }

    fn client_ready(&mut self, set: EventSet) {
        let Some(stream) = self.watched.as_ref().map(|w| w.stream.clone()) else {
            return;
        };
        if set.contains(EventSet::OUT) {
            self.with_client(&stream, |c| {
                if c.backlog.send(&c.stream).is_err() {
                    c.gone = true;
                }
            });
        }
        if set.contains(EventSet::IN) && self.input.is_idle() {
            let mut buf = [0u8; READ_CHUNK];
            match (&*stream).read(&mut buf) {
                Ok(0) => self.with_client(&stream, |c| c.input_closed = true),
                Ok(n) => {
                    // Not under the state lock: this takes the UART's.
                    self.input.push(buf.get(..n).unwrap_or_default());
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => self.with_client(&stream, |c| c.gone = true),
            }
        }
        if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.with_client(&stream, |c| c.gone = true);
        }
    }

    /// Brings the epoll registration in line with the shared state: closes a client that
    /// is gone or replaced, and watches the attached one for input (unless the UART's FIFO
    /// is full or it sent EOF) and for room to send its backlog.
    fn sync(&mut self, ops: &mut EventOps) {
        let (attached, wanted) = {
            let mut state = lock(&self.state);
            if state.client.as_ref().is_some_and(|c| c.gone) {
                state.client = None;
                log::info!("{}: the console detached", self.name);
            }
            match &state.client {
                None => (None, EventSet::empty()),
                Some(c) => {
                    let mut set = EventSet::empty();
                    if !c.input_closed && self.input.is_idle() {
                        set |= EventSet::IN;
                    }
                    if !c.backlog.is_empty() {
                        set |= EventSet::OUT;
                    }
                    (Some(c.stream.clone()), set)
                }
            }
        };
        if let Some(w) = &self.watched {
            if !attached.as_ref().is_some_and(|a| Arc::ptr_eq(a, &w.stream)) {
                if !w.set.is_empty() {
                    let _ = ops.remove(Events::new(&*w.stream, w.set));
                }
                // Dropping the last reference closes it.
                self.watched = None;
            }
        }
        let Some(stream) = attached else {
            return;
        };
        let current = self.watched.as_ref().map_or(EventSet::empty(), |w| w.set);
        let result = match (current.is_empty(), wanted.is_empty()) {
            (true, true) => Ok(()),
            (true, false) => ops.add(Events::new(&*stream, wanted)),
            (false, true) => ops.remove(Events::new(&*stream, current)),
            (false, false) if current != wanted => ops.modify(Events::new(&*stream, wanted)),
            (false, false) => Ok(()),
        };
        let set = match result {
            Ok(()) => wanted,
            Err(e) => {
                log::warn!(
                    "{}: console socket: cannot watch the client: {e}",
                    self.name
                );
                current
            }
        };
        self.watched = Some(Watched { stream, set });
    }
}

impl MutEventSubscriber for SocketConsoleEvents {
    fn init(&mut self, ops: &mut EventOps) {
        let fds: [&dyn AsRawFd; 3] = [&*self.listener, &*self.wake, &self.input_ready];
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd.as_raw_fd(), EventSet::IN)) {
                log::warn!("{}: console socket: {e}", self.name);
            }
        }
        self.sync(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
        } else if fd == self.wake.as_raw_fd() {
            let _ = self.wake.read();
        } else if fd == self.input_ready.as_raw_fd() {
            let _ = self.input_ready.read();
            self.input.flush();
        } else if self
            .watched
            .as_ref()
            .is_some_and(|w| w.stream.as_raw_fd() == fd)
        {
            self.client_ready(events.event_set());
        }
        self.sync(ops);
    }
}

/// Sends what `stream` takes now: never blocks (`MSG_DONTWAIT`), never raises SIGPIPE
/// (`MSG_NOSIGNAL`: a client that left is EPIPE). A full socket is `Ok(0)`.
fn send_some(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `bytes` is valid for reads of its length; the result is checked.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    ErrorKind::Interrupted => {}
                    ErrorKind::WouldBlock => return Ok(0),
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Binds the console socket at `path`, mode 0600, replacing a socket file left there.
fn bind_console_socket(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    create_parent(path).map_err(|(_, e)| e)?;
    match fs::symlink_metadata(path) {
        Ok(md) if !md.file_type().is_socket() => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Ok(_) => {
            log::info!("replacing the stale console socket {}", path.display());
            match fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // A few connections may wait while the main thread is busy; only the last one stays.
    let listener = bind_private(path, CONNECT_BACKLOG)?;
    Ok((listener, SocketFile::of(path)?))
}

#[cfg(test)]
mod tests;
