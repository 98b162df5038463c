//! How a running VM ends, seen from outside: SIGTERM/SIGINT and `--timeout` stop the real guest
//! mid-boot, quickly and with the documented exit codes (no full boot needed). The timeout run
//! also checks the guest profiler end to end.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> std::process::Child {
    let dir = common::built_guest_dir();
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("run")
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal_stops_the_vm(sig: i32, name: &str) {
    let child = start(&["--stats", "--timeout", "600"]);
    std::thread::sleep(Duration::from_secs(3));
    let pid = i32::try_from(child.id()).unwrap();
    let killed = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + sig), "{stderr}");
    assert!(stderr.contains(&format!("stopped by signal {sig}")), "{stderr}");
    // The vCPU was stopped, joined and counted: the --stats table is there.
    assert!(stderr.contains("exit reason") && stderr.contains("vcpu0"), "{stderr}");
    assert!(!stderr.contains("did not stop"), "{stderr}");
    // Generous bound against a hang, not a timing assertion: stopping takes milliseconds.
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?} to stop",
        sent.elapsed()
    );
}

#[test]
fn sigterm_stops_the_vm_with_143() {
    signal_stops_the_vm(15, "TERM");
}

#[test]
fn sigint_stops_the_vm_with_130() {
    signal_stops_the_vm(2, "INT");
}

/// `--timeout` ends the VM with code 5; `--profile` shows the guest kernel was executing: its
/// samples resolve to functions in the kernel's symbol table.
#[test]
fn timeout_stops_the_vm_with_5_and_the_profiler_saw_the_guest_kernel() {
    let out = start(&["--timeout", "3", "--profile"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("--timeout passed"), "{stderr}");
    let samples: u64 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("guest profile: ")?
                .strip_suffix(" samples")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no profile in {stderr}"));
    assert!(samples > 10, "{stderr}");
    // Rows are "  20.59%      284  memmap_init_range"; early boot runs kernel code only.
    let kernel_rows = stderr
        .lines()
        .filter_map(|l| l.contains('%').then(|| l.split_whitespace().nth(2)).flatten())
        .filter(|name| !name.starts_with("0x") && !name.starts_with('['))
        .count();
    assert!(kernel_rows > 0, "no sample resolved to a kernel function: {stderr}");
}
