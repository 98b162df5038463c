//! Command-line interface: `hearth run ...`.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use vmm::config::{DriveConfig, NetConfig, VsockConfig, DEFAULT_CMDLINE};
use vmm::loader::BootProtocol;
use vmm::vstate::exits::render_table;
use vmm::{ConsoleIo, VmConfig, VmExit};

use crate::exit_code;
use crate::terminal::RawTerminal;

const AFTER_HELP: &str = "\
Exit codes: 0 guest shut down (poweroff/reboot), 1 error, 2 usage, 3 guest triple fault,
4 vCPU stopped on an exit hearth cannot complete, 5 --timeout passed, 128+N signal N.
Console: the guest's serial port is on stdin/stdout; type Ctrl-A x to stop the VM.";

#[derive(Parser, Debug)]
#[command(name = "hearth", version, about = "hearth: a microVM monitor for Linux/KVM", after_help = AFTER_HELP)]
pub struct Cli {
    /// Log level for hearth's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, value_parser = parse_level)]
    pub log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level '{s}' (error, warn, info, debug, trace, off)"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a microVM and attach its serial console to this terminal.
    Run(RunArgs),
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
    /// A virtio-blk drive on a raw image file: path=IMG[,ro][,id=ID]. Repeatable; the guest sees
    /// them in order as /dev/vda, /dev/vdb, ... (id defaults to drive0, drive1, ...).
    #[arg(long, value_name = "SPEC")]
    pub drive: Vec<String>,
    /// Attach a virtio-rng entropy device (/dev/hwrng in the guest; off by default).
    #[arg(long)]
    pub rng: bool,
    /// A virtio-net interface (eth0 in the guest) on a host tap device: tap=NAME[,mac=MAC].
    /// The MAC defaults to a locally administered one derived from NAME.
    #[arg(long, value_name = "SPEC")]
    pub net: Option<String>,
    /// A virtio-vsock device: cid=N,uds=PATH (CID 3 or more). Host programs reach guest port P
    /// by connecting to PATH and sending "CONNECT P\n"; guest connections to CID 2 port P go
    /// to the Unix socket PATH_P.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
    /// Stop the VM after this many seconds (exit code 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
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
        vsock: args.vsock.as_deref().map(parse_vsock).transpose()?,
    })
}

/// Parses `path=IMG[,ro][,id=ID]` (the `index`-th --drive).
fn parse_drive(spec: &str, index: usize) -> Result<DriveConfig, CliError> {
    let bad = |why: String| CliError(format!("--drive '{spec}': {why} (expected path=IMG[,ro][,id=ID])"));
    let (mut path, mut id, mut read_only) = (None, None, false);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("id", i)) if !i.is_empty() && !i.contains(char::is_whitespace) => id = Some(i.to_string()),
            None if part == "ro" => read_only = true,
            _ => return Err(bad(format!("unknown or empty option '{part}'"))),
        }
    }
    let path = path.ok_or_else(|| bad("no path".into()))?;
    Ok(DriveConfig {
        id: id.unwrap_or_else(|| format!("drive{index}")),
        path,
        read_only,
    })
}

/// Parses `tap=NAME[,mac=MAC]` (--net).
fn parse_net(spec: &str) -> Result<NetConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--net '{spec}': {why} (expected tap=NAME[,mac=02:xx:xx:xx:xx:xx])"
        ))
    };
    let (mut tap, mut mac) = (None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("tap", t)) if !t.is_empty() && t.len() < 16 && !t.contains(['/', ' ']) => {
                tap = Some(t.to_string());
            }
            Some(("mac", m)) => mac = Some(parse_mac(m).ok_or_else(|| bad(format!("bad MAC '{m}'")))?),
            _ => return Err(bad(format!("unknown or invalid option '{part}'"))),
        }
    }
    let tap = tap.ok_or_else(|| bad("no tap".into()))?;
    let mac = mac.unwrap_or_else(|| vmm::config::default_mac(&tap));
    Ok(NetConfig { tap, mac })
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

/// `aa:bb:cc:dd:ee:ff`, unicast (the low bit of the first byte clear).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
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

pub fn run(args: RunArgs, started: Instant) -> Result<u8, Box<dyn std::error::Error>> {
    let config = resolve(&args)?;
    let deadline = args.timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
    check_readable(&config.kernel, "kernel")?;
    let vmm = vmm::build_linux(
        &config,
        ConsoleIo {
            output: Box::new(stdout_unbuffered()),
            input: Some(0),
        },
    )?;
    let summary = {
        let _raw = RawTerminal::enter();
        vmm.run(deadline)
    };
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
    if args.stats {
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
    if args.profile {
        let symbols = vmm::profile::SymbolTable::from_elf(&config.kernel);
        if symbols.is_none() {
            eprintln!(
                "hearth: {} has no ELF symbol table; showing raw addresses",
                config.kernel.display()
            );
        }
        let samples: Vec<_> = summary.stats.iter().map(|s| s.samples.clone()).collect();
        eprint!(
            "{}",
            vmm::profile::render(&vmm::profile::by_function(&samples, symbols.as_ref()), 40)
        );
    }
    Ok(code)
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
        for bad in ["", "ro", "path=", "path=/x,rw", "path=/x,id=", "/x.img"] {
            let e = parse_drive(bad, 0).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--drive '{bad}'")), "{e}");
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
        assert_eq!(n.tap, "hnet0");
        assert_eq!(n.mac, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e]);
        assert_eq!(parse_net("tap=t1").unwrap().mac, parse_net("tap=t1").unwrap().mac);
        for bad in [
            "",
            "tap=",
            "mac=02:00:00:00:00:01",
            "tap=x,mac=01:00:00:00:00:00",
            "tap=x,mac=02:00",
            "tap=x,y",
        ] {
            let e = parse_net(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--net '{bad}'")), "{e}");
        }
    }
}
