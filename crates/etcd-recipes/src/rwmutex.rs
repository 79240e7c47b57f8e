//! RwMutex: a revision-ordered readers-writer lock, after Go's `recipe.RWMutex`.
//!
//! Every `read_lock` queues as a key `<name>/read/<unique>`, every `write_lock` as
//! `<name>/write/<unique>`, bound to the session's lease; the queue order is the create revision.
//! A reader waits for every writer created before it; a writer waits for every key created before
//! it. In RPCs:
//!
//! 1. `Txn If(CreateRevision(me) == 0)
//!    Then(Range(<name>/write/ (reader) or <name>/ (writer), newest by create revision), Put(me, lease))`.
//!    The Range runs before the Put, so it names the newest blocker created before us: the one to
//!    wait for. None: the lock is ours (uncontended: this one Txn).
//! 2. While there is a blocker: watch it (from now, see `wait.rs`) along with our own key, `Range`
//!    to close the gap, and wait for its DELETE. Then one read-only Txn asks "do I still exist, and
//!    who is the newest blocker created before me?", and we wait again if there is one.
//! 3. Unlock: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`.
//!
//! Step 2 is the fix for etcd #16221: Go's waiter never checks its own key, so a writer whose session
//! expired while it waited still "gets" the lock once its predecessors go, alongside the writer that
//! queued behind it. Here a waiter whose key vanishes fails with [`Error::SessionExpired`] at once,
//! and a predecessor going away is never taken to mean the lock is ours: we look again. A dropped
//! `read_lock`/`write_lock` future removes its key; a failed `try_` leaves none.

use bytes::Bytes;
use etcd_wire::{Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp};

use crate::error::{Error, Result};
use crate::line::{OwnKey, lease_gone};
use crate::lock::{LockGuard, Release};
use crate::queue::unique_name;
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{check_name, wait_deleted};

/// A distributed readers-writer lock on a name, for one session: any number of readers, or one
/// writer. Fair: a reader queued after a writer waits for it. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct RwMutex {
    session: Session,
    prefix: String,
    tracer: Tracer,
}

/// Which side of the lock an acquisition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl RwMutex {
    /// A readers-writer lock on `name` (keys live under `name/`). Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<RwMutex> {
        check_name(name)?;
        Ok(RwMutex { session: session.clone(), prefix: format!("{name}/"), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the lock is held for reading: no writer queued before us remains.
    pub async fn read_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Read, "read_lock").await
    }

    /// Waits until the lock is held for writing: no key queued before us remains.
    pub async fn write_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Write, "write_lock").await
    }

    /// Takes the lock for reading if no writer holds or waits for it; otherwise fails with
    /// [`Error::Locked`], leaving no key.
    pub async fn try_read_lock(&self) -> Result<LockGuard> {
        self.try_lock(Side::Read, "try_read_lock").await
    }

    /// Takes the lock for writing if nobody holds or waits for it; otherwise fails with
    /// [`Error::Locked`], leaving no key.
    pub async fn try_write_lock(&self) -> Result<LockGuard> {
        self.try_lock(Side::Write, "try_write_lock").await
    }

    async fn lock(&self, side: Side, name: &'static str) -> Result<LockGuard> {
        let mut op = self.tracer.op("rwmutex", name);
        let (me, mut blocker) = self.enqueue(side, &mut op).await?;
        while let Some(b) = blocker {
            op.note(|| format!("waiting on {} (create revision {})", b.key_str(), b.create_revision));
            let mine = Some((&me.key, me.revision));
            wait_deleted(self.client(), &b.key, b.create_revision, mine, Some(&self.session), &mut op).await?;
            // Re-check: the key we waited on going away does not make the lock ours (etcd #16221).
            blocker = self.next_blocker(side, &me, &mut op).await?;
        }
        self.session.check()?;
        op.note(|| format!("acquired with fencing token {}", me.revision));
        Ok(self.guard(me, &op))
    }

    async fn try_lock(&self, side: Side, name: &'static str) -> Result<LockGuard> {
        let mut op = self.tracer.op("rwmutex", name);
        let (me, blocker) = self.enqueue(side, &mut op).await?;
        match blocker {
            None => Ok(self.guard(me, &op)),
            Some(_) => {
                me.remove(&mut op).await?;
                Err(Error::Locked)
            }
        }
    }

    fn client(&self) -> &Client {
        self.session.client()
    }

    /// The keys that block `side`: every writer for a reader, every key for a writer.
    fn blockers(&self, side: Side) -> Bytes {
        match side {
            Side::Read => Bytes::from(format!("{}write/", self.prefix)),
            Side::Write => Bytes::from(self.prefix.clone()),
        }
    }

    /// Step 1: create our key under a fresh name and learn the newest blocker created before it.
    async fn enqueue(&self, side: Side, op: &mut OpTrace) -> Result<(OwnKey, Option<KeyValue>)> {
        self.session.check()?;
        let dir = if side == Side::Read { "read" } else { "write" };
        let newest = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Descend).with_limit(1);
        loop {
            let key = Bytes::from(format!("{}{dir}/{}", self.prefix, unique_name()));
            let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([
                TxnOp::get(self.blockers(side), newest.clone().with_keys_only()),
                TxnOp::put(key.clone(), Bytes::new(), PutOptions::new().with_lease(self.session.lease_id())),
            ]);
            let resp = op.rpc("Txn", &key, self.client().txn(txn)).await.map_err(lease_gone)?;
            if resp.succeeded {
                let blocker = resp.gets().next().and_then(|g| g.kvs.first().cloned());
                return Ok((OwnKey::new(self.client(), key, resp.header.revision), blocker));
            }
            // The name was taken (practically impossible): draw another.
        }
    }

    /// Step 2's check: our key must still be ours; returns the newest blocker created before it.
    async fn next_blocker(&self, side: Side, me: &OwnKey, op: &mut OpTrace) -> Result<Option<KeyValue>> {
        let before = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only()
            .with_create_revision_range(0, me.revision - 1);
        let txn = Txn::new().and_then([
            TxnOp::get(me.key.clone(), GetOptions::new().with_keys_only()),
            TxnOp::get(self.blockers(side), before),
        ]);
        let resp = op.rpc("Txn", &me.key, self.client().txn(txn)).await?;
        let mut gets = resp.gets();
        if gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != me.revision) {
            // Our key is gone: the session's lease ended. Never report the lock as held.
            return Err(Error::SessionExpired);
        }
        Ok(gets.next().and_then(|g| g.kvs.first().cloned()))
    }

    fn guard(&self, me: OwnKey, op: &OpTrace) -> LockGuard {
        let (key, revision) = me.keep();
        LockGuard {
            client: self.client().clone(),
            key,
            revision,
            lease: self.session.lease_id(),
            release: Release::FencedDelete,
            stats: op.finish(),
            tracer: self.tracer.clone(),
            recipe: "rwmutex",
            released: false,
            keep_alive: None,
        }
    }
}
