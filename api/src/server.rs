//! The API server: the socket file's life (create, detect a live or stale one, remove) and
//! the `api` thread that answers connections one at a time.

use std::fs;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{handle, parse_request, Parsed, Response};
use crate::ops::VmOps;
use crate::socket_file::{bind_private, create_parent, SocketFile};
use crate::sys;

/// How long a client has to send its whole request, from the moment it is accepted; also
/// the limit on writing the answer. The server serves one connection at a time, so this is
/// the longest a slow or idle client can hold the others up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Pending connections the kernel queues while the server is busy with one.
const BACKLOG: libc::c_int = 64;

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 8192;

/// Errors setting up or starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket's directory is missing and cannot be created.
    #[error("cannot create the control socket directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A live server answers on the socket: another ghost-vmm runs a VM with this socket.
    #[error(
        "control socket {path} is in use by {} (is this VM already running?)",
        pid.map_or("another process".to_owned(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The socket.
        path: PathBuf,
        /// The process that listens on it (SO_PEERCRED), when known.
        pid: Option<u32>,
    },
    /// Something other than a socket is at the path; it is left alone.
    #[error("control socket {path}: the path exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Checking, removing or binding the socket failed.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `api` thread could not be started.
    #[error("cannot start the API thread: {0}")]
    Thread(#[source] io::Error),
}

/// A bound, listening control socket; [`ApiServer::serve`] starts answering on it.
///
/// The socket file is mode 0600 and owned by the user running the VMM. It is removed when
/// the server is dropped (or its thread ends), unless another file has replaced it since.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    file: SocketFile,
    timeout: Duration,
    shutdown: ShutdownHandle,
    wake: UnixStream,
}

