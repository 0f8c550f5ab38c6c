//! The keeper: a small root process that gives the host back what a VM that dropped its
//! privileges (`[vm] user`) no longer can: passed-through devices to their drivers, the VFIO
//! group nodes to their owners, the socket files, and a variable store the run created but
//! never booted.
//!
//! It is ghost-vmm itself (`ghost-vmm __keeper`), started just before the drop, before any
//! guest code runs. Its plan arrives on stdin as one JSON line; after that it only takes
//! `booted` lines, and acts when its stdin ends: when the VMM has closed it at the end of
//! its teardown, or when the VMM process died, however (a seccomp kill, SIGKILL). It
//! ignores the stop signals, which Ctrl-C and `systemctl stop` send to the whole group, so
//! that it outlives the VMM. It reads nothing from the VMM but that: a VMM a guest took over
//! can at most claim a boot that did not happen (so a new variable store is kept).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};

use ghost_vfio::bind::{restore_driver, SYSFS_TIMEOUT};
use serde::{Deserialize, Serialize};

/// The hidden subcommand that runs [`main`].
pub const KEEPER_COMMAND: &str = "__keeper";

/// What the keeper restores.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct KeeperPlan {
    /// Functions moved to vfio-pci, and the driver each had.
    bindings: Vec<(String, Option<String>)>,
    /// Files whose owner and mode were changed for the new user: path, uid, gid, mode.
    owners: Vec<(PathBuf, u32, u32, u32)>,
    /// Files to remove if they are still the ones the VM made (device, inode).
    sockets: Vec<(PathBuf, u64, u64)>,
    /// The variable store this run created, removed unless a boot happened.
    vars: Option<(PathBuf, u64, u64)>,
}

impl KeeperPlan {
    pub(crate) fn binding(&mut self, address: String, original: Option<String>) {
        self.bindings.push((address, original));
    }

    /// Gives `path` to `uid`:`gid` (mode 0600) for the run, and back afterwards.
    pub(crate) fn lend(&mut self, path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        let md = std::fs::metadata(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        self.owners
            .push((path.to_owned(), md.uid(), md.gid(), md.mode() & 0o7777));
        Ok(())
    }

    pub(crate) fn socket(&mut self, path: &Path) {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            self.sockets.push((path.to_owned(), md.dev(), md.ino()));
        }
    }

    pub(crate) fn vars(&mut self, path: &Path) {
        if let Ok(md) = std::fs::metadata(path) {
            self.vars = Some((path.to_owned(), md.dev(), md.ino()));
        }
    }
}

/// The running keeper, from the VMM's side.
#[derive(Debug)]
pub(crate) struct Keeper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Keeper {
    /// Starts the keeper with `plan`.
    pub(crate) fn start(plan: &KeeperPlan) -> std::io::Result<Keeper> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(KEEPER_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the keeper has no stdin"))?;
        let line = serde_json::to_string(plan).map_err(std::io::Error::other)?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        Ok(Keeper {
            child,
            stdin: Some(stdin),
        })
    }

    /// A boot ran: a store the run created is the VM's now.
    pub(crate) fn booted(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            let _ = stdin.write_all(b"booted\n");
        }
    }

    /// The VMM is done: the keeper restores, and this waits for it.
    pub(crate) fn finish(mut self) {
        drop(self.stdin.take());
        if let Err(e) = self.child.wait() {
            log::warn!("keeper: {e}");
        }
    }
}

/// The keeper process (`ghost-vmm __keeper`).
pub fn main() -> ExitCode {
    for sig in crate::lifecycle::stop_signals() {
        // SAFETY: ignoring a signal touches no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let plan: KeeperPlan = match lines.next().map(|l| l.map(|l| serde_json::from_str(&l))) {
        Some(Ok(Ok(plan))) => plan,
        _ => {
            eprintln!("ghost-vmm: keeper: no plan on stdin (it is started by `ghost-vmm run`)");
            return ExitCode::from(2);
        }
    };
    let mut booted = false;
    for line in lines.map_while(Result::ok) {
        booted |= line == "booted";
    }
    restore(&plan, booted);
    ExitCode::SUCCESS
}

fn restore(plan: &KeeperPlan, booted: bool) {
    for (address, original) in &plan.bindings {
        match restore_driver(
            Path::new("/sys"),
            address,
            original.as_deref(),
            SYSFS_TIMEOUT,
        ) {
            Ok(()) => log::info!(
                "{address}: given back to {}",
                original.as_deref().unwrap_or("no driver")
            ),
            Err(e) => log::error!("keeper: {e}"),
        }
    }
    for (path, uid, gid, mode) in &plan.owners {
        let back = std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)));
        if let Err(e) = back {
            log::error!(
                "keeper: cannot give {} back to {uid}:{gid}: {e}",
                path.display()
            );
        }
    }
    let same = |path: &Path, dev: u64, ino: u64| {
        std::fs::symlink_metadata(path).is_ok_and(|md| (md.dev(), md.ino()) == (dev, ino))
    };
    for (path, dev, ino) in &plan.sockets {
        if same(path, *dev, *ino) {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("keeper: cannot remove {}: {e}", path.display());
            }
        }
    }
    if let Some((path, dev, ino)) = &plan.vars {
        if !booted && same(path, *dev, *ino) {
            match std::fs::remove_file(path) {
                Ok(()) => log::info!("boot.firmware_vars: removed {} again", path.display()),
                Err(e) => log::warn!("keeper: cannot remove {}: {e}", path.display()),
            }
        }
    }
}
