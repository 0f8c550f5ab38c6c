//! Errors in the VM file: each is one line that names the key, and where it is in the file
//! when the configuration came from one.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where in the VM file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The VM file, as the user named it.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub line_col: Option<(usize, usize)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        Ok(())
    }
}

/// Errors reading, parsing or validating a VM file. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The VM file could not be read.
    #[error("cannot read {}: {}", .path.display(), io_reason(.error))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{at}: not valid TOML: {message}")]
    Syntax {
        /// Where parsing stopped.
        at: Location,
        /// What the TOML parser expected.
        message: String,
    },
    /// A key the VM file format does not have (often a typo).
    #[error("{}unknown key `{key}` in {section} (expected one of {expected})", prefix(.at))]
    UnknownKey {
        /// Where the key is.
        at: Option<Location>,
        /// The unknown key.
        key: String,
        /// The section it is in, as written in TOML (`[vm]`, `[[disk]]`, "the top level").
        section: String,
        /// The keys that section has, comma-separated.
        expected: String,
    },
    /// A key is missing, has the wrong type, or a value the VMM cannot use.
    #[error("{}{key}: {message}", prefix(.at))]
    Invalid {
        /// Where the key is (or the section that lacks it).
        at: Option<Location>,
        /// The key, as a path: `memory.size`, `disk[1].path`.
        key: String,
        /// What is wrong and, where it helps, how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// The process exit status for this error: 2, as for all bad user input.
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// The key the error is about (`vm.vcpus`, `disk[0].path`), if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// Where in the VM file the error is, if known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Syntax { at, .. } => Some(at),
            Self::UnknownKey { at, .. } | Self::Invalid { at, .. } => at.as_ref(),
            Self::Read { .. } => None,
        }
    }

    /// An [`Invalid`](Self::Invalid) error with no location yet.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            at: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A value in the VM file that does not parse: a size, a PCI address, a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not {what} ({hint})")]
pub struct ParseValueError {
    shown: String,
    what: &'static str,
    hint: &'static str,
}

impl ParseValueError {
    /// `input` (quoted in the message) is not `what` ("a size"); `hint` says what would be.
    pub(crate) fn new(input: &str, what: &'static str, hint: &'static str) -> Self {
        Self {
            shown: format!("{input:?}"),
            what,
            hint,
        }
    }

    /// Like [`new`](Self::new) for a number, shown unquoted.
    pub(crate) fn number(input: i64, what: &'static str, hint: &'static str) -> Self {
        Self {
            shown: input.to_string(),
            what,
            hint,
        }
    }
}

/// `"file:line:col: "`, or nothing when the location is unknown.
fn prefix(at: &Option<Location>) -> String {
    at.as_ref().map(|l| format!("{l}: ")).unwrap_or_default()
}

/// An I/O error's text without the trailing " (os error N)".
pub(crate) fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}
