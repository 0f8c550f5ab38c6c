//! MSI-X: the vector table and pending-bit array a function exposes in a BAR, and the
//! capability that enables them.
//!
//! The table is emulated here; delivering an interrupt is the job of an [`MsiVectors`]
//! backend (in ghost-vmm: one KVM GSI route and irqfd per vector). A vector is *live* when
//! MSI-X is enabled, the function is not masked and the vector's own mask bit is clear; only
//! live vectors have a route. Triggering a vector that is not live sets its pending bit, and
//! unmasking it later delivers the interrupt, as the spec asks.

// Register code splits and packs fields (a u64 address into two u32 halves, a dword into
// bytes); those casts truncate on purpose, and every index is bounded by a table size.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// Bytes per MSI-X table entry.
pub const ENTRY_SIZE: u64 = 16;
/// MSI-X capability ID.
pub const CAPABILITY_ID: u8 = 0x11;
/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: mask bit.
const VECTOR_MASKED: u32 = 1;
/// Most vectors a function can have.
pub const MAX_VECTORS: u16 = 2048;

/// An MSI message: where the device writes, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// Delivers MSI vectors. Implemented by the VMM on top of KVM.
pub trait MsiVectors: Send + Sync {
    /// Number of vectors.
    fn count(&self) -> u16;
    /// Routes `vector` to `message` and lets it fire (the guest unmasked or reprogrammed it).
    fn enable(&self, vector: u16, message: MsiMessage) -> std::io::Result<()>;
    /// Stops `vector` from reaching the guest (masked or MSI-X disabled).
    fn disable(&self, vector: u16) -> std::io::Result<()>;
    /// Fires `vector` (which is enabled).
    fn trigger(&self, vector: u16) -> std::io::Result<()>;
    /// The eventfd that fires `vector`, for devices that signal it from outside the VMM
    /// (VFIO). `None` when out of range.
    fn notifier(&self, vector: u16) -> Option<&EventFd>;
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    address_lo: u32,
    address_hi: u32,
    data: u32,
    control: u32,
}

impl Entry {
    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.address_lo) | (u64::from(self.address_hi) << 32),
            data: self.data,
        }
    }

    fn masked(&self) -> bool {
        self.control & VECTOR_MASKED != 0
    }
}

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    live: Vec<bool>,
    control: u16,
    vectors: Arc<dyn MsiVectors>,
}

impl std::fmt::Debug for Msix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msix")
            .field("vectors", &self.entries.len())
            .field("control", &format_args!("{:#06x}", self.control))
            .finish_non_exhaustive()
    }
}

