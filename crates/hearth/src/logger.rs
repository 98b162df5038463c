//! hearth's log: stderr by default ("hearth: warn: ..."), level from `--log-level` or
//! `HEARTH_LOG`; `PUT /logger` (or a config file's `logger`) redirects it, as Firecracker does,
//! to an existing file or FIFO (opened O_APPEND | O_NONBLOCK) with lines
//! `<UTC time> [<instance>:<thread>[:<LEVEL>][:<file>:<line>]] <message>`, an optional level
//! and an optional module filter. A line that would block (a full FIFO) is dropped.

use std::fs::File;
use std::io::Write;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use api::models::logger::{LogLevel, Logger};
use log::{LevelFilter, Log, Metadata, Record};

/// Where lines go and how they look.
struct Config {
    file: Option<File>,
    instance: String,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
}

static CONFIG: RwLock<Config> = RwLock::new(Config {
    file: None,
    instance: String::new(),
    show_level: false,
    show_origin: false,
    module: None,
});

struct HearthLogger;

impl Log for HearthLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        if m.level() > log::max_level() {
            return false;
        }
        let cfg = CONFIG.read().unwrap_or_else(|e| e.into_inner());
        cfg.module
            .as_ref()
            .is_none_or(|module| m.target().starts_with(module.as_str()))
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let cfg = CONFIG.read().unwrap_or_else(|e| e.into_inner());
        match &cfg.file {
            // \r keeps lines readable while the terminal is in raw mode.
            None => eprint!("hearth: {}: {}\r\n", r.level().as_str().to_lowercase(), r.args()),
            Some(f) => {
                let origin = (r.file().unwrap_or("?"), r.line().unwrap_or(0));
                let thread = std::thread::current();
                let line = format_line(
                    &utc_now(),
                    &cfg.instance,
                    thread.name().unwrap_or("-"),
                    cfg.show_level.then(|| r.level()),
                    cfg.show_origin.then_some(origin),
                    &r.args().to_string(),
                );
                // A full FIFO or a failing file loses the line; logging never blocks or fails
                // the VMM.
                let mut f: &File = f;
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
    fn flush(&self) {}
}

pub fn init(level: Option<LevelFilter>) {
    let level = level
        .or_else(|| std::env::var("HEARTH_LOG").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(LevelFilter::Warn);
    if log::set_logger(&HearthLogger).is_ok() {
        log::set_max_level(level);
    }
}

/// `PUT /logger`: from now on, lines go to `l.log_path` (when given) as `l` says. Fields left
/// out keep their current setting.
pub fn configure(instance: &str, l: &Logger) -> Result<(), String> {
    let file = match &l.log_path {
        Some(p) => {
            Some(vmm::metrics::open_append_nonblocking(p).map_err(|e| format!("Cannot open the log file {p}: {e}"))?)
        }
        None => None,
    };
    let mut cfg = CONFIG.write().unwrap_or_else(|e| e.into_inner());
    if file.is_some() {
        cfg.file = file;
    }
    cfg.instance = instance.to_string();
    if let Some(v) = l.show_level {
        cfg.show_level = v;
    }
    if let Some(v) = l.show_log_origin {
        cfg.show_origin = v;
    }
    if let Some(m) = &l.module {
        cfg.module = Some(m.clone()).filter(|m| !m.is_empty());
    }
    drop(cfg);
    if let Some(level) = l.level {
        log::set_max_level(level_filter(level));
    }
    Ok(())
}

fn level_filter(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warning => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
        LogLevel::Off => LevelFilter::Off,
    }
}

/// One line of a redirected log, newline included.
fn format_line(
    time: &str,
    instance: &str,
    thread: &str,
    level: Option<log::Level>,
    origin: Option<(&str, u32)>,
    msg: &str,
) -> String {
    let mut tag = format!("{instance}:{thread}");
    if let Some(l) = level {
        tag.push(':');
        tag.push_str(l.as_str());
    }
    if let Some((file, line)) = origin {
        tag.push_str(&format!(":{file}:{line}"));
    }
    format!("{time} [{tag}] {msg}\n")
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
fn utc_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    utc(d.as_secs(), d.subsec_millis())
}

fn utc(secs: u64, millis: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian; eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_configured_prefixes() {
        let plain = format_line("T", "vm1", "fc_api", None, None, "hello");
        assert_eq!(plain, "T [vm1:fc_api] hello\n");
        let full = format_line("T", "vm1", "main", Some(log::Level::Warn), Some(("src/x.rs", 7)), "m");
        assert_eq!(full, "T [vm1:main:WARN:src/x.rs:7] m\n");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0, 0), "1970-01-01T00:00:00.000");
        assert_eq!(utc(951_782_400 + 3661, 5), "2000-02-29T01:01:01.005");
        assert_eq!(utc(1_700_000_000, 999), "2023-11-14T22:13:20.999");
    }

    #[test]
    fn a_missing_directory_is_one_line_naming_the_path() {
        let l = Logger {
            log_path: Some("/nonexistent-dir/x.log".into()),
            ..Logger::default()
        };
        let e = configure("i", &l).unwrap_err();
        assert!(e.contains("/nonexistent-dir/x.log") && !e.contains('\n'), "{e}");
    }
}
