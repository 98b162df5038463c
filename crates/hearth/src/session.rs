//! One VM session of the `hearth` command: start (boot, restore, or Firecracker-style over the
//! API), run with the console on this terminal and the API on its socket, then turn how the VM
//! ended into an exit code and the optional reports (`--stats`, `--profile`).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::models::vm_config::FullVmConfig;
use api::ApiServer;
use vmm::controller::{self, full_config_from, ApiController, InstanceMeta, PreBoot};
use vmm::vstate::exits::render_table;
use vmm::{ConsoleIo, VmExit, Vmm};

use crate::cli::{FirecrackerArgs, RestoreArgs};
use crate::exit_code;
use crate::terminal::RawTerminal;

#[derive(Debug)]
struct SessionError(String);
impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SessionError {}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How to run a started VM and what to print at the end.
pub struct RunOpts {
    pub deadline: Option<Duration>,
    pub stats: bool,
    /// Print the guest profile against this kernel's symbols.
    pub profile_kernel: Option<PathBuf>,
    pub started: Instant,
    /// The console is on this terminal: put it in raw mode while the VM runs.
    pub raw_terminal: bool,
}

/// The guest's serial console on this terminal.
pub fn console_io() -> ConsoleIo {
    ConsoleIo {
        output: Box::new(stdout_unbuffered()),
        input: Some(0),
    }
}

fn stdout_unbuffered() -> File {
    // SAFETY: dup(1) returns a new fd (or -1, checked) that the File then owns.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        // No stdout: write console output nowhere rather than fail.
        return File::options()
            .write(true)
            .open("/dev/null")
            .unwrap_or_else(|_| std::process::abort());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

/// Binds the API socket for a running VM.
pub fn api_controller(path: &Path, id: &str, config: FullVmConfig) -> Result<ApiController> {
    let server = ApiServer::bind(path)?;
    Ok(ApiController {
        server,
        meta: InstanceMeta { id: id.to_string() },
        config,
        metrics: vmm::metrics::Metrics::default(),
    })
}

/// Runs `vmm` to its end and returns hearth's exit code.
pub fn drive(mut vmm: Vmm, opts: &RunOpts, mut api: Option<ApiController>) -> u8 {
    if let Some(a) = &api {
        a.metrics.attach(&mut vmm, &a.config);
    }
    let balloon = vmm.devices().balloon.clone();
    let summary = {
        let _raw = opts.raw_terminal.then(RawTerminal::enter);
        let ctl = api.as_mut().map(|c| c as &mut dyn vmm::vmm::Controller);
        vmm.run_controlled(opts.deadline, ctl)
    };
    if let Some(a) = &api {
        let _ = std::fs::remove_file(a.server.path());
    }
    let (code, msg) = match &summary.exit {
        VmExit::GuestShutdown => (exit_code::GUEST_SHUTDOWN, None),
        VmExit::TripleFault => (
            exit_code::TRIPLE_FAULT,
            Some("guest triple fault (CPU shutdown)".to_string()),
        ),
        VmExit::Failed(m) => (exit_code::VCPU_FAILED, Some(m.clone())),
        VmExit::Timeout => (exit_code::TIMEOUT, Some("--timeout passed; VM stopped".to_string())),
        VmExit::Signal(s) => (
            exit_code::SIGNAL_BASE.saturating_add(u8::try_from(*s).unwrap_or(0)),
            Some(format!("stopped by signal {s}")),
        ),
    };
    if let Some(m) = msg {
        eprintln!("hearth: {m}");
    }
    if opts.stats {
        print_stats(&summary, opts.started);
        if let Some(b) = &balloon {
            print_balloon(b);
        }
    }
    if let Some(kernel) = &opts.profile_kernel {
        let symbols = vmm::profile::SymbolTable::from_elf(kernel);
        if symbols.is_none() {
            eprintln!(
                "hearth: {} has no ELF symbol table; showing raw addresses",
                kernel.display()
            );
        }
        let samples: Vec<_> = summary.stats.iter().map(|s| s.samples.clone()).collect();
        eprint!(
            "{}",
            vmm::profile::render(&vmm::profile::by_function(&samples, symbols.as_ref()), 40)
        );
    }
    code
}

/// One line: the balloon's size and the guest's last statistics (parsed by tests/virtio_balloon.rs).
fn print_balloon(b: &vmm::BalloonHandle) {
    let c = b.counters();
    let stats = b
        .stats()
        .map_or_else(|| "no statistics received".to_string(), |s| s.summary());
    eprintln!(
        "balloon: {stats}; inflated {} pages, deflated {}, reported {:.1} MiB free, {} statistics updates",
        c.inflated_pages,
        c.deflated_pages,
        c.reported_bytes as f64 / 1048576.0,
        c.stats_updates
    );
}

fn print_stats(summary: &vmm::RunSummary, started: Instant) {
    let first = summary.stats.iter().filter_map(|s| s.first_run).min();
    eprintln!(
        "hearth: exit statistics ({} vCPUs, host {}):",
        summary.stats.len(),
        vmm::host::HostProfile::detect().kind
    );
    eprint!("{}", render_table(&summary.stats));
    if let Some(f) = first {
        eprintln!(
            "first KVM_RUN: {:.3} ms after start",
            f.duration_since(started).as_secs_f64() * 1e3
        );
    }
    eprintln!("VM lifetime: {:.3} s", started.elapsed().as_secs_f64());
    let m = summary.memory;
    eprintln!(
        "memory: process RSS {:.1} MiB, guest RAM resident {:.1} MiB, VMM overhead {:.1} MiB",
        m.rss_bytes as f64 / 1048576.0,
        m.guest_resident_bytes as f64 / 1048576.0,
        m.overhead_bytes() as f64 / 1048576.0
    );
}

/// `hearth restore`: a VM from a snapshot, running (or paused) at once.
pub fn restore(args: RestoreArgs, started: Instant) -> Result<u8> {
    let (tap, mac) = (args.tap.clone(), args.mac);
    let track = args.track_dirty_pages;
    let paths = controller::RestorePaths {
        state: &args.snapshot,
        mem: match (&args.mem_uffd, &args.mem) {
            (Some(sock), _) => controller::MemSource::Uffd(sock),
            (None, Some(mem)) => controller::MemSource::File(mem),
            (None, None) => return Err(SessionError("one of --mem and --mem-uffd is required".into()).into()),
        },
        diffs: &args.mem_diff,
    };
    let io = match &args.console_log {
        Some(path) => console_log(path)?,
        None => console_io(),
    };
    let vmm = controller::restore(&paths, io, args.paused, |snap| {
        snap.config.track_dirty_pages |= track;
        if tap.is_none() && mac.is_none() {
            return Ok(());
        }
        let Some(n) = &mut snap.config.net else {
            let opt = if tap.is_some() { "--tap" } else { "--mac" };
            return Err(format!("{opt}: the snapshot has no network interface"));
        };
        if let Some(t) = tap {
            n.backend = vmm::config::NetBackend::Tap(t);
        }
        if let Some(m) = mac {
            n.mac = m;
        }
        Ok(())
    })
    .map_err(SessionError)?;
    eprintln!(
        "hearth: restored {} in {:.1} ms{}",
        args.snapshot.display(),
        started.elapsed().as_secs_f64() * 1e3,
        if args.paused { " (paused)" } else { "" }
    );
    let api = match &args.api_sock {
        Some(p) => {
            let full = vmm.config().map(full_config_from).unwrap_or_default();
            Some(api_controller(p, &args.id, full)?)
        }
        None => None,
    };
    let opts = RunOpts {
        deadline: args.timeout.map(|s| Duration::from_secs_f64(s.max(0.0))),
        stats: args.stats,
        profile_kernel: None,
        started,
        raw_terminal: args.console_log.is_none(),
    };
    Ok(drive(vmm, &opts, api))
}

/// The guest's console appended to `path`, with no console input (`--console-log`).
fn console_log(path: &Path) -> Result<ConsoleIo> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| SessionError(format!("cannot open console log {}: {e}", path.display())))?;
    Ok(ConsoleIo {
        output: Box::new(file),
        input: None,
    })
}

