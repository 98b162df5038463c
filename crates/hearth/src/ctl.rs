//! `hearth ctl --api-sock PATH <command>`: a client for a running hearth's API socket.
//! Exit codes: 0 on a 2xx reply, 1 on an API fault or a socket error (one line on stderr),
//! 2 on a usage error (clap).

use std::io::Read;
use std::path::PathBuf;

use api::client::{ApiClient, Response};

use crate::ctl_progress::Progress;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The API socket of a running hearth (or Firecracker).
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Print replies as the raw JSON the API sent.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Instance id, state and version (GET /).
    Info,
    /// Boot a VM configured through the API (PUT /actions InstanceStart).
    Start,
    /// Pause the vCPUs (PATCH /vm Paused).
    Pause,
    /// Resume the vCPUs (PATCH /vm Resumed).
    Resume,
    /// The whole VM configuration (GET /vm/config).
    Config,
    /// Send Ctrl-Alt-Del to the guest (PUT /actions SendCtrlAltDel).
    CtrlAltDel,
    /// The balloon device.
    #[command(subcommand)]
    Balloon(BalloonCommand),
    /// Snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// GET PATH and print the reply.
    Get { path: String },
    /// PUT PATH with a JSON body ('-' reads it from stdin).
    Put { path: String, body: String },
    /// PATCH PATH with a JSON body ('-' reads it from stdin).
    Patch { path: String, body: String },
}

#[derive(Subcommand, Debug)]
pub enum BalloonCommand {
    /// Set the balloon's target size (PATCH /balloon).
    Set { amount_mib: u32 },
    /// The guest's memory statistics (GET /balloon/statistics).
    Stats,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write the VM state and memory of a paused VM (PUT /snapshot/create).
    Create {
        #[arg(long, value_name = "PATH")]
        snapshot: String,
        #[arg(long, value_name = "PATH")]
        mem: String,
        /// Only the memory dirtied since the last snapshot.
        #[arg(long)]
        diff: bool,
    },
    /// Restore a snapshot into this (fresh) hearth (PUT /snapshot/load).
    Load {
        #[arg(long, value_name = "PATH")]
        snapshot: String,
        #[arg(long, value_name = "PATH")]
        mem: String,
        /// Resume the VM once loaded.
        #[arg(long)]
        resume: bool,
    },
}

/// The request a command sends: (method, path, body).
fn request_of(cmd: &CtlCommand) -> Result<(&'static str, String, Option<String>), String> {
    let put = |path: &str, v: Value| Ok(("PUT", path.to_string(), Some(v.to_string())));
    let patch = |path: &str, v: Value| Ok(("PATCH", path.to_string(), Some(v.to_string())));
    match cmd {
        CtlCommand::Info => Ok(("GET", "/".into(), None)),
        CtlCommand::Start => put("/actions", json!({"action_type": "InstanceStart"})),
        CtlCommand::Pause => patch("/vm", json!({"state": "Paused"})),
        CtlCommand::Resume => patch("/vm", json!({"state": "Resumed"})),
        CtlCommand::Config => Ok(("GET", "/vm/config".into(), None)),
        CtlCommand::CtrlAltDel => put("/actions", json!({"action_type": "SendCtrlAltDel"})),
        CtlCommand::Balloon(BalloonCommand::Set { amount_mib }) => {
            patch("/balloon", json!({ "amount_mib": amount_mib }))
        }
        CtlCommand::Balloon(BalloonCommand::Stats) => Ok(("GET", "/balloon/statistics".into(), None)),
        CtlCommand::Snapshot(SnapshotCommand::Create { snapshot, mem, diff }) => put(
            "/snapshot/create",
            json!({"snapshot_path": snapshot, "mem_file_path": mem,
                   "snapshot_type": if *diff { "Diff" } else { "Full" }}),
        ),
        CtlCommand::Snapshot(SnapshotCommand::Load { snapshot, mem, resume }) => put(
            "/snapshot/load",
            json!({"snapshot_path": snapshot, "resume_vm": resume,
                   "mem_backend": {"backend_type": "File", "backend_path": mem}}),
        ),
        CtlCommand::Get { path } => Ok(("GET", path.clone(), None)),
        CtlCommand::Put { path, body } => Ok(("PUT", path.clone(), Some(read_body(body)?))),
        CtlCommand::Patch { path, body } => Ok(("PATCH", path.clone(), Some(read_body(body)?))),
    }
}

