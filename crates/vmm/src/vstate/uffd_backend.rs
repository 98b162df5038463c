//! The Uffd snapshot memory backend, hearth's side (Firecracker's protocol): guest RAM is
//! anonymous private memory registered with a userfaultfd; hearth connects to a page-fault
//! handler's Unix socket and sends it, in one message, the JSON array of region mappings with
//! the userfaultfd attached (SCM_RIGHTS). From then on every first touch of a guest page — by a
//! vCPU through KVM or by a device thread — waits until the handler fills it.
//!
//! The handler side is `hearth uffd-handler` (crates/hearth/src/uffd_handler.rs); any handler
//! written for Firecracker works too.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::memory::GuestMemory;
use super::uffd::{Uffd, UffdError, UFFD_FEATURE_EVENT_REMOVE};

/// One guest RAM region as the handler sees it (Firecracker's `GuestRegionUffdMapping`):
/// where it lies in hearth's address space and where its bytes are in the memory file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionUffdMapping {
    pub base_host_virt_addr: u64,
    pub size: u64,
    pub offset: u64,
    /// Bytes; Firecracker before 1.5 called it `page_size_kib` (and also meant bytes).
    #[serde(alias = "page_size_kib")]
    pub page_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UffdBackendError {
    #[error(transparent)]
    Uffd(#[from] UffdError),
    #[error("cannot map guest memory for the Uffd backend")]
    Map,
    #[error("no page-fault handler listens on {path}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot send the userfaultfd to the page-fault handler on {path} (did it exit?)")]
    Send {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The connection to a page-fault handler. Keep it for as long as the VM runs: the handler
/// exits when the socket closes, and the userfaultfd must outlive every guest access.
#[derive(Debug)]
pub struct UffdSession {
    pub stream: UnixStream,
    pub uffd: Uffd,
    pub mappings: Vec<GuestRegionUffdMapping>,
}

/// The host page size (the granule of userfaultfd faults on anonymous memory).
pub fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Anonymous guest memory at `regions` (guest address, size, memory-file offset), registered
/// with a new userfaultfd that is handed to the handler listening on `socket`. Nothing is
/// left behind on error: the memory and the descriptor are dropped.
pub fn memory_from_handler(
    regions: &[(GuestAddress, usize, u64)],
    socket: &Path,
) -> Result<(GuestMemory, UffdSession), UffdBackendError> {
    let ranges: Vec<(GuestAddress, usize)> = regions.iter().map(|&(a, s, _)| (a, s)).collect();
    let mem = GuestMemory::from_ranges(&ranges).map_err(|_| UffdBackendError::Map)?;
    // Connect first: a missing handler is the likeliest mistake and says the most.
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|source| UffdBackendError::Connect {
        path: path.clone(),
        source,
    })?;
    let uffd = Uffd::new(UFFD_FEATURE_EVENT_REMOVE)?;
    let page_size = host_page_size();
    let mut mappings = Vec::with_capacity(regions.len());
    for (region, &(_, _, offset)) in mem.iter().zip(regions) {
        let host = region.as_ptr() as u64;
        let size = region.len();
        uffd.register(host, size)?;
        mappings.push(GuestRegionUffdMapping {
            base_host_virt_addr: host,
            size,
            offset,
            page_size,
        });
    }
    let body = serde_json::to_vec(&mappings).map_err(|e| UffdBackendError::Send {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    let sent = stream
        .send_with_fd(&body[..], uffd.as_raw_fd())
        .map_err(|e| UffdBackendError::Send {
            path: path.clone(),
            source: io::Error::from_raw_os_error(e.errno()),
        })?;
    if sent != body.len() {
        return Err(UffdBackendError::Send {
            path,
            source: io::Error::from(io::ErrorKind::WriteZero),
        });
    }
    Ok((mem, UffdSession { stream, uffd, mappings }))
}

/// Keeps `session` open for the life of the process, on a thread that ends hearth with a
/// one-line error if the handler goes away: from then on no missing guest page could ever be
/// filled, and the guest would hang on its next first touch.
pub fn watch_handler(session: UffdSession, socket: &Path) {
    let path = socket.display().to_string();
    let spawned = std::thread::Builder::new().name("uffd-watch".into()).spawn(move || {
        let mut fds = [libc::pollfd {
            fd: session.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        loop {
            // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
            if n > 0 {
                break;
            }
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        log::error!("the page-fault handler on {path} went away; guest memory can no longer be served");
        eprintln!("hearth: the page-fault handler on {path} went away; guest memory can no longer be served");
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        log::warn!("cannot watch the page-fault handler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_json_is_firecrackers() {
        let m = GuestRegionUffdMapping {
            base_host_virt_addr: 0x7f00_0000_0000,
            size: 0x1000_0000,
            offset: 0,
            page_size: 4096,
        };
        let s = serde_json::to_string(&[&m]).unwrap_or_default();
        assert_eq!(
            s,
            r#"[{"base_host_virt_addr":139637976727552,"size":268435456,"offset":0,"page_size":4096}]"#
        );
        let old: Vec<GuestRegionUffdMapping> =
            serde_json::from_str(r#"[{"base_host_virt_addr":1,"size":2,"offset":3,"page_size_kib":4096}]"#)
                .unwrap_or_default();
        assert_eq!(old[0].page_size, 4096);
    }

    #[test]
    fn missing_handler_is_one_line() {
        let err = memory_from_handler(&[(GuestAddress(0), 1 << 20, 0)], Path::new("/nonexistent/uffd.sock"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "no page-fault handler listens on /nonexistent/uffd.sock");
    }
}
