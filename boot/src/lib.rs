//! ghost-boot: everything that puts an x86_64 Linux guest at its 64-bit entry point.
//!
//! The crate writes guest memory and builds plain KVM data structures; it never touches a KVM
//! file descriptor (only `ghost-vmm` holds those). A boot goes:
//!
//! 1. [`ram_regions`]: the guest RAM regions the VMM maps (RAM below the 32-bit MMIO hole, the
//!    rest above 4 GiB; see [`layout`]).
//! 2. [`loader::load_kernel`] (bzImage or ELF vmlinux) and [`loader::load_initramfs`].
//! 3. [`acpi::create_acpi_tables`]: RSDP, XSDT, FADT (hardware-reduced ACPI), MADT, DSDT, MCFG;
//!    and [`reset_stub::write_reset_stub`], the F000:FFF0 code Linux's reboot ends up in.
//! 4. [`bootparams::write_boot_params`]: the command line and the Linux "zero page" with its
//!    e820 map and the RSDP address.
//! 5. [`cpu::write_gdt_and_page_tables`] once, then per vCPU [`cpu::boot_regs`],
//!    [`cpu::boot_sregs`], [`cpu::boot_fpu`], [`cpu::boot_msrs`] and [`cpuid::filter_cpuid`],
//!    which the VMM applies with its vCPU fds.
//!
//! [`hyperv`] builds the Hyper-V CPUID leaves (`[vm] hyperv = true`) from what KVM emulates.
//!
//! [`smbios`] builds the SMBIOS tables (system vendor `ghost-vmm`, product = the VM's name, a
//! UUID stable per VM): as fw_cfg blobs for UEFI firmware, or written at 0xF0000 for a direct
//! kernel boot.
//!
//! Every vCPU starts directly in 64-bit long mode at the kernel's 64-bit entry point, as the
//! Linux x86 64-bit boot protocol describes (no firmware, no real-mode setup code).
//!
//! The firmware platform (UEFI from flash on a q35 chipset) needs only descriptions, no
//! loading: [`firmware`] (its memory map, where the flash goes, the `etc/e820` and `bootorder`
//! fw_cfg files) and [`acpi::firmware_tables`] (the q35 ACPI tables with the linker/loader
//! script the firmware runs, [`acpi::loader`]).

#[cfg(not(target_arch = "x86_64"))]
compile_error!("ghost-boot builds x86_64 guests on x86_64 hosts only");

pub mod acpi;
pub mod bootparams;
pub mod cpu;
pub mod cpuid;
pub mod firmware;
pub mod hyperv;
pub mod layout;
pub mod loader;
pub mod reset_stub;
pub mod smbios;

pub use layout::ram_regions;

/// Any error of this crate, by the step that failed (each wraps its module's error).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Loading the kernel or the initramfs failed.
    #[error("cannot load the guest kernel or initramfs")]
    Loader(#[from] loader::LoaderError),
    /// Writing the command line or the zero page failed.
    #[error("cannot write the Linux boot parameters")]
    BootParams(#[from] bootparams::BootParamsError),
    /// Building or writing the ACPI tables failed.
    #[error("cannot write the ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    /// Writing the real-mode reset entry stub failed.
    #[error("cannot write the reset entry stub")]
    ResetStub(#[source] vm_memory::GuestMemoryError),
    /// Writing the boot GDT or page tables failed.
    #[error("cannot prepare the boot CPU state")]
    Cpu(#[from] cpu::CpuError),
    /// Building or writing the SMBIOS tables failed.
    #[error("cannot build the SMBIOS tables")]
    Smbios(#[from] smbios::SmbiosError),
    /// Building a vCPU's CPUID failed.
    #[error("cannot build the guest CPUID")]
    Cpuid(#[from] cpuid::CpuidError),
}

#[cfg(test)]
pub(crate) mod test_utils {
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    /// Guest memory laid out by [`crate::ram_regions`] for `size` bytes of RAM.
    pub fn guest_memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&crate::ram_regions(size)).expect("test guest memory")
    }

    /// Reads `len` bytes of guest memory at `addr`.
    pub fn read_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        use vm_memory::Bytes;
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr))
            .expect("read guest memory");
        buf
    }
}
