//! vCPU threads: the KVM_RUN loop and exit dispatch.
//!
//! Each vCPU runs on its own thread. A PIO or MMIO exit is looked up on the shared
//! [`Bus`](ghost_devices::Bus) (a read-locked range map, then the one device's lock); nothing
//! else is locked on the exit path. To stop, the VMM sets [`VmControl`]'s stop flag and kicks
//! each thread with [`VCPU_KICK_SIGNAL`] until it leaves KVM_RUN.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ghost_devices::power::{PowerAction, PowerHandler};
use ghost_devices::Bus;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
    /// A fatal vCPU condition (triple fault, KVM internal error, failed entry).
    Fatal(String),
    /// The guest's firmware needs what ghost-vmm does not provide (an SMM build of OVMF): a
    /// problem with the file the VM file names, said in one line naming its key.
    Unsupported(String),
    /// The VMM stopped the VM hard (the guest did not power off in time, a second stop
    /// signal, the control API's `stop`); the text says why.
    Stopped(String),
}

/// Shared stop/exit and pause state of one VM: the first exit reason wins.
#[derive(Debug)]
pub struct VmControl {
    stop: AtomicBool,
    reason: Mutex<Option<VmExit>>,
    exit_evt: EventFd,
    /// Whether vCPUs must park outside KVM_RUN.
    pause: AtomicBool,
    /// How many vCPU threads are parked; guarded with `unparked`.
    parked: Mutex<usize>,
    /// Signalled when `parked` changes, on resume and on stop.
    unparked: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VmControl {
    /// A control block whose `exit_evt` the VMM's event loop watches.
    pub fn new(exit_evt: EventFd) -> Self {
        Self {
            stop: AtomicBool::new(false),
            reason: Mutex::new(None),
            exit_evt,
            pause: AtomicBool::new(false),
            parked: Mutex::new(0),
            unparked: Condvar::new(),
        }
    }

    /// Records `exit` (unless a reason is already recorded) and wakes the event loop and any
    /// parked vCPU.
    pub fn request_exit(&self, exit: VmExit) {
        let mut reason = lock(&self.reason);
        if reason.is_none() {
            *reason = Some(exit);
        }
        self.stop.store(true, Ordering::SeqCst);
        drop(reason);
        // Taking the lock orders the store before a parked vCPU's re-check.
        drop(lock(&self.parked));
        self.unparked.notify_all();
        // If the eventfd counter is saturated the loop is already awake.
        let _ = self.exit_evt.write(1);
    }

    /// Asks every vCPU to park outside KVM_RUN at its next exit (the VMM kicks them out of
    /// KVM_RUN and waits with [`wait_parked`](Self::wait_parked)).
    pub fn request_pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let guard = lock(&self.parked);
        self.pause.store(false, Ordering::SeqCst);
        drop(guard);
        self.unparked.notify_all();
    }

