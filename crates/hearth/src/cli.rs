//! Command-line interface: `hearth run ...`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::models::net::parse_mac;
use clap::{Args, Parser, Subcommand, ValueEnum};
use vmm::config::{
    BalloonConfig, DriveConfig, ForwardProtocol, NetBackend, NetConfig, NetLimit, PortForward, VsockConfig,
    DEFAULT_CMDLINE,
};
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
}

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct RestoreArgs {
    /// The snapshot's state file (PUT /snapshot/create's snapshot_path).
    #[arg(long, value_name = "PATH")]
    pub snapshot: PathBuf,
    /// The snapshot's memory file (mem_file_path); mapped copy-on-write, never written.
    #[arg(long, value_name = "PATH")]
    pub mem: PathBuf,
    /// A diff snapshot's memory file, laid over --mem (repeatable, oldest first); --snapshot is
    /// then the newest diff snapshot's state file.
    #[arg(long, value_name = "PATH")]
    pub mem_diff: Vec<PathBuf>,
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
struct CliError(String);
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

/// Parses `path=IMG[,ro][,direct][,id=ID][,bps=N][,iops=N]` (the `index`-th --drive).
fn parse_drive(spec: &str, index: usize) -> Result<DriveConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--drive '{spec}': {why} (expected path=IMG[,ro][,direct][,id=ID][,bps=N][,iops=N])"
        ))
    };
    let (mut path, mut id, mut read_only, mut bps, mut iops) = (None, None, false, 0, 0);
    let mut direct = false;
    let rate = |v: &str| v.parse::<u64>().ok().filter(|&n| n > 0);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("id", i)) if !i.is_empty() && !i.contains(char::is_whitespace) => id = Some(i.to_string()),
            Some(("bps", v)) => bps = rate(v).ok_or_else(|| bad(format!("bps '{v}' is not a positive integer")))?,
            Some(("iops", v)) => iops = rate(v).ok_or_else(|| bad(format!("iops '{v}' is not a positive integer")))?,
            None if part == "ro" => read_only = true,
            None if part == "direct" => direct = true,
            _ => return Err(bad(format!("unknown or empty option '{part}'"))),
        }
    }
    let path = path.ok_or_else(|| bad("no path".into()))?;
    Ok(DriveConfig {
        id: id.unwrap_or_else(|| format!("drive{index}")),
        path,
        read_only,
        bps,
        iops,
        direct,
    })
}

/// Parses `tap=NAME[,mac=MAC]` or `user[,mac=MAC][,hostfwd=..]...` (--net).
fn parse_net(spec: &str) -> Result<NetConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--net '{spec}': {why} (expected tap=NAME[,mac=02:xx:xx:xx:xx:xx] or \
             user[,mac=..][,hostfwd=tcp:[ADDR:]HOSTPORT-GUESTPORT]..., \
             and [,rx_bps=N][,rx_pps=N][,tx_bps=N][,tx_pps=N])"
        ))
    };
    let (mut tap, mut user, mut mac, mut forwards) = (None, false, None, Vec::new());
    let (mut rx_limit, mut tx_limit) = (NetLimit::default(), NetLimit::default());
    let rate = |k: &str, v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("{k} '{v}' is not a positive integer")))
    };
    for part in spec.split(',') {
        match part.split_once('=') {
            Some((k @ "rx_bps", v)) => rx_limit.bps = rate(k, v)?,
            Some((k @ "rx_pps", v)) => rx_limit.pps = rate(k, v)?,
            Some((k @ "tx_bps", v)) => tx_limit.bps = rate(k, v)?,
            Some((k @ "tx_pps", v)) => tx_limit.pps = rate(k, v)?,
            Some(("tap", t)) if !t.is_empty() && t.len() < 16 && !t.contains(['/', ' ']) => {
                tap = Some(t.to_string());
            }
            None if part == "user" => user = true,
            Some(("mac", m)) => {
                // The guest's own address must be unicast (low bit of the first byte clear).
                let parsed = parse_mac(m).filter(|b| b[0] & 1 == 0);
                mac = Some(parsed.ok_or_else(|| bad(format!("bad MAC '{m}' (want unicast aa:bb:cc:dd:ee:ff)")))?);
            }
            Some(("hostfwd", f)) => forwards.push(parse_hostfwd(f).ok_or_else(|| bad(format!("bad hostfwd '{f}'")))?),
            _ => return Err(bad(format!("unknown or invalid option '{part}'"))),
        }
    }
    let backend = match (tap, user) {
        (Some(t), false) if forwards.is_empty() => NetBackend::Tap(t),
        (Some(_), false) => return Err(bad("hostfwd needs user".into())),
        (None, true) => NetBackend::User { forwards },
        (Some(_), true) => return Err(bad("tap and user exclude each other".into())),
        (None, false) => return Err(bad("no tap=NAME or user".into())),
    };
    let name = match &backend {
        NetBackend::Tap(t) => t.as_str(),
        NetBackend::User { .. } => "user",
    };
    let mac = mac.unwrap_or_else(|| vmm::config::default_mac(name));
    Ok(NetConfig {
        backend,
        mac,
        rx_limit,
        tx_limit,
    })
}