impl Msix {
    /// MSI-X for `vectors.count()` vectors (at least 1, at most [`MAX_VECTORS`]), all masked,
    /// MSI-X disabled.
    pub fn new(vectors: Arc<dyn MsiVectors>) -> Self {
        let n = usize::from(vectors.count().clamp(1, MAX_VECTORS));
        Self {
            entries: vec![
                Entry {
                    control: VECTOR_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![0; n.div_ceil(64)],
            live: vec![false; n],
            control: 0,
            vectors,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Always false: a function has at least one vector.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size in bytes of the table.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Size in bytes of the PBA (whole qwords).
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// The capability's body (ID, next, message control, table and PBA locations) for a
    /// table at `table_offset` in BAR `table_bar` and a PBA at `pba_offset` in `pba_bar`,
    /// and its write mask (only the enable and function-mask bits).
    pub fn capability(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> ([u8; 12], [u8; 12]) {
        let mut body = [0u8; 12];
        body[0] = CAPABILITY_ID;
        body[2..4].copy_from_slice(&(self.len() - 1).to_le_bytes());
        body[4..8].copy_from_slice(&(table_offset | u32::from(table_bar & 7)).to_le_bytes());
        body[8..12].copy_from_slice(&(pba_offset | u32::from(pba_bar & 7)).to_le_bytes());
        let mut mask = [0u8; 12];
        mask[3] = 0xc0;
        (body, mask)
    }

    /// The message control word as the guest last wrote it (enable and function mask bits).
    pub fn control(&self) -> u16 {
        self.control
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.control & CONTROL_ENABLE != 0
    }

    /// The guest wrote the message control word (only the enable and function-mask bits count).
    pub fn set_control(&mut self, control: u16) {
        self.control = control & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        self.refresh_all();
    }

    /// The guest reads the table at `offset` (4 or 8 bytes, aligned; others read zero).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let e = &self.entries[entry];
        let words = [e.address_lo, e.address_hi, e.data, e.control];
        let w = usize::from(field / 4);
        match data.len() {
            4 => data.copy_from_slice(&words[w].to_le_bytes()),
            _ => {
                data[..4].copy_from_slice(&words[w].to_le_bytes());
                data[4..].copy_from_slice(&words[w + 1].to_le_bytes());
            }
        }
    }

    /// The guest writes the table at `offset` (4 or 8 bytes, aligned; others are ignored).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let mut put = |w: u8, bytes: &[u8]| {
            let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let e = &mut self.entries[entry];
            match w {
                0 => e.address_lo = v & !3,
                1 => e.address_hi = v,
                2 => e.data = v,
                _ => e.control = v & VECTOR_MASKED,
            }
        };
        put(field / 4, &data[..4]);
        if data.len() == 8 {
            put(field / 4 + 1, &data[4..]);
        }
        self.refresh(entry);
    }

    /// The guest reads the PBA at `offset` (4 or 8 bytes, aligned); writes are ignored.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !matches!(data.len(), 4 | 8) || !offset.is_multiple_of(data.len() as u64) {
            return;
        }
        let Some(q) = usize::try_from(offset / 8)
            .ok()
            .and_then(|i| self.pending.get(i))
        else {
            return;
        };
        let bytes = q.to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&bytes[start..start + data.len()]);
    }

    /// Signals `vector`: delivered now if it is live, else remembered in the PBA. Vectors out
    /// of range are ignored.
    pub fn trigger(&mut self, vector: u16) {
        let v = usize::from(vector);
        if v >= self.entries.len() || !self.enabled() {
            return;
        }
        if self.live[v] {
            if let Err(e) = self.vectors.trigger(vector) {
                log::warn!("MSI-X vector {vector}: cannot signal: {e}");
            }
        } else {
            self.pending[v / 64] |= 1 << (v % 64);
        }
    }

    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        v < self.entries.len() && self.pending[v / 64] & (1 << (v % 64)) != 0
    }

    /// Back to power-on state: disabled, all vectors masked, nothing pending, no routes.
    pub fn reset(&mut self) {
        self.control = 0;
        for e in &mut self.entries {
            *e = Entry {
                control: VECTOR_MASKED,
                ..Entry::default()
            };
        }
        self.pending.fill(0);
        self.refresh_all();
    }

    /// The delivery backend.
    pub fn vectors(&self) -> &Arc<dyn MsiVectors> {
        &self.vectors
    }

    fn locate(&self, offset: u64, len: usize) -> Option<(usize, u8)> {
        if !matches!(len, 4 | 8) || !offset.is_multiple_of(len as u64) {
            return None;
        }
        let entry = usize::try_from(offset / ENTRY_SIZE).ok()?;
        (entry < self.entries.len()).then_some((entry, (offset % ENTRY_SIZE) as u8))
    }

    fn refresh_all(&mut self) {
        for i in 0..self.entries.len() {
            self.refresh(i);
        }
    }

    /// Brings vector `i`'s route in line with the table and control word; fires it if it
    /// just became live with its pending bit set.
    fn refresh(&mut self, i: usize) {
        let e = self.entries[i];
        let should = self.enabled() && self.control & CONTROL_FUNCTION_MASK == 0 && !e.masked();
        let vector = i as u16;
        if should {
            // (Re)program even when already live: the message may have changed.
            if let Err(err) = self.vectors.enable(vector, e.message()) {
                log::warn!("MSI-X vector {vector}: cannot route: {err}");
                return;
            }
            self.live[i] = true;
            if self.pending[i / 64] & (1 << (i % 64)) != 0 {
                self.pending[i / 64] &= !(1 << (i % 64));
                if let Err(err) = self.vectors.trigger(vector) {
                    log::warn!("MSI-X vector {vector}: cannot signal: {err}");
                }
            }
        } else if self.live[i] {
            if let Err(err) = self.vectors.disable(vector) {
                log::warn!("MSI-X vector {vector}: cannot disable: {err}");
            }
            self.live[i] = false;
        }
    }
}

/// An [`MsiVectors`] that records what happens, for tests of devices built on MSI-X.
#[doc(hidden)]
pub mod testing {
    use super::*;
    use std::sync::Mutex;

    /// Records routes and counts triggers per vector.
    #[derive(Debug, Default)]
    pub struct RecordingVectors {
        /// Current route per vector (`None` = disabled).
        pub routes: Mutex<Vec<Option<MsiMessage>>>,
        /// Interrupts delivered per vector.
        pub fired: Mutex<Vec<u64>>,
        /// One eventfd per vector, for devices signalled from outside (VFIO).
        pub notifiers: Vec<EventFd>,
    }

    impl RecordingVectors {
        /// `n` vectors.
        pub fn new(n: u16) -> Arc<Self> {
            Arc::new(Self {
                routes: Mutex::new(vec![None; usize::from(n)]),
                fired: Mutex::new(vec![0; usize::from(n)]),
                notifiers: (0..n).map(|_| EventFd::new(0).expect("eventfd")).collect(),
            })
        }