    /// Whether vCPUs are asked to park.
    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` until `count` vCPUs are parked; `false` if they were not.
    pub fn wait_parked(&self, count: usize, timeout: std::time::Duration) -> bool {
        let guard = lock(&self.parked);
        let (guard, _) = self
            .unparked
            .wait_timeout_while(guard, timeout, |parked| *parked < count && !self.stopping())
            .unwrap_or_else(|e| e.into_inner());
        *guard >= count
    }

    /// Called by a vCPU thread outside KVM_RUN: blocks while a pause is requested and the VM
    /// is not stopping. Returns whether it parked at all.
    fn park(&self) -> bool {
        let mut parked = lock(&self.parked);
        if !self.pause_requested() || self.stopping() {
            return false;
        }
        *parked += 1;
        self.unparked.notify_all();
        while self.pause_requested() && !self.stopping() {
            parked = self
                .unparked
                .wait(parked)
                .unwrap_or_else(|e| e.into_inner());
        }
        *parked -= 1;
        true
    }

    /// Whether vCPUs should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The recorded exit reason.
    pub fn reason(&self) -> Option<VmExit> {
        lock(&self.reason).clone()
    }

    /// The eventfd written on every exit request.
    pub fn exit_evt(&self) -> &EventFd {
        &self.exit_evt
    }
}

/// Forwards guest power actions from devices to the [`VmControl`].
#[derive(Debug, Clone)]
pub struct PowerToControl(pub Arc<VmControl>);

impl PowerHandler for PowerToControl {
    fn power_action(&self, action: PowerAction) {
        log::debug!("guest power action: {action:?}");
        self.0.request_exit(match action {
            PowerAction::PowerOff => VmExit::PowerOff,
            PowerAction::Reset => VmExit::Reset,
        });
    }
}

/// Running totals of exits by reason (per VM, shared by its vCPUs, one relaxed atomic add
/// per exit): what the boot timer reports at each guest milestone and the control API's
/// `GET /vm` shows while the VM runs. The breakdown by port and page is each vCPU's
/// [`ExitStats`].
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// `in` instructions.
    pub pio_in: AtomicU64,
    /// `out` instructions.
    pub pio_out: AtomicU64,
    /// MMIO reads.
    pub mmio_read: AtomicU64,
    /// MMIO writes.
    pub mmio_write: AtomicU64,
    /// KVM_RUN interrupted (a kick or another signal).
    pub intr: AtomicU64,
    /// PIO or MMIO accesses no device claimed.
    pub unclaimed: AtomicU64,
}

impl ExitCounters {
    /// Port I/O exits so far.
    pub fn pio(&self) -> u64 {
        self.pio_in.load(Ordering::Relaxed) + self.pio_out.load(Ordering::Relaxed)
    }

    /// MMIO exits so far.
    pub fn mmio(&self) -> u64 {
        self.mmio_read.load(Ordering::Relaxed) + self.mmio_write.load(Ordering::Relaxed)
    }
}

/// One vCPU's exits to userspace by reason and by address, kept by its thread without locks
/// and summed over vCPUs when the VM stops (`ghost-vmm run --exit-stats`). Counting where a
/// guest exits is how a slow boot or a slow device path is found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExitStats {
    /// `in` instructions.
    pub pio_in: u64,
    /// `out` instructions.
    pub pio_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// KVM_RUN interrupted (a kick or another signal).
    pub intr: u64,
    /// PIO or MMIO accesses no device claimed.
    pub unclaimed: u64,
    /// PIO exits per port.
    pub by_port: BTreeMap<u16, u64>,
    /// MMIO exits per 4 KiB guest-physical page.
    pub by_mmio_page: BTreeMap<u64, u64>,
}

impl ExitStats {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ExitStats) {
        self.pio_in += other.pio_in;
        self.pio_out += other.pio_out;
        self.mmio_read += other.mmio_read;
        self.mmio_write += other.mmio_write;
        self.intr += other.intr;
        self.unclaimed += other.unclaimed;
        for (port, n) in &other.by_port {
            *self.by_port.entry(*port).or_default() += n;
        }
        for (page, n) in &other.by_mmio_page {
            *self.by_mmio_page.entry(*page).or_default() += n;
        }
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.pio_in + self.pio_out + self.mmio_read + self.mmio_write + self.intr
    }

    /// A few lines for a person: totals by reason, then the `top` busiest ports and pages.
    pub fn report(&self, top: usize) -> String {
        let mut out = format!(
            "exits {} (pio in {}, pio out {}, mmio read {}, mmio write {}, interrupted {}, unclaimed {})",
            self.total(),
            self.pio_in,
            self.pio_out,
            self.mmio_read,
            self.mmio_write,
            self.intr,
            self.unclaimed
        );
        let busiest = |map: &mut dyn Iterator<Item = (u64, u64)>| {
            let mut v: Vec<(u64, u64)> = map.collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(top);
            v
        };
        let ports = busiest(&mut self.by_port.iter().map(|(p, n)| (u64::from(*p), *n)));
        if !ports.is_empty() {
            out.push_str("\n  busiest ports:");
            for (port, n) in ports {
                let _ = write!(out, " {port:#x}={n}");
            }
        }
        let pages = busiest(&mut self.by_mmio_page.iter().map(|(p, n)| (*p, *n)));
        if !pages.is_empty() {
            out.push_str("\n  busiest MMIO pages:");
            for (page, n) in pages {
                let _ = write!(out, " {page:#x}={n}");
            }
        }
        out
    }

    fn pio(&mut self, port: u16) {
        *self.by_port.entry(port).or_default() += 1;
    }

    fn mmio(&mut self, addr: u64) {
        *self.by_mmio_page.entry(addr & !0xfff).or_default() += 1;
    }
}

/// The signal used to kick a vCPU thread out of KVM_RUN.
pub fn vcpu_kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Installs the no-op handler for [`vcpu_kick_signal`] (its only job is to make KVM_RUN
/// return `EINTR`). Call once per process before starting vCPUs.
pub fn install_kick_handler() -> std::io::Result<()> {
    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(vcpu_kick_signal(), noop)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// One vCPU and what its exits reach.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    control: Arc<VmControl>,
    counters: Arc<ExitCounters>,
    stats: ExitStats,
    /// An OUT exit's bytes, copied out of the exit (see [`Vcpu::run_once`]).
    out: Vec<u8>,
}

impl std::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcpu").field("index", &self.index).finish()
    }
}

impl Vcpu {
    /// Wraps a configured vCPU.
    pub fn new(
        index: u8,
        fd: VcpuFd,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        control: Arc<VmControl>,
        counters: Arc<ExitCounters>,
    ) -> Self {
        Self {
            index,
            fd,
            pio,
            mmio,
            control,
            counters,
            stats: ExitStats::default(),
            out: vec![0; PIO_DATA_MAX],
        }
    }

    /// Stops the VM with `msg` before this vCPU ran (its thread could not be set up).
    pub(crate) fn fail(&self, msg: String) {
        self.control.request_exit(VmExit::Fatal(msg));
    }

    /// Runs until the VM stops; a fatal condition is reported through the [`VmControl`].
    /// Returns this vCPU's exit statistics.
    pub fn run(mut self) -> ExitStats {
        while !self.control.stopping() {
            if self.control.pause_requested() {
                if self.control.park() {
                    // Tell the guest it was stopped, so its soft-lockup watchdog does not
                    // count the pause (KVM_KVMCLOCK_CTRL; fails harmlessly without kvmclock).
                    let _ = self.fd.kvmclock_ctrl();
                }
                continue;
            }
            if let Err(fatal) = self.run_once() {
                self.control.request_exit(VmExit::Fatal(fatal));
            }
        }
        if matches!(self.control.reason(), Some(VmExit::Stopped(_))) {
            // Where a guest was when the VMM was told to stop: the first clue to a hung guest.
            log::info!("{}", self.fatal("stopped"));
        }
        self.stats
    }

    /// One KVM_RUN and its exit. `Err` carries the fatal message.
    fn run_once(&mut self) -> Result<(), String> {
        let mut exit = self.fd.run();
        // Port I/O: `data` holds `count` accesses of `size` bytes each (string I/O, `rep
        // insb` and the like, has count > 1), which KVM's exit header says; each goes to the
        // port on its own, as on hardware. The header is read once the exit's borrow of the
        // vCPU has ended: an IN's data area is kept as a pointer, an OUT's bytes are copied
        // (KVM puts at most one page of them in the exit).
        let io = match &mut exit {
            Ok(VcpuExit::IoIn(port, data)) => Some((*port, data.as_mut_ptr(), data.len())),
            Ok(VcpuExit::IoOut(port, data)) => {
                let n = data.len().min(PIO_DATA_MAX);
                self.out[..n].copy_from_slice(&data[..n]);
                Some((*port, std::ptr::null_mut(), n))
            }
            _ => None,
        };
        if let Some((port, in_data, len)) = io {
            drop(exit);
            // SAFETY: KVM_EXIT_IO: the `io` member of the exit union is the one KVM filled.
            let size = usize::from(unsafe { self.fd.get_kvm_run().__bindgen_anon_1.io.size });
            if in_data.is_null() {
                // Taken out for the call (an empty Vec allocates nothing) and put back.
                let mut out = std::mem::take(&mut self.out);
                self.port_io(false, port, size, &mut out[..len]);
                self.out = out;
            } else {
                // SAFETY: `in_data`/`len` are the data area of this vCPU's kvm_run mapping,
                // taken from the exit's mutable slice; the mapping lives as long as the fd,
                // the exit that lent it is gone, and nothing else refers to it until the next
                // KVM_RUN.
                let data = unsafe { std::slice::from_raw_parts_mut(in_data, len) };
                self.port_io(true, port, size, data);
            }
            return Ok(());
        }
        let counters = &self.counters;
        let stats = &mut self.stats;
        match exit {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                counters.mmio_read.fetch_add(1, Ordering::Relaxed);
                stats.mmio_read += 1;
                stats.mmio(addr);
                if !self.mmio.read(addr, data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                    stats.unclaimed += 1;
                    data.fill(0xff);
                }
                Ok(())
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                counters.mmio_write.fetch_add(1, Ordering::Relaxed);
                stats.mmio_write += 1;
                stats.mmio(addr);
                if !self.mmio.write(addr, data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                    stats.unclaimed += 1;
                }
                Ok(())
            }
            // Only without an in-kernel LAPIC does HLT reach us: nothing can wake the vCPU.
            Ok(VcpuExit::Hlt) => {
                self.control.request_exit(VmExit::PowerOff);
                Ok(())
            }
            Ok(VcpuExit::Shutdown) => Err(self.fatal("triple fault (KVM_EXIT_SHUTDOWN)")),
            Ok(VcpuExit::InternalError) => {
                let suberror = self.fd.get_kvm_run().__bindgen_anon_1;
                // SAFETY: KVM filled the `internal` member for KVM_EXIT_INTERNAL_ERROR.
                let sub = unsafe { suberror.internal.suberror };
                Err(self.fatal(&format!("KVM internal error (suberror {sub})")))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Err(self.fatal(&format!(
                "KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                        self.control.request_exit(VmExit::Reset)
                    }
                    _ => self.control.request_exit(VmExit::PowerOff),
                }
                Ok(())
            }
            Ok(VcpuExit::Intr) => {
                counters.intr.fetch_add(1, Ordering::Relaxed);
                stats.intr += 1;
                Ok(())
            }
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                Err(self.fatal(&what))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                counters.intr.fetch_add(1, Ordering::Relaxed);
                stats.intr += 1;
                Ok(())
            }
            Err(e) => Err(self.fatal(&format!("KVM_RUN failed: {e}"))),
        }
    }

    /// One port I/O exit: `data` as accesses of `size` bytes (1, 2 or 4; anything else, or a
    /// length that is not a multiple of it, is taken as one access), each dispatched to the
    /// port bus; an unclaimed read reads all ones.
    fn port_io(&mut self, is_in: bool, port: u16, size: usize, data: &mut [u8]) {
        let (counter, stat) = if is_in {
            (&self.counters.pio_in, &mut self.stats.pio_in)
        } else {
            (&self.counters.pio_out, &mut self.stats.pio_out)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *stat += 1;
        self.stats.pio(port);
        if !dispatch_port_io(&self.pio, is_in, port, size, data) {
            self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
            self.stats.unclaimed += 1;
        }
    }

    /// A one-line fatal message with the vCPU's registers.
    fn fatal(&self, what: &str) -> String {
        let regs = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                r.rip, r.rsp, r.rflags, r.rax, s.cs.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        };
        format!("vCPU {}: {what}: {regs}", self.index)
    }
}

