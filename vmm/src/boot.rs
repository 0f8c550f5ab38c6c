//! Applies `ghost-boot` to a VM: loads the guest into memory and puts each vCPU in its boot
//! state.

use std::fs::File;
use std::path::Path;
use std::thread::JoinHandle;

use ghost_boot::bootparams::{write_boot_params, BootParamsConfig};
use ghost_boot::hyperv::HypervLeaves;
use ghost_boot::{acpi, cpu, cpuid, loader, reset_stub};
use kvm_bindings::{CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::config::VmConfig;
use crate::VmmError;

fn open(key: &'static str, path: &Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::GuestFile {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Loads the kernel (and initramfs) from the VM file into `mem`: only the kernel, for checks.
pub(crate) fn load_kernel(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
) -> Result<loader::KernelEntry, VmmError> {
    let path = config.boot.kernel.as_deref().unwrap_or(Path::new(""));
    load_kernel_file(mem, path)
}

fn load_kernel_file(mem: &GuestMemoryMmap, path: &Path) -> Result<loader::KernelEntry, VmmError> {
    loader::load_kernel(mem, &mut open("boot.kernel", path)?).map_err(|source| VmmError::Kernel {
        path: path.to_owned(),
        source,
    })
}

/// The kernel and initramfs of a direct boot, in guest memory.
pub(crate) struct Images {
    kernel: loader::KernelEntry,
    initramfs: Option<loader::Initramfs>,
}

fn load_image_files(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
) -> Result<Images, VmmError> {
    let kernel = load_kernel_file(mem, kernel)?;
    let initramfs = match initramfs {
        Some(path) => Some(
            loader::load_initramfs(mem, &mut open("boot.initramfs", path)?, &kernel).map_err(
                |source| VmmError::Initramfs {
                    path: path.to_owned(),
                    source,
                },
            )?,
        ),
        None => None,
    };
    Ok(Images { kernel, initramfs })
}

/// Loads the kernel and the initramfs of the VM file on a thread of its own, so that the tens of MiB of a kernel are read
/// while KVM and the devices are set up (as Cloud Hypervisor's payload loader does); nothing
/// else writes the images' part of guest memory, and no vCPU runs before [`Self::wait`].
pub(crate) struct ImageLoad(JoinHandle<Result<Images, VmmError>>);

impl ImageLoad {
    /// Starts loading. A thread that cannot be started is an error of the boot.
    pub(crate) fn start(mem: &GuestMemoryMmap, config: &VmConfig) -> Result<Self, VmmError> {
        let mem = mem.clone();
        let kernel = config.boot.kernel.clone().unwrap_or_default();
        let initramfs = config.boot.initramfs.clone();
        std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || load_image_files(&mem, &kernel, initramfs.as_deref()))
            .map(Self)
            .map_err(VmmError::Thread)
    }

    /// The loaded images, once the thread is done.
    pub(crate) fn wait(self) -> Result<Images, VmmError> {
        self.0.join().unwrap_or_else(|_| {
            Err(VmmError::Thread(std::io::Error::other(
                "the image loader thread panicked",
            )))
        })
    }
}

/// Writes everything else the guest needs in memory to boot beside its `images`: ACPI
/// tables, command line and zero page, GDT and page tables. Returns the 64-bit entry point.
pub(crate) fn load_guest(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    images: Images,
    pci_mmio64: (u64, u64),
) -> Result<GuestAddress, VmmError> {
    let Images { kernel, initramfs } = images;
    let rsdp = acpi::create_acpi_tables(mem, config.vm.vcpus, pci_mmio64)
        .map_err(ghost_boot::BootError::from)?;
    write_boot_params(
        mem,
        &BootParamsConfig {
            kernel: &kernel,
            cmdline: config.boot.cmdline(),
            initramfs,
            ram_size: config.memory.size.bytes(),
            rsdp: Some(rsdp),
        },
    )
    .map_err(VmmError::BootParams)?;
    cpu::write_gdt_and_page_tables(mem).map_err(ghost_boot::BootError::from)?;
    reset_stub::write_reset_stub(mem).map_err(ghost_boot::BootError::ResetStub)?;
    Ok(kernel.entry)
}

/// LAPIC register offsets and delivery modes for the local interrupt pins.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_lvt_delivery_mode(regs: &mut [libc::c_char], offset: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (d, s) in raw.iter_mut().zip(bytes.iter()) {
        *d = s.to_ne_bytes()[0];
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (d, s) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
}

/// Puts vCPU `index` of `vcpus` in its boot state: CPUID (topology), MSRs, LAPIC local
/// interrupt pins, and for the boot vCPU the long-mode registers at `entry` (direct boot). The others wait
/// for INIT/SIPI from the guest, in KVM's in-kernel LAPIC.
pub(crate) fn configure_vcpu(
    fd: &VcpuFd,
    index: u8,
    vcpus: u8,
    supported_cpuid: &CpuId,
    hyperv: Option<&HypervLeaves>,
    entry: Option<GuestAddress>,
) -> Result<(), VmmError> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::filter_cpuid(&mut cpuid, index, vcpus).map_err(ghost_boot::BootError::from)?;
    if let Some(leaves) = hyperv {
        cpuid =
            CpuId::from_entries(&leaves.apply(cpuid.as_slice())).map_err(|_| VmmError::Kvm {
                op: "KVM_SET_CPUID2",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            })?;
        crate::hyperv::enable(fd, index, leaves)?;
    }
    fd.set_cpuid2(&cpuid)
        .map_err(VmmError::kvm("KVM_SET_CPUID2"))?;

    let entries = cpu::boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|_| VmmError::Kvm {
        op: "KVM_SET_MSRS",
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    let set = fd.set_msrs(&msrs).map_err(VmmError::kvm("KVM_SET_MSRS"))?;
    if set != entries.len() {
        let failed = entries.get(set).map_or(0, |e| e.index);
        log::warn!("vCPU {index}: KVM refused boot MSR {failed:#x}; continuing without it");
    }

    let mut lapic = fd.get_lapic().map_err(VmmError::kvm("KVM_GET_LAPIC"))?;
    set_lvt_delivery_mode(&mut lapic.regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_lvt_delivery_mode(&mut lapic.regs, APIC_LVT_LINT1, APIC_MODE_NMI);
    fd.set_lapic(&lapic)
        .map_err(VmmError::kvm("KVM_SET_LAPIC"))?;

    // Firmware boot: every vCPU stays in the reset state KVM created it in (the boot vCPU at
    // the reset vector, the others waiting for INIT/SIPI).
    let Some(entry) = entry else {
        return Ok(());
    };
    if index == 0 {
        fd.set_regs(&cpu::boot_regs(entry))
            .map_err(VmmError::kvm("KVM_SET_REGS"))?;
        let sregs = fd.get_sregs().map_err(VmmError::kvm("KVM_GET_SREGS"))?;
        fd.set_sregs(&cpu::boot_sregs(sregs))
            .map_err(VmmError::kvm("KVM_SET_SREGS"))?;
        fd.set_fpu(&cpu::boot_fpu())
            .map_err(VmmError::kvm("KVM_SET_FPU"))?;
    }
    Ok(())
}
