//! What firmware reads from CMOS NVRAM on a PC-compatible VM, as QEMU's `pc` machine lays it
//! out: the memory size bytes that SeaBIOS and edk2's OvmfPkg (`PlatformPei`'s
//! `GetSystemMemorySizeBelow4gb`/`Above4gb`) use when fw_cfg gives no memory map, and the CPU
//! count byte SeaBIOS falls back to. The VMM writes them with [`super::Rtc::set_nvram_bytes`].

/// Shutdown status byte (0 = normal POST; firmware reads it after a reset).
pub const CMOS_SHUTDOWN_STATUS: u8 = 0x0f;
/// Base memory in KiB (low byte; high byte at +1), at most 640.
pub const CMOS_BASE_MEM_KIB: u8 = 0x15;
/// Extended memory above 1 MiB in KiB (low byte; high byte at +1), at most 65535 (the
/// original AT copy of [`CMOS_EXT_MEM_KIB`]).
pub const CMOS_AT_EXT_MEM_KIB: u8 = 0x17;
/// Extended memory above 1 MiB in KiB (low byte; high byte at +1), at most 65535.
pub const CMOS_EXT_MEM_KIB: u8 = 0x30;
/// The century register the FADT's `century` field points at (kept by the clock itself).
pub const CMOS_CENTURY: u8 = 0x32;
/// RAM between 16 MiB and 4 GiB in 64 KiB units (low byte; high byte at +1).
pub const CMOS_MEM_ABOVE_16M_64K: u8 = 0x34;
/// RAM above 4 GiB in 64 KiB units (low byte; middle at +1, high at +2).
pub const CMOS_MEM_ABOVE_4G_64K: u8 = 0x5b;
/// Number of CPUs minus one (SeaBIOS without fw_cfg).
pub const CMOS_CPU_COUNT_MINUS_1: u8 = 0x5f;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const UNIT_64K: u64 = 64 * KIB;

/// Little-endian bytes of `value` saturated to `N` bytes, at `index`, `index + 1`, ...
fn field<const N: usize>(index: u8, value: u64) -> [(u8, u8); N] {
    let max = if N >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * N)) - 1
    };
    let bytes = value.min(max).to_le_bytes();
    std::array::from_fn(|i| (index.wrapping_add(u8::try_from(i).unwrap_or(0)), bytes[i]))
}

/// The CMOS bytes (index, value) that describe guest RAM: `ram_below_4g` bytes from address
/// 0 (holes for the legacy video area and BIOS included, as on a PC) and `ram_above_4g` bytes
/// from 4 GiB. Each field saturates at its width rather than wrapping. Firmware derives
/// below-4 GiB RAM as `(0x35:0x34 << 16) + 16 MiB` and above-4 GiB RAM as
/// `0x5d:0x5c:0x5b << 16`.
pub fn memory_size_bytes(ram_below_4g: u64, ram_above_4g: u64) -> [(u8, u8); 11] {
    let base_kib = (ram_below_4g / KIB).min(640);
    let ext_kib = ram_below_4g.saturating_sub(MIB) / KIB;
    let above_16m = ram_below_4g.saturating_sub(16 * MIB) / UNIT_64K;
    let above_4g = ram_above_4g / UNIT_64K;
    let mut out = [(0, 0); 11];
    let parts = [
        &field::<2>(CMOS_BASE_MEM_KIB, base_kib)[..],
        &field::<2>(CMOS_AT_EXT_MEM_KIB, ext_kib)[..],
        &field::<2>(CMOS_EXT_MEM_KIB, ext_kib)[..],
        &field::<2>(CMOS_MEM_ABOVE_16M_64K, above_16m)[..],
        &field::<3>(CMOS_MEM_ABOVE_4G_64K, above_4g)[..],
    ];
    for (slot, entry) in out.iter_mut().zip(parts.into_iter().flatten()) {
        *slot = *entry;
    }
    out
}

/// The CMOS byte (index, value) that tells SeaBIOS how many CPUs there are (`cpus` >= 1;
/// saturates at 256).
pub fn cpu_count_byte(cpus: u32) -> (u8, u8) {
    (
        CMOS_CPU_COUNT_MINUS_1,
        u8::try_from(cpus.saturating_sub(1)).unwrap_or(u8::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[(u8, u8)], index: u8, len: u8) -> u64 {
        (0..len).rev().fold(0, |acc, i| {
            let b = bytes
                .iter()
                .find(|(at, _)| *at == index + i)
                .map(|(_, v)| *v)
                .unwrap();
            (acc << 8) | u64::from(b)
        })
    }

    #[test]
    fn memory_bytes_read_back_as_firmware_reads_them() {
        const GIB: u64 = 1 << 30;
        // ghost-vmm's layout: RAM up to the 3 GiB hole, the rest from 4 GiB.
        let b = memory_size_bytes(3 * GIB, 5 * GIB);
        assert_eq!(value(&b, 0x15, 2), 640);
        assert_eq!(value(&b, 0x17, 2), 65535);
        assert_eq!(value(&b, 0x30, 2), 65535);
        // OVMF: ((0x35 << 8) + 0x34) << 16 + 16 MiB.
        assert_eq!((value(&b, 0x34, 2) << 16) + 16 * MIB, 3 * GIB);
        // OVMF/SeaBIOS: (0x5d:0x5c:0x5b) << 16.
        assert_eq!(value(&b, 0x5b, 3) << 16, 5 * GIB);
        let mut indices: Vec<u8> = b.iter().map(|(i, _)| *i).collect();
        indices.dedup();
        assert_eq!(indices.len(), 11);

        let small = memory_size_bytes(12 * MIB, 0);
        assert_eq!(value(&small, 0x15, 2), 640);
        assert_eq!(value(&small, 0x30, 2), 11 * 1024);
        assert_eq!(value(&small, 0x34, 2), 0);
        assert_eq!(value(&small, 0x5b, 3), 0);
        let tiny = memory_size_bytes(512 * KIB, 0);
        assert_eq!(value(&tiny, 0x15, 2), 512);
        assert_eq!(value(&tiny, 0x30, 2), 0);
    }

    #[test]
    fn memory_fields_saturate() {
        let b = memory_size_bytes(u64::MAX, u64::MAX);
        assert_eq!(value(&b, 0x34, 2), 0xffff);
        assert_eq!(value(&b, 0x5b, 3), 0xff_ffff);
        // Exactly 4 GiB below and 1 TiB - 64 KiB above still fit.
        let b = memory_size_bytes(4 << 30, (1 << 40) - UNIT_64K);
        assert_eq!(value(&b, 0x34, 2), 0xff00);
        assert_eq!(value(&b, 0x5b, 3), 0xff_ffff);
    }

    #[test]
    fn cpu_count() {
        assert_eq!(cpu_count_byte(1), (0x5f, 0));
        assert_eq!(cpu_count_byte(4), (0x5f, 3));
        assert_eq!(cpu_count_byte(0), (0x5f, 0));
        assert_eq!(cpu_count_byte(1000), (0x5f, 255));
    }
}
