//! The harness's error type.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Why the harness could not prepare or run a test host.
///
/// A guest that misbehaves is *not* an error: [`TestHost::run`](super::TestHost::run) returns a
/// [`RunReport`](super::RunReport) whose scenarios say what happened. Errors are reserved for a
/// run that could not take place or produced nothing to assert on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a host path failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What the harness was doing ("reading", "creating", ...).
        what: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A host program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `tests/testhost/setup.sh` failed.
    #[error("test-host setup ({}) failed with {status}; its output ends with:\n{output_tail}", script.display())]
    Setup {
        /// The script that was run.
        script: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its output.
        output_tail: String,
    },
    /// A file the test host needs is missing, even after setup.
    #[error("test-host asset missing: {what} ({}); run tests/testhost/setup.sh", path.display())]
    MissingAsset {
        /// What the file is.
        what: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A host command the harness relies on failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A shared library of a binary copied into the test host could not be resolved by `ldd`.
    #[error("{}: shared library {library} not found (ldd)", binary.display())]
    MissingLibrary {
        /// The binary.
        binary: PathBuf,
        /// The library `ldd` reported as not found.
        library: String,
    },
    /// A kernel module asked for does not exist in the kernel package.
    #[error("kernel {kernel} has no module {module}")]
    UnknownModule {
        /// The kernel version.
        kernel: String,
        /// The module name asked for.
        module: String,
    },
    /// The ghost-vmm binary was not found.
    #[error("ghost-vmm binary not found ({searched}); build it first: cargo build -p ghost-cli --release, or set GHOST_VMM_BIN")]
    GhostVmmNotBuilt {
        /// Where the harness looked.
        searched: String,
    },
    /// The caller's configuration is unusable (a bad scenario name, a relative initramfs path, ...).
    #[error("invalid test-host configuration: {0}")]
    Config(String),
    /// QEMU exited or was killed before the test host's init started: nothing ran.
    #[error("the test host (L2) did not boot: {reason}; console log: {}\n{tail}", log.display())]
    L2DidNotBoot {
        /// What happened (exit status, deadline).
        reason: String,
        /// The console log file.
        log: PathBuf,
        /// The end of the console output and of QEMU's standard error.
        tail: String,
    },
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
