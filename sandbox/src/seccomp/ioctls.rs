//! The `ioctl` requests each thread kind makes, by number (`arg1`, compared as 32 bits as
//! the kernel's `unsigned int cmd` is). Numbers are computed from the kernel's `_IO*`
//! encoding and the `kvm-bindings` struct sizes, as `<linux/kvm.h>` defines them.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_create_device, kvm_device_attr, kvm_enable_cap, kvm_fpu,
    kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd, kvm_lapic_state, kvm_msrs,
    kvm_pit_config, kvm_regs, kvm_sregs, kvm_userspace_memory_region,
};

use crate::ThreadKind;

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const fn io(ty: u64, nr: u64) -> u64 {
    ioc(NONE, ty, nr, 0)
}
const fn ior<T>(ty: u64, nr: u64) -> u64 {
    ioc(READ, ty, nr, std::mem::size_of::<T>())
}
const fn iow<T>(ty: u64, nr: u64) -> u64 {
    ioc(WRITE, ty, nr, std::mem::size_of::<T>())
}
const fn iowr<T>(ty: u64, nr: u64) -> u64 {
    ioc(READ | WRITE, ty, nr, std::mem::size_of::<T>())
}

const KVMIO: u64 = 0xae;

// /dev/kvm.
const KVM_GET_API_VERSION: u64 = io(KVMIO, 0x00);
const KVM_CREATE_VM: u64 = io(KVMIO, 0x01);
const KVM_CHECK_EXTENSION: u64 = io(KVMIO, 0x03);
const KVM_GET_VCPU_MMAP_SIZE: u64 = io(KVMIO, 0x04);
const KVM_GET_SUPPORTED_CPUID: u64 = iowr::<kvm_cpuid2>(KVMIO, 0x05);
const KVM_GET_SUPPORTED_HV_CPUID: u64 = iowr::<kvm_cpuid2>(KVMIO, 0xc1);
// A VM.
const KVM_CREATE_VCPU: u64 = io(KVMIO, 0x41);
const KVM_SET_USER_MEMORY_REGION: u64 = iow::<kvm_userspace_memory_region>(KVMIO, 0x46);
const KVM_SET_TSS_ADDR: u64 = io(KVMIO, 0x47);
const KVM_SET_IDENTITY_MAP_ADDR: u64 = iow::<u64>(KVMIO, 0x48);
const KVM_CREATE_IRQCHIP: u64 = io(KVMIO, 0x60);
const KVM_IRQ_LINE: u64 = iow::<kvm_irq_level>(KVMIO, 0x61);
const KVM_SET_GSI_ROUTING: u64 = iow::<kvm_irq_routing>(KVMIO, 0x6a);
const KVM_IRQFD: u64 = iow::<kvm_irqfd>(KVMIO, 0x76);
const KVM_CREATE_PIT2: u64 = iow::<kvm_pit_config>(KVMIO, 0x77);
const KVM_IOEVENTFD: u64 = iow::<kvm_ioeventfd>(KVMIO, 0x79);
const KVM_SET_CLOCK: u64 = iow::<kvm_clock_data>(KVMIO, 0x7b);
const KVM_GET_CLOCK: u64 = ior::<kvm_clock_data>(KVMIO, 0x7c);
const KVM_ENABLE_CAP: u64 = iow::<kvm_enable_cap>(KVMIO, 0xa3);
const KVM_CREATE_DEVICE: u64 = iowr::<kvm_create_device>(KVMIO, 0xe0);
const KVM_SET_DEVICE_ATTR: u64 = iow::<kvm_device_attr>(KVMIO, 0xe1);
// A vCPU.
const KVM_RUN: u64 = io(KVMIO, 0x80);
const KVM_GET_REGS: u64 = ior::<kvm_regs>(KVMIO, 0x81);
const KVM_SET_REGS: u64 = iow::<kvm_regs>(KVMIO, 0x82);
const KVM_GET_SREGS: u64 = ior::<kvm_sregs>(KVMIO, 0x83);
const KVM_SET_SREGS: u64 = iow::<kvm_sregs>(KVMIO, 0x84);
const KVM_SET_MSRS: u64 = iow::<kvm_msrs>(KVMIO, 0x89);
const KVM_SET_FPU: u64 = iow::<kvm_fpu>(KVMIO, 0x8d);
const KVM_GET_LAPIC: u64 = ior::<kvm_lapic_state>(KVMIO, 0x8e);
const KVM_SET_LAPIC: u64 = iow::<kvm_lapic_state>(KVMIO, 0x8f);
const KVM_SET_CPUID2: u64 = iow::<kvm_cpuid2>(KVMIO, 0x90);
const KVM_KVMCLOCK_CTRL: u64 = io(KVMIO, 0xad);

