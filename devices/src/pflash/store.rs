//! The flash's cells: the memory the VMM maps into the guest, NOR programming rules on it, and
//! write-back of what changed to the optional backing file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vm_memory::{Bytes, MmapRegion, VolatileMemory};

/// The cells of one flash and where their changes go.
pub(super) struct Store {
    memory: Arc<MmapRegion>,
    /// Where changes are persisted (`None`: only in memory).
    file: Option<File>,
    /// Bytes changed since the last successful flush, as one covering range.
    dirty: Option<Range<usize>>,
    /// The last flush failed (it was logged; the next success is logged too).
    failing: bool,
}

impl Store {
    pub(super) fn new(memory: Arc<MmapRegion>, file: Option<File>) -> Self {
        Self {
            memory,
            file,
            dirty: None,
            failing: false,
        }
    }

    pub(super) fn memory(&self) -> &Arc<MmapRegion> {
        &self.memory
    }

    pub(super) fn len(&self) -> usize {
        self.memory.size()
    }

    pub(super) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// The byte at `offset`, or `None` past the end.
    pub(super) fn byte(&self, offset: usize) -> Option<u8> {
        self.memory.as_volatile_slice().read_obj::<u8>(offset).ok()
    }

    /// Fills `out` from `offset`; bytes past the end read as all ones.
    pub(super) fn read(&self, offset: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = offset
                .checked_add(i)
                .and_then(|o| self.byte(o))
                .unwrap_or(0xff);
        }
    }

    /// Programs one byte as NOR flash does: bits can only go from 1 to 0, so the cell becomes
    /// `old & value`. Returns false past the end (nothing changes).
    pub(super) fn program(&mut self, offset: usize, value: u8) -> bool {
        let Some(old) = self.byte(offset) else {
            return false;
        };
        let new = old & value;
        if new != old {
            if self
                .memory
                .as_volatile_slice()
                .write_obj(new, offset)
                .is_err()
            {
                return false;
            }
            self.mark(offset..offset + 1);
        }
        true
    }

    /// Sets `range` to all ones. Returns false (and changes nothing) unless it lies inside.
    pub(super) fn erase(&mut self, range: Range<usize>) -> bool {
        let Some(len) = range.end.checked_sub(range.start) else {
            return false;
        };
        let Ok(cells) = self.memory.get_slice(range.start, len) else {
            return false;
        };
        let ones = vec![0xffu8; len];
        if cells.write_slice(&ones, 0).is_err() {
            return false;
        }
        self.mark(range);
        true
    }

    fn mark(&mut self, range: Range<usize>) {
        self.dirty = Some(match self.dirty.take() {
            Some(d) => d.start.min(range.start)..d.end.max(range.end),
            None => range,
        });
    }

    /// Whether changes are waiting for [`Self::flush`].
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty.is_some()
    }

    /// Writes the changed bytes to the file and waits for them to be on disk (`fdatasync`).
    /// Without a file, or with nothing changed, this does nothing. On failure the bytes stay
    /// dirty, so the next flush tries them again.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            self.dirty = None;
            return Ok(());
        };
        let Some(range) = self.dirty.clone() else {
            return Ok(());
        };
        let mut bytes = vec![0u8; range.len()];
        self.memory
            .get_slice(range.start, range.len())
            .and_then(|s| s.read_slice(&mut bytes, 0))
            .map_err(io::Error::other)?;
        let at = u64::try_from(range.start).map_err(io::Error::other)?;
        file.write_all_at(&bytes, at)?;
        file.sync_data()?;
        self.dirty = None;
        Ok(())
    }

    /// [`Self::flush`], logging a failure instead of returning it: the guest has no way to
    /// be told (OVMF never reads the status after a write), and the VM keeps running on the
    /// in-memory contents. The first failure is an error, repeats are debug lines, and the
    /// recovery is logged.
    pub(super) fn persist(&mut self) {
        if !self.is_dirty() {
            return;
        }
        match self.flush() {
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("pflash: writing the flash file works again");
            }
            Ok(()) => {}
            Err(e) if self.failing => log::debug!("pflash: writing the flash file failed: {e}"),
            Err(e) => {
                self.failing = true;
                log::error!(
                    "pflash: writing the flash file failed, UEFI variable changes are not saved: {e}"
                );
            }
        }
    }
}
