//! One virtio-blk request: parsing a descriptor chain (everything in it is guest-controlled)
//! and executing it synchronously.
//!
//! A chain is read as two byte streams, whatever its framing: the device-readable
//! descriptors (the 16-byte `virtio_blk_outhdr`, then the data of a write, discard or
//! write-zeroes) and, after them, the device-writable ones (the data of a read or GET_ID,
//! then the one-byte status, always the last writable byte).

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::disk::DiskImage;
use super::{ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS};
use super::{MAX_WRITE_ZEROES_SEG, SECTOR_SIZE};

/// Size of `struct virtio_blk_outhdr`.
const HEADER_LEN: usize = 16;
/// Size of `struct virtio_blk_discard_write_zeroes`.
const RANGE_LEN: usize = 16;
/// Most descriptors kept per direction; a longer chain is answered with IOERR. The driver
/// is told `seg_max` (254), so a conforming chain never gets near this.
const MAX_SEGMENTS: usize = 1024;

/// `VIRTIO_BLK_S_*` as the byte the driver reads (the values are 0, 1 and 2).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
#[allow(clippy::cast_possible_truncation)]
pub(crate) const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
#[allow(clippy::cast_possible_truncation)]
pub(crate) const STATUS_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// A guest buffer: (part of) one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) addr: GuestAddress,
    pub(crate) len: u32,
}

/// A byte range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// What a valid request asks for.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Read the disk at `offset` into the guest buffers.
    In { offset: u64, segs: Vec<Segment> },
    /// Write the guest buffers to the disk at `offset`.
    Out { offset: u64, segs: Vec<Segment> },
    /// Make completed writes durable.
    Flush,
    /// Write the device ID string into the guest buffers.
    GetId { segs: Vec<Segment> },
    /// Deallocate ranges.
    Discard { ranges: Vec<Range> },
    /// Zero ranges (deallocating them is allowed if `unmap`).
    WriteZeroes { ranges: Vec<Range>, unmap: bool },
}

/// A request that passed validation: every buffer lies in guest memory, every range on the
/// disk, and the disk allows it.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: u16,
    pub(crate) status: GuestAddress,
    pub(crate) kind: Kind,
}

/// The outcome of parsing one chain.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Execute it.
    Valid(Request),
    /// Answer at once with `status`.
    Rejected {
        head: u16,
        status_addr: GuestAddress,
        status: u8,
    },
    /// There is no writable status byte: complete the chain with used length 0.
    Unanswerable { head: u16 },
}

/// Parses the chain the driver made available. Never fails: a bad chain becomes an error
/// answer (or, without a status byte, an empty completion).
pub(crate) fn parse(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
) -> Parsed {
    let head = chain.head_index();

    let mut readable: Vec<Segment> = Vec::new();
    let mut writable: Vec<Segment> = Vec::new();
    let mut bad_order = false;
    let mut too_long = false;
    // The iterator is bounded by virtio-queue: a chain visits at most the queue size (or the
    // indirect table's length) descriptors, and at most 4 GiB in all.
    for desc in chain {
        if desc.len() == 0 {
            continue;
        }
        let seg = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        let list = if desc.is_write_only() {
            &mut writable
        } else {
            if !writable.is_empty() {
                bad_order = true;
            }
            &mut readable
        };
        if list.len() < MAX_SEGMENTS {
            list.push(seg);
        } else {
            // Keep the true last descriptor last: it holds the status byte.
            too_long = true;
            if let Some(last) = list.last_mut() {
                *last = seg;
            }
        }
    }

    // The status byte: the last writable byte of the chain.
    let Some(last) = writable.last_mut() else {
        return Parsed::Unanswerable { head };
    };
    let Some(status_addr) = last.addr.checked_add(u64::from(last.len) - 1) else {
        return Parsed::Unanswerable { head };
    };
    if !GuestMemoryBackend::check_range(mem, status_addr, 1) {
        return Parsed::Unanswerable { head };
    }
    last.len -= 1;
    if last.len == 0 {
        writable.pop();
    }
    let reject = |status| Parsed::Rejected {
        head,
        status_addr,
        status,
    };
    if too_long || bad_order {
        return reject(STATUS_IOERR);
    }

    let mut header = [0u8; HEADER_LEN];
    if !gather(mem, &readable, &mut header) {
        return reject(STATUS_IOERR);
    }
    let data_out = skip(&readable, HEADER_LEN as u64);
    let data_in = writable;
    let req_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);

    let kind = match req_type {
        VIRTIO_BLK_T_IN => {
            if !data_out.is_empty() {
                return reject(STATUS_IOERR);
            }
            match rw_offset(mem, disk, sector, &data_in) {
                Some(offset) => Kind::In {
                    offset,
                    segs: data_in,
                },
                None => return reject(STATUS_IOERR),
            }
        }
        VIRTIO_BLK_T_OUT => {
            if disk.readonly() || !data_in.is_empty() {
                return reject(STATUS_IOERR);
            }
            match rw_offset(mem, disk, sector, &data_out) {
                Some(offset) => Kind::Out {
                    offset,
                    segs: data_out,
                },
                None => return reject(STATUS_IOERR),
            }
        }
        VIRTIO_BLK_T_FLUSH => Kind::Flush,
        VIRTIO_BLK_T_GET_ID => {
            if data_in.is_empty() || !all_in_memory(mem, &data_in) {
                return reject(STATUS_IOERR);
            }
            Kind::GetId { segs: data_in }
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let discard = req_type == VIRTIO_BLK_T_DISCARD;
            let supported = if discard {
                disk.supports_discard()
            } else {
                disk.supports_write_zeroes()
            };
            if !supported {
                return reject(STATUS_UNSUPP);
            }
            if !data_in.is_empty() {
                return reject(STATUS_IOERR);
            }
            match parse_ranges(mem, disk, &data_out, discard) {
                Ok((ranges, _)) if discard => Kind::Discard { ranges },
                Ok((ranges, unmap)) => Kind::WriteZeroes { ranges, unmap },
                Err(status) => return reject(status),
            }
        }
        _ => return reject(STATUS_UNSUPP),
    };
    Parsed::Valid(Request {
        head,
        status: status_addr,
        kind,
    })
}

