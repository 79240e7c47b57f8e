//! [`ClientProcess`]: a client OS process (a test's worker) under fault control: SIGKILL, and
//! SIGSTOP / SIGCONT, with its stdout collected line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::member::{signal_group, thread_states};
use crate::spawner;

/// How long pause / resume wait for every thread of the process to change state.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A line the process printed, with the moment the reader thread received it.
pub type ProcessLine = (Instant, String);

/// A client process (for example a test's lock worker) that faults can be injected into.
///
/// It is spawned like etcd itself (its own process group, SIGKILLed by the kernel if the spawning
/// process dies), its stdout is read line by line on a thread of its own, and it can be killed,
/// paused and resumed at any moment. Dropping it SIGKILLs and reaps it. All methods take `&self`.
#[derive(Debug)]
pub struct ClientProcess {
    name: String,
    pid: u32,
    child: Mutex<Option<Child>>,
    paused: Mutex<bool>,
    lines: Arc<Mutex<Vec<ProcessLine>>>,
    reader: Option<JoinHandle<()>>,
}

impl ClientProcess {
    /// Spawns `command` with stdin closed and stdout captured (stderr is left as configured).
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<ClientProcess> {
        let name = name.into();
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = spawner::spawn(command).ctx(|| format!("spawning client process {name}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| Error::Config(format!("{name}: stdout was not captured")))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = thread::Builder::new()
            .name(format!("client-process-{pid}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), line));
                }
            })
            .ctx(|| format!("starting the stdout reader of {name}"))?;
        Ok(ClientProcess {
            name,
            pid,
            child: Mutex::new(Some(child)),
            paused: Mutex::new(false),
            lines,
            reader: Some(reader),
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every line printed so far, with when it arrived.
    pub fn lines(&self) -> Vec<ProcessLine> {
        self.lock_lines().clone()
    }

    /// How many lines were printed so far.
    pub fn line_count(&self) -> usize {
        self.lock_lines().len()
    }

    /// The lines from index `from` on (for polling without copying everything each time).
    pub fn lines_from(&self, from: usize) -> Vec<ProcessLine> {
        let lines = self.lock_lines();
        lines.get(from..).map(<[ProcessLine]>::to_vec).unwrap_or_default()
    }

    /// Whether the process is alive (possibly paused).
    pub fn is_running(&self) -> bool {
        let mut child = self.lock_child();
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether [`pause`](Self::pause) froze it and nothing resumed it since.
    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// SIGKILLs the process and reaps it (no-op if it already exited).
    pub fn kill(&self) -> Result<Option<ExitStatus>> {
        let mut guard = self.lock_child();
        let Some(child) = guard.as_mut() else { return Ok(None) };
        // A reaped child keeps its status; never signal its (possibly reused) pid again.
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(status));
        }
        let _ = signal_group(child, libc::SIGKILL);
        let status = child.wait().ctx(|| format!("waiting for {} to exit", self.name))?;
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = false;
        Ok(Some(status))
    }

    /// Freezes the process with SIGSTOP and waits until all its threads are stopped.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wait_for_threads(true)
    }

    /// Thaws the process with SIGCONT and waits until none of its threads is stopped.
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.wait_for_threads(false)
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.lock_child();
                let Some(child) = guard.as_mut() else { return Ok(None) };
                if let Some(status) = child.try_wait().ctx(|| format!("waiting for {}", self.name))? {
                    return Ok(Some(status));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let mut guard = self.lock_child();
        let Some(child) = guard.as_mut() else { return Ok(()) };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        signal_group(child, signal).ctx(|| format!("sending signal {signal} to {}", self.name))
    }

    fn wait_for_threads(&self, want_stopped: bool) -> Result<()> {
        let deadline = Instant::now() + SIGNAL_TIMEOUT;
        while let Some(states) = thread_states(self.pid) {
            let stopped = states.iter().filter(|&&s| s == 'T' || s == 't').count();
            let dead = !states.is_empty() && states.iter().all(|&s| s == 'Z' || s == 'X');
            let reached = if want_stopped { stopped == states.len() && stopped > 0 } else { stopped == 0 };
            if reached || dead {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if want_stopped { "to stop after SIGSTOP" } else { "to continue after SIGCONT" };
                return Err(Error::Timeout {
                    what: format!("{} (pid {}) {what}", self.name, self.pid),
                    timeout: SIGNAL_TIMEOUT,
                    log_tail: String::new(),
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_lines(&self) -> MutexGuard<'_, Vec<ProcessLine>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::error!(process = %self.name, %error, "cannot kill a client process");
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell that prints a line, then counts: paused it stops printing, resumed it goes on,
    /// killed it is gone.
    #[test]
    fn pause_resume_and_kill_a_client_process() -> Result<()> {
        let mut command = Command::new("sh");
        command.args(["-c", "echo ready; i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"]);
        let p = ClientProcess::spawn("counter", command)?;
        let until = Instant::now() + Duration::from_secs(10);
        while p.line_count() < 3 && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.lines().first().map(|l| l.1.as_str()), Some("ready"));
        p.pause()?;
        assert!(p.is_paused() && p.is_running());
        thread::sleep(Duration::from_millis(100));
        let frozen = p.line_count();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(p.line_count(), frozen, "a paused process prints nothing");
        p.resume()?;
        while p.line_count() <= frozen && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(p.line_count() > frozen, "a resumed process goes on");
        assert!(p.lines_from(frozen).iter().all(|l| l.1.parse::<u64>().is_ok()));
        let status = p.kill()?;
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        assert!(!p.is_running());
        assert_eq!(p.wait_timeout(Duration::from_millis(10))?, status);
        Ok(())
    }
}
