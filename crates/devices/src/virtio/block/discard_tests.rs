//! DISCARD and WRITE_ZEROES against a real image file (the host file system must support
//! hole punching for the block counts to shrink, as ext4, xfs and tmpfs do).

use std::os::unix::fs::MetadataExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES,
};

use super::*;

const SEGS: u64 = 0x2_0000;
/// 256 KiB image: 512 sectors.
const SECTORS: u64 = 512;

/// Writes `segs` (sector, num_sectors, flags) at SEGS and returns the data descriptor.
fn segments(g: &Rig, segs: &[(u64, u32, u32)]) -> RawDescriptor {
    for (i, &(sector, n, flags)) in segs.iter().enumerate() {
        let at = SEGS + 16 * i as u64;
        g.mem.write_obj(sector.to_le(), GuestAddress(at)).unwrap();
        g.mem.write_obj(n.to_le(), GuestAddress(at + 8)).unwrap();
        g.mem.write_obj(flags.to_le(), GuestAddress(at + 12)).unwrap();
    }
    desc(SEGS, 16 * segs.len() as u32, R)
}

fn blocks(g: &Rig) -> u64 {
    std::fs::metadata(&g.path).unwrap().blocks()
}

fn zeroed(mut v: Vec<u8>, sectors: std::ops::Range<u64>) -> Vec<u8> {
    v[(sectors.start * SECTOR_SIZE) as usize..(sectors.end * SECTOR_SIZE) as usize].fill(0);
    v
}

fn u32_at(c: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(c[at..at + 4].try_into().unwrap())
}

#[test]
fn offered_with_limits_on_read_write_drives_only() {
    let g = rig_sized(false, SECTORS);
    let both = 1u64 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
    assert_eq!(g.blk.avail_features() & both, both);
    let c = g.blk.config_space();
    assert_eq!(c.len(), 60);
    assert_eq!(u32_at(c, 36), 1 << 21, "max_discard_sectors");
    assert_eq!(u32_at(c, 40), 32, "max_discard_seg");
    assert_eq!(u32_at(c, 44), 8, "discard_sector_alignment");
    assert_eq!(u32_at(c, 48), 1 << 21, "max_write_zeroes_sectors");
    assert_eq!(u32_at(c, 52), 32, "max_write_zeroes_seg");
    assert_eq!(c[56], 1, "write_zeroes_may_unmap");

    let mut g = rig_sized(true, SECTORS);
    assert_eq!(g.blk.avail_features() & both, 0);
    let before = image_bytes(&g);
    let d = segments(&g, &[(0, 8, 0)]);
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[d]).0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[d]).0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
    assert_eq!(image_bytes(&g), before, "a read-only image is never written");
}

#[test]
fn discard_punches_holes_and_write_zeroes_zeroes() {
    let mut g = rig_sized(false, SECTORS);
    g.blk.set_acked_features(g.blk.avail_features());
    let before = image_bytes(&g);
    let blocks0 = blocks(&g);
    // Two 64 KiB segments in one request.
    let d = segments(&g, &[(64, 128, 0), (256, 128, 0)]);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[d]), (0, 1));
    let want = zeroed(zeroed(before, 64..192), 256..384);
    assert_eq!(
        image_bytes(&g),
        want,
        "discarded ranges read as zeros, nothing else changed"
    );
    assert_eq!(blocks(&g) + 256, blocks0, "128 KiB of blocks freed");

    // Write-zeroes without UNMAP zeroes in place (ZERO_RANGE keeps blocks allocated).
    let d = segments(&g, &[(0, 8, 0)]);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[d]), (0, 1));
    let want = zeroed(want, 0..8);
    assert_eq!(image_bytes(&g), want);
    assert_eq!(blocks(&g) + 256, blocks0, "zeroed in place");
    // With UNMAP (allowed: write_zeroes_may_unmap) it punches a hole.
    let d = segments(&g, &[(8, 8, 1)]);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[d]), (0, 1));
    assert_eq!(image_bytes(&g), zeroed(want, 8..16));
    assert_eq!(blocks(&g) + 264, blocks0, "4 KiB more freed");
}

#[test]
fn without_fallocate_support_write_zeroes_writes_zeros_and_discard_does_nothing() {
    let mut g = rig_sized(false, SECTORS);
    let before = image_bytes(&g);
    let blocks0 = blocks(&g);
    g.blk.disk_mut().unsupported.punch_hole = true;
    g.blk.disk_mut().unsupported.zero_range = true;
    let d = segments(&g, &[(16, 200, 0)]);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[d]), (0, 1));
    assert_eq!(image_bytes(&g), before, "discard is only a hint");
    let d = segments(&g, &[(16, 200, 1)]);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[d]), (0, 1));
    assert_eq!(image_bytes(&g), zeroed(before, 16..216));
    assert_eq!(blocks(&g), blocks0, "zero bytes written, no hole");
}

#[test]
fn bad_segments_fail_the_request_and_change_nothing() {
    let mut g = rig_sized(false, SECTORS);
    let before = image_bytes(&g);
    let ioerr = VIRTIO_BLK_S_IOERR as u8;
    let unsupp = VIRTIO_BLK_S_UNSUPP as u8;
    for (kind, segs, want) in [
        // sector * 512 overflows; sector + num_sectors wraps; past the end.
        (VIRTIO_BLK_T_DISCARD, vec![(u64::MAX / 256, 8, 0)], ioerr),
        (VIRTIO_BLK_T_WRITE_ZEROES, vec![(u64::MAX / 512, 8, 0)], ioerr),
        (VIRTIO_BLK_T_DISCARD, vec![(SECTORS - 8, 16, 0)], ioerr),
        (VIRTIO_BLK_T_WRITE_ZEROES, vec![(SECTORS, 1, 0)], ioerr),
        // A good segment then a bad one: the good one must not run either.
        (VIRTIO_BLK_T_DISCARD, vec![(0, 8, 0), (SECTORS, 8, 0)], ioerr),
        // More sectors than max_*_sectors, reserved flags, UNMAP on a discard.
        (VIRTIO_BLK_T_WRITE_ZEROES, vec![(0, (1 << 21) + 1, 0)], unsupp),
        (VIRTIO_BLK_T_WRITE_ZEROES, vec![(0, 8, 2)], unsupp),
        (VIRTIO_BLK_T_DISCARD, vec![(0, 8, 1)], unsupp),
        // More segments than max_*_seg.
        (VIRTIO_BLK_T_DISCARD, vec![(0, 1, 0); 33], unsupp),
    ] {
        let d = segments(&g, &segs);
        assert_eq!(
            submit(&mut g, kind, 0, &[d]).0,
            want,
            "{kind} {:?}",
            &segs[..segs.len().min(2)]
        );
    }
    // Not whole segments, and no segment at all.
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[desc(SEGS, 20, R)]).0, ioerr);
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[]).0, ioerr);
    // Segments in a device-writable buffer: malformed, completed with nothing written.
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_DISCARD, 0, &[desc(SEGS, 16, W)]), (0xff, 0));
    assert_eq!(image_bytes(&g), before);
    // A segment split across two descriptors is fine.
    segments(&g, &[(8, 8, 0)]);
    let split = [desc(SEGS, 10, R), desc(SEGS + 10, 6, R)];
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_WRITE_ZEROES, 0, &split), (0, 1));
    assert_eq!(image_bytes(&g), zeroed(before, 8..16));
}
