//! vCPU threads: the KVM_RUN loop and exit dispatch.
//!
//! Each vCPU runs on its own thread. A PIO or MMIO exit is looked up on the shared
//! [`Bus`](ghost_devices::Bus) (a read-locked range map, then the one device's lock); nothing
//! else is locked on the exit path. To stop, the VMM sets [`VmControl`]'s stop flag and kicks
//! each thread with [`VCPU_KICK_SIGNAL`] until it leaves KVM_RUN.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// The VMM was asked to stop (SIGINT/SIGTERM).
    Stopped,
}

/// Shared stop/exit state of one VM: the first exit reason wins.
#[derive(Debug)]
pub struct VmControl {
    stop: AtomicBool,
    reason: Mutex<Option<VmExit>>,
    exit_evt: EventFd,
}

impl VmControl {
    /// A control block whose `exit_evt` the VMM's event loop watches.
    pub fn new(exit_evt: EventFd) -> Self {
        Self {
            stop: AtomicBool::new(false),
            reason: Mutex::new(None),
            exit_evt,
        }
    }

    /// Records `exit` (unless a reason is already recorded) and wakes the event loop.
    pub fn request_exit(&self, exit: VmExit) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(exit);
        }
        self.stop.store(true, Ordering::SeqCst);
        // If the eventfd counter is saturated the loop is already awake.
        let _ = self.exit_evt.write(1);
    }

    /// Whether vCPUs should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The recorded exit reason.
    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

/// Counts of exits to userspace, by reason (per VM, summed over vCPUs).
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port I/O exits.
    pub pio: AtomicU64,
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// KVM_RUN interrupted by a signal.
    pub intr: AtomicU64,
    /// Accesses no device claimed.
    pub unclaimed: AtomicU64,
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
        }
    }

    /// Runs until the VM stops; a fatal condition is reported through the [`VmControl`].
    pub fn run(mut self) {
        while !self.control.stopping() {
            if let Err(fatal) = self.run_once() {
                self.control.request_exit(VmExit::Fatal(fatal));
            }
        }
        if self.control.reason() == Some(VmExit::Stopped) {
            // Where a guest was when the VMM was told to stop: the first clue to a hung guest.
            log::info!("{}", self.fatal("stopped"));
        }
    }

    /// One KVM_RUN and its exit. `Err` carries the fatal message.
    fn run_once(&mut self) -> Result<(), String> {
        let counters = &self.counters;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                counters.pio.fetch_add(1, Ordering::Relaxed);
                if !self.pio.read(u64::from(port), data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                    data.fill(0xff);
                }
                Ok(())
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                counters.pio.fetch_add(1, Ordering::Relaxed);
                if !self.pio.write(u64::from(port), data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                counters.mmio.fetch_add(1, Ordering::Relaxed);
                if !self.mmio.read(addr, data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                    data.fill(0xff);
                }
                Ok(())
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                counters.mmio.fetch_add(1, Ordering::Relaxed);
                if !self.mmio.write(addr, data) {
                    counters.unclaimed.fetch_add(1, Ordering::Relaxed);
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
                Ok(())
            }
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                Err(self.fatal(&what))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                counters.intr.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fatal(&format!("KVM_RUN failed: {e}"))),
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
