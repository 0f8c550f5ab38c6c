//! virtio-net: a network card whose frames go to a host TAP interface.
//!
//! - [`Net`] is the [`VirtioDevice`]: two queues (RX = 0, TX = 1), a MAC address, link up,
//!   mergeable receive buffers, `EVENT_IDX`, and the checksum/segmentation offloads, which it
//!   programs into the backend from what the driver accepted.
//! - [`NetBackend`] is where frames go: a [`Tap`] in ghost-vmm, a [`PacketSocket`] in tests.
//!   Every frame carries the 12-byte `virtio_net_hdr_v1` the guest reads and writes, so frames
//!   move between guest buffers and the kernel with one `readv`/`writev` and no copy.
//! - [`NetQueues`] is the data path, synchronous; on activation the device runs it on a
//!   [`Worker`] thread driven by queue kicks and backend readiness.
//!
//! Building a device for `[[net]] tap = "tap-ws0"`:
//!
//! ```no_run
//! # use ghost_devices::virtio::net::{Net, Tap};
//! let tap = Tap::open("tap-ws0")?; // created (and removed on exit) if it did not exist
//! let net = Net::new(Box::new(tap), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
//! # Ok::<(), ghost_devices::virtio::net::NetError>(())
//! ```

mod backend;
mod datapath;
mod handler;
mod tap;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use virtio_bindings::virtio_net as vn;

use super::worker::Worker;
use super::{ActivateContext, ActivateError, VirtioDevice};
use ghost_sandbox::ThreadKind;

pub use backend::{NetBackend, PacketSocket, MAX_IOVECS};
pub use datapath::{NetQueues, NetStats, RxOutcome, TxOutcome, MAX_FRAME_LEN};
pub use tap::Tap;

/// Size of the header before every frame: `struct virtio_net_hdr_v1` (with `num_buffers`),
/// the header of `VIRTIO_F_VERSION_1` devices.
pub const NET_HDR_LEN: usize = std::mem::size_of::<vn::virtio_net_hdr_v1>();

/// Index of the receive queue.
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: u16 = 1;
/// Size each queue offers.
pub const QUEUE_SIZE: u16 = 256;

/// virtio-net feature bits (virtio 1.2, 5.1.3), as masks.
pub mod features {
    use virtio_bindings::virtio_net as vn;

    const fn bit(n: u32) -> u64 {
        1 << n
    }

    /// The device takes frames with partial checksums (TX checksum offload).
    pub const CSUM: u64 = bit(vn::VIRTIO_NET_F_CSUM);
    /// The driver takes frames with partial checksums (RX checksum offload).
    pub const GUEST_CSUM: u64 = bit(vn::VIRTIO_NET_F_GUEST_CSUM);
    /// The device has a MAC address in its configuration space.
    pub const MAC: u64 = bit(vn::VIRTIO_NET_F_MAC);
    /// The driver takes TCPv4 segmentation offload frames.
    pub const GUEST_TSO4: u64 = bit(vn::VIRTIO_NET_F_GUEST_TSO4);
    /// The driver takes TCPv6 segmentation offload frames.
    pub const GUEST_TSO6: u64 = bit(vn::VIRTIO_NET_F_GUEST_TSO6);
    /// The driver takes TSO frames with ECN.
    pub const GUEST_ECN: u64 = bit(vn::VIRTIO_NET_F_GUEST_ECN);
    /// The driver takes UDP fragmentation offload frames.
    pub const GUEST_UFO: u64 = bit(vn::VIRTIO_NET_F_GUEST_UFO);
    /// The device takes TCPv4 segmentation offload frames.
    pub const HOST_TSO4: u64 = bit(vn::VIRTIO_NET_F_HOST_TSO4);
    /// The device takes TCPv6 segmentation offload frames.
    pub const HOST_TSO6: u64 = bit(vn::VIRTIO_NET_F_HOST_TSO6);
    /// The device takes TSO frames with ECN.
    pub const HOST_ECN: u64 = bit(vn::VIRTIO_NET_F_HOST_ECN);
    /// The device takes UDP fragmentation offload frames.
    pub const HOST_UFO: u64 = bit(vn::VIRTIO_NET_F_HOST_UFO);
    /// The driver can merge receive buffers: a large frame may span several RX chains.
    pub const MRG_RXBUF: u64 = bit(vn::VIRTIO_NET_F_MRG_RXBUF);
    /// The configuration space has a link status field.
    pub const STATUS: u64 = bit(vn::VIRTIO_NET_F_STATUS);

    /// Every checksum and segmentation offload the device offers.
    pub const OFFLOADS: u64 = CSUM
        | GUEST_CSUM
        | GUEST_TSO4
        | GUEST_TSO6
        | GUEST_ECN
        | GUEST_UFO
        | HOST_TSO4
        | HOST_TSO6
        | HOST_ECN
        | HOST_UFO;
}

