//! Shared by the end-to-end tests: where the default guest built by guest/build.sh lives, and
//! checksums.

#![allow(clippy::unwrap_used)]

pub mod counting_vm;

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `${HEARTH_CACHE:-$HOME/.cache/hearth}/guest/default`, as guest/build.sh and `hearth run` use it.
pub fn guest_dir() -> PathBuf {
    let base = std::env::var_os("HEARTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hearth"));
    base.join("guest/default")
}

#[allow(dead_code)] // not every test binary boots the guest
/// The default guest's directory; fails the test (never skips it) when the guest is not built.
pub fn built_guest_dir() -> PathBuf {
    let dir = guest_dir();
    assert!(
        dir.join("vmlinux").exists() && dir.join("initramfs.cpio").exists(),
        "the default guest is not built ({} missing): run guest/build.sh first",
        dir.display()
    );
    dir
}

/// Hex SHA-256 of `data`, computed by the host's sha256sum (the same tool the guest uses).
#[allow(dead_code)] // used by the device tests only
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The guest console's lines as hearth prints them on `out` (its stdout), read on a thread so a
/// test can wait with a timeout; carriage returns are stripped.
#[allow(dead_code)] // used by the tests that watch the console line by line
pub fn console_lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    rx
}
