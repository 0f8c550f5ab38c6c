//! The firmware (q35) platform's memory map and the fw_cfg data that describes it.
//!
//! ```text
//! 0x0000_0000   RAM (the firmware owns all of it, the legacy areas below 1 MiB included)
//! low RAM end   = all of RAM when it fits below Q35_LOW_RAM_MAX (2.75 GiB), else 2 GiB
//!               ... the chipset's windows, placed by the firmware: ECAM (PCIEXBAR), 32-bit
//!                   PCI BARs (edk2 2022.11: ECAM at 0xB000_0000, BARs from 0xC000_0000)
//! 0xfeb0_0000   (unused on this platform: the GED is direct boot only)
//! 0xfec0_0000   IOAPIC
//! 0xfed1_c000   ICH9 RCRB (RCBA; not decoded)
//! 0xfee0_0000   LAPIC
//! 0xfeff_c000   KVM's identity-map page and TSS (reserved in the e820 map)
//! 4 GiB - N     flash: the VARS image, then the CODE image ending at 4 GiB
//! 0x1_0000_0000 the rest of RAM
//! ```
//!
//! The split of RAM is QEMU's q35 rule, so every OVMF build finds its ECAM base above low
//! RAM (2022.11 asserts `TopOfLowRam <= 0xB000_0000`; later builds place the ECAM
//! themselves).

use vm_memory::GuestAddress;

use crate::layout::{IOAPIC_START, LAPIC_START, RAM_HIGH_START};

/// RAM up to this size stays below 4 GiB on q35.
pub const Q35_LOW_RAM_MAX: u64 = 0xb000_0000;
/// Where low RAM ends when RAM is larger than [`Q35_LOW_RAM_MAX`].
pub const Q35_LOW_RAM_SPLIT: u64 = 0x8000_0000;
/// KVM's identity-map page (real-mode emulation on Intel) on this platform, with the
/// three-page TSS right after it.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;
/// KVM's TSS (three pages).
pub const KVM_TSS_ADDRESS: u64 = 0xfeff_d000;
/// Pages reserved for KVM at [`KVM_IDENTITY_MAP_ADDRESS`].
const KVM_RESERVED_LEN: u64 = 0x4000;
/// The flash must start at or above this address (clear of the LAPIC and KVM's pages).
pub const FLASH_LOWEST: u64 = 0xff00_0000;
/// Flash images are made of blocks of this size.
pub const FLASH_BLOCK: u64 = 0x1000;
const _: () = assert!(FLASH_BLOCK.is_power_of_two());

/// e820 type of usable RAM.
const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
const E820_RESERVED: u32 = 2;

/// Guest RAM regions for `size` bytes on q35, as `(guest address, length)` pairs.
pub fn q35_ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = if size > Q35_LOW_RAM_MAX {
        Q35_LOW_RAM_SPLIT
    } else {
        size
    };
    let high = size - low;
    let mut regions = Vec::with_capacity(2);
    if low > 0 {
        regions.push((GuestAddress(0), host_usize(low)));
    }
    if high > 0 {
        regions.push((GuestAddress(RAM_HIGH_START), host_usize(high)));
    }
    regions
}

