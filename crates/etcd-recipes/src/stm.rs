//! STM: software transactional memory on etcd, after Go's `concurrency.NewSTM`.
//!
//! [`stm`] runs a closure against an [`Stm`] handle that remembers what the closure reads (the
//! read set, with each key's mod revision) and buffers what it writes (the write set), then
//! commits the writes in one Txn guarded by compares. A failed compare means another writer got in
//! between: the closure runs again from scratch. In RPCs, per attempt:
//!
//! 1. The first `get`/`rev` of each key: `Range(key)` (later ones are answered from the read set,
//!    and a key the closure wrote is answered from the write set).
//! 2. Commit: `Txn If(conflicts) Then(Put/Delete of the write set) Else(Range of every key read)`.
//!
//! | isolation | reads | commit compares |
//! |---|---|---|
//! | [`ReadCommitted`](Isolation::ReadCommitted) | serializable (the member's latest) | none: last writer wins |
//! | [`RepeatableReads`](Isolation::RepeatableReads) | serializable, each key once | `ModRevision(k) == as read`, every key read |
//! | [`Serializable`](Isolation::Serializable) | the first at the latest revision `R`, the rest at `R` | the same |
//! | [`SerializableSnapshot`](Isolation::SerializableSnapshot) | as `Serializable` | the same, and `ModRevision(w) < R + 1` for every key written |
//!
//! Only the serializable levels send the Else branch: a failed commit brings back the keys the
//! attempt read, and the next attempt reads them from there (no round trip) at that Txn's revision.
//!
//! Differences from Go: the closure's `Err` aborts the transaction (nothing is written) and is
//! returned as is; after [`StmOptions::max_attempts`] conflicting attempts it gives up with
//! [`Error::TooManyConflicts`] (Go retries forever); reads at revision `R` are linearizable, not
//! serializable, because the client balances requests across members and one that has not applied
//! `R` yet would fail a serializable read with "future revision".

use std::collections::HashMap;

use bytes::Bytes;
use etcd_wire::{Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp};

use crate::error::{Error, Result};

/// How an STM transaction's reads relate to concurrent writes; Go's levels, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Serializable, and also fails when a key it writes changed after its first read (write-write
    /// conflicts). Go's default.
    #[default]
    SerializableSnapshot,
    /// All reads see the store at the revision of the first read; commits only if no key read has
    /// changed since.
    Serializable,
    /// Each key reads the same within an attempt; commits only if no key read has changed since.
    RepeatableReads,
    /// Reads see any committed value; commits unconditionally.
    ReadCommitted,
}

impl Isolation {
    fn is_serializable(self) -> bool {
        matches!(self, Isolation::Serializable | Isolation::SerializableSnapshot)
    }
}

/// Options of [`stm_with`].
#[derive(Debug, Clone)]
#[must_use]
pub struct StmOptions {
    isolation: Isolation,
    max_attempts: u32,
    prefetch: Vec<Bytes>,
}

impl Default for StmOptions {
    fn default() -> Self {
        StmOptions::new(Isolation::default())
    }
}

impl StmOptions {
    /// How many attempts [`max_attempts`](Self::max_attempts) allows unless told otherwise.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 100;

    /// Options with `isolation`, [`DEFAULT_MAX_ATTEMPTS`](Self::DEFAULT_MAX_ATTEMPTS) and no prefetch.
    pub fn new(isolation: Isolation) -> Self {
        StmOptions { isolation, max_attempts: Self::DEFAULT_MAX_ATTEMPTS, prefetch: Vec::new() }
    }

    /// Gives up with [`Error::TooManyConflicts`] after this many conflicting attempts (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Reads these keys in one round trip before each attempt (Go's `WithPrefetch`), for a
    /// closure that reads them anyway.
    pub fn prefetch<K: Into<Bytes>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.prefetch.extend(keys.into_iter().map(Into::into));
        self
    }
}

