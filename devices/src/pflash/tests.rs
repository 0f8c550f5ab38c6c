//! Device tests for the CFI flash, on tempfile-backed images.

// Test fixtures convert small constants freely.
#![allow(clippy::cast_possible_truncation)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;

const SECTOR: u64 = OVMF_SECTOR_SIZE;
const SIZE: usize = 4 * SECTOR as usize;

/// Records every read-array transition the flash reports.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<Vec<bool>>>);

impl Transitions {
    fn take(&self) -> Vec<bool> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl FlashMapping for Transitions {
    fn read_array(&mut self, on: bool) {
        self.0.lock().unwrap().push(on);
    }
}

/// An image like a fresh VARS file: 16 zero bytes (the FV header's zero vector), then a
/// pattern, then erased cells.
fn image() -> Vec<u8> {
    let mut v = vec![0xffu8; SIZE];
    v[..16].fill(0);
    for (i, b) in v[16..64].iter_mut().enumerate() {
        *b = 0xa0 | (i as u8 & 0x0f);
    }
    v
}

struct Fixture {
    flash: Pflash,
    file: File,
    seen: Transitions,
}

fn fixture() -> Fixture {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&image()).unwrap();
    let reader = file.try_clone().unwrap();
    let mut flash = Pflash::from_file(file, SECTOR, true).unwrap();
    let seen = Transitions::default();
    flash.set_mapping(Box::new(seen.clone()));
    Fixture {
        flash,
        file: reader,
        seen,
    }
}

fn rd(flash: &mut Pflash, offset: u64) -> u8 {
    let mut b = [0x5a];
    flash.read(0, offset, &mut b);
    b[0]
}

fn wr(flash: &mut Pflash, offset: u64, value: u8) {
    flash.write(0, offset, &[value]);
}

fn mem(flash: &Pflash, offset: usize) -> u8 {
    flash
        .memory()
        .as_volatile_slice()
        .read_obj::<u8>(offset)
        .unwrap()
}

fn on_disk(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    file.read_exact_at(&mut v, offset).unwrap();
    v
}

/// OVMF's `QemuFlashDetected` (2022.11 and later): the first byte that is not 0x00, 0x50 or
/// 0x70 in block 0, then the 0x50 / 0x70 probe. Returns what it concluded.
fn ovmf_probe(flash: &mut Pflash, refined: bool) -> &'static str {
    let Some(at) = (0..SECTOR).find(|&o| !matches!(rd(flash, o), 0x00 | 0x50 | 0x70)) else {
        return "no probe location";
    };
    let original = rd(flash, at);
    wr(flash, at, 0x50);
    let probe = rd(flash, at);
    if original != 0x50 && probe == 0x50 {
        return "RAM";
    }
    wr(flash, at, 0x70);
    let probe = rd(flash, at);
    if probe == original {
        return "ROM";
    }
    if probe != 0x00 {
        return "unknown";
    }
    if !refined {
        wr(flash, at, 0xff);
        return "FLASH";
    }
    wr(flash, at, 0x10);
    wr(flash, at, original);
    wr(flash, at, 0x70);
    let probe = rd(flash, at);
    wr(flash, at, 0xff);
    if probe & 0x10 != 0 {
        "FLASH, write-protected"
    } else {
        "FLASH, writable"
    }
}

/// OVMF's `QemuFlashWrite`: 0x10 and a data byte per byte, then 0xff at the last one.
fn ovmf_write(flash: &mut Pflash, offset: u64, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        wr(flash, offset + i as u64, 0x10);
        wr(flash, offset + i as u64, b);
    }
    if !data.is_empty() {
        wr(flash, offset + data.len() as u64 - 1, 0xff);
    }
}

#[test]
fn ovmf_2022_11_probe_finds_flash_and_reads_return_to_the_array() {
    let mut f = fixture();
    assert_eq!(ovmf_probe(&mut f.flash, false), "FLASH");
    // 0x50 kept read-array mode; 0x70 left it, 0xff came back: one of each.
    assert_eq!(f.seen.take(), [false, true]);
    assert!(f.flash.in_read_array());
    assert_eq!(rd(&mut f.flash, 16), 0xa0);
    assert_eq!(rd(&mut f.flash, 17), 0xa1);
    assert_eq!(
        on_disk(&f.file, 0, SIZE),
        image(),
        "the probe changes nothing"
    );
}

