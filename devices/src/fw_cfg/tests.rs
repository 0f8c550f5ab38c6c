//! Unit tests of the fw_cfg device: the port interface, the directory, DMA on a
//! `GuestMemoryMmap`, generated files.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::dma::{CTL_ERROR, CTL_READ, CTL_SELECT, CTL_SKIP, CTL_WRITE};
use super::*;

const MEM_SIZE: usize = 0x10000;
/// Where the tests put the DMA access structure, and the buffer.
const ACCESS: u64 = 0x1000;
const BUFFER: u64 = 0x2000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

fn device() -> (FwCfg, GuestMemoryMmap) {
    let mem = memory();
    (FwCfg::new(mem.clone()), mem)
}

fn select(dev: &mut FwCfg, key: u16) {
    dev.write(FW_CFG_PORT, SELECTOR, &key.to_le_bytes());
}

/// `n` data bytes, one port read each.
fn read_bytes(dev: &mut FwCfg, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0xaa];
            dev.read(FW_CFG_PORT, DATA, &mut b);
            b[0]
        })
        .collect()
}

fn start_dma(dev: &mut FwCfg, access: u64) {
    let [h0, h1, h2, h3, l0, l1, l2, l3] = access.to_be_bytes();
    dev.write(FW_CFG_PORT, DMA_HIGH, &[h0, h1, h2, h3]);
    dev.write(FW_CFG_PORT, DMA_LOW, &[l0, l1, l2, l3]);
}

/// Puts an access structure at [`ACCESS`], starts it and returns the control word the
/// device wrote back.
fn dma(dev: &mut FwCfg, mem: &GuestMemoryMmap, control: u32, len: u32, addr: u64) -> u32 {
    let mut access = [0u8; 16];
    access[..4].copy_from_slice(&control.to_be_bytes());
    access[4..8].copy_from_slice(&len.to_be_bytes());
    access[8..].copy_from_slice(&addr.to_be_bytes());
    mem.write_slice(&access, GuestAddress(ACCESS))
        .expect("write access");
    start_dma(dev, ACCESS);
    let mut back = [0u8; 16];
    mem.read_slice(&mut back, GuestAddress(ACCESS))
        .expect("read access");
    assert_eq!(back[4..], access[4..], "only the control word changes");
    u32::from_be_bytes([back[0], back[1], back[2], back[3]])
}

fn guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read_slice(&mut v, GuestAddress(addr)).expect("read");
    v
}

fn select_ctl(key: u16) -> u32 {
    (u32::from(key) << 16) | CTL_SELECT
}

#[test]
fn signature_through_the_data_port() {
    let (mut dev, _) = device();
    select(&mut dev, FW_CFG_SIGNATURE);
    assert_eq!(
        read_bytes(&mut dev, 6),
        b"QEMU\0\0",
        "then zeros past the end"
    );
    // Selecting again rewinds.
    select(&mut dev, FW_CFG_SIGNATURE);
    assert_eq!(read_bytes(&mut dev, 2), b"QE");
}

#[test]
fn id_says_traditional_and_dma_as_a_string_read() {
    let (mut dev, _) = device();
    select(&mut dev, FW_CFG_ID);
    // OVMF's IoReadFifo8 (`rep insb`, one KVM exit of 4 bytes).
    let mut id = [0xaa; 4];
    dev.read(FW_CFG_PORT, DATA, &mut id);
    assert_eq!(u32::from_le_bytes(id), 3);
    let mut more = [0xaa; 3];
    dev.read(FW_CFG_PORT, DATA, &mut more);
    assert_eq!(more, [0; 3]);
}