/// Runs `apply` as a transaction with `isolation`, retrying it while it conflicts; returns what
/// the attempt that committed returned. An `Err` from `apply` aborts: nothing is written.
///
/// `apply` may borrow the handle across awaits and keep state between attempts. To run `stm` in a
/// spawned task, make it an `async move` closure: a closure that borrows its captures makes the
/// future fail the `Send` check ("implementation of `AsyncFnMut` is not general enough", a current
/// limitation of the compiler with async closures).
///
/// ```no_run
/// # async fn demo(client: etcd_wire::Client) -> etcd_recipes::Result<()> {
/// use etcd_recipes::{Isolation, stm};
///
/// let number = |v: Option<bytes::Bytes>| v.and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok());
/// // Move 10 from "a" to "b", atomically.
/// stm(&client, Isolation::SerializableSnapshot, async |tx| {
///     let a = number(tx.get("a").await?).unwrap_or(0);
///     let b = number(tx.get("b").await?).unwrap_or(0);
///     tx.put("a", (a - 10).to_string());
///     tx.put("b", (b + 10).to_string());
///     Ok::<_, etcd_recipes::Error>(())
/// })
/// .await
/// # }
/// ```
pub async fn stm<T, E, F>(client: &Client, isolation: Isolation, apply: F) -> Result<T, E>
where
    F: AsyncFnMut(&mut Stm) -> Result<T, E>,
    E: From<Error>,
{
    stm_with(client, StmOptions::new(isolation), apply).await
}

/// [`stm`] with [`StmOptions`].
pub async fn stm_with<T, E, F>(client: &Client, options: StmOptions, mut apply: F) -> Result<T, E>
where
    F: AsyncFnMut(&mut Stm) -> Result<T, E>,
    E: From<Error>,
{
    let mut stm = Stm::new(client, options.isolation);
    for _ in 0..options.max_attempts {
        stm.reset();
        stm.prefetch(&options.prefetch).await?;
        let out = apply(&mut stm).await?;
        if stm.commit().await? {
            return Ok(out);
        }
    }
    Err(Error::TooManyConflicts { attempts: options.max_attempts }.into())
}

/// The handle an STM closure reads and writes through. Writes are buffered until the commit.
#[derive(Debug)]
pub struct Stm {
    client: Client,
    isolation: Isolation,
    reads: HashMap<Bytes, Read>,
    /// `None` is a delete.
    writes: HashMap<Bytes, Option<Bytes>>,
    /// Serializable levels: the revision every read of this attempt is made at.
    snapshot: Option<i64>,
    /// What the last failed commit read back, and the revision it read at.
    prefetched: HashMap<Bytes, Read>,
    prefetch_revision: Option<i64>,
}

/// One key as read: absent or its key-value, and the store revision of the answer.
#[derive(Debug, Clone)]
struct Read {
    kv: Option<KeyValue>,
    revision: i64,
}

impl Stm {
    fn new(client: &Client, isolation: Isolation) -> Stm {
        Stm {
            client: client.clone(),
            isolation,
            reads: HashMap::new(),
            writes: HashMap::new(),
            snapshot: None,
            prefetched: HashMap::new(),
            prefetch_revision: None,
        }
    }