        /// Interrupts delivered on `vector` so far.
        pub fn fired(&self, vector: u16) -> u64 {
            self.fired.lock().unwrap_or_else(|e| e.into_inner())[usize::from(vector)]
        }

        /// The route of `vector`.
        pub fn route(&self, vector: u16) -> Option<MsiMessage> {
            self.routes.lock().unwrap_or_else(|e| e.into_inner())[usize::from(vector)]
        }
    }

    impl MsiVectors for RecordingVectors {
        fn count(&self) -> u16 {
            self.routes.lock().unwrap_or_else(|e| e.into_inner()).len() as u16
        }
        fn enable(&self, vector: u16, message: MsiMessage) -> std::io::Result<()> {
            self.routes.lock().unwrap_or_else(|e| e.into_inner())[usize::from(vector)] =
                Some(message);
            Ok(())
        }
        fn disable(&self, vector: u16) -> std::io::Result<()> {
            self.routes.lock().unwrap_or_else(|e| e.into_inner())[usize::from(vector)] = None;
            Ok(())
        }
        fn trigger(&self, vector: u16) -> std::io::Result<()> {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                routes[usize::from(vector)].is_some(),
                "fired a vector with no route"
            );
            self.fired.lock().unwrap_or_else(|e| e.into_inner())[usize::from(vector)] += 1;
            Ok(())
        }
        fn notifier(&self, vector: u16) -> Option<&EventFd> {
            self.notifiers.get(usize::from(vector))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::RecordingVectors;
    use super::*;

    fn program(m: &mut Msix, v: u64, address: u64, data: u32) {
        m.write_table(v * 16, &(address as u32).to_le_bytes());
        m.write_table(v * 16 + 4, &((address >> 32) as u32).to_le_bytes());
        m.write_table(v * 16 + 8, &data.to_le_bytes());
    }

    fn unmask(m: &mut Msix, v: u64) {
        m.write_table(v * 16 + 12, &0u32.to_le_bytes());
    }

    #[test]
    fn vectors_route_only_when_enabled_and_unmasked() {
        let rec = RecordingVectors::new(3);
        let mut m = Msix::new(rec.clone());
        program(&mut m, 1, 0xfee0_0000, 0x41);
        unmask(&mut m, 1);
        assert_eq!(rec.route(1), None, "MSI-X still disabled");
        m.set_control(CONTROL_ENABLE);
        assert_eq!(
            rec.route(1),
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x41
            })
        );
        assert_eq!(rec.route(0), None);
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert_eq!(rec.route(1), None);
        m.set_control(CONTROL_ENABLE);
        m.trigger(1);
        assert_eq!(rec.fired(1), 1);
    }

    #[test]
    fn masked_vector_is_pending_until_unmasked() {
        let rec = RecordingVectors::new(2);
        let mut m = Msix::new(rec.clone());
        m.set_control(CONTROL_ENABLE);
        program(&mut m, 0, 0xfee0_0000, 0x30);
        m.trigger(0);
        assert_eq!(rec.fired(0), 0);
        assert!(m.is_pending(0));
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 1);
        unmask(&mut m, 0);
        assert_eq!(rec.fired(0), 1);
        assert!(!m.is_pending(0));
    }

    #[test]
    fn table_reads_back_and_reset_clears() {
        let rec = RecordingVectors::new(1);
        let mut m = Msix::new(rec.clone());
        program(&mut m, 0, 0x1_fee0_1000, 7);
        let mut q = [0u8; 8];
        m.read_table(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        let mut w = [0u8; 4];
        m.read_table(12, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1, "starts masked");
        m.set_control(CONTROL_ENABLE);
        unmask(&mut m, 0);
        assert!(rec.route(0).is_some());
        m.reset();
        assert_eq!(rec.route(0), None);
        m.read_table(8, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0);
    }

    #[test]
    fn guest_garbage_is_ignored() {
        let rec = RecordingVectors::new(2);
        let mut m = Msix::new(rec);
        for off in [0u64, 1, 2, 3, 31, 32, 33, 1 << 40, u64::MAX - 3] {
            for len in [1usize, 2, 3, 4, 8, 16] {
                let mut buf = vec![0xaa; len];
                m.read_table(off, &mut buf);
                m.write_table(off, &buf);
                m.read_pba(off, &mut buf);
            }
        }
        m.trigger(2);
        m.trigger(u16::MAX);
        assert!(!m.is_pending(2));
    }

    #[test]
    fn capability_layout() {
        let m = Msix::new(RecordingVectors::new(5));
        let (body, mask) = m.capability(0, 0x8000, 0, 0xa000);
        assert_eq!(body[0], 0x11);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 4);
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 0x8000);
        assert_eq!(u32::from_le_bytes(body[8..12].try_into().unwrap()), 0xa000);
        assert_eq!(mask[3], 0xc0);
    }
}
