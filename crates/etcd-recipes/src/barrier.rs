//! Barrier and DoubleBarrier, after Go's `recipe.Barrier` and `recipe.DoubleBarrier`.
//!
//! A [`Barrier`] is one key: while it exists, [`wait`](Barrier::wait) blocks. In RPCs:
//! - hold: `Txn If(CreateRevision(key) == 0) Then Put(key)` (no lease: it stays until released).
//! - release: `DeleteRange(key)`.
//! - wait: `Range(key)`; if it exists, watch it (from now, see `wait.rs`), `Range` again to close
//!   the gap, and wait for its DELETE.
//!
//! A [`DoubleBarrier`] lets `count` participants enter together and leave together. Each participant
//! is a key `<key>/waiters/<unique>` bound to its session's lease; `<key>/ready` says "all entered".
//! In RPCs:
//! - enter: `Range(<key>/waiters/, count only)`, failing with "too many clients" if `count` are in
//!   already (etcd's newer check). Then `Txn If(CreateRevision(me) == 0) Then(Put(me, lease),
//!   Range(<key>/waiters/, oldest first, limit count))`: if we are the `count`-th key, `Put(ready)`
//!   and go; if `count` keys came before ours (a race), delete ours and fail the same way; otherwise
//!   watch `ready` (from now), `Range(ready)` to close the gap, and wait for a put of it made after
//!   our key.
//! - leave: `Range(<key>/waiters/)`. None left: done. Only us: `Txn If(CreateRevision(me) == mine)
//!   Then(Delete(ready), Delete(me))`, done. We are the oldest: wait for the newest key's DELETE,
//!   then look again. Otherwise delete our key, wait for the oldest key's DELETE, look again. A
//!   participant whose session dies loses its key with the lease, so the others still leave.
//!
//! A dropped `enter` future removes its key. Our own session ending fails a waiting `enter` (and the
//! oldest participant's `leave`) with [`Error::SessionExpired`].

use bytes::Bytes;
use etcd_wire::{
    Client, Compare, CompareOp, DeleteOptions, EventKind, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::line::lease_gone;
use crate::line::{OwnKey, fenced_delete};
use crate::queue::unique_name;
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{check_name, session_lost, wait_deleted};

/// A barrier on one key: [`hold`](Self::hold) raises it, [`release`](Self::release) lowers it, and
/// [`wait`](Self::wait) blocks while it is raised.
#[derive(Debug, Clone)]
pub struct Barrier {
    client: Client,
    key: Bytes,
    tracer: Tracer,
}

impl Barrier {
    /// A barrier on `key`. Fails on an empty key.
    pub fn new(client: &Client, key: &str) -> Result<Barrier> {
        check_name(key)?;
        Ok(Barrier { client: client.clone(), key: Bytes::from(key.to_owned()), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Raises the barrier: creates its key. Fails with [`Error::Recipe`] if it is already raised.
    pub async fn hold(&self) -> Result<()> {
        let mut op = self.tracer.op("barrier", "hold");
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), Bytes::new(), PutOptions::new())]);
        if !op.rpc("Txn", &self.key, self.client.txn(txn)).await?.succeeded {
            return Err(Error::Recipe(format!("barrier {} is already held", String::from_utf8_lossy(&self.key))));
        }
        Ok(())
    }

    /// Lowers the barrier: deletes its key, releasing every waiter. Releasing a lowered barrier is
    /// not an error.
    pub async fn release(&self) -> Result<()> {
        let mut op = self.tracer.op("barrier", "release");
        op.rpc("DeleteRange", &self.key, self.client.delete(self.key.clone(), DeleteOptions::new())).await?;
        Ok(())
    }

    /// Returns once the barrier's key does not exist (at once if it does not now). Cancel-safe.
    pub async fn wait(&self) -> Result<()> {
        let mut op = self.tracer.op("barrier", "wait");
        let get = self.client.get(self.key.clone(), GetOptions::new().with_keys_only());
        let Some(kv) = op.rpc("Range", &self.key, get).await?.kvs.into_iter().next() else { return Ok(()) };
        wait_deleted(&self.client, &self.key, kv.create_revision, None, None, &mut op).await
    }
}

/// A double barrier: [`enter`](Self::enter) waits until `count` participants have entered,
/// [`leave`](Self::leave) until all of them have left. One value is one participant; a session
/// may carry many. See the module docs for the algorithm.
#[derive(Debug)]
pub struct DoubleBarrier {
    session: Session,
    key: String,
    count: usize,
    tracer: Tracer,
    /// Our key and its create revision, from `enter` until `leave`.
    entered: Option<(Bytes, i64)>,
}

