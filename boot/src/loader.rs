//! Loading the guest kernel (bzImage or ELF vmlinux) and the initramfs into guest memory.
//!
//! The format is detected from the image's magic numbers:
//! - **bzImage**: `0xAA55` at 0x1fe and `"HdrS"` at 0x202 (the setup header at 0x1f1). The
//!   protected-mode part is loaded at [`HIMEM_START`]; the 64-bit entry point is 0x200 past it
//!   (boot protocol 2.12+, `XLF_KERNEL_64`). The image's setup header is kept for `boot_params`.
//! - **ELF vmlinux**: `\x7fELF`, ELF64, little endian, x86-64. `PT_LOAD` segments go to their
//!   physical addresses and the entry point is `e_entry`, which is physical for Linux's vmlinux.
//!
//! The actual copying is done by `linux-loader`; this module validates the image first so that a
//! wrong or truncated file gives a clear error, and checks that the kernel (including the room a
//! bzImage needs to decompress itself, `init_size`) fits in low guest RAM.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{setup_header, LOADED_HIGH, XLF_KERNEL_64};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::KernelLoader;
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryRegion, ReadVolatile,
};

use crate::layout::{host_usize, HIMEM_START, MMIO_HOLE_START};

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
pub const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Where the setup header starts in a bzImage (and in `boot_params`).
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// Bytes of the image needed to see the whole setup header.
const HEADER_PREFIX_LEN: usize = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>();
/// `setup_header.boot_flag`.
pub(crate) const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `setup_header.header`: "HdrS".
pub(crate) const HDRS_MAGIC: u32 = 0x5372_6448;
/// Boot protocol 2.12 introduced `xloadflags` and with it `XLF_KERNEL_64`.
const MIN_64BIT_PROTOCOL: u16 = 0x020c;
/// Boot protocol 2.03 introduced `initrd_addr_max`; before it the limit was fixed.
const INITRD_ADDR_MAX_PROTOCOL: u16 = 0x0203;
/// `initrd_addr_max` of kernels older than boot protocol 2.03.
const LEGACY_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// A bzImage sector (the unit of `setup_sects`).
const SECTOR_SIZE: u64 = 512;
/// `setup_sects == 0` means 4 (boot protocol).
const DEFAULT_SETUP_SECTS: u64 = 4;
/// The initramfs is placed page aligned.
const PAGE_SIZE: u64 = 0x1000;

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELF64_EHDR_LEN: usize = 64;
const ELF64_PHDR_LEN: u64 = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

/// The kernel image formats [`load_kernel`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A compressed Linux bzImage (what distributions ship as `vmlinuz`).
    BzImage,
    /// An uncompressed ELF `vmlinux`.
    Elf,
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BzImage => "bzImage",
            Self::Elf => "ELF vmlinux",
        })
    }
}

/// A kernel loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelEntry {
    /// What was loaded.
    pub format: KernelFormat,
    /// The 64-bit entry point: the vCPU's `rip` (see [`crate::cpu::boot_regs`]).
    pub entry: GuestAddress,
    /// Where the image was loaded (bzImage: the protected-mode part; ELF: the entry point).
    pub load_addr: GuestAddress,
    /// End (exclusive) of the guest memory the kernel occupies or claims while booting: the
    /// loaded image, the ELF `.bss`, and for a bzImage the `init_size` bytes it decompresses
    /// into. Nothing else may be placed below this (the initramfs goes above it).
    pub end: GuestAddress,
    /// The bzImage's setup header (with `code32_start` set to the load address), to copy into
    /// `boot_params`; `None` for ELF kernels, which get a synthesized one.
    pub setup_header: Option<setup_header>,
}

impl KernelEntry {
    /// Highest guest address the kernel accepts for the last byte of the initramfs.
    pub fn initrd_addr_max(&self) -> u64 {
        match self.setup_header {
            Some(hdr) if hdr.version >= INITRD_ADDR_MAX_PROTOCOL && hdr.initrd_addr_max != 0 => {
                u64::from(hdr.initrd_addr_max)
            }
            Some(_) => LEGACY_INITRD_ADDR_MAX,
            // A vmlinux entered at its 64-bit entry reads the 64-bit ramdisk fields: no limit
            // beyond the low RAM the initramfs is placed in.
            None => u64::MAX,
        }
    }
}

