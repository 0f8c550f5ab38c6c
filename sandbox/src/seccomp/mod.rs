//! seccomp-bpf filters per [`ThreadKind`], compiled by rust-vmm's `seccompiler` from the
//! table in [`table`] (one entry per system call, saying who needs it and on which
//! arguments).
//!
//! Every thread carries two filters:
//! - the **kill switch**, installed once for the whole process by [`crate::enable`]: it
//!   allows everything except [`KILL_SWITCH`], which it answers with
//!   `SECCOMP_RET_KILL_PROCESS`;
//! - its **kind's filter**, installed by the thread itself ([`crate::confine_thread`]):
//!   what is not in the table traps (`SIGSYS`), so that the handler can say which thread
//!   made which call before it pulls the kill switch.
//!
//! A thread inherits its creator's filters; its own only narrows them. So the VMM thread's
//! filter also allows what the threads it starts do between their birth and their own
//! confinement (the `clone3`, `set_robust_list`, `rseq`, `sigaltstack` of a new thread), and
//! what they do at all, since a call must pass every filter on the way: the table says so
//! entry by entry ("vmm, for ...").

mod ioctls;
mod table;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{SandboxError, ThreadKind};
pub use table::{Args, Entry, TABLE};

/// The system call the `SIGSYS` handler makes to end the process: `tkill`, which glibc and
/// Rust's std never use (`tgkill` replaced it), so no thread has a reason to make it.
pub const KILL_SWITCH: syscalls::Sysno = syscalls::Sysno::tkill;

/// The compiled filters of every thread kind and the kill switch.
#[derive(Debug)]
pub struct SeccompFilters {
    kinds: Vec<BpfProgram>,
    kill_switch: BpfProgram,
}

impl SeccompFilters {
    /// Compiles every kind's filter from [`TABLE`].
    pub fn compile() -> Result<Self, SandboxError> {
        let kinds = ThreadKind::ALL
            .iter()
            .map(|&kind| compile_kind(kind))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = BTreeMap::new();
        rules.insert(i64::from(KILL_SWITCH.id()), Vec::new());
        let kill_switch = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::KillProcess,
            TargetArch::x86_64,
        )
        .and_then(BpfProgram::try_from)
        .map_err(|source| SandboxError::Compile {
            kind: "kill switch",
            source,
        })?;
        Ok(Self { kinds, kill_switch })
    }

    /// The BPF program of `kind` (for tests and for sizing).
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        &self.kinds[kind.index()]
    }

    pub(crate) fn install_kill_switch(&self) -> Result<(), SandboxError> {
        seccompiler::apply_filter_all_threads(&self.kill_switch).map_err(|source| {
            SandboxError::Install {
                kind: "kill switch",
                source,
            }
        })
    }

    pub(crate) fn install(&self, kind: ThreadKind) -> Result<(), SandboxError> {
        seccompiler::apply_filter(self.program(kind)).map_err(|source| SandboxError::Install {
            kind: kind.name(),
            source,
        })
    }
}

/// Makes the kill-switch call: the kernel kills the process (`SECCOMP_RET_KILL_PROCESS`).
/// Only the `SIGSYS` handler calls it. Should the switch somehow not be there, the process
/// still ends, with `_exit`.
pub(crate) fn pull_kill_switch() -> ! {
    // SAFETY: tkill with these arguments would signal nothing (tid 0 is invalid); the kill
    // switch filter stops the process before the call runs.
    unsafe {
        libc::syscall(libc::c_long::from(KILL_SWITCH.id()), 0, libc::SIGSYS);
        libc::_exit(128 + libc::SIGSYS)
    }
}

fn compile_kind(kind: ThreadKind) -> Result<BpfProgram, SandboxError> {
    let err = |source| SandboxError::Compile {
        kind: kind.name(),
        source,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for entry in TABLE.iter().filter(|e| e.who.contains(&kind)) {
        // seccompiler allows a call with an empty rule list outright; a list of rules allows
        // it when one of them matches. A conditional entry with no condition for this kind
        // allows nothing (never "everything").
        let list = match entry.args.rules(kind).map_err(err)? {
            None => Vec::new(),
            Some(list) if list.is_empty() => continue,
            Some(list) => list,
        };
        // The table has one entry per call (a unit test checks).
        rules.insert(i64::from(entry.syscall.id()), list);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(err)
}

/// `arg index` (32-bit compare) `== value`.
pub(crate) fn eq(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// `arg index & mask == value` (32-bit).
pub(crate) fn masked(
    arg: u8,
    mask: u64,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
}

#[cfg(test)]
mod tests;
