//! The lease TTL lock: the blog posts' lease + KeepAlive lock. Each acquisition puts the lock key
//! on a lease of its own, kept alive while the lock is held; unlock revokes the lease. A holder
//! that crashes stops refreshing, so the lease expires and etcd deletes the key at the TTL.
//!
//! In RPCs:
//! - try_lock: `LeaseGrant(ttl)` (the lease joins the client's keep-alive stream at once, and a
//!   revoke is armed), then `Txn If(CreateRevision(name) == 0) Then Put(name, lease) Else Range(name)`.
//!   On Else, `LeaseRevoke(lease)` and [`Error::Locked`].
//! - lock: one `LeaseGrant`, kept alive while waiting; the same Txn, and on Else wait for the
//!   holder's delete (watch from now, `Range`; see `wait.rs`) and try again. Like the naive lock,
//!   every waiter wakes on every release.
//! - unlock: `LeaseRevoke(lease)`, which deletes the key.
//!
//! The lock is built from a [`Session`] like every other strategy: the session provides the
//! client and the default TTL, and a waiter whose session ends (or whose own lease is lost) fails
//! with [`Error::SessionExpired`].

use bytes::Bytes;
use etcd_wire::{Compare, CompareOp, GetOptions, KeepAlive, PutOptions, Txn, TxnOp};
use futures::future::BoxFuture;

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::Held;
use crate::line::check_blocker;
use crate::lock::{DistributedLock, LockGuard, Strategy};
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{Stop, check_name, wait_deleted};

/// A lock whose key lives on a lease of its own with a TTL. See the module docs.
#[derive(Debug, Clone)]
pub struct LeaseTtlLock {
    session: Session,
    key: Bytes,
    ttl: i64,
    tracer: Tracer,
}

/// A lease granted for one acquisition, kept alive; revoked by `cleanup` unless a guard takes it.
struct OwnLease {
    id: i64,
    keep_alive: KeepAlive,
    cleanup: Cleanup,
}

impl OwnLease {
    /// The acquisition failed with `err`: revokes the fresh lease before returning `err` (if that
    /// fails too, the revoke goes on in the background), so nothing of it is left when it returns.
    async fn give_up(self, err: Error, op: &mut OpTrace) -> Error {
        if let Err(e) = self.cleanup.run(op).await {
            tracing::debug!(error = %e, "revoking the lock's lease failed; retrying in the background");
        }
        err
    }
}

impl LeaseTtlLock {
    /// A lock on the key `name`. Each acquisition's lease has the session's TTL (see
    /// [`with_ttl`](Self::with_ttl)); the session provides the client, and a waiter whose session
    /// ends fails with [`Error::SessionExpired`] like every other strategy's.
    pub fn new(session: &Session, name: &str) -> Result<LeaseTtlLock> {
        check_name(name)?;
        let ttl = i64::try_from(session.ttl().as_secs()).unwrap_or(i64::MAX);
        Ok(LeaseTtlLock { session: session.clone(), key: Bytes::from(name.to_owned()), ttl, tracer: Tracer::default() })
    }

    /// The TTL of each acquisition's own lease, in seconds: a crashed holder releases the lock
    /// this long after its last keep-alive. Fails on `ttl_secs ≤ 0`.
    pub fn with_ttl(mut self, ttl_secs: i64) -> Result<Self> {
        if ttl_secs <= 0 {
            return Err(Error::invalid(format!("lock TTL must be positive, got {ttl_secs}")));
        }
        self.ttl = ttl_secs;
        Ok(self)
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the lock is held.
    pub async fn lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "lease-ttl", "lock");
        let slot = self.session.claim(&self.key).await?;
        let mut lease = self.grant(&mut op).await?;
        lease.cleanup = lease.cleanup.with_slot(Some(slot));
        loop {
            let attempt = match self.attempt(&lease, &mut op).await {
                Ok(attempt) => attempt,
                Err(err) => return Err(lease.give_up(err, &mut op).await),
            };
            match attempt {
                Ok(revision) => return Ok(self.guard(lease, revision, &op)),
                Err(holder_rev) => {
                    op.note(|| format!("held (create revision {holder_rev}); waiting for its delete"));
                    let status = lease.keep_alive.status();
                    let stop = Stop { session: Some(&self.session), lease: Some(&status), own: None };
                    if let Err(err) = wait_deleted(&self.key, holder_rev, stop, &mut op).await {
                        return Err(lease.give_up(err, &mut op).await);
                    }
                }
            }
        }
    }

    /// Takes the lock if it is free, else revokes the fresh lease and fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "lease-ttl", "try_lock");
        let slot = self.session.try_claim(&self.key).ok_or(Error::Locked)?;
        let mut lease = self.grant(&mut op).await?;
        lease.cleanup = lease.cleanup.with_slot(Some(slot));
        match self.attempt(&lease, &mut op).await {
            Ok(Ok(revision)) => Ok(self.guard(lease, revision, &op)),
            Ok(Err(_)) => {
                lease.cleanup.run(&mut op).await?;
                Err(Error::Locked)
            }
            Err(err) => Err(lease.give_up(err, &mut op).await),
        }
    }

    async fn grant(&self, op: &mut OpTrace) -> Result<OwnLease> {
        self.session.check()?;
        let client = op.client().clone();
        let granted = op.rpc("LeaseGrant", &self.key, client.lease_grant(self.ttl, None)).await?;
        // Should anything below fail, dropping the cleanup revokes the lease.
        let cleanup = Cleanup::arm(op, Action::Revoke { lease: granted.id });
        let keep_alive = client.lease_keep_alive(granted.id).await?;
        Ok(OwnLease { id: granted.id, keep_alive, cleanup })
    }

    /// One Txn: `Ok(our key's revision)` when the lock is ours, else `Err(the holder's create revision)`.
    async fn attempt(&self, lease: &OwnLease, op: &mut OpTrace) -> Result<Result<i64, i64>> {
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), Bytes::new(), PutOptions::new().with_lease(lease.id))])
            .or_else([TxnOp::get(self.key.clone(), GetOptions::new().with_keys_only())]);
        let resp = op.txn("Txn", &self.key, txn).await?;
        if resp.succeeded {
            return Ok(Ok(resp.header.revision));
        }
        Ok(Err(
            check_blocker(resp.gets().next().and_then(|g| g.kvs.first().cloned()))?.map_or(0, |kv| kv.create_revision)
        ))
    }

    fn guard(&self, lease: OwnLease, revision: i64, op: &OpTrace) -> LockGuard {
        let mut held = Held::new(&self.session, self.key.clone(), revision);
        held.own_lease = Some((lease.id, lease.keep_alive.status()));
        LockGuard::new(held, lease.cleanup, op, Some(lease.keep_alive))
    }
}

impl DistributedLock for LeaseTtlLock {
    fn strategy(&self) -> Strategy {
        Strategy::LeaseTtl
    }
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(LeaseTtlLock::lock(self))
    }
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(LeaseTtlLock::try_lock(self))
    }
}