    /// The transaction's isolation level.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The key's value (`None` if it does not exist), as this transaction sees it: its own
    /// write if it made one, else the value read (adding the key to the read set).
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        let key = key.into();
        if let Some(write) = self.writes.get(&key) {
            return Ok(write.clone());
        }
        Ok(self.read(key).await?.map(|kv| kv.value.clone()))
    }

    /// The key's mod revision as read (0 if it does not exist), adding it to the read set. Ignores
    /// this transaction's own writes, like Go's `Rev`.
    pub async fn rev(&mut self, key: impl Into<Bytes>) -> Result<i64> {
        Ok(self.read(key.into()).await?.map_or(0, |kv| kv.mod_revision))
    }

    /// Writes `value` at `key` when the transaction commits.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.writes.insert(key.into(), None);
    }

    /// Starts an attempt afresh (keeping what the last failed commit read back).
    fn reset(&mut self) {
        self.reads.clear();
        self.writes.clear();
        self.snapshot = None;
    }

    /// The options of a read in this attempt; a serializable level's first read fixes the snapshot.
    fn read_options(&mut self) -> GetOptions {
        if !self.isolation.is_serializable() {
            return GetOptions::new().with_serializable();
        }
        if self.snapshot.is_none() {
            // Read at the revision the prefetched keys came from, so they belong to the snapshot.
            self.snapshot = self.prefetch_revision;
        }
        match self.snapshot {
            Some(rev) => GetOptions::new().with_revision(rev),
            None => GetOptions::new(),
        }
    }

    async fn read(&mut self, key: Bytes) -> Result<Option<&KeyValue>> {
        if !self.reads.contains_key(&key) {
            let options = self.read_options();
            let read = match self.prefetched.remove(&key) {
                Some(read) => read,
                None => {
                    let resp = self.client.get(key.clone(), options).await?;
                    Read { revision: resp.header.revision, kv: resp.kvs.into_iter().next() }
                }
            };
            if self.isolation.is_serializable() {
                self.snapshot.get_or_insert(read.revision);
            }
            self.reads.insert(key.clone(), read);
        }
        Ok(self.reads.get(&key).and_then(|r| r.kv.as_ref()))
    }

    /// Reads `keys` in one read-only Txn (those not read yet), then into the read set.
    async fn prefetch(&mut self, keys: &[Bytes]) -> Result<()> {
        let missing: Vec<Bytes> = keys
            .iter()
            .filter(|k| !self.reads.contains_key(*k) && !self.prefetched.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let options = self.read_options();
            let txn = Txn::new().and_then(missing.iter().map(|k| TxnOp::get(k.clone(), options.clone())));
            let resp = self.client.txn(txn).await?;
            for (key, got) in missing.into_iter().zip(resp.gets()) {
                self.prefetched.insert(key, Read { kv: got.kvs.first().cloned(), revision: resp.header.revision });
            }
        }
        for key in keys {
            self.read(key.clone()).await?;
        }
        Ok(())
    }

    /// The compares that hold exactly when nothing this attempt depends on has changed.
    fn conflicts(&self) -> Vec<Compare> {
        if self.isolation == Isolation::ReadCommitted {
            return Vec::new();
        }
        let mut cmps: Vec<Compare> = (self.reads.iter())
            .map(|(k, r)| {
                Compare::mod_revision(k.clone(), CompareOp::Equal, r.kv.as_ref().map_or(0, |kv| kv.mod_revision))
            })
            .collect();
        if let (Isolation::SerializableSnapshot, Some(rev)) = (self.isolation, self.snapshot) {
            cmps.extend(self.writes.keys().map(|k| Compare::mod_revision(k.clone(), CompareOp::Less, rev + 1)));
        }
        cmps
    }

    /// Commits the write set; `false` on a conflict (the serializable levels keep what it read back).
    async fn commit(&mut self) -> Result<bool> {
        let writes = self.writes.iter().map(|(k, w)| match w {
            Some(v) => TxnOp::put(k.clone(), v.clone(), PutOptions::new()),
            None => TxnOp::delete(k.clone(), DeleteOptions::new()),
        });
        let mut txn = Txn::new().when(self.conflicts()).and_then(writes);
        let serializable = self.isolation.is_serializable();
        let keys: Vec<Bytes> = if serializable { self.reads.keys().cloned().collect() } else { Vec::new() };
        txn = txn.or_else(keys.iter().map(|k| TxnOp::get(k.clone(), GetOptions::new())));
        let resp = self.client.txn(txn).await?;
        if resp.succeeded {
            return Ok(true);
        }
        let revision = resp.header.revision;
        self.prefetched = keys
            .into_iter()
            .zip(resp.gets())
            .map(|(k, g)| (k, Read { kv: g.kvs.first().cloned(), revision }))
            .collect();
        self.prefetch_revision = serializable.then_some(revision);
        Ok(false)
    }
}
