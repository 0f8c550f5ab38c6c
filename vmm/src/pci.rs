//! The VM's PCI platform: the root bus with its config access paths, the BAR windows, and
//! the devices plugged into it.

use std::sync::{Arc, Mutex};

use ghost_boot::layout;
use ghost_devices::pci::root::{CONFIG_IO_LEN, CONFIG_IO_PORT};
use ghost_devices::pci::{BarInfo, BarKind, DevFn, PciConfigIo, PciConfigMmio, PciDevice, PciRoot};
use ghost_devices::q35::ResetControl;
use ghost_devices::virtio::activation::{ActivationQueue, Activator};
use ghost_devices::virtio::pci::VirtioPciDevice;
use ghost_devices::virtio::VirtioDevice;
use ghost_devices::Bus;
use kvm_ioctls::VmFd;
use vm_allocator::{AddressAllocator, AllocPolicy};
use vm_memory::GuestMemoryMmap;

use crate::interrupt::{GsiRouting, KvmIoEvents, KvmMsiVectors};

/// Errors from building the PCI platform.
#[derive(Debug, thiserror::Error)]
pub enum PciSetupError {
    /// A BAR window cannot hold another BAR.
    #[error("no room for a {size:#x}-byte BAR of {device} in the {window} PCI window")]
    NoBarSpace {
        /// The device.
        device: String,
        /// Its size.
        size: u64,
        /// Which window.
        window: &'static str,
    },
    /// The bus has no free slot.
    #[error(transparent)]
    Bus(#[from] ghost_devices::pci::root::PciError),
    /// The config access devices could not be placed.
    #[error("cannot place PCI config access: {0}")]
    ConfigAccess(#[from] ghost_devices::BusError),
    /// MSI vectors could not be set up.
    #[error("{device}: MSI vectors: {source}")]
    Vectors {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The virtio transport could not be built.
    #[error("{device}: {source}")]
    Virtio {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: ghost_devices::virtio::pci::VirtioPciError,
    },
}

/// What the platform's chipset adds to the config access paths.
#[derive(Debug, Default)]
pub struct PciChipset {
    /// Where the ECAM decodes from the start (`None`: the chipset maps it later).
    pub ecam: Option<u64>,
    /// The reset control register that shares the 0xCF8 dword (ICH9's 0xCF9).
    pub reset: Option<ResetControl>,
}

/// PCI segment 0 of one VM.
pub struct PciPlatform {
    root: Arc<Mutex<PciRoot>>,
    mmio32: AddressAllocator,
    mmio64: AddressAllocator,
    routing: Arc<GsiRouting>,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    /// Where the virtio transports send `DRIVER_OK`, and the transports.
    activation: ActivationQueue,
    virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

impl std::fmt::Debug for PciPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciPlatform")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn allocator(base: u64, size: u64) -> AddressAllocator {
    // Both windows are fixed, non-empty and far from wrapping.
    AddressAllocator::new(base, size).unwrap_or_else(|_| unreachable!("bad PCI window"))
}

impl PciPlatform {
    /// The root bus, reachable at 0xCF8 on `pio` and at the ECAM on `mmio` (where `chipset`
    /// puts it), placing BARs on `mmio` in the 32-bit window and the 64-bit window `mmio64`
    /// (`(start, size)`, see [`layout::pci_mmio64_window`]). MSI vectors are routed through
    /// `routing`.
    pub fn new(
        vm: Arc<VmFd>,
        mem: GuestMemoryMmap,
        mmio64: (u64, u64),
        routing: Arc<GsiRouting>,
        (pio, mmio): (&Bus, &Arc<Bus>),
        chipset: PciChipset,
    ) -> Result<Self, PciSetupError> {
        let root = Arc::new(Mutex::new(PciRoot::new(mmio.clone())));
        let config_io = PciConfigIo::new(root.clone());
        let config_io = match chipset.reset {
            Some(reset) => config_io.with_reset_control(reset),
            None => config_io,
        };
        pio.insert(
            Arc::new(Mutex::new(config_io)),
            u64::from(CONFIG_IO_PORT),
            CONFIG_IO_LEN,
        )?;
        if let Some(ecam) = chipset.ecam {
            mmio.insert(
                Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
                ecam,
                layout::PCI_ECAM_SIZE,
            )?;
        }
        Ok(Self {
            root,
            mmio32: allocator(layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            mmio64: allocator(mmio64.0, mmio64.1),
            routing,
            vm,
            mem,
            activation: ActivationQueue::new().map_err(|source| PciSetupError::Vectors {
                device: "virtio activation".into(),
                source,
            })?,
            virtio: Vec::new(),
        })
    }

    /// Whether `bar` goes in the 64-bit window: large or prefetchable 64-bit BARs do;
    /// 32-bit BARs and small 64-bit non-prefetchable ones go in the 32-bit window.
    pub fn goes_high(bar: &BarInfo) -> bool {
        bar.kind == BarKind::Memory64 && (bar.prefetchable || bar.size > 1 << 24)
    }

    /// Picks an address for a BAR in its window (see [`Self::goes_high`]).
    pub fn allocate_bar(&mut self, device: &str, bar: BarInfo) -> Result<u64, PciSetupError> {
        let (alloc, window) = if Self::goes_high(&bar) {
            (&mut self.mmio64, "64-bit")
        } else {
            (&mut self.mmio32, "32-bit")
        };
        // Page-align small BARs so KVM slots and ioeventfds never share a page.
        let align = bar.size.max(4096);
        alloc
            .allocate(bar.size.max(4096), align, AllocPolicy::FirstMatch)
            .map(|r| r.start())
            .map_err(|_| PciSetupError::NoBarSpace {
                device: device.to_owned(),
                size: bar.size,
                window,
            })
    }

    /// Plugs a virtio device in at the next free slot.
    pub fn add_virtio(
        &mut self,
        name: String,
        device: Box<dyn VirtioDevice>,
    ) -> Result<DevFn, PciSetupError> {
        let vectors = KvmMsiVectors::new(
            self.routing.clone(),
            VirtioPciDevice::vectors_needed(device.queue_max_sizes().len()),
        )
        .map_err(|source| PciSetupError::Vectors {
            device: name.clone(),
            source,
        })?;
        let bar = self.allocate_bar(&name, VirtioPciDevice::BAR)?;
        let transport = VirtioPciDevice::new(
            name.clone(),
            device,
            self.mem.clone(),
            vectors,
            Arc::new(KvmIoEvents(self.vm.clone())),
            bar,
        )
        .map_err(|source| PciSetupError::Virtio {
            device: name.clone(),
            source,
        })?;
        let mut transport = transport;
        transport.defer_activation(self.activation.clone());
        let transport = Arc::new(Mutex::new(transport));
        self.virtio.push(transport.clone());
        self.add(transport)
    }

    /// The subscriber that starts the virtio devices when their drivers are ready, for the
    /// VMM thread's event loop ([`ghost_devices::virtio::activation`]).
    pub fn virtio_activator(&self) -> Activator {
        Activator::new(self.activation.clone(), self.virtio.clone())
    }

    /// Plugs `device` in at the next free slot, function 0.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Result<DevFn, PciSetupError> {
        let slot = self.free_slot()?;
        let devfn = DevFn::new(slot, 0).ok_or(ghost_devices::pci::root::PciError::NoFreeSlot)?;
        self.add_at(devfn, device)?;
        Ok(devfn)
    }

    /// The root bus.
    pub fn root(&self) -> &Arc<Mutex<PciRoot>> {
        &self.root
    }

    /// The first slot with no function in it.
    pub fn free_slot(&self) -> Result<u8, PciSetupError> {
        Ok(self
            .root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free_slot()?)
    }

    /// Plugs `device` in at `devfn` (several functions of one slot make a multi-function
    /// device).
    pub fn add_at(
        &mut self,
        devfn: DevFn,
        device: Arc<Mutex<dyn PciDevice>>,
    ) -> Result<(), PciSetupError> {
        self.root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(devfn, device)?;
        Ok(())
    }
}
