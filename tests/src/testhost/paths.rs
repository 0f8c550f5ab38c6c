//! Where things are: the workspace, its target directory, the asset cache, the ghost-vmm binary.

use std::env;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::{Error, Result};

/// Environment variable naming the ghost-vmm binary to test (takes precedence over the search).
pub const GHOST_VMM_BIN_ENV: &str = "GHOST_VMM_BIN";
/// Environment variable overriding the asset cache directory (also honoured by `setup.sh`).
pub const CACHE_ENV: &str = "GHOST_TESTHOST_CACHE";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The asset cache: `$GHOST_TESTHOST_CACHE`, or `<workspace>/.cache/testhost`.
pub fn cache_dir() -> PathBuf {
    match env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".cache").join("testhost"),
    }
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the directory holding the running test
/// binary that carries Cargo's `CACHEDIR.TAG`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    if let Ok(exe) = env::current_exe() {
        if let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    workspace_root().join("target")
}

/// The ghost-vmm binary to run inside the test host.
///
/// `$GHOST_VMM_BIN` if set (it must exist); otherwise the most recently built of
/// `<target>/release/ghost-vmm` and `<target>/debug/ghost-vmm`.
///
/// The binary is **not** built by `cargo test`: a binary cannot be a dependency of this crate,
/// and `CARGO_BIN_EXE_*` only exists inside the crate that defines the binary. Build it first,
/// as `tests/run-all.sh` does:
///
/// ```text
/// cargo build -p ghost-cli --release && cargo test -p ghost-tests --release
/// ```
pub fn ghost_vmm_binary() -> Result<PathBuf> {
    if let Some(bin) = env::var_os(GHOST_VMM_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(Error::GhostVmmNotBuilt {
                searched: format!("{GHOST_VMM_BIN_ENV}={}", bin.display()),
            })
        };
    }
    let target = target_dir();
    let candidates = [
        target.join("release").join("ghost-vmm"),
        target.join("debug").join("ghost-vmm"),
    ];
    candidates
        .iter()
        .filter_map(|c| {
            let modified = c
                .metadata()
                .ok()?
                .modified()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Some((modified, c))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, c)| c.clone())
        .ok_or_else(|| Error::GhostVmmNotBuilt {
            searched: candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}