/// Where [`load_initramfs`] put the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initramfs {
    /// Guest address of the first byte (page aligned).
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Errors loading the kernel or the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Reading or seeking the kernel image failed.
    #[error("cannot read the kernel image: {0}")]
    Read(#[source] io::Error),
    /// The file is too short for any kernel header.
    #[error("the kernel image is only {size} bytes: too small to be a bzImage or an ELF vmlinux")]
    TooSmall {
        /// File size.
        size: u64,
    },
    /// Neither bzImage nor ELF magic.
    #[error(
        "not a Linux kernel image: no bzImage setup header (0xAA55 at 0x1fe, \"HdrS\" at 0x202) \
         and no ELF magic"
    )]
    UnknownFormat,
    /// The file ends before the end its headers announce.
    #[error("the {format} kernel image is truncated: {size} bytes, its headers need {needed}")]
    Truncated {
        /// Detected format.
        format: KernelFormat,
        /// File size.
        size: u64,
        /// Size the headers require.
        needed: u64,
    },
    /// A bzImage whose boot protocol predates the 64-bit entry point.
    #[error(
        "the bzImage uses boot protocol {major}.{minor:02}; 2.12 or newer is needed for the 64-bit \
         entry point",
        major = .version >> 8,
        minor = .version & 0xff
    )]
    ProtocolTooOld {
        /// `setup_header.version`.
        version: u16,
    },
    /// A zImage (loaded low) rather than a bzImage.
    #[error("the image is a zImage (LOADED_HIGH is not set): only bzImage kernels are supported")]
    NotLoadedHigh,
    /// A bzImage without `XLF_KERNEL_64`.
    #[error(
        "the bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set in xloadflags): it is a \
         32-bit kernel, and ghost-vmm boots 64-bit kernels only"
    )]
    Not64Bit,
    /// An ELF file that is not an x86-64 ELF64 little-endian image.
    #[error(
        "the ELF file is not an x86-64 kernel (class {class}, data encoding {data}, machine \
         {machine}; need ELF64, little endian, x86-64)"
    )]
    ElfNotX86_64 {
        /// `e_ident[EI_CLASS]`.
        class: u8,
        /// `e_ident[EI_DATA]`.
        data: u8,
        /// `e_machine`.
        machine: u16,
    },
    /// An ELF image that would overwrite the boot structures below 1 MiB.
    #[error(
        "the ELF kernel loads or enters at {addr:#x}, below {HIMEM_START:#x} where the boot \
         structures live"
    )]
    ElfBelowHimem {
        /// The offending physical address.
        addr: u64,
    },
    /// The kernel does not fit in low guest RAM.
    #[error(
        "the kernel needs guest memory up to {needed:#x} but low RAM ends at {available:#x}: give \
         the guest more memory"
    )]
    KernelTooBig {
        /// End of the memory the kernel needs.
        needed: u64,
        /// End of low RAM.
        available: u64,
    },
    /// `linux-loader` refused or failed to copy the image.
    #[error("cannot load the {format} kernel into guest memory")]
    Load {
        /// Detected format.
        format: KernelFormat,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// Reading or seeking the initramfs failed.
    #[error("cannot read the initramfs: {0}")]
    InitramfsRead(#[source] io::Error),
    /// The initramfs file is empty.
    #[error("the initramfs file is empty")]
    InitramfsEmpty,
    /// The initramfs does not fit between the kernel and the top of usable low RAM.
    #[error(
        "the initramfs ({size} bytes) does not fit in the {available} bytes of low RAM between \
         the kernel and the highest address the kernel accepts: give the guest more memory"
    )]
    InitramfsTooBig {
        /// Initramfs size.
        size: u64,
        /// Bytes available.
        available: u64,
    },
    /// Copying the initramfs into guest memory failed.
    #[error("cannot copy the initramfs into guest memory")]
    InitramfsCopy(#[source] GuestMemoryError),
}

