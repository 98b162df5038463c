//! End to end: the stock Linux virtio-mmio, virtio-blk and virtio-rng drivers against hearth's
//! devices, in one boot (a boot costs tens of seconds on PVM hosts, minutes on a busy one).
//!
//! The guest reads a known pattern from a read-write drive (checksum compared with the host's),
//! writes a new pattern with dd + fsync (a FLUSH), fails to write the read-only drive, and reads
//! 64 bytes from /dev/hwrng; the host then checks the images themselves.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const IMAGE_SIZE: usize = 2 << 20;
/// Generous: a loaded PVM host has taken over three minutes for this boot.
const TIMEOUT_SECS: &str = "900";
const WRITE_LEN: usize = 16 * 1024;

struct TempImage(PathBuf);
impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn temp_image(name: &str, data: &[u8]) -> TempImage {
    let p = std::env::temp_dir().join(format!("hearth-virtio-{}-{name}.img", std::process::id()));
    std::fs::write(&p, data).unwrap();
    TempImage(p)
}

fn drive_arg(p: &Path, extra: &str) -> String {
    format!("path={}{extra}", p.display())
}

/// The 64 bytes of `hexdump -C` output lines (offset, 16 hex bytes, ascii).
fn hexdump_bytes(console: &str) -> Vec<u8> {
    console
        .lines()
        .filter(|l| {
            ["00000000 ", "00000010 ", "00000020 ", "00000030 "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .flat_map(|l| {
            l.split('|')
                .next()
                .unwrap()
                .split_whitespace()
                .skip(1)
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn linux_uses_virtio_blk_and_rng() {
    let dir = common::built_guest_dir();
    let rw_data: Vec<u8> = (0..IMAGE_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    let ro_data: Vec<u8> = rw_data.iter().rev().copied().collect();
    let rw = temp_image("rw", &rw_data);
    let ro = temp_image("ro", &ro_data);
    let script = "cat /sys/block/vda/serial; echo; \
        cat /sys/block/vda/size /sys/block/vdb/ro; \
        echo features; cat /sys/bus/virtio/devices/virtio0/features /sys/bus/virtio/devices/virtio2/features; \
        dd if=/dev/vda bs=64k count=4 2>/dev/null | sha256sum; \
        yes hearth-pattern | dd of=/dev/vda bs=4096 count=4 conv=fsync 2>/dev/null && echo rw-write-ok; \
        echo x | dd of=/dev/vdb conv=fsync 2>/dev/null || echo ro-write-failed; \
        dd if=/dev/hwrng bs=64 count=1 2>/dev/null | hexdump -v -C";
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--memory", "128", "--timeout", TIMEOUT_SECS, "--rng"])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .arg("--drive")
        .arg(drive_arg(&rw.0, ",id=data"))
        .arg("--drive")
        .arg(drive_arg(&ro.0, ",ro"))
        .args(["--", "/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!("--- console ---\n{console}\n--- stderr ---\n{stderr}");
    let has = |s: &str| console.contains(s);

    assert!(
        has("virtio_blk virtio0: [vda] 4096 512-byte logical blocks"),
        "vda not found\n{ctx}"
    );
    assert!(has("hearth-guest: init ready"), "no userspace\n{ctx}");
    // GET_ID → /sys/block/vda/serial; capacity; F_RO → the kernel marks vdb read-only.
    let after_ready = console.split("hearth-guest: init ready").nth(1).unwrap_or("");
    let lines: Vec<&str> = after_ready.lines().map(str::trim).collect();
    assert!(lines.contains(&"data"), "GET_ID serial\n{ctx}");
    assert!(lines.contains(&"4096"), "capacity\n{ctx}");
    let feat = lines.iter().position(|l| *l == "features").expect("features printed");
    let (blk, rng) = (lines[feat + 1].as_bytes(), lines[feat + 2].as_bytes());
    // Linux prints one character per feature bit, bit 0 first.
    for bit in [2usize, 6, 9, 28, 32] {
        assert_eq!(
            blk.get(bit),
            Some(&b'1'),
            "virtio-blk feature bit {bit} not negotiated\n{ctx}"
        );
    }
    assert_eq!(blk.get(5), Some(&b'0'), "vda is read-write\n{ctx}");
    assert_eq!(rng.get(32), Some(&b'1'), "virtio-rng VERSION_1\n{ctx}");

    assert!(
        has(&common::sha256_hex(&rw_data[..256 * 1024])),
        "guest read the wrong bytes\n{ctx}"
    );
    assert!(has("rw-write-ok"), "write to vda failed\n{ctx}");
    assert!(has("ro-write-failed"), "write to read-only vdb succeeded\n{ctx}");
    let random = hexdump_bytes(after_ready);
    assert_eq!(random.len(), 64, "hwrng bytes\n{ctx}");
    assert!(
        random.iter().any(|&b| b != random[0]),
        "hwrng bytes are constant\n{ctx}"
    );
    assert!(has("hearth-guest: exit status 0"), "guest command failed\n{ctx}");
    assert_eq!(out.status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");

    let rw_now = std::fs::read(&rw.0).unwrap();
    let pattern: Vec<u8> = b"hearth-pattern\n".iter().copied().cycle().take(WRITE_LEN).collect();
    assert_eq!(
        &rw_now[..WRITE_LEN],
        &pattern[..],
        "the guest's write did not reach the image"
    );
    assert_eq!(
        &rw_now[WRITE_LEN..],
        &rw_data[WRITE_LEN..],
        "bytes past the write changed"
    );
    assert_eq!(std::fs::read(&ro.0).unwrap(), ro_data, "the read-only image changed");
}
