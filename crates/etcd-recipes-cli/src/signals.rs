//! SIGINT and SIGTERM, which end holding a lock or a leadership the orderly way.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::failure::Failure;

/// The signals the tool reacts to, registered once at start so that none is missed.
#[derive(Debug)]
pub(crate) struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Registers SIGINT and SIGTERM handlers (replacing the default of dying at once).
    pub(crate) fn new() -> Result<Self, Failure> {
        let register = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::error(format!("cannot install a signal handler: {e}")))
        };
        Ok(Signals { int: register(SignalKind::interrupt())?, term: register(SignalKind::terminate())? })
    }

    /// The next SIGINT or SIGTERM, as its number. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.int.recv() => libc::SIGINT,
            Some(()) = self.term.recv() => libc::SIGTERM,
            else => std::future::pending().await,
        }
    }
}

/// The signal's name, for messages.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}
