//! End to end on a real Linux guest, started the Firecracker way (`hearth --api-sock`):
//! `PUT /logger` and `PUT /metrics` before boot, then a drive and `InstanceStart`.
//!
//! The guest waits on its console until the test has flushed a metrics line, then reads 96 KiB
//! and writes 32 KiB (+ fsync) on the drive with O_DIRECT, so exactly those bytes reach the
//! device, and waits again. The test then checks that:
//! - the JSON lines flushed after the guest's I/O show exactly its read/write bytes for the
//!   drive (`block_scratch`, and the `block` sum), a flush, vCPU MMIO exits and COM1 output;
//! - `GET /metrics/prometheus` (totals) agrees with the sum of every JSON line (changes);
//! - `GET /hearth/exit-stats` shows MMIO exits while the VM runs;
//! - hearth's own log went to the log file, with level and origin, at the configured level,
//!   and no longer to stderr.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use api::client::ApiClient;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(600);
const READ_BYTES: u64 = 24 * 4096;
const WRITE_BYTES: u64 = 8 * 4096;
const SCRIPT: &str = "echo metrics-ready; read go; \
    dd if=/dev/vda of=/dev/null bs=4096 count=24 iflag=direct 2>/dev/null; \
    yes m | dd of=/dev/vda bs=4096 seek=64 count=8 iflag=fullblock oflag=direct conv=fsync 2>/dev/null; \
    echo metrics-io-done; read go; echo metrics-bye";

struct Vm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Vm {
    fn wait_for(&mut self, marker: &str) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let done = line.contains(marker) && !line.contains("echo");
                self.seen.push(line);
                if done {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "hearth ended ({st}) before {marker}; console:\n{}",
                    self.seen.join("\n")
                );
            }
        }
        panic!("no {marker} within {WAIT:?}; console:\n{}", self.seen.join("\n"));
    }

    fn type_line(&mut self, s: &str) {
        self.stdin.write_all(format!("{s}\n").as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
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

fn ok(sock: &Path, method: &str, path: &str, body: &str) {
    let (status, reply) = api(sock, method, path, Some(body));
    assert_eq!(status, 204, "{method} {path}: {reply}");
}

fn flush(sock: &Path) {
    ok(sock, "PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#);
}

fn metric_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("metrics line is not JSON ({e}): {l}")))
        .collect()
}

fn sum(lines: &[Value], group: &str, field: &str) -> u64 {
    lines.iter().map(|l| l[group][field].as_u64().unwrap_or(0)).sum()
}

