//! The Linux `boot_params` ("zero page"), its e820 memory map, and the kernel command line.
//!
//! See the kernel's `Documentation/arch/x86/boot.rst` (64-bit boot protocol) and
//! `zero-page.rst`. `rsi` points at the zero page when the vCPU enters the kernel.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_HOLE_START, PCI_ECAM_SIZE,
    PCI_ECAM_START, RAM_HIGH_START, ZERO_PAGE_START,
};
use crate::loader::{Initramfs, KernelEntry, BOOT_FLAG_MAGIC, HDRS_MAGIC};

/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `kernel_alignment` of the header synthesized for ELF kernels: 16 MiB, the physical address
/// (`LOAD_PHYSICAL_ADDR`) x86_64 vmlinux images are linked at.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// The x86 kernel's `COMMAND_LINE_SIZE` (2048) minus the NUL: what it keeps of the command line.
const X86_COMMAND_LINE_MAX: u32 = 2047;
/// Boot protocol 2.06 introduced `cmdline_size`; older kernels take 255 bytes.
const CMDLINE_SIZE_PROTOCOL: u16 = 0x0206;
const LEGACY_CMDLINE_MAX: u32 = 255;
/// Capacity of the zero page's e820 table.
const E820_MAX_ENTRIES: usize = linux_loader::loader::bootparam::E820_MAX_ENTRIES_ZEROPAGE;

/// Type of an e820 range (the values Linux's `E820_TYPE_*` use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not RAM the OS may use (firmware areas, MMIO, ECAM).
    Reserved = 2,
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// The e820 map for a guest with `ram_size` bytes of RAM laid out by [`crate::ram_regions`].
///
/// - RAM `[0, EBDA_START)`
/// - reserved `[EBDA_START, 1 MiB)`: EBDA and BIOS area, including the ACPI tables
///   (`ACPI_START..ACPI_END`)
/// - RAM `[1 MiB, min(ram_size, MMIO_HOLE_START))`
/// - reserved PCI ECAM `[PCI_ECAM_START, +PCI_ECAM_SIZE)`: Linux uses the MCFG's ECAM only if
///   it is reserved in e820 (or in a PNP0C02 `_CRS`, which the DSDT also provides)
/// - RAM `[4 GiB, 4 GiB + ram_size - MMIO_HOLE_START)` when RAM does not fit below the hole
///
/// The rest of the MMIO hole (PCI windows, IOAPIC, LAPIC) is left out of the map, as on PCs.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let mut map = Vec::with_capacity(5);
    let mut push = |addr: u64, end: u64, kind: E820Type| {
        if end > addr {
            map.push(E820Entry {
                addr,
                size: end - addr,
                kind,
            });
        }
    };
    let low_end = ram_size.min(MMIO_HOLE_START);
    push(0, low_end.min(EBDA_START), E820Type::Ram);
    push(EBDA_START, HIMEM_START, E820Type::Reserved);
    push(HIMEM_START, low_end, E820Type::Ram);
    push(
        PCI_ECAM_START,
        PCI_ECAM_START + PCI_ECAM_SIZE,
        E820Type::Reserved,
    );
    let high = ram_size - low_end;
    push(RAM_HIGH_START, RAM_HIGH_START + high, E820Type::Ram);
    map
}

/// What [`write_boot_params`] needs to know.
#[derive(Debug, Clone, Copy)]
pub struct BootParamsConfig<'a> {
    /// The loaded kernel (its setup header is copied into the zero page).
    pub kernel: &'a KernelEntry,
    /// Kernel command line, without the NUL.
    pub cmdline: &'a str,
    /// The loaded initramfs, if any.
    pub initramfs: Option<Initramfs>,
    /// Guest RAM size in bytes (as given to [`crate::ram_regions`]).
    pub ram_size: u64,
    /// Guest address of the ACPI RSDP (from [`crate::acpi::create_acpi_tables`]).
    pub rsdp: Option<GuestAddress>,
}

