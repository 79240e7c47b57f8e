//! One etcd member: its addresses, directories and (maybe running) process.

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result, tail_lines};
use crate::{install, spawner};

/// How many bytes at the end of a log [`Member::log_tail`] looks at.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// A running etcd process.
#[derive(Debug)]
struct Running {
    child: Child,
    paused: bool,
}

/// One member of an [`EtcdCluster`](crate::EtcdCluster).
///
/// Control it through the cluster (`kill(i)`, `restart(i)`, ...); the member itself exposes
/// its addresses, directories, pid and log. Dropping a member SIGKILLs its process.
pub struct Member {
    name: String,
    client_url: String,
    health_url: String,
    peer_url: String,
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    etcd: PathBuf,
    args: Vec<String>,
    process: Mutex<Option<Running>>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: never block (or deadlock) just to print.
        let process = self.process.try_lock();
        let running = process.as_ref().ok().and_then(|guard| guard.as_ref());
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("client_url", &self.client_url)
            .field("health_url", &self.health_url)
            .field("peer_url", &self.peer_url)
            .field("data_dir", &self.data_dir)
            .field("pid", &running.map(|r| r.child.id()))
            .field("paused", &running.is_some_and(|r| r.paused))
            .finish()
    }
}

impl Member {
    /// Describes a member; nothing is started yet.
    pub(crate) fn new(
        name: String,
        client_url: String,
        peer_url: String,
        dir: PathBuf,
        etcd: PathBuf,
        args: Vec<String>,
    ) -> Self {
        Self {
            name,
            health_url: client_url.clone(),
            client_url,
            peer_url,
            data_dir: dir.join("data"),
            log_path: dir.join("etcd.log"),
            dir,
            etcd,
            args,
            process: Mutex::new(None),
        }
    }

    /// The unix socket the member also serves clients on, with
    /// [`ClusterConfig::with_unix_sockets`](crate::ClusterConfig::with_unix_sockets). etcd takes
    /// only `unix://host:port` listen URLs and makes the socket `host:port` in its working
    /// directory, which is the member's directory.
    pub fn unix_socket(&self) -> Option<PathBuf> {
        let listen = self.args.iter().find_map(|a| a.strip_prefix("--listen-client-urls="))?;
        let name = listen.split(',').find_map(|u| u.strip_prefix("unix://"))?;
        Some(self.dir.join(name))
    }

    /// The member's name (`m0`, `m1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves `/health` and `/metrics` on `url` (plain HTTP) instead of the client URL.
    pub(crate) fn with_health_url(mut self, url: String) -> Self {
        self.health_url = url;
        self
    }

    /// The client URL: `http://127.0.0.1:<port>`, or `https://` when the cluster serves clients
    /// over TLS ([`ClusterConfig::with_client_tls`](crate::ClusterConfig::with_client_tls)).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// A plain-HTTP URL serving `/health` and `/metrics`: the client URL, or with client TLS the
    /// member's `--listen-metrics-urls` address (`http://127.0.0.1:<port>`).
    pub fn health_url(&self) -> &str {
        &self.health_url
    }

