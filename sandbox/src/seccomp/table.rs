//! The allow table: one entry per system call, who needs it and why. A call that is not
//! here, or not for the calling thread's kind, or not with these arguments, is a violation.
//!
//! Read it as: the vCPU threads run `KVM_RUN` and the device models they dispatch to; the
//! virtio workers move guest data between queues and their backend; the API thread answers
//! one Unix-socket connection at a time; the VMM thread (the main thread) builds each boot's
//! VM, runs the device event loop and starts the others, so it also allows what they do
//! (see the module docs of [`super`]).

use seccompiler::SeccompRule;
use syscalls::Sysno;

use super::{eq, ioctls, masked};
use crate::ThreadKind::{self, Api, BlockWorker as Blk, NetWorker as Net, Vcpu, Vmm};

/// One allowed system call.
#[derive(Debug)]
pub struct Entry {
    /// The call.
    pub syscall: Sysno,
    /// The thread kinds that may make it.
    pub who: &'static [ThreadKind],
    /// On which arguments.
    pub args: Args,
    /// Who needs it, for what.
    pub why: &'static str,
}

/// Which arguments an [`Entry`] allows.
#[derive(Debug)]
pub enum Args {
    /// Any.
    Any,
    /// Argument `.0` (compared as 32 bits) is one of `.1`.
    OneOf(u8, &'static [u64]),
    /// `arg2` (a protection) is not executable: `mmap`, `mprotect`.
    NotExec,
    /// `socket(AF_UNIX, SOCK_DGRAM | flags, _)`: no stream socket, so no connection to a
    /// host service's socket (a container engine's, the bus's).
    UnixDatagram,
    /// Argument `.0` is one of the values `.1` gives for the calling thread's kind (the
    /// `ioctl` requests of [`ioctls::allowed`], the `madvise` advice of [`advice`]).
    ByKind(u8, fn(ThreadKind) -> Vec<u64>),
}

impl Args {
    /// The rules for `kind`: `None` allows any arguments; `Some(rules)` allows the call when
    /// one rule matches.
    pub(crate) fn rules(
        &self,
        kind: ThreadKind,
    ) -> Result<Option<Vec<SeccompRule>>, seccompiler::BackendError> {
        let one_of = |arg: u8, values: &[u64]| {
            values
                .iter()
                .map(|&v| SeccompRule::new(vec![eq(arg, v)?]))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match self {
            Args::Any => None,
            Args::OneOf(arg, values) => Some(one_of(*arg, values)?),
            Args::NotExec => Some(vec![SeccompRule::new(vec![masked(
                2,
                libc::PROT_EXEC as u64,
                0,
            )?])?]),
            Args::ByKind(arg, values) => Some(one_of(*arg, &values(kind))?),
            Args::UnixDatagram => Some(vec![SeccompRule::new(vec![
                eq(0, libc::AF_UNIX as u64)?,
                masked(1, 0xf, libc::SOCK_DGRAM as u64)?,
            ])?]),
        })
    }
}

const ALL: &[ThreadKind] = &[Vmm, Vcpu, Blk, Net, Api];
const VMM: &[ThreadKind] = &[Vmm];

const fn e(syscall: Sysno, who: &'static [ThreadKind], args: Args, why: &'static str) -> Entry {
    Entry {
        syscall,
        who,
        args,
        why,
    }
}

/// `fcntl` commands: descriptor flags, status flags (non-blocking), `F_DUPFD_CLOEXEC`
/// (`File::try_clone`).
const FCNTL: &[u64] = &[
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
    libc::F_DUPFD_CLOEXEC as u64,
];

/// `madvise` advice: every thread's malloc returning memory and glibc freeing a dead
/// thread's stack; the VMM thread also keeps each boot's new guest RAM out of core dumps
/// and forks, and asks for transparent huge pages for it.
pub fn advice(kind: ThreadKind) -> Vec<u64> {
    const ANY: &[u64] = &[libc::MADV_DONTNEED as u64, libc::MADV_FREE as u64];
    const VMM: &[u64] = &[
        libc::MADV_DONTNEED as u64,
        libc::MADV_FREE as u64,
        libc::MADV_DONTDUMP as u64,
        libc::MADV_DONTFORK as u64,
        libc::MADV_HUGEPAGE as u64,
    ];
    match kind {
        ThreadKind::Vmm => VMM.to_vec(),
        _ => ANY.to_vec(),
    }
}

/// The signals whose handlers the VMM thread may still set: `vmm::lifecycle`'s stop signals
/// (SIGTERM, SIGINT, SIGHUP, SIGRTMIN+4), set back to the default once its VM is gone, and
/// glibc's own SIGCANCEL/SIGSETXID (the kernel's SIGRTMIN + 1), which glibc installs at the
/// first `pthread_create` (the control API thread's, after confinement). Never SIGSYS: the
/// sandbox's handler stays.
pub fn signals(_kind: ThreadKind) -> Vec<u64> {
    const GLIBC_SIGSETXID: libc::c_int = 33;
    [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGRTMIN() + 4,
        GLIBC_SIGSETXID,
    ]
    .iter()
    .filter_map(|&s| u64::try_from(s).ok())
    .collect()
}

/// `prctl` options of a thread being born under the VMM's filter: std naming it, the
/// sandbox reading the name back and setting `no_new_privs` before its own filter.
const PRCTL_NEW_THREAD: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
];

