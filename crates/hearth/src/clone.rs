//! `hearth clone`: N microVMs from one snapshot, each its own `hearth restore` process (this
//! binary re-executed through /proc/self/exe), each with its own identity:
//! - API socket `DIR/clone-K.sock` and instance id `clone-K`;
//! - console (and the clone's own hearth messages) appended to `DIR/clone-K.log`;
//! - when the snapshot's network is on a tap: tap `PREFIX` + K, which the user creates
//!   beforehand (`ip tuntap add PREFIX0 mode tap`; hearth never creates host interfaces), and
//!   the MAC `hearth run --net tap=PREFIXK` would pick (`vmm::config::default_mac`). A snapshot
//!   on passt (user-mode networking) needs no taps: each clone starts its own passt, keeping the
//!   snapshot's MAC (each passt is its own network) — but host port forwards cannot be shared,
//!   so with forwards the second clone fails to start and so does the command (give
//!   --tap-prefix to use taps instead).
//!
//! All clones map the same memory file `MAP_PRIVATE`, so the pages they only read stay shared in
//! the page cache. A clone counts as started once its API answers `GET /` with the VM running;
//! the command then prints one line per clone (or JSON with `--json`) and exits 0, leaving them
//! running. If one fails to start, the ones already started are stopped and it exits 1.
//!
//! What a clone's guest does NOT learn: it keeps the MAC its driver read at boot (the device
//! reports the new one in its config space, but Linux reads it only at probe: a guest agent can
//! re-probe by unbinding and binding the device in /sys/bus/virtio/drivers/virtio_net, or set
//! it with `ip link set eth0 address`). It does learn that it was cloned: every `hearth restore`
//! writes a new VM generation ID and raises the ACPI GED interrupt (`builder::restore_linux`),
//! so Linux's vmgenid driver reseeds the clone's RNG; its boot ID and other identifiers stay
//! the snapshot's until something in the guest renews them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use vmm::config::default_mac;

#[derive(Args, Debug)]
pub struct CloneArgs {
    /// The snapshot's state file (PUT /snapshot/create's snapshot_path).
    #[arg(long, value_name = "PATH")]
    pub snapshot: PathBuf,
    /// The snapshot's memory file (mem_file_path), shared copy-on-write by all clones.
    #[arg(long, value_name = "PATH")]
    pub mem: PathBuf,
    /// A diff snapshot's memory file laid over --mem (repeatable, oldest first; as `hearth restore`).
    #[arg(long, value_name = "PATH")]
    pub mem_diff: Vec<PathBuf>,
    /// How many clones to start.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Where the clones' API sockets and console logs go [default: a new directory
    /// hearth-clones-PID in the temporary directory].
    #[arg(long, value_name = "DIR")]
    pub api_sock_dir: Option<PathBuf>,
    /// Clone K uses the host tap PREFIX<K> (required when the snapshot has a network
    /// interface; create the taps first, e.g. `ip tuntap add PREFIX0 mode tap`).
    #[arg(long, value_name = "PREFIX")]
    pub tap_prefix: Option<String>,
    /// Print the clones as one JSON object on stdout instead of one line each.
    #[arg(long)]
    pub json: bool,
    /// Each clone stops after this many seconds (its `--timeout`).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Give up (and stop all clones) when one has not started within this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub start_timeout: f64,
}

#[derive(Debug)]
struct CloneError(String);
impl std::fmt::Display for CloneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CloneError {}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn fail<T>(msg: String) -> Result<T> {
    Err(Box::new(CloneError(msg)))
}

/// One clone's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    index: u32,
    sock: PathBuf,
    log: PathBuf,
    /// (tap, MAC) when the snapshot has a network interface.
    net: Option<(String, [u8; 6])>,
}

fn identities(dir: &Path, count: u32, tap_prefix: Option<&str>) -> Vec<Identity> {
    (0..count)
        .map(|k| Identity {
            index: k,
            sock: dir.join(format!("clone-{k}.sock")),
            log: dir.join(format!("clone-{k}.log")),
            net: tap_prefix.map(|p| {
                let tap = format!("{p}{k}");
                let mac = default_mac(&tap);
                (tap, mac)
            }),
        })
        .collect()
}

fn mac_string(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The snapshot's network interface, as far as cloning cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapNet {
    None,
    /// On a host tap: each clone needs its own.
    Tap,
    /// On a passt child (user-mode networking): each clone starts its own passt; taps optional.
    User,
}

