//! The MSI capability of a passed-through function, emulated.
//!
//! The guest programs the message address, data, enable bit and per-vector masks here; none
//! of it reaches the hardware's capability (vfio-pci programs the physical MSI with the
//! host's own vectors). Each guest vector is routed to KVM through [`MsiVectors`], whose
//! eventfds VFIO signals when the device raises the interrupt.

// Register code packs fields into bytes and dwords: those casts truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use ghost_devices::pci::config::dword_update;
use ghost_devices::pci::msix::{MsiMessage, MsiVectors};

/// Capability ID of MSI.
pub const MSI_CAPABILITY_ID: u8 = 0x05;

const CONTROL_ENABLE: u16 = 1;
const CONTROL_MMC_SHIFT: u16 = 1;
const CONTROL_MME_SHIFT: u16 = 4;
const CONTROL_64BIT: u16 = 1 << 7;
const CONTROL_PER_VECTOR_MASK: u16 = 1 << 8;
/// The largest capability: 64-bit with per-vector masking.
const MAX_LEN: usize = 24;

/// What the hardware side must do after a guest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiChange {
    /// MSI was switched on with this many vectors: hand their eventfds to VFIO.
    Enabled(u16),
    /// MSI was switched off.
    Disabled,
}

/// The emulated MSI capability at `offset` in config space.
pub struct MsiCapability {
    offset: u16,
    bytes: [u8; MAX_LEN],
    writable: [u8; MAX_LEN],
    len: u16,
    vectors: Arc<dyn MsiVectors>,
    /// Vectors VFIO currently signals (0 while MSI is off on the hardware side).
    active: u16,
}

