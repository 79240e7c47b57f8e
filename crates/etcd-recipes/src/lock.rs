//! One trait for every lock strategy, and the guard they all hand out.
//!
//! Each strategy holds its lock as one etcd key, so a held lock is always described the same way:
//! the key and its create revision. The create revision is the **fencing token**: it grows with
//! every acquisition, and [`LockGuard::txn`] turns it into a compare, so a write made by a holder
//! that has lost the lock (paused past its TTL, partitioned) is refused by etcd instead of landing.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use etcd_wire::{Client, Compare, CompareOp, Txn};
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::session::Session;
use crate::trace::{OpStats, Tracer};

/// The lock strategies, for choosing one at run time (benches, CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// [`Mutex`](crate::Mutex): revision-ordered queue, each waiter watches only its predecessor.
    Mutex,
    /// [`NaiveLock`](crate::NaiveLock): one key; every waiter watches it and retries (the herd).
    Naive,
    /// [`LeaseTtlLock`](crate::LeaseTtlLock): one key on a lease of its own per acquisition.
    LeaseTtl,
    /// [`RpcLock`](crate::RpcLock): etcd's server-side `Lock` RPC (v3lock).
    Rpc,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 4] = [Strategy::Mutex, Strategy::Naive, Strategy::LeaseTtl, Strategy::Rpc];

    /// The short name used on command lines and in bench ids: `mutex`, `naive`, `lease`, `rpc`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Mutex => "mutex",
            Strategy::Naive => "naive",
            Strategy::LeaseTtl => "lease",
            Strategy::Rpc => "rpc",
        }
    }

    /// A lock of this strategy on `name`, bound to `session` (the lease TTL lock uses the
    /// session's client and TTL, with a lease of its own per acquisition).
    pub fn new_lock(self, session: &Session, name: &str, tracer: Tracer) -> Result<Box<dyn DistributedLock>> {
        Ok(match self {
            Strategy::Mutex => Box::new(crate::Mutex::new(session, name)?.with_tracer(tracer)),
            Strategy::Naive => Box::new(crate::NaiveLock::new(session, name)?.with_tracer(tracer)),
            Strategy::LeaseTtl => Box::new(
                crate::LeaseTtlLock::new(session.client(), name, session.ttl().as_secs() as i64)?.with_tracer(tracer),
            ),
            Strategy::Rpc => Box::new(crate::RpcLock::new(session, name)?.with_tracer(tracer)),
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
        Strategy::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::invalid(format!("unknown lock strategy {s:?}; expected mutex, naive, lease or rpc")))
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

/// How a guard gives its lock back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// `Txn If(CreateRevision(key) == token) Then Delete(key)`: never deletes a newer holder's key.
    FencedDelete,
    /// `LeaseRevoke(lease)`: the key goes with its lease.
    RevokeLease,
}

/// A held lock. [`unlock`](Self::unlock) releases it; dropping the guard releases it too, in the
/// background (best effort, needs a Tokio runtime), so a panicking holder does not keep it until
/// its lease expires.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    pub(crate) client: Client,
    pub(crate) key: Bytes,
    pub(crate) revision: i64,
    pub(crate) lease: i64,
    pub(crate) release: Release,
    pub(crate) stats: OpStats,
    pub(crate) tracer: Tracer,
    pub(crate) recipe: &'static str,
    pub(crate) released: bool,
    /// The lease TTL lock keeps its own lease alive for as long as the guard lives.
    #[expect(dead_code, reason = "held for its Drop: the lease is refreshed while the guard lives")]
    pub(crate) keep_alive: Option<etcd_wire::KeepAlive>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("recipe", &self.recipe)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("fencing_token", &self.revision)
            .field("lease", &format_args!("{:x}", self.lease))
            .finish()
    }
}

impl LockGuard {
    /// The lock key (without the client's namespace).
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The lock key's create revision: unique per acquisition and increasing, for fencing writes
    /// in other systems too (pass it along; refuse anything carrying a smaller one).
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }

    /// The lease the lock key is bound to.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// RPCs, watches and watch events the acquisition took, and how long it waited.
    pub fn stats(&self) -> OpStats {
        self.stats
    }

    /// A compare that holds exactly while this guard's lock is held, for the caller's own Txns.
    pub fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// A Txn that already carries [`is_owner`](Self::is_owner): its `and_then` ops apply only
    /// while the lock is held, so a write from a holder that lost the lock never lands.
    pub fn txn(&self) -> Txn {
        Txn::new().when([self.is_owner()])
    }

    /// Releases the lock. Fails with [`Error::NotOwner`] when the lock was already gone (the
    /// session expired, or the key was deleted), in which case nothing is deleted.
    pub async fn unlock(mut self) -> Result<()> {
        self.released = true;
        release(&self.client, &self.key, self.revision, self.lease, self.release, &self.tracer, self.recipe).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (client, key, rev, lease, how) =
            (self.client.clone(), self.key.clone(), self.revision, self.lease, self.release);
        let (tracer, recipe) = (self.tracer.clone(), self.recipe);
        rt.spawn(async move {
            if let Err(e) = release(&client, &key, rev, lease, how, &tracer, recipe).await {
                tracing::debug!(error = %e, "releasing a dropped lock guard failed");
            }
        });
    }
}

async fn release(
    client: &Client,
    key: &Bytes,
    revision: i64,
    lease: i64,
    how: Release,
    tracer: &Tracer,
    recipe: &'static str,
) -> Result<()> {
    let mut op = tracer.op(recipe, "unlock");
    match how {
        Release::FencedDelete => {
            if !crate::line::delete_fenced(client, key, revision, &mut op).await? {
                return Err(Error::NotOwner(format!(
                    "lock key {} (revision {revision}) was already gone",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Release::RevokeLease => match op.rpc("LeaseRevoke", key, client.lease_revoke(lease)).await {
            Ok(_) => {}
            Err(etcd_wire::Error::LeaseNotFound { .. }) => {
                return Err(Error::NotOwner(format!("the lease {lease:x} holding the lock had already ended")));
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}
