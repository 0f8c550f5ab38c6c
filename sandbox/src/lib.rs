//! ghost-sandbox: what a ghost-vmm process may still do once its VM is set up.
//!
//! A guest that breaks a device model (a virtqueue parser, config space, an MMIO handler)
//! runs code in the thread that parsed its data. Confinement makes that worth little:
//! - **seccomp-bpf per thread kind** ([`ThreadKind`], [`seccomp`]): each thread allows only
//!   the system calls it makes, with argument filters for `ioctl` numbers, `fcntl` commands,
//!   `mmap`/`mprotect` protections (never executable) and socket families. A thread confines
//!   itself with [`confine_thread`] before it touches guest data; the threads it starts
//!   inherit its filter and narrow it with their own (seccomp filters only stack).
//! - A violation ends the process: the filter traps (`SIGSYS`), the handler writes one line
//!   naming the thread and the system call to stderr, then makes the one call every thread's
//!   "kill switch" filter answers with `SECCOMP_RET_KILL_PROCESS`. The process dies of
//!   `SIGSYS` (exit status 159 in a shell, `status=31/SYS` under systemd), without cleanup: a
//!   compromised process does not get to run its exit path.
//! - **landlock** ([`files`]): after setup, only the VM's own files can be opened.
//! - [`process`]: `no_new_privs`, the dumpable flag, what the host supports.
//!
//! Nothing here is on by default in a library: [`enable`] turns confinement on for the
//! process (the VMM does, unless `sandbox = false`); until then [`confine_thread`] does
//! nothing, so unit tests and tools that reuse the device models run unconfined.

#![warn(missing_docs)]

use std::cell::Cell;
use std::sync::OnceLock;

pub mod files;
pub mod privileges;
pub mod process;
pub mod seccomp;
mod sigsys;

pub use seccomp::SeccompFilters;

/// The kinds of thread a ghost-vmm process runs, each with its own seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: builds each boot's VM, runs the device event loop (console, RTC,
    /// lifecycle, virtio activation), starts the other threads, tears down.
    Vmm,
    /// A vCPU thread: `KVM_RUN` and the exits it dispatches to device models.
    Vcpu,
    /// A virtio-blk worker: the queue, io_uring or `preadv`/`pwritev`, `fdatasync`.
    BlockWorker,
    /// A virtio-net worker: the queues and the TAP.
    NetWorker,
    /// The control API thread: one Unix-socket connection at a time.
    Api,
}