/// Checks the tap options against the snapshot: a prefix when it has a tap network (optional
/// with a passt one, which the prefix then replaces by taps), names the kernel accepts
/// (< 16 bytes), and taps that exist.
fn check_taps(net: SnapNet, prefix: Option<&str>, count: u32) -> Result<()> {
    match (net, prefix) {
        (SnapNet::None, Some(_)) => fail("--tap-prefix: the snapshot has no network interface".into()),
        (SnapNet::User, None) => Ok(()),
        (SnapNet::Tap, None) => fail(
            "the snapshot has a network interface: give --tap-prefix P (clone K uses the host tap P<K>, which you create first)".into(),
        ),
        (SnapNet::None, None) => Ok(()),
        (_, Some(p)) => {
            let last = format!("{p}{}", count - 1);
            if p.is_empty() || last.len() > 15 || p.contains(['/', ' ']) {
                return fail(format!(
                    "--tap-prefix '{p}': tap names like '{last}' must be 1-15 characters without '/' or spaces"
                ));
            }
            let missing: Vec<String> = (0..count)
                .map(|k| format!("{p}{k}"))
                .filter(|t| !Path::new("/sys/class/net").join(t).exists())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                fail(format!(
                    "--tap-prefix '{p}': no host interface {} (create it: ip tuntap add {} mode tap)",
                    missing.join(", "),
                    missing[0]
                ))
            }
        }
    }
}

/// A started clone process, stopped (SIGTERM, then SIGKILL) on drop unless released.
struct Running {
    id: Identity,
    child: Child,
    ready_after: Option<Duration>,
}

