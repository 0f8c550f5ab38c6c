//! The DMA interface: one access structure in guest RAM per transfer.

use vm_memory::{Bytes, GuestAddress};

use super::FwCfg;

/// Control bits of the access structure.
pub(super) const CTL_ERROR: u32 = 0x01;
pub(super) const CTL_READ: u32 = 0x02;
pub(super) const CTL_SKIP: u32 = 0x04;
pub(super) const CTL_SELECT: u32 = 0x08;
pub(super) const CTL_WRITE: u32 = 0x10;

/// Bytes of the access structure: control, length, address.
pub(super) const ACCESS_LEN: usize = 16;

/// Zeros written past an item's end come from here, a page at a time.
const ZEROS: [u8; 4096] = [0; 4096];

/// Why a transfer failed (for the log; the guest only sees ERROR).
#[derive(Debug)]
enum DmaError {
    /// The access structure is not in guest RAM.
    Access(vm_memory::GuestMemoryError),
    /// The buffer is not (wholly) in guest RAM.
    Buffer(vm_memory::GuestMemoryError),
    /// The buffer wraps around the address space.
    Wraps,
    /// A write: no item is writable.
    Write,
}

impl std::fmt::Display for DmaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Access(e) => write!(f, "the access structure is not in guest RAM: {e}"),
            Self::Buffer(e) => write!(f, "the buffer is not in guest RAM: {e}"),
            Self::Wraps => f.write_str("the buffer wraps around the address space"),
            Self::Write => f.write_str("a write (no item is writable)"),
        }
    }
}

impl FwCfg {
    /// Runs the transfer whose access structure is at `access` and writes its control word
    /// back: 0 when done, ERROR when not.
    pub(super) fn dma(&mut self, access: u64) {
        let status = match self.dma_transfer(access) {
            Ok(()) => 0,
            Err(e) => {
                let key = self.selected;
                if self.dma_error_logged {
                    log::debug!("fw_cfg: DMA at {access:#x} failed (item {key:#06x}): {e}");
                } else {
                    self.dma_error_logged = true;
                    log::warn!("fw_cfg: DMA at {access:#x} failed (item {key:#06x}): {e}");
                }
                CTL_ERROR
            }
        };
        // Nowhere to report a structure outside RAM: the guest's own poll never ends, as on
        // QEMU.
        if let Err(e) = self
            .memory
            .write_slice(&status.to_be_bytes(), GuestAddress(access))
        {
            log::debug!("fw_cfg: cannot write the DMA status at {access:#x}: {e}");
        }
    }

    fn dma_transfer(&mut self, access: u64) -> Result<(), DmaError> {
        let mut raw = [0u8; ACCESS_LEN];
        self.memory
            .read_slice(&mut raw, GuestAddress(access))
            .map_err(DmaError::Access)?;
        let [c0, c1, c2, c3, l0, l1, l2, l3, a0, a1, a2, a3, a4, a5, a6, a7] = raw;
        let control = u32::from_be_bytes([c0, c1, c2, c3]);
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let address = u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);

        if control & CTL_SELECT != 0 {
            // The key is the top half of the control word.
            self.select(u16::from_be_bytes([c0, c1]));
        }
        // One operation, in QEMU's order of precedence.
        if control & CTL_READ != 0 {
            self.dma_read(length, address)
        } else if control & CTL_WRITE != 0 {
            if length == 0 {
                Ok(())
            } else {
                Err(DmaError::Write)
            }
        } else if control & CTL_SKIP != 0 {
            let left = self.selected_data().len().saturating_sub(self.offset);
            let n = left.min(usize::try_from(length).unwrap_or(usize::MAX));
            self.offset += n;
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Copies `length` bytes of the selected item from the current offset to guest
    /// `address` (zeros past the item's end) and advances over what the item had.
    fn dma_read(&mut self, length: u32, address: u64) -> Result<(), DmaError> {
        let length = u64::from(length);
        if address.checked_add(length).is_none() {
            return Err(DmaError::Wraps);
        }
        let data = self
            .items
            .get(&self.selected)
            .map_or(&[][..], |item| &item.data);
        let rest = data.get(self.offset..).unwrap_or(&[]);
        let n = rest
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX));
        if n > 0 {
            self.memory
                .write_slice(&rest[..n], GuestAddress(address))
                .map_err(DmaError::Buffer)?;
        }
        self.offset += n;
        // Cannot overflow: address + length does not, and n <= length.
        let mut at = address + n as u64;
        let mut zeros = length - n as u64;
        while zeros > 0 {
            let chunk = usize::try_from(zeros).map_or(ZEROS.len(), |z| z.min(ZEROS.len()));
            self.memory
                .write_slice(&ZEROS[..chunk], GuestAddress(at))
                .map_err(DmaError::Buffer)?;
            at += chunk as u64;
            zeros -= chunk as u64;
        }
        Ok(())
    }
}
