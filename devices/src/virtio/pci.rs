//! The virtio 1.x PCI transport ("modern" virtio-pci, virtio 1.2 section 4.1).
//!
//! One 64-bit memory BAR (BAR 0) holds every structure the driver uses, found through vendor
//! capabilities in config space:
//!
//! | BAR 0 offset | structure                                   |
//! |--------------|---------------------------------------------|
//! | `0x0000`     | common configuration                        |
//! | `0x1000`     | ISR status                                  |
//! | `0x2000`     | device-specific configuration               |
//! | `0x3000`     | notifications, 4 bytes per queue            |
//! | `0x4000`     | MSI-X table                                 |
//! | `0x6000`     | MSI-X pending-bit array                     |
//!
//! Queue notifications are ioeventfds: once the BAR is mapped, the VMM registers each queue's
//! notify address with KVM ([`IoEventRegistrar`]), so a kick wakes the device's worker without
//! a trip through user space on the vCPU. A notify write that does reach us (before the BAR is
//! mapped, say) signals the same eventfd. Interrupts are MSI-X only.

// Register code splits and packs fields (a u64 address into two u32 halves, a dword into
// bytes); those casts truncate on purpose, and every index is bounded by a table size.
#![allow(clippy::cast_possible_truncation)]

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::activation::ActivationQueue;
use super::{features, ActivateContext, ActivatedQueue, VirtioDevice, VirtioInterrupt};
use crate::pci::config::{read_from_dword, ConfigError, COMMAND_MEMORY};
use crate::pci::msix::{MsiVectors, Msix};
use crate::pci::{BarInfo, BarKind, PciConfiguration, PciDevice, PciHeader};

/// Registers ioeventfds with the hypervisor. Implemented by the VMM.
pub trait IoEventRegistrar: Send + Sync {
    /// Makes a write of any size to guest physical `address` signal `fd`.
    fn register(&self, fd: &EventFd, address: u64) -> std::io::Result<()>;
    /// Undoes [`IoEventRegistrar::register`].
    fn unregister(&self, fd: &EventFd, address: u64) -> std::io::Result<()>;
}

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern virtio devices have device ID `0x1040 + type`.
const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;

/// "No MSI-X vector" in `msix_config` / `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

const BAR_INDEX: u8 = 0;
const BAR_SIZE: u64 = 0x8000;
const COMMON_OFFSET: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
const DEVICE_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;
/// The most queues a device may have here (the notify area and MSI-X table are sized for it).
pub const MAX_QUEUES: usize = 64;

/// Device status bits (virtio 1.2 section 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Virtio PCI capability types.
mod cap {
    pub const VENDOR_ID: u8 = 0x09;
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
}

/// ISR bit: a queue interrupt (INTx only; kept for completeness).
const ISR_QUEUE: u8 = 1;
/// ISR bit: a configuration change.
const ISR_CONFIG: u8 = 2;

