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
//!   our key. The revision of that put names this round.
//! - leave: `Range(<key>/waiters/ created before this round's ready)`. None left: done. Only us:
//!   `Txn If(CreateRevision(me) == mine) Then(Delete(me), Txn If(ModRevision(ready) == this round's)
//!   Then Delete(ready))`, done. We are the oldest: wait for the newest key's DELETE, then look
//!   again. Otherwise delete our key, wait for the oldest key's DELETE, look again. A participant
//!   whose session dies loses its key with the lease, so the others still leave. Looking only at
//!   this round's keys lets a fast participant enter the next round while a slow one still leaves
//!   this one: the barrier can be used for any number of rounds.
//!
//! Our key's cleanup is armed before the Txn that creates it, so a dropped `enter` future, or one
//! whose answer was lost, removes it. Our own session ending fails a waiting `enter` (and the
//! oldest participant's `leave`) with [`Error::SessionExpired`].

use bytes::Bytes;
use etcd_wire::{
    Client, Compare, CompareOp, DeleteOptions, EventKind, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::queue::unique_name;
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{Step, Stop, Wait, check_name, wait_deleted};

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

    /// Raises the barrier: creates its key (holding a unique value, so that a raise whose answer
    /// was lost can be undone without touching anyone else's). Fails with [`Error::Recipe`] if it
    /// is already raised.
    pub async fn hold(&self) -> Result<()> {
        let mut op = self.tracer.op(&self.client, "barrier", "hold");
        let value = Bytes::from(unique_name());
        let undo = Cleanup::arm(&op, Action::DeleteIfValue { key: self.key.clone(), value: value.clone() });
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), value, PutOptions::new())]);
        let raised = op.txn("Txn", &self.key, txn).await?.succeeded;
        drop(undo.disarm());
        if !raised {
            return Err(Error::Recipe(format!("barrier {} is already held", String::from_utf8_lossy(&self.key))));
        }
        Ok(())
    }

    /// Lowers the barrier: deletes its key, releasing every waiter. Releasing a lowered barrier is
    /// not an error.
    pub async fn release(&self) -> Result<()> {
        let mut op = self.tracer.op(&self.client, "barrier", "release");
        let client = self.client.clone();
        op.rpc("DeleteRange", &self.key, client.delete(self.key.clone(), DeleteOptions::new())).await?;
        Ok(())
    }

    /// Returns once the barrier's key does not exist (at once if it does not now). Cancel-safe.
    pub async fn wait(&self) -> Result<()> {
        let mut op = self.tracer.op(&self.client, "barrier", "wait");
        let Some(kv) = op.get(&self.key, GetOptions::new().with_keys_only()).await?.kvs.into_iter().next() else {
            return Ok(());
        };
        wait_deleted(&self.key, kv.create_revision, Stop::default(), &mut op).await
    }
}

/// A double barrier: [`enter`](Self::enter) waits until `count` participants have entered,
/// [`leave`](Self::leave) until all of them have left. One value is one participant; a session
/// may carry many. Usable for any number of rounds. See the module docs for the algorithm.
#[derive(Debug)]
pub struct DoubleBarrier {
    session: Session,
    key: String,
    count: usize,
    tracer: Tracer,
    /// From `enter` until `leave`: our key, its create revision, and the revision of this
    /// round's `ready` put.
    entered: Option<Entered>,
}

#[derive(Debug, Clone)]
struct Entered {
    key: Bytes,
    revision: i64,
    ready: i64,
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

