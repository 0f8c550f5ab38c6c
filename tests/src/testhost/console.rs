//! The L2 console protocol: cleaning raw lines, recognizing the init's framing markers, and
//! splitting the transcript into per-scenario results.
//!
//! The L2 init prints each marker on a line of its own (preceded by a newline, in case a
//! scenario left a partial line):
//!
//! ```text
//! @@GHOST-L2-UP kernel=<uname -r> cpus=<n> workload=<scenario CPUs> modules=<loaded> skipped=<missing or failed>
//! @@GHOST-BEGIN <name>
//! @@GHOST-END <name> rc=<status>[ timeout]
//! @@GHOST-DONE
//! ```

use std::time::Duration;

use super::scenario::{Line, ScenarioResult};

const PREFIX: &str = "@@GHOST-";

/// A framing marker printed by the L2 init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    /// The init is up; the rest of the line describes L2.
    L2Up(String),
    /// A scenario starts.
    Begin(String),
    /// A scenario ended.
    End {
        name: String,
        rc: Option<i32>,
        timed_out: bool,
    },
    /// All scenarios ran; L2 powers off.
    Done,
}

/// Removes `\r`, terminal escape sequences (SeaBIOS and QEMU clear the screen) and other
/// control characters but tab.
pub(crate) fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: parameters and intermediates, then a final byte in @..~. Other escapes
                // are one character long (ESC c, ESC 7, ...).
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Splits a line into the text before a marker (if any) and the marker.
pub(crate) fn parse_marker(line: &str) -> (Option<&str>, Option<Marker>) {
    let Some(pos) = line.find(PREFIX) else {
        return (Some(line), None);
    };
    let before = Some(&line[..pos]).filter(|b| !b.trim().is_empty());
    let rest = &line[pos + PREFIX.len()..];
    let (kind, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let args = args.trim();
    let marker = match kind {
        "L2-UP" => Marker::L2Up(args.to_owned()),
        "BEGIN" => Marker::Begin(args.to_owned()),
        "END" => {
            let mut words = args.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            let mut rc = None;
            let mut timed_out = false;
            for w in words {
                if let Some(v) = w.strip_prefix("rc=") {
                    rc = v.parse().ok();
                } else if w == "timeout" {
                    timed_out = true;
                }
            }
            Marker::End {
                name,
                rc,
                timed_out,
            }
        }
        "DONE" => Marker::Done,
        // A scenario's own "@@GHOST-..." text (ghost_mark): an ordinary line.
        _ => return (Some(line), None),
    };
    (before, Some(marker))
}

/// Accumulates console lines into per-scenario results.
#[derive(Debug)]
pub(crate) struct Transcript {
    pub lines: Vec<Line>,
    pub scenarios: Vec<ScenarioResult>,
    pub l2_up_at: Option<Duration>,
    pub l2_info: String,
    pub completed: bool,
    current: Option<usize>,
    /// Each scenario's own timeout (L2 kills it then), by index.
    timeouts: Vec<Duration>,
    /// When the last framing marker arrived.
    last_marker_at: Option<Duration>,
}

impl Transcript {
    /// A transcript expecting the scenarios `(name, timeout)`, in order.
    pub fn new<'a>(scenarios: impl IntoIterator<Item = (&'a str, Duration)>) -> Self {
        let (scenarios, timeouts) = scenarios
            .into_iter()
            .map(|(n, timeout)| {
                (
                    ScenarioResult {
                        name: n.to_owned(),
                        ..Default::default()
                    },
                    timeout,
                )
            })
            .unzip();
        Transcript {
            lines: Vec::new(),
            scenarios,
            l2_up_at: None,
            l2_info: String::new(),
            completed: false,
            current: None,
            timeouts,
            last_marker_at: None,
        }
    }

    /// The time (since QEMU's start) by which the next framing marker must arrive once L2 is
    /// up, or L2 is wedged: the running scenario's start plus its timeout (L2's own watchdog
    /// ends it then) plus `slack`, or, between scenarios, the last marker plus `slack`. `None`
    /// until L2 is up (the boot timeout covers that).
    pub fn stall_limit(&self, slack: Duration) -> Option<Duration> {
        let last = self.last_marker_at?;
        let running = self
            .current
            .and_then(|i| Some(self.scenarios[i].started_at? + *self.timeouts.get(i)?));
        Some(running.unwrap_or(last) + slack)
    }

    /// Takes one raw console line read at `at`; returns the cleaned line. Blank lines (the
    /// init prints one before each marker) are not kept.
    pub fn push(&mut self, at: Duration, raw: &str) -> String {
        let text = clean_line(raw);
        if text.trim().is_empty() {
            return text;
        }
        let (before, marker) = parse_marker(&text);
        if let Some(before) = before {
            let line = Line {
                at,
                text: before.to_owned(),
            };
            if let Some(i) = self.current {
                self.scenarios[i].lines.push(line.clone());
            }
            self.lines.push(line);
        }
        if let Some(marker) = marker {
            self.lines.push(Line {
                at,
                text: text[before.map_or(0, str::len)..].to_owned(),
            });
            self.apply(at, marker);
        }
        text
    }

    fn apply(&mut self, at: Duration, marker: Marker) {
        self.last_marker_at = Some(at);
        match marker {
            Marker::L2Up(info) => {
                self.l2_up_at = Some(at);
                self.l2_info = info;
            }
            Marker::Begin(name) => {
                self.current = self.scenarios.iter().position(|s| s.name == name);
                if let Some(i) = self.current {
                    self.scenarios[i].started_at = Some(at);
                }
            }
            Marker::End {
                name,
                rc,
                timed_out,
            } => {
                if let Some(s) = self.scenarios.iter_mut().find(|s| s.name == name) {
                    s.ended_at = Some(at);
                    s.rc = rc;
                    s.timed_out = timed_out;
                }
                self.current = None;
            }
            Marker::Done => self.completed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_carriage_returns_are_removed() {
        assert_eq!(clean_line("\u{1b}[2J\u{1b}[01;01HSeaBIOS\r"), "SeaBIOS");
        assert_eq!(clean_line("\u{1b}cabc\tdef\0"), "abc\tdef");
    }

    #[test]
    fn markers_are_parsed() {
        assert_eq!(
            parse_marker("@@GHOST-END oracle rc=0"),
            (
                None,
                Some(Marker::End {
                    name: "oracle".into(),
                    rc: Some(0),
                    timed_out: false
                })
            )
        );
        assert_eq!(
            parse_marker("partial@@GHOST-END x rc=137 timeout").0,
            Some("partial")
        );
        assert_eq!(parse_marker("@@GHOST-MARK x").1, None);
        assert_eq!(parse_marker("plain"), (Some("plain"), None));
    }

    #[test]
    fn lines_are_split_by_scenario() {
        let ms = Duration::from_millis;
        let mut t = Transcript::new([("a", ms(100)), ("b", ms(100)), ("c", ms(100))]);
        for (i, line) in [
            "kernel noise",
            "",
            "@@GHOST-L2-UP kernel=6.1 cpus=2",
            "@@GHOST-BEGIN a",
            "hello from a\r",
            "@@GHOST-END a rc=0",
            "@@GHOST-BEGIN b",
            "stuck",
            "@@GHOST-END b rc=137 timeout",
            "@@GHOST-BEGIN c",
        ]
        .iter()
        .enumerate()
        {
            t.push(ms(i as u64), line);
        }
        assert_eq!(t.l2_up_at, Some(ms(2)));
        assert_eq!(t.l2_info, "kernel=6.1 cpus=2");
        assert_eq!(t.scenarios[0].lines.len(), 1);
        assert_eq!(t.scenarios[0].lines[0].text, "hello from a");
        assert!(t.scenarios[0].succeeded());
        assert!(t.scenarios[1].timed_out);
        assert_eq!(t.scenarios[2].rc, None);
        assert_eq!(t.scenarios[2].started_at, Some(ms(9)));
        assert!(!t.completed);
        assert_eq!(t.lines.len(), 9);
    }

    #[test]
    fn a_wedged_l2_is_noticed_per_scenario() {
        let s = Duration::from_secs;
        let mut t = Transcript::new([("a", s(100)), ("b", s(300))]);
        let slack = s(60);
        assert_eq!(
            t.stall_limit(slack),
            None,
            "not up yet: the boot timeout applies"
        );
        t.push(s(10), "@@GHOST-L2-UP kernel=6.1 cpus=2");
        assert_eq!(t.stall_limit(slack), Some(s(70)), "the first BEGIN is due");
        t.push(s(11), "@@GHOST-BEGIN a");
        assert_eq!(
            t.stall_limit(slack),
            Some(s(171)),
            "a's timeout, then slack"
        );
        t.push(s(50), "output does not extend it");
        assert_eq!(t.stall_limit(slack), Some(s(171)));
        t.push(s(60), "@@GHOST-END a rc=0");
        assert_eq!(t.stall_limit(slack), Some(s(120)));
        t.push(s(61), "@@GHOST-BEGIN b");
        assert_eq!(t.stall_limit(slack), Some(s(421)));
    }
}