/// Why a TAP could not be opened or configured. Each message is one line naming the TAP.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The name is not a valid interface name.
    #[error("tap {name:?}: not a valid interface name: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `/dev/net/tun` does not exist.
    #[error("tap {name}: /dev/net/tun does not exist (load the tun module: modprobe tun)")]
    NoTunDevice {
        /// The TAP asked for.
        name: String,
    },
    /// The kernel refused: creating a TAP, or attaching to one owned by another user, needs
    /// `CAP_NET_ADMIN`.
    #[error(
        "tap {name}: permission denied (creating a TAP, or using one that belongs to another \
         user, needs CAP_NET_ADMIN; or create it for this user: \
         ip tuntap add {name} mode tap user $USER)"
    )]
    Permission {
        /// The TAP asked for.
        name: String,
    },
    /// Another process (another VM) has the TAP open.
    #[error("tap {name} is in use by another process")]
    Busy {
        /// The TAP asked for.
        name: String,
    },
    /// An interface of that name exists but is not a single-queue TAP.
    #[error("tap {name}: an interface of that name exists and is not a (single-queue) TAP device")]
    NotTap {
        /// The TAP asked for.
        name: String,
    },
    /// Any other failure of the TUN/TAP driver.
    #[error("tap {name}: {op} failed")]
    Ioctl {
        /// The TAP.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// The `TUN_F_*` offloads a TAP may use towards a driver that accepted `acked_features`:
/// what the guest can receive (`GUEST_*`). Segmentation offloads need checksum offload.
pub fn offload_flags(acked_features: u64) -> libc::c_uint {
    use features::*;
    if acked_features & GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    for (feature, flag) in [
        (GUEST_TSO4, libc::TUN_F_TSO4),
        (GUEST_TSO6, libc::TUN_F_TSO6),
        (GUEST_ECN, libc::TUN_F_TSO_ECN),
        (GUEST_UFO, libc::TUN_F_UFO),
    ] {
        if acked_features & feature != 0 {
            flags |= flag;
        }
    }
    flags
}

/// A virtio-net device.
pub struct Net {
    backend: Arc<dyn NetBackend>,
    config: [u8; 10],
    avail_features: u64,
    worker: Option<Worker>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("backend", &self.backend)
            .field("mac", &format_args!("{:02x?}", &self.config[..6]))
            .field("active", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A device with MAC address `mac` whose frames go to `backend`, offering every feature
    /// (see [`Net::with_offloads`]).
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Net {
        let mut config = [0u8; 10];
        // struct virtio_net_config: mac[6], status (le16), max_virtqueue_pairs (le16).
        config[..6].copy_from_slice(&mac);
        let link_up = u16::try_from(vn::VIRTIO_NET_S_LINK_UP).unwrap_or(1);
        config[6..8].copy_from_slice(&link_up.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Net {
            backend: Arc::from(backend),
            config,
            avail_features: crate::virtio::features::VERSION_1
                | crate::virtio::features::RING_EVENT_IDX
                | features::MAC
                | features::STATUS
                | features::MRG_RXBUF
                | features::OFFLOADS,
            worker: None,
        }
    }

    /// Whether to offer the checksum and segmentation offloads (default: yes). Without them
    /// every frame is a plain, fully checksummed Ethernet frame of at most the MTU.
    pub fn with_offloads(mut self, enabled: bool) -> Net {
        if enabled {
            self.avail_features |= features::OFFLOADS;
        } else {
            self.avail_features &= !features::OFFLOADS;
        }
        self
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        super::device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only for a VERSION_1 driver.
        log::debug!(
            "virtio-net: ignored a {}-byte write at config offset {offset}",
            data.len()
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.reset();
        let got = ctx.queues.len();
        let mut rx = None;
        let mut tx = None;
        for q in ctx.queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                _ => {}
            }
        }
        let (Some(rx), Some(tx)) = (rx, tx) else {
            return Err(ActivateError::Queues { got, need: 2 });
        };
        let acked = ctx.acked_features & self.avail_features;
        self.backend
            .set_offloads(acked)
            .map_err(|e| ActivateError::Backend(std::io::Error::other(e)))?;
        let queues = NetQueues::new(
            ctx.mem,
            (rx.index, rx.queue),
            (tx.index, tx.queue),
            self.backend.clone(),
            ctx.interrupt,
            acked,
        );
        let handler =
            handler::NetHandler::new(queues, rx.notifier, tx.notifier, self.backend.clone());
        self.worker = Some(
            Worker::spawn("virtio-net".to_owned(), ThreadKind::NetWorker, handler)
                .map_err(ActivateError::Backend)?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
            // The next driver negotiates again; until then the backend hands over plain frames.
            if let Err(e) = self.backend.set_offloads(0) {
                log::warn!("virtio-net: {e}");
            }
        }
    }
}
