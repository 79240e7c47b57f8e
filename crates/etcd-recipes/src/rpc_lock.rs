//! The server-side lock: etcd's `v3lock` service, which runs Go's `concurrency.Mutex` inside the
//! etcd member on the caller's lease. It is one of the strategies the benches compare, and shares
//! the Mutex's key layout (`<name>/<lease hex>`), so it excludes our [`Mutex`](crate::Mutex) and
//! `etcdctl lock` on the same name.
//!
//! In RPCs:
//! - lock: `Lock(name, session lease)`, and, if it has not answered within `CHECK_AFTER` (20 ms;
//!   an uncontended Lock answers in one round trip, a contended one waits ~100 ms inside etcd), a
//!   `Range` of the oldest key under `<name>/` (a key without a lease there is nobody's lock: fail
//!   with `ForeignKey` rather than wait forever),
//!   which returns once held (the server waits with Go's
//!   `waitDeletes`, watching from a past revision, hence its ~100 ms handoffs), then `Range(key)`
//!   for the key's create revision, the fencing token (the Lock answer does not carry it).
//!   Dropping the future cancels the RPC; the server then deletes its waiter key. Should that
//!   cancel never reach the server, `Txn If(Lease(key) == ours) Then Delete(key)` removes the key
//!   (armed before the Lock is sent). On a foreign key, the Lock RPC is kept until the server's
//!   waiter key exists (a watch on it, bounded by `SETTLE`, 5 s) and only then cancelled and the key
//!   deleted: a delete sent before the server's put would leave the key it puts afterwards, on
//!   our live lease, ahead of everyone who comes later.
//! - try_lock: the service has no non-blocking form, so this is [`Mutex::try_lock`](crate::Mutex::try_lock)'s
//!   single Txn on the same keys.
//! - unlock: `Txn If(CreateRevision(key) == token) Then Delete(key)`, one RPC like the service's
//!   `Unlock(key)`, but fenced: the service's plain delete would let a stale or repeated unlock
//!   remove a newer holder's key (etcd #22082), and could not tell that the lock was already gone.

use bytes::Bytes;
use etcd_wire::{GetOptions, SortOrder, SortTarget};
use futures::future::BoxFuture;

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::Held;
use crate::line::{check_blocker, my_key};
use crate::lock::{DistributedLock, LockGuard, Strategy};
use crate::session::Session;
use crate::trace::Tracer;
use crate::wait::{check_name, wait_created};

/// How long the Lock RPC may go unanswered before the foreign-key check is sent (module docs).
const CHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a lock that met a foreign key waits for the server to create its waiter key before
/// removing it anyway (module docs).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// etcd's server-side Lock RPC on a name, with the session's lease. See the module docs.
#[derive(Debug, Clone)]
pub struct RpcLock {
    session: Session,
    name: String,
    tracer: Tracer,
}

impl RpcLock {
    /// The server-side lock on `name`. Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<RpcLock> {
        check_name(name)?;
        Ok(RpcLock { session: session.clone(), name: name.to_owned(), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the server reports the lock held.
    pub async fn lock(&self) -> Result<LockGuard> {
        self.session.check()?;
        let client = self.session.client().clone();
        let mut op = self.tracer.op(&client, "rpc-lock", "lock");
        let name = Bytes::from(self.name.clone());
        let prefix = Bytes::from(format!("{}/", self.name));
        // The server's waiter key; it is ours to remove if the cancel of the RPC never reaches
        // the server (the server would go on waiting, then hold the lock for a caller long gone).
        let key = my_key(&prefix, &self.session);
        let slot = self.session.claim(&key).await?;
        let lease = self.session.lease_id();
        let mut cleanup = Cleanup::arm(&op, Action::DeleteIfLease { key: key.clone(), lease }).with_slot(Some(slot));
        // The server waits on the oldest key under `<name>/` forever; if that key has no lease it
        // is nobody's lock and will never go, so check it once the Lock is slow to answer (a traced op of its own).
        let mut check_op = self.tracer.op(&client, "rpc-lock", "check");
        let oldest = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        // Only a foreign key ends the wait: a failed check read leaves the Lock RPC to go on.
        let check = async {
            tokio::time::sleep(CHECK_AFTER).await;
            match check_op.get(&prefix, oldest.with_keys_only()).await {
                Ok(got) => check_blocker(got.kvs.into_iter().next()).map(drop),
                Err(_) => std::future::pending().await,
            }
        };
        let held = {
            let lock = op.rpc("Lock", &name, client.lock(name.clone(), lease));
            tokio::pin!(lock);
            let held = tokio::select! {
                held = &mut lock => held.map_err(Error::from),
                Err(e) = check => Err(e),
                _ = self.session.lost() => Err(Error::SessionExpired),
            };
            if let Err(Error::ForeignKey { .. }) = &held {
                // Keep the RPC until the server has put its waiter key (module docs).
                let mut settle = self.tracer.op(&client, "rpc-lock", "settle");
                tokio::select! {
                    _ = &mut lock => {}
                    _ = tokio::time::timeout(SETTLE, wait_created(&key, &mut settle)) => {}
                }
            }
            held
        };
        let held = match held {
            Ok(held) => held,
            // Returns once the waiter key is gone (else the cleanup goes on in the background).
            Err(e) => {
                drop(cleanup.run(&mut op).await);
                return Err(e);
            }
        };
        let got = op.get(&held.key, GetOptions::new().with_keys_only()).await?;
        let revision = got.kvs.first().map(|kv| kv.create_revision).ok_or(Error::SessionExpired)?;
        cleanup.set(Action::FencedDelete { key: held.key.clone(), revision });
        Ok(LockGuard::new(Held::new(&self.session, held.key, revision), cleanup, &op, None))
    }

    /// Takes the lock if it is free (the Mutex's single Txn), else fails with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        crate::Mutex::new(&self.session, &self.name)?.with_tracer(self.tracer.clone()).try_lock().await
    }
}

impl DistributedLock for RpcLock {
    fn strategy(&self) -> Strategy {
        Strategy::Rpc
    }
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(RpcLock::lock(self))
    }
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(RpcLock::try_lock(self))
    }
}
