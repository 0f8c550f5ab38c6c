//! A running L1 QEMU (the test host): its console read line by line, timestamped, logged.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::console::Transcript;
use super::error::{Error, Result};

/// How long past a scenario's own timeout (or past the last marker, between scenarios) L2
/// may stay silent before it counts as wedged and QEMU is killed. L2 kills a scenario at its
/// timeout itself; only a hung L2 kernel misses this.
const STALL_SLACK: Duration = Duration::from_secs(90);

/// A running L2 QEMU: its console read line by line on a thread, timestamped as read.
/// Killed and reaped on drop, so a panicking test leaves no QEMU behind.
pub(crate) struct QemuSession {
    child: Child,
    started: Instant,
    lines: mpsc::Receiver<(Instant, Vec<u8>)>,
    stdout_reader: Option<thread::JoinHandle<()>>,
    stderr_reader: Option<thread::JoinHandle<String>>,
    log: BufWriter<File>,
    log_path: PathBuf,
    reaped: bool,
}

/// How long QEMU may take to exit after its console closed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

impl QemuSession {
    pub(crate) fn start(mut cmd: Command, log: File, log_path: &Path) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the test process dies without dropping us (SIGKILL from a CI timeout), take QEMU
        // down with it. The signal fires when the spawning thread exits; `run` finishes QEMU
        // before returning, so that is never early.
        // SAFETY: runs in the child between fork and exec; prctl is async-signal-safe and
        // touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let (tx, lines) = mpsc::channel();
        let stdout_reader = child.stdout.take().map(|out| {
            thread::spawn(move || {
                let mut reader = BufReader::new(out);
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx.send((Instant::now(), line)).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        });
        let stderr_reader = child.stderr.take().map(|mut err| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        });
        Ok(QemuSession {
            child,
            started,
            lines,
            stdout_reader,
            stderr_reader,
            log: BufWriter::new(log),
            log_path: log_path.to_path_buf(),
            reaped: false,
        })
    }

    /// Feeds console lines to `transcript` (and the log, and stderr) until the console closes
    /// or a deadline passes: `boot_timeout` until L2 is up, `deadline` overall (both since
    /// start), and [`Transcript::stall_limit`] for an L2 that stops making progress. Returns
    /// whether a deadline killed QEMU.
    pub(crate) fn read_until(
        &mut self,
        deadline: Duration,
        boot_timeout: Duration,
        transcript: &mut Transcript,
        name: &str,
    ) -> Result<bool> {
        loop {
            let (limit, why) = match transcript.stall_limit(STALL_SLACK) {
                None => (boot_timeout.min(deadline), "deadline"),
                Some(stall) if stall < deadline => {
                    (stall, "L2 silent past its scenario's timeout (wedged)")
                }
                Some(_) => (deadline, "deadline"),
            };
            let now = self.started.elapsed();
            if now >= limit {
                let _ = self.child.kill();
                let _ = writeln!(
                    self.log,
                    "[{:8.3}] testhost: {why}, QEMU killed",
                    now.as_secs_f64()
                );
                eprintln!(
                    "[{name} {:8.3}] testhost: {why}, QEMU killed",
                    now.as_secs_f64()
                );
                self.flush_log()?;
                return Ok(true);
            }
            match self.lines.recv_timeout(limit - now) {
                Ok((at, raw)) => {
                    let at = at.saturating_duration_since(self.started);
                    let raw = String::from_utf8_lossy(&raw);
                    let text = transcript.push(at, raw.trim_end_matches(['\n', '\r']));
                    writeln!(self.log, "[{:8.3}] {text}", at.as_secs_f64())
                        .map_err(|e| Error::io("writing", &self.log_path, e))?;
                    eprintln!("[{name} {:8.3}] {text}", at.as_secs_f64());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_log()?;
                    return Ok(false);
                }
            }
        }
    }

    fn flush_log(&mut self) -> Result<()> {
        self.log
            .flush()
            .map_err(|e| Error::io("writing", &self.log_path, e))
    }

    /// Reaps QEMU (killing it if it lingers): its exit status (`None` if killed by a signal),
    /// its stderr, and the time it ran.
    pub(crate) fn finish(mut self) -> (Option<ExitStatus>, String, Duration) {
        let grace = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < grace => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        self.reaped = true;
        let wall = self.started.elapsed();
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        let stderr = self
            .stderr_reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        // A signal-killed QEMU has no exit code: report it as killed.
        (status.filter(|s| s.code().is_some()), stderr, wall)
    }
}

impl Drop for QemuSession {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
