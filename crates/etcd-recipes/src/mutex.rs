//! Mutex: a revision-ordered lock, wire-compatible with Go's `concurrency.Mutex` (and so with
//! `etcdctl lock` and the server-side Lock RPC on the same name).
//!
//! Sessions stand in line under `<name>/` (see `line.rs`); the front of the line holds the lock.
//! In RPCs:
//!
//! - lock: one Txn to join the line and learn the predecessor (uncontended: this Txn is all), then
//!   per predecessor: watch it and our own key, one Txn to close the gap, its DELETE event, one
//!   read-only Txn for the next predecessor. A release wakes only the next waiter, as soon as
//!   etcd commits it (the watch starts at the current revision, so it sits in etcd's synced
//!   watcher group, not the unsynced one Go's past-revision watch lands in, which etcd catches up
//!   only every 100 ms).
//! - try_lock: the same first Txn; with a predecessor, a fenced delete of our key and `Locked`.
//! - unlock: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`: a stale or repeated
//!   unlock never deletes a newer holder's key (etcd #22082).
//!
//! Faults of the reference this avoids: a waiter whose session ends fails at once with
//! `SessionExpired` (etcd #19597); `lock` never succeeds once our key is gone (etcd #9921,
//! #11456); a dropped `lock` future removes its key, and a failed `try_lock` leaves none.

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::line::{Place, join, my_key, wait_front};
use crate::lock::{DistributedLock, LockGuard, Release, Strategy};
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::check_name;

/// A distributed mutex on a name, for one session. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    prefix: Bytes,
    tracer: Tracer,
}

impl Mutex {
    /// A mutex on `name` (keys live under `name/`). Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<Mutex> {
        check_name(name)?;
        Ok(Mutex { session: session.clone(), prefix: Bytes::from(format!("{name}/")), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// This session's key for the mutex: `<name>/<lease id in hex>`, as Go names it.
    pub fn key(&self) -> Bytes {
        my_key(&self.prefix, &self.session)
    }

    /// Waits until the lock is held.
    pub async fn lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op("mutex", "lock");
        let mut place = join(&self.session, &self.prefix, Bytes::new(), &mut op).await?;
        wait_front(&self.session, &self.prefix, &mut place, &mut op).await?;
        op.note(|| format!("acquired with fencing token {}", place.revision));
        Ok(self.guard(place, &op))
    }

    /// Takes the lock if it is free; otherwise removes our key and fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op("mutex", "try_lock");
        let mut place = join(&self.session, &self.prefix, Bytes::new(), &mut op).await?;
        if place.predecessor.is_none() {
            return Ok(self.guard(place, &op));
        }
        if let Some(own) = place.own.take() {
            own.remove(&mut op).await?;
        }
        Err(Error::Locked)
    }

    fn guard(&self, mut place: Place, op: &OpTrace) -> LockGuard {
        place.keep();
        LockGuard {
            client: place.client.clone(),
            key: place.key.clone(),
            revision: place.revision,
            lease: self.session.lease_id(),
            release: Release::FencedDelete,
            stats: op.finish(),
            tracer: self.tracer.clone(),
            recipe: "mutex",
            released: false,
            keep_alive: None,
        }
    }
}

impl DistributedLock for Mutex {
    fn strategy(&self) -> Strategy {
        Strategy::Mutex
    }
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(Mutex::lock(self))
    }
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(Mutex::try_lock(self))
    }
}
