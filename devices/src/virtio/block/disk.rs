//! The host side of a virtio disk: a raw image file or a block device, locked against a
//! second VM, with the discard / write-zeroes capabilities of what lies underneath.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

use super::{BlockError, SECTOR_SIZE};

// <linux/fs.h> block device ioctls.
ioctl_ior_nr!(BLKGETSIZE64, 0x12, 114, u64);
ioctl_io_nr!(BLKDISCARD, 0x12, 119);
ioctl_io_nr!(BLKZEROOUT, 0x12, 127);

/// Most iovecs one `preadv`/`pwritev` takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Size of the buffer of zeroes written when the backend cannot zero a range itself.
const ZERO_CHUNK: usize = 64 * 1024;

/// How write-zeroes requests reach a regular file; a method the filesystem refuses is not
/// tried again, and past the last one, zeroes are written.
const ZERO_BY_ZERO_RANGE: u8 = 0;
const ZERO_BY_PUNCH_HOLE: u8 = 1;

/// What the disk is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// A raw image in a regular file.
    File,
    /// A host block device.
    BlockDevice,
}

/// An opened, locked disk image.
///
/// The lock (`flock`: exclusive when writable, shared when read-only) lives as long as the
/// `DiskImage`, so two VMs never write one disk, and no VM writes a disk another one reads.
/// Share it between successive boots of a VM with an `Arc`.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    kind: DiskKind,
    readonly: bool,
    size: u64,
    discard: bool,
    discard_alignment: u64,
    memory_backed: bool,
    zero_method: AtomicU8,
}