/// Errors from building the transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// The device offers more queues than the transport lays out.
    #[error("the device has {0} queues; at most {MAX_QUEUES} are supported")]
    TooManyQueues(usize),
    /// A queue size is not a power of two in 1..=32768.
    #[error("queue size {0} is invalid")]
    QueueSize(u16),
    /// The config space could not be built.
    #[error("PCI config space: {0}")]
    Config(#[from] ConfigError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// The interrupt lines handed to the device: MSI-X vectors chosen by the driver.
struct PciInterrupt {
    msix: Arc<Mutex<Msix>>,
    config_vector: Arc<AtomicU16>,
    queue_vectors: Arc<[AtomicU16]>,
    isr: Arc<AtomicU8>,
}

impl PciInterrupt {
    fn signal(&self, vector: u16) {
        if vector != NO_VECTOR {
            self.msix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .trigger(vector);
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        if let Some(v) = self.queue_vectors.get(usize::from(queue)) {
            self.signal(v.load(Ordering::Acquire));
        }
    }

    fn notify_config(&self) {
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        self.signal(self.config_vector.load(Ordering::Acquire));
    }
}

/// A virtio device on PCI.
pub struct VirtioPciDevice {
    name: String,
    config: PciConfiguration,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    msix: Arc<Mutex<Msix>>,
    msix_cap: u16,
    pci_cfg_cap: u16,
    interrupt: Arc<PciInterrupt>,
    ioevents: Arc<dyn IoEventRegistrar>,
    /// Where the notifiers are registered now (BAR 0 base), if anywhere.
    ioevents_at: Option<u64>,
    notifiers: Vec<EventFd>,
    queues: Vec<Queue>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    active: bool,
    /// Where `DRIVER_OK` is sent to be carried out ([`super::activation`]); activated on
    /// the spot without one.
    activation: Option<ActivationQueue>,
    /// `DRIVER_OK` was sent there and not yet carried out.
    activation_pending: bool,
}

impl std::fmt::Debug for VirtioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("name", &self.name)
            .field("status", &self.status)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VirtioPciDevice {
    /// Wraps `device` in the PCI transport. `vectors` must have one vector per queue plus
    /// one for configuration changes. `bar_address` is where BAR 0 starts (firmware-style
    /// assignment; the guest may move it). `name` labels log lines.
    pub fn new(
        name: String,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        vectors: Arc<dyn MsiVectors>,
        ioevents: Arc<dyn IoEventRegistrar>,
        bar_address: u64,
    ) -> Result<Self, VirtioPciError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.len() > MAX_QUEUES {
            return Err(VirtioPciError::TooManyQueues(sizes.len()));
        }
        let queues = sizes
            .iter()
            .map(|s| Queue::new(*s).map_err(|_| VirtioPciError::QueueSize(*s)))
            .collect::<Result<Vec<_>, _>>()?;
        let notifiers = sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(VirtioPciError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let device_type = device.device_type();
        let class_code = match device_type {
            super::device_type::NET => 0x02_00_00,
            super::device_type::BLOCK => 0x01_80_00,
            _ => 0xff_00_00,
        };
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            class_code,
            revision: 1,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: 0x40,
            header_type: 0,
            interrupt_pin: 0,
        });
        config.add_bar(
            BAR_INDEX,
            BarInfo {
                size: BAR_SIZE,
                kind: BarKind::Memory64,
                prefetchable: false,
            },
        )?;
        config.set_bar_address(BAR_INDEX, bar_address);
        config.set_command(COMMAND_MEMORY);

        let msix = Msix::new(vectors);
        let (body, mask) = msix.capability(
            BAR_INDEX,
            MSIX_TABLE_OFFSET as u32,
            BAR_INDEX,
            MSIX_PBA_OFFSET as u32,
        );
        let msix_cap = config.add_capability(&body, &mask)? as u16;
        let vendor_cap = |kind: u8, offset: u64, len: u64, extra: &[u8]| {
            let mut c = vec![
                cap::VENDOR_ID,
                0,
                (16 + extra.len()) as u8,
                kind,
                BAR_INDEX,
                0,
                0,
                0,
            ];
            c.extend_from_slice(&(offset as u32).to_le_bytes());
            c.extend_from_slice(&(len as u32).to_le_bytes());
            c.extend_from_slice(extra);
            c
        };
        config.add_capability(
            &vendor_cap(cap::COMMON, COMMON_OFFSET, COMMON_LEN, &[]),
            &[],
        )?;
        config.add_capability(&vendor_cap(cap::ISR, ISR_OFFSET, 1, &[]), &[])?;
        config.add_capability(
            &vendor_cap(cap::DEVICE, DEVICE_OFFSET, DEVICE_LEN, &[]),
            &[],
        )?;
        config.add_capability(
            &vendor_cap(
                cap::NOTIFY,
                NOTIFY_OFFSET,
                (sizes.len().max(1) as u64) * u64::from(NOTIFY_MULTIPLIER),
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            &[],
        )?;
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and data are the driver's to write.
        let mut pci_cfg_mask = vec![0u8; 20];
        pci_cfg_mask[4] = 0xff;
        pci_cfg_mask[8..20].fill(0xff);
        let pci_cfg_cap =
            config.add_capability(&vendor_cap(cap::PCI_CFG, 0, 0, &[0; 4]), &pci_cfg_mask)? as u16;

        let queue_vectors: Arc<[AtomicU16]> =
            sizes.iter().map(|_| AtomicU16::new(NO_VECTOR)).collect();
        let msix = Arc::new(Mutex::new(msix));
        let interrupt = Arc::new(PciInterrupt {
            msix: msix.clone(),
            config_vector: Arc::new(AtomicU16::new(NO_VECTOR)),
            queue_vectors,
            isr: Arc::new(AtomicU8::new(0)),
        });
        Ok(Self {
            name,
            config,
            device,
            mem,
            msix,
            msix_cap,
            pci_cfg_cap,
            interrupt,
            ioevents,
            ioevents_at: None,
            notifiers,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            active: false,
            activation: None,
            activation_pending: false,
        })
    }

    /// The BAR the transport needs, for the VMM's allocator.
    pub const BAR: BarInfo = BarInfo {
        size: BAR_SIZE,
        kind: BarKind::Memory64,
        prefetchable: false,
    };

    /// MSI-X vectors the transport needs for a device with `queues` queues.
    pub fn vectors_needed(queues: usize) -> u16 {
        (queues + 1).min(MAX_QUEUES + 1) as u16
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn common_snapshot(&self) -> [u8; COMMON_LEN as usize] {
        let mut b = [0u8; COMMON_LEN as usize];
        let features = self.device.features();
        let device_feature = match self.device_feature_select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let driver_feature = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        b[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&device_feature.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&driver_feature.to_le_bytes());
        b[0x10..0x12].copy_from_slice(
            &self
                .interrupt
                .config_vector
                .load(Ordering::Acquire)
                .to_le_bytes(),
        );
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.status;
        b[0x15] = 0; // config_generation: the device config never changes under the driver.
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        let q = usize::from(self.queue_select);
        if let Some(queue) = self.queues.get(q) {
            b[0x18..0x1a].copy_from_slice(&queue.size().to_le_bytes());
            let vector = self.interrupt.queue_vectors[q].load(Ordering::Acquire);
            b[0x1a..0x1c].copy_from_slice(&vector.to_le_bytes());
            b[0x1c..0x1e].copy_from_slice(&u16::from(queue.ready()).to_le_bytes());
            b[0x1e..0x20].copy_from_slice(&(q as u16).to_le_bytes());
            b[0x20..0x28].copy_from_slice(&queue.desc_table().to_le_bytes());
            b[0x28..0x30].copy_from_slice(&queue.avail_ring().to_le_bytes());
            b[0x30..0x38].copy_from_slice(&queue.used_ring().to_le_bytes());
        }
        b
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let snap = self.common_snapshot();
        let start = offset as usize;
        match snap.get(start..start + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let v = match data.len() {
            1 => u32::from(data[0]),
            2 => u32::from(u16::from_le_bytes([data[0], data[1]])),
            4 => u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            _ => return,
        };
        // Queue and feature setup is frozen once the driver is running.
        let running = self.status & status::DRIVER_OK != 0;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v,
            (0x08, 4) => self.driver_feature_select = v,
            (0x0c, 4) if self.status & status::FEATURES_OK == 0 => {
                match self.driver_feature_select {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            (0x10, 2) => {
                let vector = self.checked_vector(v as u16);
                self.interrupt
                    .config_vector
                    .store(vector, Ordering::Release);
            }
            (0x14, 1) => self.write_status(v as u8),
            (0x16, 2) => self.queue_select = v as u16,
            (0x18, 2) if !running => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            (0x1a, 2) => {
                let vector = self.checked_vector(v as u16);
                if let Some(slot) = self
                    .interrupt
                    .queue_vectors
                    .get(usize::from(self.queue_select))
                {
                    slot.store(vector, Ordering::Release);
                }
            }
            (0x1c, 2) if !running => {
                if let Some(q) = self.selected_queue() {
                    // Virtio 1.x: writing 0 does not disable a queue.
                    if v == 1 {
                        q.set_ready(true);
                    }
                }
            }
            (0x20, 4) | (0x24, 4) | (0x28, 4) | (0x2c, 4) | (0x30, 4) | (0x34, 4) if !running => {
                let high = offset % 8 == 4;
                let (lo, hi) = if high {
                    (None, Some(v))
                } else {
                    (Some(v), None)
                };
                if let Some(q) = self.selected_queue() {
                    match offset & !7 {
                        0x20 => q.set_desc_table_address(lo, hi),
                        0x28 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => log::debug!(
                "{}: ignored common config write at {offset:#x} ({} bytes)",
                self.name,
                data.len()
            ),
        }
    }

    /// A vector the driver may use: in range, or [`NO_VECTOR`] (which tells the driver the
    /// assignment failed).
    fn checked_vector(&self, vector: u16) -> u16 {
        if vector < lock(&self.msix).len() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, new: u8) {
        if new == 0 {
            self.reset_device();
            return;
        }
        let old = self.status;
        let mut new = new | (old & status::DEVICE_NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & features::VERSION_1 != 0;
            if !ok {
                log::warn!(
                    "{}: driver features {:#x} not acceptable (offered {offered:#x})",
                    self.name,
                    self.driver_features
                );
                new &= !status::FEATURES_OK;
            }
        }
        self.status = new;
        if self.wants_activation() {
            match &self.activation {
                Some(queue) if !self.activation_pending => {
                    self.activation_pending = true;
                    queue.request();
                }
                Some(_) => {}
                None => self.activate(),
            }
        }
    }

    fn wants_activation(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & status::FEATURES_OK != 0
            && self.status & status::FAILED == 0
            && !self.active
    }

    /// From now on, `DRIVER_OK` is carried out by [`activate_pending`](Self::activate_pending)
    /// when `queue` says so ([`super::activation`]), not on the thread that wrote it.
    pub fn defer_activation(&mut self, queue: ActivationQueue) {
        self.activation = Some(queue);
    }

    /// Carries out a deferred `DRIVER_OK`, if the driver still wants it.
    pub fn activate_pending(&mut self) {
        if std::mem::take(&mut self.activation_pending) && self.wants_activation() {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&self.mem) {
                log::warn!("{}: queue {i} has invalid addresses or size", self.name);
                self.needs_reset();
                return;
            }
            q.set_event_idx(event_idx);
            let handed = Queue::try_from(q.state());
            let notifier = self.notifiers[i].try_clone();
            match (handed, notifier) {
                (Ok(queue), Ok(notifier)) => queues.push(ActivatedQueue {
                    index: i as u16,
                    queue,
                    notifier,
                }),
                _ => {
                    log::warn!("{}: cannot hand queue {i} to the device", self.name);
                    self.needs_reset();
                    return;
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            acked_features: self.driver_features,
        };
        match self.device.activate(ctx) {
            Ok(()) => self.active = true,
            Err(e) => {
                log::warn!("{}: activation failed: {e}", self.name);
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.notify_config();
    }

    fn reset_device(&mut self) {
        self.activation_pending = false;
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        for v in self.interrupt.queue_vectors.iter() {
            v.store(NO_VECTOR, Ordering::Release);
        }
        self.interrupt
            .config_vector
            .store(NO_VECTOR, Ordering::Release);
        self.interrupt.isr.store(0, Ordering::SeqCst);
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.status = 0;
    }

    fn bar_access(&mut self, offset: u64, data: &mut [u8], write: Option<&[u8]>) {
        // MMIO exits are 1 to 8 bytes; anything else (only a confused caller makes it) is
        // dropped.
        if data.is_empty() || data.len() > 8 || write.is_some_and(|w| w.len() != data.len()) {
            data.fill(0);
            return;
        }
        let len = data.len() as u64;
        let within = |start: u64, size: u64| offset >= start && offset + len <= start + size;
        if within(COMMON_OFFSET, COMMON_LEN) {
            match write {
                Some(w) => self.write_common(offset - COMMON_OFFSET, w),
                None => self.read_common(offset - COMMON_OFFSET, data),
            }
        } else if within(ISR_OFFSET, 1) {
            if write.is_none() {
                // Reading the ISR acknowledges it.
                data[0] = self.interrupt.isr.swap(0, Ordering::SeqCst);
            }
        } else if within(DEVICE_OFFSET, DEVICE_LEN) {
            match write {
                Some(w) => self.device.write_config(offset - DEVICE_OFFSET, w),
                None => self.device.read_config(offset - DEVICE_OFFSET, data),
            }
        } else if within(
            NOTIFY_OFFSET,
            self.queues.len() as u64 * u64::from(NOTIFY_MULTIPLIER),
        ) {
            if write.is_some() {
                let q = ((offset - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(n) = self.notifiers.get(q) {
                    let _ = n.write(1);
                }
            } else {
                data.fill(0);
            }
        } else if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&offset) {
            let mut msix = lock(&self.msix);
            match write {
                Some(w) => msix.write_table(offset - MSIX_TABLE_OFFSET, w),
                None => msix.read_table(offset - MSIX_TABLE_OFFSET, data),
            }
        } else if offset >= MSIX_PBA_OFFSET {
            if write.is_none() {
                lock(&self.msix).read_pba(offset - MSIX_PBA_OFFSET, data);
            }
        } else if write.is_none() {
            data.fill(0);
        }
    }

    fn register_ioevents(&mut self, base: Option<u64>) {
        if let Some(old) = self.ioevents_at.take() {
            for (i, fd) in self.notifiers.iter().enumerate() {
                let _ = self.ioevents.unregister(fd, notify_address(old, i));
            }
        }
        if let Some(base) = base {
            for (i, fd) in self.notifiers.iter().enumerate() {
                if let Err(e) = self.ioevents.register(fd, notify_address(base, i)) {
                    // Notify writes then exit to the VMM and are forwarded by hand.
                    log::warn!(
                        "{}: queue {i} ioeventfd: {e}; notifications will exit",
                        self.name
                    );
                }
            }
            self.ioevents_at = Some(base);
        }
    }

    /// `VIRTIO_PCI_CAP_PCI_CFG`: the window's `(bar, offset, length)` fields.
    fn pci_cfg_window(&self) -> (u8, u64, usize) {
        let c = self.pci_cfg_cap;
        let bar = self.config.read_dword(c + 4) as u8;
        let offset = u64::from(self.config.read_dword(c + 8));
        let length = self.config.read_dword(c + 12) as usize;
        (bar, offset, length)
    }
}

fn notify_address(base: u64, queue: usize) -> u64 {
    base + NOTIFY_OFFSET + queue as u64 * u64::from(NOTIFY_MULTIPLIER)
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let data_field = self.pci_cfg_cap + 16;
        if offset >= data_field && offset < data_field + 4 {
            // The driver reads BAR memory through config space.
            let (bar, bar_offset, length) = self.pci_cfg_window();
            let mut window = [0u8; 4];
            if bar == BAR_INDEX && matches!(length, 1 | 2 | 4) {
                self.bar_access(bar_offset, &mut window[..length], None);
            }
            read_from_dword(u32::from_le_bytes(window), offset - data_field, data);
            return;
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let data_field = self.pci_cfg_cap + 16;
        if offset >= data_field && offset < data_field + 4 {
            let (bar, bar_offset, length) = self.pci_cfg_window();
            if bar == BAR_INDEX && offset == data_field && data.len() >= length && length > 0 {
                let mut scratch = [0u8; 4];
                let w = &data[..length];
                self.bar_access(bar_offset, &mut scratch[..length], Some(w));
            }
            return;
        }
        self.config.write(offset, data);
        let cap = self.msix_cap;
        if offset / 4 == cap / 4 {
            let control = (self.config.read_dword(cap) >> 16) as u16;
            lock(&self.msix).set_control(control);
        }
    }

    fn active_memory_bars(&self) -> Vec<(u8, u64, u64)> {
        self.config.active_memory_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == BAR_INDEX {
            self.bar_access(offset, data, None);
        } else {
            data.fill(0);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == BAR_INDEX {
            let mut scratch = [0u8; 8];
            let n = data.len().min(8);
            self.bar_access(offset, &mut scratch[..n], Some(&data[..n]));
        }
    }

    fn bar_moved(&mut self, bar: u8, base: Option<u64>) {
        if bar == BAR_INDEX {
            self.register_ioevents(base);
        }
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.register_ioevents(None);
    }
}

#[cfg(test)]
mod tests;
