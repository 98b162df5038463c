//! `hearth uffd-handler --mem FILE --socket SOCK`: the page-fault handler process of the Uffd
//! snapshot memory backend (Firecracker's protocol). It listens on SOCK for one hearth (or
//! Firecracker) restoring a snapshot, receives the guest's region mappings (JSON) and the
//! userfaultfd, and fills each missing guest page on first touch from the memory file
//! (UFFDIO_COPY). Pages the guest gave back (balloon inflate: UFFD_EVENT_REMOVE) are served as
//! zero pages afterwards, as anonymous memory would be. It exits when the VMM's connection
//! closes and prints how many faults it served.
//!
//! This file is the process (socket, poll loop, report); `uffd_handler/pages.rs` decides what
//! each fault gets.

mod pages;

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use clap::Args;
use vmm::vstate::uffd::{Uffd, UffdMsg};
use vmm::vstate::uffd_backend::GuestRegionUffdMapping;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use pages::{MemFile, Pages};

#[derive(Args, Debug)]
pub struct UffdHandlerArgs {
    /// The snapshot's memory file (mem_file_path of PUT /snapshot/create).
    #[arg(long, value_name = "PATH")]
    pub mem: PathBuf,
    /// Listen on this Unix socket (created; must not exist) for the VMM's connection.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
}

/// The whole JSON body of one mappings message: Firecracker sends one region per memory slot.
const MAX_MESSAGE: usize = 64 << 10;

pub fn run(args: &UffdHandlerArgs) -> u8 {
    match serve(args) {
        // The VMM went away after being served: the handler's normal end.
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hearth uffd-handler: {e}");
            crate::exit_code::ERROR
        }
    }
}

fn serve(args: &UffdHandlerArgs) -> Result<(), String> {
    let file = MemFile::open(&args.mem)?;
    let sock = args.socket.display();
    let listener = UnixListener::bind(&args.socket).map_err(|e| format!("cannot listen on {sock}: {e}"))?;
    eprintln!("hearth uffd-handler: serving {} on {sock}", args.mem.display());
    let accepted = listener.accept();
    // One VMM per handler: nobody else may connect later, and no socket file is left behind.
    let _ = std::fs::remove_file(&args.socket);
    let (stream, _) = accepted.map_err(|e| format!("cannot accept on {sock}: {e}"))?;
    let (mappings, uffd) = receive(&stream, &args.socket)?;
    let mut pages = Pages::new(file, mappings, &args.mem)?;
    let result = event_loop(&stream, &uffd, &mut pages);
    eprintln!("hearth uffd-handler: {}", pages.counts);
    result
}

/// The one message: the JSON mappings with the userfaultfd attached.
fn receive(stream: &UnixStream, sock: &Path) -> Result<(Vec<GuestRegionUffdMapping>, Uffd), String> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, fd) = stream
        .recv_with_fd(&mut buf)
        .map_err(|e| format!("cannot receive the mappings on {}: {e}", sock.display()))?;
    let fd = fd.ok_or_else(|| format!("the message on {} carries no userfaultfd", sock.display()))?;
    let mappings: Vec<GuestRegionUffdMapping> =
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("bad region mappings on {}: {e}", sock.display()))?;
    Ok((mappings, Uffd::from_file(fd)))
}

/// Serves faults until the VMM closes its end of the socket (or exits).
fn event_loop(stream: &UnixStream, uffd: &Uffd, pages: &mut Pages) -> Result<(), String> {
    let mut fds = [
        libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut msgs = [UffdMsg::default(); 16];
    loop {
        // Faults that met EAGAIN wait for the event that caused it; retry them at once then.
        let timeout = if pages.has_deferred() { 0 } else { -1 };
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {err}"));
        }
        if fds[0].revents & libc::POLLIN != 0 {
            loop {
                let got = uffd
                    .read_msgs(&mut msgs)
                    .map_err(|e| format!("reading the userfaultfd: {e}"))?;
                if got == 0 {
                    break;
                }
                for m in &msgs[..got] {
                    pages.handle(uffd, m.event());
                }
            }
        }
        pages.retry_deferred(uffd);
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return Ok(());
        }
        if fds[1].revents != 0 && vmm_gone(stream) {
            return Ok(());
        }
    }
}

/// The VMM never writes after its one message: readable means closed.
fn vmm_gone(mut stream: &UnixStream) -> bool {
    let mut b = [0u8; 64];
    !matches!(stream.read(&mut b), Ok(n) if n > 0)
}
