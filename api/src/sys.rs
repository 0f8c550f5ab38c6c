//! The few system calls std does not offer: the peer's pid (SO_PEERCRED), poll(2), and
//! writes that never raise SIGPIPE. (The 0600 listening socket is `socket_file`'s.)

use std::io;
use std::mem::size_of_val;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The pid of the process that created the socket at the other end of `stream` (for a
/// connection to a listening socket: the process that called listen).
pub(crate) fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    #[allow(clippy::cast_possible_truncation)] // 12 bytes.
    let mut len = size_of_val(&cred) as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` is `cred`'s size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then(|| cred.pid.unsigned_abs())
}

/// Which of the descriptors given to [`poll_readable`] are readable (or hung up).
pub(crate) fn poll_readable<const N: usize>(
    fds: [&dyn AsRawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // Round up, so a wait never ends just before its deadline.
    let timeout_ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: `pollfds` is an array of N valid pollfd structs.
    let rc = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pollfds.map(|p| p.revents != 0))
}

/// Writes all of `bytes` to `stream` with send(MSG_NOSIGNAL): a peer that has gone is an
/// EPIPE error, never a SIGPIPE, whatever the process's signal setup. The stream's write
/// timeout applies.
pub(crate) fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length; the result is checked.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
