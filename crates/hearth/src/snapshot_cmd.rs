//! `hearth snapshot --api-sock S --snapshot F --mem M`: snapshot a running (or paused) hearth
//! in one step — pause if it runs, `PUT /snapshot/create` with progress on a terminal, resume
//! what was running (unless `--leave-paused`). Exit 0 when the files are written, 1 otherwise
//! (the VM is resumed on failure too, if this command paused it).

use std::path::PathBuf;
use std::time::Instant;

use api::client::{ApiClient, Response};
use clap::Args;
use serde_json::json;

use crate::ctl_progress::Progress;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The API socket of the running hearth.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Where to write the state file.
    #[arg(long, value_name = "PATH")]
    pub snapshot: PathBuf,
    /// Where to write the memory file.
    #[arg(long, value_name = "PATH")]
    pub mem: PathBuf,
    /// Only the memory written since the previous snapshot (needs --track-dirty-pages).
    #[arg(long)]
    pub diff: bool,
    /// Leave the VM paused afterwards (default: resume it if it was running).
    #[arg(long)]
    pub leave_paused: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SnapshotArgs) -> u8 {
    match snapshot(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hearth snapshot: {e}");
            crate::exit_code::ERROR
        }
    }
}

fn ok_or_fault(what: &str, r: Response) -> Result<Response, String> {
    if r.is_success() {
        return Ok(r);
    }
    let msg = r.fault_message().unwrap_or_else(|| r.body.trim().replace('\n', " "));
    Err(format!("{what}: {msg} ({})", r.status))
}

fn snapshot(args: &SnapshotArgs) -> Result<(), String> {
    let sock = args.api_sock.display().to_string();
    let mut c =
        ApiClient::connect(&args.api_sock).map_err(|e| format!("cannot connect to the API socket {sock}: {e}"))?;
    let req = |c: &mut ApiClient, method: &str, path: &str, body: Option<String>| {
        c.request(method, path, body.as_deref())
            .map_err(|e| format!("{method} {path} on {sock}: {e}"))
    };
    // Writing a large memory file takes as long as the disk needs: no reply timeout.
    c.set_timeout(None).map_err(|e| format!("API socket {sock}: {e}"))?;
    let info = ok_or_fault("GET /", req(&mut c, "GET", "/", None)?)?;
    let state = info.json().ok().and_then(|v| v["state"].as_str().map(String::from));
    let was_running = state.as_deref() == Some("Running");
    if was_running {
        ok_or_fault(
            "pausing the VM",
            req(&mut c, "PATCH", "/vm", Some(json!({"state": "Paused"}).to_string()))?,
        )?;
    }
    let total = req(&mut c, "GET", "/vm/config", None)
        .ok()
        .and_then(|r| r.json().ok()?["machine-config"]["mem_size_mib"].as_u64())
        .map_or(0, |mib| mib << 20);
    // The VMM opens the paths from its own working directory: send absolute ones.
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    let (state_path, mem_path) = (cwd.join(&args.snapshot), cwd.join(&args.mem));
    let body = json!({
        "snapshot_path": state_path,
        "mem_file_path": mem_path,
        "snapshot_type": if args.diff { "Diff" } else { "Full" },
    });
    let started = Instant::now();
    let progress = Progress::start(&mem_path, total);
    let created = req(&mut c, "PUT", "/snapshot/create", Some(body.to_string()));
    if let Some(p) = progress {
        p.finish();
    }
    let millis = started.elapsed().as_millis();
    let created = created.and_then(|r| ok_or_fault("PUT /snapshot/create", r));
    if was_running && !args.leave_paused {
        let resumed = req(&mut c, "PATCH", "/vm", Some(json!({"state": "Resumed"}).to_string()))
            .and_then(|r| ok_or_fault("resuming the VM", r));
        if let (Ok(_), Err(e)) = (&created, resumed) {
            return Err(e);
        }
    }
    created?;
    let resumed = was_running && !args.leave_paused;
    if args.json {
        println!(
            "{}",
            json!({"snapshot_path": args.snapshot, "mem_file_path": args.mem,
                   "snapshot_type": if args.diff { "Diff" } else { "Full" },
                   "millis": millis, "resumed": resumed})
        );
    } else {
        println!(
            "snapshot written in {millis} ms: state {}, memory {}{}",
            args.snapshot.display(),
            args.mem.display(),
            if resumed { " (VM resumed)" } else { " (VM paused)" }
        );
    }
    Ok(())
}
