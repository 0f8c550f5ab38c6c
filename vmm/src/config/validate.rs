//! Checks a parsed VM file for values the VMM cannot use, before anything touches the host.
//! Each error names the key; the first one found (in file order) is returned.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::error::{io_reason, ConfigError};
use super::sections::{BootMode, SerialMode, VmConfig, VCPUS_RANGE};
use super::size::ByteSize;
use crate::host::{format_cpulist, Host};

/// Smallest guest RAM, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Longest kernel command line, in bytes (64 KiB - 1).
pub const MAX_CMDLINE_LEN: usize = 64 * 1024 - 1;
/// Longest VM name.
pub const MAX_NAME_LEN: usize = 64;
/// Guest RAM is mapped in pages of this size.
const PAGE_SIZE: u64 = 4096;
/// Longest Linux network interface name (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

type Check = Result<(), ConfigError>;

impl VmConfig {
    /// Checks every value against the rules in `docs/config.md` and against this host
    /// (online CPUs, files, PCI devices).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_on(&Host::system())
    }

    /// [`validate`](Self::validate) against `host` (a fake sysfs in tests).
    pub fn validate_on(&self, host: &Host) -> Result<(), ConfigError> {
        self.check_vm(host)?;
        self.check_memory()?;
        self.check_boot()?;
        self.check_serial()?;
        self.check_disks()?;
        self.check_nets()?;
        self.check_vfio(host)
    }

    fn check_vm(&self, host: &Host) -> Check {
        check_name(&self.vm.name)?;
        match (&self.vm.user, &self.vm.group) {
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "vm.group",
                    "needs vm.user (the group a user runs as)",
                ))
            }
            (Some(user), group) => {
                ghost_sandbox::privileges::Identity::resolve(user, group.as_deref())
                    .map_err(|e| ConfigError::invalid("vm.user", e.to_string()))?;
            }
            (None, None) => {}
        }
        let vcpus = self.vm.vcpus;
        if !VCPUS_RANGE.contains(&vcpus) {
            return Err(ConfigError::invalid(
                "vm.vcpus",
                format!(
                    "{vcpus} is out of range ({} to {})",
                    VCPUS_RANGE.start(),
                    VCPUS_RANGE.end()
                ),
            ));
        }
        let Some(affinity) = &self.vm.cpu_affinity else {
            return Ok(());
        };
        if affinity.len() != usize::from(vcpus) {
            return Err(ConfigError::invalid(
                "vm.cpu_affinity",
                format!(
                    "lists {} host CPU(s) but vm.vcpus = {vcpus}: give one host CPU per vCPU",
                    affinity.len()
                ),
            ));
        }
        let online = match host.online_cpus() {
            Ok(online) => online,
            Err(e) => {
                log::warn!("vm.cpu_affinity: not checked against online CPUs: {e}");
                return Ok(());
            }
        };
        for (i, cpu) in affinity.iter().enumerate() {
            if !online.contains(cpu) {
                return Err(ConfigError::invalid(
                    format!("vm.cpu_affinity[{i}]"),
                    format!(
                        "host CPU {cpu} is not online on this host (online: {})",
                        format_cpulist(&online)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_memory(&self) -> Check {
        let m = &self.memory;
        let size = m.size.bytes();
        if size < MIN_MEMORY_MIB << 20 {
            return Err(ConfigError::invalid(
                "memory.size",
                format!("{} is too small (at least {MIN_MEMORY_MIB}M)", m.size),
            ));
        }
        // Page sizes are powers of two: a mask tests divisibility.
        if m.hugepages && size & (m.hugepage_size.bytes() - 1) != 0 {
            return Err(ConfigError::invalid(
                "memory.size",
                format!(
                    "{} is not a multiple of the {} hugepage size (hugepages = true): use {}",
                    m.size,
                    m.hugepage_size,
                    ByteSize::from_bytes(size.next_multiple_of(m.hugepage_size.bytes()))
                ),
            ));
        }
        if size & (PAGE_SIZE - 1) != 0 {
            return Err(ConfigError::invalid(
                "memory.size",
                format!("{} is not a multiple of the 4K page size", m.size),
            ));
        }
        Ok(())
    }

    fn check_boot(&self) -> Check {
        match self.boot.mode() {
            BootMode::Firmware { code, vars, .. } => super::firmware::check(&self.boot, code, vars),
            BootMode::Kernel {
                initramfs, cmdline, ..
            } => {
                let Some(kernel) = &self.boot.kernel else {
                    return Err(ConfigError::invalid(
                        "boot",
                        "set `kernel` (direct kernel boot) or `firmware` (UEFI boot from the \
                         disks)",
                    ));
                };
                check_readable_file("boot.kernel", kernel)?;
                if let Some(initramfs) = initramfs {
                    check_readable_file("boot.initramfs", initramfs)?;
                }
                check_cmdline(cmdline)
            }
        }
    }

    fn check_serial(&self) -> Check {
        let serial = &self.serial;
        match (serial.mode, &serial.path) {
            (SerialMode::File, None) => Err(ConfigError::invalid(
                "serial.path",
                "required with mode = \"file\": name the file the console is written to",
            )),
            (SerialMode::File | SerialMode::Socket, Some(path)) => {
                if path.is_dir() {
                    return Err(ConfigError::invalid(
                        "serial.path",
                        format!("{} is a folder, not a file", path.display()),
                    ));
                }
                match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                        Err(ConfigError::invalid(
                            "serial.path",
                            format!("folder {} does not exist", dir.display()),
                        ))
                    }
                    _ => Ok(()),
                }
            }
            (mode, Some(_)) => Err(ConfigError::invalid(
                "serial.path",
                format!("only used with mode = \"file\" or \"socket\" (mode is \"{mode}\")"),
            )),
            (_, None) => Ok(()),
        }
    }

    fn check_disks(&self) -> Check {
        let mut seen = HashMap::new();
        for (i, disk) in self.disk.iter().enumerate() {
            let key = format!("disk[{i}].path");
            check_disk_image(&key, &disk.path, disk.readonly)?;
            let id = std::fs::canonicalize(&disk.path).unwrap_or_else(|_| disk.path.clone());
            if let Some(first) = seen.insert(id, i) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{} is already disk[{first}]: one image attached twice corrupts it",
                        disk.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_nets(&self) -> Check {
        let mut taps = HashMap::new();
        let mut macs = HashMap::new();
        for (i, net) in self.net.iter().enumerate() {
            check_tap_name(i, &net.tap)?;
            if let Some(first) = taps.insert(net.tap.as_str(), i) {
                return Err(ConfigError::invalid(
                    format!("net[{i}].tap"),
                    format!("{:?} is already used by net[{first}]", net.tap),
                ));
            }
            let mac = net.effective_mac(&self.vm.name, i);
            let key = format!("net[{i}].mac");
            if mac.is_multicast() || mac.bytes() == [0; 6] {
                return Err(ConfigError::invalid(
                    key,
                    format!("{mac} cannot be a NIC's address: use a unicast one (first byte even), e.g. 52:54:00:12:34:56"),
                ));
            }
            if let Some(first) = macs.insert(mac, i) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{mac} is already the MAC of net[{first}]"),
                ));
            }
        }
        Ok(())
    }

    fn check_vfio(&self, host: &Host) -> Check {
        let mut seen = HashMap::new();
        for (i, vfio) in self.vfio.iter().enumerate() {
            let key = format!("vfio[{i}].host");
            if let Some(first) = seen.insert(vfio.host, i) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is already vfio[{first}]", vfio.host),
                ));
            }
            if !host.pci_device_exists(vfio.host) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "there is no PCI device {} on this host (`lspci -D` lists them)",
                        vfio.host
                    ),
                ));
            }
            if let Some(rom) = &vfio.rom {
                let key = format!("vfio[{i}].rom");
                if !vfio.rombar {
                    return Err(ConfigError::invalid(
                        key,
                        "a ROM file needs the ROM BAR: remove `rombar = false` or `rom`",
                    ));
                }
                check_readable_file(&key, rom)?;
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Check {
    let invalid = |message: String| Err(ConfigError::invalid("vm.name", message));
    if name.is_empty() {
        return invalid("must not be empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return invalid(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return invalid(format!(
            "{name:?} has {c:?}: use only letters, digits, '-', '_' and '.'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid(format!("{name:?} must start with a letter or digit"));
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace, not "." or "..".
fn check_tap_name(index: usize, tap: &str) -> Check {
    let problem = if tap.is_empty() {
        Some("must not be empty".to_owned())
    } else if tap.len() > MAX_IFNAME_LEN {
        Some(format!(
            "{tap:?} is longer than {MAX_IFNAME_LEN} bytes, the Linux limit for interface names"
        ))
    } else if tap == "."
        || tap == ".."
        || tap.contains(['/', ':'])
        || tap.contains(char::is_whitespace)
    {
        Some(format!(
            "{tap:?} is not a valid interface name (no '/', ':' or spaces)"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(ConfigError::invalid(format!("net[{index}].tap"), message)),
        None => Ok(()),
    }
}

/// A regular file that this process can open for reading.
fn check_cmdline(cmdline: &str) -> Check {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(ConfigError::invalid(
            "boot.cmdline",
            format!(
                "is {} bytes long (at most {MAX_CMDLINE_LEN})",
                cmdline.len()
            ),
        ));
    }
    if cmdline.contains('\0') {
        return Err(ConfigError::invalid(
            "boot.cmdline",
            "contains a NUL character",
        ));
    }
    Ok(())
}

fn check_readable_file(key: &str, path: &Path) -> Check {
    let cannot = |why: String| {
        Err(ConfigError::invalid(
            key,
            format!("cannot read {}: {why}", path.display()),
        ))
    };
    match std::fs::metadata(path) {
        Err(e) => return cannot(io_reason(&e)),
        Ok(m) if !m.is_file() => return cannot("not a regular file".to_owned()),
        Ok(_) => {}
    }
    match File::open(path) {
        Ok(_) => Ok(()),
        Err(e) => cannot(io_reason(&e)),
    }
}

/// A regular file or block device, readable, and writable unless `readonly`.
fn check_disk_image(key: &str, path: &Path, readonly: bool) -> Check {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| {
        ConfigError::invalid(key, format!("cannot open {shown}: {}", io_reason(&e)))
    })?;
    let kind = metadata.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(ConfigError::invalid(
            key,
            format!("{shown} is not a disk image file or block device"),
        ));
    }
    if readonly {
        File::open(path).map(drop).map_err(|e| {
            ConfigError::invalid(key, format!("cannot open {shown}: {}", io_reason(&e)))
        })
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!(
                        "cannot open {shown} read-write: {} (add `readonly = true` to attach it read-only)",
                        io_reason(&e)
                    ),
                )
            })
    }
}
