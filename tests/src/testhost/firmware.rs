//! UEFI firmware for L3 guests: Debian's OVMF (package `ovmf`), unpacked by `setup.sh` into
//! `$CACHE/ovmf/` and put into L2 by [`TestHost::with_ovmf`] at the paths Debian installs it
//! to, so that a VM file in a test reads as it would on a user's machine.
//!
//! The package (2022.11-6+deb12u2, bookworm) ships in `/usr/share/OVMF/`: `OVMF_CODE_4M.fd`
//! (no SMM, no Secure Boot enforcement) and `OVMF_VARS_4M.fd` (an empty variable store),
//! `OVMF_CODE_4M.secboot.fd` (SMM, Secure Boot; `OVMF_CODE_4M.ms.fd` and
//! `OVMF_CODE_4M.snakeoil.fd` link to it), `OVMF_VARS_4M.ms.fd` (Microsoft's keys enrolled) and
//! `OVMF_VARS_4M.snakeoil.fd`, the same again in 2 MiB builds (`OVMF_CODE.fd`,
//! `OVMF_CODE.secboot.fd`, `OVMF_VARS.fd`, `OVMF_VARS.ms.fd`), and `/usr/share/ovmf/OVMF.fd`
//! (CODE and VARS in one 2 MiB image). Only the 4 MiB files go into L2.
//!
//! [`TestHost::with_ovmf`]: super::TestHost::with_ovmf

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::assets::run_setup;
use super::error::{Error, Result};
use super::paths::cache_dir;

/// Where OVMF is inside L2 (as on a Debian or Ubuntu host).
pub const L2_OVMF_DIR: &str = "/usr/share/OVMF";
/// The firmware code inside L2 (`$GHOST_OVMF_CODE`): map it read-only.
pub const L2_OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The variable store template inside L2 (`$GHOST_OVMF_VARS`): each VM gets its own copy.
pub const L2_OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The Secure Boot build inside L2 (needs SMM): for tests that expect it refused.
pub const L2_OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The variable store with Microsoft's keys enrolled, inside L2.
pub const L2_OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// Debian's OVMF files in the asset cache (`$CACHE/ovmf/`, made by `setup.sh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// `$CACHE/ovmf`: the links below, `version`, and `root/` (the whole package unpacked).
    pub dir: PathBuf,
    /// `OVMF_CODE_4M.fd`.
    pub code: PathBuf,
    /// `OVMF_VARS_4M.fd`.
    pub vars: PathBuf,
    /// `OVMF_CODE_4M.secboot.fd`.
    pub code_secboot: PathBuf,
    /// `OVMF_VARS_4M.ms.fd`.
    pub vars_ms: PathBuf,
    /// The package's version (`2022.11-6+deb12u2`).
    pub version: String,
}

static OVMF: Mutex<Option<Ovmf>> = Mutex::new(None);

impl Ovmf {
    /// The files, running `tests/testhost/setup.sh` first if they are missing (which also
    /// builds the fixed L1 QEMU a firmware guest needs, about 15 minutes once). Kept for the
    /// life of the process.
    pub fn ensure() -> Result<Ovmf> {
        let mut cached = OVMF.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ovmf) = cached.as_ref() {
            return Ok(ovmf.clone());
        }
        let cache = cache_dir();
        let ovmf = match Self::locate(&cache) {
            Ok(ovmf) => ovmf,
            Err(_) => {
                run_setup()?;
                Self::locate(&cache)?
            }
        };
        *cached = Some(ovmf.clone());
        Ok(ovmf)
    }

    /// The files in `cache`'s `ovmf/`, without preparing anything.
    pub fn locate(cache: &Path) -> Result<Ovmf> {
        let dir = cache.join("ovmf");
        let need = |what: &'static str, name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingAsset { what, path })
            }
        };
        need("OVMF setup stamp", ".complete")?;
        let version_file = need("OVMF version", "version")?;
        let version = fs::read_to_string(&version_file)
            .map_err(|e| Error::io("reading", &version_file, e))?
            .trim()
            .to_owned();
        Ok(Ovmf {
            code: need("OVMF code", "OVMF_CODE_4M.fd")?,
            vars: need("OVMF variable store", "OVMF_VARS_4M.fd")?,
            code_secboot: need("OVMF Secure Boot code", "OVMF_CODE_4M.secboot.fd")?,
            vars_ms: need(
                "OVMF variable store with Microsoft's keys",
                "OVMF_VARS_4M.ms.fd",
            )?,
            version,
            dir,
        })
    }

    /// The `(path inside L2, host file)` pairs [`TestHost::with_ovmf`] puts into L2.
    ///
    /// [`TestHost::with_ovmf`]: super::TestHost::with_ovmf
    pub fn l2_files(&self) -> [(&'static str, &Path); 4] {
        [
            (L2_OVMF_CODE, &self.code),
            (L2_OVMF_VARS, &self.vars),
            (L2_OVMF_CODE_SECBOOT, &self.code_secboot),
            (L2_OVMF_VARS_MS, &self.vars_ms),
        ]
    }
}

/// QEMU's arguments for OVMF inside L2: [`L2_OVMF_CODE`] as read-only flash, `vars` (the VM's
/// own copy of [`L2_OVMF_VARS`], which the scenario makes) as writable flash after it.
pub fn qemu_ovmf_args(vars: &str) -> String {
    format!(
        "-drive if=pflash,format=raw,unit=0,readonly=on,file={L2_OVMF_CODE} \
         -drive if=pflash,format=raw,unit=1,file={vars}"
    )
}