/// `hearth --api-sock PATH [--config-file FILE] [--no-api]`: Firecracker's way of running.
pub fn firecracker(args: FirecrackerArgs, started: Instant) -> Result<u8> {
    if args.api_sock.is_none() && args.config_file.is_none() {
        return Err(Box::new(SessionError(
            "nothing to do: give a subcommand (see --help), or --api-sock PATH and/or --config-file FILE".into(),
        )));
    }
    let full = match &args.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SessionError(format!("cannot read config file {}: {e}", path.display())))?;
            api::parse_config_file(&text)
                .map_err(|f| SessionError(format!("config file {}: {}", path.display(), f.message)))?
        }
        None => FullVmConfig::default(),
    };
    let meta = InstanceMeta { id: args.id.clone() };
    let mut server = match (&args.api_sock, args.no_api) {
        (Some(p), false) => Some(ApiServer::bind(p)?),
        _ => None,
    };
    let mut pre = PreBoot::new(meta.clone(), full, console_io());
    let id = args.id.clone();
    pre.set_logger_hook(Box::new(move |l| crate::logger::configure(&id, l)));
    if args.config_file.is_some() {
        pre.apply_log_and_metrics()
            .and_then(|()| pre.start())
            .map_err(|f| SessionError(format!("config file: {}", f.message)))?;
    } else if let Some(s) = server.as_mut() {
        controller::serve_until_started(s, &mut pre)?;
    }
    let config = pre.config.clone();
    let vmm = pre
        .vmm
        .take()
        .ok_or_else(|| SessionError("the VM was not started".into()))?;
    let config = match vmm.config() {
        // A restored VM: its configuration comes from the snapshot.
        Some(c) if config.boot_source.is_none() => full_config_from(c),
        _ => config,
    };
    let metrics = pre.metrics.clone();
    let api = server.map(|server| ApiController {
        server,
        meta,
        config,
        metrics,
    });
    let opts = RunOpts {
        deadline: None,
        stats: false,
        profile_kernel: None,
        started,
        raw_terminal: true,
    };
    Ok(drive(vmm, &opts, api))
}
