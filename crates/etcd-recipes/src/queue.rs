//! Queue and PriorityQueue: multi-producer, multi-consumer work queues, after Go's `recipe.Queue`
//! and `recipe.PriorityQueue`.
//!
//! An item is a key without a lease (it outlives its producer): `<key>/<name>` in a [`Queue`],
//! `<key>/<priority as 5 digits>/<name>` in a [`PriorityQueue`]. A name is `<R>-<unique>`, where
//! `R` (20 digits) is the store revision read just before the item is written, so names sort in
//! enqueue order: an enqueue that starts after another finished reads a revision at least that
//! other's write, which is larger than the revision in the other's name (concurrent enqueues have
//! no order to keep). In RPCs:
//!
//! - enqueue: `Range(<key>, count only)` for `R`, then `Txn If(CreateRevision(name) == 0) Then
//!   Put(name, value)` (a clash of names, practically impossible, draws another).
//! - dequeue: `Range(<key>/, first; limit 1)`, where first is the oldest create revision in a
//!   queue and the smallest key (lowest priority number, then oldest) in a priority queue. Then claim
//!   it: `Txn If(ModRevision(item) == its mod revision) Then Delete(item)`. A consumer that loses
//!   the race for an item looks again. An empty queue: watch `<key>/` for PUTs (from now, see
//!   `wait.rs`), `Range` again to close the gap, and look again after each put.
//!
//! An enqueue whose answer never arrives removes its item again (the cleanup is armed before the
//! Txn is sent, and the item's name is unique), so an enqueue that failed left nothing in the
//! queue, unless a consumer already took it. Dropping a `dequeue` future while it waits takes nothing. The claim is atomic, so no item is
//! handed out twice; but an item whose claim succeeded is gone even if the answer is lost on the
//! way back (a dropped future, a broken connection): delivery is at most once.

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use etcd_wire::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};

use crate::cleanup::{Action, Cleanup};
use crate::error::Result;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{Stop, Wait, check_name};

/// A FIFO queue under a key prefix. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    prefix: String,
    tracer: Tracer,
}

impl Queue {
    /// A queue whose items live under `key/`. Fails on an empty key.
    pub fn new(client: &Client, key: &str) -> Result<Queue> {
        check_name(key)?;
        Ok(Queue { client: client.clone(), prefix: format!("{key}/"), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Appends `value` to the queue.
    pub async fn enqueue(&self, value: impl Into<Bytes>) -> Result<()> {
        let mut op = self.tracer.op(&self.client, "queue", "enqueue");
        put_item(&self.prefix, value.into(), &mut op).await
    }

    /// Takes the oldest item, waiting for one while the queue is empty.
    pub async fn dequeue(&self) -> Result<Bytes> {
        let mut op = self.tracer.op(&self.client, "queue", "dequeue");
        take_first(&self.prefix, SortTarget::Create, &mut op).await
    }
}

/// A queue whose items come out lowest priority number first, and in FIFO order within a
/// priority. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct PriorityQueue {
    client: Client,
    prefix: String,
    tracer: Tracer,
}

impl PriorityQueue {
    /// A priority queue whose items live under `key/`. Fails on an empty key.
    pub fn new(client: &Client, key: &str) -> Result<PriorityQueue> {
        check_name(key)?;
        Ok(PriorityQueue { client: client.clone(), prefix: format!("{key}/"), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Adds `value` with `priority`; 0 comes out first.
    pub async fn enqueue(&self, value: impl Into<Bytes>, priority: u16) -> Result<()> {
        let mut op = self.tracer.op(&self.client, "priority-queue", "enqueue");
        let dir = format!("{}{priority:05}/", self.prefix);
        put_item(&dir, value.into(), &mut op).await
    }

    /// Takes the oldest item of the lowest priority number, waiting for one while the queue is empty.
    pub async fn dequeue(&self) -> Result<Bytes> {
        let mut op = self.tracer.op(&self.client, "priority-queue", "dequeue");
        take_first(&self.prefix, SortTarget::Key, &mut op).await
    }
}

/// A name no other process picks: a random tag drawn once per process, and a counter. Callers still
/// create keys with `If(CreateRevision == 0)` and draw again on a clash.
pub(crate) fn unique_name() -> String {
    static TAG: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tag = TAG.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(std::process::id()));
    format!("{tag:016x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Enqueue: creates `<dir><R>-<unique>` holding `value`.
async fn put_item(dir: &str, value: Bytes, op: &mut OpTrace) -> Result<()> {
    let dir_key = Bytes::from(dir.to_owned());
    let now = op.get(&dir_key, GetOptions::new().with_count_only()).await?;
    loop {
        let key = Bytes::from(format!("{dir}{:020}-{}", now.header.revision, unique_name()));
        // The name is unique: if the answer is lost, deleting the name undoes exactly this enqueue.
        let undo = Cleanup::arm(op, Action::DeleteIfValue { key: key.clone(), value: value.clone() });
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key.clone(),
            value.clone(),
            PutOptions::new(),
        )]);
        let created = op.txn("Txn", &key, txn).await?.succeeded;
        drop(undo.disarm());
        if created {
            return Ok(());
        }
    }
}

/// Dequeue: claims the first item under `prefix` in `order` (ascending), waiting while there is none.
async fn take_first(prefix: &str, order: SortTarget, op: &mut OpTrace) -> Result<Bytes> {
    let prefix = Bytes::from(prefix.to_owned());
    let first = GetOptions::new().with_prefix().with_sort(order, SortOrder::Ascend).with_limit(1);
    // Opened only once the queue is found empty: watch for new items, then look again (that look
    // finds anything put before the watch started; anything after arrives as an event).
    let mut wait: Option<Wait<'static>> = None;
    loop {
        let resp = op.get(&prefix, first.clone()).await?;
        if let Some(kv) = resp.kvs.into_iter().next() {
            let claim = Txn::new()
                .when([Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision)])
                .and_then([TxnOp::delete(kv.key.clone(), DeleteOptions::new())]);
            if op.txn("Txn", &kv.key, claim).await?.succeeded {
                return Ok(kv.value);
            }
            op.note(|| format!("{} was taken by another consumer", kv.key_str()));
            continue;
        }
        let puts = WatchOptions::new().with_prefix().with_no_delete();
        wait.get_or_insert_with(|| Wait::new(prefix.clone(), puts, Stop::default())).next(op).await?;
    }
}
