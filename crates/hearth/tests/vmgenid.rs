//! End to end, one Linux boot: the VM generation ID device (ACPI) tells every restored guest
//! it is a new instance, so clones of one snapshot reseed their RNGs and draw different bytes.
//!
//! The guest's shell checks once that Linux's vmgenid driver bound the ACPI device hearth
//! describes (`/sys/bus/acpi/drivers/vmgenid/VMGENCTR:00`), then counts (`count-N`) and, once
//! its kernel log says "crng reseeded due to virtual machine fork" (the `[v]` in the script's
//! pattern keeps it from matching the kernel command line that dmesg also shows), prints 16 bytes of
//! /dev/urandom (`reseeded-N-HEX`). The test checks that:
//! - the booted guest has the driver bound and never reports a reseed (no fork happened);
//! - a snapshot restored twice gives two guests that each report the reseed and continue the
//!   count (the GED interrupt arrived and the vCPUs run), with different random bytes;
//! - each clone then runs `poweroff -f`, which reaches ACPI S5 through the PM1 control
//!   register, and hearth ends with status 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::counting_vm::{api, Vm};
const SCRIPT: &str = "test -e /sys/bus/acpi/drivers/vmgenid/VMGENCTR:00 && echo vmgenid-bound; \
    while ! dmesg | grep -q 'crng init [d]one'; do sleep 1; done; echo crng-ready; \
    i=0; while :; do i=$((i+1)); echo count-$i; \
    if dmesg | grep -q 'reseeded due to [v]irtual machine fork'; then \
    echo reseeded-$i-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n'); poweroff -f; fi; \
    read -t 1 x; done";

/// Restores the snapshot, waits for the guest's reseed report; returns (count, random hex).
fn restore_and_read(state: &str, mem: &str, at_snapshot: u64) -> (u64, String) {
    let mut vm = Vm::spawn(&["restore", "--snapshot", state, "--mem", mem, "--timeout", "600"]);
    let rest = vm.wait_line("reseeded-");
    let (n, hex) = rest.split_once('-').unwrap();
    let n: u64 = n.parse().unwrap();
    // The check follows `echo count-$i`, so the first report can be in the snapshot's own
    // iteration; a guest that started over would report a count below it.
    assert!(
        n >= at_snapshot,
        "the restored guest reports count {n}, the snapshot was at {at_snapshot}"
    );
    assert!(
        vm.counts().iter().all(|c| *c > at_snapshot),
        "the restored guest restarted its count: {:?}",
        vm.seen
    );
    assert_eq!(hex.len(), 32, "16 random bytes as hex: {rest}");
    // `poweroff -f`: the guest's ACPI S5 ends hearth, successfully.
    let status = vm.wait_exit();
    assert!(status.success(), "hearth after the guest's poweroff: {status}");
    (n, hex.to_string())
}

#[test]
fn every_restored_guest_learns_it_was_cloned_and_reseeds() {
    let guest = common::built_guest_dir();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vmgenid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    let (state_s, mem_s) = (state.display().to_string(), mem.display().to_string());
    let kernel = guest.join("vmlinux").display().to_string();
    let initrd = guest.join("initramfs.cpio").display().to_string();
    let sock_s = sock.display().to_string();
    let mut vm = Vm::spawn(&[
        "run",
        "--vcpus",
        "2",
        "--memory",
        "128",
        "--timeout",
        "900",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--api-sock",
        &sock_s,
        // Linux reseeds on a VM fork only once its CRNG is ready; virtio-rng makes it so early.
        "--rng",
        "--",
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    vm.wait_line("crng-ready");
    vm.wait_line("count-2");
    assert!(
        vm.seen.iter().any(|l| l == "vmgenid-bound"),
        "the vmgenid driver did not bind; console:\n{}",
        vm.seen.join("\n")
    );
    assert_eq!(api(&sock, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0, 204);
    let snap = format!(r#"{{"snapshot_path": "{state_s}", "mem_file_path": "{mem_s}"}}"#);
    assert_eq!(api(&sock, "PUT", "/snapshot/create", Some(&snap)).0, 204);
    // Lines already on their way out before the pause.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(l) = vm.lines.recv_timeout(Duration::from_millis(100)) {
            vm.seen.push(l);
        }
    }
    let at_snapshot = vm.counts().into_iter().max().unwrap();
    assert!(
        !vm.seen.iter().any(|l| l.starts_with("reseeded-")),
        "a booted guest reported a VM fork:\n{}",
        vm.seen.join("\n")
    );
    drop(vm);

    let (n1, first) = restore_and_read(&state_s, &mem_s, at_snapshot);
    let (n2, second) = restore_and_read(&state_s, &mem_s, at_snapshot);
    println!("clone 1: count {n1} urandom {first}; clone 2: count {n2} urandom {second}");
    assert_ne!(first, second, "two clones of one snapshot drew the same random bytes");
    let _ = std::fs::remove_dir_all(&dir);
}
