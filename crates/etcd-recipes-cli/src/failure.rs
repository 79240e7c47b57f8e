//! Exit codes, and errors as one line that says what went wrong and what to do about it.

use std::fmt;

use crate::cli::{GlobalArgs, dial_timeout_text};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Any error: unreachable endpoint, authentication failure, bad flag, ...
pub const EXIT_ERROR: u8 = 1;
/// The lock is held by another session (`--try`, or `--timeout` passed).
pub const EXIT_LOCKED: u8 = 2;
/// The session or the lock was lost while held.
pub const EXIT_LOST: u8 = 3;
/// A command that could not be executed (found but not runnable), as shells report it.
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// A command that could not be found, as shells report it.
pub const EXIT_NOT_FOUND: u8 = 127;

/// The exit code of a process ended by `signal` (128 + the signal number, as shells report it).
pub fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(255)
}

/// Why the tool stops with a non-zero exit code, and the one line it prints on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The message, without the `etcd-recipes: ` prefix; `None` prints nothing.
    pub message: Option<String>,
}

impl Failure {
    /// An error (exit code 1) with this message.
    pub fn error(message: impl Into<String>) -> Self {
        Failure::with_code(EXIT_ERROR, message)
    }

    /// A failure with `code` and this message.
    pub fn with_code(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: Some(one_line(&message.into())) }
    }

    /// A silent exit with `code` (the reason was already printed, or the code says it all).
    pub fn silent(code: u8) -> Self {
        Failure { code, message: None }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "etcd-recipes: {m}"),
            None => write!(f, "etcd-recipes: exit {}", self.code),
        }
    }
}

/// Joins the lines of a multi-line message with "; ".
pub(crate) fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Turns a recipe error into a message with advice, given what the tool was doing (`doing`, e.g.
/// `acquiring lock "jobs"`) and the flags it was started with.
pub(crate) fn explain(err: &etcd_recipes::Error, doing: &str, g: &GlobalArgs) -> Failure {
    match err {
        etcd_recipes::Error::Etcd(e) => explain_wire(e, doing, g),
        etcd_recipes::Error::SessionExpired => Failure::with_code(
            EXIT_LOST,
            format!(
                "session lost while {doing}: its lease expired or was revoked. Check that etcd is reachable and healthy, or raise --ttl"
            ),
        ),
        etcd_recipes::Error::Locked => Failure::with_code(EXIT_LOCKED, format!("{doing}: locked by another session")),
        other => Failure::error(format!("{doing}: {other}")),
    }
}

/// [`explain`] for errors from the client.
pub(crate) fn explain_wire(err: &etcd_wire::Error, doing: &str, g: &GlobalArgs) -> Failure {
    use etcd_wire::Error as E;
    let endpoints = g.endpoints.join(",");
    let user = g.user.as_deref().map(|u| u.split_once(':').map_or(u, |(name, _)| name)).unwrap_or_default();
    let tls_hint = if g.cacert.is_some() || g.cert.is_some() || endpoints.contains("https://") {
        " and --cacert/--cert/--key"
    } else {
        ""
    };
    let message = match err {
        E::Connect { reason, .. } => format!(
            "cannot connect to {endpoints} within {}: {reason}. Is etcd running there? Check --endpoints{tls_hint}, or raise --dial-timeout",
            dial_timeout_text(g)
        ),
        E::InvalidEndpoint { endpoint, reason } => {
            format!(
                "bad endpoint {endpoint:?} in --endpoints: {reason}. Use host:port, http://host:port or https://host:port"
            )
        }
        E::Tls { reason } if reason.contains("no native certs") => "TLS setup failed: without --cacert TLS trusts the \
            system's roots, and the system has no CA certificates (install its CA bundle or set SSL_CERT_FILE); pass \
            the servers' CA with --cacert"
            .to_owned(),
        E::Tls { reason } => format!("TLS setup failed: {reason}. Check the files given to --cacert, --cert and --key"),
        E::AuthFailed { .. } => format!("authentication failed for user {user:?}: check --user/--password"),
        E::InvalidAuthToken { .. } => {
            format!("etcd rejected the auth token of user {user:?} while {doing}: check --user/--password")
        }
        E::WatchCanceled { reason } if reason.contains("permission denied") && user.is_empty() => format!(
            "permission denied while {doing}: etcd has authentication enabled; pass --user NAME --password PASSWORD"
        ),
        E::WatchCanceled { reason } if reason.contains("permission denied") => format!(
            "permission denied for user {user:?} while {doing}: grant the user's role read on the election keys (etcdctl role grant-permission --prefix)"
        ),
        E::PermissionDenied { .. } if user.is_empty() => format!(
            "permission denied while {doing}: etcd has authentication enabled; pass --user NAME --password PASSWORD"
        ),
        E::PermissionDenied { .. } => format!(
            "permission denied for user {user:?} while {doing}: grant the user's role read/write on the lock or election keys (etcdctl role grant-permission --prefix)"
        ),
        E::AuthRequired { .. } => {
            format!("etcd has authentication enabled ({doing} was refused): pass --user NAME --password PASSWORD")
        }
        E::Server { status } if status.message().contains("Timeout expired") => format!(
            "etcd at {endpoints} did not answer while {doing}: {err}. Check the cluster's health (etcdctl endpoint health)"
        ),
        E::Unavailable { .. } | E::Timeout { .. } | E::NoLeader { .. } if !tls_hint.is_empty() => format!(
            "etcd at {endpoints} could not serve the request while {doing}: {err}. Check the cluster's health, and --cacert/--cert/--key (does the server require a client certificate?)"
        ),
        E::Unavailable { .. } | E::Timeout { .. } | E::NoLeader { .. } => format!(
            "etcd at {endpoints} could not serve the request while {doing}: {err}. Check the cluster's health (etcdctl endpoint health)"
        ),
        other => format!("{doing}: {other}"),
    };
    Failure::error(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let f = Failure::error("first\n  second\n\nthird");
        assert_eq!(f.to_string(), "etcd-recipes: first; second; third");
        assert_eq!(signal_exit_code(libc::SIGINT), 130);
        assert_eq!(signal_exit_code(libc::SIGTERM), 143);
    }
}
