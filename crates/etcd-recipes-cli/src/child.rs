//! The command run under a lock: started with the lock's environment, signalled, and reaped.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::failure::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Failure, signal_exit_code};

/// A running command.
#[derive(Debug)]
pub(crate) struct Cmd {
    child: Child,
    pid: Option<i32>,
}

impl Cmd {
    /// Starts `argv` with `env` added to ours; stdin, stdout and stderr are the tool's own.
    pub(crate) fn spawn(argv: &[String], env: &[(&str, String)]) -> Result<Cmd, Failure> {
        let (program, args) = argv.split_first().ok_or_else(|| Failure::error("no command given"))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXECUTE };
            Failure::with_code(code, format!("cannot run {program:?}: {e}. Check the command after the lock name"))
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        Ok(Cmd { child, pid })
    }

    /// Waits for the command to end. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Result<ExitStatus, Failure> {
        self.child.wait().await.map_err(|e| Failure::error(format!("waiting for the command failed: {e}")))
    }

    /// Sends `signal` to the command (nothing if it has ended).
    pub(crate) fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) has no memory-safety preconditions; a stale pid is prevented by only
            // signalling a child we have not reaped yet (tokio reaps it in `wait`).
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended after `grace`; returns its exit status.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Failure> {
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.map_err(|e| Failure::error(format!("waiting for the command failed: {e}"))),
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.wait().await
            }
        }
    }
}

/// The exit code to report for a command that ended with `status`: its own code, or 128 + the
/// signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => signal_exit_code(signal),
        (None, None) => 1,
    }
}

/// Whether a terminal's Ctrl-C already reaches the command: the tool (and so the command, which
/// shares its process group) is in the foreground of the terminal on stdin, stdout or stderr.
/// Then SIGINT is not passed on, or the command would get it twice.
pub(crate) fn terminal_delivers_sigint() -> bool {
    [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO].into_iter().any(|fd| {
        // SAFETY: isatty, tcgetpgrp and getpgrp only read process state; fd is a plain integer.
        unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() }
    })
}
