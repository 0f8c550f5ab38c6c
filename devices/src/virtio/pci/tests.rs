//! The virtio-pci transport against a recording device, on `GuestMemoryMmap`.
use super::*;
use crate::pci::msix::testing::RecordingVectors;
use crate::virtio::ActivateError;
use vm_memory::GuestAddress;

#[derive(Default)]
struct Seen {
    activations: Vec<(Vec<u16>, u64)>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    notifiers: Vec<EventFd>,
}

/// A device with two queues that records what the transport does to it.
struct Dummy(Arc<Mutex<Seen>>);

const DUMMY_FEATURES: u64 = features::VERSION_1 | features::RING_EVENT_IDX | 1;

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        super::super::device_type::BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn features(&self) -> u64 {
        DUMMY_FEATURES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        lock(&self.0).config_writes.push((offset, data.to_vec()));
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let mut s = lock(&self.0);
        s.activations.push((
            ctx.queues.iter().map(|q| q.index).collect(),
            ctx.acked_features,
        ));
        s.interrupt = Some(ctx.interrupt);
        s.notifiers = ctx.queues.into_iter().map(|q| q.notifier).collect();
        Ok(())
    }
    fn reset(&mut self) {
        lock(&self.0).resets += 1;
    }
}

#[derive(Default)]
struct Ioevents(Mutex<Vec<(bool, u64)>>);

impl IoEventRegistrar for Ioevents {
    fn register(&self, _fd: &EventFd, address: u64) -> std::io::Result<()> {
        lock(&self.0).push((true, address));
        Ok(())
    }
    fn unregister(&self, _fd: &EventFd, address: u64) -> std::io::Result<()> {
        lock(&self.0).push((false, address));
        Ok(())
    }
}

struct Rig {
    dev: VirtioPciDevice,
    seen: Arc<Mutex<Seen>>,
    vectors: Arc<RecordingVectors>,
    ioevents: Arc<Ioevents>,
}

fn rig() -> Rig {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let vectors = RecordingVectors::new(VirtioPciDevice::vectors_needed(2));
    let ioevents = Arc::new(Ioevents::default());
    let dev = VirtioPciDevice::new(
        "test".into(),
        Box::new(Dummy(seen.clone())),
        mem,
        vectors.clone(),
        ioevents.clone(),
        0xc000_0000,
    )
    .unwrap();
    Rig {
        dev,
        seen,
        vectors,
        ioevents,
    }
}

fn w(dev: &mut VirtioPciDevice, offset: u64, value: u64, len: usize) {
    dev.bar_write(0, offset, &value.to_le_bytes()[..len]);
}

