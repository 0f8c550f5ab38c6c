//! landlock: after setup, the files a VM may still touch. The VMM lists them ([`FileRules`]);
//! [`restrict`] makes the calling thread, and every thread it starts from then on, unable
//! to open, create, remove or execute anything else. Descriptors opened before (disks,
//! /dev/kvm, the TAPs) stay usable.
//!
//! Best effort: a kernel without landlock (or with an older ABI) enforces what it can and
//! [`restrict`] says how much. The ABI aimed at is 5 (Linux 6.10: device ioctls); later
//! ABIs would also govern things ghost-vmm does not list (Unix socket connects for
//! `sd_notify`), so they are not asked for.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};

use crate::SandboxError;

/// The landlock ABI whose rights are handled.
const TARGET_ABI: ABI = ABI::V5;

/// What a VM may still touch, by path (a folder covers what is beneath it).
#[derive(Debug, Default, Clone)]
pub struct FileRules {
    read: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    remove_in: Vec<PathBuf>,
}

impl FileRules {
    /// Files (or folders) to read: kernels, firmware code, option ROMs, sysfs facts.
    pub fn read(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.read.push(path.into());
        self
    }

    /// Files (or folders) to read and write, device nodes to open and `ioctl`: disks, the
    /// variable store, the console log, /dev/vfio, a device's sysfs files.
    pub fn read_write(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.read_write.push(path.into());
        self
    }

    /// A folder whose entries may be removed (the sockets' folder at exit).
    pub fn remove_in(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.remove_in.push(dir.into());
        self
    }

    /// Every path, with the access it gets (for messages and tests).
    pub fn paths(&self) -> impl Iterator<Item = (&Path, &'static str)> {
        let r = self.read.iter().map(|p| (p.as_path(), "read"));
        let rw = self.read_write.iter().map(|p| (p.as_path(), "read-write"));
        let rm = self.remove_in.iter().map(|p| (p.as_path(), "remove"));
        r.chain(rw).chain(rm)
    }
}

/// How much of the restriction the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Everything asked.
    Fully,
    /// An older ABI: some rights are not governed.
    Partially,
    /// No landlock on this kernel.
    Not,
}

/// Restricts the calling thread (and the threads it starts later) to `rules`. A listed path
/// that does not exist is skipped: nothing there can be opened anyway.
pub fn restrict(rules: &FileRules) -> Result<Enforced, SandboxError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let read_write = all & !AccessFs::Execute & !remove_rights();
    let err = |source| SandboxError::Landlock(Box::new(source));
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(err)?
        .create()
        .map_err(err)?;
    let groups = [
        (&rules.read, read),
        (&rules.read_write, read_write),
        (&rules.remove_in, remove_rights()),
    ];
    for (paths, access) in groups {
        for path in paths {
            let Ok(fd) = PathFd::new(path) else {
                continue;
            };
            // A file takes only the file rights of `access` (landlock refuses folder rights
            // on a file).
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(TARGET_ABI)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(err)?;
        }
    }
    let status = ruleset.restrict_self().map_err(err)?;
    selftest_open();
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    })
}

/// `GHOST_SANDBOX_SELFTEST_OPEN=PATH`: right after [`restrict`], the thread tries to open
/// PATH for reading and logs what happened, so that a test can see the real rules of a real
/// run refuse a file outside them (EACCES). It reads nothing back.
pub const SELFTEST_OPEN_ENV: &str = "GHOST_SANDBOX_SELFTEST_OPEN";

fn selftest_open() {
    if let Some(path) = std::env::var_os(SELFTEST_OPEN_ENV) {
        match std::fs::File::open(&path) {
            Ok(_) => log::warn!("sandbox self-test: opened {}", Path::new(&path).display()),
            Err(e) => log::warn!(
                "sandbox self-test: cannot open {}: {e}",
                Path::new(&path).display()
            ),
        }
    }
}

fn remove_rights() -> BitFlags<AccessFs> {
    AccessFs::RemoveFile | AccessFs::RemoveDir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// landlock is per thread: a test thread restricts only itself.
    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the restricted thread")
    }

    #[test]
    fn only_the_listed_files_can_be_opened_after_restrict() {
        if crate::process::support().landlock_abi.is_none() {
            eprintln!("skipped: this kernel has no landlock");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        let vars = dir.path().join("vm.vars");
        let other = dir.path().join("other-vm.img");
        let sockets = dir.path().join("run");
        for f in [&kernel, &vars, &other] {
            std::fs::write(f, b"x").expect("write");
        }
        std::fs::create_dir(&sockets).expect("mkdir");
        std::fs::write(sockets.join("vm.sock"), b"").expect("write");
        let mut rules = FileRules::default();
        rules.read(&kernel).read_write(&vars).remove_in(&sockets);
        let (k, v, o, w, rm, mk) = {
            let (kernel, vars, other, sockets) = (kernel.clone(), vars.clone(), other, sockets);
            in_thread(move || {
                assert_eq!(restrict(&rules).expect("restricted"), Enforced::Fully);
                let kind = |r: std::io::Result<()>| r.err().map(|e| e.kind());
                (
                    kind(std::fs::read(&kernel).map(drop)),
                    kind(
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&vars)
                            .map(drop),
                    ),
                    kind(std::fs::read(&other).map(drop)),
                    kind(std::fs::write(&kernel, b"y")),
                    kind(std::fs::remove_file(sockets.join("vm.sock"))),
                    kind(std::fs::write(sockets.join("new"), b"")),
                )
            })
        };
        assert_eq!(k, None, "the kernel is readable");
        assert_eq!(v, None, "the variable store is writable");
        assert_eq!(o, Some(ErrorKind::PermissionDenied), "another VM's disk");
        assert_eq!(
            w,
            Some(ErrorKind::PermissionDenied),
            "the kernel is read-only"
        );
        assert_eq!(rm, None, "a socket file is removed at exit");
        assert_eq!(
            mk,
            Some(ErrorKind::PermissionDenied),
            "nothing new in the sockets' folder"
        );
        // Other threads were not restricted.
        assert!(std::fs::read(dir.path().join("other-vm.img")).is_ok());
    }
}
