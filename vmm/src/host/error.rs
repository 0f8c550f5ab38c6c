//! Errors about host resources a VM asks for: one line each, naming the VM file key and the fix.

use std::path::PathBuf;

use crate::config::io_reason;

/// Errors reading host facts, or a host resource the VM file asks for that is not there.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A sysfs/procfs file could not be read or parsed.
    #[error("cannot read {}: {}", .path.display(), io_reason(.error))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The host has no hugepage pool of the size the VM asks for.
    #[error("memory.hugepage_size: this host has no {size} hugepages ({} does not exist); {hint}", .dir.display())]
    NoHugepagePool {
        /// The page size, as the VM file writes it (`2M`, `1G`).
        size: String,
        /// The sysfs folder of that pool.
        dir: PathBuf,
        /// What to do instead.
        hint: &'static str,
    },
    /// The hugepage pool has too few free pages for guest RAM.
    #[error(
        "memory.hugepages: the VM needs {needed} x {size} hugepages but {}; reserve more \
         with: echo {suggest} > {}{note}",
        pool_phrase(*.available, *.total),
        .nr_path.display()
    )]
    NotEnoughHugepages {
        /// Pages the VM needs.
        needed: u64,
        /// Pages free and not reserved by other processes.
        available: u64,
        /// Pages in the pool.
        total: u64,
        /// The page size, as the VM file writes it.
        size: String,
        /// The pool size that would be enough.
        suggest: u64,
        /// The pool's `nr_hugepages` file.
        nr_path: PathBuf,
        /// Extra advice (for 1G pages), starting with a separator, or empty.
        note: &'static str,
    },
    /// A `[[vfio]]` device cannot be passed through as the host is now.
    #[error("{key}: {message}")]
    Vfio {
        /// The VM file key, `vfio[0].host`.
        key: String,
        /// What is in the way and how to fix it.
        message: String,
    },
    /// RLIMIT_MEMLOCK is too low to pin guest RAM for VFIO DMA.
    #[error(
        "vfio: VFIO pins all {needed} of guest RAM but RLIMIT_MEMLOCK is {limit}: raise it \
         (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit) or run as root"
    )]
    Memlock {
        /// Guest RAM, shown as a size.
        needed: String,
        /// The current limit, shown as a size.
        limit: String,
    },
}

impl HostError {
    /// The process exit status for this error: 2, as the host lacks what the VM file asks for.
    pub fn exit_code(&self) -> i32 {
        2
    }

    pub(crate) fn read(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            error,
        }
    }
}

/// How full the pool is, in words.
fn pool_phrase(available: u64, total: u64) -> String {
    if total == 0 {
        "the pool is empty".to_owned()
    } else {
        format!("only {available} of the {total} in the pool are free")
    }
}
