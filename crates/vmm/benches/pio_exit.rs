//! Exit round-trip benchmark: what one guest port I/O (and MMIO) write costs through hearth's
//! stack, compared with a bare `KVM_RUN` loop in this file that does nothing but re-enter the
//! guest (the physical limit of this host's KVM).
//!
//! Both sides run the same guest code, hand-encoded below: a ring-0, 64-bit loop doing `N`
//! writes to one port (or one MMIO address), with interrupts off. The clock is the host's: the
//! time between the first and the last exit the host sees, divided by `N - 1`, so VM creation,
//! vCPU start and teardown are not counted. hearth's side is the real path: `vmm::Machine`, its
//! vCPU thread and `KVM_RUN` loop, exit statistics, the port (or MMIO) bus and a device behind a
//! mutex. The bare side handles the exit inline and calls `KVM_RUN` again.
//!
//! `cargo bench -p vmm --bench pio_exit [-- --exits N --reps R]`. Not a test: it asserts nothing
//! about time, it prints a markdown table (median over R interleaved repetitions) and the ratio.
//! See docs/benchmarks.md for what the numbers mean on a PVM host.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::BusDevice;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::arch::regs::EntryMode;
use vmm::vstate::memory::GuestMemory;
use vmm::{ApStart, Machine, VmExit};
use vmm_sys_util::eventfd::EventFd;

const MEM_SIZE: u64 = 16 << 20;
const CODE_ADDR: u64 = 0x10_0000;
const PORT: u16 = 0xe0;
/// Below 1 GiB (covered by the boot identity map), above RAM, outside every memslot.
const MMIO_ADDR: u32 = 0x1000_0000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pio,
    Mmio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pio => "port I/O write (`out %al,%dx`)",
            Kind::Mmio => "MMIO write (`mov %eax,(%rbx)`)",
        }
    }
}

/// The guest: `n` exits in a tight loop, then `cli; hlt` forever. 64-bit code, hand-encoded
/// (checked with `objdump -D -b binary -m i386:x86-64`).
fn guest_code(kind: Kind, n: u32) -> Vec<u8> {
    let mut c = Vec::new();
    c.push(0xb9); // mov $n, %ecx
    c.extend_from_slice(&n.to_le_bytes());
    match kind {
        Kind::Pio => {
            c.push(0xba); // mov $PORT, %edx
            c.extend_from_slice(&u32::from(PORT).to_le_bytes());
            c.push(0xee); // 1: out %al, %dx
            c.extend_from_slice(&[0xff, 0xc9]); // dec %ecx
            c.extend_from_slice(&[0x75, 0xfb]); // jnz 1b
        }
        Kind::Mmio => {
            c.push(0xbb); // mov $MMIO_ADDR, %ebx
            c.extend_from_slice(&MMIO_ADDR.to_le_bytes());
            c.extend_from_slice(&[0x89, 0x03]); // 1: mov %eax, (%rbx)
            c.extend_from_slice(&[0xff, 0xc9]); // dec %ecx
            c.extend_from_slice(&[0x75, 0xfa]); // jnz 1b
        }
    }
    c.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // cli; 2: hlt; jmp 2b
    c
}

/// First and last exit times the host saw, and how many exits.
#[derive(Default)]
struct Clock {
    first: Option<Instant>,
    last: Option<Instant>,
    count: u32,
}

impl Clock {
    /// Records one exit; true once `n` have arrived.
    fn tick(&mut self, n: u32) -> bool {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.count += 1;
        self.count >= n
    }

    fn ns_per_exit(&self) -> Option<f64> {
        let span = self.last?.duration_since(self.first?);
        (self.count > 1).then(|| span.as_nanos() as f64 / f64::from(self.count - 1))
    }
}

/// The device on hearth's bus: counts writes and ends the VM after the `n`th.
struct Counter {
    clock: Clock,
    n: u32,
    done: EventFd,
}

