//! Stopping, pausing and restarting a running VM on request from outside the guest: host
//! signals, the control API and the stop timeout.
//!
//! A stop is graceful first. SIGTERM, SIGINT, SIGHUP, SIGRTMIN+4 (`machinectl poweroff`) and
//! the API's `shutdown` press the guest's ACPI power button (the GED notifies `PWRB`; logind
//! powers the guest off) and give it `vm.stop_timeout`. The VM is stopped hard when that runs
//! out, on a second signal, on the API's `stop`, or at once when the timeout is `0s`. A guest
//! that powers off ends the run with exit status 0; a hard stop ends it with
//! [`VmExit::Stopped`] and one log line saying why.
//!
//! [`RunControl`] lives for the whole `ghost-vmm run` (across guest reboots) and is what the
//! control API and the signal handler talk to; each boot's [`Lifecycle`] is the event-loop
//! subscriber that carries the requests out on that boot's devices and vCPUs.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_bindings::kvm_clock_data;
use kvm_ioctls::VmFd;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::notify;
use crate::platform::PowerButton;
use crate::vcpu::{ExitCounters, VmControl, VmExit};

/// Write end of the stop-signal eventfd, for the signal handler.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// The last stop signal received, for the log line.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signo: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    LAST_SIGNAL.store(signo, Ordering::SeqCst);
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid u64.
        unsafe {
            libc::write(fd, (&one as *const u64).cast(), 8);
        }
    }
}

/// The signals that ask for a stop: what `systemctl stop` (SIGTERM), Ctrl-C (SIGINT), a
/// closed terminal (SIGHUP) and `machinectl poweroff` (SIGRTMIN+4) send.
pub(crate) fn stop_signals() -> [libc::c_int; 4] {
    [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGRTMIN() + 4,
    ]
}

fn signal_name(signo: libc::c_int) -> String {
    match signo {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n if n >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", n - libc::SIGRTMIN()),
        n => format!("signal {n}"),
    }
}

/// What the VM is doing, as the control API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Booting or running.
    Running,
    /// vCPUs parked outside KVM_RUN.
    Paused,
    /// The power button was pressed; waiting for the guest to power off.
    ShuttingDown,
    /// Being stopped (hard, or after the guest powered off).
    Stopping,
}

/// A request to the running VM from outside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Press the power button; stop hard after `stop_timeout`.
    Shutdown,
    /// Stop hard now.
    Stop,
    /// Reset the guest (like the reset button) and boot it again.
    Reboot,
    /// Park the vCPUs.
    Pause,
    /// Let them run again.
    Resume,
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The VM is not in a state where the request makes sense (pause while paused, ...).
    #[error("{0}")]
    Conflict(String),
    /// The VM could not carry it out.
    #[error("{0}")]
    Failed(String),
}

type Reply = Sender<Result<(), Refusal>>;

/// The run-level side of the lifecycle: shared with the signal handler and the control API,
/// kept across guest reboots.
#[derive(Debug)]
pub struct RunControl {
    signal_evt: EventFd,
    request_evt: EventFd,
    requests: Mutex<Vec<(Request, Option<Reply>)>>,
    state: Mutex<RunState>,
    /// The current boot's start and exit counters (for the API's uptime and counters).
    boot: Mutex<Option<(Instant, Arc<ExitCounters>)>>,
    /// The next guest reset restarts the VM even with `on_reboot = "exit"` (an API reboot).
    restart_on_reset: AtomicBool,
    /// READY=1 has been sent to systemd.
    ready_sent: AtomicBool,
    started: Instant,
}

