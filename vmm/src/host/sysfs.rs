//! Small readers for sysfs/procfs files and the kernel's CPU list format (`0-3,8,10-11`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::HostError;

/// The file's contents, trimmed.
pub(crate) fn read_trimmed(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| HostError::read(path, e))
}

/// A decimal number file (`nr_hugepages`).
pub(crate) fn read_u64(path: &Path) -> Result<u64, HostError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| not_a_number(path, &text))
}

/// A hex number file with a `0x` prefix (`vendor`, `device`, `class`).
pub(crate) fn read_hex(path: &Path) -> Result<u32, HostError> {
    let text = read_trimmed(path)?;
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    u32::from_str_radix(digits, 16).map_err(|_| not_a_number(path, &text))
}

/// The last component of a symlink's target (`driver` → `vfio-pci`), if it is a link.
pub(crate) fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The entry names of a folder, sorted; empty if it does not exist.
pub(crate) fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn not_a_number(path: &Path, text: &str) -> HostError {
    HostError::read(
        path,
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{text:?} is not a number"),
        ),
    )
}

/// Parses the kernel's CPU list format: `0-3,8,10-11` → [0, 1, 2, 3, 8, 10, 11].
pub fn parse_cpulist(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) =
                    (first.trim().parse().ok()?, last.trim().parse().ok()?);
                if first > last {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Writes CPUs in the kernel's CPU list format: [0, 1, 2, 3, 8] → `0-3,8`.
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while let Some(&first) = sorted.get(i) {
        let mut last = first;
        while sorted.get(i + 1) == Some(&(last + 1)) {
            last += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if first == last {
            let _ = write!(out, "{first}");
        } else {
            let _ = write!(out, "{first}-{last}");
        }
        i += 1;
    }
    out
}
