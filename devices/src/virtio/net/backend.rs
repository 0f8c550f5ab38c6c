//! Where a virtio-net device's frames go: the [`NetBackend`] trait, and [`PacketSocket`], a
//! frame-preserving socket pair that stands in for a TAP in tests and fuzzing.
//!
//! A backend moves whole frames, each prefixed with the 12-byte `virtio_net_hdr_v1` exactly as
//! the guest wrote it (TX) or as the guest will read it (RX), so the device copies nothing:
//! the frame goes straight between guest buffers and the kernel with one `readv`/`writev`.

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vm_memory::bitmap::Bitmap;
use vm_memory::VolatileSlice;

use super::NetError;

/// Most scatter-gather entries one `readv`/`writev` takes (`UIO_MAXIOV`).
pub const MAX_IOVECS: usize = 1024;

/// A file descriptor that carries one frame (virtio-net header first) per read or write.
///
/// The descriptor must be non-blocking: reads and writes return
/// [`io::ErrorKind::WouldBlock`] instead of waiting, and the device's worker waits for it in
/// epoll (it watches [`AsRawFd::as_raw_fd`]). The provided methods do one `readv`/`writev` on
/// it, which is right for a TAP and for a `SOCK_SEQPACKET` socket.
pub trait NetBackend: AsRawFd + Debug + Send + Sync {
    /// Reads one frame into `bufs`, in order; returns its length. A frame larger than `bufs`
    /// is lost (a TAP fails with `EFAULT`, a socket truncates it).
    fn read_frame(&self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        let iovecs = to_iovecs(bufs)?;
        let len = libc::c_int::try_from(iovecs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: each iovec describes a `VolatileSlice` of `bufs`, which is valid for writes
        // of its length for the lifetime of `bufs`, i.e. the whole call; the fd is ours.
        let n = unsafe { libc::readv(self.as_raw_fd(), iovecs.as_ptr(), len) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for buf in bufs {
            // Account the bytes the kernel wrote for dirty-page tracking.
            buf.bitmap().mark_dirty(0, buf.len());
        }
        Ok(n)
    }

    /// Writes `bufs`, concatenated, as one frame; returns the bytes written.
    fn write_frame(&self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        let iovecs = to_iovecs(bufs)?;
        let len = libc::c_int::try_from(iovecs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: each iovec describes a `VolatileSlice` of `bufs`, valid for reads of its
        // length for the whole call; the kernel only reads through them.
        let n = unsafe { libc::writev(self.as_raw_fd(), iovecs.as_ptr(), len) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// The driver accepted `acked_features`: let the backend hand over (and accept) the
    /// checksum and segmentation offloads they include. Default: nothing to do.
    fn set_offloads(&self, acked_features: u64) -> Result<(), NetError> {
        let _ = acked_features;
        Ok(())
    }
}

/// The iovecs describing `bufs`. Fails with `EINVAL` past [`MAX_IOVECS`].
fn to_iovecs(bufs: &[VolatileSlice<'_>]) -> io::Result<Vec<libc::iovec>> {
    if bufs.len() > MAX_IOVECS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(bufs
        .iter()
        .map(|b| libc::iovec {
            // The pointer is only handed to the kernel while `bufs` (and so the mapping)
            // lives. `ptr_guard_mut` only matters for Xen-style mappings, which ghost-vmm
            // does not use; for plain mmap regions it is the slice's address.
            iov_base: b.ptr_guard_mut().as_ptr().cast(),
            iov_len: b.len(),
        })
        .collect())
}

/// One end of an `AF_UNIX` `SOCK_SEQPACKET` socket pair: every send is one frame.
///
/// Used as a [`NetBackend`] in tests and fuzzing (the other end plays the network), and
/// usable to connect a device to a user-space switch.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// A connected pair, both ends non-blocking and close-on-exec.
    pub fn pair() -> io::Result<(PacketSocket, PacketSocket)> {
        let mut fds = [-1; 2];
        // SAFETY: socketpair writes two descriptors into `fds`, which has room for them.
        let ret = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded, so both are fresh descriptors owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((PacketSocket { fd: a }, PacketSocket { fd: b }))
    }

    /// Sends `frame` as one message.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of its length during the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Receives one message into `buf` (truncated to its length); returns the bytes stored.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetBackend for PacketSocket {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_socket_preserves_frame_boundaries() {
        let (a, b) = PacketSocket::pair().unwrap();
        let mut one = *b"hello";
        let mut two = *b", world";
        // SAFETY: the arrays outlive the slices, and nothing else accesses them meanwhile.
        let bufs = unsafe {
            [
                VolatileSlice::new(one.as_mut_ptr(), one.len()),
                VolatileSlice::new(two.as_mut_ptr(), two.len()),
            ]
        };
        assert_eq!(a.write_frame(&bufs).unwrap(), 12);
        a.send(b"second").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf).unwrap(), 12);
        assert_eq!(&buf[..12], b"hello, world");
        let mut small = [0u8; 3];
        let mut rest = [0u8; 64];
        // SAFETY: as above.
        let bufs = unsafe {
            [
                VolatileSlice::new(small.as_mut_ptr(), small.len()),
                VolatileSlice::new(rest.as_mut_ptr(), rest.len()),
            ]
        };
        assert_eq!(b.read_frame(&bufs).unwrap(), 6);
        assert_eq!(&small, b"sec");
        assert_eq!(&rest[..3], b"ond");
        let err = b.read_frame(&bufs).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