/// Loads a bzImage or ELF vmlinux kernel into `mem` (detected by magic) and returns its entry.
///
/// `mem` must contain low RAM from 0 (see [`crate::ram_regions`]).
pub fn load_kernel<M, F>(mem: &M, kernel: &mut F) -> Result<KernelEntry, LoaderError>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let size = kernel.seek(SeekFrom::End(0)).map_err(LoaderError::Read)?;
    let mut prefix = [0u8; HEADER_PREFIX_LEN];
    let n = read_prefix(kernel, &mut prefix).map_err(LoaderError::Read)?;
    let prefix = &prefix[..n];

    let available = low_ram_end(mem);
    if prefix.starts_with(&ELF_MAGIC) {
        return load_elf(mem, kernel, prefix, size, available);
    }
    if n < HEADER_PREFIX_LEN {
        return Err(LoaderError::TooSmall { size });
    }
    let hdr = setup_header::from_slice(&prefix[SETUP_HEADER_OFFSET..])
        .copied()
        .ok_or(LoaderError::UnknownFormat)?;
    if hdr.boot_flag != BOOT_FLAG_MAGIC || hdr.header != HDRS_MAGIC {
        return Err(LoaderError::UnknownFormat);
    }
    load_bzimage(mem, kernel, &hdr, size, available)
}

fn load_bzimage<M, F>(
    mem: &M,
    kernel: &mut F,
    hdr: &setup_header,
    size: u64,
    available: u64,
) -> Result<KernelEntry, LoaderError>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let format = KernelFormat::BzImage;
    if hdr.version < MIN_64BIT_PROTOCOL {
        return Err(LoaderError::ProtocolTooOld {
            version: hdr.version,
        });
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(LoaderError::NotLoadedHigh);
    }
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoaderError::Not64Bit);
    }

    let setup_sects = match u64::from(hdr.setup_sects) {
        0 => DEFAULT_SETUP_SECTS,
        s => s,
    };
    let setup_size = (setup_sects + 1) * SECTOR_SIZE;
    // syssize: protected-mode code size in 16-byte paragraphs.
    let needed = setup_size + u64::from(hdr.syssize) * 16;
    if size < needed || size <= setup_size {
        return Err(LoaderError::Truncated {
            format,
            size,
            needed: needed.max(setup_size + 1),
        });
    }

    // The decompressor runs at max(load address aligned up to kernel_alignment, pref_address)
    // (LOAD_PHYSICAL_ADDR) and needs init_size bytes from there (arch/x86/boot/compressed).
    let load = HIMEM_START;
    let image_end = load + (size - setup_size);
    let alignment = u64::from(hdr.kernel_alignment).max(1);
    let runtime_start = load.div_ceil(alignment) * alignment;
    let runtime_start = runtime_start.max(hdr.pref_address);
    let end = image_end.max(runtime_start.saturating_add(u64::from(hdr.init_size)));
    if end > available {
        return Err(LoaderError::KernelTooBig {
            needed: end,
            available,
        });
    }

    let result = BzImage::load(
        mem,
        Some(GuestAddress(load)),
        kernel,
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(|source| LoaderError::Load { format, source })?;

    Ok(KernelEntry {
        format,
        entry: result.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
        load_addr: result.kernel_load,
        end: GuestAddress(end),
        setup_header: result.setup_header,
    })
}