/// Errors building or writing the boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// The command line is longer than the kernel or the reserved area accepts.
    #[error("the kernel command line is {len} bytes; at most {max} are accepted")]
    CmdlineTooLong {
        /// Command line length (without NUL).
        len: usize,
        /// Maximum length (without NUL).
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// The e820 map does not fit in the zero page.
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    /// Writing the command line or the zero page into guest memory failed.
    #[error("cannot write the {what} into guest memory")]
    GuestMemory {
        /// "command line" or "zero page".
        what: &'static str,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// The setup header given to ELF kernels, which carry none: what boot.rst requires a boot
/// loader to provide, plus the kernel alignment and command line size the kernel assumes.
pub fn default_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG_MAGIC,
        header: HDRS_MAGIC,
        type_of_loader: LOADER_TYPE_UNDEFINED,
        kernel_alignment: ELF_KERNEL_ALIGNMENT,
        cmdline_size: X86_COMMAND_LINE_MAX,
        ..Default::default()
    }
}

/// Longest command line (without NUL) the kernel and [`CMDLINE_MAX_SIZE`] accept.
fn cmdline_max(hdr: &setup_header) -> usize {
    let kernel_max = if hdr.version >= CMDLINE_SIZE_PROTOCOL || hdr.version == 0 {
        hdr.cmdline_size
    } else {
        LEGACY_CMDLINE_MAX
    };
    let kernel_max = usize::try_from(kernel_max).unwrap_or(usize::MAX);
    kernel_max.min(CMDLINE_MAX_SIZE - 1)
}

/// Builds the zero page (does not touch guest memory): the kernel's setup header with the
/// loader fields filled in, the e820 map and the RSDP address.
pub fn build_boot_params(cfg: &BootParamsConfig<'_>) -> Result<boot_params, BootParamsError> {
    let mut hdr = cfg.kernel.setup_header.unwrap_or_else(default_setup_header);
    let max = cmdline_max(&hdr);
    if cfg.cmdline.len() > max {
        return Err(BootParamsError::CmdlineTooLong {
            len: cfg.cmdline.len(),
            max,
        });
    }
    if cfg.cmdline.bytes().any(|b| b == 0) {
        return Err(BootParamsError::CmdlineNul);
    }

    let mut params = zeroed_boot_params();

    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    let (cmdline_lo, cmdline_hi) = split_u64(CMDLINE_START);
    hdr.cmd_line_ptr = cmdline_lo;
    params.ext_cmd_line_ptr = cmdline_hi;
    if let Some(initrd) = cfg.initramfs {
        let (addr_lo, addr_hi) = split_u64(initrd.addr.0);
        let (size_lo, size_hi) = split_u64(initrd.size);
        hdr.ramdisk_image = addr_lo;
        hdr.ramdisk_size = size_lo;
        params.ext_ramdisk_image = addr_hi;
        params.ext_ramdisk_size = size_hi;
    }
    params.hdr = hdr;

    let map = e820_map(cfg.ram_size);
    if map.len() > E820_MAX_ENTRIES {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries =
        u8::try_from(map.len()).map_err(|_| BootParamsError::TooManyE820Entries(map.len()))?;
    params.acpi_rsdp_addr = cfg.rsdp.map_or(0, |a| a.0);
    Ok(params)
}

/// Writes the command line at [`CMDLINE_START`] and the zero page at [`ZERO_PAGE_START`].
pub fn write_boot_params<M: GuestMemoryBackend>(
    mem: &M,
    cfg: &BootParamsConfig<'_>,
) -> Result<(), BootParamsError> {
    let params = build_boot_params(cfg)?;
    let mut cmdline = Vec::with_capacity(cfg.cmdline.len() + 1);
    cmdline.extend_from_slice(cfg.cmdline.as_bytes());
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(CMDLINE_START))
        .map_err(|source| BootParamsError::GuestMemory {
            what: "command line",
            source,
        })?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|source| BootParamsError::GuestMemory {
            what: "zero page",
            source,
        })
}

