//! MultiLock: several named locks taken as one, like Curator's `InterProcessMultiLock`. Each name
//! is a [`Mutex`] on one session (so it excludes plain `Mutex`es and `etcdctl lock` on that
//! name), taken in one global order, all or nothing, and held by one [`MultiGuard`].
//!
//! The order is the byte order of the names' key prefixes (`<name>/`, without the lease suffix),
//! duplicates removed. In RPCs:
//!
//! - lock: `Mutex::lock` on each name in that order, one after the other (per name: one Txn to
//!   join its line, and while someone is ahead the Mutex's watches and at most three more Txns).
//!   If one fails (a foreign key in the way, the session ended), the names already held are
//!   released (one fenced delete Txn each, sent together) before the error is returned. If the
//!   future is dropped, the guards already held and the place in line being waited for are
//!   dropped with it: each holds a `Cleanup` (`cleanup.rs`) that removes its key, fenced, in the
//!   background, so a cancelled lock leaves no key.
//! - try_lock: `Mutex::try_lock` on each name in order; the first [`Error::Locked`] releases
//!   the others.
//! - unlock: `Txn If(CreateRevision(k) == token) Then Delete(k)` for each key, sent together.
//! - [`MultiGuard::txn`]: one Txn whose compares hold every key's create revision, so a write
//!   lands only while every part is held.
//!
//! **Why one order rules out deadlock.** A multi-lock holds only names that sort before the one
//! it waits on, and waits only on keys under that name's prefix, which sort at or after it (a
//! nested name `a/b` sorts after `a`). So along any chain "waits on a key held by", the names
//! never decrease, and get strictly larger at each holder that waits in turn: a chain can never
//! come back to where it started. The lease suffix is left out of the order on purpose: with it,
//! `a/<lease>` and `a/b/<lease>` sort one way for one session and the other way for another.

use std::time::Instant;

use bytes::Bytes;
use etcd_wire::{Compare, Txn};
use futures::future::{join_all, select_all};

use crate::error::{Error, Result};
use crate::held::Lost;
use crate::lock::LockGuard;
use crate::mutex::Mutex;
use crate::session::Session;
use crate::trace::Tracer;

/// Several named locks taken as one: see the module docs for the order and the algorithm.
#[derive(Debug, Clone)]
pub struct MultiLock {
    names: Vec<String>,
    mutexes: Vec<Mutex>,
}

impl MultiLock {
    /// A multi-lock on `names` for `session`, in the global order (duplicates removed). Fails
    /// with [`Error::InvalidArgument`] when there is no name or one is empty.
    pub fn new<I, S>(session: &Session, names: I) -> Result<MultiLock>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let names = in_order(names.into_iter().map(|n| n.as_ref().to_owned()).collect());
        if names.is_empty() {
            return Err(Error::invalid("a multi-lock needs at least one name"));
        }
        let mutexes = names.iter().map(|n| Mutex::new(session, n)).collect::<Result<_>>()?;
        Ok(MultiLock { names, mutexes })
    }

    /// Reports every step of every part to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.mutexes = self.mutexes.into_iter().map(|m| m.with_tracer(tracer.clone())).collect();
        self
    }

    /// The names, in the order they are taken.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Waits until every name is held, taking them in order. Dropping the future releases every
    /// name already taken and leaves the line it waits in.
    pub async fn lock(&self) -> Result<MultiGuard> {
        let mut guards = Vec::with_capacity(self.mutexes.len());
        for mutex in &self.mutexes {
            match mutex.lock().await {
                Ok(guard) => guards.push(guard),
                Err(err) => return Err(release_after(guards, err).await),
            }
        }
        Ok(MultiGuard { guards })
    }

    /// Takes every name if each is free; otherwise releases those taken and fails with
    /// [`Error::Locked`], leaving no key.
    pub async fn try_lock(&self) -> Result<MultiGuard> {
        let mut guards = Vec::with_capacity(self.mutexes.len());
        for mutex in &self.mutexes {
            match mutex.try_lock().await {
                Ok(guard) => guards.push(guard),
                Err(err) => return Err(release_after(guards, err).await),
            }
        }
        Ok(MultiGuard { guards })
    }
}

