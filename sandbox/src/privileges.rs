//! Dropping root after setup: to a user (and group) given by name or number.
//!
//! [`Identity::resolve`] runs first, with the VM file, so that a user who does not exist is
//! a one-line error before anything on the host changed. [`drop_to`] then switches every
//! thread of the process (glibc's `setresuid` applies to all of them) to that user, group
//! and no supplementary groups; leaving root leaves every capability behind.

use std::ffi::{CStr, CString};

use crate::SandboxError;

/// Who a VM runs as after setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's id.
    pub uid: u32,
    /// The group's id.
    pub gid: u32,
    /// As the user gave it (for messages).
    pub name: String,
}

impl Identity {
    /// `user` (a name from the password database, or a number) and `group` (likewise;
    /// default: the user's primary group, or the same number as a numeric user).
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Self, SandboxError> {
        let (uid, primary) = match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => passwd(user)?,
        };
        let gid = match group {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_id(g)?,
            },
        };
        if uid == 0 {
            return Err(SandboxError::User {
                user: user.to_owned(),
                why: "is root: there is nothing to drop to".into(),
            });
        }
        Ok(Self {
            uid,
            gid,
            name: user.to_owned(),
        })
    }
}

fn passwd(user: &str) -> Result<(u32, u32), SandboxError> {
    let unknown = || SandboxError::User {
        user: user.to_owned(),
        why: "no such user".into(),
    };
    let name = CString::new(user).map_err(|_| unknown())?;
    // SAFETY: an all-zero passwd is a valid out-parameter; getpwnam_r fills it, pointing
    // into `buf`, which outlives every use below.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

fn group_id(group: &str) -> Result<u32, SandboxError> {
    let unknown = || SandboxError::User {
        user: group.to_owned(),
        why: "no such group".into(),
    };
    let name = CString::new(group).map_err(|_| unknown())?;
    // SAFETY: as in `passwd`, for getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok(gr.gr_gid)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Lets the process lock (and VFIO pin) `bytes` more than now without privileges: raises
/// `RLIMIT_MEMLOCK`, which a non-root process keeps but cannot raise.
pub fn raise_memlock(bytes: u64) -> Result<(), SandboxError> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads one rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(SandboxError::Drop {
            what: "setrlimit(RLIMIT_MEMLOCK)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Switches every thread of the process to `id`: supplementary groups cleared, real,
/// effective and saved ids all set (so none can be taken back), then checked.
pub fn drop_to(id: &Identity) -> Result<(), SandboxError> {
    let fail = |what| SandboxError::Drop {
        what,
        source: std::io::Error::last_os_error(),
    };
    let groups = [id.gid];
    // SAFETY: setgroups reads one gid from a live array.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(fail("setgroups"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(id.gid, id.gid, id.gid) } != 0 {
        return Err(fail("setresgid"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(id.uid, id.uid, id.uid) } != 0 {
        return Err(fail("setresuid"));
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three uids into live variables.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if [r, e, s] != [id.uid; 3] {
        return Err(SandboxError::Drop {
            what: "setresuid (the ids did not change)",
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
    }
    Ok(())
}

/// The name of uid `uid` in the password database, for messages.
pub fn user_name(uid: u32) -> Option<String> {
    // SAFETY: as in `passwd`, for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
    Some(
        unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_resolve_and_root_is_refused() {
        assert_eq!(
            Identity::resolve("65534", None).expect("numeric"),
            Identity {
                uid: 65534,
                gid: 65534,
                name: "65534".into()
            }
        );
        let id = Identity::resolve("65534", Some("100")).expect("numeric group");
        assert_eq!((id.uid, id.gid), (65534, 100));
        let root = Identity::resolve("0", None).unwrap_err().to_string();
        assert!(root.contains("is root"), "{root}");
        let none = Identity::resolve("no-such-user-ghost", None)
            .unwrap_err()
            .to_string();
        assert!(
            none.contains("no-such-user-ghost") && none.contains("no such user"),
            "{none}"
        );
        // This machine has a `nobody` (base-passwd); resolve it by name.
        if let Some(name) = user_name(65534) {
            let id = Identity::resolve(&name, None).expect("by name");
            assert_eq!(id.uid, 65534);
        }
    }
}