/// An all-zero zero page.
fn zeroed_boot_params() -> boot_params {
    // SAFETY: `boot_params` is plain old data (linux-loader implements `ByteValued` for it: a
    // packed C struct of integers and arrays), so the all-zero bit pattern is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Low and high 32 bits.
fn split_u64(v: u64) -> (u32, u32) {
    let lo = u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
    let hi = u32::try_from(v >> 32).unwrap_or(u32::MAX);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::tests::{fake_bzimage, tiny_elf};
    use crate::loader::{load_kernel, KernelFormat};
    use crate::test_utils::{guest_memory, read_bytes};
    use linux_loader::loader::bootparam::XLF_KERNEL_64;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn entry(addr: u64, size: u64, kind: E820Type) -> E820Entry {
        E820Entry { addr, size, kind }
    }

    #[test]
    fn e820_for_512_mib() {
        let map = e820_map(512 * MIB);
        assert_eq!(
            map,
            vec![
                entry(0, EBDA_START, E820Type::Ram),
                entry(EBDA_START, HIMEM_START - EBDA_START, E820Type::Reserved),
                entry(HIMEM_START, 512 * MIB - HIMEM_START, E820Type::Ram),
                entry(PCI_ECAM_START, PCI_ECAM_SIZE, E820Type::Reserved),
            ]
        );
    }

    #[test]
    fn e820_for_6_gib_has_high_ram_and_nothing_in_the_hole() {
        let map = e820_map(6 * GIB);
        assert_eq!(map.len(), 5);
        assert_eq!(
            map[2],
            entry(HIMEM_START, MMIO_HOLE_START - HIMEM_START, E820Type::Ram)
        );
        assert_eq!(map[4], entry(RAM_HIGH_START, 3 * GIB, E820Type::Ram));
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, 6 * GIB - (HIMEM_START - EBDA_START));
        for e in &map {
            let overlaps_hole = e.addr < RAM_HIGH_START && e.addr + e.size > MMIO_HOLE_START;
            if overlaps_hole {
                assert_eq!(e.kind, E820Type::Reserved, "RAM in the hole: {e:?}");
            }
        }
        // Sorted and disjoint.
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr, "{w:?}");
        }
    }

    #[test]
    fn boot_params_fields_for_a_bzimage() {
        let mem = guest_memory(512 * MIB);
        let img = fake_bzimage(XLF_KERNEL_64, &[0x90; 64]);
        let kernel = load_kernel(&mem, &mut Cursor::new(img)).expect("load");
        let initramfs = Initramfs {
            addr: GuestAddress(0x1f00_0000),
            size: 0x12345,
        };
        let cfg = BootParamsConfig {
            kernel: &kernel,
            cmdline: "console=ttyS0 panic=-1",
            initramfs: Some(initramfs),
            ram_size: 512 * MIB,
            rsdp: Some(GuestAddress(crate::layout::ACPI_START)),
        };
        write_boot_params(&mem, &cfg).expect("write");

        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).expect("read");
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1f00_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x12345);
        assert_eq!({ p.hdr.code32_start }, 0x10_0000);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.e820_entries }, 4);
        assert_eq!({ p.e820_table[2].addr }, HIMEM_START);
        assert_eq!({ p.e820_table[2].r#type }, 1);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(
            read_bytes(&mem, CMDLINE_START, 23),
            b"console=ttyS0 panic=-1\0"
        );
    }

    #[test]
    fn elf_kernels_get_a_synthesized_header() {
        let mem = guest_memory(64 * MIB);
        let kernel = load_kernel(&mem, &mut Cursor::new(tiny_elf(0x100_0000))).expect("load");
        assert_eq!(kernel.format, KernelFormat::Elf);
        let cfg = BootParamsConfig {
            kernel: &kernel,
            cmdline: "",
            initramfs: None,
            ram_size: 64 * MIB,
            rsdp: None,
        };
        let p = build_boot_params(&cfg).expect("build");
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
        assert_eq!({ p.acpi_rsdp_addr }, 0);
    }

    #[test]
    fn overlong_or_nul_cmdline_is_refused() {
        let mem = guest_memory(64 * MIB);
        let kernel = load_kernel(&mem, &mut Cursor::new(tiny_elf(0x100_0000))).expect("load");
        let long = "x".repeat(2048);
        let mut cfg = BootParamsConfig {
            kernel: &kernel,
            cmdline: &long,
            initramfs: None,
            ram_size: 64 * MIB,
            rsdp: None,
        };
        assert!(matches!(
            build_boot_params(&cfg),
            Err(BootParamsError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        cfg.cmdline = "a\0b";
        assert!(matches!(
            build_boot_params(&cfg),
            Err(BootParamsError::CmdlineNul)
        ));
    }

    #[test]
    fn cmdline_is_bounded_by_the_reserved_area() {
        let mut hdr = default_setup_header();
        hdr.version = 0x020f;
        hdr.cmdline_size = u32::MAX;
        assert_eq!(cmdline_max(&hdr), CMDLINE_MAX_SIZE - 1);
        hdr.version = 0x0205;
        assert_eq!(cmdline_max(&hdr), 255);
    }
}
