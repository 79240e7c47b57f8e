//! Mutex: a revision-ordered lock, wire-compatible with Go's `concurrency.Mutex` (and so with
//! `etcdctl lock` and the server-side Lock RPC on the same name).
//!
//! Sessions stand in line under `<name>/` (see `line.rs`); the front of the line holds the lock.
//! In RPCs:
//!
//! - lock: one Txn to join the line and learn the two newest keys ahead (uncontended: this Txn
//!   is all), then: watch them (each twice, against a late watch) and our own key, one Txn to
//!   close the gap; when the older one goes, one read-only Txn learns who is ahead now; when the
//!   last one ahead goes, its DELETE event alone puts us in front. So a contended acquisition is
//!   4 RPCs at any contention, and a handoff is a commit and one watch event: the read is done
//!   earlier, while our predecessor holds. A release wakes at most two waiters, as soon as etcd
//!   commits it (the watches start at the current revision, so they sit in etcd's synced watcher
//!   group, not the unsynced one Go's past-revision watch lands in, which etcd catches up only
//!   every 100 ms; see `wait.rs`).
//! - try_lock: the same first Txn; with a predecessor, a fenced delete of our key and `Locked`.
//! - unlock: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`: a stale or repeated
//!   unlock never deletes a newer holder's key (etcd #22082).
//! - resume (a restarted holder, from its [`ResumeToken`]): one read-only Txn
//!   `If(CreateRevision(me) == token, Lease(me) == lease)`, no place in line (`resume.rs`).
//!
//! Faults of the reference this avoids: a waiter whose session ends fails at once with
//! `SessionExpired` (etcd #19597); `lock` never succeeds once our key is gone (etcd #9921,
//! #11456); a dropped `lock` future removes its key, and a failed `try_lock` leaves none; two
//! tasks sharing a session never both hold the lock, and a guard dropped just before the next
//! `lock()` is released before that lock joins the line (Go's shared key makes both unsafe).

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::line::{Rule, join, my_key};
use crate::lock::{DistributedLock, LockGuard, Strategy};
use crate::resume::{ResumeToken, take_back};
use crate::session::Session;
use crate::trace::Tracer;
use crate::wait::check_name;

/// A distributed mutex on a name, for one session. See the module docs for the algorithm.
///
/// Tasks sharing a session exclude each other too: each `lock()` first claims the session's slot
/// for the key (see [`Session`]), so locking again right after dropping a guard waits for that
/// guard's release instead of racing it.
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
        let mut op = self.tracer.op(self.session.client(), "mutex", "lock");
        let key = self.key();
        let slot = self.session.claim(&key).await?;
        let place = join(&self.session, key, self.prefix.clone(), Bytes::new(), Some(slot), Rule::One, &mut op).await?;
        let place = place.wait_front_or_leave(&mut op).await?;
        Ok(place.into_guard(&op))
    }

    /// Takes the lock if it is free; otherwise removes our key and fails with [`Error::Locked`].
    /// Also [`Error::Locked`] while another task of this session holds it.
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "mutex", "try_lock");
        let key = self.key();
        let slot = self.session.try_claim(&key).ok_or(Error::Locked)?;
        let place = join(&self.session, key, self.prefix.clone(), Bytes::new(), Some(slot), Rule::One, &mut op).await?;
        if place.is_front() {
            return Ok(place.into_guard(&op));
        }
        place.leave(&mut op).await?;
        Err(Error::Locked)
    }

    /// Takes back the lock `token` names (from a [`LockGuard::resume_token`] of this mutex, in
    /// this or a previous process) without waiting in line: one read-only Txn checks that the key
    /// is still that incarnation on this session's lease, and the guard is the original (same
    /// fencing token). Fails with [`Error::NotResumable`] saying why the lock is no longer the
    /// token's, [`Error::Locked`] while another task of this session holds it, and
    /// [`Error::InvalidArgument`] for a token of another lease or lock. The session is usually
    /// [`Session::resume`]`(client, token.lease_id())`. Algorithm: `resume.rs`.
    pub async fn resume(&self, token: &ResumeToken) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "mutex", "resume");
        take_back(&self.session, self.key(), token, &mut op).await
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
