//! `[[vfio]]` devices in a VM: the host side once per run ([`HostBindings`]: checks, and
//! moving `bind = true` devices to vfio-pci and back), and per VM boot ([`Passthrough`]: the
//! VFIO container with guest RAM mapped for DMA, the functions opened and reset, placed in
//! guest PCI slots that mirror the host's multi-function slots).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ghost_devices::pci::msix::MsiVectors;
use ghost_devices::pci::{BarInfo, DevFn};
use ghost_vfio::bind::{bind_to_vfio, Binding, SYSFS_TIMEOUT};
use ghost_vfio::{Container, GuestMappings, RomSource, VfioDeviceFd, VfioPciDevice};
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::{VfioConfig, VmConfig};
use crate::host::{Host, HostError};
use crate::interrupt::{GsiRouting, KvmMsiVectors};
use crate::pci::PciPlatform;
use crate::VmmError;

fn vfio_error(index: usize, message: impl std::fmt::Display) -> VmmError {
    VmmError::Host(HostError::Vfio {
        key: format!("vfio[{index}].host"),
        message: message.to_string(),
    })
}

/// The host side of the run's `[[vfio]]` devices: checked, and the ones with `bind = true`
/// moved to vfio-pci. Dropping it gives those back to their drivers.
#[derive(Debug, Default)]
pub(crate) struct HostBindings {
    bindings: Vec<Binding>,
}

impl HostBindings {
    /// Checks the devices (IOMMU on, groups whole, bound or to be bound, enough locked
    /// memory), then binds the `bind = true` ones. On failure nothing stays changed.
    pub(crate) fn prepare(config: &VmConfig) -> Result<Self, VmmError> {
        if config.vfio.is_empty() {
            return Ok(Self::default());
        }
        let host = Host::system();
        host.check_vfio(&config.vfio).map_err(VmmError::Host)?;
        host.check_memlock(config.memory.size.bytes())
            .map_err(VmmError::Host)?;
        let mut done = Self::default();
        for (i, vfio) in config.vfio.iter().enumerate().filter(|(_, v)| v.bind) {
            let address = vfio.host.to_string();
            let binding = bind_to_vfio(Path::new("/sys"), &address, SYSFS_TIMEOUT)
                .map_err(|e| vfio_error(i, e))?;
            if binding.changed() {
                log::info!(
                    "{address}: moved from {} to vfio-pci for this VM",
                    binding.original().unwrap_or("no driver")
                );
            }
            done.bindings.push(binding);
        }
        // Now every listed device is on vfio-pci; the groups must be whole.
        host.check_vfio(&config.vfio).map_err(VmmError::Host)?;
        Ok(done)
    }

    /// Gives the bound devices back to their drivers, reporting failures.
    /// Hands every binding to the keeper, which gives the functions back once the VMM is
    /// gone (a VMM that dropped root cannot write sysfs); nothing is left to [`restore`](Self::restore).
    pub(crate) fn hand_to(&mut self, plan: &mut crate::keeper::KeeperPlan) {
        for b in self.bindings.drain(..) {
            let address = b.address().to_owned();
            if b.changed() {
                plan.binding(address, b.keep());
            }
        }
    }

    pub(crate) fn restore(mut self) {
        for b in self.bindings.drain(..) {
            let address = b.address().to_owned();
            let original = b.original().map(str::to_owned);
            let changed = b.changed();
            match b.restore() {
                Ok(()) if changed => log::info!(
                    "{address}: given back to {}",
                    original.as_deref().unwrap_or("no driver")
                ),
                Ok(()) => {}
                Err(e) => log::error!("{e}"),
            }
        }
    }
}

/// KVM memory slots for BAR pages, numbered after guest RAM's.
#[derive(Debug)]
pub(crate) struct KvmSlots {
    vm: Arc<VmFd>,
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    next: u32,
    free: Vec<u32>,
    live: BTreeMap<u32, (u64, u64)>,
}

impl KvmSlots {
    pub(crate) fn new(vm: Arc<VmFd>, first: u32) -> Self {
        Self {
            vm,
            state: Mutex::new(SlotState {
                next: first,
                free: Vec::new(),
                live: BTreeMap::new(),
            }),
        }
    }
}

impl KvmSlots {
    /// Maps `host..host+size` at guest address `gpa` read-only: guest writes exit as MMIO
    /// (the firmware flash).
    ///
    /// # Safety
    /// The caller keeps `host..host+size` mapped until `unmap(slot)`.
    pub(crate) unsafe fn map_readonly(
        &self,
        gpa: u64,
        size: u64,
        host: *mut u8,
    ) -> std::io::Result<u32> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.map_with(gpa, size, host, kvm_bindings::KVM_MEM_READONLY) }
    }

    /// # Safety
    /// As [`GuestMappings::map`].
    unsafe fn map_with(
        &self,
        gpa: u64,
        size: u64,
        host: *mut u8,
        flags: u32,
    ) -> std::io::Result<u32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match s.free.pop() {
            Some(slot) => slot,
            None => {
                s.next += 1;
                s.next - 1
            }
        };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: the caller keeps `host..host+size` mapped until `unmap(slot)`.
        match unsafe { self.vm.set_user_memory_region(region) } {
            Ok(()) => {
                s.live.insert(slot, (gpa, host as u64));
                Ok(slot)
            }
            Err(e) => {
                s.free.push(slot);
                Err(std::io::Error::from_raw_os_error(e.errno()))
            }
        }
    }
}

