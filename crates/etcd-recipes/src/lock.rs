//! One trait for every lock strategy, and the guard they all hand out.
//!
//! Each strategy holds its lock as one etcd key, so a held lock is always described the same way:
//! the key and its create revision. The create revision is the **fencing token**: it grows with
//! every acquisition, and [`LockGuard::txn`] turns it into a compare, so a write made by a holder
//! that has lost the lock (paused past its TTL, partitioned) is refused by etcd instead of landing.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Instant;

use bytes::Bytes;
use etcd_wire::{Compare, KeepAlive, Txn};
use futures::future::BoxFuture;

use crate::cleanup::Cleanup;
use crate::error::{Error, Result};
use crate::held::{Held, Lost};
use crate::resume::ResumeToken;
use crate::session::Session;
use crate::trace::{OpStats, OpTrace, Tracer};

/// The lock strategies, for choosing one at run time (benches, CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// [`Mutex`](crate::Mutex): revision-ordered queue, each waiter watches the (at most two) keys just ahead of it.
    Mutex,
    /// [`NaiveLock`](crate::NaiveLock): one key; every waiter watches it and retries (the herd).
    Naive,
    /// [`LeaseTtlLock`](crate::LeaseTtlLock): one key on a lease of its own per acquisition.
    LeaseTtl,
    /// [`RpcLock`](crate::RpcLock): etcd's server-side `Lock` RPC (v3lock).
    Rpc,
    /// [`Semaphore`](crate::Semaphore) with one permit: the first waiter watches the holder, the
    /// others their predecessor, and each new holder marks its key for the next.
    Semaphore,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 5] =
        [Strategy::Mutex, Strategy::Naive, Strategy::LeaseTtl, Strategy::Rpc, Strategy::Semaphore];

    /// The short name used on command lines and in bench ids: `mutex`, `naive`, `lease`, `rpc`,
    /// `semaphore`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Mutex => "mutex",
            Strategy::Naive => "naive",
            Strategy::LeaseTtl => "lease",
            Strategy::Rpc => "rpc",
            Strategy::Semaphore => "semaphore",
        }
    }

    /// A lock of this strategy on `name`, bound to `session` (the lease TTL lock uses the
    /// session's client and TTL, with a lease of its own per acquisition).
    pub fn new_lock(self, session: &Session, name: &str) -> Result<Box<dyn DistributedLock>> {
        self.new_traced_lock(session, name, Tracer::default())
    }

    /// [`new_lock`](Self::new_lock), reporting every step to `tracer`.
    pub fn new_traced_lock(self, session: &Session, name: &str, tracer: Tracer) -> Result<Box<dyn DistributedLock>> {
        Ok(match self {
            Strategy::Mutex => Box::new(crate::Mutex::new(session, name)?.with_tracer(tracer)),
            Strategy::Naive => Box::new(crate::NaiveLock::new(session, name)?.with_tracer(tracer)),
            Strategy::LeaseTtl => Box::new(crate::LeaseTtlLock::new(session, name)?.with_tracer(tracer)),
            Strategy::Rpc => Box::new(crate::RpcLock::new(session, name)?.with_tracer(tracer)),
            Strategy::Semaphore => Box::new(crate::Semaphore::new(session, name, 1)?.with_tracer(tracer)),
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Strategy::ALL.into_iter().find(|st| st.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            Error::invalid(format!("unknown lock strategy {s:?}; expected mutex, naive, lease, rpc or semaphore"))
        })
    }
}

/// A distributed lock: the operations every strategy offers.
pub trait DistributedLock: Send + Sync + fmt::Debug {
    /// Which strategy this is.
    fn strategy(&self) -> Strategy;
    /// Waits until the lock is held. Dropping the future before it resolves withdraws from the
    /// queue (no key is left behind).
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>>;
    /// Takes the lock if it is free, or fails at once with [`Error::Locked`] (leaving no key).
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>>;
}

/// A held lock: the proof of ownership every strategy hands out.
///
/// - It owns its [`Session`], so the lease stays alive while the guard lives, even if every other
///   handle was dropped.
/// - [`txn`](Self::txn) and [`fencing_token`](Self::fencing_token) keep a holder that lost the lock
///   from writing; [`valid_until`](Self::valid_until), [`lost`](Self::lost) and
///   [`while_held`](Self::while_held) tell how long it can be trusted.
/// - [`unlock`](Self::unlock) releases it. Dropping the guard releases it too, in the background
///   (needs a Tokio runtime), so a panicking holder does not keep it until its lease expires; the
///   same session's next `lock()` on the name waits for that release. A cancelled `unlock()` still
///   releases, the same way.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    held: Held,
    release: Cleanup,
    stats: OpStats,
    recipe: &'static str,
    /// The lease TTL lock keeps its own lease alive for as long as the guard lives.
    _keep_alive: Option<KeepAlive>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("recipe", &self.recipe)
            .field("key", &String::from_utf8_lossy(&self.held.key))
            .field("fencing_token", &self.held.revision)
            .field("lease", &format_args!("{:x}", self.held.lease_id()))
            .finish()
    }
}