/// `tcp:[ADDR:]HOSTPORT-GUESTPORT` or `udp:..` (ports 1..=65535, ADDR an IPv4 address).
fn parse_hostfwd(s: &str) -> Option<PortForward> {
    let (proto, rest) = s.split_once(':')?;
    let protocol = match proto {
        "tcp" => ForwardProtocol::Tcp,
        "udp" => ForwardProtocol::Udp,
        _ => return None,
    };
    let (host, guest) = rest.split_once('-')?;
    let (host_addr, host_port) = match host.rsplit_once(':') {
        Some((a, p)) => (Some(a.parse().ok()?), p),
        None => (None, host),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    Some(PortForward {
        protocol,
        host_addr,
        host_port: port(host_port)?,
        guest_port: port(guest)?,
    })
}

/// `--mac` of `hearth restore`: a unicast MAC.
fn mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s)
        .filter(|b| b[0] & 1 == 0)
        .ok_or_else(|| format!("bad MAC '{s}' (expected unicast aa:bb:cc:dd:ee:ff)"))
}

/// Parses `cid=N,uds=PATH` (--vsock).
fn parse_vsock(spec: &str) -> Result<VsockConfig, CliError> {
    let bad = |why: String| CliError(format!("--vsock '{spec}': {why} (expected cid=N,uds=PATH)"));
    let (mut cid, mut uds) = (None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("cid", c)) => match c.parse::<u64>() {
                Ok(n) if (3..u64::from(u32::MAX)).contains(&n) => cid = Some(n),
                _ => return Err(bad(format!("CID '{c}' must be a number from 3 to 4294967294"))),
            },
            Some(("uds", p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
            _ => return Err(bad(format!("unknown or empty option '{part}'"))),
        }
    }
    let cid = cid.ok_or_else(|| bad("no cid".into()))?;
    let uds = uds.ok_or_else(|| bad("no uds".into()))?;
    Ok(VsockConfig { cid, uds })
}