/// The value of the sample `name{labels}` in Prometheus text (labels as written by hearth).
fn prom(text: &str, series: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.rsplit_once(' ').map(|(s, _)| s) == Some(series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("hearth-api-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn metrics_logger_and_exit_stats_on_a_running_guest() {
    let guest = common::built_guest_dir();
    let (sock, log, metrics, disk, err) = (
        temp("api.sock"),
        temp("hearth.log"),
        temp("metrics.json"),
        temp("disk.img"),
        temp("stderr"),
    );
    std::fs::write(&disk, vec![0x5au8; 1 << 20]).unwrap();
    // As with Firecracker, the log and metrics files must exist (or be FIFOs) before the PUTs.
    std::fs::write(&log, b"").unwrap();
    std::fs::write(&metrics, b"").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--api-sock", sock.to_str().unwrap(), "--id", "metrics-test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    let mut vm = Vm {
        child,
        stdin,
        lines,
        seen: Vec::new(),
    };

    let logger = serde_json::json!({
        "log_path": log, "level": "Info", "show_level": true, "show_log_origin": true
    });
    ok(&sock, "PUT", "/logger", &logger.to_string());
    ok(
        &sock,
        "PUT",
        "/metrics",
        &serde_json::json!({ "metrics_path": metrics }).to_string(),
    );
    let (status, _) = api(&sock, "GET", "/hearth/exit-stats", None);
    assert_eq!(status, 400, "no exit statistics before boot");
    let boot = serde_json::json!({
        "kernel_image_path": guest.join("vmlinux"),
        "initrd_path": guest.join("initramfs.cpio"),
        // The kernel splits init's arguments on spaces and honours double quotes only.
        "boot_args": format!("console=ttyS0 reboot=k panic=-1 -- /bin/sh -c \"{SCRIPT}\""),
    });
    ok(&sock, "PUT", "/boot-source", &boot.to_string());
    let drive = serde_json::json!({
        "drive_id": "scratch", "path_on_host": disk, "is_root_device": false, "is_read_only": false
    });
    ok(&sock, "PUT", "/drives/scratch", &drive.to_string());
    ok(&sock, "PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);

    vm.wait_for("metrics-ready");
    flush(&sock);
    let before = metric_lines(&metrics).len();
    assert!(before >= 1);
    vm.type_line("go");
    vm.wait_for("metrics-io-done");
    flush(&sock);

    let all = metric_lines(&metrics);
    let after = &all[before..];
    let ctx = format!("metrics lines after the guest's I/O: {after:?}");
    assert_eq!(sum(after, "block_scratch", "read_bytes"), READ_BYTES, "{ctx}");
    assert_eq!(sum(after, "block_scratch", "write_bytes"), WRITE_BYTES, "{ctx}");
    assert_eq!(sum(after, "block", "write_bytes"), WRITE_BYTES, "the sum group: {ctx}");
    let reads = sum(after, "block_scratch", "read_count");
    assert!((1..=24).contains(&reads), "{ctx}");
    assert!(
        sum(after, "block_scratch", "flush_count") >= 1,
        "conv=fsync flushes: {ctx}"
    );
    assert_eq!(sum(after, "block_scratch", "execute_fails"), 0, "{ctx}");
    assert!(
        sum(after, "vcpu", "exit_mmio_write") > 0,
        "queue notifications exit: {ctx}"
    );
    assert!(sum(&all, "uart", "write_count") > 0, "console output");
    assert!(sum(&all, "put_api_requests", "drive_count") == 1);
    let first = &all[0];
    assert!(first["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);

    // Prometheus: totals since boot = the sum of every line's changes (the guest is idle now).
    let (status, text) = api(&sock, "GET", "/metrics/prometheus", None);
    assert_eq!(status, 200);
    for (series, group, field) in [
        (
            "hearth_block_read_bytes_total{drive=\"scratch\"}",
            "block_scratch",
            "read_bytes",
        ),
        (
            "hearth_block_write_bytes_total{drive=\"scratch\"}",
            "block_scratch",
            "write_bytes",
        ),
        (
            "hearth_block_flush_count_total{drive=\"scratch\"}",
            "block_scratch",
            "flush_count",
        ),
    ] {
        assert_eq!(prom(&text, series), sum(&all, group, field), "{series}\n{text}");
    }
    assert!(text.contains("# TYPE hearth_vcpu_exits_total counter"));
    assert!(prom(&text, "hearth_vcpu_exits_total{vcpu=\"0\",reason=\"mmio_write\"}") > 0);

    let (status, body) = api(&sock, "GET", "/hearth/exit-stats", None);
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    let v0 = &stats["vcpus"][0];
    assert_eq!(v0["id"], 0);
    assert!(v0["exits"]["mmio_write"].as_u64().unwrap() > 0, "{body}");
    assert!(v0["exits"]["mmio_read"].as_u64().unwrap() > 0, "{body}");

    vm.type_line("go");
    vm.wait_for("metrics-bye");

    let log_text = std::fs::read_to_string(&log).unwrap();
    let cmdline = log_text
        .lines()
        .find(|l| l.contains("kernel command line"))
        .unwrap_or_else(|| panic!("no build log line in the log file:\n{log_text}"));
    assert!(
        cmdline.contains("[metrics-test:main:INFO:") && cmdline.contains("builder.rs:"),
        "level and origin shown: {cmdline}"
    );
    assert!(
        !log_text.contains(":DEBUG:") && !log_text.contains(":TRACE:"),
        "{log_text}"
    );
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(!stderr.contains("kernel command line"), "the log left stderr: {stderr}");
    for p in [&log, &metrics, &disk, &err] {
        let _ = std::fs::remove_file(p);
    }
}
