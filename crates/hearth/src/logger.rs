//! A minimal stderr logger ("hearth: warn: ..."), level from `--log-level` or `HEARTH_LOG`.

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            // \r keeps lines readable while the terminal is in raw mode.
            eprint!("hearth: {}: {}\r\n", r.level().as_str().to_lowercase(), r.args());
        }
    }
    fn flush(&self) {}
}

pub fn init(level: Option<LevelFilter>) {
    let level = level
        .or_else(|| std::env::var("HEARTH_LOG").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(LevelFilter::Warn);
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}