#[test]
fn file_directory_bytes_sorted_by_name() {
    let (mut dev, _) = device();
    select(&mut dev, FW_CFG_FILE_DIR);
    assert_eq!(read_bytes(&mut dev, 8), [0; 8], "empty: count 0");

    let b = dev.add_file("etc/b", FwCfgFile::fixed(vec![1, 2, 3]));
    let boot = dev.add_file("bootorder", FwCfgFile::fixed(vec![0; 5]));
    let a = dev.add_file("etc/a", FwCfgFile::generated(0x1234, Box::new(Vec::new)));
    assert_eq!(
        (b, boot, a),
        (Ok(0x20), Ok(0x21), Ok(0x22)),
        "keys in add order"
    );

    let mut want = vec![0, 0, 0, 3];
    for (size, key, name) in [
        (5u32, 0x21u16, "bootorder"),
        (0x1234, 0x22, "etc/a"),
        (3, 0x20, "etc/b"),
    ] {
        want.extend_from_slice(&size.to_be_bytes());
        want.extend_from_slice(&key.to_be_bytes());
        want.extend_from_slice(&[0, 0]);
        let mut field = [0u8; 56];
        field[..name.len()].copy_from_slice(name.as_bytes());
        want.extend_from_slice(&field);
    }
    select(&mut dev, FW_CFG_FILE_DIR);
    let mut dir = vec![0xaa; want.len() + 4];
    dev.read(FW_CFG_PORT, DATA, &mut dir);
    assert_eq!(dir[..want.len()], want[..]);
    assert_eq!(dir[want.len()..], [0; 4]);
}

#[test]
fn numbered_items_and_files_read_back() {
    let (mut dev, _) = device();
    dev.add_item(FW_CFG_NB_CPUS, 4u16.to_le_bytes().to_vec())
        .expect("add");
    dev.add_item(FW_CFG_RAM_SIZE, (1u64 << 30).to_le_bytes().to_vec())
        .expect("add");
    let key = dev
        .add_file("etc/e820", FwCfgFile::fixed((1..=20).collect()))
        .expect("add");

    select(&mut dev, FW_CFG_NB_CPUS);
    assert_eq!(read_bytes(&mut dev, 3), [4, 0, 0]);
    select(&mut dev, FW_CFG_RAM_SIZE);
    assert_eq!(read_bytes(&mut dev, 8), (1u64 << 30).to_le_bytes());
    select(&mut dev, key);
    assert_eq!(read_bytes(&mut dev, 3), [1, 2, 3]);
    let mut rest = [0xaa; 20];
    dev.read(FW_CFG_PORT, DATA, &mut rest);
    assert_eq!(rest[..17], (4..=20).collect::<Vec<u8>>()[..]);
    assert_eq!(rest[17..], [0; 3]);

    // A missing key reads zeros; the write-channel bit selects the same item.
    select(&mut dev, 0x0abc);
    assert_eq!(read_bytes(&mut dev, 2), [0, 0]);
    select(&mut dev, FW_CFG_SIGNATURE | FW_CFG_WRITE_CHANNEL);
    assert_eq!(read_bytes(&mut dev, 4), b"QEMU");
}

#[test]
fn a_selector_split_into_byte_writes_selects_its_low_byte() {
    // QEMU x86 takes an 8-bit write at 0x510 as a select of that byte zero-extended, and an
    // 8-bit write at 0x511 as a (dropped) data write: the same here.
    let (mut dev, _) = device();
    select(&mut dev, FW_CFG_ID);
    let [lo, hi] = FW_CFG_FILE_DIR.to_le_bytes();
    dev.write(FW_CFG_PORT, SELECTOR, &[lo]);
    dev.write(FW_CFG_PORT, DATA, &[hi]);
    assert_eq!(read_bytes(&mut dev, 4), [0; 4], "the directory (no files)");

    let key = 0x0102u16;
    dev.add_item(key, vec![7]).expect("add");
    dev.add_item(0x0002, vec![9]).expect("add");
    let [lo, hi] = key.to_le_bytes();
    dev.write(FW_CFG_PORT, SELECTOR, &[lo]);
    dev.write(FW_CFG_PORT, DATA, &[hi]);
    assert_eq!(read_bytes(&mut dev, 1), [9], "0x0102 split selects 0x0002");
    select(&mut dev, key);
    assert_eq!(
        read_bytes(&mut dev, 1),
        [7],
        "a 16-bit write selects 0x0102"
    );

    // A 32-bit write at the selector is not a select.
    dev.write(FW_CFG_PORT, SELECTOR, &[0, 0, 0, 0]);
    assert_eq!(read_bytes(&mut dev, 1), [0], "still 0x0102, past its end");
}