/// The most data bytes one port I/O exit carries: KVM's PIO data area is one page.
const PIO_DATA_MAX: usize = 4096;

/// Dispatches one port I/O exit's `data` to `bus` as accesses of `size` bytes each (string
/// I/O: `rep insb` and the like put `count` accesses in one exit); a `size` other than 1, 2
/// or 4, or one `data` is not a multiple of, makes it one access. An unclaimed read reads all
/// ones. Returns false when any access was unclaimed.
fn dispatch_port_io(bus: &Bus, is_in: bool, port: u16, size: usize, data: &mut [u8]) -> bool {
    let size = if matches!(size, 1 | 2 | 4) && data.chunks_exact(size).remainder().is_empty() {
        size
    } else {
        data.len().max(1)
    };
    let mut all_claimed = true;
    for access in data.chunks_mut(size) {
        let claimed = if is_in {
            bus.read(u64::from(port), access)
        } else {
            bus.write(u64::from(port), access)
        };
        if !claimed {
            all_claimed = false;
            if is_in {
                access.fill(0xff);
            }
        }
    }
    all_claimed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-port device that hands out 1, 2, 3, ... and records what is written.
    #[derive(Default)]
    struct Fifo {
        next: u8,
        written: Vec<Vec<u8>>,
    }

    impl ghost_devices::BusDevice for Fifo {
        fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
            for b in data {
                self.next += 1;
                *b = self.next;
            }
        }
        fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
            self.written.push(data.to_vec());
        }
    }

    #[test]
    fn string_port_io_is_one_access_per_element() {
        let bus = Bus::new();
        let fifo = Arc::new(Mutex::new(Fifo::default()));
        bus.insert(fifo.clone(), 0x511, 1).expect("insert");
        // `rep insb` of 4: four 1-byte reads of the one port.
        let mut data = [0u8; 4];
        assert!(dispatch_port_io(&bus, true, 0x511, 1, &mut data));
        assert_eq!(data, [1, 2, 3, 4]);
        // `rep outsb` of 3: three writes.
        let mut out = *b"abc";
        assert!(dispatch_port_io(&bus, false, 0x511, 1, &mut out));
        assert_eq!(
            lock(&fifo).written,
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        // A word access to a one-byte port is unclaimed and reads all ones.
        let mut word = [0u8; 4];
        assert!(!dispatch_port_io(&bus, true, 0x511, 2, &mut word));
        assert_eq!(word, [0xff; 4]);
        // A size KVM would never give is one access (here unclaimed), never a panic.
        let mut odd = [0u8; 3];
        assert!(!dispatch_port_io(&bus, true, 0x511, 2, &mut odd));
        assert!(
            dispatch_port_io(&bus, true, 0x511, 0, &mut []),
            "nothing to do"
        );
    }

    #[test]
    fn exit_stats_merge_and_name_the_busiest_ports_and_pages() {
        let mut a = ExitStats::default();
        for _ in 0..5 {
            a.pio_out += 1;
            a.pio(0x3f8);
        }
        a.pio_in += 1;
        a.pio(0x3fd);
        let mut b = ExitStats::default();
        for addr in [0xc000_0004, 0xc000_0ffc, 0xc000_1000] {
            b.mmio_write += 1;
            b.mmio(addr);
        }
        b.pio_out += 2;
        b.pio(0x3fd);
        b.pio(0x3fd);
        b.intr = 4;
        a.merge(&b);
        assert_eq!(a.total(), 5 + 1 + 3 + 2 + 4);
        assert_eq!(a.by_port.get(&0x3fd), Some(&3));
        assert_eq!(a.by_mmio_page.get(&0xc000_0000), Some(&2));
        let report = a.report(1);
        assert!(report.starts_with("exits 15 (pio in 1, pio out 7, mmio read 0, mmio write 3, interrupted 4, unclaimed 0)"), "{report}");
        assert!(report.contains("busiest ports: 0x3f8=5\n"), "{report}");
        assert!(
            report.ends_with("busiest MMIO pages: 0xc0000000=2"),
            "{report}"
        );
    }
}