/// How long an API request waits for the VM's event loop to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl RunControl {
    /// A run control with the stop signals routed to it. Only one may exist at a time
    /// (the signal handler has one target); [`Drop`] unroutes them.
    pub fn install() -> std::io::Result<Arc<Self>> {
        let run = Arc::new(Self {
            signal_evt: EventFd::new(EFD_NONBLOCK)?,
            request_evt: EventFd::new(EFD_NONBLOCK)?,
            requests: Mutex::new(Vec::new()),
            state: Mutex::new(RunState::Running),
            boot: Mutex::new(None),
            restart_on_reset: AtomicBool::new(false),
            ready_sent: AtomicBool::new(false),
            started: Instant::now(),
        });
        SIGNAL_FD.store(run.signal_evt.as_raw_fd(), Ordering::SeqCst);
        for sig in stop_signals() {
            vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(run)
    }

    /// Posts `request` to the VM and waits for its answer.
    pub fn request(&self, request: Request) -> Result<(), Refusal> {
        let rx = self.post(request);
        match rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(result) => result,
            Err(_) => Err(Refusal::Failed(
                "the VM did not answer (it may be stopping)".into(),
            )),
        }
    }

    fn post(&self, request: Request) -> Receiver<Result<(), Refusal>> {
        let (tx, rx) = mpsc::channel();
        lock(&self.requests).push((request, Some(tx)));
        let _ = self.request_evt.write(1);
        rx
    }

    /// What the VM is doing.
    pub fn state(&self) -> RunState {
        *lock(&self.state)
    }

    fn set_state(&self, state: RunState) {
        *lock(&self.state) = state;
    }

    /// Time since `ghost-vmm run` started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The current boot's exit counters, if a boot is running.
    pub fn counters(&self) -> Option<Arc<ExitCounters>> {
        lock(&self.boot).as_ref().map(|(_, c)| c.clone())
    }

    /// Records that a boot started with these counters.
    pub(crate) fn boot_started(&self, counters: Arc<ExitCounters>) {
        *lock(&self.boot) = Some((Instant::now(), counters));
        if !self.ready_sent.swap(true, Ordering::SeqCst) {
            notify::ready();
        }
    }

    /// Whether a guest reset must restart the VM whatever `on_reboot` says (an API reboot);
    /// clears the flag.
    pub(crate) fn take_restart(&self) -> bool {
        self.restart_on_reset.swap(false, Ordering::SeqCst)
    }

    /// Whether a stop is under way (the guest must not be booted again).
    pub(crate) fn stopping(&self) -> bool {
        matches!(self.state(), RunState::ShuttingDown | RunState::Stopping)
    }

    /// Answers every request still queued with a refusal (the VM is gone).
    pub(crate) fn refuse_pending(&self, why: &str) {
        for (_, reply) in lock(&self.requests).drain(..) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Refusal::Conflict(why.to_owned())));
            }
        }
    }
}

