//! Waiting in line by create revision: the queue under [`Mutex`](crate::Mutex) and
//! [`Election`](crate::Election), both wire-compatible with Go's `concurrency` package.
//!
//! Each session stands in line as the key `<prefix><lease id in hex>`, bound to its lease; the key
//! with the smallest create revision is at the front. In RPCs:
//!
//! 1. [`join`]: `Txn If(CreateRevision(me) == 0)
//!    Then(Range(<prefix>, newest by create revision), Put(me, value, lease))
//!    Else(Range(me))`.
//!    The Range runs before the Put, so it names the newest key ahead of us: our predecessor. The
//!    Else branch means this session already stands in this line; we keep that key.
//! 2. [`wait_front`]: while there is a predecessor, wait for it to go (`wait.rs`: watch it and our
//!    own key from now, one Txn to close the gap), then one read-only Txn asks "do I still exist,
//!    and who is the newest key created before me?" Each waiter watches only its own predecessor,
//!    so a departure wakes one waiter, not all of them; and a waiter never assumes it is at the
//!    front because one predecessor left.

use bytes::Bytes;
use etcd_wire::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use crate::error::{Error, Result};
use crate::session::Session;
use crate::trace::OpTrace;
use crate::wait::wait_deleted;

/// Our place in line. While it holds `own` (we created the key in this call), dropping it (a
/// cancelled or failed wait) removes the key, fenced by its create revision.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) client: Client,
    pub(crate) key: Bytes,
    pub(crate) revision: i64,
    pub(crate) own: Option<OwnKey>,
    pub(crate) predecessor: Option<KeyValue>,
    /// The value our key held when we joined (the Else branch reads it).
    pub(crate) value: Bytes,
}

impl Place {
    /// The wait is over and the key stays (it now stands for a held lock or leadership).
    pub(crate) fn keep(&mut self) {
        if let Some(own) = self.own.take() {
            own.keep();
        }
    }
}

/// The key this session stands in line with: `<prefix><lease id in hex>`, as Go names it.
pub(crate) fn my_key(prefix: &[u8], session: &Session) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:x}", session.lease_id()).as_bytes());
    Bytes::from(key)
}

/// Step 1: stand in line (unless this session already does) and learn our predecessor.
pub(crate) async fn join(session: &Session, prefix: &Bytes, value: Bytes, op: &mut OpTrace) -> Result<Place> {
    session.check()?;
    let client = session.client();
    let key = my_key(prefix, session);
    let newest = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Descend).with_limit(1);
    let put = PutOptions::new().with_lease(session.lease_id());
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::get(prefix.clone(), newest.with_keys_only()), TxnOp::put(key.clone(), value.clone(), put)])
        .or_else([TxnOp::get(key.clone(), GetOptions::new())]);
    let resp = op.rpc("Txn", &key, client.txn(txn)).await.map_err(lease_gone)?;
    let first = resp.gets().next().and_then(|g| g.kvs.first().cloned());
    let own = resp.succeeded.then(|| OwnKey::new(client, key.clone(), resp.header.revision));
    let mut place =
        Place { client: client.clone(), key, revision: resp.header.revision, own, predecessor: None, value };
    if resp.succeeded {
        place.predecessor = check_blocker(first)?;
    } else {
        let mine = first.ok_or(Error::SessionExpired)?;
        (place.revision, place.value) = (mine.create_revision, mine.value);
        place.predecessor = predecessor(client, prefix, &place, op).await?;
    }
    Ok(place)
}

/// Step 2: returns once `place` is at the front of the line.
pub(crate) async fn wait_front(session: &Session, prefix: &Bytes, place: &mut Place, op: &mut OpTrace) -> Result<()> {
    while let Some(p) = place.predecessor.take() {
        op.note(|| format!("waiting on predecessor {} (create revision {})", p.key_str(), p.create_revision));
        let mine = Some((&place.key, place.revision));
        wait_deleted(&place.client, &p.key, p.create_revision, mine, Some(session), op).await?;
        place.predecessor = predecessor(&place.client, prefix, place, op).await?;
    }
    session.check()
}

/// Our key must still be ours; returns the newest key created before it.
async fn predecessor(client: &Client, prefix: &Bytes, place: &Place, op: &mut OpTrace) -> Result<Option<KeyValue>> {
    let before = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1)
        .with_keys_only()
        .with_create_revision_range(0, place.revision - 1);
    let txn = Txn::new().and_then([
        TxnOp::get(place.key.clone(), GetOptions::new().with_keys_only()),
        TxnOp::get(prefix.clone(), before),
    ]);
    let resp = op.rpc("Txn(next)", &place.key, client.txn(txn)).await?;
    let mut gets = resp.gets();
    if gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != place.revision) {
        // Our key is gone: the session's lease ended. Never report the front of the line.
        return Err(Error::SessionExpired);
    }
    check_blocker(gets.next().and_then(|g| g.kvs.first().cloned()))
}

/// Runs [`fenced_delete`]; whether it deleted.
pub(crate) async fn delete_fenced(client: &Client, key: &Bytes, revision: i64, op: &mut OpTrace) -> Result<bool> {
    Ok(op.rpc("Txn", key, client.txn(fenced_delete(key, revision))).await?.succeeded)
}

/// Every lock key (this crate's and Go's) is bound to a session's lease; a blocker without one is a
/// plain key that nobody will ever release, so waiting for it would wait forever.
pub(crate) fn check_blocker(kv: Option<KeyValue>) -> Result<Option<KeyValue>> {
    match kv {
        Some(kv) if kv.lease == 0 => Err(Error::ForeignKey { key: kv.key_str().into_owned() }),
        kv => Ok(kv),
    }
}

/// A put on a lease that no longer exists means the session is over.
pub(crate) fn lease_gone(e: etcd_wire::Error) -> Error {
    match e {
        etcd_wire::Error::LeaseNotFound { .. } => Error::SessionExpired,
        e => e.into(),
    }
}

/// `Txn If(CreateRevision(key) == revision) Then Delete(key)`: removes that incarnation only.
pub(crate) fn fenced_delete(key: &Bytes, revision: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(key.clone(), DeleteOptions::new())])
}

/// A key an operation created and must not leave behind if it does not finish: dropped before
/// [`keep`](Self::keep) (a cancelled or failed wait), it is deleted in the background, fenced by
/// its create revision.
#[derive(Debug)]
pub(crate) struct OwnKey {
    client: Client,
    pub(crate) key: Bytes,
    pub(crate) revision: i64,
    armed: bool,
}

impl OwnKey {
    pub(crate) fn new(client: &Client, key: Bytes, revision: i64) -> Self {
        OwnKey { client: client.clone(), key, revision, armed: true }
    }

    /// The operation finished: the key stays. Returns it with its create revision.
    pub(crate) fn keep(mut self) -> (Bytes, i64) {
        self.armed = false;
        (self.key.clone(), self.revision)
    }

    /// Deletes the key now (fenced); whether it still existed.
    pub(crate) async fn remove(mut self, op: &mut OpTrace) -> Result<bool> {
        self.armed = false;
        let resp = op.rpc("Txn", &self.key, self.client.txn(fenced_delete(&self.key, self.revision))).await?;
        Ok(resp.succeeded)
    }
}

impl Drop for OwnKey {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (client, txn) = (self.client.clone(), fenced_delete(&self.key, self.revision));
        rt.spawn(async move {
            if let Err(e) = client.txn(txn).await {
                tracing::debug!(error = %e, "removing an abandoned recipe key failed");
            }
        });
    }
}
