//! The client the CLI uses: one request per connection, answers read with httparse.

use std::fs;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::types::{Action, ErrorBody, VmInfo};

/// How long a request may take, from sending it to the end of the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Errors talking to a VM's control socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No VM there: the socket is missing, or nobody listens on it (a VMM that died).
    #[error("no VM at {path}: {source}")]
    NoSuchVm {
        /// The socket.
        path: PathBuf,
        /// ENOENT or ECONNREFUSED.
        #[source]
        source: io::Error,
    },
    /// Connecting (other than the above, e.g. permission denied), sending or receiving failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The answer is not the HTTP/JSON the API sends.
    #[error("{path}: bad answer from the VM: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The VM refused the request: its `{"error": ...}` and status.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status (409 conflict, 503 unavailable, ...).
        status: u16,
        /// The VM's one-line reason.
        message: String,
    },
}

impl ClientError {
    /// Whether this means "there is no such VM" (missing or stale socket).
    pub fn is_no_such_vm(&self) -> bool {
        matches!(self, ClientError::NoSuchVm { .. })
    }
}

/// A client of one VM's control socket.
///
/// The server answers one request per connection and serves one connection at a time, so
/// each request opens its own connection and nothing is held open in between.
#[derive(Debug)]
pub struct ApiClient {
    path: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// Checks that a VM answers at `path` (connects and closes): [`ClientError::NoSuchVm`]
    /// if the socket is missing or stale.
    pub fn connect(path: impl AsRef<Path>) -> Result<ApiClient, ClientError> {
        let path = path.as_ref().to_owned();
        drop(open(&path)?);
        Ok(ApiClient {
            path,
            timeout: CLIENT_TIMEOUT,
        })
    }

    /// Replaces [`CLIENT_TIMEOUT`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// `GET /vm`.
    pub fn get_info(&mut self) -> Result<VmInfo, ClientError> {
        let body = self.request("GET", "/vm")?;
        serde_json::from_slice(&body).map_err(|e| self.protocol(format!("bad VM info: {e}")))
    }

    /// `PUT /vm/<action>`.
    pub fn put(&mut self, action: Action) -> Result<(), ClientError> {
        self.request("PUT", action.path()).map(drop)
    }

    /// Sends one request and returns the body of a 2xx answer.
    fn request(&mut self, method: &str, target: &str) -> Result<Vec<u8>, ClientError> {
        let mut stream = open(&self.path)?;
        let deadline = Instant::now() + self.timeout;
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let length = if method == "GET" {
            ""
        } else {
            "Content-Length: 0\r\n"
        };
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             {length}Connection: close\r\n\r\n"
        );
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err)?;
        crate::sys::send_all(&stream, head.as_bytes()).map_err(io_err)?;
        let (status, body) = self.read_response(&mut stream, deadline)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
        Err(ClientError::Api { status, message })
    }

    /// Reads one answer: its status and body (`Content-Length` bytes, or up to the close).
    fn read_response(
        &self,
        stream: &mut UnixStream,
        deadline: Instant,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut buf = Vec::with_capacity(4096);
        let mut head: Option<(u16, usize, Option<usize>)> = None;
        loop {
            if head.is_none() {
                head = self.parse_head(&buf)?;
            }
            if let Some((status, head_len, Some(len))) = head {
                if buf.len() >= head_len + len {
                    return Ok((status, buf[head_len..head_len + len].to_vec()));
                }
            }
            if buf.len() > MAX_RESPONSE_BYTES {
                return Err(self.protocol("the answer is too large".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io(ErrorKind::TimedOut.into()));
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io(e))?;
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return match head {
                        Some((status, head_len, None)) => Ok((status, buf.split_off(head_len))),
                        _ => Err(self.protocol("the connection closed mid-answer".into())),
                    }
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.io(ErrorKind::TimedOut.into()))
                }
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Status, header length and Content-Length of a complete response head in `buf`.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, ClientError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(self.protocol(e.to_string())),
        };
        let status = response.code.unwrap_or(0);
        let mut length = None;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .filter(|&n| n <= MAX_RESPONSE_BYTES)
                    .ok_or_else(|| self.protocol("bad Content-Length".into()))?;
                length = Some(n);
            }
        }
        if status == 204 || status == 304 || (100..200).contains(&status) {
            length = Some(0);
        }
        Ok(Some((status, head_len, length)))
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Connects, telling "no VM here" apart from other failures.
fn open(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|source| {
        let path = path.to_owned();
        match source.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                ClientError::NoSuchVm { path, source }
            }
            _ => ClientError::Io { path, source },
        }
    })
}

/// The VMs with a socket in `dir` (normally [`crate::DEFAULT_SOCKET_DIR`]): each `NAME.sock`
/// socket with its `GET /vm` answer or the error getting it (e.g. permission denied for
/// another user's VM), sorted by name. Stale sockets are skipped; a missing directory means
/// no VMs.
pub fn list_vms(dir: &Path) -> io::Result<Vec<(String, Result<VmInfo, ClientError>)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut vms = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".sock")) else {
            continue;
        };
        if name.is_empty() || !entry.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        let info = ApiClient::connect(entry.path()).and_then(|mut c| c.get_info());
        if info.as_ref().is_err_and(ClientError::is_no_such_vm) {
            continue;
        }
        vms.push((name.to_owned(), info));
    }
    vms.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vms)
}
