//! End to end: the ext4 image `guest/mkrootfs.sh` makes boots as the root file system on
//! virtio-blk (no initramfs), read-write: the guest sees /dev/vda's device mounted on / and a file it
//! writes there is in the image afterwards (read on the host with debugfs). One boot.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Generous: a loaded PVM host has taken minutes for one boot.
const TIMEOUT_SECS: &str = "900";

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs guest/mkrootfs.sh (a cache hit after the first time) and returns the image it printed.
fn rootfs_image() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/mkrootfs.sh");
    let out = Command::new(&script).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("mkrootfs.sh printed the image path"))
}

#[test]
fn linux_boots_from_an_ext4_root_on_virtio_blk() {
    let dir = common::built_guest_dir();
    let image = TempFile(std::env::temp_dir().join(format!("hearth-rootfs-{}.ext4", std::process::id())));
    std::fs::copy(rootfs_image(), &image.0).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--memory", "128", "--timeout", TIMEOUT_SECS])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--drive")
        .arg(format!("path={},id=root", image.0.display()))
        .args([
            "--cmdline",
            "console=ttyS0 reboot=k panic=-1 rodata=off root=/dev/vda rw",
        ])
        .args([
            "--",
            "/bin/sh",
            "-c",
            "mount; echo vda=$(cat /sys/block/vda/dev); \
             while read id parent dev root mnt rest; do [ $mnt = / ] && echo root=$dev; done < /proc/self/mountinfo; \
             echo written-on-root-$((6*7)) > /root/marker && sync && echo wrote-$((6*7))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "--- console ---\n{console}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel names the device it mounted as root /dev/root; its number must be vda's.
    assert!(
        console.lines().any(|l| l.starts_with("/dev/root on / type ext4 (rw")),
        "no read-write ext4 root\n{ctx}"
    );
    let value = |key: &str| {
        console
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::to_string)
    };
    let vda = value("vda=");
    assert!(vda.is_some() && vda == value("root="), "/ is not on /dev/vda\n{ctx}");
    assert!(console.contains("wrote-42"), "write on the root file system\n{ctx}");
    assert!(console.contains("hearth-guest: exit status 0"), "guest command\n{ctx}");
    assert_eq!(out.status.code(), Some(0), "hearth exit\n{ctx}");

    let cat = Command::new("debugfs")
        .args(["-R", "cat /root/marker"])
        .arg(&image.0)
        .output()
        .expect("run debugfs (e2fsprogs)");
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim(),
        "written-on-root-42",
        "the guest's file is not in the image"
    );
}