fn r(dev: &mut VirtioPciDevice, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.bar_read(0, offset, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn cfg32(dev: &mut VirtioPciDevice, offset: u16) -> u32 {
    let mut b = [0u8; 4];
    dev.config_read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Walks the capability list: `(offset, id, cfg_type)` for each.
fn capabilities(dev: &mut VirtioPciDevice) -> Vec<(u16, u8, u8)> {
    let mut out = Vec::new();
    let mut at = (cfg32(dev, 0x34) & 0xff) as u16;
    while at != 0 && out.len() < 16 {
        let head = cfg32(dev, at);
        out.push((at, head as u8, (head >> 24) as u8));
        at = ((head >> 8) & 0xff) as u16;
    }
    out
}

/// The driver's side of virtio 1.x initialisation (virtio 1.2 section 3.1.1).
fn bring_up(dev: &mut VirtioPciDevice, queues: &[u16]) {
    w(dev, 0x14, u64::from(status::ACKNOWLEDGE), 1);
    w(
        dev,
        0x14,
        u64::from(status::ACKNOWLEDGE | status::DRIVER),
        1,
    );
    w(dev, 0x08, 0, 4);
    w(dev, 0x0c, 1, 4);
    w(dev, 0x08, 1, 4);
    w(dev, 0x0c, 1, 4); // VERSION_1
    w(
        dev,
        0x14,
        u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        1,
    );
    for &q in queues {
        w(dev, 0x16, u64::from(q), 2);
        w(dev, 0x18, 8, 2);
        let base = 0x1000 * (u64::from(q) + 1);
        for (off, addr) in [(0x20, base), (0x28, base + 0x100), (0x30, base + 0x200)] {
            w(dev, off, addr & 0xffff_ffff, 4);
            w(dev, off + 4, addr >> 32, 4);
        }
        w(dev, 0x1a, u64::from(q) + 1, 2);
        w(dev, 0x1c, 1, 2);
    }
    w(dev, 0x10, 0, 2);
    w(
        dev,
        0x14,
        u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK),
        1,
    );
}

#[test]
fn identity_and_capabilities() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    assert_eq!(cfg32(dev, 0), 0x1042_1af4);
    assert_eq!(cfg32(dev, 8) >> 8, 0x01_80_00);
    assert_eq!(cfg32(dev, 8) & 0xff, 1, "modern devices have revision >= 1");
    assert_eq!(cfg32(dev, 0x10), 0xc000_0004, "64-bit BAR 0");
    let caps = capabilities(dev);
    assert_eq!(caps[0].1, 0x11, "MSI-X first");
    let kinds: Vec<u8> = caps[1..].iter().map(|c| c.2).collect();
    assert_eq!(
        kinds,
        [
            cap::COMMON,
            cap::ISR,
            cap::DEVICE,
            cap::NOTIFY,
            cap::PCI_CFG
        ]
    );
    let notify = caps.iter().find(|c| c.2 == cap::NOTIFY).unwrap().0;
    assert_eq!(cfg32(dev, notify + 8), NOTIFY_OFFSET as u32);
    assert_eq!(cfg32(dev, notify + 16), NOTIFY_MULTIPLIER);
    // MSI-X table size: 3 vectors (2 queues + config).
    assert_eq!((cfg32(dev, caps[0].0) >> 16) & 0x7ff, 2);
}

#[test]
fn ioeventfds_follow_the_bar() {
    let mut rig = rig();
    rig.dev.bar_moved(0, Some(0xc000_0000));
    rig.dev.bar_moved(0, None);
    rig.dev.bar_moved(0, Some(0xd000_0000));
    let log = lock(&rig.ioevents.0).clone();
    assert_eq!(
        log,
        vec![
            (true, 0xc000_3000),
            (true, 0xc000_3004),
            (false, 0xc000_3000),
            (false, 0xc000_3004),
            (true, 0xd000_3000),
            (true, 0xd000_3004),
        ]
    );
}

#[test]
fn feature_negotiation_and_activation() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    w(dev, 0x00, 0, 4);
    assert_eq!(r(dev, 0x04, 4), DUMMY_FEATURES & 0xffff_ffff);
    w(dev, 0x00, 1, 4);
    assert_eq!(r(dev, 0x04, 4), DUMMY_FEATURES >> 32);
    assert_eq!(r(dev, 0x12, 2), 2, "num_queues");
    w(dev, 0x16, 1, 2);
    assert_eq!(r(dev, 0x18, 2), 16, "queue size starts at the maximum");
    assert_eq!(r(dev, 0x1e, 2), 1, "queue_notify_off");
    bring_up(dev, &[0, 1]);
    assert_eq!(r(dev, 0x14, 1) as u8 & status::DRIVER_OK, status::DRIVER_OK);
    let seen = lock(&rig.seen);
    assert_eq!(
        seen.activations,
        vec![(vec![0, 1], features::VERSION_1 | 1)]
    );
}

#[test]
fn features_without_version_1_are_refused() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    w(dev, 0x14, 3, 1);
    w(dev, 0x08, 0, 4);
    w(dev, 0x0c, 1, 4);
    w(dev, 0x14, 3 | u64::from(status::FEATURES_OK), 1);
    assert_eq!(r(dev, 0x14, 1) as u8 & status::FEATURES_OK, 0);
    // Features the device never offered are refused too.
    w(dev, 0x08, 1, 4);
    w(dev, 0x0c, 1 | 2, 4);
    w(dev, 0x14, 3 | u64::from(status::FEATURES_OK), 1);
    assert_eq!(r(dev, 0x14, 1) as u8 & status::FEATURES_OK, 0);
}

#[test]
fn a_deferred_driver_ok_activates_only_when_the_vmm_thread_carries_it_out() {
    let mut rig = rig();
    let queue = ActivationQueue::new().unwrap();
    rig.dev.defer_activation(queue.clone());
    bring_up(&mut rig.dev, &[0, 1]);
    assert_ne!(r(&mut rig.dev, 0x14, 1) as u8 & status::DRIVER_OK, 0);
    assert!(lock(&rig.seen).activations.is_empty(), "not on this thread");
    rig.dev.activate_pending();
    assert_eq!(lock(&rig.seen).activations.len(), 1);
    rig.dev.activate_pending();
    assert_eq!(lock(&rig.seen).activations.len(), 1, "once per DRIVER_OK");
    // A reset before the VMM thread gets to it cancels the request.
    w(&mut rig.dev, 0x14, 0, 1);
    bring_up(&mut rig.dev, &[0, 1]);
    w(&mut rig.dev, 0x14, 0, 1);
    rig.dev.activate_pending();
    assert_eq!(lock(&rig.seen).activations.len(), 1);
}