#[test]
fn dma_register_reads_the_signature() {
    let (mut dev, _) = device();
    let mut all = [0xaa; 8];
    dev.read(FW_CFG_PORT, DMA_HIGH, &mut all);
    assert_eq!(&all, FW_CFG_DMA_SIGNATURE);
    assert_eq!(u64::from_be_bytes(all), 0x5145_4d55_2043_4647);
    let mut low = [0xaa; 4];
    dev.read(FW_CFG_PORT, DMA_LOW, &mut low);
    assert_eq!(&low, b" CFG");
    let mut byte = [0xaa];
    dev.read(FW_CFG_PORT, 5, &mut byte);
    assert_eq!(byte, [b'E']);
    for offset in [0, 2, 3] {
        dev.read(FW_CFG_PORT, offset, &mut byte);
        assert_eq!(byte, [0], "offset {offset}");
    }
    let mut straddle = [0xaa; 2];
    dev.read(FW_CFG_PORT, 3, &mut straddle);
    assert_eq!(straddle, [0, b'Q']);
}

#[test]
fn dma_select_and_read_with_zeros_past_the_end() {
    let (mut dev, mem) = device();
    let data: Vec<u8> = (0..100).collect();
    let key = dev
        .add_file("etc/table-loader", FwCfgFile::fixed(data.clone()))
        .expect("add");
    mem.write_slice(&[0xaa; 0x200], GuestAddress(BUFFER))
        .expect("fill");

    let status = dma(&mut dev, &mem, select_ctl(key) | CTL_READ, 60, BUFFER);
    assert_eq!(status, 0);
    assert_eq!(guest(&mem, BUFFER, 60), data[..60]);
    assert_eq!(guest(&mem, BUFFER + 60, 1), [0xaa], "no byte more");

    // Without SELECT the read goes on from the offset; past the end come zeros.
    let status = dma(&mut dev, &mem, CTL_READ, 50, BUFFER + 0x100);
    assert_eq!(status, 0);
    assert_eq!(guest(&mem, BUFFER + 0x100, 40), data[60..]);
    assert_eq!(guest(&mem, BUFFER + 0x100 + 40, 10), [0; 10]);
    assert_eq!(guest(&mem, BUFFER + 0x100 + 50, 1), [0xaa]);

    // The port sees the same offset (the end).
    assert_eq!(read_bytes(&mut dev, 1), [0]);

    // A big read: mostly zeros, written a page at a time, bounded by the length.
    let status = dma(&mut dev, &mem, select_ctl(key) | CTL_READ, 0x5000, 0x4000);
    assert_eq!(status, 0);
    assert_eq!(guest(&mem, 0x4000, 100), data);
    assert!(guest(&mem, 0x4000 + 100, 0x5000 - 100)
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn dma_skip_then_read() {
    let (mut dev, mem) = device();
    let key = dev
        .add_file("etc/a", FwCfgFile::fixed(b"0123456789".to_vec()))
        .expect("add");
    assert_eq!(dma(&mut dev, &mem, select_ctl(key) | CTL_SKIP, 4, 0), 0);
    assert_eq!(dma(&mut dev, &mem, CTL_READ, 3, BUFFER), 0);
    assert_eq!(guest(&mem, BUFFER, 3), b"456");
    // Skipping past the end stops at the end.
    assert_eq!(dma(&mut dev, &mem, CTL_SKIP, 1000, 0), 0);
    assert_eq!(read_bytes(&mut dev, 1), [0]);
    // SELECT alone rewinds; port reads go on from there.
    assert_eq!(dma(&mut dev, &mem, select_ctl(key), 1000, BUFFER), 0);
    assert_eq!(read_bytes(&mut dev, 2), b"01");
}

#[test]
fn dma_write_fails() {
    let (mut dev, mem) = device();
    let key = dev
        .add_file("etc/a", FwCfgFile::fixed(vec![5; 8]))
        .expect("add");
    let status = dma(&mut dev, &mem, select_ctl(key) | CTL_WRITE, 4, BUFFER);
    assert_eq!(status, CTL_ERROR);
    assert_eq!(guest(&mem, ACCESS, 4), [0, 0, 0, 1], "big-endian ERROR");
    select(&mut dev, key);
    assert_eq!(read_bytes(&mut dev, 8), [5; 8], "unchanged");
    // An empty write does nothing, as on QEMU.
    assert_eq!(dma(&mut dev, &mem, CTL_WRITE, 0, BUFFER), 0);
    // READ wins over WRITE.
    assert_eq!(
        dma(
            &mut dev,
            &mem,
            select_ctl(key) | CTL_READ | CTL_WRITE,
            2,
            BUFFER
        ),
        0
    );
    assert_eq!(guest(&mem, BUFFER, 2), [5, 5]);
}

#[test]
fn dma_outside_ram_is_an_error_never_a_panic() {
    let (mut dev, mem) = device();
    let key = dev
        .add_file("etc/a", FwCfgFile::fixed(vec![5; 64]))
        .expect("add");
    let end = MEM_SIZE as u64;
    // Buffer wholly outside, straddling the end, wrapping around.
    for addr in [end, end - 8, 1 << 40, u64::MAX - 8] {
        let status = dma(&mut dev, &mem, select_ctl(key) | CTL_READ, 64, addr);
        assert_eq!(status, CTL_ERROR, "buffer at {addr:#x}");
    }
    // Zeros past the item's end outside RAM fail too.
    let status = dma(
        &mut dev,
        &mem,
        select_ctl(key) | CTL_READ,
        0x1_0000,
        end - 0x100,
    );
    assert_eq!(status, CTL_ERROR);
    // An empty read anywhere is fine.
    assert_eq!(dma(&mut dev, &mem, CTL_READ, 0, u64::MAX), 0);

    // An access structure outside RAM (or straddling its end, or above 4 GiB): nothing to
    // answer, nothing breaks.
    start_dma(&mut dev, end - 8);
    start_dma(&mut dev, 0xdead_0000_0000);
    start_dma(&mut dev, u64::MAX);
    assert_eq!(
        dma(
            &mut dev,
            &mem,
            select_ctl(FW_CFG_SIGNATURE) | CTL_READ,
            4,
            BUFFER
        ),
        0
    );
    assert_eq!(guest(&mem, BUFFER, 4), b"QEMU");
}

#[test]
fn the_dma_high_half_is_used_once() {
    let (mut dev, mem) = device();
    let mut access = [0u8; 16];
    access[..4].copy_from_slice(&(select_ctl(FW_CFG_ID) | CTL_READ).to_be_bytes());
    access[4..8].copy_from_slice(&4u32.to_be_bytes());
    access[8..].copy_from_slice(&BUFFER.to_be_bytes());
    mem.write_slice(&access, GuestAddress(ACCESS))
        .expect("write");
    let [.., l0, l1, l2, l3] = ACCESS.to_be_bytes();
    // A high half pointing outside RAM, then the low one: nothing happens in RAM.
    dev.write(FW_CFG_PORT, DMA_HIGH, &[0, 0, 0, 1]);
    dev.write(FW_CFG_PORT, DMA_LOW, &[l0, l1, l2, l3]);
    assert_ne!(guest(&mem, ACCESS, 4), [0; 4], "not run");
    // The high half was cleared: the low half alone now starts it in RAM.
    dev.write(FW_CFG_PORT, DMA_LOW, &[l0, l1, l2, l3]);
    assert_eq!(guest(&mem, ACCESS, 4), [0; 4], "done");
    assert_eq!(guest(&mem, BUFFER, 4), [3, 0, 0, 0]);
    // 8-byte and 2-byte writes at the register do nothing.
    mem.write_slice(&access, GuestAddress(ACCESS))
        .expect("write");
    dev.write(FW_CFG_PORT, DMA_HIGH, &ACCESS.to_be_bytes());
    dev.write(FW_CFG_PORT, DMA_LOW, &[0x10, 0x00]);
    assert_ne!(guest(&mem, ACCESS, 4), [0; 4], "not run");
}

#[test]
fn generated_file_is_made_on_each_select_and_sized() {
    let (mut dev, mem) = device();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let key = dev
        .add_file(
            "etc/acpi/tables",
            FwCfgFile::generated(
                8,
                Box::new(move || {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    // Short on odd calls, too long on even ones.
                    vec![u8::try_from(n).unwrap_or(0xff); if n % 2 == 1 { 3 } else { 12 }]
                }),
            ),
        )
        .expect("add");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "not made when added");

    // The directory gives the fixed length.
    select(&mut dev, FW_CFG_FILE_DIR);
    let dir = read_bytes(&mut dev, 12);
    assert_eq!(dir[4..8], 8u32.to_be_bytes());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "reading the directory makes nothing"
    );

    select(&mut dev, key);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_bytes(&mut dev, 9),
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        "padded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "reads make nothing");

    assert_eq!(
        dma(&mut dev, &mem, select_ctl(key) | CTL_READ, 9, BUFFER),
        0
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(guest(&mem, BUFFER, 9), [2, 2, 2, 2, 2, 2, 2, 2, 0], "cut");

    // Each select makes it again.
    select(&mut dev, key);
    select(&mut dev, key | FW_CFG_WRITE_CHANNEL);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(read_bytes(&mut dev, 9), [4, 4, 4, 4, 4, 4, 4, 4, 0]);
}

#[test]
fn add_errors() {
    let (mut dev, _) = device();
    let fixed = || FwCfgFile::fixed(vec![1]);
    let long = "x".repeat(FW_CFG_MAX_NAME_LEN);
    assert_eq!(dev.add_file(&long, fixed()), Ok(FW_CFG_FILE_FIRST));
    let longer = "x".repeat(FW_CFG_MAX_NAME_LEN + 1);
    assert_eq!(
        dev.add_file(&longer, fixed()),
        Err(FwCfgError::NameTooLong(longer.clone()))
    );
    assert_eq!(
        dev.add_file(&long, fixed()),
        Err(FwCfgError::DuplicateName(long.clone()))
    );
    assert_eq!(
        dev.add_file("", fixed()),
        Err(FwCfgError::BadName(String::new()))
    );
    assert_eq!(
        dev.add_file("a\0b", fixed()),
        Err(FwCfgError::BadName("a\0b".into()))
    );

    for key in [
        FW_CFG_SIGNATURE,
        FW_CFG_ID,
        FW_CFG_FILE_DIR,
        FW_CFG_FILE_FIRST,
    ] {
        assert_eq!(dev.add_item(key, vec![]), Err(FwCfgError::KeyInUse(key)));
    }
    assert_eq!(
        dev.add_item(0x4002, vec![]),
        Err(FwCfgError::BadKey(0x4002))
    );
    dev.add_item(FW_CFG_UUID, vec![0; 16]).expect("add");
    assert_eq!(
        dev.add_item(FW_CFG_UUID, vec![]),
        Err(FwCfgError::KeyInUse(FW_CFG_UUID))
    );
    // A numbered item where the next file goes.
    dev.add_item(FW_CFG_FILE_FIRST + 1, vec![]).expect("add");
    assert_eq!(
        dev.add_file("etc/next", fixed()),
        Err(FwCfgError::KeyInUse(FW_CFG_FILE_FIRST + 1))
    );
}

#[test]
fn too_many_files() {
    let (mut dev, _) = device();
    for i in 0..FW_CFG_MAX_FILES {
        dev.add_file(&format!("f{i}"), FwCfgFile::fixed(vec![]))
            .expect("add");
    }
    assert_eq!(
        dev.add_file("one-more", FwCfgFile::fixed(vec![])),
        Err(FwCfgError::TooManyFiles)
    );
    select(&mut dev, FW_CFG_FILE_DIR);
    let mut count = [0; 4];
    dev.read(FW_CFG_PORT, DATA, &mut count);
    assert_eq!(u32::from_be_bytes(count) as usize, FW_CFG_MAX_FILES);
}

#[test]
fn junk_accesses_neither_panic_nor_change_the_selection() {
    let (mut dev, _) = device();
    select(&mut dev, FW_CFG_SIGNATURE);
    for offset in [2, 3, 5, 6, 7, 9, 10, 11, 12, 100, u64::MAX - 1, u64::MAX] {
        for len in [0, 1, 2, 3, 4, 8, 16] {
            let buf = vec![0xffu8; len];
            dev.write(FW_CFG_PORT, offset, &buf);
            let mut out = vec![0xaau8; len];
            dev.read(FW_CFG_PORT, offset, &mut out);
        }
    }
    dev.write(FW_CFG_PORT, DATA, &[1, 2, 3, 4]);
    dev.write(FW_CFG_PORT, SELECTOR, &[]);
    dev.read(FW_CFG_PORT, DATA, &mut []);
    assert_eq!(read_bytes(&mut dev, 4), b"QEMU");
}
