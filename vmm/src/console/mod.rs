//! The host side of the serial console: where output goes, and host input fed to the guest.
//!
//! - stdin (`serial.mode = "stdio"`): [`ConsoleInput`], with the terminal in raw mode
//!   ([`RawTerminal`]);
//! - a file (`"file"`): [`open_console_file`];
//! - a Unix socket (`"socket"`): [`socket::SocketConsole`], for `ghost-vmm console NAME`.
//!
//! Input from either source reaches the UART through a [`UartInput`], which never hands the
//! UART more than its receive FIFO holds.

pub(crate) mod ring;
pub(crate) mod socket;

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
    Ok(Box::new(open_console_log(path)?))
}

/// Opens a console log for appending (created 0640): `serial.path` in file and socket modes.
pub(crate) fn open_console_log(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Bytes from the host on their way to the guest's UART, handed over no faster than its
/// receive FIFO takes them: what does not fit waits here until the guest drains the FIFO
/// (the UART's `input_ready` eventfd fires, and the owner calls [`UartInput::flush`]).
/// An owner stops reading its source while bytes wait ([`UartInput::is_idle`] is false), so
/// the host side never buffers more than one read's worth.
pub(crate) struct UartInput {
    serial: Arc<Mutex<SerialDevice>>,
    pending: Vec<u8>,
}

impl std::fmt::Debug for UartInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UartInput")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl UartInput {
    pub(crate) fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self {
            serial,
            pending: Vec::new(),
        }
    }

    /// Queues `bytes` and moves what fits into the FIFO; true when all of it was taken (the
    /// source may be read again).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        self.flush()
    }

    /// Moves waiting bytes into the FIFO; true when none are left waiting.
    pub(crate) fn flush(&mut self) -> bool {
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

    /// True when no bytes wait for the FIFO.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Feeds bytes from the VMM's stdin to the UART through a [`UartInput`].
#[derive(Debug)]
pub struct ConsoleInput {
    input: File,
    uart: UartInput,
    input_ready: EventFd,
    input_open: bool,
}

impl ConsoleInput {
    /// Reads from `input` (a dup of stdin) into `serial`.
    pub fn new(input: File, serial: Arc<Mutex<SerialDevice>>, input_ready: EventFd) -> Self {
        Self {
            input,
            uart: UartInput::new(serial),
            input_ready,
            input_open: true,
        }
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
            if self.uart.flush() && self.input_open {
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
        if !self.uart.push(&buf[..n]) {
            // The FIFO is full: stop reading until the guest drains it.
            let _ = ops.remove(Events::new(&self.input, EventSet::IN));
        }
    }
}

/// Puts a terminal into character-at-a-time mode (no echo, no line editing) and restores it
/// on drop.
#[derive(Debug)]
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches `fd` if it is a terminal; `None` otherwise. Signal keys are kept, so Ctrl-C
    /// still stops the VMM (`ghost-vmm run` with the console on stdio).
    pub fn enter(fd: RawFd) -> Option<Self> {
        Self::enter_with(fd, true)
    }

    /// [`enter`](Self::enter), but Ctrl-C, Ctrl-Z and Ctrl-\ are bytes like any other: for a
    /// console client (`ghost-vmm console`), where they are meant for the guest.
    pub fn enter_transparent(fd: RawFd) -> Option<Self> {
        Self::enter_with(fd, false)
    }

    fn enter_with(fd: RawFd, keep_signals: bool) -> Option<Self> {
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
        if !keep_signals {
            raw.c_lflag &= !libc::ISIG;
        }
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