#[test]
fn refined_probe_finds_a_writable_flash_and_changes_nothing() {
    let mut f = fixture();
    assert_eq!(ovmf_probe(&mut f.flash, true), "FLASH, writable");
    // 0x70, 0x10 + data, 0x70 all stay out of read array until the final 0xff.
    assert_eq!(f.seen.take(), [false, true]);
    assert_eq!(mem(&f.flash, 16), 0xa0);
    assert_eq!(on_disk(&f.file, 0, SIZE), image());
}

#[test]
fn read_only_flash_behaves_as_rom_and_ignores_writes() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&image()).unwrap();
    let mut flash = Pflash::from_file(file.try_clone().unwrap(), SECTOR, false).unwrap();
    let seen = Transitions::default();
    flash.set_mapping(Box::new(seen.clone()));
    assert!(flash.is_read_only());
    assert_eq!(ovmf_probe(&mut flash, false), "ROM");
    ovmf_write(&mut flash, 16, &[0; 8]);
    wr(&mut flash, SECTOR, 0x20);
    wr(&mut flash, SECTOR, 0xd0);
    for cmd in [0x70, 0x90, 0x98, 0xe8] {
        wr(&mut flash, 0, cmd);
        assert_eq!(rd(&mut flash, 0), 0x00, "still the array after {cmd:#x}");
    }
    assert!(flash.in_read_array());
    assert!(seen.take().is_empty());
    assert_eq!(mem(&flash, 16), 0xa0);
    drop(flash);
    assert_eq!(on_disk(&file, 0, SIZE), image());
}

#[test]
fn ovmf_write_programs_with_and_semantics_and_persists_on_read_array() {
    let mut f = fixture();
    // 16 bytes over the pattern (0xa0..0xaf) and 0xff cells at 64..: bits only clear.
    let data: Vec<u8> = (0..16u8).map(|i| 0x5f | (i << 4)).collect();
    ovmf_write(&mut f.flash, 56, &data);
    assert_eq!(
        f.seen.take(),
        [false, true],
        "one unmap, one remap for 16 bytes"
    );
    let mut expect = image();
    for (i, &b) in data.iter().enumerate() {
        expect[56 + i] &= b;
    }
    assert_eq!(expect[56], 0xa8 & 0x5f);
    assert_eq!(expect[64], 0x5f | (8 << 4));
    for (i, &want) in expect.iter().enumerate().take(72).skip(56) {
        assert_eq!(mem(&f.flash, i), want, "memory at {i}");
        assert_eq!(rd(&mut f.flash, i as u64), want, "read at {i}");
    }
    assert_eq!(on_disk(&f.file, 0, SIZE), expect, "on disk at read array");
}

#[test]
fn status_register_ready_bit_and_clear() {
    let mut f = fixture();
    assert_eq!(f.flash.status(), STATUS_READY, "ready out of reset");
    wr(&mut f.flash, 0, 0x70);
    assert_eq!(rd(&mut f.flash, 0), STATUS_READY);
    assert_eq!(rd(&mut f.flash, 0x123), STATUS_READY, "any address");
    wr(&mut f.flash, 0, 0x50);
    assert!(
        f.flash.in_read_array(),
        "0x50 returns to read array, as in QEMU"
    );
    wr(&mut f.flash, 0, 0x70);
    assert_eq!(rd(&mut f.flash, 0), 0x00);
    wr(&mut f.flash, 100, 0x40);
    assert_eq!(rd(&mut f.flash, 100), 0x00, "status while waiting for data");
    wr(&mut f.flash, 100, 0x0f);
    assert_eq!(
        rd(&mut f.flash, 100),
        STATUS_READY,
        "status after a program"
    );
    wr(&mut f.flash, 100, 0xff);
    assert_eq!(rd(&mut f.flash, 100), 0x0f);
}