#[test]
fn queue_outside_memory_needs_reset() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    w(dev, 0x16, 0, 2);
    w(dev, 0x20, 0xfff0_0000, 4); // desc table far outside the 1 MiB of RAM
    w(dev, 0x1c, 1, 2);
    w(dev, 0x14, 3, 1);
    w(dev, 0x08, 1, 4);
    w(dev, 0x0c, 1, 4);
    w(dev, 0x14, 3 | u64::from(status::FEATURES_OK), 1);
    w(
        dev,
        0x14,
        3 | u64::from(status::FEATURES_OK | status::DRIVER_OK),
        1,
    );
    assert_ne!(r(dev, 0x14, 1) as u8 & status::DEVICE_NEEDS_RESET, 0);
    assert!(lock(&rig.seen).activations.is_empty());
}

#[test]
fn interrupts_go_to_the_chosen_msix_vector() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    // Enable MSI-X, unmask vectors 0..3.
    let msix_cap = capabilities(dev)[0].0;
    dev.config_write(msix_cap + 2, &0x8000u16.to_le_bytes());
    for v in 0..3u64 {
        w(dev, MSIX_TABLE_OFFSET + v * 16, 0xfee0_0000, 4);
        w(dev, MSIX_TABLE_OFFSET + v * 16 + 8, 0x40 + v, 4);
        w(dev, MSIX_TABLE_OFFSET + v * 16 + 12, 0, 4);
    }
    bring_up(dev, &[0, 1]);
    let irq = lock(&rig.seen).interrupt.clone().unwrap();
    irq.notify_queue(1);
    irq.notify_queue(1);
    irq.notify_config();
    assert_eq!(rig.vectors.fired(2), 2, "queue 1 -> vector 2");
    assert_eq!(rig.vectors.fired(0), 1, "config -> vector 0");
    // A vector beyond the table reads back NO_VECTOR.
    w(dev, 0x16, 0, 2);
    w(dev, 0x1a, 7, 2);
    assert_eq!(r(dev, 0x1a, 2), u64::from(NO_VECTOR));
}

#[test]
fn notify_writes_reach_the_queue_eventfd_and_reset_stops_the_device() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    bring_up(dev, &[0, 1]);
    w(dev, NOTIFY_OFFSET + 4, 1, 2);
    let n = lock(&rig.seen).notifiers[1].read().unwrap();
    assert_eq!(n, 1);
    // Queue setup is frozen while running.
    w(dev, 0x16, 0, 2);
    w(dev, 0x18, 4, 2);
    assert_eq!(r(dev, 0x18, 2), 8);
    w(dev, 0x14, 0, 1);
    assert_eq!(r(dev, 0x14, 1), 0);
    assert_eq!(lock(&rig.seen).resets, 1);
    assert_eq!(r(dev, 0x18, 2), 16, "queues back to defaults");
    bring_up(dev, &[0]);
    assert_eq!(
        lock(&rig.seen).activations.len(),
        2,
        "activates again after reset"
    );
}

#[test]
fn device_config_and_pci_cfg_window() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    assert_eq!(r(dev, DEVICE_OFFSET + 4, 2), 0x0504);
    w(dev, DEVICE_OFFSET + 8, 0xab, 1);
    assert_eq!(lock(&rig.seen).config_writes, vec![(8, vec![0xab])]);
    // Read the device config through VIRTIO_PCI_CAP_PCI_CFG.
    let c = capabilities(dev)
        .iter()
        .find(|c| c.2 == cap::PCI_CFG)
        .unwrap()
        .0;
    dev.config_write(c + 4, &[0]);
    dev.config_write(c + 8, &((DEVICE_OFFSET + 0x10) as u32).to_le_bytes());
    dev.config_write(c + 12, &4u32.to_le_bytes());
    assert_eq!(cfg32(dev, c + 16), 0x1312_1110);
}

#[test]
fn guest_garbage_in_the_bar_is_harmless() {
    let mut rig = rig();
    let dev = &mut rig.dev;
    for off in (0..BAR_SIZE + 16).step_by(3) {
        for len in [0usize, 1, 2, 3, 4, 8] {
            let mut b = [0xffu8; 8];
            dev.bar_read(0, off, &mut b[..len]);
            dev.bar_write(0, off, &b[..len]);
        }
    }
    for off in (0..4096u16).step_by(1) {
        let mut b = [0u8; 1];
        dev.config_read(off, &mut b);
        dev.config_write(off, &[0xff]);
    }
}
