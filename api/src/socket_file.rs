//! Socket files of ghost-vmm's Unix sockets (the control API's, the console's): a parent
//! folder others may list, a listening socket whose file is created 0600, and removal of the
//! file when its owner goes, unless another file has taken its place.

use std::fs;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Mode of a socket folder created here: others may see which VMs run (not connect).
pub const DIR_MODE: u32 = 0o755;

/// Creates `path`'s parent folder, mode [`DIR_MODE`] whatever the umask, if it is missing.
/// Returns the folder with the error, for the message.
pub fn create_parent(path: &Path) -> Result<(), (PathBuf, io::Error)> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        // The umask may have narrowed it.
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)))
        .map_err(|e| (dir.to_owned(), e))
}

/// Binds and listens on a Unix socket at `path` whose file is created with mode 0600
/// whatever the umask: Linux creates the socket file with the socket inode's mode (less the
/// umask), so narrowing that with fchmod before bind leaves no moment when the file is
/// wider. `backlog` connections may wait in the kernel's queue.
pub fn bind_private(path: &Path, backlog: libc::c_int) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid (AF_UNSPEC, empty path).
    let mut addr: libc::sockaddr_un = unsafe { MaybeUninit::zeroed().assume_init() };
    // One byte is kept for the terminating NUL.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a socket path must be under {} bytes, without NUL",
                addr.sun_path.len()
            ),
        ));
    }
    #[allow(clippy::cast_possible_truncation)] // AF_UNIX is 1.
    let family = libc::AF_UNIX as libc::sa_family_t;
    addr.sun_family = family;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on a descriptor we own; the result is checked.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::cast_possible_truncation)] // Under sizeof(sockaddr_un), checked above.
    let len = (size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is an initialized sockaddr_un and `len` is within it (checked above).
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall on a descriptor we own; the result is checked.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixListener::from(fd))
}

/// A socket file we bound: removed on drop if it is still the one we bound (compared by
/// device and inode), so a successor's socket at the same path is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// The socket file now at `path` (just bound).
    pub fn of(path: &Path) -> io::Result<SocketFile> {
        let md = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            id: (md.dev(), md.ino()),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(md) if (md.dev(), md.ino()) == self.id => {
                match fs::remove_file(&self.path) {
                    Ok(()) => {}
                    // A process that dropped root after binding: its keeper removes it.
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        log::debug!("{} is left to the keeper: {e}", self.path.display())
                    }
                    Err(e) => log::warn!("cannot remove {}: {e}", self.path.display()),
                }
            }
            _ => log::debug!("{} is no longer ours", self.path.display()),
        }
    }
}
