//! A malicious virtio driver on real KVM: the tiny guest `guests/virtio_blk_evil.S` programs
//! hearth's virtio-blk device (attached by the builder's own `attach_virtio`: MMIO transport,
//! ioeventfd kicks handled on the event loop, irqfd) with a looping chain, a sweep of every
//! offset and width of its register window, a buffer that wraps the address space, an avail
//! index far ahead, and a bad queue size. The device must report DEVICE_NEEDS_RESET each time,
//! serve a good request after a reset, never write the image, and the VMM must keep answering
//! other devices and end cleanly.

mod common;

use std::sync::{Arc, Mutex};

use common::{report, TestVm};
use devices::virtio::Block;
use vmm::{ApStart, VmExit};

const NEEDS_RESET: u64 = 0x40;
/// ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK.
const ALL_OK: u64 = 0xf;

struct TempImage(std::path::PathBuf);
impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_malicious_driver_cannot_hurt_the_vmm_or_the_image() {
    let image = TempImage(std::env::temp_dir().join(format!("hearth-evil-{}.img", std::process::id())));
    let data: Vec<u8> = (0u32..64 * 1024).map(|i| (i % 253) as u8).collect();
    std::fs::write(&image.0, &data).expect("write the image");
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&image.0)
        .expect("open the image");
    let blk = Arc::new(Mutex::new(Block::new(file, false, "evil").expect("block device")));

    let mut vm = TestVm::new("virtio_blk_evil", 1, 1);
    vmm::builder::attach_virtio(
        &mut vm.machine,
        blk.clone(),
        vmm::arch::layout::MMIO_DEVICES_START,
        5,
        None,
    )
    .expect("attach virtio-blk");
    let (summary, log) = vm.run(ApStart::SameEntry);
    assert_eq!(summary.exit, VmExit::GuestShutdown, "log: {log:x?}");

    assert_eq!(report(&log, 0), ALL_OK | NEEDS_RESET, "looping chain");
    assert_eq!(report(&log, 1), 2, "config-change interrupt for the looping chain");
    assert_eq!(report(&log, 2), 0, "status after reset");
    assert_eq!(report(&log, 3), 0, "good read after reset: VIRTIO_BLK_S_OK");
    let first = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    assert_eq!(report(&log, 4), first, "good read returned the image's bytes");
    assert_eq!(report(&log, 5), 1, "write past the end: VIRTIO_BLK_S_IOERR");
    assert_eq!(
        report(&log, 6),
        ALL_OK | NEEDS_RESET,
        "buffer wrapping the address space"
    );
    assert_eq!(report(&log, 7), ALL_OK | NEEDS_RESET, "avail index 100 ahead");
    assert_eq!(report(&log, 8), ALL_OK | NEEDS_RESET, "queue size 12");
    assert_eq!(report(&log, 9), common::REPORT_ANSWER + 4, "other devices still answer");
    assert!(
        std::fs::read(&image.0).expect("read the image") == data,
        "the image changed"
    );
}
