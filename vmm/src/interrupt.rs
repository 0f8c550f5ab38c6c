//! Interrupt plumbing for PCI devices on KVM: MSI routes in the VM's GSI routing table, one
//! irqfd per vector, and ioeventfds for virtio queue notifications.
//!
//! KVM's routing table is replaced as a whole by `KVM_SET_GSI_ROUTING`, so [`GsiRouting`]
//! keeps the full table: the default routes of the in-kernel IOAPIC and PIC for GSIs 0..24
//! (which KVM installs on `KVM_CREATE_IRQCHIP` and which the serial port's irqfd needs), plus
//! one MSI route per enabled vector, on GSIs allocated from 24 up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ghost_devices::pci::msix::{MsiMessage, MsiVectors};
use ghost_devices::virtio::pci::IoEventRegistrar;
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// GSIs below this are the IOAPIC's pins.
const IOAPIC_PINS: u32 = 24;
/// KVM's limit on routing entries.
const MAX_ROUTES: usize = kvm_bindings::KVM_MAX_IRQ_ROUTES;

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VM's GSI routing table.
pub struct GsiRouting {
    vm: Arc<VmFd>,
    state: Mutex<RoutingState>,
}

struct RoutingState {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

impl std::fmt::Debug for GsiRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("GsiRouting")
            .field("msi_routes", &s.msi.len())
            .field("next_gsi", &s.next_gsi)
            .finish()
    }
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    }
}

fn msi_entry(gsi: u32, m: MsiMessage) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                // The low half of the address, by definition.
                address_lo: (m.address & 0xffff_ffff) as u32,
                address_hi: (m.address >> 32) as u32,
                data: m.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

impl GsiRouting {
    /// The routing of `vm`, which has an in-kernel irqchip.
    pub fn new(vm: Arc<VmFd>) -> Arc<Self> {
        Arc::new(Self {
            vm,
            state: Mutex::new(RoutingState {
                msi: BTreeMap::new(),
                next_gsi: IOAPIC_PINS,
            }),
        })
    }

    /// Reserves `n` GSIs for MSI vectors.
    fn allocate(&self, n: u16) -> std::io::Result<Vec<u32>> {
        let mut s = lock(&self.state);
        let first = s.next_gsi;
        let end = first + u32::from(n);
        if end as usize > MAX_ROUTES {
            return Err(std::io::Error::other(format!(
                "out of GSIs: {n} more would exceed KVM's {MAX_ROUTES}"
            )));
        }
        s.next_gsi = end;
        Ok((first..end).collect())
    }

    /// Sets (or with `None` removes) the MSI route of `gsi`, then installs the whole table.
    fn set_msi(&self, gsi: u32, message: Option<MsiMessage>) -> std::io::Result<()> {
        let mut s = lock(&self.state);
        match message {
            Some(m) => {
                if s.msi.get(&gsi) == Some(&m) {
                    return Ok(());
                }
                s.msi.insert(gsi, m);
            }
            None => {
                if s.msi.remove(&gsi).is_none() {
                    return Ok(());
                }
            }
        }
        let mut entries = Vec::with_capacity(IOAPIC_PINS as usize + 16 + s.msi.len());
        for pin in 0..IOAPIC_PINS {
            entries.push(irqchip_entry(pin, KVM_IRQCHIP_IOAPIC, pin));
        }
        for pin in (0..16u32).filter(|p| *p != 2) {
            let chip = if pin < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            entries.push(irqchip_entry(pin, chip, pin % 8));
        }
        entries.extend(s.msi.iter().map(|(gsi, m)| msi_entry(*gsi, *m)));
        let mut table = KvmIrqRouting::new(entries.len())
            .map_err(|e| std::io::Error::other(format!("routing table: {e:?}")))?;
        table.as_mut_slice().copy_from_slice(&entries);
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// A device's MSI vectors: one GSI and one irqfd each.
pub struct KvmMsiVectors {
    routing: Arc<GsiRouting>,
    gsis: Vec<u32>,
    irqfds: Vec<EventFd>,
    attached: Mutex<Vec<bool>>,
}

impl std::fmt::Debug for KvmMsiVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmMsiVectors")
            .field("gsis", &self.gsis)
            .finish_non_exhaustive()
    }
}

