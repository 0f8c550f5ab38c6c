//! `ghost-vmm console NAME`: this terminal on a VM's console socket (`[serial] mode =
//! "socket"`), telnet-style. The VM replays its last 1 MiB of output, then streams; what is
//! typed goes to the guest's serial port, Ctrl-C included; Ctrl-] detaches. The session also
//! ends when the VM stops or another console attaches (the VM says which, in one line).

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ghost_vmm::config::console_socket_of;
use ghost_vmm::RawTerminal;

use crate::{EXIT_BAD_INPUT, EXIT_VM_FAILED};

/// `ghost-vmm console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM's name (its console socket is NAME.console beside its control socket), or the path of a
    /// `.console` socket
    #[arg(required_unless_present = "socket", conflicts_with = "socket")]
    vm: Option<String>,
    /// The console socket to attach to
    #[arg(long, value_name = "PATH")]
    socket: Option<String>,
}

/// Ctrl-]: detaches, as in telnet.
const ESCAPE: u8 = 0x1d;
/// Typed input the VM has not taken yet is kept up to this much; more is dropped.
const MAX_PENDING_INPUT: usize = 1 << 20;

/// The console to attach to: the VM's name (for messages) and its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    socket: PathBuf,
}

impl Target {
    /// `NAME` (its socket in `/run/ghost-vmm`), a path to a `.console` socket, or
    /// `--socket PATH`.
    fn parse(args: &[&str]) -> Option<Self> {
        match args {
            ["--socket", path] => Some(Self::from_path(Path::new(path))),
            [arg] if !arg.starts_with('-') && !arg.is_empty() => {
                if arg.contains('/') || arg.ends_with(".console") {
                    Some(Self::from_path(Path::new(arg)))
                } else {
                    Some(Self::from_name(arg))
                }
            }
            _ => None,
        }
    }

    fn from_name(name: &str) -> Self {
        let control = ghost_api::default_socket_path(name);
        Self {
            name: name.to_owned(),
            socket: console_socket_of(&control),
        }
    }

    fn from_path(path: &Path) -> Self {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self {
            name,
            socket: path.to_owned(),
        }
    }

    /// Where the VM's control socket would be, if this is the console socket of a VM.
    fn control_socket(&self) -> Option<PathBuf> {
        self.socket
            .extension()
            .is_some_and(|e| e == "console")
            .then(|| self.socket.with_extension("sock"))
    }

    /// Why connecting failed, as one line.
    fn connect_error(&self, error: &io::Error) -> String {
        let (name, path) = (&self.name, self.socket.display());
        match error.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                let mut line =
                    format!("no VM named {name} is running (no console socket at {path})");
                // A VM whose control socket is there but that has no console socket runs
                // with another serial mode.
                let running = self.control_socket().is_some_and(|c| {
                    std::fs::symlink_metadata(c).is_ok_and(|m| m.file_type().is_socket())
                });
                if running && error.kind() == ErrorKind::NotFound {
                    line.push_str(", or its [serial] mode is not \"socket\"");
                }
                line
            }
            _ => format!("cannot connect to the console of {name} at {path}: {error}"),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The user typed Ctrl-].
    Detached,
    /// The VM closed the connection (it stopped, or another console attached).
    Closed,
}

