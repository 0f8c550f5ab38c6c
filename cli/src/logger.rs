//! A minimal stderr logger; `GHOST_LOG=debug|info|warn|error|off` sets the level (default warn).

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // vfio-ioctls logs from places that cannot return errors: normal facts as warnings
        // (no ERR/REQ interrupt info on older kernels) and, as errors, its own bookkeeping
        // of groups shared by several devices when they close (the kernel cleans up when
        // the fds close). Everything it does for ghost-vmm also returns a Result, which is
        // reported; its log is for debugging.
        if metadata.target().starts_with("vfio_ioctls") {
            return log::max_level() >= LevelFilter::Debug;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "ghost-vmm: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger.
pub fn init() {
    let level = match std::env::var("GHOST_LOG").as_deref() {
        Ok("off") => LevelFilter::Off,
        Ok("error") => LevelFilter::Error,
        Ok("info") => LevelFilter::Info,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        _ => LevelFilter::Warn,
    };
    // Fails only if a logger is already set, which nothing else does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
