//! Bad --drive input: one clear line naming the drive, exit code 1, never a panic, no boot.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("run")
        .args(args)
        .env_remove("HEARTH_KVM_DEVICE")
        .output()
        .unwrap()
}

fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr:?}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing from {stderr:?}");
    }
    assert!(out.stdout.is_empty(), "the VM must not start");
}

#[test]
fn bad_drive_specs_and_missing_images() {
    // A kernel path that exists, so that the drive is what fails (drives are checked first).
    let kernel = std::env::current_exe().unwrap();
    let k = kernel.to_str().unwrap();
    assert_error(
        &run(&["--kernel", k, "--drive", "path=/nonexistent/disk.img,id=root"]),
        &["drive 'root'", "/nonexistent/disk.img", "No such file"],
    );
    assert_error(
        &run(&["--kernel", k, "--drive", "path=/tmp,ro,bogus"]),
        &[
            "--drive 'path=/tmp,ro,bogus'",
            "bogus",
            "path=IMG[,ro][,direct][,id=ID]",
        ],
    );
    assert_error(&run(&["--kernel", k, "--drive", "ro"]), &["--drive 'ro'", "no path"]);
    assert_error(
        &run(&["--kernel", k, "--drive", "path=/tmp"]),
        &["drive 'drive0'", "directory"],
    );
    let img = std::env::temp_dir().join(format!("hearth-virtio-cli-{}.img", std::process::id()));
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let spec = format!("path={},id=a", img.display());
    assert_error(
        &run(&["--kernel", k, "--drive", &spec, "--drive", &spec]),
        &["id 'a' is used twice"],
    );
    let _ = std::fs::remove_file(&img);
}