    /// The peer URL, `http://127.0.0.1:<port>`.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// The member's own directory (holds `data/` and `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `--data-dir` of this member.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file receiving etcd's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The command-line arguments etcd is started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The pid of the etcd process, if it is running (paused counts as running).
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock();
        reap_if_exited(&mut guard);
        guard.as_ref().map(|r| r.child.id())
    }

    /// `true` if the etcd process is alive (possibly paused).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// `true` if the process is alive and paused with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        let mut guard = self.lock();
        reap_if_exited(&mut guard);
        guard.as_ref().is_some_and(|r| r.paused)
    }

    /// The last `lines` lines of the member's log (an explanatory line if it cannot be read).
    pub fn log_tail(&self, lines: usize) -> String {
        match read_tail(&self.log_path) {
            Ok(text) => tail_lines(&text, lines),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts etcd (kills a still-running previous process first).
    pub(crate) fn spawn(&self) -> Result<()> {
        self.kill()?;
        fs::create_dir_all(&self.dir).ctx(|| format!("creating {}", self.dir.display()))?;
        let mut log = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .ctx(|| format!("opening {}", self.log_path.display()))?;
        writeln!(log, "=== etcd-harness: starting {} ===", self.name)
            .ctx(|| format!("writing {}", self.log_path.display()))?;
        let log_err = log.try_clone().ctx(|| format!("duplicating {}", self.log_path.display()))?;
        let mut command = install::clean_command(&self.etcd);
        // The working directory is where etcd makes a `unix://` listener's socket.
        command.args(&self.args).current_dir(&self.dir).stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = spawner::spawn(command).ctx(|| format!("spawning {}", self.etcd.display()))?;
        tracing::debug!(member = %self.name, pid = child.id(), "etcd started");
        *self.lock() = Some(Running { child, paused: false });
        Ok(())
    }

    /// If the process has exited, reaps it and returns its exit status. `Some(None)` means
    /// "not running at all" (never started or already reaped).
    pub(crate) fn exit_status(&self) -> Option<Option<ExitStatus>> {
        let mut guard = self.lock();
        match guard.as_mut() {
            None => Some(None),
            Some(running) => match running.child.try_wait() {
                Ok(Some(status)) => {
                    *guard = None;
                    Some(Some(status))
                }
                Ok(None) | Err(_) => None,
            },
        }
    }

    /// Sends `signal` to the member's process group. No-op if not running.
    pub(crate) fn signal(&self, signal: libc::c_int) -> Result<()> {
        let mut guard = self.lock();
        reap_if_exited(&mut guard);
        if let Some(running) = guard.as_mut() {
            signal_group(&running.child, signal).ctx(|| format!("sending signal {signal} to {}", self.name))?;
            match signal {
                libc::SIGSTOP => running.paused = true,
                libc::SIGCONT => running.paused = false,
                _ => {}
            }
        }
        Ok(())
    }

    /// SIGSTOPs the process group and waits until every etcd thread is stopped: signal delivery
    /// is asynchronous, and a busy machine may otherwise still see a "paused" member answer.
    pub(crate) fn pause(&self, timeout: Duration) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.wait_for_threads(true, "to stop after SIGSTOP", timeout)
    }

    /// SIGCONTs the process group and waits until no etcd thread is stopped any more.
    pub(crate) fn resume(&self, timeout: Duration) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.wait_for_threads(false, "to continue after SIGCONT", timeout)
    }

    /// Polls `/proc/<pid>/task/*/stat` until every thread is stopped (`want_stopped`) or none is.
    fn wait_for_threads(&self, want_stopped: bool, what: &str, timeout: Duration) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        // `None`: the process vanished, so there is nothing left to wait for.
        while let Some(states) = thread_states(pid) {
            let stopped = states.iter().filter(|&&s| s == 'T' || s == 't').count();
            let reached = if want_stopped { stopped == states.len() && stopped > 0 } else { stopped == 0 };
            if reached {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} (pid {pid}) {what}", self.name),
                    timeout,
                    log_tail: self.log_tail(10),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGKILLs the process group and reaps etcd. No-op if not running.
    pub(crate) fn kill(&self) -> Result<()> {
        let mut guard = self.lock();
        if let Some(mut running) = guard.take() {
            // ESRCH just means it is already gone; wait() below reaps it either way.
            let _ = signal_group(&running.child, libc::SIGKILL);
            running.child.wait().ctx(|| format!("waiting for {} to exit", self.name))?;
            tracing::debug!(member = %self.name, "etcd killed");
        }
        Ok(())
    }

    /// SIGTERMs the process group (SIGCONT too, in case it is paused) and waits up to
    /// `timeout` for a clean exit, then SIGKILLs it.
    pub(crate) fn stop(&self, timeout: Duration) -> Result<()> {
        let mut guard = self.lock();
        let Some(mut running) = guard.take() else {
            return Ok(());
        };
        let _ = signal_group(&running.child, libc::SIGTERM);
        let _ = signal_group(&running.child, libc::SIGCONT);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match running.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io(format!("waiting for {} to exit", self.name), e)),
            }
        }
        tracing::warn!(member = %self.name, ?timeout, "etcd ignored SIGTERM; killing it");
        let _ = signal_group(&running.child, libc::SIGKILL);
        running.child.wait().ctx(|| format!("waiting for {} to exit", self.name))?;
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::error!(member = %self.name, %error, "cannot kill etcd");
        }
    }
}

fn reap_if_exited(guard: &mut Option<Running>) {
    if let Some(running) = guard.as_mut()
        && matches!(running.child.try_wait(), Ok(Some(_)))
    {
        *guard = None;
    }
}

/// Sends `signal` to the process group led by `child` (spawned with `process_group(0)`).
/// Only called on children not yet reaped, so the pid cannot have been reused.
pub(crate) fn signal_group(child: &Child, signal: libc::c_int) -> std::io::Result<()> {
    let pgid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The scheduler state letter of every thread of `pid`; `None` if the process is gone.
pub(crate) fn thread_states(pid: u32) -> Option<Vec<char>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let states = tasks
        .filter_map(|task| {
            let stat = fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // "tid (comm) S ...": the state follows the last ')'.
            stat.rsplit_once(')')?.1.trim_start().chars().next()
        })
        .collect();
    Some(states)
}

/// Reads the last [`LOG_TAIL_BYTES`] of a file.
fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > LOG_TAIL_BYTES {
        file.seek(SeekFrom::Start(len - LOG_TAIL_BYTES))?;
    }
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}
