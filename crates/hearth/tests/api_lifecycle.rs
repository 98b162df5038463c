//! The Firecracker way of running hearth, end to end over the API socket with a real guest:
//! `hearth --api-sock S` waits for configuration, PUTs set it up, InstanceStart boots, the VM is
//! paused and resumed, bad requests get 4xx while the guest keeps running, and SendCtrlAltDel on
//! the i8042 keyboard makes the guest's kernel restart, which ends hearth with exit code 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use api::client::ApiClient;

const WAIT: Duration = Duration::from_secs(900);

struct Hearth(Child);
impl Drop for Hearth {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = ApiClient::connect(sock).unwrap();
    let r = c.request(method, path, body).unwrap();
    (r.status, r.body)
}

fn expect(sock: &Path, method: &str, path: &str, body: Option<&str>, status: u16) -> String {
    let (code, reply) = call(sock, method, path, body);
    assert_eq!(code, status, "{method} {path} {body:?} -> {reply}");
    reply
}

fn wait_line(lines: &Receiver<String>, seen: &mut Vec<String>, want: &str) {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            let hit = l.contains(want);
            seen.push(l);
            if hit {
                return;
            }
        }
    }
    panic!("no '{want}' on the console within {WAIT:?}:\n{}", seen.join("\n"));
}

#[test]
fn configure_boot_pause_resume_and_ctrl_alt_del_over_the_api() {
    let guest = common::built_guest_dir();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, b"lifecycle-disk\n".repeat(4096)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--api-sock")
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let mut hearth = Hearth(child);
    let lines = common::console_lines(out);
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Before boot.
    assert!(expect(&sock, "GET", "/", None, 200).contains("Not started"));
    expect(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 400);
    expect(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        400,
    ); // no boot source
    expect(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 1, "mem_size_mib": 128}"#),
        204,
    );
    expect(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": "one", "mem_size_mib": 128}"#),
        400,
    );
    // The shell stays in `read y` at the end: only Ctrl+Alt+Del can end this guest.
    let script = "echo lifecycle-ready; head -c 15 /dev/vda; read x; echo got-$x; read y; echo shell-ended";
    let boot = serde_json::json!({
        "kernel_image_path": guest.join("vmlinux"),
        "initrd_path": guest.join("initramfs.cpio"),
        "boot_args": format!("console=ttyS0 reboot=k panic=-1 -- /bin/sh -c \"{script}\""),
    })
    .to_string();
    expect(&sock, "PUT", "/boot-source", Some(&boot), 204);
    let drive = serde_json::json!({
        "drive_id": "data", "path_on_host": disk, "is_root_device": false, "is_read_only": true,
    })
    .to_string();
    expect(&sock, "PUT", "/drives/data", Some(&drive), 204);
    expect(&sock, "PUT", "/drives/other", Some(&drive), 400); // path id != body id
    expect(&sock, "PUT", "/entropy", Some("{}"), 204);
    expect(&sock, "PATCH", "/balloon", Some(r#"{"amount_mib": 16}"#), 400); // not before boot
    let balloon = r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}"#;
    expect(&sock, "PUT", "/balloon", Some(balloon), 204);
    let config = expect(&sock, "GET", "/vm/config", None, 200);
    assert!(config.contains("\"data\"") && config.contains("vmlinux"), "{config}");

    // Boot.
    eprintln!("lifecycle: configured; starting");
    expect(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        204,
    );
    assert!(expect(&sock, "GET", "/", None, 200).contains("Running"));
    expect(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        400,
    );
    expect(
        &sock,
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count": 2, "mem_size_mib": 128}"#),
        400,
    );
    expect(&sock, "PUT", "/drives/data", Some(&drive), 400);
    let mut seen = Vec::new();
    wait_line(&lines, &mut seen, "lifecycle-ready");
    wait_line(&lines, &mut seen, "lifecycle-disk");

    // Pause and resume.
    eprintln!("lifecycle: guest up after {:?}", start.elapsed());
    expect(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 204);
    assert!(expect(&sock, "GET", "/", None, 200).contains("Paused"));
    expect(&sock, "PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), 204);
    assert!(expect(&sock, "GET", "/", None, 200).contains("Running"));

    // Inflate the balloon while the guest runs: the driver gives 16 MiB back.
    expect(&sock, "PATCH", "/balloon", Some(r#"{"amount_mib": 16}"#), 204);
    assert!(expect(&sock, "GET", "/balloon", None, 200).contains("\"amount_mib\":16"));
    let inflated = Instant::now();
    loop {
        let (code, stats) = call(&sock, "GET", "/balloon/statistics", None);
        if code == 200 && stats.contains("\"actual_mib\":16") {
            assert!(stats.contains("\"target_mib\":16"), "{stats}");
            break;
        }
        assert!(
            inflated.elapsed() < Duration::from_secs(300),
            "balloon never reached 16 MiB: {code} {stats}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Bad input while running: each gets its 4xx, the VM is not disturbed.
    expect(&sock, "PATCH", "/vm", Some(r#"{"state": "#), 400);
    expect(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused", "extra": 1}"#), 400);
    expect(&sock, "GET", "/no/such/path", None, 400);
    // A client that sends half a request and goes quiet, and many at once.
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let parallel: Vec<_> = (0..32)
        .map(|_| {
            let s = sock.clone();
            std::thread::spawn(move || call(&s, "GET", "/machine-config", None).0)
        })
        .collect();
    for t in parallel {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(expect(&sock, "GET", "/", None, 200).contains("Running"));
    drop(slow);

    // The guest is alive and reads its console.
    eprintln!("lifecycle: API checks done; typing into the guest");
    stdin.write_all(b"bye\n").unwrap();
    wait_line(&lines, &mut seen, "got-bye");

    // The guest's atkbd driver found the i8042 keyboard at boot (the keyboard is attached
    // asynchronously, so the line may come late) and talked to it.
    let keyboard = "input: AT Translated Set 2 keyboard";
    if !seen.iter().any(|l| l.contains(keyboard)) {
        wait_line(&lines, &mut seen, keyboard);
    }
    let prom = expect(&sock, "GET", "/metrics/prometheus", None, 200);
    let reads = prom
        .lines()
        .find_map(|l| l.strip_prefix("hearth_i8042_read_count_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no i8042 read count in:\n{prom}"));
    assert!(reads >= 10, "the driver's probe read the controller's replies: {reads}");

    // Ctrl+Alt+Del: the kernel restarts (reboot=k: through the i8042 reset line) and hearth
    // exits cleanly, without the shell or init ending first.
    expect(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "SendCtrlAltDel"}"#),
        204,
    );
    wait_line(&lines, &mut seen, "reboot: Restarting system");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = hearth.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "hearth did not exit after the guest restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    seen.extend(lines.try_iter());
    // Whole lines: the kernel's command line (on the console too) contains the script.
    for not in ["shell-ended", "hearth-guest: powering off"] {
        assert!(
            !seen.iter().any(|l| l.trim() == not),
            "'{not}': the guest ended some other way than Ctrl+Alt+Del:\n{}",
            seen.join("\n")
        );
    }
    assert!(!sock.exists(), "hearth removes its API socket");
    let _ = std::fs::remove_dir_all(&dir);
}