/// The disk offset of a read or write of `segs` at `sector`, if the length is whole sectors,
/// the range lies on the disk and every buffer in guest memory.
fn rw_offset(
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    sector: u64,
    segs: &[Segment],
) -> Option<u64> {
    let len = total_len(segs);
    if len & (SECTOR_SIZE - 1) != 0 || !all_in_memory(mem, segs) {
        return None;
    }
    disk_range(disk, sector, len).map(|r| r.offset)
}

/// `len` bytes at `sector`, if they lie within the disk.
fn disk_range(disk: &DiskImage, sector: u64, len: u64) -> Option<Range> {
    let offset = sector.checked_mul(SECTOR_SIZE)?;
    let end = offset.checked_add(len)?;
    (end <= disk.capacity_bytes()).then_some(Range { offset, len })
}

/// Reads the `struct virtio_blk_discard_write_zeroes` array of a discard or write-zeroes.
fn parse_ranges(
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    data: &[Segment],
    discard: bool,
) -> Result<(Vec<Range>, bool), u8> {
    let (max_seg, max_sectors) = if discard {
        (MAX_DISCARD_SEG, MAX_DISCARD_SECTORS)
    } else {
        (MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SECTORS)
    };
    let len = total_len(data);
    if len == 0 || len & (RANGE_LEN as u64 - 1) != 0 {
        return Err(STATUS_IOERR);
    }
    let count = len / RANGE_LEN as u64;
    if count > u64::from(max_seg) {
        return Err(STATUS_UNSUPP);
    }
    // Bounded: at most max_seg (a small constant) entries.
    let count = usize::try_from(count).map_err(|_| STATUS_IOERR)?;
    let mut raw = vec![0u8; count * RANGE_LEN];
    if !gather(mem, data, &mut raw) {
        return Err(STATUS_IOERR);
    }
    let mut ranges = Vec::with_capacity(raw.len() / RANGE_LEN);
    let mut unmap_all = true;
    for entry in raw.chunks_exact(RANGE_LEN) {
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&entry[0..8]);
        let sector = u64::from_le_bytes(sector);
        let num_sectors = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        let flags = u32::from_le_bytes([entry[12], entry[13], entry[14], entry[15]]);
        let known = if discard {
            0
        } else {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        };
        if flags & !known != 0 {
            return Err(STATUS_UNSUPP);
        }
        unmap_all &= flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
        if num_sectors > max_sectors {
            return Err(STATUS_IOERR);
        }
        let range =
            disk_range(disk, sector, u64::from(num_sectors) * SECTOR_SIZE).ok_or(STATUS_IOERR)?;
        ranges.push(range);
    }
    Ok((ranges, unmap_all && !discard))
}

fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

fn all_in_memory(mem: &GuestMemoryMmap, segs: &[Segment]) -> bool {
    segs.iter()
        .all(|s| GuestMemoryBackend::check_range(mem, s.addr, s.len as usize))
}

/// Fills `out` from the start of the byte stream `segs`; false if the stream is shorter or
/// leaves guest memory.
fn gather(mem: &GuestMemoryMmap, segs: &[Segment], out: &mut [u8]) -> bool {
    let mut done = 0;
    for seg in segs {
        if done == out.len() {
            break;
        }
        let n = (out.len() - done).min(seg.len as usize);
        if mem.read_slice(&mut out[done..done + n], seg.addr).is_err() {
            return false;
        }
        done += n;
    }
    done == out.len()
}

/// The byte stream `segs` without its first `n` bytes.
fn skip(segs: &[Segment], mut n: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for seg in segs {
        let len = u64::from(seg.len);
        if n >= len {
            n -= len;
            continue;
        }
        // n < len <= u32::MAX: the conversion cannot fail. Whether the rest lies in guest
        // memory is checked before use.
        let consumed = u32::try_from(n).unwrap_or(0);
        n = 0;
        if let Some(addr) = seg.addr.checked_add(u64::from(consumed)) {
            out.push(Segment {
                addr,
                len: seg.len - consumed,
            });
        }
    }
    out
}

/// Host iovecs for guest buffers (a buffer spanning memory regions gives several). `None`
/// if a buffer leaves guest memory. With `to_guest`, the pages are marked dirty.
pub(crate) fn iovecs(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    to_guest: bool,
) -> Option<Vec<libc::iovec>> {
    let mut out = Vec::with_capacity(segs.len());
    for seg in segs {
        for slice in GuestMemoryBackend::get_slices(mem, seg.addr, seg.len as usize) {
            let slice = slice.ok()?;
            if to_guest {
                slice.bitmap().mark_dirty(0, slice.len());
            }
            // The pointer stays valid after the guard goes: guest memory is a plain mmap
            // (no Xen grant mappings), unmapped only when the last `GuestMemoryMmap` clone
            // is dropped, which the callers hold across the I/O.
            out.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
    }
    Some(out)
}

/// Writes the device ID into the GET_ID buffers; returns the bytes written.
fn write_id(mem: &GuestMemoryMmap, segs: &[Segment], id: &[u8; ID_BYTES]) -> Option<u32> {
    let mut done = 0usize;
    for seg in segs {
        if done == id.len() {
            break;
        }
        let n = (id.len() - done).min(seg.len as usize);
        mem.write_slice(&id[done..done + n], seg.addr).ok()?;
        done += n;
    }
    u32::try_from(done).ok()
}

/// Executes `req` on the calling thread. Returns the status and the number of data bytes
/// written into guest buffers.
pub(crate) fn execute(
    req: &Request,
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    id: &[u8; ID_BYTES],
) -> (u8, u32) {
    let result = match &req.kind {
        Kind::In { offset, segs } => match iovecs(mem, segs, true) {
            Some(mut iovs) => disk
                .read_vectored_at(&mut iovs, *offset)
                .map(|()| u32::try_from(total_len(segs)).unwrap_or(0)),
            None => return (STATUS_IOERR, 0),
        },
        Kind::Out { offset, segs } => match iovecs(mem, segs, false) {
            Some(mut iovs) => disk.write_vectored_at(&mut iovs, *offset).map(|()| 0),
            None => return (STATUS_IOERR, 0),
        },
        Kind::Flush => disk.flush().map(|()| 0),
        Kind::GetId { segs } => match write_id(mem, segs, id) {
            Some(n) => Ok(n),
            None => return (STATUS_IOERR, 0),
        },
        Kind::Discard { ranges } => ranges
            .iter()
            .try_for_each(|r| disk.discard(r.offset, r.len))
            .map(|()| 0),
        Kind::WriteZeroes { ranges, unmap } => ranges
            .iter()
            .try_for_each(|r| disk.write_zeroes(r.offset, r.len, *unmap))
            .map(|()| 0),
    };
    match result {
        Ok(written) => (STATUS_OK, written),
        Err(e) => {
            log::warn!("disk {}: request failed: {e}", disk.path().display());
            (STATUS_IOERR, 0)
        }
    }
}