impl ThreadKind {
    /// Every kind, in table order.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vmm,
        ThreadKind::Vcpu,
        ThreadKind::BlockWorker,
        ThreadKind::NetWorker,
        ThreadKind::Api,
    ];

    /// The kind's name in messages: `vmm`, `vcpu`, `virtio-blk`, `virtio-net`, `api`.
    pub const fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::BlockWorker => "virtio-blk",
            ThreadKind::NetWorker => "virtio-net",
            ThreadKind::Api => "api",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why confinement could not be set up or entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A filter table did not compile (a bug in this crate).
    #[error("the seccomp filter of the {kind} thread does not compile: {source}")]
    Compile {
        /// Whose filter.
        kind: &'static str,
        /// What seccompiler said.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused a filter.
    #[error("cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        /// Whose filter (`kill switch` for the process-wide one).
        kind: &'static str,
        /// What the kernel said.
        #[source]
        source: seccompiler::Error,
    },
    /// The `SIGSYS` handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] std::io::Error),
    /// A `prctl` failed.
    #[error("prctl({what}) failed: {source}")]
    Prctl {
        /// Which one.
        what: &'static str,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The landlock ruleset could not be built or applied.
    #[error("landlock: {0}")]
    Landlock(#[source] Box<landlock::RulesetError>),
    /// `vm.user` / `vm.group` cannot be used.
    #[error("{user}: {why}")]
    User {
        /// The name or number given.
        user: String,
        /// Why not.
        why: String,
    },
    /// Leaving root failed (the process stops rather than run as root).
    #[error("cannot drop privileges ({what}): {source}")]
    Drop {
        /// Which step.
        what: &'static str,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The kernel has no seccomp filters with `SECCOMP_RET_KILL_PROCESS` (Linux 4.14).
    #[error("this kernel cannot confine ghost-vmm (no seccomp filters with SECCOMP_RET_KILL_PROCESS); set vm.sandbox = false to run without")]
    Unsupported,
    /// [`enable`] was called twice.
    #[error("the sandbox is already enabled")]
    AlreadyEnabled,
}

static FILTERS: OnceLock<SeccompFilters> = OnceLock::new();

/// `GHOST_SANDBOX_SELFTEST=KIND` ([`ThreadKind::name`]): a thread of that kind makes a call
/// no filter allows (`socket(AF_INET)`) right after it confined itself, so that a test can
/// see the real filter of the real thread kill the process and name the thread. It can only
/// end the process, which whoever sets a process's environment can do anyway.
pub const SELFTEST_ENV: &str = "GHOST_SANDBOX_SELFTEST";

static SELFTEST: OnceLock<Option<ThreadKind>> = OnceLock::new();

thread_local! {
    /// The kind this thread confined itself as (read by the `SIGSYS` handler).
    static CONFINED: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Turns confinement on for this process: installs the `SIGSYS` handler and the
/// process-wide kill switch (on every thread, `TSYNC`), and keeps `filters` for
/// [`confine_thread`]. Sets `no_new_privs` (the kernel requires it for an unprivileged
/// filter, and nothing ghost-vmm runs may gain privileges). Call once, before the threads
/// that should confine themselves start their guest-facing work.
pub fn enable(filters: SeccompFilters) -> Result<(), SandboxError> {
    if FILTERS.get().is_some() {
        return Err(SandboxError::AlreadyEnabled);
    }
    let selftest = std::env::var(SELFTEST_ENV)
        .ok()
        .and_then(|v| ThreadKind::ALL.into_iter().find(|k| k.name() == v));
    let _ = SELFTEST.set(selftest);
    process::set_no_new_privs()?;
    sigsys::install_handler()?;
    filters.install_kill_switch()?;
    FILTERS
        .set(filters)
        .map_err(|_| SandboxError::AlreadyEnabled)
}

/// Whether [`enable`] has been called.
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Confines the calling thread as `kind`: installs that kind's filter (narrowing whatever
/// it inherited). Does nothing when the sandbox is not enabled, or when this thread is
/// already confined as `kind`. Confining a thread as a second, different kind stacks both
/// filters (allowed, never wanted: debug builds assert against it).
pub fn confine_thread(kind: ThreadKind) -> Result<(), SandboxError> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    let current = CONFINED.with(Cell::get);
    if current == Some(kind) {
        return Ok(());
    }
    debug_assert!(
        current.is_none(),
        "thread confined twice: {current:?} then {kind:?}"
    );
    sigsys::remember_thread_name();
    filters.install(kind)?;
    CONFINED.with(|c| c.set(Some(kind)));
    if SELFTEST.get().copied().flatten() == Some(kind) {
        // SAFETY: socket(2) with constant arguments; the filter stops it before it runs.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        log::error!(
            "sandbox self-test: socket(AF_INET) was allowed on a {} thread ({fd})",
            kind.name()
        );
    }
    Ok(())
}

/// Starts thread `name`, which confines itself as `kind` before it runs `body`. Returns
/// once the thread is confined; a thread that cannot confine itself runs nothing, is joined,
/// and the error is returned.
pub fn spawn_confined<F>(
    name: String,
    kind: ThreadKind,
    body: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let (confined_tx, confined_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let confined = confine_thread(kind).map_err(|e| e.to_string());
        let ok = confined.is_ok();
        let _ = confined_tx.send(confined);
        if ok {
            body();
        }
    })?;
    match confined_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(std::io::Error::other(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(std::io::Error::other(format!(
                "the {} thread died at its start",
                kind.name()
            )))
        }
    }
}

/// The kind the calling thread is confined as, if any.
pub fn confined_as() -> Option<ThreadKind> {
    CONFINED.with(Cell::get)
}
