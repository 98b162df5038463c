//! Command-line interface: `hearth run ...`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use vmm::config::{DriveConfig, DEFAULT_CMDLINE};

use crate::device_specs::{mac_arg, parse_balloon, parse_drive, parse_net, parse_vsock};
use vmm::controller::full_config_from;
use vmm::loader::BootProtocol;
use vmm::VmConfig;

const AFTER_HELP: &str = "\
Exit codes: 0 guest shut down (poweroff/reboot), 1 error, 2 usage, 3 guest triple fault,
4 vCPU stopped on an exit hearth cannot complete, 5 --timeout passed, 128+N signal N.
Console: the guest's serial port is on stdin/stdout; type Ctrl-A x to stop the VM.";

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "hearth: a microVM monitor for Linux/KVM",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log level for hearth's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, value_parser = parse_level)]
    pub log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub firecracker: FirecrackerArgs,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level '{s}' (error, warn, info, debug, trace, off)"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a microVM and attach its serial console to this terminal.
    Run(RunArgs),
    /// Talk to a running hearth over its API socket (exit 0 on success, 1 on an API fault).
    Ctl(crate::ctl::CtlArgs),
    /// Snapshot a running hearth (pause, write state + memory with progress, resume).
    Snapshot(crate::snapshot_cmd::SnapshotArgs),
    /// Start a microVM from a snapshot (state file + memory file) taken through the API.
    Restore(RestoreArgs),
    /// Start N microVMs from one snapshot, each a `hearth restore` process with its own API
    /// socket, console log, tap and MAC; exit 0 once all run (they keep running).
    Clone(crate::clone::CloneArgs),
    /// Serve a snapshot's memory file to `hearth restore --mem-uffd SOCK`: listen on SOCK,
    /// fill each missing guest page on first touch; exit (printing the fault counts) when
    /// the VM's hearth goes away.
    UffdHandler(crate::uffd_handler::UffdHandlerArgs),
}

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct RestoreArgs {
    /// The snapshot's state file (PUT /snapshot/create's snapshot_path).
    #[arg(long, value_name = "PATH")]
    pub snapshot: PathBuf,
    /// The snapshot's memory file (mem_file_path); mapped copy-on-write, never written.
    #[arg(long, value_name = "PATH", required_unless_present = "mem_uffd")]
    pub mem: Option<PathBuf>,
    /// A diff snapshot's memory file, laid over --mem (repeatable, oldest first); --snapshot is
    /// then the newest diff snapshot's state file.
    #[arg(long, value_name = "PATH")]
    pub mem_diff: Vec<PathBuf>,
    /// Instead of --mem: guest memory is filled on first touch by the page-fault handler
    /// listening on this Unix socket (Firecracker's Uffd backend; see `hearth uffd-handler`).
    #[arg(long, value_name = "SOCK", conflicts_with_all = ["mem", "mem_diff"])]
    pub mem_uffd: Option<PathBuf>,
    /// Keep logging the guest's writes after the restore, for further diff snapshots.
    #[arg(long)]
    pub track_dirty_pages: bool,
    /// Stay paused after restoring (resume with PATCH /vm {"state": "Resumed"}).
    #[arg(long, requires = "api_sock")]
    pub paused: bool,
    /// Use this host tap device instead of the one in the snapshot.
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// Give the network interface this MAC instead of the snapshot's (the device reports it;
    /// a guest driver that already read its MAC keeps using the old one).
    #[arg(long, value_name = "MAC", value_parser = mac_arg)]
    pub mac: Option<[u8; 6]>,
    /// Append the guest's console to this file instead of this terminal (no console input).
    #[arg(long, value_name = "PATH")]
    pub console_log: Option<PathBuf>,
    /// Serve the HTTP API on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Instance id reported by the API.
    #[arg(long, default_value = "hearth", value_name = "ID")]
    pub id: String,
    /// Print per-vCPU exit statistics when the VM ends.
    #[arg(long)]
    pub stats: bool,
    /// Stop the VM after this many seconds (exit code 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

/// Firecracker's command line, for running hearth in its place: with `--api-sock` the VM is
/// configured and started over the API; with `--config-file` it boots at once.
#[derive(Args, Debug)]
pub struct FirecrackerArgs {
    /// Serve the API on this Unix socket [Firecracker: --api-sock].
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Boot at once from this JSON configuration (Firecracker's format).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Do not serve the API (requires --config-file).
    #[arg(long, requires = "config_file")]
    pub no_api: bool,
    /// Instance id reported by the API.
    #[arg(long, default_value = "hearth", value_name = "ID")]
    pub id: String,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Protocol {
    Auto,
    Pvh,
    Linux64,
}

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct RunArgs {
    /// Guest kernel: ELF vmlinux or bzImage [default: the guest built by guest/build.sh].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk [default with the default kernel: its initramfs].
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=-1 rodata=off"].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub memory: u64,
    /// Boot protocol for ELF kernels.
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub boot_protocol: Protocol,
    /// Print per-vCPU exit statistics when the VM ends.
    #[arg(long)]
    pub stats: bool,
    /// Sample where the guest spends its time and print the top kernel functions at exit
    /// (symbols from the ELF kernel).
    #[arg(long)]
    pub profile: bool,
    /// Guest profiler sampling interval in milliseconds.
    #[arg(long, default_value_t = 2, value_name = "MS", requires = "profile")]
    pub profile_interval_ms: u64,
    /// A virtio-blk drive on a raw image file: path=IMG[,ro][,direct][,id=ID][,bps=N][,iops=N]
    /// (direct: O_DIRECT, no host page cache). Repeatable; the guest sees them in order as
    /// /dev/vda, /dev/vdb, ... (id defaults to drive0, drive1, ...).
    /// bps/iops limit bytes and requests a second (bursts of one second's worth).
    #[arg(long, value_name = "SPEC")]
    pub drive: Vec<String>,
    /// Attach a virtio-rng entropy device (/dev/hwrng in the guest; off by default).
    #[arg(long)]
    pub rng: bool,
    /// A virtio-net interface (eth0 in the guest) on a host tap device: tap=NAME[,mac=MAC]; or
    /// user-mode NAT through passt, no root needed: user[,mac=MAC][,hostfwd=tcp:[ADDR:]HPORT-GPORT]...
    /// (udp: too). The MAC defaults to a locally administered one derived from NAME (or "user").
    #[arg(long, value_name = "SPEC")]
    pub net: Option<String>,
    /// A virtio-vsock device: cid=N,uds=PATH (CID 3 or more). Host programs reach guest port P
    /// by connecting to PATH and sending "CONNECT P\n"; guest connections to CID 2 port P go
    /// to the Unix socket PATH_P.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
    /// A virtio-balloon: target_mib=N[,deflate_on_oom][,stats_interval_s=S][,free_page_reporting].
    /// The guest gives N MiB back to the host; S > 0 polls its memory statistics every S seconds
    /// (printed with --stats); free_page_reporting releases memory the guest frees.
    #[arg(long, value_name = "SPEC")]
    pub balloon: Option<String>,
    /// Stop the VM after this many seconds (exit code 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Have KVM log the pages the guest writes, so that diff snapshots (only the pages written
    /// since the previous snapshot) can be taken through the API.
    #[arg(long)]
    pub track_dirty_pages: bool,
    /// Serve the Firecracker-compatible HTTP API on this Unix socket while the VM runs
    /// (pause/resume, snapshots, configuration; see crates/api/hearth-api.yaml).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Instance id reported by the API.
    #[arg(long, default_value = "hearth", value_name = "ID")]
    pub id: String,
    /// Command for the guest's init to run instead of a shell (passed after " -- ").
    #[arg(last = true, value_name = "GUEST_CMD")]
    pub guest_cmd: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct CliError(pub(crate) String);
impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CliError {}

/// Where guest/build.sh leaves the default guest.
pub fn default_guest_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("HEARTH_CACHE") {
        return PathBuf::from(c).join("guest/default");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/hearth/guest/default")
}

fn quote_for_init(arg: &str) -> String {
    // The kernel splits init's argv on spaces and honours double quotes only.
    if arg.is_empty() || arg.contains(char::is_whitespace) {
        format!("\"{arg}\"")
    } else {
        arg.to_string()
    }
}

fn resolve(args: &RunArgs) -> Result<VmConfig, CliError> {
    let (kernel, initrd) = match &args.kernel {
        Some(k) => (k.clone(), args.initrd.clone()),
        None => {
            let dir = default_guest_dir();
            let k = dir.join("vmlinux");
            if !k.exists() {
                return Err(CliError(format!(
                    "no --kernel given and the default guest is not built ({} missing): run guest/build.sh",
                    k.display()
                )));
            }
            (k, args.initrd.clone().or_else(|| Some(dir.join("initramfs.cpio"))))
        }
    };
    if args.guest_cmd.iter().any(|a| a.contains('"')) {
        return Err(CliError(
            "guest command arguments cannot contain '\"' (the kernel command line has no escape for it)".into(),
        ));
    }
    let mut cmdline = args.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    if !args.guest_cmd.is_empty() {
        let cmd: Vec<String> = args.guest_cmd.iter().map(|a| quote_for_init(a)).collect();
        cmdline = format!("{cmdline} -- {}", cmd.join(" "));
    }
    let vcpus = u8::try_from(args.vcpus.min(255)).unwrap_or(u8::MAX);
    if args.vcpus > 255 {
        return Err(CliError(format!(
            "--vcpus {} is more than hearth supports (254)",
            args.vcpus
        )));
    }
    let mut drives: Vec<DriveConfig> = Vec::new();
    for (i, spec) in args.drive.iter().enumerate() {
        let d = parse_drive(spec, i)?;
        if drives.iter().any(|o| o.id == d.id) {
            return Err(CliError(format!("--drive '{spec}': id '{}' is used twice", d.id)));
        }
        check_drive(&d)?;
        drives.push(d);
    }
    Ok(VmConfig {
        kernel,
        initrd,
        cmdline,
        vcpus,
        mem_mib: args.memory,
        boot_protocol: match args.boot_protocol {
            Protocol::Auto => BootProtocol::Auto,
            Protocol::Pvh => BootProtocol::Pvh,
            Protocol::Linux64 => BootProtocol::Linux64,
        },
        profile_interval: args
            .profile
            .then(|| Duration::from_millis(args.profile_interval_ms.max(1))),
        drives,
        rng: args.rng,
        net: args.net.as_deref().map(parse_net).transpose()?,
        track_dirty_pages: args.track_dirty_pages,
        vsock: args.vsock.as_deref().map(parse_vsock).transpose()?,
        balloon: args.balloon.as_deref().map(parse_balloon).transpose()?,
        serial_limit: None,
    })
}

fn check_drive(d: &DriveConfig) -> Result<(), CliError> {
    let what = format!("drive '{}'", d.id);
    check_readable(&d.path, &what)?;
    match std::fs::metadata(&d.path) {
        Ok(m) if m.len() < 512 => Err(CliError(format!(
            "{what}: {} is smaller than one 512-byte sector",
            d.path.display()
        ))),
        _ => Ok(()),
    }
}

pub fn run(args: RunArgs, started: Instant) -> Result<u8, Box<dyn std::error::Error>> {
    let config = resolve(&args)?;
    check_readable(&config.kernel, "kernel")?;
    let api = match &args.api_sock {
        Some(p) => Some(crate::session::api_controller(p, &args.id, full_config_from(&config))?),
        None => None,
    };
    let vmm = vmm::build_linux(&config, crate::session::console_io())?;
    let opts = crate::session::RunOpts {
        deadline: args.timeout.map(|s| Duration::from_secs_f64(s.max(0.0))),
        stats: args.stats,
        profile_kernel: args.profile.then(|| config.kernel.clone()),
        started,
        raw_terminal: true,
    };
    Ok(crate::session::drive(vmm, &opts, api))
}

fn check_readable(path: &Path, what: &str) -> Result<(), CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(CliError(format!("{what} {} is a directory", path.display()))),
        Ok(_) => Ok(()),
        Err(e) => Err(CliError(format!("cannot open {what} {}: {e}", path.display()))),
    }
}
