//! Pause, resume and vCPU/VM state save+restore on real KVM, with a tiny guest that counts in a
//! register and mirrors the count to memory: paused, the count stands still; resumed, it goes
//! on; restored into a brand-new VM from the saved registers and memory, it continues from
//! where it was saved (not from zero).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assemble, CODE_ADDR, MEM_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm::arch::regs::EntryMode;
use vmm::machine::VcpuStart;
use vmm::vstate::memory::GuestMemory;
use vmm::{ApStart, Machine, VmExit};

const COUNTER: u64 = 0x30_2200; // VARS in guests/lib.inc

fn count(m: &GuestMemory) -> u64 {
    m.read_obj::<u64>(GuestAddress(COUNTER)).unwrap()
}

/// Waits until the guest's count passes `above` (the guest is slow on PVM hosts).
fn wait_past(m: &GuestMemory, above: u64) -> u64 {
    let start = Instant::now();
    loop {
        let c = count(m);
        if c > above {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the guest stopped counting at {c}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn paused_guest_stands_still_and_restored_guest_counts_on() {
    pause_save_restore(1);
}

/// Two vCPUs run the same counting loop (both store to the counter): both are parked, saved
/// and restored.
#[test]
fn smp_guest_pauses_and_restores() {
    pause_save_restore(2);
}

fn pause_save_restore(vcpus: u8) {
    let machine = Machine::new(vcpus, MEM_SIZE).unwrap();
    machine
        .memory
        .write_slice(&assemble("counter"), GuestAddress(CODE_ADDR))
        .unwrap();
    let entry = EntryMode::Long64 {
        entry: CODE_ADDR,
        zero_page: 0,
    };
    let mut vmm = machine.start(entry, ApStart::SameEntry, None).unwrap();
    wait_past(vmm.memory(), 1000);

    vmm.pause().unwrap();
    assert!(vmm.is_paused());
    let paused_at = count(vmm.memory());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count(vmm.memory()), paused_at, "a paused guest must not run");

    // Save while paused: registers and the in-kernel devices.
    let states = vmm.save_vcpu_states().unwrap();
    let vm_state = vmm.vm().save_state().unwrap();
    assert_eq!(states.len(), usize::from(vcpus));
    assert!(
        states
            .iter()
            .any(|s| s.regs.rbx == paused_at || s.regs.rbx == paused_at + 1),
        "rbx holds the count the memory mirrors (+1 if paused between inc and store)"
    );
    let image: Vec<(u64, Vec<u8>)> = vmm
        .memory()
        .iter()
        .map(|r| {
            let mut buf = vec![0u8; usize::try_from(r.len()).unwrap()];
            vmm.memory().read_slice(&mut buf, r.start_addr()).unwrap();
            (r.start_addr().0, buf)
        })
        .collect();

    vmm.resume().unwrap();
    let resumed = wait_past(vmm.memory(), paused_at);
    assert!(resumed > paused_at);
    // Pause/resume works more than once.
    vmm.pause().unwrap();
    vmm.resume().unwrap();
    wait_past(vmm.memory(), resumed);
    let summary = vmm.run(Some(Duration::from_millis(50)));
    assert_eq!(summary.exit, VmExit::Timeout);

    // A new VM from the saved state: it starts paused, then counts on from `paused_at`.
    let machine = Machine::new(vcpus, MEM_SIZE).unwrap();
    for (addr, bytes) in &image {
        machine.memory.write_slice(bytes, GuestAddress(*addr)).unwrap();
    }
    machine.vm.restore_state(&vm_state).unwrap();
    let mut vmm = machine.start_with(VcpuStart::Restore(states), None, true).unwrap();
    assert!(vmm.is_paused());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(vmm.memory()), paused_at, "restored paused: nothing runs yet");
    vmm.resume().unwrap();
    let after = wait_past(vmm.memory(), paused_at);
    assert!(
        after > paused_at,
        "restored guest continues from {paused_at}, got {after}"
    );
    let summary = vmm.run(Some(Duration::from_millis(50)));
    assert_eq!(summary.exit, VmExit::Timeout);
}

/// KVM's dirty-page log (diff snapshots) sees the page the guest writes, and only pages
/// written since the last read.
#[test]
fn dirty_log_records_the_pages_the_guest_writes() {
    let mut machine = Machine::new(1, MEM_SIZE).unwrap();
    machine
        .memory
        .write_slice(&assemble("counter"), GuestAddress(CODE_ADDR))
        .unwrap();
    machine.enable_dirty_log().unwrap();
    let entry = EntryMode::Long64 {
        entry: CODE_ADDR,
        zero_page: 0,
    };
    let mut vmm = machine.start(entry, ApStart::SameEntry, None).unwrap();
    assert!(vmm.dirty_tracking());
    wait_past(vmm.memory(), 100);
    vmm.pause().unwrap();
    let _ = vmm.vm().take_dirty_pages(vmm.memory()).unwrap(); // start a clean epoch
    vmm.resume().unwrap();
    let c = count(vmm.memory());
    wait_past(vmm.memory(), c + 100);
    vmm.pause().unwrap();
    let dirty = vmm.vm().take_dirty_pages(vmm.memory()).unwrap();
    let page = usize::try_from(COUNTER / 4096).unwrap();
    let set: Vec<usize> = dirty[0]
        .iter()
        .enumerate()
        .flat_map(|(w, bits)| (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| w * 64 + b))
        .collect();
    assert!(
        set.contains(&page),
        "counter page {page:#x} not in the dirty log {set:x?}"
    );
    assert!(set.len() < 16, "only the pages the guest wrote: {set:x?}");
    let again = vmm.vm().take_dirty_pages(vmm.memory()).unwrap();
    assert!(again[0].iter().all(|w| *w == 0), "reading the log clears it");
    let summary = vmm.run(Some(Duration::from_millis(50)));
    assert_eq!(summary.exit, VmExit::Timeout);
}