fn load_elf<M, F>(
    mem: &M,
    kernel: &mut F,
    prefix: &[u8],
    size: u64,
    available: u64,
) -> Result<KernelEntry, LoaderError>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let format = KernelFormat::Elf;
    let truncated = |needed: u64| LoaderError::Truncated {
        format,
        size,
        needed,
    };
    let ehdr = prefix.get(..ELF64_EHDR_LEN).ok_or(truncated(64))?;
    let (class, data, machine) = (ehdr[4], ehdr[5], le_u16(ehdr, 18));
    if class != ELFCLASS64 || data != ELFDATA2LSB || machine != EM_X86_64 {
        return Err(LoaderError::ElfNotX86_64 {
            class,
            data,
            machine,
        });
    }
    let entry = le_u64(ehdr, 24);
    let phoff = le_u64(ehdr, 32);
    let phnum = u64::from(le_u16(ehdr, 56));
    let ph_end = phoff.saturating_add(phnum * ELF64_PHDR_LEN);
    if ph_end > size {
        return Err(truncated(ph_end));
    }
    if entry < HIMEM_START {
        return Err(LoaderError::ElfBelowHimem { addr: entry });
    }

    let mut phdrs = vec![0u8; host_usize(phnum * ELF64_PHDR_LEN)];
    kernel
        .seek(SeekFrom::Start(phoff))
        .and_then(|_| kernel.read_exact(&mut phdrs))
        .map_err(LoaderError::Read)?;
    let mut end = entry;
    for ph in phdrs.chunks_exact(host_usize(ELF64_PHDR_LEN)) {
        if le_u32(ph, 0) != PT_LOAD {
            continue;
        }
        let (offset, paddr) = (le_u64(ph, 8), le_u64(ph, 24));
        let (filesz, memsz) = (le_u64(ph, 32), le_u64(ph, 40));
        let file_end = offset.saturating_add(filesz);
        if file_end > size {
            return Err(truncated(file_end));
        }
        if paddr < HIMEM_START {
            return Err(LoaderError::ElfBelowHimem { addr: paddr });
        }
        end = end.max(paddr.saturating_add(memsz.max(filesz)));
    }
    if end > available {
        return Err(LoaderError::KernelTooBig {
            needed: end,
            available,
        });
    }

    let result = Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(|source| LoaderError::Load { format, source })?;
    Ok(KernelEntry {
        format,
        entry: GuestAddress(entry),
        load_addr: result.kernel_load,
        end: GuestAddress(end),
        setup_header: None,
    })
}

/// Loads the initramfs page aligned at the top of low RAM.
///
/// The top is the lower of the end of low RAM (at most [`MMIO_HOLE_START`]) and the kernel's
/// `initrd_addr_max`; the initramfs must end up above [`KernelEntry::end`].
pub fn load_initramfs<M, F>(
    mem: &M,
    initramfs: &mut F,
    kernel: &KernelEntry,
) -> Result<Initramfs, LoaderError>
where
    M: GuestMemoryBackend,
    F: ReadVolatile + Seek,
{
    let size = initramfs
        .seek(SeekFrom::End(0))
        .map_err(LoaderError::InitramfsRead)?;
    if size == 0 {
        return Err(LoaderError::InitramfsEmpty);
    }
    initramfs.rewind().map_err(LoaderError::InitramfsRead)?;

    let top = low_ram_end(mem).min(kernel.initrd_addr_max().saturating_add(1));
    let floor = kernel.end.raw_value().div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let addr = top
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|&a| a >= floor)
        .ok_or(LoaderError::InitramfsTooBig {
            size,
            available: top.saturating_sub(floor),
        })?;

    mem.read_exact_volatile_from(GuestAddress(addr), initramfs, host_usize(size))
        .map_err(LoaderError::InitramfsCopy)?;
    Ok(Initramfs {
        addr: GuestAddress(addr),
        size,
    })
}

/// End (exclusive) of the RAM that is contiguous from guest address 0, capped at the MMIO hole.
pub(crate) fn low_ram_end<M: GuestMemoryBackend>(mem: &M) -> u64 {
    let mut end = 0u64;
    while let Some(region) = mem.find_region(GuestAddress(end)) {
        let region_end = region.start_addr().raw_value() + region.len();
        if region_end <= end {
            break;
        }
        end = region_end;
    }
    end.min(MMIO_HOLE_START)
}

