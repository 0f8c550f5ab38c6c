//! What the flash answers in its identification modes: the device codes (command 0x90) and
//! the Common Flash Interface query table (command 0x98), laid out as QEMU's `pflash_cfi01`
//! lays out its table for a one-byte-wide bank. Nothing OVMF does reads them; they are here
//! so that a guest driver probing the part sees a plausible Intel-command-set flash.

/// Intel's JEDEC manufacturer code, read at offset 0 in read-ID mode.
pub const MANUFACTURER_ID: u8 = 0x89;
/// The device code read at offset 1 in read-ID mode (a 28F128J3-like part; informational).
pub const DEVICE_ID: u8 = 0x18;

/// Length of the query table; offsets at or past it read as zero.
pub(super) const CFI_LEN: usize = 0x52;

/// log2 of the write buffer's size in bytes (CFI offset 0x2A): 256 bytes.
pub(super) const WRITE_BUFFER_SHIFT: u8 = 8;
/// Bytes one buffered write (command 0xe8) can program.
pub(super) const WRITE_BUFFER_LEN: usize = 1 << WRITE_BUFFER_SHIFT;

/// The byte read at `offset` in read-ID mode: the codes at offsets 0 and 1 of every 256
/// bytes, zero (block unlocked, no extra information) elsewhere.
pub(super) fn id_byte(offset: u64) -> u8 {
    match offset & 0xff {
        0 => MANUFACTURER_ID,
        1 => DEVICE_ID,
        _ => 0,
    }
}

/// The query table for a flash of `size` bytes in uniform `sector_size` erase blocks.
pub(super) fn table(size: u64, sector_size: u64) -> [u8; CFI_LEN] {
    let mut t = [0u8; CFI_LEN];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = t.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    // "QRY", the Intel/Sharp extended command set (0x0001), its primary table at 0x31.
    put(0x10, b"QRY");
    put(0x13, &[0x01, 0x00, 0x31, 0x00]);
    // No alternate command set. Vcc 4.5-5.5 V, no Vpp pin.
    put(0x1b, &[0x45, 0x55, 0x00, 0x00]);
    // Typical timeouts (2^n µs single byte, buffer, 2^n ms block erase, chip erase), then
    // the maximum multipliers.
    put(0x1f, &[0x07, 0x07, 0x0a, 0x00, 0x04, 0x04, 0x04, 0x00]);
    // Device size as 2^n bytes (rounded up for sizes that are not a power of two).
    let size_log2 = size.max(1).next_power_of_two().trailing_zeros();
    put(0x27, &[u8::try_from(size_log2).unwrap_or(u8::MAX)]);
    // Interface: x8/x16 asynchronous; write buffer size as 2^n bytes.
    put(0x28, &[0x02, 0x00, WRITE_BUFFER_SHIFT, 0x00]);
    // One erase block region: (blocks - 1) and the block size in 256-byte units, both
    // 16-bit little endian, saturated for flashes too large for the encoding.
    put(0x2c, &[0x01]);
    let blocks = size.checked_div(sector_size).unwrap_or(0).saturating_sub(1);
    let blocks = u16::try_from(blocks).unwrap_or(u16::MAX);
    let units = u16::try_from(sector_size >> 8).unwrap_or(u16::MAX);
    put(0x2d, &blocks.to_le_bytes());
    put(0x2f, &units.to_le_bytes());
    // The primary extended table: "PRI", version 1.0, no optional features, one protection
    // field.
    put(0x31, b"PRI10");
    put(0x3f, &[0x01]);
    t
}

/// The byte read at `offset` in query mode.
pub(super) fn query_byte(table: &[u8; CFI_LEN], offset: u64) -> u8 {
    usize::try_from(offset & 0xff)
        .ok()
        .and_then(|o| table.get(o))
        .copied()
        .unwrap_or(0)
}
