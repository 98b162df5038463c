//! Bad input to `hearth run`: every case ends with one clear line on stderr and a non-zero exit
//! code, never a panic. Uses the real binary and the real /dev/kvm.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

fn hearth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env_remove("HEARTH_KVM_DEVICE").env_remove("HEARTH_LOG");
    c
}

fn tmp(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(contents).unwrap();
    p
}

/// Asserts a one-line error containing every `needle`, with exit code `code`.
fn assert_error(out: Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr:?}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing from {stderr:?}");
    }
    assert!(
        out.stdout.is_empty(),
        "no guest output expected: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn run(args: &[&str]) -> Output {
    hearth().arg("run").args(args).output().unwrap()
}

/// A syntactically valid 64-bit ELF header with nothing behind it.
fn fake_kernel() -> PathBuf {
    let mut elf = vec![0u8; 64];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    tmp("truncated-vmlinux", &elf)
}

#[test]
fn missing_and_non_kernel_files() {
    assert_error(
        run(&["--kernel", "/nonexistent/vmlinux"]),
        1,
        &["kernel", "/nonexistent/vmlinux", "No such file"],
    );
    let text = tmp(
        "not-a-kernel.txt",
        b"hello, this is plainly not a kernel image; it is text.\n",
    );
    assert_error(
        run(&["--kernel", text.to_str().unwrap()]),
        1,
        &["not a Linux kernel", "not-a-kernel.txt"],
    );
    let empty = tmp("empty-kernel", b"");
    assert_error(run(&["--kernel", empty.to_str().unwrap()]), 1, &["not a Linux kernel"]);
    assert_error(
        run(&["--kernel", fake_kernel().to_str().unwrap()]),
        1,
        &["cannot load kernel", "truncated-vmlinux"],
    );
    assert_error(run(&["--kernel", "/tmp"]), 1, &["is a directory"]);
}

#[test]
fn vcpu_and_memory_limits() {
    let k = fake_kernel();
    let k = k.to_str().unwrap();
    assert_error(
        run(&["--kernel", k, "--vcpus", "0"]),
        1,
        &["--vcpus must be at least 1"],
    );
    assert_error(
        run(&["--kernel", k, "--vcpus", "5000"]),
        1,
        &["--vcpus 5000", "more than"],
    );
    assert_error(
        run(&["--kernel", k, "--memory", "0"]),
        1,
        &["--memory must be at least 1 MiB"],
    );
    assert_error(
        run(&["--kernel", k, "--memory", "999999999"]),
        1,
        &["--memory 999999999 MiB", "RAM"],
    );
    // Not a number: a usage error from the argument parser (exit 2).
    let out = run(&["--kernel", k, "--vcpus", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vcpus"));
}

#[test]
fn initrd_that_does_not_fit() {
    let Some(kernel) = guest_kernel() else {
        panic!("{}", NO_GUEST)
    };
    // The kernel occupies 16 MiB .. ~28 MiB: 40 MiB more cannot fit in 48 MiB.
    let big = tmp("big-initrd", &vec![0u8; 40 << 20]);
    assert_error(
        run(&[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            big.to_str().unwrap(),
            "--memory",
            "48",
        ]),
        1,
        &["initrd", "big-initrd", "does not fit"],
    );
    assert_error(
        run(&["--kernel", kernel.to_str().unwrap(), "--initrd", "/nonexistent/initrd"]),
        1,
        &["cannot open initrd /nonexistent/initrd"],
    );
}

#[test]
fn no_kvm_device_or_no_permission() {
    let k = fake_kernel();
    let k = k.to_str().unwrap();
    let out = hearth()
        .env("HEARTH_KVM_DEVICE", "/nonexistent/kvm")
        .args(["run", "--kernel", k])
        .output()
        .unwrap();
    assert_error(out, 1, &["cannot open /nonexistent/kvm"]);
    let out = hearth()
        .env("HEARTH_KVM_DEVICE", "/dev/null")
        .args(["run", "--kernel", k])
        .output()
        .unwrap();
    assert_error(out, 1, &["/dev/null is not a usable KVM device"]);
    // An unprivileged user cannot open a root-only /dev/kvm.
    let mode = std::fs::metadata("/dev/kvm").map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    let is_root = unsafe_free_uid() == 0;
    if is_root && matches!(mode, Ok(m) if m & 0o006 == 0) {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_hearth"))
            .args(["run", "--kernel", k])
            .output()
            .expect("setpriv (util-linux) is needed for this test");
        assert_error(out, 1, &["cannot open /dev/kvm", "Permission denied"]);
    } else {
        eprintln!("skipping the no-permission case: /dev/kvm is world-accessible or not running as root");
    }
}

#[test]
fn help_and_version() {
    let out = hearth().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hearth "));
    let out = hearth().args(["run", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--vcpus",
        "--memory",
        "--stats",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
    let out = hearth().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn unsafe_free_uid() -> u32 {
    // /proc/self/status "Uid:" line: real uid first.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

const NO_GUEST: &str = "the default guest is not built: run guest/build.sh first";

fn guest_kernel() -> Option<PathBuf> {
    let k = common::guest_dir().join("vmlinux");
    k.exists().then_some(k)
}
