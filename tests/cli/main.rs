//! Tests of the `squeeze` binary as people and scripts run it: `serve` with its private
//! PostgreSQL, the token commands, `inspect`, and a multi-gigabyte upload's memory profile;
//! and the source's module layering (`layers`).

#[path = "../common/mod.rs"]
mod common;

mod artifacts;
mod commands;
mod embedded;
mod evaluate;
mod large_model;
mod layers;
mod real_models;
mod reference;
mod upload_memory;
mod workers;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `squeeze serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout_lines: Vec<String>,
}

impl Server {
    /// Starts `squeeze serve` on a free port with `data_dir` and no DATABASE_URL.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(common::squeeze_bin());
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env("SQUEEZE_LOG", "warn")
            .env("SQUEEZE_LOGIN_URL", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("squeeze serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut base = None;
        while base.is_none() || lines.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "serve did not print its address: {lines:?}"
            );
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("serve exited early: {lines:?}");
            }
            if let Some(url) = line.trim().strip_prefix("squeeze listening on ") {
                base = Some(url.to_owned());
            }
            lines.push(line.trim().to_owned());
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Server {
            child,
            base: base.unwrap(),
            stdout_lines: lines,
        }
    }

    /// The admin token a first start wrote into the data folder.
    pub fn admin_token(&self, data_dir: &Path) -> String {
        std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails must not leave its server running: it would outlive the test binary and
/// hold the test runner's output pipe open.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `squeeze` with arguments, without DATABASE_URL; returns (status, stdout, stderr).
pub fn squeeze(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(common::squeeze_bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env("SQUEEZE_LOG", "warn")
        .output()
        .expect("squeeze runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asks a child process to shut down gracefully (SIGTERM), as a service manager would.
pub fn sigterm(pid: u32) {
    // SAFETY: signalling a child process we own.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}

/// Whether a postmaster is running for the cluster in `data_dir`.
pub fn cluster_running(data_dir: &Path) -> bool {
    let pid_file = data_dir.join("postgres").join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A temp data folder.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sqz-cli-")
        .tempdir()
        .unwrap()
}