/// VFIO's `_IO(';', 100 + n)`.
const fn vfio(n: u64) -> u64 {
    io(b';' as u64, 100 + n)
}
const VFIO_GET_API_VERSION: u64 = vfio(0);
const VFIO_CHECK_EXTENSION: u64 = vfio(1);
const VFIO_SET_IOMMU: u64 = vfio(2);
const VFIO_GROUP_GET_STATUS: u64 = vfio(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vfio(4);
const VFIO_GROUP_UNSET_CONTAINER: u64 = vfio(5);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio(6);
const VFIO_DEVICE_GET_INFO: u64 = vfio(7);
const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio(8);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio(9);
const VFIO_DEVICE_SET_IRQS: u64 = vfio(10);
const VFIO_DEVICE_RESET: u64 = vfio(11);
const VFIO_IOMMU_GET_INFO: u64 = vfio(12);
const VFIO_IOMMU_MAP_DMA: u64 = vfio(13);
const VFIO_IOMMU_UNMAP_DMA: u64 = vfio(14);

// <linux/if_tun.h>
const TUNSETOFFLOAD: u64 = iow::<u32>(b'T' as u64, 208);
// <asm-generic/ioctls.h>: the raw terminal (restored at exit), non-blocking sockets.
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const FIONBIO: u64 = 0x5421;
// <linux/fs.h>: DISCARD and WRITE_ZEROES on a block device.
const BLKDISCARD: u64 = io(0x12, 119);
const BLKZEROOUT: u64 = io(0x12, 127);

/// What a vCPU thread asks: `KVM_RUN`; its registers for a fatal exit's report; what device
/// models do on an exit: the flash switching its read-only slot and a guest moving a BAR
/// (memory slots, ioeventfds), MSI-X vectors (routes, irqfds, VFIO's IRQs), a virtio-net
/// reset clearing the TAP's offloads; pause (kvmclock); the firmware platform's SCI (a
/// level-triggered line the PM registers drive).
const VCPU: &[u64] = &[
    KVM_RUN,
    KVM_IRQ_LINE,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_GET_LAPIC,
    KVM_SET_USER_MEMORY_REGION,
    KVM_IOEVENTFD,
    KVM_IRQFD,
    KVM_SET_GSI_ROUTING,
    KVM_KVMCLOCK_CTRL,
    VFIO_DEVICE_SET_IRQS,
    TUNSETOFFLOAD,
];

/// A virtio-blk worker on a block device.
const BLOCK: &[u64] = &[BLKDISCARD, BLKZEROOUT];

/// The API thread: a connection made blocking again.
const API: &[u64] = &[FIONBIO];

/// The VMM thread: each boot's VM, vCPUs and passed-through devices built again; virtio
/// activation (offloads); pause's clock; the terminal; and, inherited by the threads it
/// starts, theirs.
const VMM: &[u64] = &[
    // First: the vCPU threads inherit this filter, and the kernel checks it on each exit.
    KVM_RUN,
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_CHECK_EXTENSION,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_GET_SUPPORTED_CPUID,
    KVM_GET_SUPPORTED_HV_CPUID,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_IRQ_LINE,
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_CREATE_PIT2,
    KVM_IOEVENTFD,
    KVM_SET_CLOCK,
    KVM_GET_CLOCK,
    KVM_ENABLE_CAP,
    KVM_CREATE_DEVICE,
    KVM_SET_DEVICE_ATTR,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_SET_MSRS,
    KVM_SET_FPU,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_SET_CPUID2,
    KVM_KVMCLOCK_CTRL,
    VFIO_GET_API_VERSION,
    VFIO_CHECK_EXTENSION,
    VFIO_SET_IOMMU,
    VFIO_GROUP_GET_STATUS,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_GROUP_UNSET_CONTAINER,
    VFIO_GROUP_GET_DEVICE_FD,
    VFIO_DEVICE_GET_INFO,
    VFIO_DEVICE_GET_REGION_INFO,
    VFIO_DEVICE_GET_IRQ_INFO,
    VFIO_DEVICE_SET_IRQS,
    VFIO_DEVICE_RESET,
    VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_UNMAP_DMA,
    TUNSETOFFLOAD,
    TCGETS,
    TCSETS,
    TCSETSW,
    FIONBIO,
    BLKDISCARD,
    BLKZEROOUT,
];

/// The `ioctl` requests `kind` may make.
pub fn allowed(kind: ThreadKind) -> &'static [u64] {
    match kind {
        ThreadKind::Vmm => VMM,
        ThreadKind::Vcpu => VCPU,
        ThreadKind::BlockWorker => BLOCK,
        ThreadKind::NetWorker => &[],
        ThreadKind::Api => API,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_headers() {
        // Values from <linux/kvm.h>, <linux/vfio.h>, <linux/if_tun.h>, <linux/fs.h>.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_ENABLE_CAP, 0x4068_aea3);
        assert_eq!(KVM_GET_CLOCK, 0x8030_ae7c);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(BLKDISCARD, 0x1277);
        assert_eq!(BLKZEROOUT, 0x127f);
    }

    #[test]
    fn every_child_request_is_the_vmm_threads_too() {
        // A thread's calls pass its creator's filter as well: the VMM thread must allow
        // every request of the threads it starts.
        for kind in ThreadKind::ALL {
            for nr in allowed(kind) {
                assert!(VMM.contains(nr), "{kind:?}: {nr:#x} not in the VMM's list");
            }
        }
    }
}
