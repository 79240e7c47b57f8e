//! Helpers shared by the CLI tests: running `etcd-recipes` (and the harness's `etcdctl`) as child
//! processes against a harness-started etcd, reading their output line by line, signalling them.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etcd_harness::{ClusterConfig, EtcdCluster};

/// Long enough for anything that should happen on a busy 2-core machine.
pub const SOON: Duration = Duration::from_secs(20);
/// How long to watch for something that must not happen.
pub const A_WHILE: Duration = Duration::from_millis(1200);
/// How long an exited tool's output may take to reach the end of its pipes (a command it started
/// and left running keeps them open).
const DRAIN: Duration = Duration::from_secs(5);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_etcd-recipes")
}

/// A single-member etcd of the version `ETCD_VERSION` names (3.5.1 by default).
pub fn etcd() -> Result<EtcdCluster> {
    EtcdCluster::start(ClusterConfig::default()).context("starting etcd")
}

/// `etcd-recipes --endpoints <etcd> ARGS`, with stdin closed.
pub fn tool(etcd: &EtcdCluster, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--endpoints").arg(etcd.endpoints().join(",")).args(args).stdin(Stdio::null());
    c
}

/// `etcd-recipes ARGS` with no endpoint flag, stdin closed.
pub fn bare(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).stdin(Stdio::null()).env_remove("ETCD_ENDPOINTS");
    c
}

/// The harness's `etcdctl ARGS`, stdin closed.
pub fn etcdctl(etcd: &EtcdCluster, args: &[&str]) -> Command {
    let mut c = etcd.etcdctl();
    c.args(args).stdin(Stdio::null());
    c
}

/// A running child with its stdout as a stream of lines and its stderr collected.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Disconnects once both pipe readers reached the end of their pipe (they never send).
    drained: Receiver<()>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Result<Proc> {
        let name = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::channel();
        let (out_done, drained) = mpsc::channel::<()>();
        let err_done = out_done.clone();
        thread::spawn(move || {
            let _done = out_done;
            for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            let _done = err_done;
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Proc { name, child, lines, stderr, drained, status: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, within `within`.
    pub fn line(&self, within: Duration) -> Result<String> {
        self.lines
            .recv_timeout(within)
            .with_context(|| format!("no stdout line from {} within {within:?}; stderr: {}", self.name, self.stderr()))
    }

    /// Fails if a stdout line arrives within `within`.
    pub fn no_line(&self, within: Duration) -> Result<()> {
        match self.lines.recv_timeout(within) {
            Ok(line) => bail!("{} printed {line:?} (stderr: {})", self.name, self.stderr()),
            Err(_) => Ok(()),
        }
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn signal(&self, signal: &str) -> Result<()> {
        let ok = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status()?.success();
        ensure!(ok, "kill -{signal} {} failed", self.pid());
        Ok(())
    }

    pub fn interrupt(&self) -> Result<()> {
        self.signal("INT")
    }

    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit, within `within`; its exit code (128+signal if killed).
    pub fn wait(&mut self, within: Duration) -> Result<i32> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.status {
                break s;
            }
            if let Some(s) = self.child.try_wait()? {
                self.status = Some(s);
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not exit within {within:?}; stderr: {}", self.name, self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        // Everything it wrote is read once both pipes are at their end; a command it left running
        // may hold them open, so not longer than DRAIN.
        let _ = self.drained.recv_timeout(DRAIN);
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// The remaining stdout lines after exit.
    pub fn rest(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The outcome of a command run to its end.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `command` to its end (killing it after `within`).
pub fn run(command: Command, within: Duration) -> Result<Outcome> {
    let started = Instant::now();
    let mut p = Proc::spawn(command)?;
    let code = p.wait(within)?;
    let took = started.elapsed();
    // `wait` returned once the pipes were drained: every line is in the channel.
    Ok(Outcome { code, stdout: p.rest().join("\n"), stderr: p.stderr(), took })
}

/// Keys under `prefix` (etcdctl, keys only).
pub fn keys(etcd: &EtcdCluster, prefix: &str) -> Result<Vec<String>> {
    let out = etcd.run_etcdctl(["get", "--prefix", "--keys-only", prefix])?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Retries `check` until it holds, within `within`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}
