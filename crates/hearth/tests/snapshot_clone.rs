//! End to end, one Linux boot: `hearth clone` starts 10 microVMs from one snapshot, each with
//! its own API socket, console log, tap and MAC, and they share the snapshot's memory.
//!
//! The guest's shell counts in its own memory (`count-N` on the console about once a second). It is
//! paused at count S and snapshotted, then the original is stopped and `hearth clone --count 10`
//! starts the clones. The test checks that:
//! - `hearth clone` exits 0 and reports 10 clones (pid, socket, log, tap, MAC) as JSON;
//! - every clone's console log continues the count: its first count is S+1 (never 1) and it
//!   reaches S+2 (the restored guest keeps running: its timers fire, its shell loops);
//! - every clone's API answers with its own id and reports its own tap and MAC;
//! - the sum of the clones' PSS (/proc/PID/smaps_rollup) is far below 10 × the RSS of the one
//!   booted VM (under 50%), since the pages they only read stay shared through the page cache.
//!
//! Needs root (it creates the taps, and removes them again). Every clone is stopped at the end,
//! also when the test fails (guards find them by the test's unique directory in their command
//! line and stop them by pid).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use api::client::ApiClient;

const CLONES: usize = 10;
const WAIT: Duration = Duration::from_secs(900);
/// Counts without forking (`read -t 1` on the console times out each round): on a PVM host every
/// fork+exec costs the guest ~1.5 s of emulated kernel work, and eleven guests share two cores.
const SCRIPT: &str = "i=0; while :; do i=$((i+1)); echo count-$i; read -t 1 x; done";
const ORIG_TAP: &str = "hclo";
const TAP_PREFIX: &str = "hclc";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

fn tap_names() -> Vec<String> {
    let mut v = vec![ORIG_TAP.to_string()];
    v.extend((0..CLONES).map(|k| format!("{TAP_PREFIX}{k}")));
    v
}

