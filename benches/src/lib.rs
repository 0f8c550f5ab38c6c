//! ghost-vmm's benchmarks against QEMU: the figures, their samples, and the results table.
//!
//! The harness (`src/main.rs`, binary `ghost-bench`) runs the same guest workloads under each
//! VMM inside one nested test-host run and feeds what the guests print into [`Samples`];
//! [`Samples::table`] renders medians and ratios. Only same-run ratios mean anything on a
//! shared, emulated machine, so every figure is taken for every VMM in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Which direction is good for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (times, memory).
    Lower,
    /// Larger is better (throughput).
    Higher,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    /// Stable key, as the harness records samples.
    pub key: &'static str,
    /// What it measures, for the table.
    pub label: &'static str,
    /// Unit of the values.
    pub unit: &'static str,
    /// Which direction is good.
    pub better: Better,
    /// Whether only ghost-vmm can report it (its own boot timer and exit counters).
    pub ghost_only: bool,
}

const fn fig(key: &'static str, label: &'static str, unit: &'static str, better: Better) -> Figure {
    Figure {
        key,
        label,
        unit,
        better,
        ghost_only: false,
    }
}

const fn ghost_only(key: &'static str, label: &'static str, unit: &'static str) -> Figure {
    Figure {
        key,
        label,
        unit,
        better: Better::Lower,
        ghost_only: true,
    }
}

/// Every figure, in table order.
pub const FIGURES: &[Figure] = &[
    fig(
        "boot_ms",
        "boot: VMM start to guest init",
        "ms",
        Better::Lower,
    ),
    fig(
        "boot_2cpu_ms",
        "boot: VMM start to guest init, 2 vCPUs",
        "ms",
        Better::Lower,
    ),
    fig(
        "boot_4cpu_ms",
        "boot: VMM start to guest init, 4 vCPUs",
        "ms",
        Better::Lower,
    ),
    fig(
        "boot_elf_ms",
        "boot of the ELF vmlinux: VMM start to guest init, 1 vCPU",
        "ms",
        Better::Lower,
    ),
    fig(
        "boot_elf_2cpu_ms",
        "boot of the ELF vmlinux: VMM start to guest init, 2 vCPUs",
        "ms",
        Better::Lower,
    ),
    fig(
        "boot_elf_4cpu_ms",
        "boot of the ELF vmlinux: VMM start to guest init, 4 vCPUs",
        "ms",
        Better::Lower,
    ),
    fig(
        "exit_ms",
        "exit: guest poweroff to VMM exit",
        "ms",
        Better::Lower,
    ),
    ghost_only("timer_ms", "boot timer: guest's own milestone (init)", "ms"),
    ghost_only("boot_exits", "exits to the VMM until init", "exits"),
    fig(
        "debian_boot_s",
        "boot: Debian 12 (systemd), VMM start to multi-user (GHOST-READY)",
        "s",
        Better::Lower,
    ),
    fig(
        "debian_uptime_s",
        "boot: Debian 12, guest's own uptime at GHOST-READY",
        "s",
        Better::Lower,
    ),
    fig(
        "debian_stop_s",
        "stop: Debian 12, stop request (ACPI power button) to VMM exit",
        "s",
        Better::Lower,
    ),
    fig(
        "firmware_boot_s",
        "firmware boot: VMM start to multi-user (GHOST-READY), installed Debian via OVMF",
        "s",
        Better::Lower,
    ),
    fig(
        "firmware_share_s",
        "firmware's share: VMM start to the kernel's first line (`Linux version`)",
        "s",
        Better::Lower,
    ),
    // ghost-vmm's control API counters (PIO + MMIO), sampled when the kernel's banner appears
    // on the console: the firmware's exits, and the kernel's first few.
    ghost_only(
        "firmware_exits",
        "exits to the VMM during the firmware (sampled at `Linux version`)",
        "exits",
    ),
    fig(
        "firmware_stop_s",
        "stop: installed Debian via OVMF, stop request (ACPI power button) to VMM exit",
        "s",
        Better::Lower,
    ),
    fig(
        "rss_overhead_mib",
        "memory: VMM RSS beyond guest RAM (idle)",
        "MiB",
        Better::Lower,
    ),
    fig(
        "seq_write_mbs",
        "block: sequential write",
        "MB/s",
        Better::Higher,
    ),
    fig(
        "seq_read_mbs",
        "block: sequential read",
        "MB/s",
        Better::Higher,
    ),
    fig(
        "rand_read_iops",
        "block: 4k random read, QD1",
        "IOPS",
        Better::Higher,
    ),
    fig(
        "tcp_mbs",
        "net: guest to host TCP over TAP",
        "MB/s",
        Better::Higher,
    ),
    fig(
        "pio_exit_ns",
        "exit: PIO to emulated config space (0xCF8/0xCFC)",
        "ns",
        Better::Lower,
    ),
    fig(
        "mmio_exit_ns",
        "exit: MMIO read of virtio-pci common config",
        "ns",
        Better::Lower,
    ),
    fig(
        "bar_read_ns",
        "passthrough: edu BAR register read",
        "ns",
        Better::Lower,
    ),
    fig(
        "nvme_admin_us",
        "passthrough: nvme admin command, MSI-X completion",
        "us",
        Better::Lower,
    ),
    fig(
        "nvme_iops",
        "passthrough: nvme 4k random read, QD1",
        "IOPS",
        Better::Higher,
    ),
];