#[test]
fn status_read_flushes_pending_programs() {
    let mut f = fixture();
    wr(&mut f.flash, 200, 0x10);
    wr(&mut f.flash, 200, 0x12);
    assert_eq!(on_disk(&f.file, 200, 1), [0xff], "not yet flushed");
    assert_eq!(rd(&mut f.flash, 200), STATUS_READY);
    assert_eq!(
        on_disk(&f.file, 200, 1),
        [0x12],
        "on disk before ready is seen"
    );
}

#[test]
fn block_erase_sets_the_sector_to_ones_and_reaches_the_disk_at_once() {
    let mut f = fixture();
    // Program something in sector 1, then erase sector 0 as OVMF does (no 0xff after it).
    ovmf_write(&mut f.flash, SECTOR + 8, &[0x00, 0x11]);
    f.seen.take();
    wr(&mut f.flash, 0, 0x20);
    assert!(!f.flash.in_read_array());
    assert_eq!(mem(&f.flash, 16), 0xa0, "nothing before the confirm");
    wr(&mut f.flash, 0x10, 0xd0);
    assert_eq!(rd(&mut f.flash, 0), STATUS_READY, "status after the erase");
    assert!((0..SECTOR as usize).all(|i| mem(&f.flash, i) == 0xff));
    assert_eq!(
        on_disk(&f.file, 0, SECTOR as usize),
        vec![0xff; SECTOR as usize]
    );
    assert_eq!(
        on_disk(&f.file, SECTOR + 8, 2),
        [0x00, 0x11],
        "sector 1 kept"
    );
    // A second erase right after, of the last sector, as OVMF's loops do.
    wr(&mut f.flash, 3 * SECTOR + 5, 0x20);
    wr(&mut f.flash, 3 * SECTOR + 5, 0xd0);
    assert_eq!(rd(&mut f.flash, 0), STATUS_READY);
    wr(&mut f.flash, 0, 0xff);
    assert_eq!(f.seen.take(), [false, true]);
    assert_eq!(rd(&mut f.flash, 16), 0xff);
    assert_eq!(rd(&mut f.flash, SECTOR + 9), 0x11);
    assert_eq!(
        f.flash.status() & (STATUS_ERASE_ERROR | STATUS_PROGRAM_ERROR),
        0
    );
}

#[test]
fn broken_erase_sequence_returns_to_read_array_unchanged() {
    let mut f = fixture();
    wr(&mut f.flash, 0, 0x20);
    wr(&mut f.flash, 0, 0x10);
    assert!(f.flash.in_read_array());
    assert_eq!(rd(&mut f.flash, 16), 0xa0);
    assert_eq!(f.seen.take(), [false, true]);
}

#[test]
fn cfi_query_and_read_id() {
    let mut f = fixture();
    wr(&mut f.flash, 0x55, 0x98);
    let qry: Vec<u8> = (0x10..0x13).map(|o| rd(&mut f.flash, o)).collect();
    assert_eq!(qry, b"QRY");
    assert_eq!(rd(&mut f.flash, 0x13), 0x01, "Intel command set");
    assert_eq!(rd(&mut f.flash, 0x27), 14, "16 KiB as 2^14");
    assert_eq!(rd(&mut f.flash, 0x2d), 3, "four blocks");
    assert_eq!(rd(&mut f.flash, 0x30), 0x00);
    assert_eq!(rd(&mut f.flash, 0x2f), 0x10, "4 KiB in 256-byte units");
    assert_eq!(rd(&mut f.flash, 0x51), 0);
    assert_eq!(rd(&mut f.flash, 0x52), 0, "past the table");
    assert_eq!(rd(&mut f.flash, u64::MAX), 0);
    let mut wide = [0u8; 4];
    f.flash.read(0, 0x10, &mut wide);
    assert_eq!(&wide, b"QRY\x01");
    wr(&mut f.flash, 0, 0x90);
    assert_eq!(rd(&mut f.flash, 0), MANUFACTURER_ID);
    assert_eq!(rd(&mut f.flash, 1), DEVICE_ID);
    assert_eq!(rd(&mut f.flash, 2), 0, "block unlocked");
    assert_eq!(rd(&mut f.flash, SECTOR + 1), DEVICE_ID);
    wr(&mut f.flash, 0, 0xff);
    assert_eq!(rd(&mut f.flash, 16), 0xa0);
    assert_eq!(
        f.seen.take(),
        [false, true],
        "query to ID stays out of the array"
    );
}

