//! The host side of the serial console: where output goes, and stdin fed to the guest.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use ghost_devices::serial::{SerialDevice, SerialOutput};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Opens the console output sink for a `serial.mode = "file"` path (appending, created 0640).
pub fn open_console_file(path: &Path) -> std::io::Result<SerialOutput> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    Ok(Box::new(f))
}

/// Feeds bytes from the VMM's stdin to the UART, never more than its FIFO takes: the rest
/// waits until the guest drains the FIFO (`input_ready`).
pub struct ConsoleInput {
    input: File,
    serial: Arc<Mutex<SerialDevice>>,
    input_ready: EventFd,
    pending: Vec<u8>,
    input_open: bool,
}

impl std::fmt::Debug for ConsoleInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleInput")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ConsoleInput {
    /// Reads from `input` (a dup of stdin) into `serial`.
    pub fn new(input: File, serial: Arc<Mutex<SerialDevice>>, input_ready: EventFd) -> Self {
        Self {
            input,
            serial,
            input_ready,
            pending: Vec::new(),
            input_open: true,
        }
    }

    /// Moves pending bytes into the UART; true when everything pending was taken.
    fn flush_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let taken = self
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue_input(&self.pending);
        self.pending.drain(..taken);
        self.pending.is_empty()
    }

    fn input_fd(&self) -> RawFd {
        self.input.as_raw_fd()
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // Registration can fail only for a bad fd; the console then simply has no input.
        let _ = ops.add(Events::new(&self.input, EventSet::IN));
        let _ = ops.add(Events::new(&self.input_ready, EventSet::IN));
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.input_ready.as_raw_fd() {
            let _ = self.input_ready.read();
            if self.flush_pending() && self.input_open {
                // Resume reading the terminal now that the FIFO has room.
                let _ = ops.add(Events::new(&self.input, EventSet::IN));
            }
            return;
        }
        if events.fd() != self.input_fd() {
            return;
        }
        let mut buf = [0u8; 64];
        let n = match self.input.read(&mut buf) {
            Ok(0) => {
                // EOF: nothing more will come; stop polling a closed stdin.
                self.input_open = false;
                let _ = ops.remove(Events::new(&self.input, EventSet::IN));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.input_open = false;
                let _ = ops.remove(Events::new(&self.input, EventSet::IN));
                return;
            }
        };
        self.pending.extend_from_slice(&buf[..n]);
        if !self.flush_pending() {
            // The FIFO is full: stop reading until the guest drains it.
            let _ = ops.remove(Events::new(&self.input, EventSet::IN));
        }
    }
}

/// Puts a terminal into character-at-a-time mode (no echo, no line editing, signals kept so
/// Ctrl-C still stops the VMM) and restores it on drop.
#[derive(Debug)]
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches `fd` if it is a terminal; `None` otherwise.
    pub fn enter(fd: RawFd) -> Option<Self> {
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a valid terminal fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::IEXTEN);
        raw.c_iflag &= !(libc::ICRNL | libc::IXON);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from this same fd.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}