impl BusDevice for Counter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        if self.clock.tick(self.n) && self.clock.count == self.n {
            let _ = self.done.write(1);
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn hearth_run(kind: Kind, n: u32) -> Result<f64> {
    let mut m = Machine::new(1, MEM_SIZE)?;
    m.memory.write_slice(&guest_code(kind, n), GuestAddress(CODE_ADDR))?;
    let counter = Arc::new(Mutex::new(Counter {
        clock: Clock::default(),
        n,
        done: m.reset_evt()?,
    }));
    match kind {
        Kind::Pio => m.insert_pio(counter.clone(), u64::from(PORT), 1)?,
        Kind::Mmio => m.insert_mmio(counter.clone(), u64::from(MMIO_ADDR), 0x1000)?,
    }
    let entry = EntryMode::Long64 {
        entry: CODE_ADDR,
        zero_page: 0,
    };
    let vmm = m.start(entry, ApStart::SameEntry, None)?;
    let summary = vmm.run(Some(Duration::from_secs(120)));
    if summary.exit != VmExit::GuestShutdown {
        return Err(format!("hearth run ended with {:?}", summary.exit).into());
    }
    let c = counter.lock().map_err(|_| "counter lock poisoned")?;
    c.clock.ns_per_exit().ok_or_else(|| "no exits seen".into())
}

/// The same guest on a VM built here with kvm-ioctls only: one memslot, an in-kernel irqchip
/// (as hearth has), identity-mapped first GiB, 64-bit code segment; no CPUID/MSR setup, no bus,
/// no threads — each exit is answered inline.
fn bare_run(kind: Kind, n: u32) -> Result<f64> {
    let kvm = Kvm::new()?;
    let vm = kvm.create_vm()?;
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), usize::try_from(MEM_SIZE)?)])?;
    let host_addr = mem.get_host_address(GuestAddress(0))? as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE,
        userspace_addr: host_addr,
    };
    // SAFETY: `mem` is a live mapping of MEM_SIZE bytes; it outlives the VM (both are dropped
    // explicitly at the end of this function, the VM first).
    unsafe { vm.set_user_memory_region(region)? };
    vm.set_tss_address(0xfffb_d000)?;
    vm.create_irq_chip()?;
    mem.write_slice(&guest_code(kind, n), GuestAddress(CODE_ADDR))?;
    // The same entry state hearth gives its guests (GDT, identity-mapped page tables, long
    // mode): only the run loop below differs from hearth's.
    let mut vcpu = vm.create_vcpu(0)?;
    let entry = EntryMode::Long64 {
        entry: CODE_ADDR,
        zero_page: 0,
    };
    let sregs = vmm::arch::regs::setup_sregs(&mem, entry, vcpu.get_sregs()?)?;
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&vmm::arch::regs::boot_regs(entry))?;

    let mut clock = Clock::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let exit = vcpu.run()?;
        let ours = match (kind, exit) {
            (Kind::Pio, VcpuExit::IoOut(port, _)) => port == PORT,
            (Kind::Mmio, VcpuExit::MmioWrite(addr, _)) => addr == u64::from(MMIO_ADDR),
            (_, VcpuExit::Intr) => false,
            (_, other) => return Err(format!("bare VM: unexpected exit {other:?}").into()),
        };
        if ours && clock.tick(n) {
            break;
        }
        if Instant::now() > deadline {
            return Err("bare VM: deadline passed".into());
        }
    }
    drop(vcpu);
    drop(vm);
    drop(mem);
    clock.ns_per_exit().ok_or_else(|| "no exits seen".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    // Odd length: both indices are the middle one.
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--exits", 20_000).max(2);
    let reps = arg(&args, "--reps", 5).max(1);
    if let Err(e) = std::fs::File::options().read(true).write(true).open("/dev/kvm") {
        eprintln!("pio_exit: skipped, /dev/kvm is not usable: {e}");
        return;
    }
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    println!(
        "exit round trip, {n} exits per run, median of {reps} interleaved runs, host KVM: {}",
        if pvm { "PVM (kvm_pvm)" } else { "kvm" }
    );
    println!();
    println!("| exit | hearth ns/exit | bare KVM_RUN ns/exit | hearth / bare | hearth overhead ns/exit |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for kind in [Kind::Pio, Kind::Mmio] {
        let (mut h, mut b) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            match (bare_run(kind, n), hearth_run(kind, n)) {
                (Ok(x), Ok(y)) => {
                    b.push(x);
                    h.push(y);
                }
                (x, y) => {
                    eprintln!("pio_exit: {}: bare {:?}, hearth {:?}", kind.name(), x.err(), y.err());
                }
            }
        }
        if h.is_empty() {
            println!("| {} | failed | failed | | |", kind.name());
            continue;
        }
        let (hm, bm) = (median(&mut h), median(&mut b));
        println!(
            "| {} | {hm:.0} | {bm:.0} | {:.2}x | {:.0} |",
            kind.name(),
            hm / bm,
            hm - bm
        );
    }
}
