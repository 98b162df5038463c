//! Progress of `hearth ctl snapshot create` while the VMM writes the memory file.
//!
//! The VMM answers `PUT /snapshot/create` only when the snapshot is complete, and it writes the
//! memory file front to back into `.<name>.tmp-<pid>` beside the target before renaming it
//! (`snapshot::AtomicFile`). The client watches that file grow and shows how far the writer
//! got against the guest's memory size (from `GET /vm/config`), on stderr, only when stderr is a
//! terminal; scripts get the plain reply.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running progress display; `finish` stops it and clears its line.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing progress for a memory file `mem` of `total` bytes, if stderr is a terminal.
    pub fn start(mem: &Path, total: u64) -> Option<Self> {
        if !std::io::stderr().is_terminal() || total == 0 {
            return None;
        }
        let done = Arc::new(AtomicBool::new(false));
        let (flag, mem) = (done.clone(), mem.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                if let Some(written) = temp_len(&mem) {
                    eprint!("\r{}", line(written, total));
                    let _ = std::io::stderr().flush();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r{:60}\r", "");
        });
        Some(Self {
            done,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `snapshot memory  512/1024 MiB  50%`.
fn line(written: u64, total: u64) -> String {
    let written = written.min(total);
    format!(
        "hearth ctl: snapshot memory {:>6}/{} MiB {:>3}%",
        written >> 20,
        total >> 20,
        written * 100 / total
    )
}

/// The length of the memory file's temporary (`.<name>.tmp-<pid>`) while it is being written.
fn temp_len(mem: &Path) -> Option<u64> {
    let name = mem.file_name()?.to_string_lossy().into_owned();
    let dir = match mem.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!(".{name}.tmp-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_growing_temporary_and_formats_the_line() {
        let dir = std::env::temp_dir().join(format!("ctl-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mem = dir.join("vm.mem");
        assert_eq!(temp_len(&mem), None, "nothing written yet");
        std::fs::write(dir.join(".vm.mem.tmp-4242"), vec![0u8; 3 << 20]).unwrap();
        std::fs::write(dir.join(".other.mem.tmp-4242"), vec![0u8; 5 << 20]).unwrap();
        assert_eq!(temp_len(&mem), Some(3 << 20));
        assert_eq!(
            line(512 << 20, 1024 << 20),
            "hearth ctl: snapshot memory    512/1024 MiB  50%"
        );
        assert!(line(2 << 30, 1 << 30).ends_with("100%"), "never above 100%");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
