//! userfaultfd(2): the kernel interface hearth uses to have another process fill guest memory
//! on demand (the Uffd snapshot memory backend and `hearth uffd-handler`). This module owns the
//! file descriptor and its ioctls (Documentation/admin-guide/mm/userfaultfd.rst,
//! include/uapi/linux/userfaultfd.h); it knows nothing of snapshots or sockets.
//!
//! Written by hand: the ABI is a handful of fixed-layout structs and five ioctls. The
//! `userfaultfd` crate would bring `nix` and a generated-bindings build step for the same.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

const UFFD_API: u64 = 0xAA;
const UFFDIO: u32 = 0xAA;
/// Register ranges so that touching a page nobody has filled yet reports a fault.
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// Report `madvise(MADV_DONTNEED/REMOVE)` on registered ranges (the balloon's inflate).
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;

/// `uffd_msg.event` values.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

ioctl_iowr_nr!(UFFDIO_API_IOCTL, UFFDIO, 0x3F, UffdioApi);
ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, UffdioRegister);
ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, UffdioRange);
ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, UffdioCopy);
ioctl_iowr_nr!(UFFDIO_ZEROPAGE, UFFDIO, 0x04, UffdioZeropage);
// /dev/userfaultfd (Linux 6.1+): a new userfaultfd for callers the syscall refuses.
ioctl_io_nr!(USERFAULTFD_IOC_NEW, UFFDIO, 0x00);

/// One message read from a userfaultfd (`struct uffd_msg`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct UffdMsg {
    pub event: u8,
    reserved: [u8; 7],
    /// PAGEFAULT: flags, address, thread id. REMOVE: start, end, unused.
    pub arg: [u64; 3],
}

/// A userfaultfd event hearth acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A thread touched a missing page at this host address (not page aligned).
    PageFault { addr: u64 },
    /// `[start, end)` was discarded: its next touch must see zeros, not the file.
    Remove { start: u64, end: u64 },
    /// An event hearth did not ask for.
    Other(u8),
}

impl UffdMsg {
    pub fn event(&self) -> Event {
        match self.event {
            UFFD_EVENT_PAGEFAULT => Event::PageFault { addr: self.arg[1] },
            UFFD_EVENT_REMOVE => Event::Remove {
                start: self.arg[0],
                end: self.arg[1],
            },
            e => Event::Other(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    #[error("this kernel has no userfaultfd (CONFIG_USERFAULTFD)")]
    NoKernelSupport,
    #[error("userfaultfd is not permitted: run as root or set vm.unprivileged_userfaultfd=1")]
    NotPermitted,
    #[error("cannot create a userfaultfd")]
    Create(#[source] io::Error),
    #[error("userfaultfd handshake (UFFDIO_API) failed")]
    Api(#[source] io::Error),
    #[error("cannot register guest memory at {addr:#x} (+{len:#x}) with userfaultfd")]
    Register {
        addr: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
}

/// A userfaultfd. hearth creates one, registers guest memory with it and hands it to a
/// handler process; the handler wraps the received descriptor with [`Uffd::from_file`].
#[derive(Debug)]
pub struct Uffd(File);

impl Uffd {
    /// A non-blocking, close-on-exec userfaultfd after the API handshake with `features`.
    /// Faults from the kernel (KVM reading guest memory) are included: no user-mode-only flag.
    pub fn new(features: u64) -> Result<Self, UffdError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: userfaultfd takes only flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let fd = if fd >= 0 {
            RawFd::try_from(fd).map_err(|_| UffdError::Create(io::Error::from_raw_os_error(libc::EBADF)))?
        } else {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOSYS) => return Err(UffdError::NoKernelSupport),
                Some(libc::EPERM) => Self::from_dev(flags)?,
                _ => return Err(UffdError::Create(err)),
            }
        };
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        let uffd = Self(unsafe { File::from_raw_fd(fd) });
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
        let ret = unsafe { ioctl_with_mut_ref(&uffd.0, UFFDIO_API_IOCTL(), &mut api) };
        if ret < 0 {
            return Err(UffdError::Api(io::Error::last_os_error()));
        }
        Ok(uffd)
    }

    /// /dev/userfaultfd, which its file permissions guard instead of the sysctl.
    fn from_dev(flags: i32) -> Result<RawFd, UffdError> {
        let dev = File::options()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .map_err(|_| UffdError::NotPermitted)?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value and returns a new descriptor.
        let fd = unsafe {
            vmm_sys_util::ioctl::ioctl_with_val(&dev, USERFAULTFD_IOC_NEW(), libc::c_ulong::from(flags.unsigned_abs()))
        };
        if fd < 0 {
            return Err(UffdError::NotPermitted);
        }
        Ok(fd)
    }

    /// Wraps a userfaultfd received from another process (already past the handshake).
    pub fn from_file(file: File) -> Self {
        Self(file)
    }

    /// Reports missing-page faults in `[addr, addr + len)` (page aligned).
    pub fn register(&self, addr: u64, len: u64) -> Result<(), UffdError> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start: addr, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`, which `reg` is.
        let ret = unsafe { ioctl_with_mut_ref(&self.0, UFFDIO_REGISTER(), &mut reg) };
        if ret < 0 {
            return Err(UffdError::Register {
                addr,
                len,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Fills the missing page(s) at `dst` with `len` bytes from `src` (in this process) and
    /// wakes the threads waiting on them. EEXIST: already filled; EAGAIN: the mapping changed
    /// under us (a remove event is pending).
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64) -> io::Result<()> {
        let mut c = UffdioCopy {
            dst,
            src: src as u64,
            len,
            mode: 0,
            copy: 0,
        };
        // SAFETY: the kernel reads `len` bytes at `src` (the caller's promise) and writes only
        // into the registered range of the faulting process; `c` is a `struct uffdio_copy`.
        let ret = unsafe { ioctl_with_mut_ref(&self.0, UFFDIO_COPY(), &mut c) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps zero pages at `[dst, dst + len)` and wakes the threads waiting on them.
    pub fn zeropage(&self, dst: u64, len: u64) -> io::Result<()> {
        let mut z = UffdioZeropage {
            range: UffdioRange { start: dst, len },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE reads and writes a `struct uffdio_zeropage`, which `z` is.
        let ret = unsafe { ioctl_with_mut_ref(&self.0, UFFDIO_ZEROPAGE(), &mut z) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wakes the threads waiting on `[addr, addr + len)` (after EEXIST: someone else filled it).
    pub fn wake(&self, addr: u64, len: u64) -> io::Result<()> {
        let r = UffdioRange { start: addr, len };
        // SAFETY: UFFDIO_WAKE reads a `struct uffdio_range`, which `r` is.
        let ret = unsafe { ioctl_with_ref(&self.0, UFFDIO_WAKE(), &r) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the pending messages into `buf`; returns how many (0 if none is pending).
    pub fn read_msgs(&self, buf: &mut [UffdMsg]) -> io::Result<usize> {
        let size = std::mem::size_of::<UffdMsg>();
        // SAFETY: `buf` is valid for `buf.len() * size` bytes and UffdMsg is plain data for
        // which every byte pattern is valid.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), std::mem::size_of_val(buf)) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(err),
            };
        }
        Ok(usize::try_from(n).unwrap_or(0) / size)
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_match_the_kernel() {
        // include/uapi/linux/userfaultfd.h
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioZeropage>(), 32);
        assert_eq!(UFFDIO_COPY(), 0xc028_aa03);
        assert_eq!(UFFDIO_REGISTER(), 0xc020_aa00);
    }
}
