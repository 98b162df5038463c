//! Parsing the driver's tagged statistics records.

use super::*;

fn rec(tag: u16, val: u64) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&val.to_le_bytes());
    v
}

#[test]
fn parses_every_known_tag_into_its_field() {
    let mut bytes = Vec::new();
    for tag in 0..10u16 {
        bytes.extend(rec(tag, 1000 + u64::from(tag)));
    }
    let mut s = BalloonStats::default();
    s.parse_into(&bytes);
    assert_eq!(s.swap_in, Some(1000));
    assert_eq!(s.swap_out, Some(1001));
    assert_eq!(s.major_faults, Some(1002));
    assert_eq!(s.minor_faults, Some(1003));
    assert_eq!(s.free_memory, Some(1004));
    assert_eq!(s.total_memory, Some(1005));
    assert_eq!(s.available_memory, Some(1006));
    assert_eq!(s.disk_caches, Some(1007));
    assert_eq!(s.hugetlb_allocations, Some(1008));
    assert_eq!(s.hugetlb_failures, Some(1009));
}

#[test]
fn unknown_tags_and_partial_records_are_ignored_and_missing_stay_none() {
    let mut bytes = rec(S_MEMFREE, 4096);
    bytes.extend(rec(77, 5));
    bytes.extend(rec(u16::MAX, u64::MAX));
    bytes.extend(&rec(S_MEMTOT, 1)[..7]); // cut short
    let mut s = BalloonStats::default();
    s.parse_into(&bytes);
    assert_eq!(s.free_memory, Some(4096));
    assert_eq!(s.total_memory, None);
    assert_eq!(s.swap_in, None);
    let line = s.summary();
    assert!(line.contains("free_memory=4096"), "{line}");
    assert!(!line.contains("total_memory"), "{line}");
}

#[test]
fn a_later_value_replaces_an_earlier_one() {
    let mut s = BalloonStats::default();
    s.parse_into(&rec(S_AVAIL, 1));
    s.parse_into(&rec(S_AVAIL, 2));
    assert_eq!(s.available_memory, Some(2));
}

#[test]
fn reads_from_guest_memory_and_bounds_huge_buffers() {
    let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let mut bytes = rec(S_CACHES, 77);
    bytes.extend(rec(S_MINFLT, 9));
    mem.write_slice(&bytes, GuestAddress(0x4000)).unwrap();
    let mut s = BalloonStats::default();
    // A length far past the records (and past what the device reads) is fine.
    assert!(s.read_from(&mem, [(GuestAddress(0x4000), u32::MAX)].into_iter()));
    assert_eq!((s.disk_caches, s.minor_faults), (Some(77), Some(9)));
    // A buffer outside memory is reported, not a panic.
    assert!(!s.read_from(&mem, [(GuestAddress(0x20_0000), 20)].into_iter()));
}