impl Drop for RunControl {
    /// The stop signals get their default action back: once the VM is gone (its teardown
    /// may still be giving devices back), a SIGTERM or Ctrl-C ends the process again.
    fn drop(&mut self) {
        SIGNAL_FD.store(-1, Ordering::SeqCst);
        for sig in stop_signals() {
            // SAFETY: resetting a signal's disposition to SIG_DFL touches no memory of ours.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kicks vCPU threads out of KVM_RUN (a real-time signal whose handler does nothing).
#[derive(Debug, Default)]
pub(crate) struct VcpuKicker {
    threads: Mutex<Vec<libc::pthread_t>>,
    signal: libc::c_int,
}

impl VcpuKicker {
    pub(crate) fn new(signal: libc::c_int) -> Self {
        Self {
            threads: Mutex::new(Vec::new()),
            signal,
        }
    }

    /// Adds a running vCPU thread. It must not be joined before this kicker is dropped.
    pub(crate) fn add(&self, thread: libc::pthread_t) {
        lock(&self.threads).push(thread);
    }

    fn kick_all(&self) {
        for &t in lock(&self.threads).iter() {
            // SAFETY: `t` is a live thread of this process (joined only after the VM's event
            // loop, which owns this kicker, has ended); the signal's handler is a no-op.
            unsafe {
                libc::pthread_kill(t, self.signal);
            }
        }
    }

    fn count(&self) -> usize {
        lock(&self.threads).len()
    }
}

/// How long a pause waits for every vCPU to leave KVM_RUN.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// While the guest is shutting down: how often the timer checks the deadline and tells
/// systemd that the stop is still progressing.
const SHUTDOWN_TICK: Duration = Duration::from_secs(5);
/// What systemd is told to allow beyond the guest's deadline: the hard stop, the disk
/// flush and the release of host devices.
const TEARDOWN_ALLOWANCE: Duration = Duration::from_secs(30);

/// One boot's lifecycle: the event-loop subscriber that presses the power button, runs the
/// stop timeout and pauses the vCPUs.
pub(crate) struct Lifecycle {
    run: Arc<RunControl>,
    control: Arc<VmControl>,
    power_button: Arc<dyn PowerButton>,
    vm_fd: Arc<VmFd>,
    kicker: Arc<VcpuKicker>,
    stop_timeout: Duration,
    timer: TimerFd,
    deadline: Option<Instant>,
    /// kvmclock at the moment of the pause, restored on resume.
    paused_clock: Option<kvm_clock_data>,
    name: String,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("name", &self.name)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// What [`Lifecycle::new`] needs from the boot.
pub(crate) struct BootHandles {
    pub control: Arc<VmControl>,
    /// The platform's power button (the GED's, or the PM block's fixed-feature one).
    pub power_button: Arc<dyn PowerButton>,
    pub vm_fd: Arc<VmFd>,
    pub kicker: Arc<VcpuKicker>,
}

impl Lifecycle {
    pub(crate) fn new(
        run: Arc<RunControl>,
        boot: BootHandles,
        stop_timeout: Duration,
        name: String,
    ) -> std::io::Result<Self> {
        Ok(Self {
            run,
            control: boot.control,
            power_button: boot.power_button,
            vm_fd: boot.vm_fd,
            kicker: boot.kicker,
            stop_timeout,
            timer: TimerFd::new()?,
            deadline: None,
            paused_clock: None,
            name,
        })
    }

    /// A stop signal arrived: the first presses the button, a second stops hard.
    fn on_signal(&mut self) {
        let signal = signal_name(LAST_SIGNAL.load(Ordering::SeqCst));
        match self.run.state() {
            RunState::ShuttingDown => {
                self.stop_hard(format!("a second stop signal ({signal}) arrived"));
            }
            RunState::Stopping => {}
            RunState::Running | RunState::Paused => {
                let _ = self.shutdown(&signal);
            }
        }
    }

    fn handle(&mut self, request: Request) -> Result<(), Refusal> {
        match request {
            Request::Shutdown => self.shutdown("the control API's shutdown"),
            Request::Stop => {
                if self.run.state() != RunState::Stopping {
                    self.stop_hard("the control API asked for a stop".into());
                }
                Ok(())
            }
            Request::Reboot => self.reboot(),
            Request::Pause => self.pause(),
            Request::Resume => self.resume(),
        }
    }

    /// Presses the power button and starts the stop timeout (`why` names who asked).
    fn shutdown(&mut self, why: &str) -> Result<(), Refusal> {
        match self.run.state() {
            RunState::ShuttingDown => return Ok(()),
            RunState::Stopping => return Err(Refusal::Conflict("the VM is stopping".into())),
            RunState::Paused => self.resume()?,
            RunState::Running => {}
        }
        if self.stop_timeout.is_zero() {
            self.stop_hard(format!("{why} with stop_timeout = \"0s\""));
            return Ok(());
        }
        notify::stopping();
        notify::extend_timeout(self.stop_timeout + TEARDOWN_ALLOWANCE);
        let pressed = self.power_button.press();
        if let Err(e) = pressed {
            self.stop_hard(format!(
                "{why}, but the power button cannot be pressed: {e}"
            ));
            return Ok(());
        }
        self.run.set_state(RunState::ShuttingDown);
        self.deadline = Some(Instant::now() + self.stop_timeout);
        if let Err(e) = self.timer.reset(SHUTDOWN_TICK.min(self.stop_timeout), None) {
            self.stop_hard(format!("{why}, but the stop timer cannot be armed: {e}"));
            return Ok(());
        }
        log::warn!(
            "{}: {why}: pressed the power button; the guest has {} to power off",
            self.name,
            humantime(self.stop_timeout)
        );
        Ok(())
    }

    fn on_timer(&mut self) {
        let _ = self.timer.wait();
        let Some(deadline) = self.deadline else {
            return;
        };
        let now = Instant::now();
        if now >= deadline {
            self.stop_hard(format!(
                "the guest did not power off within stop_timeout ({}) of the power button",
                humantime(self.stop_timeout)
            ));
            return;
        }
        let left = deadline - now;
        notify::extend_timeout(left + TEARDOWN_ALLOWANCE);
        if let Err(e) = self.timer.reset(SHUTDOWN_TICK.min(left), None) {
            self.stop_hard(format!("the stop timer cannot be re-armed: {e}"));
        }
    }

    /// Stops the VM now; the run ends with [`VmExit::Stopped`] and `why` in its log line.
    fn stop_hard(&mut self, why: String) {
        if self.run.state() != RunState::ShuttingDown {
            notify::stopping();
        }
        self.run.set_state(RunState::Stopping);
        self.deadline = None;
        log::warn!("{}: stopping the VM hard: {why}", self.name);
        self.control.request_exit(VmExit::Stopped(why));
    }

    fn reboot(&mut self) -> Result<(), Refusal> {
        match self.run.state() {
            RunState::ShuttingDown | RunState::Stopping => {
                return Err(Refusal::Conflict("the VM is stopping".into()))
            }
            RunState::Paused => self.resume()?,
            RunState::Running => {}
        }
        log::warn!("{}: the control API reset the guest", self.name);
        self.run.restart_on_reset.store(true, Ordering::SeqCst);
        self.control.request_exit(VmExit::Reset);
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Refusal> {
        match self.run.state() {
            RunState::Running => {}
            RunState::Paused => return Err(Refusal::Conflict("the VM is already paused".into())),
            _ => return Err(Refusal::Conflict("the VM is stopping".into())),
        }
        self.control.request_pause();
        let started = Instant::now();
        let vcpus = self.kicker.count();
        loop {
            self.kicker.kick_all();
            if self.control.wait_parked(vcpus, Duration::from_millis(2)) {
                break;
            }
            if self.control.stopping() || started.elapsed() > PAUSE_TIMEOUT {
                self.control.resume();
                return Err(Refusal::Failed(format!(
                    "the vCPUs did not stop within {}",
                    humantime(PAUSE_TIMEOUT)
                )));
            }
        }
        // Freeze the guest's clock: kvmclock is put back to this value on resume, so the
        // guest sees no time pass while it was paused.
        self.paused_clock = match self.vm_fd.get_clock() {
            Ok(mut clock) => {
                // Flags (e.g. KVM_CLOCK_REALTIME) would make KVM_SET_CLOCK advance it again.
                clock.flags = 0;
                Some(clock)
            }
            Err(e) => {
                log::warn!("{}: cannot read the guest clock: {e}", self.name);
                None
            }
        };
        self.run.set_state(RunState::Paused);
        log::warn!(
            "{}: paused ({vcpus} vCPUs parked in {:.1} ms)",
            self.name,
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Refusal> {
        if self.run.state() != RunState::Paused {
            return Err(Refusal::Conflict("the VM is not paused".into()));
        }
        if let Some(clock) = self.paused_clock.take() {
            if let Err(e) = self.vm_fd.set_clock(&clock) {
                log::warn!("{}: cannot restore the guest clock: {e}", self.name);
            }
        }
        self.run.set_state(RunState::Running);
        self.control.resume();
        log::warn!("{}: resumed", self.name);
        Ok(())
    }
}

impl MutEventSubscriber for Lifecycle {
    fn init(&mut self, ops: &mut EventOps) {
        let watched = [
            ops.add(Events::new(&self.run.signal_evt, EventSet::IN)),
            ops.add(Events::new(&self.run.request_evt, EventSet::IN)),
            ops.add(Events::new(&self.timer, EventSet::IN)),
        ];
        for result in watched {
            if let Err(e) = result {
                log::error!("{}: cannot watch lifecycle events: {e:?}", self.name);
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.run.signal_evt.as_raw_fd() {
            let n = self.run.signal_evt.read().unwrap_or(0);
            for _ in 0..n.min(2) {
                self.on_signal();
            }
        } else if fd == self.run.request_evt.as_raw_fd() {
            let _ = self.run.request_evt.read();
            let pending: Vec<_> = lock(&self.run.requests).drain(..).collect();
            for (request, reply) in pending {
                let result = self.handle(request);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        } else if fd == self.timer.as_raw_fd() {
            self.on_timer();
        }
    }
}

/// `90s`, `1.5s`, `250ms`.
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
