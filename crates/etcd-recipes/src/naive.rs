//! The naive lock: one key per lock, created if absent; waiters watch it and retry. This is the
//! old go-etcd-lock and the blog posts' `waitDelete` design, kept as it is so the benches can
//! measure its cost: every waiter wakes on every release and races for the key (the herd).
//!
//! In RPCs:
//! - lock: `Txn If(CreateRevision(name) == 0) Then Put(name, lease) Else Range(name)`. On Else,
//!   wait for that holder's key to be deleted (watch from now, `Range` to close the gap; see
//!   `wait.rs`), then try the Txn again. With N waiters, each release costs N Txns and N watch
//!   events, of which one wins.
//! - unlock: `Txn If(CreateRevision(name) == mine) Then Delete(name)`.
//!
//! The key is bound to the session's lease, so a crashed holder releases the lock at its TTL.

use bytes::Bytes;
use etcd_wire::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::lock::{DistributedLock, LockGuard, Release, Strategy};
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{check_name, wait_deleted};

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
        let mut op = self.tracer.op("naive", "lock");
        loop {
            match self.attempt(&mut op).await? {
                Ok(guard) => return Ok(guard),
                Err(holder_rev) => {
                    op.note(|| format!("held (create revision {holder_rev}); waiting for its delete"));
                    wait_deleted(self.session.client(), &self.key, holder_rev, None, Some(&self.session), &mut op)
                        .await?;
                }
            }
        }
    }

    /// Takes the lock if the key is absent, else fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op("naive", "try_lock");
        self.attempt(&mut op).await?.map_err(|_| Error::Locked)
    }

    /// One Txn: the guard, or the holder's create revision.
    async fn attempt(&self, op: &mut OpTrace) -> Result<Result<LockGuard, i64>> {
        self.session.check()?;
        let client = self.session.client();
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                self.key.clone(),
                Bytes::new(),
                PutOptions::new().with_lease(self.session.lease_id()),
            )])
            .or_else([TxnOp::get(self.key.clone(), GetOptions::new().with_keys_only())]);
        let resp = op.rpc("Txn", &self.key, client.txn(txn)).await.map_err(crate::line::lease_gone)?;
        if !resp.succeeded {
            // If the holder vanished between the compare and now, revision 0 makes the wait return at once.
            let holder = crate::line::check_blocker(resp.gets().next().and_then(|g| g.kvs.first().cloned()))?
                .map_or(0, |kv| kv.create_revision);
            return Ok(Err(holder));
        }
        Ok(Ok(LockGuard {
            client: client.clone(),
            key: self.key.clone(),
            revision: resp.header.revision,
            lease: self.session.lease_id(),
            release: Release::FencedDelete,
            stats: op.finish(),
            tracer: self.tracer.clone(),
            recipe: "naive",
            released: false,
            keep_alive: None,
        }))
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