#[test]
fn lock_commands_are_accepted_and_lock_nothing() {
    let mut f = fixture();
    wr(&mut f.flash, 0, 0x60);
    wr(&mut f.flash, 0, 0x01);
    assert_eq!(rd(&mut f.flash, 0), STATUS_READY);
    ovmf_write(&mut f.flash, 16, &[0x00]);
    assert_eq!(rd(&mut f.flash, 16), 0x00);
}

#[test]
fn buffered_write_commits_on_confirm() {
    let mut f = fixture();
    wr(&mut f.flash, 0x100, 0xe8);
    assert_eq!(rd(&mut f.flash, 0x100), STATUS_READY);
    wr(&mut f.flash, 0x100, 3);
    for (i, b) in [0x01, 0x02, 0x03, 0x04].into_iter().enumerate() {
        wr(&mut f.flash, 0x110 + i as u64, b);
    }
    assert_eq!(mem(&f.flash, 0x110), 0xff, "nothing before the confirm");
    wr(&mut f.flash, 0x100, 0xd0);
    assert_eq!(rd(&mut f.flash, 0), STATUS_READY);
    wr(&mut f.flash, 0, 0xff);
    assert_eq!(on_disk(&f.file, 0x110, 5), [1, 2, 3, 4, 0xff]);
    assert_eq!(f.seen.take(), [false, true]);
}

#[test]
fn buffered_write_outside_its_window_is_an_error_and_aborts() {
    let mut f = fixture();
    wr(&mut f.flash, 0, 0xe8);
    wr(&mut f.flash, 0, 1);
    wr(&mut f.flash, 0xff, 0x00);
    wr(&mut f.flash, 0x100, 0x00); // the next 256-byte window
    assert_ne!(rd(&mut f.flash, 0) & STATUS_PROGRAM_ERROR, 0);
    wr(&mut f.flash, 0, 0xd0);
    assert!(f.flash.in_read_array(), "a failed buffer is not committed");
    assert_eq!(mem(&f.flash, 0xff), 0xff);
    assert_eq!(mem(&f.flash, 0x100), 0xff);
    // The error sticks until cleared, as on the chip.
    wr(&mut f.flash, 0, 0x50);
    wr(&mut f.flash, 0, 0x70);
    assert_eq!(rd(&mut f.flash, 0), 0);
}

#[test]
fn wide_accesses_take_the_command_from_the_first_byte() {
    let mut f = fixture();
    f.flash.write(0, 0x200, &0x0000_0010u32.to_le_bytes());
    f.flash.write(0, 0x200, &[0x12, 0x34, 0x56, 0x78]);
    let mut status = [0u8; 2];
    f.flash.read(0, 0x200, &mut status);
    assert_eq!(status, [STATUS_READY; 2]);
    f.flash.write(0, 0x200, &0xffu16.to_le_bytes());
    let mut word = [0u8; 8];
    f.flash.read(0, 0x1fe, &mut word);
    assert_eq!(word, [0xff, 0xff, 0x12, 0x34, 0x56, 0x78, 0xff, 0xff]);
}