    /// Enters, and waits until `count` participants have. Fails with [`Error::Recipe`] ("too many
    /// clients") when `count` participants are in already, leaving no key.
    pub async fn enter(&mut self) -> Result<()> {
        let mut op = self.tracer.op(self.session.client(), "double-barrier", "enter");
        if self.entered.is_some() {
            return Err(Error::invalid("this participant already entered the barrier"));
        }
        self.session.check()?;
        let waiters = self.waiters();
        let inside = op.get(&waiters, GetOptions::new().with_prefix().with_count_only()).await?;
        if usize::try_from(inside.count).unwrap_or(0) >= self.count {
            return Err(Error::Recipe("too many clients".into()));
        }
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::try_from(self.count).unwrap_or(i64::MAX))
            .with_keys_only();
        let (key, lease) = (Bytes::from(format!("{}/waiters/{}", self.key, unique_name())), self.session.lease_id());
        let mut me = Cleanup::arm(&op, Action::DeleteIfLease { key: key.clone(), lease });
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(key.clone(), Bytes::new(), PutOptions::new().with_lease(lease)),
            TxnOp::get(waiters.clone(), oldest),
        ]);
        let resp = op.txn("Txn", &key, txn).await?;
        if !resp.succeeded {
            return Err(Error::Recipe(format!(
                "participant name {} clashed; try again",
                String::from_utf8_lossy(&key)
            )));
        }
        let revision = resp.header.revision;
        me.set(Action::FencedDelete { key: key.clone(), revision });
        let first = resp.gets().next().map(|g| g.kvs.clone()).unwrap_or_default();
        // The Range ran after our Put, so it holds the keys created up to ours.
        let ready = if let Some(last) = first.get(self.count - 1) {
            if revision > last.create_revision {
                // `count` others got in before us (they raced past the first check).
                me.run(&mut op).await?;
                return Err(Error::Recipe("too many clients".into()));
            }
            // We are the `count`-th: let everyone in.
            let client = op.client().clone();
            let ready = self.ready();
            op.rpc("Put", &ready, client.put(ready.clone(), Bytes::new(), PutOptions::new())).await?.header.revision
        } else {
            self.wait_ready(revision, &mut op).await?
        };
        drop(me.disarm());
        self.entered = Some(Entered { key, revision, ready });
        Ok(())
    }

    /// Waits for a put of `<key>/ready` after `after` (our key's revision): the group is complete.
    /// Returns that put's revision.
    async fn wait_ready(&self, after: i64, op: &mut OpTrace) -> Result<i64> {
        let ready = self.ready();
        let mut wait = Wait::new(ready.clone(), WatchOptions::new().with_no_delete(), Stop::session(&self.session));
        loop {
            match wait.next(op).await? {
                Step::Look => {
                    let now = op.get(&ready, GetOptions::new().with_keys_only()).await?;
                    match now.kvs.first() {
                        Some(kv) if kv.mod_revision > after => return Ok(kv.mod_revision),
                        _ => wait.checked(now.header.revision),
                    }
                }
                Step::Events(events) => {
                    if let Some(ev) = events.iter().find(|e| e.kind == EventKind::Put) {
                        return Ok(ev.kv.mod_revision);
                    }
                }
            }
        }
    }

    /// Leaves, and waits until every participant of this round has. Fails with
    /// [`Error::InvalidArgument`] without a prior successful [`enter`](Self::enter). Safe to call
    /// again after a failure.
    pub async fn leave(&mut self) -> Result<()> {
        let mut op = self.tracer.op(self.session.client(), "double-barrier", "leave");
        let Some(Entered { key: me, revision: mine, ready }) = self.entered.clone() else {
            return Err(Error::invalid("leave() before a successful enter()"));
        };
        let waiters = self.waiters();
        // This round's participants: every key created before its ready put.
        let this_round = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_keys_only()
            .with_create_revision_range(0, ready - 1);
        loop {
            let resp = op.get(&waiters, this_round.clone()).await?;
            let (Some(oldest), Some(newest)) = (resp.kvs.first(), resp.kvs.last()) else { break };
            let we_are_oldest = oldest.key == me && oldest.create_revision == mine;
            if resp.kvs.len() == 1 && we_are_oldest {
                // The last one out turns off the light (this round's, not a next round's).
                let lights_off = Txn::new()
                    .when([Compare::mod_revision(self.ready(), CompareOp::Equal, ready)])
                    .and_then([TxnOp::delete(self.ready(), DeleteOptions::new())]);
                let done = Txn::new()
                    .when([Compare::create_revision(me.clone(), CompareOp::Equal, mine)])
                    .and_then([TxnOp::delete(me.clone(), DeleteOptions::new()), TxnOp::txn(lights_off)]);
                if op.txn("Txn", &me, done).await?.succeeded {
                    break;
                }
            } else if we_are_oldest {
                let stop = Stop::own_key(&self.session, &me, mine);
                wait_deleted(&newest.key, newest.create_revision, stop, &mut op).await?;
            } else {
                if resp.kvs.iter().any(|kv| kv.key == me) {
                    Cleanup::arm(&op, Action::FencedDelete { key: me.clone(), revision: mine }).run(&mut op).await?;
                }
                wait_deleted(&oldest.key, oldest.create_revision, Stop::default(), &mut op).await?;
            }
        }
        self.entered = None;
        Ok(())
    }
}