impl std::fmt::Debug for MsiCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsiCapability")
            .field("offset", &self.offset)
            .field("control", &format_args!("{:#06x}", self.control()))
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl MsiCapability {
    /// Vectors a capability with this message control word can ask for (1 to 32).
    pub fn vectors_wanted(hw_control: u16) -> u16 {
        let mmc = ((hw_control >> CONTROL_MMC_SHIFT) & 7).min(5);
        1 << mmc
    }

    /// The capability at `offset`, whose hardware "next" pointer is `next` and message
    /// control word `hw_control` (only its read-only capability bits are kept). `vectors`
    /// routes the guest's vectors; it should have [`Self::vectors_wanted`] of them.
    pub fn new(offset: u16, next: u8, hw_control: u16, vectors: Arc<dyn MsiVectors>) -> Self {
        let ro = hw_control & ((7 << CONTROL_MMC_SHIFT) | CONTROL_64BIT | CONTROL_PER_VECTOR_MASK);
        let is64 = ro & CONTROL_64BIT != 0;
        let maskable = ro & CONTROL_PER_VECTOR_MASK != 0;
        let len = match (is64, maskable) {
            (false, false) => 10,
            (true, false) => 14,
            (false, true) => 20,
            (true, true) => 24,
        };
        let mut bytes = [0u8; MAX_LEN];
        bytes[0] = MSI_CAPABILITY_ID;
        bytes[1] = next;
        bytes[2..4].copy_from_slice(&ro.to_le_bytes());
        let mut writable = [0u8; MAX_LEN];
        // Enable and multiple message enable.
        writable[2] = 0x71;
        // Address low (dword aligned).
        writable[4..8].copy_from_slice(&[0xfc, 0xff, 0xff, 0xff]);
        let data_at = if is64 {
            writable[8..12].fill(0xff);
            12
        } else {
            8
        };
        writable[data_at..data_at + 2].fill(0xff);
        if maskable {
            let n = u32::from(Self::vectors_wanted(hw_control));
            let mask = if n == 32 { u32::MAX } else { (1 << n) - 1 };
            writable[data_at + 4..data_at + 8].copy_from_slice(&mask.to_le_bytes());
        }
        Self {
            offset,
            bytes,
            writable,
            len,
            vectors,
            active: 0,
        }
    }

    /// Whether config offset `offset` falls inside the capability.
    pub fn contains(&self, offset: u16) -> bool {
        offset >= self.offset && offset < self.offset + self.len
    }

    /// The dword at config offset `offset & !3`, as far as it overlaps the capability (other
    /// bytes of it come from `around`).
    pub fn read_dword(&self, offset: u16, around: u32) -> u32 {
        let base = offset & !3;
        let mut out = around.to_le_bytes();
        for (i, b) in out.iter_mut().enumerate() {
            let at = base + i as u16;
            if self.contains(at) {
                *b = self.bytes[usize::from(at - self.offset)];
            }
        }
        u32::from_le_bytes(out)
    }

    /// A guest write of 1, 2 or 4 bytes at config offset `offset`. Returns what VFIO must do.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> Option<MsiChange> {
        let (value, mask) = dword_update(offset, data)?;
        let base = offset & !3;
        let (value, mask) = (value.to_le_bytes(), mask.to_le_bytes());
        for i in 0..4 {
            let at = base + i as u16;
            if mask[i] == 0 || !self.contains(at) {
                continue;
            }
            let j = usize::from(at - self.offset);
            let w = self.writable[j];
            self.bytes[j] = (self.bytes[j] & !w) | (value[i] & w);
        }
        // Multiple message enable cannot exceed what the function is capable of.
        let control = self.control();
        let mmc = (control >> CONTROL_MMC_SHIFT) & 7;
        let mme = (control >> CONTROL_MME_SHIFT) & 7;
        if mme > mmc {
            let fixed = (control & !(7 << CONTROL_MME_SHIFT)) | (mmc << CONTROL_MME_SHIFT);
            self.bytes[2..4].copy_from_slice(&fixed.to_le_bytes());
        }
        self.refresh()
    }

    /// Whether the guest enabled MSI.
    pub fn enabled(&self) -> bool {
        self.control() & CONTROL_ENABLE != 0
    }

    /// Vectors the guest enabled (1 << MME), or 0 while MSI is off.
    pub fn enabled_vectors(&self) -> u16 {
        if !self.enabled() {
            return 0;
        }
        let mme = ((self.control() >> CONTROL_MME_SHIFT) & 7).min(5);
        (1u16 << mme).min(self.vectors.count())
    }

    /// The interrupt backend.
    pub fn vectors(&self) -> &Arc<dyn MsiVectors> {
        &self.vectors
    }

    /// Back to power-on state (MSI off) without telling VFIO; the caller turns the hardware
    /// side off.
    pub fn reset(&mut self) {
        let ro =
            self.control() & ((7 << CONTROL_MMC_SHIFT) | CONTROL_64BIT | CONTROL_PER_VECTOR_MASK);
        self.bytes[2..].fill(0);
        self.bytes[2..4].copy_from_slice(&ro.to_le_bytes());
        let _ = self.refresh();
    }

    fn control(&self) -> u16 {
        u16::from_le_bytes([self.bytes[2], self.bytes[3]])
    }

    fn is64(&self) -> bool {
        self.control() & CONTROL_64BIT != 0
    }

    fn dword(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    fn message(&self, vector: u16) -> MsiMessage {
        let (address, data_at) = if self.is64() {
            (
                u64::from(self.dword(4)) | (u64::from(self.dword(8)) << 32),
                12,
            )
        } else {
            (u64::from(self.dword(4)), 8)
        };
        let data = u32::from(u16::from_le_bytes([
            self.bytes[data_at],
            self.bytes[data_at + 1],
        ]));
        // With several vectors, the function puts the vector number in the low data bits.
        let n = u32::from(self.enabled_vectors().max(1));
        MsiMessage {
            address,
            data: (data & !(n - 1)) | u32::from(vector),
        }
    }

    fn masked(&self, vector: u16) -> bool {
        if self.control() & CONTROL_PER_VECTOR_MASK == 0 {
            return false;
        }
        let at = if self.is64() { 16 } else { 12 };
        self.dword(at) & (1 << vector) != 0
    }

    /// Routes every vector as the registers say; reports a change of the enabled count.
    fn refresh(&mut self) -> Option<MsiChange> {
        let n = self.enabled_vectors();
        for v in 0..self.vectors.count() {
            let result = if v < n && !self.masked(v) {
                self.vectors.enable(v, self.message(v))
            } else {
                self.vectors.disable(v)
            };
            if let Err(e) = result {
                log::warn!("MSI vector {v}: {e}");
            }
        }
        if n == self.active {
            return None;
        }
        self.active = n;
        Some(if n == 0 {
            MsiChange::Disabled
        } else {
            MsiChange::Enabled(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghost_devices::pci::msix::testing::RecordingVectors;

    const AT: u16 = 0x50;

    fn cap(control: u16, n: u16) -> (MsiCapability, Arc<RecordingVectors>) {
        let v = RecordingVectors::new(n);
        (MsiCapability::new(AT, 0x70, control, v.clone()), v)
    }

    fn read(c: &MsiCapability, off: u16) -> u32 {
        c.read_dword(off, 0xdead_beef)
    }

    #[test]
    fn header_keeps_capability_bits_and_next_pointer() {
        // 64-bit, 4 vectors capable, per-vector masking, with a bogus enable bit from hardware.
        let (c, _) = cap(0x0185, 4);
        assert_eq!(read(&c, AT), 0x0184_7005);
        assert_eq!(MsiCapability::vectors_wanted(0x0184), 4);
        assert!(c.contains(AT + 23) && !c.contains(AT + 24) && !c.contains(AT - 1));
        // A dword that straddles the end keeps the bytes that are not ours.
        let (small, _) = cap(0, 1);
        assert_eq!(read(&small, AT + 8) >> 16, 0xdead);
    }

    #[test]
    fn enabling_routes_the_programmed_message() {
        let (mut c, v) = cap(CONTROL_64BIT, 1);
        assert_eq!(c.write(AT + 4, &0xfee0_1000u32.to_le_bytes()), None);
        c.write(AT + 8, &0u32.to_le_bytes());
        c.write(AT + 12, &0x4041u16.to_le_bytes());
        assert_eq!(v.routes.lock().unwrap()[0], None, "not before enable");
        assert_eq!(c.write(AT + 2, &[1]), Some(MsiChange::Enabled(1)));
        assert_eq!(
            v.routes.lock().unwrap()[0],
            Some(MsiMessage {
                address: 0xfee0_1000,
                data: 0x4041
            })
        );
        // Reprogramming while enabled reroutes without a new VFIO call.
        assert_eq!(c.write(AT + 12, &0x4042u16.to_le_bytes()), None);
        assert_eq!(v.routes.lock().unwrap()[0].unwrap().data, 0x4042);
        assert_eq!(c.write(AT + 2, &[0]), Some(MsiChange::Disabled));
        assert_eq!(v.routes.lock().unwrap()[0], None);
    }

    #[test]
    fn multiple_messages_are_capped_and_numbered() {
        // 32-bit, capable of 4 vectors, masking.
        let (mut c, v) = cap(2 << CONTROL_MMC_SHIFT | CONTROL_PER_VECTOR_MASK, 4);
        c.write(AT + 4, &0xfee0_0000u32.to_le_bytes());
        c.write(AT + 8, &0x30u16.to_le_bytes());
        // Ask for 32 (MME=5): capped at 4.
        assert_eq!(
            c.write(AT + 2, &(1u16 | 5 << CONTROL_MME_SHIFT).to_le_bytes()),
            Some(MsiChange::Enabled(4))
        );
        assert_eq!(c.enabled_vectors(), 4);
        let routes = v.routes.lock().unwrap().clone();
        let data: Vec<u32> = routes.iter().map(|r| r.unwrap().data).collect();
        assert_eq!(data, vec![0x30, 0x31, 0x32, 0x33]);
        // Mask vector 2.
        c.write(AT + 12, &4u32.to_le_bytes());
        assert_eq!(v.routes.lock().unwrap()[2], None);
        assert!(v.routes.lock().unwrap()[3].is_some());
        // Pending bits are read-only zero; mask bits above the capable count stay clear.
        c.write(AT + 12, &u32::MAX.to_le_bytes());
        assert_eq!(read(&c, AT + 12), 0xf);
        c.write(AT + 16, &u32::MAX.to_le_bytes());
        assert_eq!(read(&c, AT + 16), 0);
    }

    #[test]
    fn read_only_fields_stay() {
        let (mut c, _) = cap(0, 1);
        c.write(AT, &u32::MAX.to_le_bytes());
        // ID and next unchanged; only enable and MME are writable, and MME is capped at 0.
        assert_eq!(read(&c, AT), 0x0001_7005);
        c.write(AT + 4, &u32::MAX.to_le_bytes());
        assert_eq!(read(&c, AT + 4), 0xffff_fffc);
        c.reset();
        assert_eq!(read(&c, AT) >> 16, 0);
        assert_eq!(read(&c, AT + 4), 0);
    }

    #[test]
    fn odd_writes_are_ignored() {
        let (mut c, _) = cap(CONTROL_64BIT | CONTROL_PER_VECTOR_MASK, 1);
        assert_eq!(c.write(AT + 3, &[1, 2]), None);
        assert_eq!(c.write(AT, &[1, 2, 3]), None);
        assert_eq!(c.write(AT + 1, &[]), None);
    }
}