impl DiskImage {
    /// Opens `path` (a raw image file or a block device) for a VM, read-only or read-write,
    /// and locks it without waiting. A writable block device is also opened `O_EXCL`, so a
    /// device the host has mounted is refused.
    pub fn open(path: &Path, readonly: bool) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let kind = if meta.file_type().is_block_device() {
            DiskKind::BlockDevice
        } else if meta.is_file() {
            DiskKind::File
        } else {
            return Err(BlockError::NotADisk {
                path: path.to_owned(),
            });
        };
        let mut flags = libc::O_CLOEXEC;
        if kind == DiskKind::BlockDevice && !readonly {
            flags |= libc::O_EXCL;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    BlockError::Busy {
                        path: path.to_owned(),
                    }
                } else {
                    open_err(e)
                }
            })?;
        lock(&file, path, readonly)?;

        let size = match kind {
            DiskKind::File => file
                .metadata()
                .map_err(|source| BlockError::Size {
                    path: path.to_owned(),
                    source,
                })?
                .len(),
            DiskKind::BlockDevice => {
                block_device_size(&file).map_err(|source| BlockError::Size {
                    path: path.to_owned(),
                    source,
                })?
            }
        };
        if size % SECTOR_SIZE != 0 {
            log::warn!(
                "disk {}: its size ({size} bytes) is not a multiple of {SECTOR_SIZE}; \
                 the guest does not see the last {} bytes",
                path.display(),
                size % SECTOR_SIZE
            );
        }

        let (discard, discard_alignment) = if readonly {
            (false, SECTOR_SIZE)
        } else {
            match kind {
                DiskKind::File => (
                    file_can_punch_holes(&file, size),
                    meta.blksize().max(SECTOR_SIZE),
                ),
                DiskKind::BlockDevice => block_device_discard(meta.rdev()),
            }
        };

        let memory_backed = kind == DiskKind::File && on_memory_fs(&file);
        Ok(Self {
            file,
            path: path.to_owned(),
            kind,
            readonly,
            size,
            discard,
            discard_alignment,
            memory_backed,
            zero_method: AtomicU8::new(ZERO_BY_ZERO_RANGE),
        })
    }

    /// Whether the image is a file on a memory file system (tmpfs, ramfs). There I/O is a
    /// memory copy that never waits for a device, and io_uring would hand every request to
    /// a kernel worker thread (these file systems cannot do non-blocking buffered I/O), so
    /// serving requests synchronously is faster.
    pub fn memory_backed(&self) -> bool {
        self.memory_backed
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A regular file or a block device.
    pub fn kind(&self) -> DiskKind {
        self.kind
    }

    /// Whether the guest may only read.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What the guest sees: the number of whole 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Bytes the guest can address (`capacity_sectors * 512`).
    pub(crate) fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors() * SECTOR_SIZE
    }

    /// Whether the backend can deallocate ranges (hole punching, `BLKDISCARD`): the device
    /// then offers `VIRTIO_BLK_F_DISCARD`.
    pub fn supports_discard(&self) -> bool {
        self.discard
    }

    /// Whether the device offers `VIRTIO_BLK_F_WRITE_ZEROES`: every writable disk (the
    /// backend zeroes ranges itself where it can, and is written zeroes otherwise).
    pub fn supports_write_zeroes(&self) -> bool {
        !self.readonly
    }

    /// The granularity of deallocation, in bytes (a multiple of 512).
    pub fn discard_alignment(&self) -> u64 {
        self.discard_alignment
    }

    /// Reads the disk at `offset` into `iovs`, entirely, or fails.
    pub(crate) fn read_vectored_at(&self, iovs: &mut [libc::iovec], offset: u64) -> io::Result<()> {
        self.transfer(iovs, offset, false)
    }

    /// Writes `iovs` to the disk at `offset`, entirely, or fails.
    pub(crate) fn write_vectored_at(
        &self,
        iovs: &mut [libc::iovec],
        offset: u64,
    ) -> io::Result<()> {
        self.transfer(iovs, offset, true)
    }

    fn transfer(&self, iovs: &mut [libc::iovec], mut offset: u64, write: bool) -> io::Result<()> {
        let mut iovs = iovs;
        skip_empty(&mut iovs);
        while !iovs.is_empty() {
            let count = iovs.len().min(IOV_MAX);
            let count_c = libc::c_int::try_from(count).map_err(io::Error::other)?;
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let done = if write {
                // SAFETY: `iovs[..count]` are valid iovecs; the caller guarantees that each
                // points at `iov_len` readable bytes (guest memory it holds mapped) for the
                // duration of the call. The kernel only reads them.
                unsafe { libc::pwritev(self.file.as_raw_fd(), iovs.as_ptr(), count_c, off) }
            } else {
                // SAFETY: as above; the caller guarantees that each iovec points at `iov_len`
                // writable bytes, which nothing else in this process reads or writes as Rust
                // references during the call.
                unsafe { libc::preadv(self.file.as_raw_fd(), iovs.as_ptr(), count_c, off) }
            };
            if done < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let done = usize::try_from(done).map_err(io::Error::other)?;
            if done == 0 {
                // The image shrank under us (or the device went away).
                return Err(io::Error::from(if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                }));
            }
            advance(&mut iovs, done);
            offset += done as u64;
        }
        Ok(())
    }

    /// Makes every completed write durable (`fdatasync`).
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes every completed write durable (`fdatasync`): what the VMM does when a VM stops,
    /// once its device models (and their requests in flight) are gone.
    pub fn sync(&self) -> io::Result<()> {
        self.flush()
    }

    /// Deallocates `len` bytes at `offset`. A backend that turns out not to support it is
    /// left as it is: discarding is a hint.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let result = match self.kind {
            DiskKind::File => self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ),
            DiskKind::BlockDevice => self.range_ioctl(BLKDISCARD(), offset, len),
        };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            other => other,
        }
    }

    /// Makes `len` bytes at `offset` read as zeroes; `unmap` allows deallocating them.
    pub(crate) fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if self.kind == DiskKind::BlockDevice {
            return self.range_ioctl(BLKZEROOUT(), offset, len);
        }
        if unmap && self.discard {
            match self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ) {
                Err(e) if unsupported(&e) => {}
                other => return other,
            }
        }
        loop {
            let method = self.zero_method.load(Ordering::Relaxed);
            let result = match method {
                ZERO_BY_ZERO_RANGE => self.fallocate(
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                ),
                ZERO_BY_PUNCH_HOLE if self.discard => self.fallocate(
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                ),
                // Past the last method (or no hole punching): write zeroes.
                _ => return self.write_zero_bytes(offset, len),
            };
            match result {
                Err(e) if unsupported(&e) => {
                    self.zero_method.store(method + 1, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    /// Makes write-zeroes start from `method` (tests reach the fallbacks with it).
    #[cfg(test)]
    pub(crate) fn force_zero_method_for_test(&self, method: u8) {
        self.zero_method.store(method, Ordering::Relaxed);
    }

    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> io::Result<()> {
        static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        while offset < end {
            let chunk = usize::try_from(end - offset).map_or(ZERO_CHUNK, |n| n.min(ZERO_CHUNK));
            self.file.write_all_at(&ZEROES[..chunk], offset)?;
            offset += chunk as u64;
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let offset = libc::off_t::try_from(offset).map_err(|_| einval())?;
        let len = libc::off_t::try_from(len).map_err(|_| einval())?;
        loop {
            // SAFETY: fallocate on a descriptor we own; it touches no memory of ours.
            let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if ret == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn range_ioctl(&self, request: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD and BLKZEROOUT read two u64s (start, length) from the pointer,
        // which points at `range`, alive for the call.
        let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.file, request, &range) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsRawFd for DiskImage {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// `EOPNOTSUPP` (and `EINVAL`, which some filesystems return for modes they lack).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

fn lock(file: &File, path: &Path, readonly: bool) -> Result<(), BlockError> {
    let op = if readonly {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on a descriptor we own; it touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                return Err(BlockError::Locked {
                    path: path.to_owned(),
                })
            }
            _ => {
                return Err(BlockError::Lock {
                    path: path.to_owned(),
                    source: err,
                })
            }
        }
    }
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(file, BLKGETSIZE64(), &mut size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(size)
    }
}

/// Whether the filesystem punches holes: punching past the end of the file changes nothing
/// and fails with `EOPNOTSUPP` where the operation is missing.
fn file_can_punch_holes(file: &File, size: u64) -> bool {
    let Ok(offset) = libc::off_t::try_from(size) else {
        return false;
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor we own; it touches no memory of ours.
    unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, 4096) == 0 }
}

/// Discard support and granularity of a block device, from sysfs (`queue/` is in the parent
/// directory for a partition).
fn block_device_discard(rdev: u64) -> (bool, u64) {
    let base = format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev));
    let read = |name: &str| -> Option<u64> {
        ["queue", "../queue"].iter().find_map(|dir| {
            std::fs::read_to_string(format!("{base}/{dir}/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
    };
    let max = read("discard_max_bytes").unwrap_or(0);
    let granularity = read("discard_granularity").unwrap_or(0);
    let alignment = if granularity >= SECTOR_SIZE && granularity % SECTOR_SIZE == 0 {
        granularity
    } else {
        SECTOR_SIZE
    };
    (max > 0, alignment)
}

/// Drops leading empty iovecs.
fn skip_empty(iovs: &mut &mut [libc::iovec]) {
    while iovs.first().is_some_and(|v| v.iov_len == 0) {
        let rest = std::mem::take(iovs);
        *iovs = &mut rest[1..];
    }
}

/// Moves past `n` transferred bytes.
pub(crate) fn advance(iovs: &mut &mut [libc::iovec], mut n: usize) {
    while n > 0 {
        let Some(first) = iovs.first_mut() else {
            return;
        };
        if n >= first.iov_len {
            n -= first.iov_len;
            let rest = std::mem::take(iovs);
            *iovs = &mut rest[1..];
        } else {
            // Stays within the buffer the iovec describes: n < iov_len.
            first.iov_base = first.iov_base.cast::<u8>().wrapping_add(n).cast();
            first.iov_len -= n;
            n = 0;
        }
    }
    skip_empty(iovs);
}

/// Whether `file` lives on tmpfs or ramfs.
fn on_memory_fs(file: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: statfs is plain data; fstatfs fills it for a descriptor we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is to a live, writable statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type, TMPFS_MAGIC | RAMFS_MAGIC)
}
