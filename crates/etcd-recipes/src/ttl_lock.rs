//! The lease TTL lock: the blog posts' lease + KeepAlive lock. Each acquisition puts the lock key
//! on a lease of its own, kept alive while the lock is held; unlock revokes the lease. A holder
//! that crashes stops refreshing, so the lease expires and etcd deletes the key at the TTL.
//!
//! In RPCs:
//! - try_lock: `LeaseGrant(ttl)`, then
//!   `Txn If(CreateRevision(name) == 0) Then Put(name, lease) Else Range(name)`.
//!   On Then, the lease joins the client's keep-alive stream. On Else, `LeaseRevoke(lease)` and
//!   [`Error::Locked`].
//! - lock: one `LeaseGrant`, kept alive while waiting; the same Txn, and on Else wait for the
//!   holder's delete (watch from now, `Range`; see `wait.rs`) and try again. Like the naive lock,
//!   every waiter wakes on every release.
//! - unlock: `LeaseRevoke(lease)`, which deletes the key.

use bytes::Bytes;
use etcd_wire::{Client, Compare, CompareOp, GetOptions, KeepAlive, PutOptions, Txn, TxnOp};
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::lock::{DistributedLock, LockGuard, Release, Strategy};
use crate::trace::{OpTrace, Tracer};
use crate::wait::{check_name, wait_deleted};

/// A lock whose key lives on a lease of its own with a TTL. See the module docs.
#[derive(Debug, Clone)]
pub struct LeaseTtlLock {
    client: Client,
    key: Bytes,
    ttl: i64,
    tracer: Tracer,
}

impl LeaseTtlLock {
    /// A lock on the key `name`, whose holder's lease has `ttl_secs` seconds of TTL.
    pub fn new(client: &Client, name: &str, ttl_secs: i64) -> Result<LeaseTtlLock> {
        check_name(name)?;
        if ttl_secs <= 0 {
            return Err(Error::invalid(format!("lock TTL must be positive, got {ttl_secs}")));
        }
        Ok(LeaseTtlLock {
            client: client.clone(),
            key: Bytes::from(name.to_owned()),
            ttl: ttl_secs,
            tracer: Tracer::default(),
        })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the lock is held.
    pub async fn lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op("lease-ttl", "lock");
        let lease = self.grant(&mut op).await?;
        loop {
            match self.attempt(&lease, &mut op).await? {
                Ok(revision) => return Ok(self.guard(lease, revision, &op)),
                Err(holder_rev) => {
                    op.note(|| format!("held (create revision {holder_rev}); waiting for its delete"));
                    wait_deleted(&self.client, &self.key, holder_rev, None, None, &mut op).await?;
                    if lease.keep_alive.as_ref().is_none_or(|k| k.is_lost()) {
                        return Err(Error::SessionExpired);
                    }
                }
            }
        }
    }

    /// Takes the lock if it is free, else revokes the fresh lease and fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let mut op = self.tracer.op("lease-ttl", "try_lock");
        let mut lease = self.grant(&mut op).await?;
        match self.attempt(&lease, &mut op).await? {
            Ok(revision) => Ok(self.guard(lease, revision, &op)),
            Err(_) => {
                lease.revoke_on_drop = false;
                op.rpc("LeaseRevoke", &self.key, self.client.lease_revoke(lease.id)).await?;
                Err(Error::Locked)
            }
        }
    }

    async fn grant(&self, op: &mut OpTrace) -> Result<OwnLease> {
        let granted = op.rpc("LeaseGrant", &self.key, self.client.lease_grant(self.ttl, None)).await?;
        let mut lease =
            OwnLease { client: self.client.clone(), id: granted.id, keep_alive: None, revoke_on_drop: true };
        // Should this fail, dropping `lease` revokes it.
        lease.keep_alive = Some(self.client.lease_keep_alive(granted.id).await?);
        Ok(lease)
    }

    /// One Txn: `Ok(our key's revision)` when the lock is ours, else `Err(the holder's create revision)`.
    async fn attempt(&self, lease: &OwnLease, op: &mut OpTrace) -> Result<Result<i64, i64>> {
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), Bytes::new(), PutOptions::new().with_lease(lease.id))])
            .or_else([TxnOp::get(self.key.clone(), GetOptions::new().with_keys_only())]);
        let resp = op.rpc("Txn", &self.key, self.client.txn(txn)).await?;
        if resp.succeeded {
            return Ok(Ok(resp.header.revision));
        }
        Ok(Err(crate::line::check_blocker(resp.gets().next().and_then(|g| g.kvs.first().cloned()))?
            .map_or(0, |kv| kv.create_revision)))
    }

    fn guard(&self, mut lease: OwnLease, revision: i64, op: &OpTrace) -> LockGuard {
        lease.revoke_on_drop = false;
        LockGuard {
            client: self.client.clone(),
            key: self.key.clone(),
            revision,
            lease: lease.id,
            release: Release::RevokeLease,
            stats: op.finish(),
            tracer: self.tracer.clone(),
            recipe: "lease-ttl",
            released: false,
            keep_alive: lease.keep_alive.take(),
        }
    }
}

/// A lease granted for one acquisition; revoked on drop unless a guard took it over.
struct OwnLease {
    client: Client,
    id: i64,
    keep_alive: Option<KeepAlive>,
    revoke_on_drop: bool,
}

impl Drop for OwnLease {
    fn drop(&mut self) {
        if !self.revoke_on_drop {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (client, id) = (self.client.clone(), self.id);
        rt.spawn(async move {
            if let Err(e) = client.lease_revoke(id).await {
                tracing::debug!(error = %e, "revoking an abandoned lock lease failed");
            }
        });
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