fn host_usize(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// RAM below and above 4 GiB for `size` bytes on q35 (what the CMOS bytes report).
pub fn q35_ram_split(size: u64) -> (u64, u64) {
    let below: u64 = q35_ram_regions(size)
        .iter()
        .filter(|(a, _)| a.0 < RAM_HIGH_START)
        .map(|&(_, l)| l as u64)
        .sum();
    (below, size - below)
}

/// Where the two flash images go: `(vars base, code base)`, the CODE image ending at 4 GiB and
/// the VARS image right below it. `None` if they do not fit above [`FLASH_LOWEST`] or a size
/// is not a whole number of [`FLASH_BLOCK`]s.
pub fn flash_layout(code_len: u64, vars_len: u64) -> Option<(u64, u64)> {
    if code_len == 0
        || vars_len == 0
        || code_len & (FLASH_BLOCK - 1) != 0
        || vars_len & (FLASH_BLOCK - 1) != 0
    {
        return None;
    }
    let code = RAM_HIGH_START.checked_sub(code_len)?;
    let vars = code.checked_sub(vars_len)?;
    (vars >= FLASH_LOWEST).then_some((vars, code))
}

// The fixed devices sit below the flash and KVM's pages.
const _: () = assert!(IOAPIC_START < LAPIC_START && LAPIC_START < KVM_IDENTITY_MAP_ADDRESS);
const _: () = assert!(KVM_TSS_ADDRESS + 3 * 0x1000 <= FLASH_LOWEST);
const _: () = assert!(KVM_IDENTITY_MAP_ADDRESS + KVM_RESERVED_LEN <= FLASH_LOWEST);

/// The `etc/e820` fw_cfg file: RAM (`regions`) and KVM's reserved pages, as packed
/// little-endian `{u64 address, u64 length, u32 type}` entries (what OVMF's
/// `PlatformScanOrAdd64BitE820Ram` reads).
pub fn e820_blob(regions: &[(GuestAddress, usize)]) -> Vec<u8> {
    let mut entries: Vec<(u64, u64, u32)> = regions
        .iter()
        .map(|&(a, l)| (a.0, l as u64, E820_RAM))
        .collect();
    entries.push((KVM_IDENTITY_MAP_ADDRESS, KVM_RESERVED_LEN, E820_RESERVED));
    entries.sort_unstable();
    let mut blob = Vec::with_capacity(entries.len() * 20);
    for (addr, len, kind) in entries {
        blob.extend_from_slice(&addr.to_le_bytes());
        blob.extend_from_slice(&len.to_le_bytes());
        blob.extend_from_slice(&kind.to_le_bytes());
    }
    blob
}

/// One boot device for the `bootorder` fw_cfg file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// A virtio-blk disk at PCI slot `slot` of the root bus.
    VirtioDisk {
        /// Its PCI device number.
        slot: u8,
    },
    /// Any other PCI function (a passed-through NVMe drive, USB controller, NIC).
    Pci {
        /// Its PCI device number.
        slot: u8,
        /// Its function number.
        function: u8,
    },
}

/// The `bootorder` fw_cfg file: one OpenFirmware device path per line, in boot priority order,
/// in the form edk2's `QemuBootOrderLib` translates (`/pci@i0cf8/...@slot[,function]`). OVMF
/// puts the boot options that match these first, in this order; the boot entries the guest
/// itself created stay in the order it gave them among the entries for the same device.
pub fn bootorder_blob(devices: &[BootDevice]) -> Vec<u8> {
    let mut out = String::new();
    for d in devices {
        match *d {
            BootDevice::VirtioDisk { slot } => {
                out.push_str(&format!("/pci@i0cf8/scsi@{slot:x}/disk@0,0\n"));
            }
            BootDevice::Pci { slot, function: 0 } => {
                out.push_str(&format!("/pci@i0cf8/pci@{slot:x}\n"));
            }
            BootDevice::Pci { slot, function } => {
                out.push_str(&format!("/pci@i0cf8/pci@{slot:x},{function:x}\n"));
            }
        }
    }
    let mut blob = out.into_bytes();
    blob.push(0);
    blob
}

/// The 64-bit PCI aperture OVMF 2022.11 makes when not told otherwise: 32 GiB.
pub const OVMF_DEFAULT_MMIO64: u64 = 32 << 30;
/// The fw_cfg file with which OVMF's PlatformPei takes the 64-bit aperture's size in MiB
/// (decimal text; OVMF accepts up to 16 TiB).
pub const MMIO64_SIZE_FILE: &str = "opt/ovmf/X-PciMmio64Mb";
const OVMF_MMIO64_MAX_MB: u64 = 16 << 20;

