//! End to end, on a real Linux guest: a snapshot restored through the Uffd memory backend.
//!
//! One boot of a guest whose shell counts in its own memory (`count-N` every second), with a
//! balloon. Paused and snapshotted, it is stopped; then:
//! - `hearth restore --mem-uffd` with no handler listening, and with both --mem and --mem-uffd,
//!   fail with one line (no guest starts); so does `PUT /snapshot/load` with a Uffd backend;
//! - `hearth uffd-handler` serves the memory file and `hearth restore --mem-uffd` restores from
//!   it: the count goes on from the snapshot's (the shell's memory came through the handler);
//! - the balloon inflates by 16 MiB (its pages are discarded: UFFD_EVENT_REMOVE) and the guest
//!   goes on counting;
//! - when hearth stops, the handler exits and reports faults served (> 0), remove events
//!   (> 0) and no failures.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::counting_vm::{api, Vm};

const SCRIPT: &str = "i=0; while :; do i=$((i+1)); echo count-$i; sleep 1; done";

#[test]
fn restore_through_the_uffd_handler() {
    let guest = common::built_guest_dir();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("snapshot-uffd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (sock, sock2, usock) = (dir.join("api.sock"), dir.join("api2.sock"), dir.join("uffd.sock"));
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    let s = |p: &PathBuf| p.display().to_string();
    let (kernel, initrd) = (s(&guest.join("vmlinux")), s(&guest.join("initramfs.cpio")));

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
        "--balloon",
        "target_mib=0,stats_interval_s=1",
        "--api-sock",
        &s(&sock),
        "--",
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    vm.wait_count(2);
    assert_eq!(api(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0, 204);
    vm.counts_during(Duration::from_millis(500));
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
        s(&state),
        s(&mem)
    );
    let (code, body) = api(&sock, "PUT", "/snapshot/create", Some(&body));
    assert_eq!(code, 204, "{body}");
    let at_snapshot = vm.last_count();
    vm.stop();

    // No handler: one line, nothing started.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["restore", "--snapshot", &s(&state), "--mem-uffd", &s(&usock)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("no page-fault handler listens on {}", s(&usock))),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "restore",
            "--snapshot",
            &s(&state),
            "--mem",
            &s(&mem),
            "--mem-uffd",
            &s(&usock),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // The same over the API (Firecracker's mem_backend), on a fresh `hearth --api-sock`.
    let sock3 = dir.join("api3.sock");
    let fresh = Vm::spawn(&["--api-sock", &s(&sock3)]);
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Uffd", "backend_path": "{}"}}}}"#,
        s(&state),
        s(&usock)
    );
    let (code, body) = api(&sock3, "PUT", "/snapshot/load", Some(&body));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no page-fault handler listens on"), "{body}");
    fresh.stop();

    let mut handler = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["uffd-handler", "--mem", &s(&mem), "--socket", &s(&usock)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !usock.exists() {
        assert!(handler.try_wait().unwrap().is_none(), "handler exited early");
        assert!(start.elapsed() < Duration::from_secs(60), "handler never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut restored = Vm::spawn(&[
        "restore",
        "--snapshot",
        &s(&state),
        "--mem-uffd",
        &s(&usock),
        "--api-sock",
        &s(&sock2),
        "--timeout",
        "600",
    ]);
    let first = restored.wait_count(at_snapshot + 1);
    assert_eq!(first, at_snapshot + 1, "the restored guest continues its count");

    // Balloon inflate: the VMM discards the pages the guest gives up.
    let (code, body) = api(&sock2, "PATCH", "/balloon", Some(r#"{"amount_mib": 16}"#));
    assert_eq!(code, 204, "{body}");
    let start = Instant::now();
    loop {
        let (code, body) = api(&sock2, "GET", "/balloon/statistics", None);
        let actual = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["actual_mib"].as_u64())
            .unwrap_or(0);
        if code == 200 && actual >= 16 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "balloon never inflated: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = restored.wait_count(restored.last_count() + 2);
    assert!(after > first, "the guest goes on after the inflate");
    restored.stop();

    // hearth is gone: the handler exits and reports.
    let status = handler.wait().unwrap();
    let mut report = String::new();
    handler.stderr.take().unwrap().read_to_string(&mut report).unwrap();
    println!("{report}");
    assert!(status.success(), "{report}");
    let line = report.lines().find(|l| l.contains("served ")).unwrap();
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    // served, copied, zero, already present, removes, failed
    assert!(n[0] > 0 && n[1] > 0, "{line}");
    assert!(n[4] > 0, "the balloon's discards reached the handler: {line}");
    assert_eq!(n[5], 0, "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