/// Reads up to `buf.len()` bytes from the start of `f`, fewer only at end of file.
fn read_prefix<F: Read + Seek>(f: &mut F, buf: &mut [u8]) -> io::Result<usize> {
    f.rewind()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_utils::{guest_memory, read_bytes};
    use linux_loader::loader::bootparam::XLF_CAN_BE_LOADED_ABOVE_4G;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;
    /// The tiny ELF's code: `mov al, 0x42; out 0xe9, al; hlt`.
    const CODE: [u8; 5] = [0xb0, 0x42, 0xe6, 0xe9, 0xf4];
    const ELF_LOAD: u64 = 0x100_0000;

    /// A minimal ELF64 x86-64 executable with one PT_LOAD of [`CODE`] at `paddr`.
    pub fn tiny_elf(paddr: u64) -> Vec<u8> {
        let code_off = 0x1000u64;
        let mut f = vec![0u8; host_usize(code_off)];
        f[..4].copy_from_slice(&ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1; // EI_VERSION
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut f[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        ph[8..16].copy_from_slice(&code_off.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(CODE.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&0x2000u64.to_le_bytes()); // p_memsz (with .bss)
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        f.extend_from_slice(&CODE);
        f
    }

    /// A fake bzImage: one setup sector, a valid header, and `payload` as protected-mode code
    /// (zero-padded to 16 bytes, as the kernel's build tool pads to `syssize` paragraphs).
    pub fn fake_bzimage(xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let hdr = setup_header {
            setup_sects: 1,
            syssize: u32::try_from(payload.len().div_ceil(16)).expect("small payload"),
            boot_flag: BOOT_FLAG_MAGIC,
            jump: 0x66eb,
            header: HDRS_MAGIC,
            version: 0x020f,
            loadflags: LOADED_HIGH,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            relocatable_kernel: 1,
            xloadflags,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: 0x40_0000,
            ..Default::default()
        };
        let mut img = vec![0u8; 2 * 512];
        img[SETUP_HEADER_OFFSET..HEADER_PREFIX_LEN].copy_from_slice(hdr.as_slice());
        img.extend_from_slice(payload);
        img.resize(img.len().next_multiple_of(16), 0);
        img
    }

    #[test]
    fn loads_tiny_elf_at_its_physical_address() {
        let mem = guest_memory(64 * MIB);
        let k = load_kernel(&mem, &mut Cursor::new(tiny_elf(ELF_LOAD))).expect("load ELF");
        assert_eq!(k.format, KernelFormat::Elf);
        assert_eq!(k.entry, GuestAddress(ELF_LOAD));
        assert_eq!(k.end, GuestAddress(ELF_LOAD + 0x2000));
        assert!(k.setup_header.is_none());
        assert_eq!(read_bytes(&mem, ELF_LOAD, CODE.len()), CODE);
    }

    #[test]
    fn loads_fake_bzimage_at_himem() {
        let mem = guest_memory(64 * MIB);
        let payload: Vec<u8> = (0..100u8).collect();
        let img = fake_bzimage(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, &payload);
        let k = load_kernel(&mem, &mut Cursor::new(img)).expect("load bzImage");
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.load_addr, GuestAddress(HIMEM_START));
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        // Decompression room: pref_address (16 MiB) + init_size (4 MiB).
        assert_eq!(k.end, GuestAddress(0x140_0000));
        let hdr = k.setup_header.expect("bzImage keeps its setup header");
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.code32_start }, 0x10_0000);
        assert_eq!(k.initrd_addr_max(), 0x7fff_ffff);
        // The whole file after the setup sectors (padded payload) is at HIMEM_START.
        assert_eq!(read_bytes(&mem, HIMEM_START, payload.len()), payload);
    }

    #[test]
    fn bzimage_without_64bit_entry_is_refused() {
        let mem = guest_memory(64 * MIB);
        let img = fake_bzimage(0, &[0x90; 32]);
        let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
        assert!(matches!(err, LoaderError::Not64Bit), "{err}");
        assert!(err.to_string().contains("XLF_KERNEL_64"));
    }

    #[test]
    fn old_protocol_bzimage_is_refused() {
        let mem = guest_memory(64 * MIB);
        let mut img = fake_bzimage(XLF_KERNEL_64, &[0x90; 32]);
        img[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
        assert!(
            matches!(err, LoaderError::ProtocolTooOld { version: 0x0206 }),
            "{err}"
        );
        assert!(err.to_string().contains("2.06"), "{err}");
    }

    #[test]
    fn truncated_bzimage_is_reported() {
        let mem = guest_memory(64 * MIB);
        let mut img = fake_bzimage(XLF_KERNEL_64, &[0x90; 4096]);
        img.truncate(2 * 512 + 100);
        let err = load_kernel(&mem, &mut Cursor::new(img)).unwrap_err();
        assert!(
            matches!(
                err,
                LoaderError::Truncated {
                    format: KernelFormat::BzImage,
                    size: 1124,
                    needed: 5120
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_elf_is_reported() {
        let mem = guest_memory(64 * MIB);
        let mut elf = tiny_elf(ELF_LOAD);
        elf.truncate(0x1002);
        let err = load_kernel(&mem, &mut Cursor::new(elf)).unwrap_err();
        assert!(
            matches!(
                err,
                LoaderError::Truncated {
                    format: KernelFormat::Elf,
                    ..
                }
            ),
            "{err}"
        );
        let err = load_kernel(&mem, &mut Cursor::new(ELF_MAGIC.to_vec())).unwrap_err();
        assert!(matches!(err, LoaderError::Truncated { .. }), "{err}");
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let mem = guest_memory(64 * MIB);
        let err = load_kernel(&mem, &mut Cursor::new(vec![0x5a; 8192])).unwrap_err();
        assert!(matches!(err, LoaderError::UnknownFormat), "{err}");
        let err = load_kernel(&mem, &mut Cursor::new(b"#!/bin/sh\n".to_vec())).unwrap_err();
        assert!(matches!(err, LoaderError::TooSmall { size: 10 }), "{err}");
        let err = load_kernel(&mem, &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(err, LoaderError::TooSmall { size: 0 }), "{err}");
    }

    #[test]
    fn non_x86_elf_is_refused() {
        let mem = guest_memory(64 * MIB);
        let mut elf = tiny_elf(ELF_LOAD);
        elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        let err = load_kernel(&mem, &mut Cursor::new(elf)).unwrap_err();
        assert!(
            matches!(err, LoaderError::ElfNotX86_64 { machine: 183, .. }),
            "{err}"
        );
    }

    #[test]
    fn elf_below_1mib_is_refused() {
        let mem = guest_memory(64 * MIB);
        let err = load_kernel(&mem, &mut Cursor::new(tiny_elf(0x8000))).unwrap_err();
        assert!(
            matches!(err, LoaderError::ElfBelowHimem { addr: 0x8000 }),
            "{err}"
        );
    }

    #[test]
    fn kernel_larger_than_ram_is_refused() {
        let mem = guest_memory(16 * MIB);
        let err = load_kernel(&mem, &mut Cursor::new(tiny_elf(ELF_LOAD))).unwrap_err();
        assert!(
            matches!(err, LoaderError::KernelTooBig { available, .. } if available == 16 * MIB),
            "{err}"
        );
    }

    #[test]
    fn initramfs_goes_page_aligned_to_the_top_of_low_ram() {
        let mem = guest_memory(64 * MIB);
        let k = load_kernel(&mem, &mut Cursor::new(tiny_elf(ELF_LOAD))).expect("load");
        let data = vec![0xabu8; 5000];
        let initrd = load_initramfs(&mem, &mut Cursor::new(data.clone()), &k).expect("initrd");
        assert_eq!(initrd.size, 5000);
        assert_eq!(initrd.addr, GuestAddress(64 * MIB - 0x2000));
        assert_eq!(read_bytes(&mem, initrd.addr.0, 5000), data);
    }

    #[test]
    fn initramfs_respects_the_hole_and_initrd_addr_max() {
        // 6 GiB: low RAM ends at the hole; the bzImage's initrd_addr_max (2 GiB - 1) is lower.
        let mem = guest_memory(6 << 30);
        let img = fake_bzimage(XLF_KERNEL_64, &[0x90; 64]);
        let k = load_kernel(&mem, &mut Cursor::new(img)).expect("load");
        let initrd =
            load_initramfs(&mem, &mut Cursor::new(vec![1u8; 4096]), &k).expect("initramfs");
        assert_eq!(initrd.addr, GuestAddress(0x8000_0000 - 0x1000));
    }

    #[test]
    fn initramfs_that_does_not_fit_is_refused() {
        let mem = guest_memory(32 * MIB);
        let k = load_kernel(&mem, &mut Cursor::new(tiny_elf(ELF_LOAD))).expect("load");
        let err = load_initramfs(&mem, &mut Cursor::new(vec![0u8; 20 << 20]), &k).unwrap_err();
        assert!(matches!(err, LoaderError::InitramfsTooBig { .. }), "{err}");
        let err = load_initramfs(&mem, &mut Cursor::new(Vec::new()), &k).unwrap_err();
        assert!(matches!(err, LoaderError::InitramfsEmpty), "{err}");
    }
}
