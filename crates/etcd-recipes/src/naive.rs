//! The naive lock: one key per lock, created if absent; waiters watch it and retry. This is the
//! old go-etcd-lock and the blog posts' `waitDelete` design, kept as it is so the benches can
//! measure its cost: every waiter wakes on every release and races for the key (the herd).
//!
//! In RPCs:
//! - lock: `Txn If(CreateRevision(name) == 0) Then Put(name, lease) Else Range(name)`. On Else,
//!   wait for that holder's key to be deleted (watch from now, `Range` to close the gap; see
//!   `wait.rs`), then try the Txn again. With N waiters, each release costs N Txns and N watch
//!   events, of which one wins. A holder on our own lease is our own key, left by an attempt whose
//!   answer was lost and whose cleanup has not landed: we take it, as Go's Mutex takes its key.
//! - unlock: `Txn If(CreateRevision(name) == mine) Then Delete(name)`.
//!
//! The key is bound to the session's lease, so a crashed holder releases the lock at its TTL. The
//! cleanup of an attempt is armed before its Txn is sent (`If(Lease(name) == ours) Then
//! Delete(name)`), so an attempt whose answer never arrives leaves no key.

use bytes::Bytes;
use etcd_wire::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use futures::future::BoxFuture;

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::Held;
use crate::line::check_blocker;
use crate::lock::{DistributedLock, LockGuard, Strategy};
use crate::session::{Session, Slot};
use crate::trace::{OpTrace, Tracer};
use crate::wait::{Stop, check_name, wait_deleted};

/// The naive create-or-watch lock on one key. See the module docs.
#[derive(Debug, Clone)]
pub struct NaiveLock {
    session: Session,
    key: Bytes,
    tracer: Tracer,
}

impl NaiveLock {
    /// A naive lock whose key is `name` itself. Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<NaiveLock> {
        check_name(name)?;
        Ok(NaiveLock { session: session.clone(), key: Bytes::from(name.to_owned()), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the lock is held, retrying after every release.
    pub async fn lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "naive", "lock");
        let mut slot = Some(self.session.claim(&self.key).await?);
        loop {
            match self.attempt(slot, &mut op).await? {
                Ok(guard) => return Ok(guard),
                Err((holder_rev, back)) => {
                    slot = back;
                    op.note(|| format!("held (create revision {holder_rev}); waiting for its delete"));
                    wait_deleted(&self.key, holder_rev, Stop::session(&self.session), &mut op).await?;
                }
            }
        }
    }

    /// Takes the lock if the key is absent, else fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "naive", "try_lock");
        let slot = self.session.try_claim(&self.key).ok_or(Error::Locked)?;
        self.attempt(Some(slot), &mut op).await?.map_err(|_| Error::Locked)
    }

    /// One Txn: the guard, or the holder's create revision (and the slot back).
    async fn attempt(&self, slot: Option<Slot>, op: &mut OpTrace) -> Result<Result<LockGuard, (i64, Option<Slot>)>> {
        self.session.check()?;
        let (key, lease) = (self.key.clone(), self.session.lease_id());
        let mut cleanup = Cleanup::arm(op, Action::DeleteIfLease { key: key.clone(), lease }).with_slot(slot);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), Bytes::new(), PutOptions::new().with_lease(lease))])
            .or_else([TxnOp::get(key.clone(), GetOptions::new().with_keys_only())]);
        let resp = op.txn("Txn", &key, txn).await?;
        let revision = if resp.succeeded {
            resp.header.revision
        } else {
            match check_blocker(resp.gets().next().and_then(|g| g.kvs.first().cloned()))? {
                Some(holder) if holder.lease == lease => {
                    op.note(|| "the holder is our own lease: an earlier attempt's key, taken over".to_owned());
                    holder.create_revision
                }
                // If the holder vanished between the compare and now, revision 0 makes the wait
                // return at once.
                holder => {
                    return Ok(Err((holder.map_or(0, |kv| kv.create_revision), cleanup.disarm())));
                }
            }
        };
        cleanup.set(Action::FencedDelete { key: key.clone(), revision });
        Ok(Ok(LockGuard::new(Held::new(&self.session, key, revision), cleanup, op, None)))
    }
}

impl DistributedLock for NaiveLock {
    fn strategy(&self) -> Strategy {
        Strategy::Naive
    }
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(NaiveLock::lock(self))
    }
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(NaiveLock::try_lock(self))
    }
}