impl LockGuard {
    /// The one way a guard is made: `held` is the key and revision just seen at the front, and
    /// `release` (armed, holding the session slot) gives it back.
    pub(crate) fn new(held: Held, release: Cleanup, op: &OpTrace, keep_alive: Option<KeepAlive>) -> Self {
        op.note(|| format!("acquired with fencing token {}", held.revision));
        let held = held.started();
        let release = release.traced(op.tracer(), op.recipe()).holding(held.since());
        let stats = op.finish();
        crate::observe::acquired(op.recipe(), stats.elapsed);
        LockGuard { held, release, stats, recipe: op.recipe(), _keep_alive: keep_alive }
    }

    /// The lock key (without the client's namespace).
    pub fn key(&self) -> &Bytes {
        &self.held.key
    }

    /// The lock key's create revision: unique per acquisition and increasing, for fencing writes
    /// in other systems too (pass it along; refuse anything carrying a smaller one).
    pub fn fencing_token(&self) -> i64 {
        self.held.revision
    }

    /// The lease the lock key is bound to.
    pub fn lease_id(&self) -> i64 {
        self.held.lease_id()
    }

    /// What a restarted process needs to take this lock back without waiting in line (lease, key,
    /// fencing token): persist its text form, then [`Session::resume`] and
    /// [`Mutex::resume`](crate::Mutex::resume).
    pub fn resume_token(&self) -> ResumeToken {
        ResumeToken::of(&self.held)
    }

    /// The session the lock was taken with (the guard keeps it alive).
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// RPCs, watches and watch events the acquisition took, and how long it waited.
    pub fn stats(&self) -> OpStats {
        self.stats
    }

    /// A compare that holds exactly while this guard's lock is held, for the caller's own Txns.
    pub fn is_owner(&self) -> Compare {
        self.held.is_owner()
    }

    /// A Txn that already carries [`is_owner`](Self::is_owner): its `and_then` ops apply only
    /// while the lock is held, so a write from a holder that lost the lock never lands.
    pub fn txn(&self) -> Txn {
        self.held.txn()
    }

    /// The instant (monotonic clock) before which the lock is provably still ours, unless somebody
    /// deletes its key: the send time of the lease's latest answered keep-alive, plus the TTL it
    /// granted, minus the session's [safety margin](crate::SessionBuilder::safety_margin). Work
    /// that must not outlive the lock should finish before it (or use [`while_held`](Self::while_held)).
    /// `None` once the lease is known lost.
    pub fn valid_until(&self) -> Option<Instant> {
        self.held.valid_until()
    }

    /// Resolves when the lock can no longer be trusted: its lease ended, its key was deleted, or
    /// [`valid_until`](Self::valid_until) passed with no fresher keep-alive answer. Cancel-safe;
    /// opens one watch on the key while it waits.
    pub async fn lost(&self) -> Lost {
        self.held.lost_for(self.recipe).await
    }

    /// Runs `work` only while the lock is held: cancels it (drops the future) the moment
    /// [`lost`](Self::lost) fires, and fails with [`Error::LockLost`]. Writes to etcd inside should
    /// still go through [`txn`](Self::txn): cancelling a future cannot recall a request in flight.
    pub async fn while_held<F: Future>(&self, work: F) -> Result<F::Output> {
        self.held.while_held(self.recipe, work).await
    }

    /// Releases the lock. Fails with [`Error::NotOwner`] when the lock was already gone (the
    /// session expired, or the key was deleted), in which case nothing is deleted. If this future
    /// is dropped before it finishes, the release still happens in the background.
    pub async fn unlock(self) -> Result<()> {
        let LockGuard { held, release, recipe, .. } = self;
        if release.release("unlock").await? {
            return Ok(());
        }
        held.count_loss(recipe, None);
        Err(Error::NotOwner(format!(
            "{recipe} lock key {} (revision {}) was already gone",
            String::from_utf8_lossy(&held.key),
            held.revision
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_their_names_and_nothing_else() {
        for st in Strategy::ALL {
            assert_eq!(st.name().parse::<Strategy>().ok(), Some(st));
            assert_eq!(format!(" {} ", st.name().to_uppercase()).parse::<Strategy>().ok(), Some(st));
        }
        assert!(matches!("zookeeper".parse::<Strategy>(), Err(Error::InvalidArgument(_))));
        assert!(matches!("".parse::<Strategy>(), Err(Error::InvalidArgument(_))));
    }
}
