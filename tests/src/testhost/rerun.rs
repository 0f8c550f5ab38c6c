//! What a test-host boot that stopped early leaves to a fresh boot (see `TestHost::run`).

use std::collections::BTreeMap;
use std::path::Path;

use super::scenario::{Outcome, RunReport, Scenario, ScenarioResult};

/// How many times one scenario may be under an L2 that stops: the emulated CPU's rare faults
/// (tests/testhost/README.md, "Flakes") killed L2 in about one of four OVMF boots before L3
/// left CPU 0, and may still now and then, so a scenario runs a third time before its stops
/// count as its result.
pub(crate) const MAX_STOPS_UNDER: u32 = 3;

/// What a boot that stopped early left to run, in order: every scenario that never started,
/// and the one that was running when L2 stopped unless L2 has now stopped under it
/// [`MAX_STOPS_UNDER`] times (`stops`, counted per scenario across the run's boots).
pub(crate) fn left_over(
    scenarios: &[Scenario],
    report: &RunReport,
    stops: &mut BTreeMap<String, u32>,
) -> Vec<Scenario> {
    scenarios
        .iter()
        .filter(
            |s| match report.scenario(&s.name).map(ScenarioResult::outcome) {
                Some(Outcome::NotStarted) | None => true,
                Some(Outcome::Unfinished) => {
                    let n = stops.entry(s.name.clone()).or_insert(0);
                    *n += 1;
                    *n < MAX_STOPS_UNDER
                }
                Some(_) => false,
            },
        )
        .cloned()
        .collect()
}

/// Where and how one boot stopped early.
pub(crate) struct Stop {
    /// The scenario that was running, if any.
    running: Option<String>,
    /// What ended L1 QEMU.
    how: String,
}

impl Stop {
    /// `None` for a boot that ran to its end.
    pub(crate) fn of(report: &RunReport) -> Option<Stop> {
        if report.completed {
            return None;
        }
        let running = report
            .scenarios
            .iter()
            .find(|s| s.outcome() == Outcome::Unfinished)
            .map(|s| s.name.clone());
        let how = if report.deadline_hit {
            "QEMU killed at a deadline".to_owned()
        } else {
            match report.exit_status {
                Some(status) => format!("L1 QEMU exited ({status})"),
                None => "L1 QEMU was killed".to_owned(),
            }
        };
        Some(Stop { running, how })
    }

    /// One line: which boot stopped where and why, and what happens to what it left
    /// (`again`; `more`: whether a fresh boot runs it).
    pub(crate) fn describe(&self, boot: u32, log: &Path, again: &[Scenario], more: bool) -> String {
        let at = self
            .running
            .as_ref()
            .map_or_else(|| "between scenarios".to_owned(), |s| format!("during {s}"));
        let names: Vec<&str> = again.iter().map(|s| s.name.as_str()).collect();
        let next = match (names.is_empty(), more) {
            (true, _) => "nothing left to run again".to_owned(),
            (false, true) => format!("a fresh boot runs {}", names.join(", ")),
            (false, false) => format!("this run boots no more; not run: {}", names.join(", ")),
        };
        format!(
            "boot {boot} stopped early {at} ({}; log {}): {next}",
            self.how,
            log.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::testhost::scenario::Line;

    fn result(name: &str, started: bool, rc: Option<i32>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            rc,
            started_at: started.then(|| Duration::from_secs(1)),
            ended_at: rc.map(|_| Duration::from_secs(2)),
            lines: vec![Line {
                at: Duration::from_secs(1),
                text: format!("{name} said"),
            }],
            ..Default::default()
        }
    }

    fn report(results: Vec<ScenarioResult>, completed: bool) -> RunReport {
        RunReport {
            scenarios: results,
            lines: Vec::new(),
            l2_up_at: Some(Duration::from_secs(10)),
            l2_info: String::new(),
            completed,
            deadline_hit: !completed,
            exit_status: None,
            qemu_stderr: String::new(),
            log_path: PathBuf::from("console.log"),
            wall: Duration::from_secs(100),
            pack_time: Duration::from_secs(1),
            l2_image_bytes: 1,
            early_stops: Vec::new(),
        }
    }

    fn scenarios(names: &[&str]) -> Vec<Scenario> {
        names.iter().map(|n| Scenario::new(*n, "true")).collect()
    }

    fn names(s: &[Scenario]) -> Vec<&str> {
        s.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_stopped_boot_leaves_those_never_started_and_the_running_one_up_to_its_third_run() {
        let all = scenarios(&["passed", "failed", "wedged", "later"]);
        let first = report(
            vec![
                result("passed", true, Some(0)),
                result("failed", true, Some(1)),
                result("wedged", true, None),
                result("later", false, None),
            ],
            false,
        );
        let mut stops = BTreeMap::new();
        let again = left_over(&all, &first, &mut stops);
        // A scenario's own failure is its result; only the test host's stop is run again.
        assert_eq!(names(&again), ["wedged", "later"]);
        let stop = Stop::of(&first).expect("an early stop");
        let line = stop.describe(1, Path::new("console.log"), &again, true);
        assert!(
            line.contains("boot 1 stopped early during wedged"),
            "{line}"
        );
        assert!(line.contains("QEMU killed at a deadline"), "{line}");
        assert!(line.ends_with("a fresh boot runs wedged, later"), "{line}");
        let line = stop.describe(3, Path::new("console-3.log"), &again, false);
        assert!(
            line.ends_with("boots no more; not run: wedged, later"),
            "{line}"
        );
        assert!(Stop::of(&report(Vec::new(), true)).is_none());

        // The same scenario stops the second boot too: it runs a third time, not a fourth.
        let mut merged = first;
        let again_stopped = || {
            report(
                vec![result("wedged", true, None), result("later", false, None)],
                false,
            )
        };
        merged.absorb(again_stopped());
        assert_eq!(
            names(&left_over(&all, &merged, &mut stops)),
            ["wedged", "later"]
        );
        merged.absorb(again_stopped());
        assert_eq!(names(&left_over(&all, &merged, &mut stops)), ["later"]);
    }

    #[test]
    fn a_later_boot_replaces_what_it_ran_and_ends_the_run() {
        let mut first = report(
            vec![
                result("passed", true, Some(0)),
                result("wedged", true, None),
                result("later", false, None),
            ],
            false,
        );
        first.lines.push(Line {
            at: Duration::from_secs(5),
            text: "boot 1".into(),
        });
        first.early_stops.push("boot 1 stopped early".into());
        let mut second = report(
            vec![
                result("wedged", true, Some(0)),
                result("later", true, Some(0)),
            ],
            true,
        );
        second.lines.push(Line {
            at: Duration::from_secs(3),
            text: "boot 2".into(),
        });
        first.absorb(second);
        let order: Vec<&str> = first.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["passed", "wedged", "later"]);
        assert!(first.all_succeeded());
        assert!(first.completed && !first.deadline_hit);
        assert_eq!(first.wall, Duration::from_secs(200));
        let texts: Vec<&str> = first.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["boot 1", "boot 2"]);
        assert_eq!(first.early_stops, ["boot 1 stopped early"]);
        assert!(first.to_string().contains("boot 1 stopped early"));
    }
}
