//! virtio-blk: a disk backed by a raw image file or a host block device.
//!
//! - [`DiskImage`] is the backend: opened once per `ghost-vmm run`, locked (`flock`,
//!   exclusive when writable, shared when read-only) so no two VMs write one disk, and kept
//!   across guest reboots behind an `Arc`.
//! - [`Block`] is the [`VirtioDevice`]: one request queue, `EVENT_IDX`, indirect
//!   descriptors, `SEG_MAX`, `BLK_SIZE`, `FLUSH`, `RO` for a read-only disk, `DISCARD` when
//!   the backend can deallocate and `WRITE_ZEROES` for every writable disk.
//! - On activation the device serves its queue on a [`Worker`] thread woken by the queue's
//!   ioeventfd. Requests run asynchronously on an io_uring (several in flight) when the
//!   kernel has one, and synchronously (`preadv`/`pwritev`) on the worker thread otherwise.
//!
//! Building a device for `[[disk]] path = "/var/lib/vms/web.img", readonly = false`:
//!
//! ```no_run
//! # use std::path::Path;
//! # use std::sync::Arc;
//! # use ghost_devices::virtio::block::{Block, DiskImage};
//! let disk = Arc::new(DiskImage::open(Path::new("/var/lib/vms/web.img"), false)?);
//! let block = Block::new(disk.clone(), "web-0".to_owned())?;
//! # Ok::<(), ghost_devices::virtio::block::BlockError>(())
//! ```
//!
//! Every chain is guest-controlled: it is validated completely before any I/O, and
//! a bad one is answered with `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`.

mod disk;
mod handler;
mod queue;
mod request;
mod uring;

#[cfg(test)]
mod tests;

use std::mem::offset_of;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{self as vb, virtio_blk_config};
use virtio_queue::QueueT;

use super::worker::Worker;
use super::{device_type, features as common, ActivateContext, ActivateError, VirtioDevice};
use ghost_sandbox::ThreadKind;

pub use disk::{DiskImage, DiskKind};
#[doc(hidden)]
pub use queue::{process_queue, QueueRun};

/// Size of a virtio-blk sector: every offset and length is in these units.
pub const SECTOR_SIZE: u64 = 512;
/// The block size the driver is told (`blk_size`): one sector.
const BLK_SIZE: u32 = 512;
/// Size of the one request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the GET_ID string (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = vb::VIRTIO_BLK_ID_BYTES as usize;
/// Most data segments per request the driver is told (`seg_max`): a chain of header,
/// segments and status still fits the queue without indirect descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most sectors in one discard range.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Most ranges in one discard request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Most sectors in one write-zeroes range.
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 22;
/// Most ranges in one write-zeroes request.
pub const MAX_WRITE_ZEROES_SEG: u32 = 8;

/// Chains served per worker wake-up before the worker looks at its other events (a reset)
/// and comes back.
const BUDGET: usize = 4 * QUEUE_SIZE as usize;

/// virtio-blk feature bits (virtio 1.2, 5.2.3), as masks.
pub mod features {
    use virtio_bindings::virtio_blk as vb;

    const fn bit(n: u32) -> u64 {
        1 << n
    }

    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = bit(vb::VIRTIO_BLK_F_SEG_MAX);
    /// The disk is read-only.
    pub const RO: u64 = bit(vb::VIRTIO_BLK_F_RO);
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = bit(vb::VIRTIO_BLK_F_BLK_SIZE);
    /// The device takes FLUSH requests.
    pub const FLUSH: u64 = bit(vb::VIRTIO_BLK_F_FLUSH);
    /// The device takes DISCARD requests.
    pub const DISCARD: u64 = bit(vb::VIRTIO_BLK_F_DISCARD);
    /// The device takes WRITE_ZEROES requests.
    pub const WRITE_ZEROES: u64 = bit(vb::VIRTIO_BLK_F_WRITE_ZEROES);
}

