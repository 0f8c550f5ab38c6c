//! Scenarios (shell scripts run inside the test host) and what came back from them.

use std::fmt::{self, Write as _};
use std::ops::Index;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Default per-scenario timeout.
pub const DEFAULT_SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// A `/bin/sh` script run inside the test host (L2), as root, with `/lib/ghost.sh` sourced first
/// (see [`TestHost`](super::TestHost) for the helpers and the L2 file layout).
///
/// The script's exit status is the scenario's [`rc`](ScenarioResult::rc). Its output, and the
/// output of everything it starts, goes to the L2 console, which the host reads line by line.
/// The script runs in its own process group; when it exits or times out, whatever it left
/// running is killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// A unique name of `[A-Za-z0-9._-]` characters.
    pub name: String,
    /// The script.
    pub script: String,
    /// Time limit, enforced inside L2 (the process group is killed). Whole seconds; rounded up.
    pub timeout: Duration,
}

impl Scenario {
    /// A scenario with the [`DEFAULT_SCENARIO_TIMEOUT`].
    pub fn new(name: impl Into<String>, script: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            script: script.into(),
            timeout: DEFAULT_SCENARIO_TIMEOUT,
        }
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// One console line, with the time the host read it (since QEMU was started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When the host read the line, since the test host's QEMU was started.
    pub at: Duration,
    /// The text, without `\r`, `\n` and terminal escape sequences.
    pub text: String,
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The script exited with this status.
    Exited(i32),
    /// The in-L2 timeout killed it.
    TimedOut,
    /// It started but no end marker came: L2 crashed, or the host-side deadline killed QEMU.
    Unfinished,
    /// It never started (an earlier failure stopped the test host).
    NotStarted,
}

/// What one [`Scenario`] printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// The script's exit status (`None` if it did not finish).
    pub rc: Option<i32>,
    /// Whether the in-L2 timeout killed it.
    pub timed_out: bool,
    /// When its begin marker was read (since QEMU started).
    pub started_at: Option<Duration>,
    /// When its end marker was read.
    pub ended_at: Option<Duration>,
    /// The console lines between its begin and end markers.
    pub lines: Vec<Line>,
}

impl ScenarioResult {
    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        match (self.started_at, self.rc) {
            (None, _) => Outcome::NotStarted,
            (Some(_), _) if self.timed_out => Outcome::TimedOut,
            (Some(_), Some(rc)) => Outcome::Exited(rc),
            (Some(_), None) => Outcome::Unfinished,
        }
    }

    /// Whether the script exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.outcome() == Outcome::Exited(0)
    }

    /// Whether any line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.find(needle).is_some()
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }

    /// The text after `marker` on the first line containing it, trimmed:
    /// `line_after("CPUS=")` on `CPUS=2` gives `"2"`.
    pub fn line_after(&self, marker: &str) -> Option<&str> {
        let line = self.find(marker)?;
        let start = line.text.find(marker)? + marker.len();
        Some(line.text[start..].trim())
    }

    /// [`line_after`](Self::line_after), parsed (`value::<u64>("MEMTOTAL_KB=")`).
    pub fn value<T: std::str::FromStr>(&self, marker: &str) -> Option<T> {
        self.line_after(marker)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// When the first line containing `needle` was read (since QEMU started).
    pub fn time_of(&self, needle: &str) -> Option<Duration> {
        self.find(needle).map(|l| l.at)
    }

    /// Time from the first line containing `a` to the first line after it containing `b`.
    pub fn time_between(&self, a: &str, b: &str) -> Option<Duration> {
        let i = self.lines.iter().position(|l| l.text.contains(a))?;
        let start = self.lines[i].at;
        let end = self.lines[i..].iter().find(|l| l.text.contains(b))?.at;
        Some(end.saturating_sub(start))
    }

    /// Time from the scenario's start to the first line containing `needle`.
    pub fn time_to(&self, needle: &str) -> Option<Duration> {
        Some(self.time_of(needle)?.saturating_sub(self.started_at?))
    }

    /// The scenario's duration, begin to end marker.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.ended_at?.saturating_sub(self.started_at?))
    }

    /// The output as text, one line each, prefixed with timestamps: for assertion messages.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(out, "[{:8.3}] {}", l.at.as_secs_f64(), l.text);
        }
        out
    }

    /// Panics, with the transcript, unless the script exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.succeeded(),
            "scenario {} ended {:?}; its output:\n{}",
            self.name,
            self.outcome(),
            self.transcript()
        );
    }
}

/// Everything a [`TestHost::run`](super::TestHost::run) observed.
#[derive(Debug)]
pub struct RunReport {
    /// One result per scenario asked for, in the same order.
    pub scenarios: Vec<ScenarioResult>,
    /// Every console line, scenario output included.
    pub lines: Vec<Line>,
    /// When the test host's init announced itself (modules loaded), since QEMU started.
    pub l2_up_at: Option<Duration>,
    /// The L2 init's report line (`kernel=... modules=... skipped=...`).
    pub l2_info: String,
    /// Whether the init reached its end (all scenarios run) before powering off.
    pub completed: bool,
    /// Whether the host-side deadline killed QEMU.
    pub deadline_hit: bool,
    /// QEMU's exit status (`None` if it had to be killed).
    pub exit_status: Option<ExitStatus>,
    /// QEMU's standard error.
    pub qemu_stderr: String,
    /// The console log file on the host.
    pub log_path: PathBuf,
    /// Time from starting QEMU to its exit.
    pub wall: Duration,
    /// Time spent building the initramfs images before starting QEMU.
    pub pack_time: Duration,
    /// Size of the test host's initramfs image in bytes.
    pub l2_image_bytes: u64,
    /// One line per boot that stopped before the end of its scenarios: where it stopped, why,
    /// and what the next boot ran (see [`TestHost::run`](super::TestHost::run)). Empty when
    /// the first boot ran everything.
    pub early_stops: Vec<String>,
}