fn read_body(arg: &str) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read the body from stdin: {e}"))?;
    Ok(s)
}

/// Runs one command; returns the exit code.
pub fn run(args: CtlArgs) -> u8 {
    match call(&args) {
        Ok(r) if r.is_success() => {
            print_reply(&args, &r);
            0
        }
        Ok(r) => {
            let msg = r.fault_message().unwrap_or_else(|| r.body.trim().replace('\n', " "));
            if args.json && !r.body.is_empty() {
                println!("{}", r.body);
            }
            eprintln!("hearth ctl: {} ({})", msg, r.status);
            crate::exit_code::ERROR
        }
        Err(e) => {
            eprintln!("hearth ctl: {e}");
            crate::exit_code::ERROR
        }
    }
}

fn call(args: &CtlArgs) -> Result<Response, String> {
    let (method, path, body) = request_of(&args.command)?;
    let sock = args.api_sock.display();
    let mut client =
        ApiClient::connect(&args.api_sock).map_err(|e| format!("cannot connect to the API socket {sock}: {e}"))?;
    // Writing a large memory file takes as long as the disk needs: no reply timeout for it.
    let snapshot_mem = match &args.command {
        CtlCommand::Snapshot(SnapshotCommand::Create { mem, .. }) => Some(mem),
        _ => None,
    };
    let timeout = snapshot_mem.map_or(Some(std::time::Duration::from_secs(60)), |_| None);
    client
        .set_timeout(timeout)
        .map_err(|e| format!("API socket {sock}: {e}"))?;
    let progress = snapshot_mem.and_then(|mem| {
        let total = guest_memory_bytes(&mut client)?;
        Progress::start(std::path::Path::new(mem), total)
    });
    let reply = client
        .request(method, &path, body.as_deref())
        .map_err(|e| format!("{method} {path} on {sock}: {e}"));
    if let Some(p) = progress {
        p.finish();
    }
    reply
}

/// The guest's memory size from `GET /vm/config` (for the snapshot progress display).
fn guest_memory_bytes(client: &mut ApiClient) -> Option<u64> {
    let r = client.request("GET", "/vm/config", None).ok()?;
    let mib = r.json().ok()?["machine-config"]["mem_size_mib"].as_u64()?;
    Some(mib << 20)
}

fn print_reply(args: &CtlArgs, r: &Response) {
    if r.body.is_empty() {
        return;
    }
    if args.json {
        println!("{}", r.body);
        return;
    }
    let Ok(v) = r.json() else {
        print!("{}", r.body);
        return;
    };
    if let CtlCommand::Info = args.command {
        let field = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        println!(
            "id: {}\nstate: {}\nvmm_version: {}\napp_name: {}",
            field("id"),
            field("state"),
            field("vmm_version"),
            field("app_name")
        );
        return;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| r.body.clone())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_requests() {
        let (m, p, b) = request_of(&CtlCommand::Balloon(BalloonCommand::Set { amount_mib: 64 })).unwrap();
        assert_eq!(
            (m, p.as_str(), b.as_deref()),
            ("PATCH", "/balloon", Some("{\"amount_mib\":64}"))
        );
        let (m, p, b) = request_of(&CtlCommand::Snapshot(SnapshotCommand::Load {
            snapshot: "/s".into(),
            mem: "/m".into(),
            resume: true,
        }))
        .unwrap();
        assert_eq!((m, p.as_str()), ("PUT", "/snapshot/load"));
        // The body the client builds is one the server accepts.
        assert!(api::router::route(m, &p, b.as_deref().map(str::as_bytes)).is_ok());
        for cmd in [
            CtlCommand::Pause,
            CtlCommand::Resume,
            CtlCommand::CtrlAltDel,
            CtlCommand::Start,
        ] {
            let (m, p, b) = request_of(&cmd).unwrap();
            assert!(
                api::router::route(m, &p, b.as_deref().map(str::as_bytes)).is_ok(),
                "{cmd:?}"
            );
        }
        let (m, p, b) = request_of(&CtlCommand::Snapshot(SnapshotCommand::Create {
            snapshot: "/s".into(),
            mem: "/m".into(),
            diff: true,
        }))
        .unwrap();
        assert!(api::router::route(m, &p, b.as_deref().map(str::as_bytes)).is_ok());
    }
}
