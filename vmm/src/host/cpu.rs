//! Host CPUs: which are online, and the feature flags in `/proc/cpuinfo`.

use std::collections::BTreeSet;

use super::sysfs::{parse_cpulist, read_trimmed};
use super::{Host, HostError};

impl Host {
    /// The online host CPUs, from `/sys/devices/system/cpu/online`.
    pub fn online_cpus(&self) -> Result<Vec<usize>, HostError> {
        let path = self.sys("devices/system/cpu/online");
        let text = read_trimmed(&path)?;
        parse_cpulist(&text).ok_or_else(|| {
            HostError::read(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{text:?} is not a CPU list"),
                ),
            )
        })
    }

    /// The feature flags of the first CPU in `/proc/cpuinfo` (`svm`, `vmx`, `pdpe1gb`, ...).
    pub fn cpu_flags(&self) -> Result<BTreeSet<String>, HostError> {
        let path = self.proc("cpuinfo");
        let text = std::fs::read_to_string(&path).map_err(|e| HostError::read(&path, e))?;
        Ok(parse_cpuinfo_flags(&text))
    }
}

/// The words of the first `flags` line of `/proc/cpuinfo` text (empty if there is none).
pub fn parse_cpuinfo_flags(cpuinfo: &str) -> BTreeSet<String> {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })
        .map(|flags| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}
