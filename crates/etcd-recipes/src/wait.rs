//! Waiting for a key to go away: the one blocking step every queue-style recipe shares.
//!
//! Go's `waitDelete` watches the key *from the revision it last read*. By the time the watch is
//! created that revision is usually in the past, so etcd files the watcher in its "unsynced" group,
//! which it only catches up every 100 ms: each handoff then costs ~100 ms however fast etcd is.
//!
//! Here the watch is created with no start revision, so it starts at the current revision and
//! goes straight to the "synced" group, notified as soon as a change commits. That leaves a gap
//! (the key may have been deleted between our last read and the watch's start), which one Range
//! *after* the watch is confirmed closes: if the key is already gone, we are done; if it is still
//! there, its deletion is after the watch's start and will arrive as an event.
//!
//! Keys are per lease and get re-created under the same name, so "the key" always means one
//! incarnation: the key with a given create revision. A delete, or a put with another create
//! revision, ends that incarnation.

use std::time::Duration;

use bytes::Bytes;
use etcd_wire::{Client, EventKind, GetOptions, Txn, TxnOp, WatchOptions, Watcher};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::session::Session;
use crate::trace::OpTrace;

/// Re-checks after this long, then this long again...: the hedge against a late watch (below).
const HEDGE: [Duration; 3] = [Duration::from_millis(10), Duration::from_millis(20), Duration::from_millis(40)];

/// Returns once the incarnation of `key` created at `create_revision` no longer exists.
///
/// With `mine` (our own queue key and its create revision), also watches that key: if it goes,
/// our lease is gone, and the wait fails at once with [`Error::SessionExpired`] instead of waiting
/// for predecessors that no longer matter (etcd #19597). Fails the same way as soon as `session`
/// (when given) ends. Both watches share the client's one watch stream; the gap check is one
/// read-only Txn.
///
/// A late watch: etcd picks a new watch's start revision, then registers it; a write committed in
/// between files the watch as unsynced after all (etcd 3.4 and 3.5 `v3rpc/watch.go` and
/// `watchable_store.go`), delaying its events by up to 100 ms. When the gap check shows no write
/// since the watch's creation revision, that cannot have happened and we just wait. Otherwise we
/// also re-check at 10, 30 and 70 ms: at most three extra Txns, only on waits that long.
pub(crate) async fn wait_deleted(
    client: &Client,
    key: &Bytes,
    create_revision: i64,
    mine: Option<(&Bytes, i64)>,
    session: Option<&Session>,
    op: &mut OpTrace,
) -> Result<()> {
    loop {
        let mut theirs = client.watch(key.clone(), WatchOptions::new()).await?;
        op.watch(key, theirs.created_revision());
        let mut own = match mine {
            Some((k, _)) => {
                let w = client.watch(k.clone(), WatchOptions::new().with_no_put()).await?;
                op.watch(k, w.created_revision());
                Some(w)
            }
            None => None,
        };
        let (verdict, checked_at) = check(client, key, create_revision, mine, op).await?;
        if let Some(done) = verdict {
            return done;
        }
        let created = theirs.created_revision().min(own.as_ref().map_or(i64::MAX, Watcher::created_revision));
        let mut hedge = if checked_at > created { &HEDGE[..] } else { &[] };
        loop {
            let delay = hedge.first().copied();
            let next = tokio::select! {
                next = theirs.next() => next,
                Some(gone) = own_key_gone(own.as_mut(), op) => return Err(gone),
                _ = session_lost(session) => return Err(Error::SessionExpired),
                () = sleep_or_never(delay) => {
                    hedge = &hedge[1..];
                    op.note(|| "re-checking: this watch may have been filed late".to_owned());
                    match check(client, key, create_revision, mine, op).await? {
                        (Some(done), _) => return done,
                        (None, _) => continue,
                    }
                }
            };
            match next {
                Some(Ok(resp)) => {
                    for ev in &resp.events {
                        op.event(&ev.kv.key, ev.kind == EventKind::Delete, ev.kv.mod_revision);
                        if ev.kind == EventKind::Delete || ev.kv.create_revision != create_revision {
                            return Ok(());
                        }
                    }
                }
                // The watch could not continue (compaction, a canceled stream): look again.
                Some(Err(etcd_wire::Error::Compacted { .. })) | None => break,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// One read-only Txn: is that incarnation of `key` gone (then `Ok`), or is ours (then
/// `SessionExpired`)? `None` while neither; with the revision the check saw.
async fn check(
    client: &Client,
    key: &Bytes,
    create_revision: i64,
    mine: Option<(&Bytes, i64)>,
    op: &mut OpTrace,
) -> Result<(Option<Result<()>>, i64)> {
    let mut txn = Txn::new().and_then([TxnOp::get(key.clone(), GetOptions::new().with_keys_only())]);
    if let Some((k, _)) = mine {
        txn = txn.and_then([TxnOp::get(k.clone(), GetOptions::new().with_keys_only())]);
    }
    let now = op.rpc("Txn(check)", key, client.txn(txn)).await?;
    let mut gets = now.gets();
    if gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != create_revision) {
        return Ok((Some(Ok(())), now.header.revision));
    }
    if let Some((_, my_rev)) = mine
        && gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != my_rev)
    {
        return Ok((Some(Err(Error::SessionExpired)), now.header.revision));
    }
    Ok((None, now.header.revision))
}

async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves with `SessionExpired` when our own key is deleted; never if there is no such watch
/// or it ends (the outer loop's checks then catch a lost key).
async fn own_key_gone(own: Option<&mut Watcher>, op: &mut OpTrace) -> Option<Error> {
    let Some(w) = own else { return std::future::pending().await };
    while let Some(Ok(resp)) = w.next().await {
        if let Some(ev) = resp.events.iter().find(|e| e.kind == EventKind::Delete) {
            op.event(&ev.kv.key, true, ev.kv.mod_revision);
            return Some(Error::SessionExpired);
        }
    }
    std::future::pending().await
}

/// Resolves when `session` ends; never without one.
pub(crate) async fn session_lost(session: Option<&Session>) {
    match session {
        Some(s) => {
            s.lost().await;
        }
        None => std::future::pending().await,
    }
}

/// Validates a lock or election name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("the name must not be empty"));
    }
    Ok(())
}
