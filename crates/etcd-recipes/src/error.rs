//! The recipes' one error type.

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock is held by another session (`try_lock`). The words match Go's `ErrLocked`.
    #[error("mutex: Locked by another session")]
    Locked,
    /// The session's lease expired or was revoked: nothing bound to it can be trusted any more.
    #[error("session is expired")]
    SessionExpired,
    /// The caller does not hold (or no longer holds) the lock or leadership it acted on.
    #[error("not the owner: {0}")]
    NotOwner(String),
    /// A key in the lock's place (at its name, or under its prefix) was not written by any lock
    /// session: it has no lease, so nobody will ever release it. Remove it, or choose another name.
    #[error("{key:?} blocks the lock but is not a lock key (it has no lease, so no session will release it)")]
    ForeignKey {
        /// The blocking key.
        key: String,
    },
    /// The election has no leader.
    #[error("election: no leader")]
    NoLeader,
    /// A transaction (STM) kept conflicting and gave up after its retries.
    #[error("transaction conflicted {attempts} times; giving up")]
    TooManyConflicts {
        /// How many times it was tried.
        attempts: u32,
    },
    /// A barrier or queue wait could not continue (e.g. too many participants).
    #[error("{0}")]
    Recipe(String),
    /// The request was rejected before any RPC: empty name, TTL ≤ 0, ...
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The lock or leadership can no longer be trusted; from [`LockGuard::while_held`](crate::LockGuard::while_held).
    #[error("lock lost: {0}")]
    LockLost(crate::Lost),
    /// A lock could not be resumed from its [`ResumeToken`](crate::ResumeToken): it is no longer
    /// the token's, for the reason given.
    #[error("cannot resume the lock: {0}")]
    NotResumable(crate::Unresumable),
    /// The text is not a [`ResumeToken`](crate::ResumeToken), or its parts are out of range.
    #[error("invalid resume token: {0}")]
    InvalidResumeToken(String),
    /// An error from etcd or the transport. A lease the recipe relies on being gone is never
    /// reported here: it is [`Error::SessionExpired`].
    #[error(transparent)]
    Etcd(etcd_wire::Error),
}

impl From<etcd_wire::Error> for Error {
    /// A lease not found means the session (or the lock's own lease) is over: every recipe reports
    /// that as [`Error::SessionExpired`], whichever call noticed it.
    fn from(e: etcd_wire::Error) -> Self {
        match e {
            etcd_wire::Error::LeaseNotFound { .. } => Error::SessionExpired,
            e => Error::Etcd(e),
        }
    }
}

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }
}