impl Running {
    fn stop(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid; the child is not yet reaped, so the pid
        // cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The clones started so far; all are stopped if this is dropped before `release`.
struct Fleet(Vec<Running>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.0 {
            r.stop();
        }
    }
}

impl Fleet {
    /// Leaves the clones running after this process exits.
    fn release(mut self) -> Vec<Running> {
        std::mem::take(&mut self.0)
    }
}

fn spawn(args: &CloneArgs, id: &Identity, log_level: Option<log::LevelFilter>) -> Result<Child> {
    // Truncated once here, then appended to by both the clone's stderr and its console, so
    // neither overwrites the other.
    let log = File::create(&id.log)
        .and_then(|_| File::options().append(true).open(&id.log))
        .map_err(|e| CloneError(format!("cannot create {}: {e}", id.log.display())))?;
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(l) = log_level {
        cmd.arg("--log-level").arg(l.to_string());
    }
    cmd.arg("restore")
        .arg("--snapshot")
        .arg(&args.snapshot)
        .arg("--mem")
        .arg(&args.mem);
    for d in &args.mem_diff {
        cmd.arg("--mem-diff").arg(d);
    }
    cmd.arg("--api-sock")
        .arg(&id.sock)
        .arg("--console-log")
        .arg(&id.log)
        .arg("--id")
        .arg(format!("clone-{}", id.index));
    if let Some((tap, mac)) = &id.net {
        cmd.arg("--tap").arg(tap).arg("--mac").arg(mac_string(mac));
    }
    if let Some(t) = args.timeout {
        cmd.arg("--timeout").arg(t.to_string());
    }
    // The clone's own messages (errors, "restored in ...") go to its log, next to its console.
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    cmd.spawn()
        .map_err(|e| Box::new(CloneError(format!("cannot start clone {}: {e}", id.index))) as _)
}

/// The clone's API answers `GET /` with a running VM.
fn api_ready(sock: &Path) -> bool {
    let Ok(mut c) = api::client::ApiClient::connect(sock) else {
        return false;
    };
    if c.set_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    matches!(c.request("GET", "/", None), Ok(r) if r.status == 200 && r.body.contains("\"Running\""))
}

/// The last non-empty line of a clone's log: its error when it failed to start.
fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Waits until every clone is ready; fails on the first one that exits or times out.
fn wait_all(fleet: &mut Fleet, started: Instant, start_timeout: Duration, quiet: bool) -> Result<()> {
    let total = fleet.0.len();
    let mut ready = 0;
    while ready < total {
        for r in fleet.0.iter_mut().filter(|r| r.ready_after.is_none()) {
            if let Ok(Some(status)) = r.child.try_wait() {
                return fail(format!(
                    "clone {} ended ({status}) before it started: {}",
                    r.id.index,
                    last_line(&r.id.log)
                ));
            }
            if api_ready(&r.id.sock) {
                r.ready_after = Some(started.elapsed());
                ready += 1;
                if !quiet {
                    eprintln!(
                        "hearth: clone {}/{total} running (clone-{}, pid {}) after {:.1} ms",
                        ready,
                        r.id.index,
                        r.child.id(),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                }
            } else if started.elapsed() > start_timeout {
                return fail(format!(
                    "clone {} did not start within {:.0} s (see {})",
                    r.id.index,
                    start_timeout.as_secs_f64(),
                    r.id.log.display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn report(dir: &Path, clones: &[Running], elapsed: Duration, json: bool) {
    if json {
        let list: Vec<serde_json::Value> = clones
            .iter()
            .map(|r| {
                serde_json::json!({
                    "index": r.id.index,
                    "pid": r.child.id(),
                    "api_sock": r.id.sock,
                    "console_log": r.id.log,
                    "tap": r.id.net.as_ref().map(|n| n.0.clone()),
                    "mac": r.id.net.as_ref().map(|n| mac_string(&n.1)),
                    "ready_ms": r.ready_after.map(|d| d.as_secs_f64() * 1e3),
                })
            })
            .collect();
        let out = serde_json::json!({
            "dir": dir,
            "count": clones.len(),
            "elapsed_ms": elapsed.as_secs_f64() * 1e3,
            "clones": list,
        });
        println!("{out}");
        return;
    }
    for r in clones {
        let net =
            r.id.net
                .as_ref()
                .map(|(t, m)| format!(" tap {t} mac {}", mac_string(m)))
                .unwrap_or_default();
        println!(
            "clone-{} pid {} api-sock {} console {}{net}",
            r.id.index,
            r.child.id(),
            r.id.sock.display(),
            r.id.log.display()
        );
    }
}

/// `hearth clone`.
pub fn run(args: CloneArgs, log_level: Option<log::LevelFilter>) -> Result<u8> {
    let started = Instant::now();
    // Check the snapshot once here, so a bad file is one error rather than N.
    let snap = vmm::persist::load(&args.snapshot)
        .map_err(|e| CloneError(format!("cannot load the snapshot: {}", crate::error_chain(&e))))?;
    if let Err(e) = std::fs::metadata(&args.mem) {
        return fail(format!("cannot open memory file {}: {e}", args.mem.display()));
    }
    let net = match snap.config.net.as_ref().map(|n| &n.backend) {
        None => SnapNet::None,
        Some(vmm::config::NetBackend::Tap(_)) => SnapNet::Tap,
        Some(vmm::config::NetBackend::User { .. }) => SnapNet::User,
    };
    check_taps(net, args.tap_prefix.as_deref(), args.count)?;
    let dir = args
        .api_sock_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("hearth-clones-{}", std::process::id())));
    std::fs::create_dir_all(&dir).map_err(|e| CloneError(format!("cannot create {}: {e}", dir.display())))?;
    let mut fleet = Fleet(Vec::new());
    for id in identities(&dir, args.count, args.tap_prefix.as_deref()) {
        let child = spawn(&args, &id, log_level)?;
        fleet.0.push(Running {
            id,
            child,
            ready_after: None,
        });
    }
    let limit = Duration::from_secs_f64(args.start_timeout.max(0.1));
    wait_all(&mut fleet, started, limit, args.json)?;
    let elapsed = started.elapsed();
    let clones = fleet.release();
    if !args.json {
        eprintln!(
            "hearth: {} clones running after {:.1} ms ({:.1} clones/s); sockets and logs in {}",
            clones.len(),
            elapsed.as_secs_f64() * 1e3,
            clones.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            dir.display()
        );
    }
    report(&dir, &clones, elapsed, args.json);
    Ok(crate::exit_code::GUEST_SHUTDOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_distinct() {
        let ids = identities(Path::new("/d"), 3, Some("ht"));
        assert_eq!(ids[2].sock, PathBuf::from("/d/clone-2.sock"));
        assert_eq!(ids[2].log, PathBuf::from("/d/clone-2.log"));
        let nets: Vec<_> = ids.iter().map(|i| i.net.clone().unwrap()).collect();
        assert_eq!(nets[1].0, "ht1");
        assert_eq!(nets[1].1, default_mac("ht1"), "the MAC hearth run --net tap=ht1 picks");
        assert_ne!(nets[0].1, nets[1].1);
        assert!(identities(Path::new("/d"), 2, None).iter().all(|i| i.net.is_none()));
    }

    #[test]
    fn macs_print_as_the_cli_parses_them() {
        let m = default_mac("x7");
        assert_eq!(api::models::net::parse_mac(&mac_string(&m)), Some(m));
        assert_eq!(mac_string(&[2, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }

    #[test]
    fn tap_options_must_match_the_snapshot() {
        assert!(check_taps(SnapNet::None, None, 4).is_ok());
        assert!(
            check_taps(SnapNet::User, None, 4).is_ok(),
            "each clone starts its own passt"
        );
        let e = check_taps(SnapNet::None, Some("t"), 1).unwrap_err().to_string();
        assert!(e.contains("no network interface"), "{e}");
        let e = check_taps(SnapNet::Tap, None, 1).unwrap_err().to_string();
        assert!(e.contains("--tap-prefix"), "{e}");
        let e = check_taps(SnapNet::Tap, Some("averylongprefix"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("averylongprefix9"), "{e}");
        let e = check_taps(SnapNet::User, Some("hearthnosuch"), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hearthnosuch0, hearthnosuch1"), "{e}");
    }
}