impl GuestMappings for KvmSlots {
    unsafe fn map(&self, gpa: u64, size: u64, host: *mut u8) -> std::io::Result<u32> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.map_with(gpa, size, host, 0) }
    }

    fn unmap(&self, slot: u32) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((gpa, host)) = s.live.remove(&slot) else {
            return Ok(());
        };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0,
            userspace_addr: host,
        };
        // SAFETY: a zero size deletes the slot; no memory is referenced.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        s.free.push(slot);
        Ok(())
    }
}

/// One VM boot's passed-through functions.
pub(crate) struct Passthrough {
    /// `(guest slot group, host function, device)` in config order.
    devices: Vec<(usize, u8, VfioPciDevice)>,
    _container: Option<Container>,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl Passthrough {
    /// Opens (and resets) every `[[vfio]]` function through one container registered with
    /// the VM's KVM VFIO device, and maps all of `memory` for their DMA.
    pub(crate) fn open(
        vm: &Arc<VmFd>,
        config: &VmConfig,
        memory: &GuestMemoryMmap,
        routing: &Arc<GsiRouting>,
        slots: Arc<KvmSlots>,
    ) -> Result<Self, VmmError> {
        if config.vfio.is_empty() {
            return Ok(Self {
                devices: Vec::new(),
                _container: None,
            });
        }
        let mut kvm_device = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_vfio = vm
            .create_device(&mut kvm_device)
            .map_err(VmmError::kvm("KVM_CREATE_DEVICE(VFIO)"))?;
        let container = Container::new(Some(VfioDeviceFd::new_from_kvm(kvm_vfio)))
            .map_err(|e| vfio_error(0, e))?;
        let groups = slot_groups(&config.vfio);
        let mut devices = Vec::with_capacity(config.vfio.len());
        for (i, vfio) in config.vfio.iter().enumerate() {
            let name = vfio.host.to_string();
            let sysfs = Path::new("/sys/bus/pci/devices").join(&name);
            let handle = container.open(&sysfs).map_err(|e| vfio_error(i, e))?;
            let rom = rom_source(i, vfio)?;
            let mut vectors = |n: u16| -> std::io::Result<Arc<dyn MsiVectors>> {
                Ok(KvmMsiVectors::new(routing.clone(), n)?)
            };
            let device =
                VfioPciDevice::new(name, Box::new(handle), rom, &mut vectors, slots.clone())
                    .map_err(|e| vfio_error(i, e))?;
            let (group, function) = groups[i];
            devices.push((group, function, device));
        }
        for region in memory.iter() {
            let host = memory
                .get_host_address(region.start_addr())
                .map_err(|_| VmmError::MemorySlot(region.start_addr().0))?;
            // SAFETY: guest RAM stays mapped for as long as the VM (and this container,
            // which the VM owns) lives; the VMM only reaches it through volatile accesses.
            unsafe { container.map_dma(region.start_addr().0, region.len(), host) }
                .map_err(|e| vfio_error(0, e))?;
        }
        Ok(Self {
            devices,
            _container: Some(container),
        })
    }

    /// Sizes of the 64-bit BARs that go in the 64-bit window.
    pub(crate) fn high_bars(&self) -> Vec<u64> {
        self.devices
            .iter()
            .flat_map(|(_, _, d)| d.bars())
            .filter(|(_, b)| PciPlatform::goes_high(b))
            .map(|(_, b)| b.size)
            .collect()
    }

    /// Places every function's BARs, turns memory decoding on as firmware does, and plugs
    /// them into the bus: functions of one host slot share one guest slot.
    pub(crate) fn plug(
        self,
        vm: &VmFd,
        vm_name: &str,
        pci: &mut PciPlatform,
    ) -> Result<Vec<DevFn>, VmmError> {
        let mut placed = Vec::new();
        let mut slots: BTreeMap<usize, u8> = BTreeMap::new();
        let mut devices = self.devices;
        // Function 0 of each slot first, so the bus sees the slot's multi-function bit right.
        devices.sort_by_key(|(group, function, _)| (*group, *function));
        for (group, function, mut device) in devices {
            let name = device.name().to_owned();
            for (index, bar) in device.bars() {
                let at = pci.allocate_bar(&name, bar).map_err(VmmError::Pci)?;
                device.set_bar_address(index, at);
            }
            if let Some(size) = device.rom_size() {
                let rom = BarInfo {
                    size,
                    kind: ghost_devices::pci::BarKind::Memory32,
                    prefetchable: false,
                };
                let at = pci.allocate_bar(&name, rom).map_err(VmmError::Pci)?;
                device.set_bar_address(ghost_devices::pci::config::ROM_BAR, at);
            }
            let command = ghost_devices::pci::config::COMMAND_MEMORY.to_le_bytes();
            ghost_devices::pci::PciDevice::config_write(
                &mut device,
                ghost_devices::pci::config::reg::COMMAND,
                &command,
            );
            let slot = match slots.get(&group) {
                Some(slot) => *slot,
                None => {
                    let slot = pci.free_slot().map_err(VmmError::Pci)?;
                    slots.insert(group, slot);
                    slot
                }
            };
            let devfn = DevFn::new(slot, function).ok_or(VmmError::Pci(
                ghost_devices::pci::root::PciError::NoFreeSlot.into(),
            ))?;
            let pin = device.interrupt_pin();
            if pin != 0 {
                let gsi = ghost_boot::layout::pci_intx_gsi(slot, pin);
                if let Err(e) = connect_intx(vm, &mut device, gsi) {
                    // MSI and MSI-X still work; a guest driver that needs INTx will not.
                    log::warn!("{vm_name}: {name}: INTx not available (GSI {gsi}): {e}");
                }
            }
            let direct: u64 = (0..6).map(|i| device.direct_bytes(i)).sum();
            pci.add_at(devfn, Arc::new(Mutex::new(device)))
                .map_err(VmmError::Pci)?;
            placed.push(devfn);
            log::info!(
                "{vm_name}: {name} passed through at PCI {devfn} ({direct} BAR bytes direct)"
            );
        }
        Ok(placed)
    }
}

/// Wires `device`'s INTx to level-triggered `gsi`: VFIO signals an irqfd; the guest's EOI
/// signals the resample eventfd, on which VFIO unmasks the line.
fn connect_intx(vm: &VmFd, device: &mut VfioPciDevice, gsi: u32) -> std::io::Result<()> {
    let trigger = EventFd::new(EFD_NONBLOCK)?;
    let resample = EventFd::new(EFD_NONBLOCK)?;
    vm.register_irqfd_with_resample(&trigger, &resample, gsi)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    // The irqfd goes with the VM fd, which outlives the device.
    device.connect_intx(trigger, resample)
}

/// For each `[[vfio]]` entry, its guest slot group and function: entries from one host slot
/// (same domain, bus and device) share a group. They keep their host function numbers when
/// function 0 is among them, and are numbered from 0 in order otherwise (a guest only scans
/// a slot that has a function 0).
fn slot_groups(devices: &[VfioConfig]) -> Vec<(usize, u8)> {
    let key = |v: &VfioConfig| (v.host.segment(), v.host.bus(), v.host.device());
    let mut groups: Vec<(u16, u8, u8)> = Vec::new();
    let mut out = Vec::with_capacity(devices.len());
    for v in devices {
        let k = key(v);
        let group = match groups.iter().position(|g| *g == k) {
            Some(g) => g,
            None => {
                groups.push(k);
                groups.len() - 1
            }
        };
        let members: Vec<&VfioConfig> = devices.iter().filter(|d| key(d) == k).collect();
        let function = if members.iter().any(|d| d.host.function() == 0) {
            v.host.function()
        } else {
            members
                .iter()
                .position(|d| d.host == v.host)
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(0)
        };
        out.push((group, function));
    }
    out
}

fn rom_source(index: usize, vfio: &VfioConfig) -> Result<RomSource, VmmError> {
    if !vfio.rombar {
        return Ok(RomSource::Hidden);
    }
    match &vfio.rom {
        None => Ok(RomSource::Device),
        Some(path) => std::fs::read(path).map(RomSource::Bytes).map_err(|e| {
            VmmError::Host(HostError::Vfio {
                key: format!("vfio[{index}].rom"),
                message: format!("cannot read {}: {e}", path.display()),
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PciAddress;

    fn vfio(addr: &str) -> VfioConfig {
        VfioConfig {
            host: addr.parse::<PciAddress>().unwrap(),
            rom: None,
            rombar: true,
            bind: false,
        }
    }

    #[test]
    fn gpu_and_audio_share_a_slot() {
        let devs = [
            vfio("0000:01:00.1"),
            vfio("0000:02:00.0"),
            vfio("0000:01:00.0"),
        ];
        assert_eq!(slot_groups(&devs), vec![(0, 1), (1, 0), (0, 0)]);
    }

    #[test]
    fn a_slot_without_function_0_is_renumbered() {
        let devs = [vfio("0000:01:00.3"), vfio("0000:01:00.1")];
        assert_eq!(slot_groups(&devs), vec![(0, 0), (0, 1)]);
        assert_eq!(slot_groups(&[vfio("0000:05:00.2")]), vec![(0, 0)]);
    }
}