impl DoubleBarrier {
    /// A double barrier on `key` for `count` participants. Fails on an empty key or a zero count.
    pub fn new(session: &Session, key: &str, count: usize) -> Result<DoubleBarrier> {
        check_name(key)?;
        if count == 0 {
            return Err(Error::invalid("a double barrier needs at least one participant"));
        }
        Ok(DoubleBarrier {
            session: session.clone(),
            key: key.to_owned(),
            count,
            tracer: Tracer::default(),
            entered: None,
        })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    fn waiters(&self) -> Bytes {
        Bytes::from(format!("{}/waiters/", self.key))
    }

    fn ready(&self) -> Bytes {
        Bytes::from(format!("{}/ready", self.key))
    }

    fn client(&self) -> &Client {
        self.session.client()
    }

    /// Enters, and waits until `count` participants have. Fails with [`Error::Recipe`] ("too many
    /// clients") when `count` participants are in already, leaving no key.
    pub async fn enter(&mut self) -> Result<()> {
        let mut op = self.tracer.op("double-barrier", "enter");
        if self.entered.is_some() {
            return Err(Error::invalid("this participant already entered the barrier"));
        }
        self.session.check()?;
        let (waiters, client) = (self.waiters(), self.session.client().clone());
        let inside = client.get(waiters.clone(), GetOptions::new().with_prefix().with_count_only());
        if usize::try_from(op.rpc("Range", &waiters, inside).await?.count).unwrap_or(0) >= self.count {
            return Err(Error::Recipe("too many clients".into()));
        }
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::try_from(self.count).unwrap_or(i64::MAX))
            .with_keys_only();
        let (me, first) = loop {
            let key = Bytes::from(format!("{}/waiters/{}", self.key, unique_name()));
            let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([
                TxnOp::put(key.clone(), Bytes::new(), PutOptions::new().with_lease(self.session.lease_id())),
                TxnOp::get(waiters.clone(), oldest.clone()),
            ]);
            let resp = op.rpc("Txn", &key, client.txn(txn)).await.map_err(lease_gone)?;
            if resp.succeeded {
                let first = resp.gets().next().map(|g| g.kvs.clone()).unwrap_or_default();
                break (OwnKey::new(&client, key, resp.header.revision), first);
            }
        };
        // The Range ran after our Put, so it holds the keys created up to ours.
        if let Some(last) = first.get(self.count - 1) {
            if me.revision > last.create_revision {
                // `count` others got in before us (they raced past the first check).
                me.remove(&mut op).await?;
                return Err(Error::Recipe("too many clients".into()));
            }
            // We are the `count`-th: let everyone in.
            let ready = self.ready();
            op.rpc("Put", &ready, client.put(ready.clone(), Bytes::new(), PutOptions::new())).await?;
        } else {
            self.wait_ready(me.revision, &mut op).await?;
        }
        self.entered = Some(me.keep());
        Ok(())
    }

    /// Waits for a put of `<key>/ready` after `after` (our key's revision): the group is complete.
    async fn wait_ready(&self, after: i64, op: &mut OpTrace) -> Result<()> {
        let ready = self.ready();
        loop {
            let mut watch = self.client().watch(ready.clone(), WatchOptions::new().with_no_delete()).await?;
            op.watch(&ready, watch.created_revision());
            let now = op.rpc("Range", &ready, self.client().get(ready.clone(), GetOptions::new())).await?;
            if now.kvs.first().is_some_and(|kv| kv.mod_revision > after) {
                return Ok(());
            }
            loop {
                let next = tokio::select! {
                    next = watch.next() => next,
                    _ = session_lost(Some(&self.session)) => return Err(Error::SessionExpired),
                };
                match next {
                    Some(Ok(resp)) => {
                        if let Some(ev) = resp.events.iter().find(|e| e.kind == EventKind::Put) {
                            op.event(&ev.kv.key, false, ev.kv.mod_revision);
                            return Ok(());
                        }
                    }
                    Some(Err(etcd_wire::Error::Compacted { .. })) | None => break,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }
    }

    /// Leaves, and waits until every participant has. Fails with [`Error::InvalidArgument`]
    /// without a prior successful [`enter`](Self::enter). Safe to call again after a failure.
    pub async fn leave(&mut self) -> Result<()> {
        let mut op = self.tracer.op("double-barrier", "leave");
        let Some((me, mine)) = self.entered.clone() else {
            return Err(Error::invalid("leave() before a successful enter()"));
        };
        let (waiters, client) = (self.waiters(), self.session.client().clone());
        let by_age = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_keys_only();
        loop {
            let resp = op.rpc("Range", &waiters, client.get(waiters.clone(), by_age.clone())).await?;
            let (Some(oldest), Some(newest)) = (resp.kvs.first(), resp.kvs.last()) else { break };
            let we_are_oldest = oldest.key == me && oldest.create_revision == mine;
            if resp.kvs.len() == 1 && we_are_oldest {
                // The last one out turns off the light.
                let done = fenced_delete(&me, mine).and_then([TxnOp::delete(self.ready(), DeleteOptions::new())]);
                if op.rpc("Txn", &me, client.txn(done)).await?.succeeded {
                    break;
                }
            } else if we_are_oldest {
                let own = Some((&me, mine));
                wait_deleted(&client, &newest.key, newest.create_revision, own, Some(&self.session), &mut op).await?;
            } else {
                if resp.kvs.iter().any(|kv| kv.key == me) {
                    op.rpc("Txn", &me, client.txn(fenced_delete(&me, mine))).await?;
                }
                wait_deleted(&client, &oldest.key, oldest.create_revision, None, None, &mut op).await?;
            }
        }
        self.entered = None;
        Ok(())
    }
}
