//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while finding, installing or running etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ETCD_VERSION` (or a string given to [`EtcdVersion::parse`](crate::EtcdVersion::parse))
    /// names a version this harness does not know.
    #[error("unknown etcd version {value:?}; supported: 3.5 / 3.5.1 (default) and 3.4 / 3.4.23")]
    UnknownVersion {
        /// The rejected value.
        value: String,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A binary reported a different version than the one asked for.
    #[error("{path} reports version {found:?}, expected {expected}")]
    VersionMismatch {
        /// The binary that was checked.
        path: PathBuf,
        /// The version that was asked for.
        expected: String,
        /// What `etcd --version` printed (or "unknown").
        found: String,
    },

    /// Installing etcd failed; the message says what to install by hand.
    #[error("{message}")]
    Install {
        /// A human-readable explanation including the manual fallback.
        message: String,
    },

    /// A configuration value is invalid (for example zero members).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A member index is out of range.
    #[error("no member {index}: the cluster has {len} members")]
    NoSuchMember {
        /// The index asked for.
        index: usize,
        /// The number of members.
        len: usize,
    },

    /// An etcd member could not be started or exited while the harness waited for it.
    #[error("etcd member {member} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")]
    StartFailed {
        /// The member's name (`m0`, `m1`, ...).
        member: String,
        /// What went wrong.
        reason: String,
        /// The last lines of the member's `etcd.log`.
        log_tail: String,
    },

    /// Waiting for something (health, a leader, a shutdown) took too long.
    #[error("timed out after {timeout:?} waiting for {what}\n--- last lines of the log ---\n{log_tail}")]
    Timeout {
        /// What the harness waited for.
        what: String,
        /// How long it waited.
        timeout: Duration,
        /// The last lines of the relevant member's log (empty when not applicable).
        log_tail: String,
    },

    /// An external command (for example `etcdctl`) exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The tail of its standard error.
        stderr: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// Extension to attach context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`], computing the context lazily.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

/// The last `max_lines` lines of `text`, for error messages.
pub(crate) fn tail_lines(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}