/// `names` in the order they are taken: by their key prefix's bytes (module docs), once each.
fn in_order(mut names: Vec<String>) -> Vec<String> {
    names.sort_by_cached_key(|name| format!("{name}/").into_bytes());
    names.dedup();
    names
}

/// Releases `guards` (together) because of `err`, and gives `err` back. A release that fails is
/// handed to the background by the guard's cleanup.
async fn release_after(guards: Vec<LockGuard>, err: Error) -> Error {
    for failed in join_all(guards.into_iter().map(LockGuard::unlock)).await.into_iter().filter_map(Result::err) {
        tracing::debug!(error = %failed, "releasing a multi-lock's part after a failure failed");
    }
    err
}

/// Every name of a [`MultiLock`], held: one [`LockGuard`] per name, in the lock's order.
/// Dropping it releases every part in the background, like a dropped guard.
#[derive(Debug)]
#[must_use = "dropping the guard releases the locks"]
pub struct MultiGuard {
    guards: Vec<LockGuard>,
}

impl MultiGuard {
    /// The guard of each part, in the lock's order.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// Each part's fencing token, in the lock's order.
    pub fn fencing_tokens(&self) -> Vec<i64> {
        self.guards.iter().map(LockGuard::fencing_token).collect()
    }

    /// Each part's key, in the lock's order.
    pub fn keys(&self) -> Vec<&Bytes> {
        self.guards.iter().map(LockGuard::key).collect()
    }

    /// Compares that all hold exactly while every part is held, for the caller's own Txns.
    pub fn is_owner(&self) -> Vec<Compare> {
        self.guards.iter().map(LockGuard::is_owner).collect()
    }

    /// A Txn that already carries every part's [`is_owner`](LockGuard::is_owner): its `and_then`
    /// ops apply only while every key is still the one this guard took.
    pub fn txn(&self) -> Txn {
        Txn::new().when(self.is_owner())
    }

    /// The earliest of the parts' [`valid_until`](LockGuard::valid_until): before it, every part
    /// is provably still held, unless somebody deletes a key. `None` once any part's lease is lost.
    pub fn valid_until(&self) -> Option<Instant> {
        self.guards.iter().map(LockGuard::valid_until).collect::<Option<Vec<_>>>()?.into_iter().min()
    }

    /// Resolves when any part can no longer be trusted, with that part's reason (see
    /// [`LockGuard::lost`]). Cancel-safe; opens one watch per key while it waits.
    pub async fn lost(&self) -> Lost {
        select_all(self.guards.iter().map(|g| Box::pin(g.lost()))).await.0
    }

    /// Runs `work` only while every part is held: cancels it the moment [`lost`](Self::lost)
    /// fires, and fails with [`Error::LockLost`]. Writes to etcd inside should still go through
    /// [`txn`](Self::txn).
    pub async fn while_held<F: std::future::Future>(&self, work: F) -> Result<F::Output> {
        tokio::select! {
            biased;
            lost = self.lost() => Err(Error::LockLost(lost)),
            out = work => Ok(out),
        }
    }

    /// Releases every part (their fenced deletes sent together). Fails with the first part's
    /// error, e.g. [`Error::NotOwner`] when that part was already gone; the others are released
    /// all the same.
    pub async fn unlock(self) -> Result<()> {
        join_all(self.guards.into_iter().map(LockGuard::unlock)).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_their_prefix_so_nesting_sorts_after_its_parent() {
        let names = ["b", "a/b", "a-b", "a", "a"].map(String::from).to_vec();
        // '-' sorts before '/', and "a/" is a prefix of "a/b/".
        assert_eq!(in_order(names), ["a-b", "a", "a/b", "b"]);
    }
}