/// Parses `target_mib=N[,deflate_on_oom][,stats_interval_s=S][,free_page_reporting]` (--balloon).
fn parse_balloon(spec: &str) -> Result<BalloonConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--balloon '{spec}': {why} (expected target_mib=N[,deflate_on_oom][,stats_interval_s=S][,free_page_reporting])"
        ))
    };
    let mut cfg = BalloonConfig::default();
    let mut target = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("target_mib", n)) => target = Some(n.parse().map_err(|_| bad(format!("bad target_mib '{n}'")))?),
            Some(("stats_interval_s", s)) => {
                cfg.stats_polling_interval_s = s.parse().map_err(|_| bad(format!("bad stats_interval_s '{s}'")))?;
            }
            None if part == "deflate_on_oom" => cfg.deflate_on_oom = true,
            None if part == "free_page_reporting" => cfg.free_page_reporting = true,
            _ => return Err(bad(format!("unknown option '{part}'"))),
        }
    }
    cfg.amount_mib = target.ok_or_else(|| bad("no target_mib".into()))?;
    Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_specs() {
        let d = parse_drive("path=/x.img,ro,id=root", 0).unwrap();
        assert_eq!((d.id.as_str(), d.read_only), ("root", true));
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert_eq!(parse_drive("path=/y", 3).unwrap().id, "drive3");
        let d = parse_drive("path=/z,bps=1048576,iops=100", 0).unwrap();
        assert_eq!((d.bps, d.iops), (1 << 20, 100));
        let d = parse_drive("path=/z", 0).unwrap();
        assert_eq!(
            (d.bps, d.iops, d.direct),
            (0, 0, false),
            "no limits, page cache by default"
        );
        assert!(parse_drive("path=/z,direct", 0).unwrap().direct);
        for bad in [
            "path=/x,direct=1",
            "",
            "ro",
            "path=",
            "path=/x,rw",
            "path=/x,id=",
            "/x.img",
            "path=/x,bps=0",
            "path=/x,iops=-1",
            "path=/x,bps=1M",
        ] {
            let e = parse_drive(bad, 0).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--drive '{bad}'")), "{e}");
        }
    }

    #[test]
    fn balloon_specs() {
        let b = parse_balloon("target_mib=64,deflate_on_oom,stats_interval_s=2,free_page_reporting").unwrap();
        assert_eq!(
            b,
            BalloonConfig {
                amount_mib: 64,
                deflate_on_oom: true,
                stats_polling_interval_s: 2,
                free_page_reporting: true
            }
        );
        assert_eq!(parse_balloon("target_mib=0").unwrap(), BalloonConfig::default());
        for bad in [
            "",
            "deflate_on_oom",
            "target_mib=-1",
            "target_mib=x",
            "target_mib=1,stats_interval_s=70000",
            "target_mib=1,oom",
        ] {
            let e = parse_balloon(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--balloon '{bad}'")), "{e}");
        }
    }

    #[test]
    fn vsock_specs() {
        let v = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((v.cid, v.uds), (3, PathBuf::from("/tmp/v.sock")));
        assert_eq!(parse_vsock("uds=/x,cid=4294967294").unwrap().cid, 4_294_967_294);
        for bad in [
            "",
            "cid=3",
            "uds=/x",
            "cid=2,uds=/x",
            "cid=x,uds=/x",
            "cid=4294967295,uds=/x",
            "cid=3,uds=",
            "cid=3,uds=/x,y",
        ] {
            let e = parse_vsock(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--vsock '{bad}'")), "{e}");
        }
    }

    #[test]
    fn net_specs() {
        let n = parse_net("tap=hnet0,mac=02:aa:bb:cc:dd:0e").unwrap();
        assert_eq!(n.backend, NetBackend::Tap("hnet0".into()));
        assert_eq!(n.mac, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e]);
        assert_eq!(parse_net("tap=t1").unwrap().mac, parse_net("tap=t1").unwrap().mac);
        assert_eq!((n.rx_limit, n.tx_limit), (NetLimit::default(), NetLimit::default()));
        let l = parse_net("tap=t1,rx_bps=1000,tx_pps=50,tx_bps=7").unwrap();
        assert_eq!(l.rx_limit, NetLimit { bps: 1000, pps: 0 });
        assert_eq!(l.tx_limit, NetLimit { bps: 7, pps: 50 });
        for bad in [
            "",
            "tap=",
            "tap=x,rx_bps=0",
            "tap=x,tx_pps=fast",
            "mac=02:00:00:00:00:01",
            "tap=x,mac=01:00:00:00:00:00",
            "tap=x,mac=02:00",
            "tap=x,y",
            "tap=x,hostfwd=tcp:1-2",
            "tap=x,user",
            "user,hostfwd=tcp:80",
            "user,hostfwd=tcp:0-80",
            "user,hostfwd=tcp:8080-65536",
            "user,hostfwd=sctp:1-2",
            "user,hostfwd=tcp:localhost:1-2",
            "user,hostfwd=tcp:::1:1-2",
        ] {
            let e = parse_net(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--net '{bad}'")), "{e}");
        }
    }

    #[test]
    fn user_net_specs() {
        let n = parse_net("user").unwrap();
        assert_eq!(n.backend, NetBackend::User { forwards: vec![] });
        assert_eq!(n.mac, vmm::config::default_mac("user"));
        let n = parse_net("user,mac=02:00:00:00:00:07,hostfwd=tcp:2222-22,hostfwd=udp:127.0.0.1:5353-53").unwrap();
        assert_eq!(n.mac, [2, 0, 0, 0, 0, 7]);
        let NetBackend::User { forwards } = n.backend else {
            panic!("not user")
        };
        assert_eq!(
            forwards,
            vec![
                PortForward {
                    protocol: ForwardProtocol::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22
                },
                PortForward {
                    protocol: ForwardProtocol::Udp,
                    host_addr: Some(std::net::Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    guest_port: 53
                },
            ]
        );
        assert_eq!(forwards[1].to_string(), "udp:127.0.0.1:5353-53");
    }
}
