//! A hearth process whose guest counts on its console (`count-N` lines), as the snapshot
//! tests use it: spawn, wait for a count, collect counts, stop (SIGTERM on drop); and a one-shot
//! API call that waits for the socket.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use api::client::ApiClient;

const WAIT: Duration = Duration::from_secs(600);

pub struct Vm {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Vm {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = super::console_lines(out);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a console line for which `found` gives a value; returns it. `what` names
    /// the line in the panic message when hearth ends or `WAIT` passes first.
    pub fn wait_for<T>(&mut self, what: &str, mut found: impl FnMut(&str) -> Option<T>) -> T {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line.clone());
                if let Some(v) = found(&line) {
                    return v;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("hearth ended ({st}) before {what}; console:\n{}", self.seen.join("\n"));
            }
        }
        panic!("no {what} within {WAIT:?}; console:\n{}", self.seen.join("\n"));
    }

    /// Waits for a console line `count-N` with N >= `at_least`; returns N.
    pub fn wait_count(&mut self, at_least: u64) -> u64 {
        self.wait_for(&format!("count-{at_least}"), |line| {
            line.strip_prefix("count-")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n >= at_least)
        })
    }

    /// Waits for a console line starting with `prefix`; returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        self.wait_for(&format!("'{prefix}'"), |line| {
            line.strip_prefix(prefix).map(str::to_string)
        })
    }

    /// Waits for hearth to end by itself (collecting console lines); its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            assert!(
                start.elapsed() < WAIT,
                "hearth still runs after {WAIT:?}; console:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every `count-N` seen so far.
    pub fn counts(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix("count-").and_then(|n| n.parse::<u64>().ok()))
            .collect()
    }

    /// The highest `count-N` seen so far.
    pub fn last_count(&self) -> u64 {
        self.counts().into_iter().max().unwrap_or(0)
    }

    /// The counts printed during `d`.
    pub fn counts_during(&mut self, d: Duration) -> Vec<u64> {
        let start = Instant::now();
        let mut out = Vec::new();
        while start.elapsed() < d {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if let Some(n) = line.strip_prefix("count-").and_then(|n| n.parse::<u64>().ok()) {
                    out.push(n);
                }
                self.seen.push(line);
            }
        }
        out
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Vm {
    /// SIGTERM (hearth stops the VM cleanly), so no guest outlives a failed test.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // ended (and reaped): its pid may be someone else's now
        }
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

pub fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let start = Instant::now();
    let mut c = loop {
        match ApiClient::connect(sock) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to {}: {e}", sock.display()),
        }
    };
    let r = c.request(method, path, body).unwrap();
    (r.status, r.body)
}