/// The [`MMIO64_SIZE_FILE`] contents for passed-through 64-bit BARs of sizes `bars`: an
/// aperture of twice their total (so any placement order fits, as
/// [`crate::layout::pci_mmio64_window`] sizes ghost-vmm's window), or `None` when OVMF's
/// default aperture holds that. A GPU's 32 GiB resizable BAR plus its neighbours needs more
/// than the default, and OVMF would otherwise leave the BAR unassigned.
pub fn mmio64_size_blob(bars: &[u64]) -> Option<Vec<u8>> {
    let total = bars.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let needed = total
        .saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63);
    if needed <= OVMF_DEFAULT_MMIO64 {
        return None;
    }
    let mb = (needed >> 20).min(OVMF_MMIO64_MAX_MB);
    Some(mb.to_string().into_bytes())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn ram_split_follows_qemu_q35() {
        assert_eq!(q35_ram_regions(GIB), vec![(GuestAddress(0), GIB as usize)]);
        assert_eq!(q35_ram_split(Q35_LOW_RAM_MAX), (Q35_LOW_RAM_MAX, 0));
        let big = q35_ram_regions(4 * GIB);
        assert_eq!(
            big,
            vec![
                (GuestAddress(0), 2 * GIB as usize),
                (GuestAddress(4 * GIB), 2 * GIB as usize)
            ]
        );
        assert_eq!(q35_ram_split(4 * GIB), (2 * GIB, 2 * GIB));
        assert!(q35_ram_regions(0).is_empty());
    }

    #[test]
    fn flash_ends_at_4g_with_vars_below_code() {
        // Debian's OVMF_CODE_4M.fd and OVMF_VARS_4M.fd.
        let (vars, code) = flash_layout(0x37c000, 0x84000).expect("fits");
        assert_eq!(code, 0xffc8_4000);
        assert_eq!(vars, 0xffc0_0000);
        assert_eq!(flash_layout(0x37c001, 0x84000), None, "not whole blocks");
        assert_eq!(flash_layout(0x100_0000, 0x1000), None, "too big");
        assert_eq!(flash_layout(0, 0x1000), None);
    }

    #[test]
    fn e820_blob_lists_ram_and_kvm_pages() {
        let blob = e820_blob(&q35_ram_regions(4 * GIB));
        assert_eq!(blob.len(), 3 * 20);
        let entry = |i: usize| {
            let e = &blob[i * 20..i * 20 + 20];
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u32::from_le_bytes(e[16..20].try_into().unwrap()),
            )
        };
        assert_eq!(entry(0), (0, 2 * GIB, 1));
        assert_eq!(entry(1), (KVM_IDENTITY_MAP_ADDRESS, 0x4000, 2));
        assert_eq!(entry(2), (4 * GIB, 2 * GIB, 1));
    }

    #[test]
    fn bootorder_uses_openfirmware_paths() {
        let blob = bootorder_blob(&[
            BootDevice::VirtioDisk { slot: 3 },
            BootDevice::Pci {
                slot: 0x1a,
                function: 0,
            },
            BootDevice::Pci {
                slot: 5,
                function: 1,
            },
        ]);
        assert_eq!(
            String::from_utf8(blob).unwrap(),
            "/pci@i0cf8/scsi@3/disk@0,0\n/pci@i0cf8/pci@1a\n/pci@i0cf8/pci@5,1\n\0"
        );
    }

    #[test]
    fn a_64_bit_window_larger_than_ovmfs_default_is_passed_in_mib() {
        assert_eq!(mmio64_size_blob(&[]), None);
        // A 16 GiB BAR fits the default 32 GiB aperture twice over.
        assert_eq!(mmio64_size_blob(&[16 * GIB]), None);
        // A 32 GiB BAR and a small one: a 128 GiB aperture (twice, to a power of two).
        assert_eq!(
            mmio64_size_blob(&[32 * GIB, 1 << 20]),
            Some(b"131072".to_vec())
        );
        assert_eq!(mmio64_size_blob(&[24 * GIB]), Some(b"65536".to_vec()));
        // OVMF takes at most 16 TiB.
        assert_eq!(mmio64_size_blob(&[u64::MAX]), Some(b"16777216".to_vec()));
    }
}