/// Removes the taps when the test ends, passed or not.
struct Taps;
impl Drop for Taps {
    fn drop(&mut self) {
        for t in tap_names() {
            let _ = Command::new("ip")
                .args(["tuntap", "del", "dev", &t, "mode", "tap"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Stops every process whose command line names `dir` (the clones of this test only: `dir` has
/// this test's pid in it), by pid: SIGTERM, then SIGKILL after 10 s.
struct CloneReaper(PathBuf);
impl CloneReaper {
    fn pids(&self) -> Vec<i32> {
        let needle = self.0.display().to_string();
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if pid != me && String::from_utf8_lossy(&cmd).contains(&needle) {
                out.push(pid);
            }
        }
        out
    }
}
impl Drop for CloneReaper {
    fn drop(&mut self) {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for pid in self.pids() {
                // SAFETY: kill(2) has no memory-safety preconditions; `pid` runs this test's clone.
                unsafe { libc::kill(pid, sig) };
            }
            let start = Instant::now();
            while !self.pids().is_empty() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The booted original: console lines from its stdout; SIGTERM on drop.
struct Vm {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Vm {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = common::console_lines(out);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_count(&mut self, at_least: u64) -> u64 {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line.clone());
                if let Some(n) = count_of(&line) {
                    if n >= at_least {
                        return n;
                    }
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("hearth ended ({st}); console:\n{}", self.seen.join("\n"));
            }
        }
        panic!(
            "no count-{at_least} within {WAIT:?}; console:\n{}",
            self.seen.join("\n")
        );
    }

    /// Console lines arriving during `d` (drained, kept in `seen`).
    fn drain(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line);
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn count_of(line: &str) -> Option<u64> {
    line.trim_end_matches('\r').strip_prefix("count-")?.parse().ok()
}

fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let start = Instant::now();
    let mut c = loop {
        match ApiClient::connect(sock) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect to {}: {e}", sock.display()),
        }
    };
    let r = c.request(method, path, body).unwrap();
    (r.status, r.body)
}

/// `key:  N kB` from a /proc status-like file, in KiB.
fn proc_kib(path: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {path}"))
}

/// The counts in a clone's console log, in order.
fn log_counts(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(count_of).collect()
}

#[test]
fn clone_ten_vms_from_one_snapshot() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test must run as root (it creates taps)");
    let guest = common::built_guest_dir();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    drop(Taps); // leftovers of an interrupted run
    let _taps = Taps;
    for t in tap_names() {
        ip(&["tuntap", "add", "dev", &t, "mode", "tap"]);
    }
    let _reaper = CloneReaper(dir.clone());

    let sock = dir.join("orig.sock");
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    let kernel = guest.join("vmlinux").display().to_string();
    let initrd = guest.join("initramfs.cpio").display().to_string();
    let net = format!("tap={ORIG_TAP}");
    let sock_s = sock.display().to_string();
    let mut vm = Vm::spawn(&[
        "run",
        "--memory",
        "128",
        "--timeout",
        "900",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--net",
        &net,
        "--api-sock",
        &sock_s,
        "--",
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    vm.wait_count(2);
    let orig_rss = proc_kib(&format!("/proc/{}/status", vm.child.id()), "VmRSS:");
    assert_eq!(api(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0, 204);
    vm.drain(Duration::from_millis(500)); // lines already in flight
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
        state.display(),
        mem.display()
    );
    let (code, reply) = api(&sock, "PUT", "/snapshot/create", Some(&body));
    assert_eq!(code, 204, "{reply}");
    let at_snapshot = vm.seen.iter().filter_map(|l| count_of(l)).max().unwrap();
    drop(vm); // the original is gone: its tap is free, and only the clones remain

    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["clone", "--snapshot"])
        .arg(&state)
        .arg("--mem")
        .arg(&mem)
        .args([
            "--count",
            &CLONES.to_string(),
            "--tap-prefix",
            TAP_PREFIX,
            "--json",
            "--timeout",
            "900",
        ])
        .arg("--api-sock-dir")
        .arg(&dir)
        .args(["--start-timeout", "300"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "hearth clone failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let clones = report["clones"].as_array().unwrap();
    assert_eq!(clones.len(), CLONES, "{report}");
    println!(
        "hearth clone: {CLONES} clones running after {:.0} ms",
        report["elapsed_ms"].as_f64().unwrap()
    );

    // Every clone continues the count from the snapshot, on its own console log.
    let start = Instant::now();
    for (k, c) in clones.iter().enumerate() {
        assert_eq!(c["index"].as_u64(), Some(k as u64));
        let log = PathBuf::from(c["console_log"].as_str().unwrap());
        assert_eq!(log, dir.join(format!("clone-{k}.log")));
        loop {
            let counts = log_counts(&log);
            if counts.iter().any(|&n| n >= at_snapshot + 2) {
                assert_eq!(
                    counts[0],
                    at_snapshot + 1,
                    "clone {k} continues from count-{at_snapshot}: {counts:?}"
                );
                break;
            }
            let pid = c["pid"].as_u64().unwrap();
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "clone {k} (pid {pid}) ended; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                start.elapsed() < WAIT,
                "clone {k} did not reach count-{}; log:\n{}",
                at_snapshot + 2,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Each has its own identity on its API.
    for (k, c) in clones.iter().enumerate() {
        let sock = PathBuf::from(c["api_sock"].as_str().unwrap());
        let (code, body) = api(&sock, "GET", "/", None);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("\"clone-{k}\"")), "{body}");
        let (code, body) = api(&sock, "GET", "/vm/config", None);
        assert_eq!(code, 200, "{body}");
        let tap = format!("{TAP_PREFIX}{k}");
        assert!(body.contains(&format!("\"{tap}\"")), "clone {k} uses tap {tap}: {body}");
        let mac = c["mac"].as_str().unwrap();
        assert!(body.contains(mac), "clone {k} reports its MAC {mac}: {body}");
    }
    let macs: std::collections::HashSet<_> = clones.iter().map(|c| c["mac"].as_str().unwrap()).collect();
    assert_eq!(macs.len(), CLONES, "every clone has its own MAC");

    // Memory: the clones share the snapshot's pages.
    let pss: Vec<u64> = clones
        .iter()
        .map(|c| proc_kib(&format!("/proc/{}/smaps_rollup", c["pid"]), "Pss:"))
        .collect();
    let sum: u64 = pss.iter().sum();
    let limit = CLONES as u64 * orig_rss;
    println!(
        "one booted VM: RSS {orig_rss} KiB; clones' PSS (KiB) {pss:?}; sum {sum} KiB = {:.1}% of {CLONES} x RSS ({limit} KiB)",
        100.0 * sum as f64 / limit as f64
    );
    assert!(
        sum * 2 < limit,
        "{CLONES} clones use {sum} KiB (PSS), not far below {CLONES} x {orig_rss} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad input is one line on stderr and exit 1 (2 for usage), before any clone starts.
#[test]
fn clone_refuses_bad_input() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("clone-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.state");
    std::fs::write(&junk, b"not a snapshot").unwrap();
    let socks = dir.join("socks");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .arg("--api-sock-dir")
            .arg(&socks)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let junk_s = junk.display().to_string();
    let missing = dir.join("missing.state").display().to_string();
    for (args, code, expect) in [
        (
            vec!["clone", "--snapshot", &missing, "--mem", &junk_s, "--count", "2"],
            1,
            "missing.state",
        ),
        (
            vec!["clone", "--snapshot", &junk_s, "--mem", &junk_s, "--count", "2"],
            1,
            "junk.state",
        ),
        (
            vec!["clone", "--snapshot", &junk_s, "--mem", &junk_s, "--count", "0"],
            2,
            "--count",
        ),
        (vec!["clone", "--snapshot", &junk_s, "--mem", &junk_s], 2, "--count"),
    ] {
        let (got, err) = run(&args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: expected '{expect}' in: {err}");
        if code == 1 {
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }
    assert!(!socks.exists(), "nothing was started");
    let _ = std::fs::remove_dir_all(&dir);
}
