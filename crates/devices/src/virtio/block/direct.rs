//! O_DIRECT drives (`--drive path=IMG,direct`): reads and writes bypass the host's page cache,
//! so a guest's I/O costs the host no memory and a benchmark measures the disk, not RAM.
//!
//! O_DIRECT wants file offsets, lengths and memory addresses aligned. Offsets and lengths are
//! whole 512-byte sectors already (the virtio-blk protocol; the drive is probed for 512-byte
//! direct I/O when it is opened). Guest buffers are not necessarily aligned, so every transfer
//! goes through a page-aligned bounce buffer, in chunks of at most [`CHUNK`] bytes so a guest
//! asking for a huge transfer cannot make hearth allocate more.

use std::alloc::Layout;
use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes};

use crate::virtio::Memory;

/// Alignment of the bounce buffer (covers every file system's memory alignment for O_DIRECT).
pub(crate) const ALIGN: usize = 4096;
/// The most one bounce-buffer round moves.
pub(crate) const CHUNK: usize = 1 << 20;

/// A zero-filled, [`ALIGN`]-aligned heap buffer of [`CHUNK`] bytes.
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
}

// SAFETY: the buffer is plain memory owned by this value; moving it between threads is fine.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> Layout {
        // CHUNK and ALIGN are non-zero powers of two: this cannot fail.
        Layout::from_size_align(CHUNK, ALIGN).unwrap_or_else(|_| Layout::new::<u8>())
    }

    pub(crate) fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(Self::layout()) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout()));
        Self { ptr }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at CHUNK initialised (zeroed) bytes owned by `self`, borrowed
        // mutably for as long as the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), CHUNK) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout()) };
    }
}

/// Checks that `image` (opened with O_DIRECT) takes a 512-byte direct read at offset 0.
pub(crate) fn probe(image: &File) -> std::io::Result<()> {
    let mut buf = AlignedBuf::new();
    image.read_at(&mut buf.as_mut_slice()[..512], 0).map(|_| ())
}

/// Copies between the data descriptors (as one byte stream) at `offset` and `buf`.
fn copy_descs(
    mem: &Memory,
    data: &[Descriptor],
    mut offset: u64,
    buf: &mut [u8],
    to_guest: bool,
) -> std::io::Result<()> {
    let mut done = 0usize;
    for d in data {
        let len = u64::from(d.len());
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len() - done);
        let addr = d
            .addr()
            .checked_add(offset)
            .ok_or_else(|| std::io::Error::other("descriptor address overflows"))?;
        let part = &mut buf[done..done + n];
        let r = if to_guest {
            mem.write_slice(part, addr)
        } else {
            mem.read_slice(part, addr)
        };
        r.map_err(std::io::Error::other)?;
        done += n;
        offset = 0;
        if done == buf.len() {
            break;
        }
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(std::io::Error::other("request shorter than its descriptors say"))
    }
}

/// Moves `len` bytes between the image at `start` and the data descriptors, through `bounce`.
pub(crate) fn transfer(
    image: &File,
    bounce: &mut AlignedBuf,
    mem: &Memory,
    data: &[Descriptor],
    start: u64,
    len: u64,
    read: bool,
) -> std::io::Result<()> {
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from(len - off).unwrap_or(CHUNK).min(CHUNK);
        let buf = &mut bounce.as_mut_slice()[..n];
        if read {
            image.read_exact_at(buf, start + off)?;
            copy_descs(mem, data, off, buf, true)?;
        } else {
            copy_descs(mem, data, off, buf, false)?;
            image.write_all_at(buf, start + off)?;
        }
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn desc(addr: u64, len: u32) -> Descriptor {
        Descriptor::new(addr, len, 0, 0)
    }

    #[test]
    fn bounce_is_aligned_and_gathers_across_descriptors() {
        let mut b = AlignedBuf::new();
        assert_eq!(b.as_mut_slice().as_ptr() as usize % ALIGN, 0);
        let mem = Memory::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x101)).unwrap();
        mem.write_slice(b" world", GuestAddress(0x2003)).unwrap();
        let data = [desc(0x101, 5), desc(0x2003, 6)];
        let mut buf = [0u8; 8];
        copy_descs(&mem, &data, 3, &mut buf, false).unwrap();
        assert_eq!(&buf, b"lo world");
        copy_descs(&mem, &data, 0, &mut buf[..4], true).unwrap();
        let mut back = [0u8; 5];
        mem.read_slice(&mut back, GuestAddress(0x101)).unwrap();
        assert_eq!(&back, b"lo wo");
        let mut long = [0u8; 12];
        assert!(
            copy_descs(&mem, &data, 0, &mut long, false).is_err(),
            "past the descriptors"
        );
    }

    #[test]
    fn transfers_round_trip_through_a_direct_file() {
        // A real O_DIRECT file where the file system supports it (tmpfs does not: then the
        // buffered path of the same code is exercised).
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("hearth-direct-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 3 << 20]).unwrap();
        let direct = std::fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let image = match direct {
            Ok(f) if probe(&f).is_ok() => f,
            _ => std::fs::File::options().read(true).write(true).open(&path).unwrap(),
        };
        let mem = Memory::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let pattern: Vec<u8> = (0..(1u32 << 20) + 1024).map(|i| (i * 7 % 251) as u8).collect();
        mem.write_slice(&pattern[..1000], GuestAddress(0x10_0003)).unwrap();
        mem.write_slice(&pattern[1000..], GuestAddress(0x20_0000)).unwrap();
        let data = [
            desc(0x10_0003, 1000),
            desc(0x20_0000, u32::try_from(pattern.len() - 1000).unwrap()),
        ];
        let mut bounce = AlignedBuf::new();
        let len = pattern.len() as u64;
        transfer(&image, &mut bounce, &mem, &data, 512, len, false).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(
            &on_disk[512..512 + pattern.len()],
            &pattern[..],
            "two chunks written in order"
        );
        let back = [desc(0x28_0001, u32::try_from(pattern.len()).unwrap())];
        transfer(&image, &mut bounce, &mem, &back, 512, len, true).unwrap();
        let mut got = vec![0u8; pattern.len()];
        mem.read_slice(&mut got, GuestAddress(0x28_0001)).unwrap();
        assert_eq!(got, pattern);
        let _ = std::fs::remove_file(&path);
    }
}
