//! Unit tests for the VM file: parsing every key, values, error messages, validation.
//!
//! Each test writes a VM file into a temporary folder next to small kernel/initramfs/disk
//! files and a fake host (`host/sys/...`), so validation never looks at the real machine.

#![allow(clippy::unwrap_used)]

mod errors;
mod firmware;
mod parse;
mod validate;
mod values;

use std::fs;
use std::path::{Path, PathBuf};

use super::{ConfigError, VmConfig};
use crate::host::Host;

/// The smallest valid VM file.
const MINIMAL: &str = "[vm]\nname = \"test\"\n\n[boot]\nkernel = \"vmlinuz\"\n";

/// A folder with guest files, a fake host with 4 online CPUs and PCI device 0000:01:00.0.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in ["vmlinuz", "initrd.img", "root.img", "data.img", "vbios.rom"] {
            fs::write(root.join(file), b"x").unwrap();
        }
        let sys = root.join("host/sys");
        fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
        fs::write(sys.join("devices/system/cpu/online"), "0-3\n").unwrap();
        for dev in ["0000:01:00.0", "0000:01:00.1"] {
            fs::create_dir_all(sys.join("bus/pci/devices").join(dev)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host(&self) -> Host {
        Host::at_root(&self.path("host"))
    }

    /// Writes `text` as `vm.toml` and loads it against the fake host.
    fn load(&self, text: &str) -> Result<VmConfig, ConfigError> {
        let file = self.path("vm.toml");
        fs::write(&file, text).unwrap();
        VmConfig::from_file_on(&file, &self.host())
    }
}

/// Loads `text` in a fresh fixture; panics if it does not load.
fn load(text: &str) -> VmConfig {
    Fixture::new()
        .load(text)
        .unwrap_or_else(|e| panic!("expected {text:?} to load, got: {e}"))
}

/// Loads `text` in a fresh fixture, expects an error, checks it is one line and returns it.
fn error(text: &str) -> String {
    error_in(&Fixture::new(), text)
}

fn error_in(fixture: &Fixture, text: &str) -> String {
    let message = match fixture.load(text) {
        Ok(config) => panic!("expected {text:?} to fail, got {config:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!message.contains('\n'), "not one line: {message:?}");
    message
}

/// Checks that `message` has `file:line:` at its start (after the temp folder) and `parts`.
fn assert_error(message: &str, line: usize, parts: &[&str]) {
    let at = format!("vm.toml:{line}:");
    assert!(message.contains(&at), "{message:?} lacks {at:?}");
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

/// `MINIMAL` with `extra` appended.
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn in_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