/// The figure with `key`.
pub fn figure(key: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.key == key)
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Samples per VMM and figure. VMMs are kept in the order they were first recorded; the
/// first is the one the others are compared with (ghost-vmm).
#[derive(Debug, Default, Clone)]
pub struct Samples {
    vmms: Vec<String>,
    values: BTreeMap<(String, &'static str), Vec<f64>>,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `vmm` a column even before it has samples.
    pub fn add_vmm(&mut self, vmm: &str) {
        if !self.vmms.iter().any(|v| v == vmm) {
            self.vmms.push(vmm.to_owned());
        }
    }

    /// Records one sample. Unknown keys are a harness bug: they panic.
    pub fn record(&mut self, vmm: &str, key: &str, value: f64) {
        let figure = figure(key).unwrap_or_else(|| panic!("unknown figure {key}"));
        self.add_vmm(vmm);
        self.values
            .entry((vmm.to_owned(), figure.key))
            .or_default()
            .push(value);
    }

    /// The samples of one figure for one VMM.
    pub fn get(&self, vmm: &str, key: &str) -> &[f64] {
        self.values
            .iter()
            .find(|((v, k), _)| v == vmm && *k == key)
            .map(|(_, s)| s.as_slice())
            .unwrap_or(&[])
    }

    /// The VMM columns, ghost-vmm first.
    pub fn vmms(&self) -> &[String] {
        &self.vmms
    }

    /// Figures a VMM should have and has no sample of: `(vmm, key)`. Ghost-only figures are
    /// expected of the first VMM only.
    pub fn missing(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for (i, vmm) in self.vmms.iter().enumerate() {
            for f in FIGURES {
                if (i == 0 || !f.ghost_only) && self.get(vmm, f.key).is_empty() {
                    out.push((vmm.clone(), f.key));
                }
            }
        }
        out
    }

    /// The markdown table: per figure the median of each VMM (with the sample count when it
    /// differs from `runs`), and the ratio of the first VMM to each other one.
    pub fn table(&self, runs: usize) -> String {
        let mut out = String::from("| figure | unit |");
        for vmm in &self.vmms {
            let _ = write!(out, " {vmm} |");
        }
        for vmm in self.vmms.iter().skip(1) {
            let _ = write!(out, " ratio to {vmm} |");
        }
        out.push_str(" better |\n|---|---|");
        for _ in 0..(2 * self.vmms.len()).saturating_sub(1) {
            out.push_str("---:|");
        }
        out.push_str("---|\n");
        for f in FIGURES {
            let _ = write!(out, "| {} | {} |", f.label, f.unit);
            let medians: Vec<Option<f64>> = self
                .vmms
                .iter()
                .map(|v| median(self.get(v, f.key)))
                .collect();
            for (vmm, m) in self.vmms.iter().zip(&medians) {
                let n = self.get(vmm, f.key).len();
                match m {
                    Some(m) if n == runs => {
                        let _ = write!(out, " {} |", format_value(*m));
                    }
                    Some(m) => {
                        let _ = write!(out, " {} (n={n}) |", format_value(*m));
                    }
                    None => out.push_str(" — |"),
                }
            }
            for m in medians.iter().skip(1) {
                match (medians.first().copied().flatten(), m) {
                    (Some(g), Some(o)) if *o != 0.0 => {
                        let _ = write!(out, " {:.2} |", g / o);
                    }
                    _ => out.push_str(" — |"),
                }
            }
            let _ = writeln!(
                out,
                " {} |",
                match f.better {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                }
            );
        }
        out
    }
}

/// A value with as many decimals as its size deserves.
fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Where a run of `date` writes its results in `dir`: `<date>.md`, or, when an earlier run of
/// the same day is there, the first free of `<date>-2.md`, `<date>-3.md`, ... (a results
/// file is never overwritten).
pub fn results_path(dir: &Path, date: &str) -> PathBuf {
    let mut n = 1;
    loop {
        let name = if n == 1 {
            format!("{date}.md")
        } else {
            format!("{date}-{n}.md")
        };
        let path = dir.join(name);
        if !path.exists() {
            return path;
        }
        n += 1;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The order the VMMs (indices `0..vmms`) run in, in run `run` (from 1): rotated by one each
/// run, so that every VMM goes first as often as the others and a drift over a test-host boot
/// (caches warming, a neighbour's load) does not favour a fixed position.
pub fn run_order(run: usize, vmms: usize) -> Vec<usize> {
    if vmms == 0 {
        return Vec::new();
    }
    let first = run.saturating_sub(1) % vmms;
    (0..vmms).map(|i| (first + i) % vmms).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vmm_goes_first_in_turn() {
        assert_eq!(run_order(1, 3), [0, 1, 2]);
        assert_eq!(run_order(2, 3), [1, 2, 0]);
        assert_eq!(run_order(3, 3), [2, 0, 1]);
        assert_eq!(run_order(4, 3), [0, 1, 2]);
        assert_eq!(run_order(1, 0), Vec::<usize>::new());
        // Every run holds every VMM once.
        for run in 1..=7 {
            let mut order = run_order(run, 4);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn table_has_medians_ratios_and_marks_short_samples() {
        let mut s = Samples::new();
        for v in [100.0, 120.0, 110.0] {
            s.record("ghost-vmm", "boot_ms", v);
        }
        for v in [200.0, 220.0, 210.0] {
            s.record("QEMU q35", "boot_ms", v);
        }
        s.record("ghost-vmm", "timer_ms", 80.0);
        s.record("QEMU q35", "tcp_mbs", 40.0);
        let t = s.table(3);
        assert!(
            t.contains("| boot: VMM start to guest init | ms | 110 | 210 | 0.52 | lower |"),
            "{t}"
        );
        assert!(t.contains("| 80.0 (n=1) | — | — | lower |"), "{t}");
        assert!(t.contains("| — | 40.0 (n=1) | — | higher |"), "{t}");
        let missing = s.missing();
        assert!(missing.contains(&("ghost-vmm".into(), "tcp_mbs")));
        assert!(
            !missing.contains(&("QEMU q35".into(), "timer_ms")),
            "ghost-only"
        );
        assert!(!missing.contains(&("ghost-vmm".into(), "boot_ms")));
    }

    #[test]
    fn a_second_run_of_the_day_gets_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let first = results_path(dir.path(), "2026-12-02");
        assert_eq!(first, dir.path().join("2026-12-02.md"));
        std::fs::write(&first, "1").unwrap();
        let second = results_path(dir.path(), "2026-12-02");
        assert_eq!(second, dir.path().join("2026-12-02-2.md"));
        std::fs::write(&second, "2").unwrap();
        assert_eq!(
            results_path(dir.path(), "2026-12-02"),
            dir.path().join("2026-12-02-3.md")
        );
        assert_eq!(
            results_path(dir.path(), "2026-12-03"),
            dir.path().join("2026-12-03.md")
        );
    }

    #[test]
    #[should_panic(expected = "unknown figure")]
    fn unknown_figures_are_a_harness_bug() {
        Samples::new().record("x", "nope", 1.0);
    }
}