impl KvmMsiVectors {
    /// `count` vectors on fresh GSIs of `routing`.
    pub fn new(routing: Arc<GsiRouting>, count: u16) -> std::io::Result<Arc<Self>> {
        let gsis = routing.allocate(count)?;
        let irqfds = gsis
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            routing,
            attached: Mutex::new(vec![false; gsis.len()]),
            gsis,
            irqfds,
        }))
    }

    fn index(&self, vector: u16) -> std::io::Result<usize> {
        let i = usize::from(vector);
        if i < self.gsis.len() {
            Ok(i)
        } else {
            Err(std::io::Error::other(format!("no MSI vector {vector}")))
        }
    }
}

impl MsiVectors for KvmMsiVectors {
    fn count(&self) -> u16 {
        // `new` took a u16 count.
        u16::try_from(self.gsis.len()).unwrap_or(u16::MAX)
    }

    fn enable(&self, vector: u16, message: MsiMessage) -> std::io::Result<()> {
        let i = self.index(vector)?;
        self.routing.set_msi(self.gsis[i], Some(message))?;
        let mut attached = lock(&self.attached);
        if !attached[i] {
            self.routing
                .vm
                .register_irqfd(&self.irqfds[i], self.gsis[i])
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            attached[i] = true;
        }
        Ok(())
    }

    fn disable(&self, vector: u16) -> std::io::Result<()> {
        let i = self.index(vector)?;
        let mut attached = lock(&self.attached);
        if attached[i] {
            self.routing
                .vm
                .unregister_irqfd(&self.irqfds[i], self.gsis[i])
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            attached[i] = false;
        }
        // The route stays: re-enabling with the same message then costs no table update.
        Ok(())
    }

    fn trigger(&self, vector: u16) -> std::io::Result<()> {
        self.irqfds[self.index(vector)?].write(1)
    }

    fn notifier(&self, vector: u16) -> Option<&EventFd> {
        self.irqfds.get(usize::from(vector))
    }
}

impl Drop for KvmMsiVectors {
    fn drop(&mut self) {
        let attached = lock(&self.attached).clone();
        for (i, on) in attached.into_iter().enumerate() {
            if on {
                let _ = self
                    .routing
                    .vm
                    .unregister_irqfd(&self.irqfds[i], self.gsis[i]);
            }
        }
    }
}

/// Registers MMIO ioeventfds with KVM.
#[derive(Debug)]
pub struct KvmIoEvents(pub Arc<VmFd>);

impl IoEventRegistrar for KvmIoEvents {
    fn register(&self, fd: &EventFd, address: u64) -> std::io::Result<()> {
        self.0
            .register_ioevent(fd, &IoEventAddress::Mmio(address), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, fd: &EventFd, address: u64) -> std::io::Result<()> {
        self.0
            .unregister_ioevent(fd, &IoEventAddress::Mmio(address), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    /// A VM with an in-kernel irqchip, as `Vm::new` builds it. Needs /dev/kvm (any KVM,
    /// PVM included: nothing runs in the guest).
    fn vm() -> Arc<VmFd> {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        Arc::new(vm)
    }

    #[test]
    fn kvm_accepts_the_routing_table_and_irqfds() {
        let routing = GsiRouting::new(vm());
        let a = KvmMsiVectors::new(routing.clone(), 3).unwrap();
        let b = KvmMsiVectors::new(routing.clone(), 2).unwrap();
        assert_eq!(a.gsis, vec![24, 25, 26]);
        assert_eq!(b.gsis, vec![27, 28]);
        let msg = |v: u32| MsiMessage {
            address: 0xfee0_0000,
            data: 0x40 + v,
        };
        // KVM validates every entry of the table (IOAPIC/PIC defaults included).
        a.enable(0, msg(0)).unwrap();
        a.enable(2, msg(2)).unwrap();
        b.enable(1, msg(1)).unwrap();
        assert_eq!(lock(&routing.state).msi.len(), 3);
        a.trigger(0).unwrap();
        // Masking detaches the irqfd; unmasking attaches it again (a double attach would be
        // EBUSY from KVM).
        a.disable(0).unwrap();
        a.disable(0).unwrap();
        a.enable(0, msg(7)).unwrap();
        assert_eq!(lock(&routing.state).msi.get(&24), Some(&msg(7)));
        assert!(a.enable(3, msg(3)).is_err(), "no vector 3");
        assert!(a.notifier(2).is_some() && a.notifier(3).is_none());
        drop(a);
        drop(b);
    }

    #[test]
    fn gsis_run_out_cleanly() {
        let routing = GsiRouting::new(vm());
        let max = u16::try_from(MAX_ROUTES).unwrap();
        assert!(KvmMsiVectors::new(routing.clone(), max).is_err());
        assert!(
            KvmMsiVectors::new(routing, 8).is_ok(),
            "a failed allocation takes nothing"
        );
    }
}
