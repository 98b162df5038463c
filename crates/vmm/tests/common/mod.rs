//! Shared pieces of the tiny-guest tests: assembling a guest from `tests/guests/*.S` with
//! binutils, the recording test devices, and a VM wrapper that loads a guest and runs it with a
//! deadline.
//!
//! Port map every guest shares (see `guests/lib.inc`): the report device answers ports
//! `0xe0..0xf0` (a write at `0xe0 + k` is report number `k`; a read returns a known value), and
//! any write to port `0xf4` tells the exit device that one vCPU is done.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::BusDevice;
use vm_memory::{Bytes, GuestAddress};
use vmm::arch::regs::EntryMode;
use vmm::vstate::exits::render_table;
use vmm::{ApStart, Machine, RunSummary};
use vmm_sys_util::eventfd::EventFd;

pub const CODE_ADDR: u64 = 0x10_0000;
pub const MEM_SIZE: u64 = 64 << 20;
pub const REPORT_PORT: u64 = 0xe0;
pub const REPORT_LEN: u64 = 0x10;
pub const EXIT_PORT: u64 = 0xf4;
/// Value the report device answers at offset 0 (offset `k` reads `REPORT_ANSWER + k`).
pub const REPORT_ANSWER: u64 = 0x1234_0000;
/// Long enough for a slow (PVM, emulated ring 0) host under parallel tests; never reached by a
/// healthy guest, and it keeps a broken one from hanging the test run.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// True on a PVM host, where guest ring 0 runs in KVM's instruction emulator.
pub fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Assembles `tests/guests/<name>.S` into a flat binary linked at [`CODE_ADDR`].
pub fn assemble(name: &str) -> Vec<u8> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny_guests");
    std::fs::create_dir_all(&dir).expect("create the guest build directory");
    let stem = format!("{name}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let (obj, elf, bin) = (
        dir.join(format!("{stem}.o")),
        dir.join(format!("{stem}.elf")),
        dir.join(format!("{stem}.bin")),
    );
    let src = guests.join(format!("{name}.S"));
    run_tool(
        Command::new("as")
            .arg("--64")
            .arg("-I")
            .arg(&guests)
            .arg("-o")
            .arg(&obj)
            .arg(&src),
    );
    let text = format!("-Ttext={CODE_ADDR:#x}");
    run_tool(
        Command::new("ld")
            .args(["-nostdlib", "-z", "noexecstack", &text, "-e", "_start", "-o"])
            .arg(&elf)
            .arg(&obj),
    );
    run_tool(
        Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&elf)
            .arg(&bin),
    );
    let code = std::fs::read(&bin).expect("read the assembled guest");
    for f in [obj, elf, bin] {
        let _ = std::fs::remove_file(f);
    }
    assert!(!code.is_empty(), "guest {name} assembled to nothing");
    code
}

fn run_tool(cmd: &mut Command) {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}): the tiny-guest tests need GNU binutils (as, ld, objcopy); install binutils")
    });
    assert!(
        out.status.success(),
        "`{tool}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One access a recording device saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read { offset: u64, len: usize },
    Write { offset: u64, len: usize, value: u64 },
}

/// Records every access; a read of `len` bytes at `offset` returns `answer + offset`.
pub struct Recorder {
    answer: u64,
    pub log: Vec<Access>,
}

impl Recorder {
    pub fn new(answer: u64) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            answer,
            log: Vec::new(),
        }))
    }
}

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = (self.answer + offset).to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&v[..n]);
        self.log.push(Access::Read {
            offset,
            len: data.len(),
        });
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut v = [0u8; 8];
        let n = data.len().min(8);
        v[..n].copy_from_slice(&data[..n]);
        self.log.push(Access::Write {
            offset,
            len: data.len(),
            value: u64::from_le_bytes(v),
        });
    }
}

/// Ends the VM (through the machine's reset eventfd) once `left` writes have arrived: one per
/// vCPU that has finished its work.
struct ExitDevice {
    evt: EventFd,
    left: u32,
}

impl BusDevice for ExitDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            self.evt.write(1).expect("signal the VMM to end the VM");
        }
    }
}

/// A machine with a guest loaded at [`CODE_ADDR`] and the report and exit devices attached.
pub struct TestVm {
    pub machine: Machine,
    pub report: Arc<Mutex<Recorder>>,
    pub name: &'static str,
}

impl TestVm {
    /// `done_writes`: how many writes to the exit port end the VM (one per vCPU).
    pub fn new(name: &'static str, vcpus: u8, done_writes: u32) -> Self {
        let mut machine = Machine::new(vcpus, MEM_SIZE).expect("create the VM");
        let code = assemble(name);
        machine
            .memory
            .write_slice(&code, GuestAddress(CODE_ADDR))
            .expect("load the guest");
        let report = Recorder::new(REPORT_ANSWER);
        machine
            .insert_pio(report.clone(), REPORT_PORT, REPORT_LEN)
            .expect("add report port");
        let exit = ExitDevice {
            evt: machine.reset_evt().expect("reset eventfd"),
            left: done_writes,
        };
        machine
            .insert_pio(Arc::new(Mutex::new(exit)), EXIT_PORT, 1)
            .expect("add exit port");
        Self { machine, report, name }
    }

    /// Starts every vCPU at the guest's entry in 64-bit long mode, runs it to the end (or the
    /// deadline), prints the exit table, and returns the summary and what the report device saw.
    pub fn run(self, aps: ApStart) -> (RunSummary, Vec<Access>) {
        let entry = EntryMode::Long64 {
            entry: CODE_ADDR,
            zero_page: 0,
        };
        let vmm = self.machine.start(entry, aps, None).expect("start the VM");
        let summary = vmm.run(Some(DEADLINE));
        let log = self.report.lock().expect("report device lock").log.clone();
        println!("{}: {:?}\n{}", self.name, summary.exit, render_table(&summary.stats));
        (summary, log)
    }
}

/// Values the guest wrote as report number `k` (port `REPORT_PORT + k`), in order.
pub fn reports(log: &[Access], k: u64) -> Vec<u64> {
    log.iter()
        .filter_map(|a| match *a {
            Access::Write { offset, value, .. } if offset == k => Some(value),
            _ => None,
        })
        .collect()
}

/// The single value reported as number `k`; panics with the whole log otherwise.
pub fn report(log: &[Access], k: u64) -> u64 {
    match reports(log, k).as_slice() {
        [v] => *v,
        other => panic!("expected one report #{k}, got {other:x?}; log: {log:x?}"),
    }
}