/// `ghost-vmm console ARGS...`.
pub(crate) fn main(args: &ConsoleArgs) -> ExitCode {
    let words: Vec<&str> = match (&args.socket, &args.vm) {
        (Some(socket), _) => vec!["--socket", socket.as_str()],
        (None, Some(vm)) => vec![vm.as_str()],
        (None, None) => Vec::new(),
    };
    let Some(target) = Target::parse(&words) else {
        eprintln!("ghost-vmm: error: console: name a VM, or --socket PATH");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let stream = match UnixStream::connect(&target.socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ghost-vmm: error: {}", target.connect_error(&e));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    eprint!(
        "Connected to {}.\r\nEscape character is ^].\r\n",
        target.name
    );
    let terminal = RawTerminal::enter_transparent(libc::STDIN_FILENO);
    let mut session = Session::new(stream);
    let result = session.run();
    drop(terminal);
    if !session.at_line_start && is_tty(libc::STDERR_FILENO) {
        eprintln!();
    }
    match result {
        Ok(End::Detached) => {
            eprintln!("Detached from {}.", target.name);
            ExitCode::SUCCESS
        }
        Ok(End::Closed) => {
            eprintln!("Connection to {} closed.", target.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ghost-vmm: error: the console of {}: {e}", target.name);
            ExitCode::from(EXIT_VM_FAILED)
        }
    }
}

fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// One attached console: stdin to the socket, the socket to stdout.
struct Session {
    socket: UnixStream,
    /// Typed, not yet taken by the socket.
    to_vm: Vec<u8>,
    stdin_open: bool,
    /// stdin ended: shut down our sending side once `to_vm` is sent.
    shutdown_pending: bool,
    /// The last byte written to stdout was a newline (or nothing was written).
    at_line_start: bool,
}

impl Session {
    fn new(socket: UnixStream) -> Self {
        Self {
            socket,
            to_vm: Vec::new(),
            stdin_open: true,
            shutdown_pending: false,
            at_line_start: true,
        }
    }

    fn run(&mut self) -> io::Result<End> {
        self.socket.set_nonblocking(true)?;
        let mut stdout = io::stdout().lock();
        let mut from_vm = vec![0u8; 64 * 1024];
        let mut typed = [0u8; 4096];
        loop {
            let mut fds = [
                libc::pollfd {
                    // A negative fd is ignored by poll.
                    fd: if self.stdin_open {
                        libc::STDIN_FILENO
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN
                        | if self.to_vm.is_empty() {
                            0
                        } else {
                            libc::POLLOUT
                        },
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is an array of two valid pollfd structs.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let [stdin_events, socket_events] = [fds[0].revents, fds[1].revents];
            if socket_events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match (&self.socket).read(&mut from_vm) {
                    Ok(0) => return Ok(End::Closed),
                    Ok(n) => {
                        let bytes = from_vm.get(..n).unwrap_or_default();
                        stdout.write_all(bytes)?;
                        stdout.flush()?;
                        self.at_line_start = bytes.last() == Some(&b'\n');
                    }
                    Err(e) if retry(&e) => {}
                    Err(e) if gone(&e) => return Ok(End::Closed),
                    Err(e) => return Err(e),
                }
            }
            if socket_events & libc::POLLOUT != 0 && self.send_typed()? {
                return Ok(End::Closed);
            }
            if stdin_events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                // SAFETY: `typed` is valid for writes of its length; the result is checked.
                let n = unsafe {
                    libc::read(libc::STDIN_FILENO, typed.as_mut_ptr().cast(), typed.len())
                };
                match usize::try_from(n) {
                    Ok(0) => {
                        // Nothing more to type; the output goes on until the VM closes.
                        self.stdin_open = false;
                        self.shutdown_pending = true;
                    }
                    Ok(n) => {
                        let bytes = typed.get(..n).unwrap_or_default();
                        if let Some(i) = bytes.iter().position(|&b| b == ESCAPE) {
                            self.type_bytes(bytes.get(..i).unwrap_or_default());
                            // What was typed before Ctrl-] goes out if the socket takes it now.
                            self.send_typed()?;
                            return Ok(End::Detached);
                        }
                        self.type_bytes(bytes);
                    }
                    Err(_) => {
                        let e = io::Error::last_os_error();
                        if !retry(&e) {
                            return Err(e);
                        }
                    }
                }
                if self.send_typed()? {
                    return Ok(End::Closed);
                }
            }
        }
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.to_vm.len());
        self.to_vm
            .extend_from_slice(bytes.get(..bytes.len().min(room)).unwrap_or_default());
    }

    /// Sends typed bytes without blocking; true when the VM has closed the connection.
    fn send_typed(&mut self) -> io::Result<bool> {
        while !self.to_vm.is_empty() {
            match (&self.socket).write(&self.to_vm) {
                Ok(n) => {
                    self.to_vm.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if gone(&e) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        if self.shutdown_pending {
            self.shutdown_pending = false;
            let _ = self.socket.shutdown(Shutdown::Write);
        }
        Ok(false)
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_its_socket_in_run_ghost_vmm() {
        assert_eq!(
            Target::parse(&["web"]),
            Some(Target {
                name: "web".into(),
                socket: ghost_api::socket_dir().join("web.console"),
            })
        );
    }

    #[test]
    fn a_path_or_socket_option_names_the_socket() {
        for args in [
            &["--socket", "/tmp/x/ctl.console"][..],
            &["/tmp/x/ctl.console"][..],
        ] {
            assert_eq!(
                Target::parse(args),
                Some(Target {
                    name: "ctl".into(),
                    socket: PathBuf::from("/tmp/x/ctl.console"),
                })
            );
        }
        assert_eq!(
            Target::parse(&["ctl.console"]).map(|t| t.socket),
            Some(PathBuf::from("ctl.console"))
        );
        assert_eq!(
            Target::parse(&["--socket", "./s"]).map(|t| t.name),
            Some("s".into())
        );
    }

    #[test]
    fn bad_usage() {
        for args in [
            &[][..],
            &["a", "b"][..],
            &["--socket"][..],
            &["--help"][..],
            &[""][..],
        ] {
            assert_eq!(Target::parse(args), None, "{args:?}");
        }
    }

    #[test]
    fn connect_errors_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = Target::from_path(&dir.path().join("vm.console"));
        let missing = io::Error::from(ErrorKind::NotFound);
        let path = dir.path().join("vm.console");
        assert_eq!(
            target.connect_error(&missing),
            format!(
                "no VM named vm is running (no console socket at {})",
                path.display()
            )
        );
        // A control socket but no console socket: another serial mode.
        let _control = std::os::unix::net::UnixListener::bind(dir.path().join("vm.sock"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            target.connect_error(&missing),
            format!(
                "no VM named vm is running (no console socket at {}), or its [serial] mode is not \"socket\"",
                path.display()
            )
        );
        let refused = io::Error::from(ErrorKind::ConnectionRefused);
        assert!(!target.connect_error(&refused).contains("mode"));
        let denied = io::Error::from(ErrorKind::PermissionDenied);
        assert!(target
            .connect_error(&denied)
            .starts_with("cannot connect to the console of vm at "));
    }
}
