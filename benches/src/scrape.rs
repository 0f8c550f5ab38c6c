//! What a finished scenario's output says: its figures, scraped from the lines the guest and
//! L2 printed.

use std::time::Duration;

use ghost_tests::testhost::ScenarioResult;

use super::firmware;
use super::plan::{boot_figure, Kind};
use super::vmms::Vmm;
use super::{READY_LINE, SETTLED};

/// A finished guest's figures, or why there are none.
pub(super) fn figures_of(
    s: &ScenarioResult,
    kind: Kind,
    vmm: &Vmm,
    ghost: bool,
) -> Result<Vec<(&'static str, f64)>, String> {
    let done = match kind {
        Kind::General | Kind::Passthrough => "BENCH-DONE",
        Kind::Boot { .. } => "BENCH-INIT-OK",
        Kind::Debian { .. } | Kind::Firmware { .. } => SETTLED,
    };
    if !s.succeeded() || !s.contains(done) || s.value::<i32>("VMM_RC=") != Some(0) {
        let vmm_rc = s.line_after("VMM_RC=").unwrap_or("none");
        let last_error = s
            .lines
            .iter()
            .rev()
            .find(|l| l.text.contains("error") || l.text.contains("NEVER"))
            .map_or(String::new(), |l| {
                format!("; last error: {}", l.text.trim())
            });
        return Err(format!(
            "{}: the guest did not finish its workloads (script {:?}, VMM exit status {vmm_rc}){last_error}",
            s.name,
            s.outcome()
        ));
    }
    let mut out = Vec::new();
    let mut take = |key: &'static str, value: Option<f64>| {
        if let Some(v) = value {
            out.push((key, v));
        }
    };
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    match kind {
        Kind::General => {
            if vmm.bzimage {
                take(
                    "boot_ms",
                    ms(s.time_between("@@GHOST-MARK start", "BENCH-INIT-OK")),
                );
            }
            take("exit_ms", ms(s.time_between("BENCH-DONE", "VMM_RC=")));
            take(
                "rss_overhead_mib",
                s.value::<f64>("VMM_OVERHEAD_KB=").map(|kb| kb / 1024.0),
            );
            take("seq_write_mbs", s.value("SEQ_WRITE_MBS="));
            take("seq_read_mbs", s.value("SEQ_READ_MBS="));
            take("rand_read_iops", s.value("RAND_READ_IOPS="));
            take("tcp_mbs", s.value("TCP_SEND_MBS="));
            if vmm.config_pio {
                take("pio_exit_ns", s.value("PIO_EXIT_NS="));
            }
            take("mmio_exit_ns", s.value("MMIO_EXIT_NS="));
            if ghost {
                // "guest milestone 1 at 812.3 ms (exits so far: pio 1234, mmio 56)"
                if let Some(rest) = s.line_after("guest milestone 1 at ") {
                    let words: Vec<&str> = rest
                        .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
                        .filter(|w| !w.is_empty())
                        .collect();
                    take("timer_ms", words.first().and_then(|w| w.parse().ok()));
                    let count = |name: &str| {
                        let at = words.iter().position(|w| *w == name)?;
                        words.get(at + 1)?.parse::<f64>().ok()
                    };
                    if let (Some(p), Some(m)) = (count("pio"), count("mmio")) {
                        take("boot_exits", Some(p + m));
                    }
                }
            }
        }
        Kind::Boot { vcpus, image } => {
            if let Some(key) = boot_figure(vcpus, image) {
                take(
                    key,
                    ms(s.time_between("@@GHOST-MARK start", "BENCH-INIT-OK")),
                );
            }
        }
        Kind::Passthrough => {
            take("bar_read_ns", s.value("BAR_READ_NS="));
            take("nvme_admin_us", s.value("NVME_ADMIN_RTT_US="));
            take("nvme_iops", s.value("NVME_IOPS="));
        }
        Kind::Debian { .. } => {
            take(
                "debian_boot_s",
                secs(s.time_between("@@GHOST-MARK start", READY_LINE)),
            );
            take("debian_uptime_s", s.value(READY_LINE));
            take(
                "debian_stop_s",
                secs(s.time_between("@@GHOST-MARK stop", "VMM_RC=")),
            );
        }
        Kind::Firmware { .. } => {
            for (key, value) in firmware::figures(s, ghost) {
                take(key, Some(value));
            }
        }
    }
    Ok(out)
}
