//! The host side of a virtio-net device: a tap interface opened through /dev/net/tun with
//! IFF_TAP | IFF_NO_PI, non-blocking, and IFF_VNET_HDR when the kernel has it: every frame then
//! carries the 12-byte `virtio_net_hdr_v1` both ways (TUNSETVNETHDRSZ), which is what lets the
//! guest and the host stack exchange partially checksummed 64 KiB TCP segments. Which receive
//! offloads the tap accepts is probed at open (TUNSETOFFLOAD) and set per driver (see `offload`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::device::Backend;
use super::handler::HDR_LEN;
use super::offload::{self, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// _IOR('T', 207, unsigned int)
const TUNGETFEATURES: libc::c_ulong = 0x8004_54cf;
/// _IOW('T', 208, unsigned int)
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// _IOW('T', 216, int)
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// struct ifreq as TUNSETIFF reads it: the name, then the flags (the rest of the union unused).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct Tap {
    file: File,
    /// Watches `file` edge-triggered: readable once per new frame, so the (level-triggered)
    /// event loop does not spin while a frame waits for receive buffers.
    epoll: Epoll,
    /// Frames carry a vnet header (IFF_VNET_HDR).
    vnet_hdr: bool,
    /// The virtio-net offload features this tap can honour.
    offloads: u64,
}

impl Tap {
    /// Opens (or, with CAP_NET_ADMIN, creates) the tap interface `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= 16 || name.contains(['/', ' ', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a valid interface name",
            ));
        }
        // SAFETY: a plain open(2) of a constant NUL-terminated path; the fd is checked.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut kernel_flags: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int, which `kernel_flags` is.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNGETFEATURES, &mut kernel_flags) };
        let vnet_hdr = r == 0 && kernel_flags & (IFF_VNET_HDR as libc::c_uint) != 0;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one struct ifreq, which `req` is (40 bytes).
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut offloads = 0;
        if vnet_hdr {
            let size = libc::c_int::try_from(HDR_LEN).unwrap_or(12);
            // SAFETY: TUNSETVNETHDRSZ reads one int, which `size` is.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
                return Err(io::Error::last_os_error());
            }
            offloads = offload::HOST_OFFLOADS;
            // Probe the receive offloads: a kernel that refuses them makes the host stack
            // finish checksums and segments instead, and the guest is not offered them.
            if set_offload(&file, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN).is_ok() {
                offloads |= offload::GUEST_OFFLOADS;
            }
            set_offload(&file, 0)?;
        }
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            file.as_raw_fd(),
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 0),
        )?;
        Ok(Self {
            file,
            epoll,
            vnet_hdr,
            offloads,
        })
    }
}

fn set_offload(file: &File, flags: u32) -> io::Result<()> {
    let arg = libc::c_ulong::from(flags);
    // SAFETY: TUNSETOFFLOAD takes its flags by value; no memory is passed.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Backend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write(frame).map(|_| ())
    }
    fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }
    fn offload_features(&self) -> u64 {
        self.offloads
    }
    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        if self.vnet_hdr {
            set_offload(&self.file, offload::tun_flags(acked & self.offloads))
        } else {
            Ok(())
        }
    }
    fn event_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }
    fn ack_event(&mut self) {
        let mut ev = [EpollEvent::default(); 4];
        let _ = self.epoll.wait(0, &mut ev);
    }
}

#[cfg(test)]
#[path = "tap_tests.rs"]
mod tests;
