//! Virtio devices: the device side of the virtio 1.x split virtqueue model.
//!
//! A device ([`VirtioDevice`]) knows its feature bits, its configuration space and what its
//! queues carry. It knows nothing about PCI: the transport (`crate::virtio::pci`) negotiates
//! features, collects the queue addresses the driver programs, and on `DRIVER_OK` hands the
//! device an [`ActivateContext`]: guest memory, the ready queues with their notification
//! eventfds (ioeventfds registered with KVM, so a queue kick costs the vCPU no exit to user
//! space), and a [`VirtioInterrupt`] to signal used buffers.
//!
//! Devices do their work on their own worker thread ([`worker`]), never on a vCPU thread:
//! a slow disk or a full TAP never stalls the guest's CPUs.
//!
//! Everything a device reads from a queue is guest-controlled. A malformed chain is answered
//! with the device's error status (or dropped, for devices that have none) and never panics.

pub mod activation;
pub mod block;
pub mod net;
pub mod pci;
pub mod worker;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Virtio device IDs (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
}

/// Feature bits every ghost-vmm device offers or understands, independent of the device type.
pub mod features {
    /// The driver may use `VIRTQ_DESC_F_INDIRECT`.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x (modern) device: required by the modern PCI transport.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device's DMA goes through the platform IOMMU (never offered by ghost-vmm).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Signals the driver. Implemented by the transport (MSI-X vectors on KVM irqfds).
pub trait VirtioInterrupt: Send + Sync {
    /// Queue `queue` has new entries in its used ring. Respect notification suppression
    /// (`Queue::needs_notification`) before calling this.
    fn notify_queue(&self, queue: u16);
    /// The device's configuration space changed.
    fn notify_config(&self);
}

/// One queue the driver made ready, as handed over on activation.
#[derive(Debug)]
pub struct ActivatedQueue {
    /// The queue's index within the device (0 = first queue).
    pub index: u16,
    /// The queue, with the addresses and size the driver programmed.
    pub queue: Queue,
    /// Becomes readable when the driver kicks this queue.
    pub notifier: EventFd,
}

/// What a device receives when the driver sets `DRIVER_OK`.
pub struct ActivateContext {
    /// Guest RAM. Cloning it is cheap (the regions are reference counted).
    pub mem: GuestMemoryMmap,
    /// The driver's interrupt lines.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The queues the driver enabled, in index order; a device may get fewer than it offers.
    pub queues: Vec<ActivatedQueue>,
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub acked_features: u64,
}

impl std::fmt::Debug for ActivateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateContext")
            .field("queues", &self.queues)
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .finish_non_exhaustive()
    }
}

/// Why a device refused to start; the transport then sets `DEVICE_NEEDS_RESET`.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not enable the queues the device needs.
    #[error("the driver enabled {got} queue(s); the device needs {need}")]
    Queues {
        /// Queues enabled.
        got: usize,
        /// Queues required.
        need: usize,
    },
    /// The device could not start its worker or its backend.
    #[error("cannot start the device: {0}")]
    Backend(#[source] std::io::Error),
}

/// A virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue the device offers; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver, including [`features::VERSION_1`].
    fn features(&self) -> u64;
    /// The driver reads the device-specific configuration space. Bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver writes the device-specific configuration space. Writes to read-only fields
    /// or past the end are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set `DRIVER_OK`: start serving the queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The driver reset the device (or the VM is going away): stop the worker, and return
    /// only once nothing touches guest memory or the queues any more. The device can be
    /// activated again afterwards.
    fn reset(&mut self);
}

/// Copies the bytes of a device's configuration space `config` at `offset` into `data`;
/// bytes past its end read as zero. The usual [`VirtioDevice::read_config`].
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
