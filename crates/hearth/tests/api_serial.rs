//! Firecracker's `PUT /serial` (`serial` in a config file) and `PATCH /drives` after boot, on
//! one Linux guest booted from a config file with the API on:
//! - with `serial.serial_out_path`, the kernel log and the guest's output go to that file, and
//!   nothing of it to hearth's stdout;
//! - `PATCH /drives/data` with a new `path_on_host` swaps the image under the running guest:
//!   its reads (buffers flushed) return the new file's bytes, and it sees the new capacity
//!   (configuration interrupt); a rate limiter can be set too; a path that cannot be opened
//!   answers 400 and changes nothing;
//! - `PUT /serial` with a path that cannot be opened answers 400 naming the path.

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

/// Waits for hearth's API socket.
fn connect(sock: &std::path::Path) -> ApiClient {
    let start = Instant::now();
    loop {
        if let Ok(c) = ApiClient::connect(sock) {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serial_output_goes_to_the_configured_file() {
    let guest = common::built_guest_dir();
    let (config, out_file, sock) = (temp("vm.json"), temp("console.log"), temp("api.sock"));
    let (one, two) = (temp("one.img"), temp("two.img"));
    let image = |word: &[u8], len: usize| {
        let mut v = word.to_vec();
        v.resize(len, 0);
        v
    };
    std::fs::write(&one, image(b"drive-one", 4096)).unwrap();
    std::fs::write(&two, image(b"drive-two", 8192)).unwrap();
    // Every second: the first 9 bytes of vda (buffers dropped first) and its size in sectors.
    let script = "while :; do blockdev --flushbufs /dev/vda; \
        echo content-$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 9)-size-$(cat /sys/block/vda/size); \
        sleep 1; done";
    let vm = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest.join("vmlinux"),
            "initrd_path": guest.join("initramfs.cpio"),
            "boot_args": format!("console=ttyS0 reboot=k panic=-1 -- /bin/sh -c \"{script}\""),
        },
        "drives": [{"drive_id": "data", "path_on_host": one, "is_root_device": false, "is_read_only": false}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        // A generous limit: nothing is dropped, but the limited writer is on the path.
        "serial": {"serial_out_path": out_file, "rate_limiter": {"size": 1_048_576, "refill_time": 1000}},
    });
    std::fs::write(&config, vm.to_string()).unwrap();
    // As for /logger and /metrics, the file must exist (or be a FIFO with a reader).
    std::fs::write(&out_file, b"").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "--api-sock",
            sock.to_str().unwrap(),
            "--config-file",
            config.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = connect(&sock);
    let wait_for = |want: &str| {
        let start = Instant::now();
        loop {
            let file = std::fs::read_to_string(&out_file).unwrap_or_default();
            if file.lines().any(|l| l.trim() == want) {
                return file;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "no '{want}' in the serial file:\n{file}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let file = wait_for("content-drive-one-size-8");
    assert!(file.contains("Linux version"), "the kernel log is in the file\n{file}");

    // A path that cannot be opened changes nothing.
    let r = c
        .request(
            "PATCH",
            "/drives/data",
            Some(r#"{"drive_id": "data", "path_on_host": "/nonexistent/x.img"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("/nonexistent/x.img"), "{}", r.body);
    // The new image, and a (generous) rate limit.
    let patch = serde_json::json!({
        "drive_id": "data", "path_on_host": two,
        "rate_limiter": {"bandwidth": {"size": 1_048_576, "refill_time": 1000}},
    });
    let r = c.request("PATCH", "/drives/data", Some(&patch.to_string())).unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let file = wait_for("content-drive-two-size-16");
    assert!(
        !file.contains("content-drive-one-size-16"),
        "size and content change together:\n{file}"
    );
    let cfg = c.request("GET", "/vm/config", None).unwrap().body;
    assert!(cfg.contains("two.img"), "GET /vm/config shows the new path: {cfg}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("content-drive"), "nothing on stdout:\n{stdout}");

    // PUT /serial with a path that cannot be opened: 400 with the path, the API keeps answering.
    let sock = temp("api2.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--api-sock", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = connect(&sock);
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
    for p in [&config, &out_file, &sock, &one, &two] {
        let _ = std::fs::remove_file(p);
    }
}
