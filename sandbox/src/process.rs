//! Process-wide settings of the sandbox, and what the host kernel offers.

use crate::SandboxError;

/// Sets `no_new_privs`: nothing this process executes from now on can gain privileges (no
/// setuid, no file capabilities). Irreversible, inherited.
pub fn set_no_new_privs() -> Result<(), SandboxError> {
    prctl("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// Clears the dumpable flag: no core dump, no `ptrace` attach by the same user, and the
/// process's `/proc/PID` files (memory, environment, fds) are root's. Guest RAM is also
/// `MADV_DONTDUMP`; this covers the rest of the heap (device state, disk buffers).
pub fn set_undumpable() -> Result<(), SandboxError> {
    prctl("PR_SET_DUMPABLE", libc::PR_SET_DUMPABLE, 0)
}

fn prctl(
    what: &'static str,
    option: libc::c_int,
    value: libc::c_ulong,
) -> Result<(), SandboxError> {
    // SAFETY: both options take plain integers and touch no memory of ours.
    let rc = unsafe { libc::prctl(option, value, 0, 0, 0) };
    if rc != 0 {
        return Err(SandboxError::Prctl {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// What the host kernel offers the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// seccomp filters (`SECCOMP_SET_MODE_FILTER`) with `SECCOMP_RET_KILL_PROCESS`.
    pub seccomp: bool,
    /// The landlock ABI version the kernel speaks, if landlock is built in and enabled.
    pub landlock_abi: Option<u32>,
}

/// Asks the kernel what it supports, without changing anything.
pub fn support() -> Support {
    Support {
        seccomp: seccomp_kill_process(),
        landlock_abi: landlock_abi(),
    }
}

fn seccomp_kill_process() -> bool {
    let action: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from the pointer, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    rc == 0
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: with the VERSION flag the call reads no memory and creates nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(rc).ok().filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_is_read_without_side_effects() {
        let s = support();
        // This crate's tests confine threads: the kernel they run on must have seccomp.
        assert!(s.seccomp, "{s:?}");
    }
}
