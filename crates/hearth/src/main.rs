//! The `hearth` command: parses the CLI, builds a microVM with the `vmm` crate, runs it, and
//! turns how it ended into an exit code. No VM logic lives here.

mod cli;
mod clone;
mod ctl;
mod ctl_progress;
mod device_specs;
mod logger;
mod session;
mod snapshot_cmd;
mod terminal;
mod uffd_handler;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::{Cli, Command};

/// Exit codes (also in `hearth --help`).
pub mod exit_code {
    /// The guest shut down (poweroff/reboot: a microVM ends when its guest resets).
    pub const GUEST_SHUTDOWN: u8 = 0;
    /// hearth could not build or start the VM (bad input, missing files, no KVM).
    pub const ERROR: u8 = 1;
    /// Command-line usage error.
    pub const USAGE: u8 = 2;
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: u8 = 3;
    /// A vCPU hit an exit hearth cannot complete (the message says where).
    pub const VCPU_FAILED: u8 = 4;
    /// `--timeout` passed before the guest shut down.
    pub const TIMEOUT: u8 = 5;
    /// SIGINT/SIGTERM (or the console escape Ctrl-A x): 128 + signal number.
    pub const SIGNAL_BASE: u8 = 128;
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit_code::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    logger::init(cli.log_level);
    let result = match cli.command {
        Some(Command::Run(args)) => cli::run(args, started),
        Some(Command::Restore(args)) => session::restore(args, started),
        Some(Command::Ctl(args)) => return ExitCode::from(ctl::run(args)),
        Some(Command::Snapshot(args)) => return ExitCode::from(snapshot_cmd::run(&args)),
        Some(Command::Clone(args)) => clone::run(args, cli.log_level),
        Some(Command::UffdHandler(args)) => return ExitCode::from(uffd_handler::run(&args)),
        None => session::firecracker(cli.firecracker, started),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hearth: {}", error_chain(e.as_ref()));
            ExitCode::from(exit_code::ERROR)
        }
    }
}

/// "what failed: why: root cause" on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}
