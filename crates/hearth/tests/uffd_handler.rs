//! The Uffd memory backend without a guest: this test process plays the VMM (anonymous
//! memory registered with a userfaultfd, handed to a real `hearth uffd-handler` process over
//! its socket with hearth's own backend code) and touches guest pages through vm-memory:
//! - a read of a missing page returns the memory file's bytes for that page (two regions at
//!   different file offsets), a write to a missing page lands on top of the file's page;
//! - a page given back with MADV_DONTNEED (what the balloon does) reads as zeros afterwards
//!   (UFFD_EVENT_REMOVE), not as the file's stale bytes;
//! - closing the connection ends the handler, which reports exactly the faults it served;
//! - a stale socket, a missing memory file and regions past the file's end give one-line errors.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::vstate::uffd_backend::{memory_from_handler, UffdBackendError};

const PAGE: usize = 4096;
const REGION1: u64 = 1 << 20;

struct Handler(Child);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Handler {
    fn spawn(mem: &Path, sock: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["uffd-handler", "--mem"])
            .arg(mem)
            .arg("--socket")
            .arg(sock)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn wait_listening(&mut self, sock: &Path) {
        let start = Instant::now();
        while !sock.exists() {
            assert!(self.0.try_wait().unwrap().is_none(), "handler exited early");
            assert!(start.elapsed() < Duration::from_secs(60), "handler never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the handler to exit; returns its exit code and stderr.
    fn finish(mut self) -> (i32, String) {
        let status = self.0.wait().unwrap();
        let mut err = String::new();
        self.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("uffd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A memory file of `pages` pages, page i filled with byte i + 1.
fn mem_file(path: &Path, pages: usize) {
    let data: Vec<u8> = (0..pages * PAGE).map(|b| u8::try_from(b / PAGE + 1).unwrap()).collect();
    std::fs::write(path, data).unwrap();
}

fn counts(report: &str) -> Vec<u64> {
    let line = report
        .lines()
        .find(|l| l.contains("served"))
        .unwrap_or_else(|| panic!("no report in {report}"));
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn handler_fills_pages_from_the_file_and_zeroes_removed_ones() {
    let d = dir("serve");
    let (mem, sock) = (d.join("vm.mem"), d.join("uffd.sock"));
    mem_file(&mem, 32);
    let mut handler = Handler::spawn(&mem, &sock);
    handler.wait_listening(&sock);
    let regions = [
        (GuestAddress(0), 16 * PAGE, 0),
        (GuestAddress(REGION1), 16 * PAGE, 16 * PAGE as u64),
    ];
    let (guest, session) = memory_from_handler(&regions, &sock).unwrap();
    assert_eq!(session.mappings.len(), 2);
    assert_eq!(session.mappings[1].offset, 16 * PAGE as u64);

    // Region 0, page 5: the file's page 5.
    assert_eq!(guest.read_obj::<u8>(GuestAddress(5 * PAGE as u64 + 7)).unwrap(), 6);
    // Region 1, pages 3..=5 in one read: file pages 19..=21.
    let mut buf = vec![0u8; 2 * PAGE + 100];
    guest
        .read_slice(&mut buf, GuestAddress(REGION1 + 3 * PAGE as u64))
        .unwrap();
    assert!(buf[..PAGE].iter().all(|&b| b == 20));
    assert!(buf[PAGE..2 * PAGE].iter().all(|&b| b == 21));
    assert!(buf[2 * PAGE..].iter().all(|&b| b == 22));
    // A write to a missing page lands on the file's page.
    let w = GuestAddress(10 * PAGE as u64);
    guest.write_obj(0xabu8, w).unwrap();
    let mut page = vec![0u8; PAGE];
    guest.read_slice(&mut page, w).unwrap();
    assert_eq!(page[0], 0xab);
    assert!(page[1..].iter().all(|&b| b == 11));

    // Give pages 5 and 10 back, as the balloon does: they come back as zeros.
    for p in [5u64, 10] {
        let host = guest.get_host_address(GuestAddress(p * PAGE as u64)).unwrap();
        // SAFETY: one page of this test's own guest mapping, which nothing else references.
        let r = unsafe { libc::madvise(host.cast(), PAGE, libc::MADV_DONTNEED) };
        assert_eq!(r, 0);
        guest.read_slice(&mut page, GuestAddress(p * PAGE as u64)).unwrap();
        assert!(page.iter().all(|&b| b == 0), "page {p} after MADV_DONTNEED");
    }
    // An untouched neighbour still comes from the file.
    assert_eq!(guest.read_obj::<u8>(GuestAddress(4 * PAGE as u64)).unwrap(), 5);

    // The VMM goes away: the handler exits and reports.
    drop(session);
    let (code, report) = handler.finish();
    drop(guest);
    assert_eq!(code, 0, "{report}");
    // served, copied, zero, already present, removes, failed
    assert_eq!(counts(&report), vec![8, 6, 2, 0, 2, 0], "{report}");
}

#[test]
fn setup_errors_are_one_line() {
    let d = dir("errors");
    // A socket file nobody listens on.
    let stale = d.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = memory_from_handler(&[(GuestAddress(0), 16 * PAGE, 0)], &stale).unwrap_err();
    assert!(matches!(err, UffdBackendError::Connect { .. }));
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.starts_with(&format!("no page-fault handler listens on {}", stale.display())),
        "{chain}"
    );
    assert!(chain.contains("refused"), "{chain}");

    // The handler's own setup errors.
    let sock = d.join("h.sock");
    let (code, err) = Handler::spawn(&d.join("missing.mem"), &sock).finish();
    assert_eq!(code, 1);
    assert!(err.starts_with("hearth uffd-handler: cannot open memory file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!sock.exists());

    // Regions larger than the memory file: refused before serving anything.
    let small = d.join("small.mem");
    mem_file(&small, 4);
    let mut handler = Handler::spawn(&small, &sock);
    handler.wait_listening(&sock);
    let (guest, session) = memory_from_handler(&[(GuestAddress(0), 16 * PAGE, 0)], &sock).unwrap();
    let (code, err) = handler.finish();
    drop((session, guest));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not fit memory file"), "{err}");
    assert!(!sock.exists(), "the handler removes its socket");
}
