//! The crate's one error type.
//!
//! Every server answer that is not a success becomes an [`Error`] a caller can match on; the
//! server's status (code and message, as a [`ServerStatus`]) stays reachable as the error's
//! `source()` and through [`Error::status`]. Client-side validation fails with
//! [`Error::InvalidArgument`] before any RPC is sent.

use std::time::Duration;

use tonic::{Code, Status};

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was rejected on the client, before any RPC: empty key, TTL ≤ 0, ...
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong with the argument.
        reason: String,
    },
    /// An endpoint could not be parsed or used.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No endpoint could be connected to within the connect timeout. `reason` holds each
    /// endpoint's failure, with the full cause chain (refused, TLS certificate rejected, ...),
    /// and the TLS alert an `https` server answered, when the failed attempt could not read it.
    #[error("could not connect to {endpoints:?}: {reason}")]
    Connect {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// Why each failed.
        reason: String,
    },
    /// TLS settings could not be applied (bad PEM, ...).
    #[error("TLS configuration: {reason}")]
    Tls {
        /// What failed.
        reason: String,
    },
    /// No member could be reached, or the member answered `Unavailable`.
    #[error("etcd unavailable: {}", .status.message())]
    Unavailable {
        /// The status the transport or the server reported.
        #[source]
        status: ServerStatus,
    },
    /// The request did not finish within the configured request timeout.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// The requested revision has been compacted away.
    #[error("required revision has been compacted{}", .compact_revision.map(|r| format!(" (compacted at {r})")).unwrap_or_default())]
    Compacted {
        /// The compaction revision, when the server said it (watch responses do; Range does not).
        compact_revision: Option<i64>,
        /// The server's status, when the error came as one.
        #[source]
        status: Option<ServerStatus>,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision is a future revision")]
    FutureRevision {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The lease does not exist (never granted, expired or revoked).
    #[error("requested lease not found")]
    LeaseNotFound {
        /// The server's status, when the error came as one.
        #[source]
        status: Option<ServerStatus>,
    },
    /// A transaction has more operations than the server's `--max-txn-ops`.
    #[error("too many operations in txn request")]
    TooManyTxnOps {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The request exceeds the server's `--max-request-bytes`.
    #[error("request is too large")]
    RequestTooLarge {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// Wrong user name or password.
    #[error("authentication failed: invalid user name or password")]
    AuthFailed {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The auth token is invalid or expired, and could not be refreshed.
    #[error("invalid auth token")]
    InvalidAuthToken {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// Auth is enabled and the request carried no token: connect with
    /// [`ClientOptions::with_user`](crate::ClientOptions::with_user). (A client that has
    /// credentials authenticates again by itself and never sees this.)
    #[error("authentication is enabled on the server and the request carried no user (connect with credentials)")]
    AuthRequired {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The token was issued before a user, role or permission change and authenticating again
    /// did not help. (A client with credentials renews such a token by itself.)
    #[error("the auth store changed after the token was issued")]
    AuthRevisionOld {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// An auth call that needs auth to be enabled (authenticate, ...) while it is off.
    #[error("authentication is not enabled")]
    AuthNotEnabled {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The user lacks permission for this request.
    #[error("permission denied")]
    PermissionDenied {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The member has no leader (and `require_leader` was set, or the request needs one).
    #[error("etcd member has no leader")]
    NoLeader {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// A lock or election key does not exist (the server-side Lock/Election services).
    #[error("key not found")]
    KeyNotFound {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The election has no leader, or the caller is not the leader it claims to be.
    #[error("election: {reason}")]
    NotLeader {
        /// The server's words.
        reason: String,
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The server does not implement the call: an RPC newer than the server (gRPC code
    /// `Unimplemented`). `RangeStream` ([`Client::get_stream`](crate::Client::get_stream)) needs
    /// etcd 3.7; `Downgrade` ([`Client::downgrade`](crate::Client::downgrade)) and `AuthStatus`
    /// need 3.5. An older server answers them with this, and nothing was done.
    #[error("not supported by this etcd server: {what}")]
    Unsupported {
        /// What the server does not know: gRPC's full method name, such as
        /// `etcdserverpb.KV/RangeStream`, when its answer names one; else its words.
        what: String,
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// A downgrade to a version the cluster cannot go to: etcd allows exactly one minor version
    /// below the cluster version (3.4 for a 3.5 cluster), and refuses any other, or a version it
    /// cannot read.
    #[error("etcd refused the downgrade target: {}", .status.message().trim_start_matches("etcdserver: "))]
    InvalidDowngradeTarget {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// A downgrade is already in progress (enabled and not cancelled): validating or enabling
    /// another is refused.
    #[error("the cluster has a downgrade in progress")]
    DowngradeInProgress {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// There is no downgrade in progress to cancel.
    #[error("no downgrade in progress")]
    NoDowngradeInProgress {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
    /// The server canceled a watch for a reason other than compaction.
    #[error("watch canceled by the server: {reason}")]
    WatchCanceled {
        /// The cancel reason the server sent.
        reason: String,
    },
    /// Any other status from the server.
    #[error("etcd: {}", .status.message().trim_start_matches("etcdserver: "))]
    Server {
        /// The server's status.
        #[source]
        status: ServerStatus,
    },
}

impl Error {
    /// The variant's name, for metrics labels.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn variant(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::InvalidEndpoint { .. } => "InvalidEndpoint",
            Error::Connect { .. } => "Connect",
            Error::Tls { .. } => "Tls",
            Error::Unavailable { .. } => "Unavailable",
            Error::Timeout { .. } => "Timeout",
            Error::Compacted { .. } => "Compacted",
            Error::FutureRevision { .. } => "FutureRevision",
            Error::LeaseNotFound { .. } => "LeaseNotFound",
            Error::TooManyTxnOps { .. } => "TooManyTxnOps",
            Error::RequestTooLarge { .. } => "RequestTooLarge",
            Error::AuthFailed { .. } => "AuthFailed",
            Error::InvalidAuthToken { .. } => "InvalidAuthToken",
            Error::AuthRequired { .. } => "AuthRequired",
            Error::AuthRevisionOld { .. } => "AuthRevisionOld",
            Error::AuthNotEnabled { .. } => "AuthNotEnabled",
            Error::PermissionDenied { .. } => "PermissionDenied",
            Error::NoLeader { .. } => "NoLeader",
            Error::KeyNotFound { .. } => "KeyNotFound",
            Error::NotLeader { .. } => "NotLeader",
            Error::Unsupported { .. } => "Unsupported",
            Error::InvalidDowngradeTarget { .. } => "InvalidDowngradeTarget",
            Error::DowngradeInProgress { .. } => "DowngradeInProgress",
            Error::NoDowngradeInProgress { .. } => "NoDowngradeInProgress",
            Error::WatchCanceled { .. } => "WatchCanceled",
            Error::Server { .. } => "Server",
        }
    }

    /// An [`Error::InvalidArgument`] with this reason.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument { reason: reason.into() }
    }

    /// The server's status behind this error (its gRPC code and message), if there is one.
    /// Match on the [`Error`] variants for what happened; this says what was sent.
    pub fn status(&self) -> Option<&ServerStatus> {
        match self {
            Error::Unavailable { status }
            | Error::FutureRevision { status }
            | Error::TooManyTxnOps { status }
            | Error::RequestTooLarge { status }
            | Error::AuthFailed { status }
            | Error::InvalidAuthToken { status }
            | Error::AuthRequired { status }
            | Error::AuthRevisionOld { status }
            | Error::AuthNotEnabled { status }
            | Error::PermissionDenied { status }
            | Error::NoLeader { status }
            | Error::KeyNotFound { status }
            | Error::NotLeader { status, .. }
            | Error::Unsupported { status, .. }
            | Error::InvalidDowngradeTarget { status }
            | Error::DowngradeInProgress { status }
            | Error::NoDowngradeInProgress { status }
            | Error::Server { status } => Some(status),
            Error::Compacted { status, .. } | Error::LeaseNotFound { status } => status.as_ref(),
            _ => None,
        }
    }

    /// Whether this is a transport-level failure or a server that could not serve the request now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::NoLeader { .. } | Error::Connect { .. })
    }

    /// Whether the request may have been applied although this error came back: it left the client
    /// and no answer arrived ([`Timeout`](Error::Timeout), a connection lost mid-call, a member
    /// that went away, etcd's own "request timed out"). For a write (put, delete, a Txn that
    /// writes, a lease grant or revoke) the outcome is unknown: the client never retries it, and
    /// the caller must read before trying again (or make the write idempotent, e.g. a Txn that
    /// compares first). `false` when the request provably never reached a server, or a server
    /// answered with an error of its own.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Unavailable { status } => !never_sent(&status.0),
            _ => false,
        }
    }
}

/// The gRPC status a server (or the transport) answered with: its [`code`](Self::code) and
/// [`message`](Self::message). Its `source()` is the transport's error, when the connection
/// failed. Opaque, so that this crate's semver does not follow tonic's: tonic's own type is
/// reachable only through the explicitly unstable [`tonic_status_unstable`](Self::tonic_status_unstable).
#[derive(Debug)]
pub struct ServerStatus(Box<Status>);

impl ServerStatus {
    /// The gRPC status code.
    pub fn code(&self) -> GrpcCode {
        GrpcCode::from(self.0.code())
    }

    /// The status message, as the server (or the transport) wrote it.
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// tonic's `Status`, with its metadata and details. **Unstable**: the type is tonic's, so it
    /// changes with this crate's tonic version, and a minor release of this crate may change it
    /// or remove this method. For logging and debugging, not for matching.
    pub fn tonic_status_unstable(&self) -> &Status {
        &self.0
    }
}

impl From<Status> for ServerStatus {
    fn from(status: Status) -> Self {
        ServerStatus(Box::new(status))
    }
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ServerStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// A gRPC status code (the numbering every gRPC implementation shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 0: not an error.
    Ok,
    /// 1: the operation was cancelled (by the caller, or a deadline on the client).
    Cancelled,
    /// 2: unknown error.
    Unknown,
    /// 3: the client sent an invalid argument.
    InvalidArgument,
    /// 4: the deadline expired before the operation finished.
    DeadlineExceeded,
    /// 5: something requested was not found.
    NotFound,
    /// 6: something the client tried to create already exists.
    AlreadyExists,
    /// 7: the caller lacks permission.
    PermissionDenied,
    /// 8: a resource (quota, message size, ...) is exhausted.
    ResourceExhausted,
    /// 9: the system is not in a state the operation needs.
    FailedPrecondition,
    /// 10: the operation was aborted (a concurrency conflict, ...).
    Aborted,
    /// 11: the operation went past the valid range.
    OutOfRange,
    /// 12: the server does not implement the operation.
    Unimplemented,
    /// 13: an internal error.
    Internal,
    /// 14: the service is unavailable (usually transient).
    Unavailable,
    /// 15: unrecoverable data loss.
    DataLoss,
    /// 16: the request lacks valid authentication.
    Unauthenticated,
}

impl From<Code> for GrpcCode {
    fn from(code: Code) -> Self {
        match code {
            Code::Ok => GrpcCode::Ok,
            Code::Cancelled => GrpcCode::Cancelled,
            Code::Unknown => GrpcCode::Unknown,
            Code::InvalidArgument => GrpcCode::InvalidArgument,
            Code::DeadlineExceeded => GrpcCode::DeadlineExceeded,
            Code::NotFound => GrpcCode::NotFound,
            Code::AlreadyExists => GrpcCode::AlreadyExists,
            Code::PermissionDenied => GrpcCode::PermissionDenied,
            Code::ResourceExhausted => GrpcCode::ResourceExhausted,
            Code::FailedPrecondition => GrpcCode::FailedPrecondition,
            Code::Aborted => GrpcCode::Aborted,
            Code::OutOfRange => GrpcCode::OutOfRange,
            Code::Unimplemented => GrpcCode::Unimplemented,
            Code::Internal => GrpcCode::Internal,
            Code::Unavailable => GrpcCode::Unavailable,
            Code::DataLoss => GrpcCode::DataLoss,
            Code::Unauthenticated => GrpcCode::Unauthenticated,
        }
    }
}

impl From<Status> for Error {
    /// Maps a server status to the matching variant, by etcd's error strings (`rpctypes`).
    fn from(status: Status) -> Self {
        // A failure of the connection itself (TLS refused, reset) comes with a transport error as
        // its source and a code that says little; report it as Unavailable, with the whole cause.
        let transport = std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>());
        if transport && status.code() != Code::Unavailable {
            let cause = match std::error::Error::source(&status) {
                Some(source) => format!("{}: {}", status.message(), chain(source)),
                None => status.message().to_owned(),
            };
            return Error::Unavailable { status: Status::unavailable(cause).into() };
        }
        if status.code() == Code::Unimplemented {
            let what = unimplemented_what(status.message());
            return Error::Unsupported { what, status: status.into() };
        }
        let msg = status.message().to_owned();
        let has = |s: &str| msg.contains(s);
        let status = ServerStatus::from(status);
        if has("required revision has been compacted") {
            Error::Compacted { compact_revision: None, status: Some(status) }
        } else if has("required revision is a future revision") {
            Error::FutureRevision { status }
        } else if has("requested lease not found") {
            Error::LeaseNotFound { status: Some(status) }
        } else if has("too many operations in txn request") {
            Error::TooManyTxnOps { status }
        } else if has("request is too large") || status.0.code() == Code::ResourceExhausted && has("message larger") {
            Error::RequestTooLarge { status }
        } else if has("authentication failed") {
            Error::AuthFailed { status }
        } else if has("invalid auth token") {
            Error::InvalidAuthToken { status }
        } else if has("user name is empty") {
            Error::AuthRequired { status }
        } else if has("revision of auth store is old") || has("revision in header is old") {
            Error::AuthRevisionOld { status }
        } else if has("authentication is not enabled") {
            Error::AuthNotEnabled { status }
        } else if has("permission denied") {
            Error::PermissionDenied { status }
        } else if has("no leader") && !has("election") {
            Error::NoLeader { status }
        } else if has("key not found") {
            Error::KeyNotFound { status }
        } else if has("election: not leader") || has("election: no leader") {
            let reason = msg.trim_start_matches("election: ").to_owned();
            Error::NotLeader { reason, status }
        } else if has("invalid downgrade target version") || has("wrong downgrade target version format") {
            Error::InvalidDowngradeTarget { status }
        } else if has("cluster has a downgrade job in progress") {
            Error::DowngradeInProgress { status }
        } else if has("no inflight downgrade job") {
            Error::NoDowngradeInProgress { status }
        } else if status.0.code() == Code::Unavailable {
            Error::Unavailable { status }
        } else {
            Error::Server { status }
        }
    }
}

/// What an `Unimplemented` answer says the server lacks: grpc-go answers "unknown method M for
/// service S" (→ `S/M`) or "unknown service S" (→ `S`); anything else is kept as it is.
fn unimplemented_what(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown method ")
        && let Some((method, service)) = rest.split_once(" for service ")
    {
        return format!("{service}/{method}");
    }
    match message.strip_prefix("unknown service ") {
        Some(service) => service.to_owned(),
        None => message.to_owned(),
    }
}

/// Whether a status from the transport proves the request never reached a server: the connection
/// could not be established (refused, unreachable, connect timeout). Only then may a write be
/// retried without risking that it is applied twice.
pub(crate) fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut texts = vec![status.message().to_ascii_lowercase()];
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NotFound | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        texts.push(err.to_string().to_ascii_lowercase());
        source = err.source();
    }
    texts.iter().any(|t| t.contains("tcp connect error") || t.contains("error trying to connect"))
}

/// An error and all its sources, joined: transport errors say little at the top.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_etcd_error_strings() {
        let cases = [
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted", "Compacted"),
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision", "FutureRevision"),
            (Code::NotFound, "etcdserver: requested lease not found", "LeaseNotFound"),
            (Code::InvalidArgument, "etcdserver: too many operations in txn request", "TooManyTxnOps"),
            (Code::InvalidArgument, "etcdserver: request is too large", "RequestTooLarge"),
            (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password", "AuthFailed"),
            (Code::Unauthenticated, "etcdserver: invalid auth token", "InvalidAuthToken"),
            (Code::Unknown, "invalid auth token", "InvalidAuthToken"),
            (Code::PermissionDenied, "etcdserver: permission denied", "PermissionDenied"),
            (Code::InvalidArgument, "etcdserver: user name is empty", "AuthRequired"),
            (Code::InvalidArgument, "etcdserver: revision of auth store is old", "AuthRevisionOld"),
            (Code::Unknown, "auth: revision in header is old", "AuthRevisionOld"),
            (Code::FailedPrecondition, "etcdserver: authentication is not enabled", "AuthNotEnabled"),
            (Code::Unavailable, "etcdserver: no leader", "NoLeader"),
            (Code::InvalidArgument, "etcdserver: key not found", "KeyNotFound"),
            (Code::Unknown, "election: not leader", "NotLeader"),
            (Code::Unimplemented, "unknown method RangeStream for service etcdserverpb.KV", "Unsupported"),
            (Code::InvalidArgument, "etcdserver: invalid downgrade target version", "InvalidDowngradeTarget"),
            (Code::InvalidArgument, "etcdserver: wrong downgrade target version format", "InvalidDowngradeTarget"),
            (Code::FailedPrecondition, "etcdserver: cluster has a downgrade job in progress", "DowngradeInProgress"),
            (Code::FailedPrecondition, "etcdserver: no inflight downgrade job", "NoDowngradeInProgress"),
            (Code::Unavailable, "transport error", "Unavailable"),
            (Code::Internal, "something else", "Server"),
        ];
        for (code, msg, want) in cases {
            let err = Error::from(Status::new(code, msg));
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{msg:?} mapped to {got}");
            assert_eq!(err.variant(), want, "the metrics label names the variant");
            assert!(err.status().is_some(), "{want} keeps its status");
        }
    }

    #[test]
    fn errors_carry_our_status_not_tonics() {
        let err = Error::from(Status::permission_denied("etcdserver: permission denied"));
        let status = err.status().expect("a status");
        assert_eq!((status.code(), status.message()), (GrpcCode::PermissionDenied, "etcdserver: permission denied"));
        assert_eq!(status.tonic_status_unstable().code(), Code::PermissionDenied);
        let source = std::error::Error::source(&err).expect("the status is the source");
        assert!(source.is::<ServerStatus>(), "{source:?}");
        for code in [Code::Ok, Code::Cancelled, Code::DataLoss, Code::Unauthenticated] {
            assert_eq!(GrpcCode::from(code) as i32, code as i32, "{code:?} keeps gRPC's number");
        }
    }

    #[test]
    fn other_server_errors_say_etcd_once() {
        let err = Error::from(Status::internal("etcdserver: something new"));
        assert_eq!(err.to_string(), "etcd: something new");
    }

    #[test]
    fn unimplemented_names_what_the_server_lacks() {
        let what = |msg: &str| match Error::from(Status::unimplemented(msg)) {
            Error::Unsupported { what, .. } => what,
            other => panic!("{msg:?} mapped to {other:?}"),
        };
        assert_eq!(what("unknown method RangeStream for service etcdserverpb.KV"), "etcdserverpb.KV/RangeStream");
        assert_eq!(what("unknown service v3lockpb.Lock"), "v3lockpb.Lock");
        assert_eq!(what("something else"), "something else");
        let err = Error::from(Status::unimplemented("unknown method Downgrade for service etcdserverpb.Maintenance"));
        assert_eq!(err.to_string(), "not supported by this etcd server: etcdserverpb.Maintenance/Downgrade");
        assert!(!err.is_unavailable() && !err.is_indeterminate(), "nothing was done");
    }

    #[test]
    fn only_connect_failures_count_as_never_sent() {
        assert!(never_sent(&Status::unavailable("tcp connect error: Connection refused (os error 111)")));
        assert!(!never_sent(&Status::unavailable("connection reset by peer")));
        assert!(!never_sent(&Status::internal("tcp connect error")));
    }
}
