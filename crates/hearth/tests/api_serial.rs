//! Firecracker's `PUT /serial` (`serial` in a config file): COM1's output goes to a file
//! instead of stdout.
//! - a Linux guest booted from a config file with `serial.serial_out_path` writes its kernel
//!   log and its command's output to that file, and nothing of it to hearth's stdout;
//! - `PUT /serial` with a path that cannot be opened answers 400 naming the path, and the
//!   instance keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::client::ApiClient;

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("hearth-serial-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn serial_output_goes_to_the_configured_file() {
    let guest = common::built_guest_dir();
    let (config, out_file, sock) = (temp("vm.json"), temp("console.log"), temp("api.sock"));
    let vm = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest.join("vmlinux"),
            "initrd_path": guest.join("initramfs.cpio"),
            "boot_args": "console=ttyS0 reboot=k panic=-1 -- /bin/sh -c \"echo serial-file-$((6*7))\"",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        // A generous limit: nothing is dropped, but the limited writer is on the path.
        "serial": {"serial_out_path": out_file, "rate_limiter": {"size": 1_048_576, "refill_time": 1000}},
    });
    std::fs::write(&config, vm.to_string()).unwrap();
    // As for /logger and /metrics, the file must exist (or be a FIFO with a reader).
    std::fs::write(&out_file, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--no-api", "--config-file", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let file = std::fs::read_to_string(&out_file).unwrap_or_default();
    let ctx = format!(
        "stdout:\n{stdout}\nstderr:\n{}\nfile:\n{file}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert!(file.contains("Linux version"), "the kernel log is in the file\n{ctx}");
    assert!(
        file.lines().any(|l| l.trim() == "serial-file-42"),
        "the guest's output is in the file\n{ctx}"
    );
    assert!(!stdout.contains("serial-file-42"), "nothing on stdout\n{ctx}");

    // A path that cannot be opened: 400 with the path, and the API keeps answering.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--api-sock", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut c = loop {
        if let Ok(c) = ApiClient::connect(&sock) {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = c
        .request(
            "PUT",
            "/serial",
            Some(r#"{"serial_out_path": "/nonexistent-dir/console.log"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("/nonexistent-dir/console.log"), "{}", r.body);
    assert_eq!(c.request("GET", "/", None).unwrap().status, 200);
    let _ = child.kill();
    let _ = child.wait();
    for p in [&config, &out_file, &sock] {
        let _ = std::fs::remove_file(p);
    }
}