/// The table. One entry per call (a unit test checks).
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    // Memory.
    e(Sysno::brk, ALL, Args::Any, "malloc"),
    e(Sysno::mmap, ALL, Args::NotExec, "malloc; vmm: guest RAM, kvm_run areas, VFIO BARs, io_uring rings"),
    e(Sysno::mprotect, ALL, Args::NotExec, "malloc arenas; vmm: new threads' stack guards"),
    e(Sysno::munmap, ALL, Args::Any, "free; a thread's signal stack at its exit; vmm: a boot's RAM"),
    e(Sysno::mremap, ALL, Args::Any, "realloc of large buffers"),
    e(Sysno::madvise, ALL, Args::ByKind(2, advice), "free; glibc's stack cache; vmm: guest RAM"),
    // Threads, signals, time.
    e(Sysno::futex, ALL, Args::Any, "locks, condition variables, joins"),
    e(Sysno::sched_yield, ALL, Args::Any, "std's spin loops"),
    e(Sysno::rt_sigreturn, ALL, Args::Any, "return from the vCPU kick and stop-signal handlers"),
    e(Sysno::restart_syscall, ALL, Args::Any, "the kernel resumes a poll or sleep a signal interrupted"),
    e(Sysno::sigaltstack, ALL, Args::Any, "std's overflow stack: set up at birth, removed at exit"),
    e(Sysno::exit, ALL, Args::Any, "a thread ends"),
    e(Sysno::exit_group, ALL, Args::Any, "the process ends (a panic that aborts, too)"),
    e(Sysno::getrandom, ALL, Args::Any, "HashMap keys, once per thread"),
    e(Sysno::clock_gettime, ALL, Args::Any, "Instant::now when the vDSO falls back; PM timer, RTC"),
    e(Sysno::gettid, ALL, Args::Any, "glibc"),
    e(Sysno::getpid, ALL, Args::Any, "glibc"),
    e(Sysno::clock_nanosleep, &[Vmm, Api], Args::Any, "vmm: between vCPU kicks; api: after a failed accept"),
    e(Sysno::nanosleep, &[Vmm, Api], Args::Any, "as clock_nanosleep (older glibc)"),
    e(Sysno::rt_sigaction, VMM, Args::ByKind(0, signals), "the stop signals' default action back at the end of a run; glibc's SIGSETXID"),
    e(Sysno::tgkill, VMM, Args::Any, "kicking vCPU threads out of KVM_RUN"),
    e(Sysno::rt_sigprocmask, ALL, Args::Any, "glibc blocks signals around clone and while a thread exits"),
    e(Sysno::clone3, VMM, Args::Any, "starting vCPU and virtio worker threads"),
    e(Sysno::set_robust_list, VMM, Args::Any, "a new thread, before its own filter"),
    e(Sysno::rseq, VMM, Args::Any, "a new thread, before its own filter"),
    e(Sysno::prctl, VMM, Args::OneOf(0, PRCTL_NEW_THREAD), "a new thread names itself and confines itself"),
    e(Sysno::seccomp, VMM, Args::OneOf(0, &[libc::SECCOMP_SET_MODE_FILTER as u64]), "a new thread installs its own filter"),
    e(Sysno::sched_setaffinity, VMM, Args::Any, "a vCPU thread pins itself (cpu_affinity) before its filter"),
    e(Sysno::sched_getaffinity, VMM, Args::Any, "a new thread: glibc's pthread_getattr_np, for std's stack guard"),
    // Descriptors.
    e(Sysno::read, ALL, Args::Any, "eventfds, timerfds, stdin, the TAP, the API and console sockets"),
    e(Sysno::write, ALL, Args::Any, "eventfds (irqfds, wakeups), the serial console, logs on stderr"),
    e(Sysno::close, ALL, Args::Any, "dropped descriptors"),
    e(Sysno::fcntl, ALL, Args::OneOf(1, FCNTL), "non-blocking flags, File::try_clone"),
    e(Sysno::ioctl, ALL, Args::ByKind(1, |k| ioctls::allowed(k).to_vec()), "per kind: see ioctls.rs"),
    e(Sysno::readv, &[Vmm, Net], Args::Any, "net: frames from the TAP"),
    e(Sysno::writev, &[Vmm, Net], Args::Any, "net: frames to the TAP"),
    e(Sysno::pread64, &[Vmm, Vcpu, Blk], Args::Any, "vcpu: VFIO config space and BARs; blk: the fallback path; vmm: kernels, firmware"),
    e(Sysno::pwrite64, &[Vmm, Vcpu, Blk], Args::Any, "vcpu: VFIO config space and BARs, the flash's variable store; blk: the fallback path"),
    e(Sysno::preadv, &[Vmm, Blk], Args::Any, "blk: reads where io_uring is not used"),
    e(Sysno::pwritev, &[Vmm, Blk], Args::Any, "blk: writes where io_uring is not used"),
    e(Sysno::fdatasync, &[Vmm, Vcpu, Blk], Args::Any, "blk: FLUSH; vcpu: the variable store; vmm: disks at exit"),
    e(Sysno::fallocate, &[Vmm, Blk], Args::Any, "blk: DISCARD and WRITE_ZEROES on files"),
    e(Sysno::lseek, &[Vmm, Blk], Args::Any, "sizes of disks and files"),
    e(Sysno::fstat, &[Vmm, Blk], Args::Any, "std's File::metadata"),
    e(Sysno::statx, &[Vmm, Blk, Api], Args::Any, "std's File::metadata; api: is its socket file still its own, at exit"),
    e(Sysno::newfstatat, &[Vmm, Api], Args::Any, "a boot's files, sysfs; api: its socket file at exit"),
    e(Sysno::epoll_wait, &[Vmm, Blk, Net], Args::Any, "the event loops"),
    e(Sysno::epoll_ctl, &[Vmm, Blk, Net], Args::Any, "the event loops: watching for EPOLLOUT and back"),
    e(Sysno::io_uring_enter, &[Vmm, Blk], Args::Any, "blk: submissions and completions"),
    e(Sysno::poll, &[Vmm, Api], Args::Any, "api: the listener and its shutdown pipe"),
    e(Sysno::accept4, &[Vmm, Api], Args::Any, "api: a client; vmm: a console client"),
    e(Sysno::recvfrom, &[Vmm, Api], Args::Any, "api: requests; vmm: console input"),
    e(Sysno::sendto, &[Vmm, Vcpu, Api], Args::Any, "api: answers; vcpu: console output to the socket; vmm: its backlog"),
    e(Sysno::setsockopt, &[Vmm, Api], Args::Any, "api: a connection's write timeout"),
    e(Sysno::shutdown, &[Vmm, Api], Args::Any, "closing a client"),
    // The VMM thread's own: each boot builds a VM again; the run's end tears down.
    e(Sysno::openat, VMM, Args::Any, "a boot's kernel, firmware, VFIO groups and sysfs (landlock decides which)"),
    e(Sysno::readlink, VMM, Args::Any, "each boot: a passed-through device's IOMMU group link"),
    e(Sysno::readlinkat, VMM, Args::Any, "as readlink"),
    e(Sysno::getdents64, VMM, Args::Any, "sysfs folders of passed-through devices"),
    e(Sysno::unlink, &[Vmm, Api], Args::Any, "the sockets at exit (api: its own); a variable store a failed run created"),
    e(Sysno::unlinkat, VMM, Args::Any, "as unlink"),
    e(Sysno::dup, VMM, Args::Any, "stdin for each boot's console; EventFd::try_clone"),
    e(Sysno::eventfd2, VMM, Args::Any, "each boot's irqfds, ioeventfds, wakeups"),
    e(Sysno::timerfd_create, VMM, Args::Any, "each boot's lifecycle timer"),
    e(Sysno::timerfd_settime, VMM, Args::Any, "the RTC and the stop timeout"),
    e(Sysno::epoll_create1, VMM, Args::Any, "each boot's event loop and each virtio worker's"),
    e(Sysno::memfd_create, VMM, Args::Any, "each boot's hugetlb guest RAM"),
    e(Sysno::ftruncate, VMM, Args::Any, "sizing that memfd"),
    e(Sysno::io_uring_setup, VMM, Args::Any, "a virtio-blk activation"),
    e(Sysno::io_uring_register, &[Vmm, Blk], Args::Any, "the ring's completion eventfd"),
    e(Sysno::socket, VMM, Args::UnixDatagram, "sd_notify's datagram socket"),
    e(Sysno::connect, VMM, Args::Any, "sd_notify's datagram socket to $NOTIFY_SOCKET"),
    e(Sysno::sendmsg, VMM, Args::Any, "sd_notify"),
    e(Sysno::wait4, VMM, Args::Any, "the keeper of a run that dropped root, at the very end"),
];