#[test]
fn out_of_range_offsets_do_not_panic() {
    let mut f = fixture();
    let end = SIZE as u64;
    assert_eq!(rd(&mut f.flash, end), 0xff);
    assert_eq!(rd(&mut f.flash, u64::MAX), 0xff);
    let mut wide = [0u8; 8];
    f.flash.read(0, end - 2, &mut wide);
    assert_eq!(wide, [0xff; 8]);
    wr(&mut f.flash, end, 0x10);
    wr(&mut f.flash, end, 0x00);
    assert_ne!(rd(&mut f.flash, 0) & STATUS_PROGRAM_ERROR, 0);
    f.flash.write(0, end - 1, &[0x10]);
    f.flash.write(0, end - 1, &[0x00, 0x00]);
    assert_eq!(
        mem(&f.flash, SIZE - 1),
        0x00,
        "the byte inside is programmed"
    );
    wr(&mut f.flash, u64::MAX, 0x20);
    wr(&mut f.flash, u64::MAX, 0xd0);
    assert_ne!(rd(&mut f.flash, 0) & STATUS_ERASE_ERROR, 0);
    wr(&mut f.flash, u64::MAX, 0xe8);
    wr(&mut f.flash, u64::MAX, 7);
    f.flash.write(0, u64::MAX, &[0; 8]);
    wr(&mut f.flash, 0, 0xd0);
    assert!(f.flash.in_read_array(), "the failed buffer was dropped");
    f.flash.write(0, 0, &[]);
    let mut empty = [];
    f.flash.read(0, 0, &mut empty);
    wr(&mut f.flash, 0, 0xff);
    assert_eq!(rd(&mut f.flash, 16), 0xa0);
}

#[test]
fn failing_file_is_logged_and_the_flash_keeps_working() {
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), image()).unwrap();
    // Open for reading only: every write-back fails.
    let file = File::open(path.path()).unwrap();
    let mut flash = Pflash::from_file(file, SECTOR, true).unwrap();
    ovmf_write(&mut flash, 16, &[0x00, 0x01]);
    assert_eq!(rd(&mut flash, 17), 0x01);
    wr(&mut flash, 0, 0x20);
    wr(&mut flash, 0, 0xd0);
    wr(&mut flash, 0, 0xff);
    assert_eq!(rd(&mut flash, 17), 0xff);
    assert!(flash.flush().is_err(), "the change is still pending");
    flash.reset();
    drop(flash);
    assert_eq!(std::fs::read(path.path()).unwrap(), image());
}

#[test]
fn reset_and_drop_flush_and_return_to_read_array() {
    let mut f = fixture();
    wr(&mut f.flash, 300, 0x10);
    wr(&mut f.flash, 300, 0x00);
    f.flash.reset();
    assert!(f.flash.in_read_array());
    assert_eq!(f.seen.take(), [false, true]);
    assert_eq!(on_disk(&f.file, 300, 1), [0x00]);
    assert_eq!(f.flash.status(), STATUS_READY);
    f.flash.reset();
    assert!(f.seen.take().is_empty(), "no transition when already there");
    // Pending bytes are written when the flash goes away.
    wr(&mut f.flash, 301, 0x10);
    wr(&mut f.flash, 301, 0x00);
    let file = f.file;
    drop(f.flash);
    assert_eq!(on_disk(&file, 301, 1), [0x00]);
}

#[test]
fn volatile_flash_keeps_changes_in_memory() {
    let mut flash = Pflash::new(&image(), SECTOR, Backing::Volatile).unwrap();
    ovmf_write(&mut flash, 16, &[0x0f]);
    assert_eq!(rd(&mut flash, 16), 0x00);
    assert!(flash.flush().is_ok());
    assert_eq!(flash.size(), SIZE as u64);
    assert_eq!(flash.sector_size(), SECTOR);
}

#[test]
fn constructor_checks_sizes() {
    let err = |len: usize, sector: u64| Pflash::new(&vec![0xff; len], sector, Backing::Volatile);
    assert!(matches!(err(SIZE, 0), Err(PflashError::SectorSize(0))));
    assert!(matches!(
        err(SIZE, 3000),
        Err(PflashError::SectorSize(3000))
    ));
    assert!(matches!(
        err(0, SECTOR),
        Err(PflashError::Size { size: 0, .. })
    ));
    assert!(matches!(
        err(SIZE + 512, 512),
        Err(PflashError::Size { .. })
    ));
    assert!(matches!(
        err(SIZE, 2 * SIZE as u64),
        Err(PflashError::Size { .. })
    ));
    assert!(err(SIZE, 512).is_ok());
    // OVMF's 4 MiB build: VARS is 0x84000 bytes of 4 KiB blocks.
    assert!(err(0x84000, SECTOR).is_ok());
    let empty = tempfile::tempfile().unwrap();
    assert!(matches!(
        Pflash::from_file(empty, SECTOR, true),
        Err(PflashError::Size { size: 0, .. })
    ));
}
