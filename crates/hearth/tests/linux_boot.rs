//! End to end: boot the real Linux guest (built by guest/build.sh) on the real `hearth` binary.
//!
//! A boot costs tens of seconds on slow hosts (PVM), so each boot checks several things: the
//! userspace marker, the CPU count the guest sees, a command's output read back from the
//! console, the command's exit status, and a clean exit (code 0) when the guest resets.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// One Linux guest at a time: parallel boots on a 2-core host only make each slower.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Generous: a boot takes ~15-25 s on a PVM host, ~1 s on VMX/SVM.
const TIMEOUT_SECS: &str = "400";

struct Boot {
    code: Option<i32>,
    console: String,
    stderr: String,
}

fn boot(vcpus: &str, protocol: &str, guest_cmd: &[&str]) -> Boot {
    let _one = serial();
    let dir = common::built_guest_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "run",
            "--vcpus",
            vcpus,
            "--memory",
            "128",
            "--timeout",
            TIMEOUT_SECS,
            "--stats",
            "--boot-protocol",
            protocol,
        ])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .arg("--")
        .args(guest_cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Boot {
        code: out.status.code(),
        console: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_boot(b: &Boot, cpus: u32) {
    let ctx = || format!("--- console ---\n{}\n--- stderr ---\n{}", b.console, b.stderr);
    assert!(
        b.console.contains("hearth-guest: init ready"),
        "no userspace marker\n{}",
        ctx()
    );
    assert!(
        b.console.contains(&format!("hearth-guest: cpus {cpus}")),
        "guest does not see {cpus} CPUs\n{}",
        ctx()
    );
    // The shell computed this, so the line proves the command ran and its output came back.
    assert!(b.console.contains("e2e-result-42"), "command output missing\n{}", ctx());
    assert!(
        b.console.contains("hearth-guest: exit status 0"),
        "command failed\n{}",
        ctx()
    );
    assert_eq!(b.code, Some(0), "hearth did not exit cleanly\n{}", ctx());
    assert!(b.stderr.contains("exit reason"), "--stats table missing\n{}", ctx());
    assert!(!b.stderr.contains("panicked"), "{}", ctx());
}

const CMD: [&str; 3] = [
    "/bin/sh",
    "-c",
    "echo e2e-result-$((6*7)); read -r l < /proc/loadavg; echo load $l",
];

#[test]
fn linux_boots_with_one_vcpu_and_runs_a_command() {
    // PVH entry (the kernel has the ELF note).
    let b = boot("1", "pvh", &CMD);
    check_boot(&b, 1);
}

#[test]
fn linux_boots_with_two_vcpus_and_runs_a_command() {
    // The 64-bit Linux boot protocol (zero page, long mode set up by hearth).
    let b = boot("2", "linux64", &CMD);
    check_boot(&b, 2);
}

/// The interactive path: host input typed into the guest's shell through the serial port.
#[test]
fn console_input_reaches_the_guest_shell() {
    let _one = serial();
    let dir = common::built_guest_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--memory", "128", "--timeout", TIMEOUT_SECS])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Wait for the shell, then type: the UART resets its FIFO when the guest opens the port,
    // so input sent before that would be lost (as on real hardware).
    let mut ready = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(400)) {
        if line.contains("hearth-guest: init ready") {
            ready = true;
            break;
        }
    }
    assert!(ready, "no marker");
    std::thread::sleep(Duration::from_secs(3));
    stdin.write_all(b"echo typed-$((40+2))\n").unwrap();
    let mut typed = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        if line.contains("typed-42") {
            typed = true;
            break;
        }
    }
    stdin.write_all(b"exit\n").unwrap();
    let status = child.wait().unwrap();
    let console = reader.join().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(typed, "typed command's output never came back\n{console}\n{stderr}");
    assert!(console.contains("hearth-guest: powering off"), "{console}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