impl ApiServer {
    /// Creates the control socket at `path`.
    ///
    /// A missing parent directory is created with mode 0755 (an existing one is left as
    /// it is). If a socket already exists there, it is probed: one a server answers on is
    /// [`ApiError::InUse`] with that server's pid; one nobody listens on (ECONNREFUSED, a
    /// VMM that died) is stale and replaced. Anything else at the path is
    /// [`ApiError::NotASocket`]. (Two VMMs starting on the same path at the same instant
    /// may both see a stale socket; the loser's is removed from under it.)
    pub fn bind(path: &Path) -> Result<ApiServer, ApiError> {
        let socket_err = |source| ApiError::Socket {
            path: path.to_owned(),
            source,
        };
        create_parent(path).map_err(|(path, source)| ApiError::CreateDir { path, source })?;
        match fs::symlink_metadata(path) {
            Ok(md) if !md.file_type().is_socket() => {
                return Err(ApiError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => {
                probe(path)?;
                log::info!("api: removing stale control socket {}", path.display());
                match fs::remove_file(path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(socket_err(e)),
                    _ => {}
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(socket_err(e)),
        }
        let listener = match bind_private(path, BACKLOG) {
            Ok(l) => l,
            // Someone bound it since we looked.
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                probe(path)?;
                return Err(socket_err(e));
            }
            Err(e) => return Err(socket_err(e)),
        };
        let file = SocketFile::of(path).map_err(socket_err)?;
        listener.set_nonblocking(true).map_err(socket_err)?;
        let (wake, waker) = UnixStream::pair().map_err(socket_err)?;
        for end in [&wake, &waker] {
            end.set_nonblocking(true).map_err(socket_err)?;
        }
        Ok(ApiServer {
            listener,
            file,
            timeout: REQUEST_TIMEOUT,
            shutdown: ShutdownHandle {
                inner: Arc::new(ShutdownInner {
                    requested: AtomicBool::new(false),
                    waker,
                }),
            },
            wake,
        })
    }

    /// Replaces [`REQUEST_TIMEOUT`] (tests use a short one).
    pub fn with_request_timeout(mut self, timeout: Duration) -> ApiServer {
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Starts answering on a thread named `api`, calling `ops` for each request. One
    /// connection is served at a time; others wait in the kernel's queue.
    pub fn serve(self, ops: Arc<dyn VmOps>) -> Result<ApiThread, ApiError> {
        let shutdown = self.shutdown.clone();
        // Confined before the first client's bytes are read.
        let thread = ghost_sandbox::spawn_confined(
            "api".into(),
            ghost_sandbox::ThreadKind::Api,
            move || self.run(&*ops),
        )
        .map_err(ApiError::Thread)?;
        Ok(ApiThread {
            thread: Some(thread),
            shutdown,
        })
    }

    fn run(self, ops: &dyn VmOps) {
        log::debug!("api: listening on {}", self.file.path().display());
        while !self.shutdown.requested() {
            match sys::poll_readable([&self.listener, &self.wake], None) {
                Ok([true, _]) => {}
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("api: poll failed, the control API stops: {e}");
                    return;
                }
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.serve_connection(stream, ops),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => {
                    // EMFILE and the like: do not spin on a listener that stays readable.
                    log::warn!("api: accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        log::debug!("api: shut down");
    }

    /// Reads one request (within the timeout and size limits), answers it, closes.
    fn serve_connection(&self, mut stream: UnixStream, ops: &dyn VmOps) {
        let deadline = Instant::now() + self.timeout;
        if let Err(e) = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
        {
            log::warn!("api: cannot set up a connection: {e}");
            return;
        }
        let Some(response) = self.read_and_handle(&mut stream, deadline, ops) else {
            return;
        };
        if response.status() >= 500 {
            log::warn!("api: answering {}", response.status());
        }
        if let Err(e) = sys::send_all(&stream, &response.to_bytes()) {
            log::debug!("api: cannot write the response: {e}");
        }
        // Dropping the stream closes it; bytes the client sent past the request are dropped.
    }

    /// The response to send, or None when there is nobody to answer (the client left, or
    /// the server is shutting down).
    fn read_and_handle(
        &self,
        stream: &mut UnixStream,
        deadline: Instant,
        ops: &dyn VmOps,
    ) -> Option<Response> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match parse_request(&buf) {
                Ok(Parsed::Complete { request, .. }) => {
                    log::debug!("api: {:?} {}", request.method, request.path);
                    return Some(
                        catch_unwind(AssertUnwindSafe(|| handle(&request, ops))).unwrap_or_else(
                            |_| Response::error(500, "the VMM panicked handling the request"),
                        ),
                    );
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => return Some(Response::error(e.status(), e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(Response::error(408, "timed out waiting for the request"));
            }
            match sys::poll_readable([&*stream, &self.wake], Some(left)) {
                Ok([true, _]) => {}
                Ok([false, true]) if self.shutdown.requested() => return None,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("api: poll failed: {e}");
                    return None;
                }
            }
            match stream.read(&mut chunk) {
                // Half a request and then EOF: the client may still read an answer.
                Ok(0) if buf.is_empty() => return None,
                Ok(0) => return Some(Response::error(400, "incomplete request")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(e) => {
                    log::debug!("api: read failed: {e}");
                    return None;
                }
            }
        }
    }
}

/// The running `api` thread. [`ApiThread::shutdown`] (or dropping it) stops the server,
/// waits for the thread and removes the socket file.
#[derive(Debug)]
pub struct ApiThread {
    thread: Option<JoinHandle<()>>,
    shutdown: ShutdownHandle,
}

impl ApiThread {
    /// A handle that asks the server to stop, from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops the server and waits for it: a request being answered is finished first, a
    /// connection still sending its request is closed.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("api: the API thread panicked");
            }
        }
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Asks a running server to stop (see [`ApiThread::shutdown_handle`]); cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownInner>,
}

#[derive(Debug)]
struct ShutdownInner {
    requested: AtomicBool,
    /// Written to wake the server's poll.
    waker: UnixStream,
}

impl ShutdownHandle {
    /// Asks the server to stop; returns at once. Repeating it is harmless.
    pub fn shutdown(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        // Nonblocking: a full buffer already holds a wake-up, and a server that has ended
        // needs none.
        let _ = sys::send_all(&self.inner.waker, &[1]);
    }

    fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }
}

/// Connects to an existing socket: Ok if it is stale (nobody listens), InUse if a server
/// answers.
fn probe(path: &Path) -> Result<(), ApiError> {
    match UnixStream::connect(path) {
        Ok(stream) => Err(ApiError::InUse {
            path: path.to_owned(),
            pid: sys::peer_pid(&stream),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(source) => Err(ApiError::Socket {
            path: path.to_owned(),
            source,
        }),
    }
}
