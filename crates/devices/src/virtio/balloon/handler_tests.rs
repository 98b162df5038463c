//! PFN coalescing and releasing host memory behind guest pages (real mappings, real madvise).

use vm_memory::{Bytes, GuestAddress};

use super::*;

fn ranges(pfns: &[u32]) -> Vec<(u64, u64)> {
    let mut c = PfnRanges::default();
    let mut out: Vec<(u64, u64)> = pfns
        .iter()
        .filter_map(|&p| c.push(p))
        .map(|r| (r.start, r.count))
        .collect();
    out.extend(c.finish().map(|r| (r.start, r.count)));
    out
}

#[test]
fn contiguous_pfns_coalesce_into_ranges() {
    assert_eq!(ranges(&[]), vec![]);
    assert_eq!(ranges(&[7]), vec![(7, 1)]);
    assert_eq!(ranges(&[1, 2, 3, 10, 11, 5]), vec![(1, 3), (10, 2), (5, 1)]);
    // Duplicates and descending runs are separate ranges, never merged wrongly.
    assert_eq!(ranges(&[4, 4, 3, 2]), vec![(4, 1), (4, 1), (3, 1), (2, 1)]);
    // The top PFN does not wrap into 0.
    assert_eq!(ranges(&[u32::MAX, 0]), vec![(u64::from(u32::MAX), 1), (0, 1)]);
}

fn mem() -> Memory {
    // Two regions with a hole between them, like guest RAM around the MMIO gap.
    Memory::from_ranges(&[(GuestAddress(0), 0x10_0000), (GuestAddress(0x20_0000), 0x10_0000)]).unwrap()
}

fn fill(m: &Memory, addr: u64, len: usize) {
    m.write_slice(&vec![0xa5; len], GuestAddress(addr)).unwrap();
}

fn is_zero(m: &Memory, addr: u64, len: usize) -> bool {
    let mut b = vec![1u8; len];
    m.read_slice(&mut b, GuestAddress(addr)).unwrap();
    b.iter().all(|&x| x == 0)
}

#[test]
fn released_pages_read_back_as_zeros_and_neighbours_keep_their_data() {
    let m = mem();
    fill(&m, 0, 0x10_0000);
    let t = release_pfns(&m, PfnRange { start: 0x10, count: 4 });
    assert_eq!(t, PageTally { pages: 4, outside: 0 });
    assert!(is_zero(&m, 0x10_000, 0x4000));
    assert!(!is_zero(&m, 0xf000, 0x1000));
    assert!(!is_zero(&m, 0x14_000, 0x1000));
}

#[test]
fn pfns_outside_guest_memory_are_counted_and_skipped() {
    let m = mem();
    fill(&m, 0xf_e000, 0x2000);
    fill(&m, 0x20_0000, 0x1000);
    // The last two pages of region 0, then three in the hole.
    let t = release_pfns(&m, PfnRange { start: 0xfe, count: 5 });
    assert_eq!(t, PageTally { pages: 2, outside: 3 });
    assert!(is_zero(&m, 0xf_e000, 0x2000));
    // Far outside, and PFNs whose byte address overflows.
    let t = release_pfns(
        &m,
        PfnRange {
            start: 0xffff_ffff,
            count: 2,
        },
    );
    assert_eq!(t, PageTally { pages: 0, outside: 2 });
    let t = release_pfns(
        &m,
        PfnRange {
            start: u64::MAX >> 4,
            count: 3,
        },
    );
    assert_eq!(t, PageTally { pages: 0, outside: 3 });
}

#[test]
fn discard_shrinks_to_whole_pages_and_rejects_ranges_outside_ram() {
    let m = mem();
    fill(&m, 0x3000, 0x3000);
    // 0x3800..0x5800 covers exactly one whole page, 0x4000..0x5000.
    discard(&m, GuestAddress(0x3800), 0x2000).unwrap();
    assert!(!is_zero(&m, 0x3000, 0x1000));
    assert!(is_zero(&m, 0x4000, 0x1000));
    assert!(!is_zero(&m, 0x5000, 0x1000));
    assert!(matches!(
        discard(&m, GuestAddress(0xf_f000), 0x2000),
        Err(DiscardError::Outside { .. })
    ));
    assert_eq!(discard(&m, GuestAddress(0xdead_0000), 0), Ok(()));
}

#[test]
fn pfn_arrays_are_read_from_guest_buffers_in_order() {
    let m = mem();
    let pfns: Vec<u32> = (100..400).chain([7, 8]).collect();
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    m.write_slice(&bytes, GuestAddress(0x8000)).unwrap();
    let mut got = Vec::new();
    // Two buffers, the run continuing across them; a trailing partial PFN is ignored.
    let bufs = [
        (GuestAddress(0x8000), 200 * 4),
        (GuestAddress(0x8000 + 800), 102 * 4 + 3),
    ];
    assert!(for_each_range(&m, bufs.into_iter(), |r| got.push((r.start, r.count))));
    assert_eq!(got, vec![(100, 300), (7, 2)]);
}