impl RunReport {
    /// Takes in a later boot's report: its scenario results replace those of the same name,
    /// its lines follow (their times count from that boot's start), and its end (completed,
    /// deadline, QEMU's status and stderr) becomes the run's. Wall and packing times add up;
    /// the boot time, L2's report line and the image size stay the first boot's.
    pub(crate) fn absorb(&mut self, later: RunReport) {
        for result in later.scenarios {
            match self.scenarios.iter_mut().find(|s| s.name == result.name) {
                Some(slot) => *slot = result,
                None => self.scenarios.push(result),
            }
        }
        self.lines.extend(later.lines);
        self.completed = later.completed;
        self.deadline_hit = later.deadline_hit;
        self.exit_status = later.exit_status;
        self.qemu_stderr = later.qemu_stderr;
        self.wall += later.wall;
        self.pack_time += later.pack_time;
        self.early_stops.extend(later.early_stops);
    }

    /// The result of the scenario called `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// A `key=value` word of [`l2_info`](Self::l2_info): `kernel`, `cpus`, `modules` (loaded,
    /// comma-separated) or `skipped` (missing or failed modules, comma-separated).
    pub fn l2_field(&self, key: &str) -> Option<&str> {
        self.l2_info
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// The L2 modules that were loaded.
    pub fn l2_modules(&self) -> Vec<&str> {
        self.l2_field("modules").map_or_else(Vec::new, |m| {
            m.split(',').filter(|m| !m.is_empty()).collect()
        })
    }

    /// The L2 modules that were missing from the kernel package or failed to load.
    pub fn l2_skipped_modules(&self) -> Vec<&str> {
        self.l2_field("skipped").map_or_else(Vec::new, |m| {
            m.split(',').filter(|m| !m.is_empty()).collect()
        })
    }

    /// Time from starting QEMU to the L2 init's announcement.
    pub fn l2_boot_time(&self) -> Option<Duration> {
        self.l2_up_at
    }

    /// Whether every scenario exited with status 0.
    pub fn all_succeeded(&self) -> bool {
        self.scenarios.iter().all(ScenarioResult::succeeded)
    }

    /// The last `n` console lines, for messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        let mut out = String::new();
        for l in &self.lines[start..] {
            let _ = writeln!(out, "[{:8.3}] {}", l.at.as_secs_f64(), l.text);
        }
        out
    }
}

impl Index<&str> for RunReport {
    type Output = ScenarioResult;

    /// The scenario called `name`; panics if there was none.
    fn index(&self, name: &str) -> &ScenarioResult {
        match self.scenario(name) {
            Some(s) => s,
            None => panic!("no scenario named {name:?} in this run"),
        }
    }
}

impl fmt::Display for RunReport {
    /// A summary: timings and one line per scenario.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
        writeln!(
            f,
            "test host: packed {:.1} MiB in {:.1}s, L2 up at {}, wall {:.1}s{}{}; log {}",
            self.l2_image_bytes as f64 / f64::from(1 << 20),
            self.pack_time.as_secs_f64(),
            secs(self.l2_up_at),
            self.wall.as_secs_f64(),
            if self.completed { "" } else { ", INCOMPLETE" },
            if self.deadline_hit {
                ", DEADLINE HIT"
            } else {
                ""
            },
            self.log_path.display()
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "  {:<24} {:?} in {}",
                s.name,
                s.outcome(),
                secs(s.duration())
            )?;
        }
        for stop in &self.early_stops {
            writeln!(f, "  {stop}")?;
        }
        if !self.completed {
            // Why L2 stopped early: QEMU's own word (an abort in an emulated device, say).
            let status = self
                .exit_status
                .map_or_else(|| "killed".to_owned(), |s| s.to_string());
            writeln!(
                f,
                "  QEMU (L1) {status}; its stderr: {}",
                self.qemu_stderr.trim()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(lines: &[(u64, &str)]) -> ScenarioResult {
        ScenarioResult {
            name: "t".into(),
            rc: Some(0),
            started_at: Some(Duration::from_millis(100)),
            ended_at: Some(Duration::from_millis(900)),
            lines: lines
                .iter()
                .map(|(ms, t)| Line {
                    at: Duration::from_millis(*ms),
                    text: (*t).to_owned(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn helpers_find_values_and_times() {
        let r = result(&[
            (200, "boot"),
            (300, "CPUS=2"),
            (500, "MEMTOTAL_KB=123 kB"),
            (700, "READY"),
        ]);
        assert!(r.succeeded());
        assert_eq!(r.line_after("CPUS="), Some("2"));
        assert_eq!(r.value::<u64>("MEMTOTAL_KB="), Some(123));
        assert_eq!(
            r.time_between("boot", "READY"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(r.time_between("READY", "boot"), None);
        assert_eq!(r.time_to("CPUS="), Some(Duration::from_millis(200)));
        assert_eq!(r.duration(), Some(Duration::from_millis(800)));
    }

    #[test]
    fn outcomes() {
        let mut r = result(&[]);
        r.rc = Some(3);
        assert_eq!(r.outcome(), Outcome::Exited(3));
        r.timed_out = true;
        assert_eq!(r.outcome(), Outcome::TimedOut);
        r.timed_out = false;
        r.rc = None;
        assert_eq!(r.outcome(), Outcome::Unfinished);
        r.started_at = None;
        assert_eq!(r.outcome(), Outcome::NotStarted);
    }
}
