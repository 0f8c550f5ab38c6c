//! The VM file (`docs/config.md`): serde structs that mirror it, parsing with one-line errors
//! that name the key and its line, relative-path resolution, and validation against the host.
//!
//! ```no_run
//! let config = ghost_vmm::config::VmConfig::from_file("vm.toml".as_ref())?;
//! println!("{} vCPUs, {} of RAM", config.vm.vcpus, config.memory.size);
//! # Ok::<(), ghost_vmm::config::ConfigError>(())
//! ```

mod duration;
mod error;
mod firmware;
mod mac;
mod messages;
mod pci;
mod sections;
mod size;
mod source;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use duration::TimeSpan;
pub(crate) use error::io_reason;
pub use error::{ConfigError, Location, ParseValueError};
pub use firmware::{FirmwareImage, FV_SIGNATURE_OFFSET};
pub use mac::MacAddr;
pub use pci::PciAddress;
pub use sections::{
    console_socket_of, BootConfig, BootMode, DiskConfig, MemoryConfig, NetConfig, OnReboot,
    SerialConfig, SerialMode, VfioConfig, VmConfig, VmSection, DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB,
    DEFAULT_STOP_TIMEOUT, VCPUS_RANGE,
};
pub use size::{ByteSize, HugepageSize};
pub use validate::{MAX_CMDLINE_LEN, MAX_NAME_LEN, MIN_MEMORY_MIB};

use crate::host::Host;
use source::SourceMap;

impl VmConfig {
    /// Reads, parses and validates the VM file at `path` against this host.
    ///
    /// Relative paths in the file are taken relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_on(path, &Host::system())
    }

    /// [`from_file`](Self::from_file), validating against `host` (a fake sysfs in tests).
    pub fn from_file_on(path: &Path, host: &Host) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let source = SourceMap::parse(path, &text)?;
        let config = Self::deserialize_from(&source, path)?;
        config.validate_on(host).map_err(|e| source.locate(e))?;
        Ok(config)
    }

    /// Parses VM file text without validating it. `file` names it in errors, and its folder
    /// is where relative paths are taken from.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let source = SourceMap::parse(file, text)?;
        Self::deserialize_from(&source, file)
    }

    fn deserialize_from(source: &SourceMap, file: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml_edit::de::from_str(source.text())
            .map_err(|e| messages::from_de_error(source, &e))?;
        config.resolve_paths(&base_dir(file));
        Ok(config)
    }

    /// Makes every relative path in the configuration relative to `base` instead.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let boot = &mut self.boot;
        if boot.firmware.is_some() && boot.firmware_vars.is_none() {
            boot.firmware_vars = Some(PathBuf::from(format!("{}.vars", self.vm.name)));
        }
        let paths = (boot.kernel.iter_mut())
            .chain(boot.initramfs.as_mut())
            .chain(boot.firmware.as_mut())
            .chain(boot.firmware_vars.as_mut())
            .chain(boot.firmware_vars_template.as_mut())
            .chain(self.serial.path.as_mut())
            .chain(self.vm.control_socket.as_mut())
            .chain(self.disk.iter_mut().map(|d| &mut d.path))
            .chain(self.vfio.iter_mut().filter_map(|v| v.rom.as_mut()));
        paths.for_each(resolve);
        if self.boot.firmware_vars_template.is_none() {
            self.boot.firmware_vars_template = self
                .boot
                .firmware
                .as_deref()
                .and_then(firmware::vars_beside);
        }
    }
}

/// The absolute folder of `file` (its folder as given, if that cannot be made absolute).
fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
        }
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}