/// Why a disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image or device cannot be opened (missing, no permission, ...).
    #[error("cannot open disk {}: {source}", path.display())]
    Open {
        /// The disk's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("disk {} is neither a regular file nor a block device", path.display())]
    NotADisk {
        /// The disk's path.
        path: PathBuf,
    },
    /// Another VM holds the disk (another process holds its lock).
    #[error("disk {} is in use by another VM (it is locked)", path.display())]
    Locked {
        /// The disk's path.
        path: PathBuf,
    },
    /// The block device is in use: mounted on the host, or opened exclusively (`O_EXCL`) by
    /// another process, such as another VM.
    #[error(
        "disk {} is busy (mounted on the host, or opened exclusively by another process)",
        path.display()
    )]
    Busy {
        /// The disk's path.
        path: PathBuf,
    },
    /// Locking failed for another reason than a conflict.
    #[error("cannot lock disk {}: {source}", path.display())]
    Lock {
        /// The disk's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The disk's size cannot be read.
    #[error("cannot read the size of disk {}: {source}", path.display())]
    Size {
        /// The disk's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The serial number does not fit GET_ID.
    #[error("disk serial {serial:?} is longer than {ID_BYTES} bytes")]
    Serial {
        /// The serial asked for.
        serial: String,
    },
}

/// How requests reach the disk once the device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// io_uring when the kernel has it (probed at each activation), else synchronous; also
    /// synchronous for images on tmpfs/ramfs ([`DiskImage::memory_backed`]).
    #[default]
    Auto,
    /// `preadv`/`pwritev` on the worker thread, one request at a time.
    Sync,
}

/// The virtio-blk device.
#[derive(Debug)]
pub struct Block {
    disk: Arc<DiskImage>,
    id: [u8; ID_BYTES],
    config: Vec<u8>,
    avail_features: u64,
    engine: IoEngine,
    worker: Option<Worker>,
}

impl Block {
    /// A device for `disk`. `serial` is what the guest reads with GET_ID (and shows as
    /// `/dev/disk/by-id/virtio-<serial>`): at most 20 bytes.
    pub fn new(disk: Arc<DiskImage>, serial: String) -> Result<Self, BlockError> {
        if serial.len() > ID_BYTES {
            return Err(BlockError::Serial { serial });
        }
        let mut id = [0u8; ID_BYTES];
        id[..serial.len()].copy_from_slice(serial.as_bytes());

        let mut avail_features = common::VERSION_1
            | common::RING_EVENT_IDX
            | common::RING_INDIRECT_DESC
            | features::SEG_MAX
            | features::BLK_SIZE
            | features::FLUSH;
        if disk.readonly() {
            avail_features |= features::RO;
        }
        if disk.supports_discard() {
            avail_features |= features::DISCARD;
        }
        if disk.supports_write_zeroes() {
            avail_features |= features::WRITE_ZEROES;
        }
        let config = config_space(&disk);
        Ok(Self {
            disk,
            id,
            config,
            avail_features,
            engine: IoEngine::Auto,
            worker: None,
        })
    }

    /// Chooses how requests reach the disk from the next activation on.
    pub fn set_io_engine(&mut self, engine: IoEngine) {
        self.engine = engine;
    }

    /// The disk behind the device.
    pub fn disk(&self) -> &Arc<DiskImage> {
        &self.disk
    }
}

/// `struct virtio_blk_config` as the driver reads it (little endian).
fn config_space(disk: &DiskImage) -> Vec<u8> {
    let mut c = vec![0u8; std::mem::size_of::<virtio_blk_config>()];
    let mut put = |offset: usize, bytes: &[u8]| {
        c[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(
        offset_of!(virtio_blk_config, capacity),
        &disk.capacity_sectors().to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, seg_max),
        &SEG_MAX.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, blk_size),
        &BLK_SIZE.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, num_queues),
        &1u16.to_le_bytes(),
    );
    if disk.supports_discard() {
        let alignment = u32::try_from(disk.discard_alignment() / SECTOR_SIZE).unwrap_or(1);
        put(
            offset_of!(virtio_blk_config, max_discard_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_seg),
            &MAX_DISCARD_SEG.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, discard_sector_alignment),
            &alignment.to_le_bytes(),
        );
    }
    if disk.supports_write_zeroes() {
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            &MAX_WRITE_ZEROES_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            &MAX_WRITE_ZEROES_SEG.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, write_zeroes_may_unmap),
            &[u8::from(disk.supports_discard())],
        );
    }
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only (CONFIG_WCE is not offered).
        log::debug!(
            "virtio-blk: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        // A second DRIVER_OK without a reset replaces the running worker.
        self.reset();
        let got = ctx.queues.len();
        let Some(mut activated) = ctx.queues.into_iter().find(|q| q.index == 0) else {
            return Err(ActivateError::Queues { got, need: 1 });
        };
        activated
            .queue
            .set_event_idx(ctx.acked_features & common::RING_EVENT_IDX != 0);
        let handler = handler::BlockHandler::new(
            ctx.mem,
            activated.queue,
            activated.notifier,
            ctx.interrupt,
            self.disk.clone(),
            self.id,
            self.engine,
        );
        let worker = Worker::spawn("virtio-blk".to_owned(), ThreadKind::BlockWorker, handler)
            .map_err(ActivateError::Backend)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            // Returns once the thread is gone: requests in flight have completed and the
            // queue (dropped with the handler) is touched no more.
            worker.stop();
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.reset();
    }
}
