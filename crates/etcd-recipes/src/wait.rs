//! Waiting: the one blocking mechanism every recipe shares. A [`Wait`] watches a key or prefix
//! *from now* and tells its caller when to read again; [`wait_deleted`] is the wait most recipes
//! need ("until this incarnation of a key is gone").
//!
//! Go's `waitDelete` watches the key *from the revision it last read*. By the time the watch is
//! created that revision is usually in the past, so etcd files the watcher in its "unsynced" group,
//! which it only catches up every 100 ms: each handoff then costs ~100 ms however fast etcd is.
//!
//! Here the watch is created with no start revision, so it starts at the current revision and
//! goes straight to the "synced" group, notified as soon as a change commits. That leaves a gap
//! (the state may have changed between our last read and the watch's start), which one read
//! *after* the watch is confirmed closes. So every wait is the same loop:
//!
//! ```text
//! loop {
//!     match wait.next().await? {
//!         Step::Look { .. } => read; done? return          (after the watch opened or re-opened)
//!         Step::Events(events) => done by these events? return (or read again)
//!     }
//! }
//! ```
//!
//! A late watch: etcd picks a new watch's start revision, then registers it; a write committed in
//! between files the watch as unsynced after all (etcd 3.4 and 3.5 `v3rpc/watch.go` and
//! `watchable_store.go`; etcd 3.7 picks both under one lock), and etcd catches an unsynced
//! watcher up only every 100 ms, so its events may come that late. The window is a few
//! microseconds, but under contention writes are constant, and a handoff that waits for a late
//! watch costs its p99. The hedge is a **twin watch**: every wait creates two identical watches
//! at once (pipelined on the client's watch stream, no extra round trip), whose windows are
//! distinct instants, so both are late only when two writes land in two such windows; events
//! reach the waiter from whichever delivers first, each revision once. It costs no RPC: earlier
//! versions re-read at 10, 30 and 70 ms instead, which under contention added up to three reads
//! to most waits and put a 10 ms step into the handoff p99.
//!
//! [`Stop`] ends a wait with [`Error::SessionExpired`] as soon as the lease it depends on is gone:
//! the session ends, a lock's own lease is lost, or our own key is deleted (etcd #19597).

use bytes::Bytes;
use etcd_wire::{Event, EventKind, GetOptions, KeepAliveStatus, Txn, TxnOp, WatchOptions, Watcher};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::session::Session;
use crate::trace::OpTrace;

/// What ends a wait with [`Error::SessionExpired`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stop<'a> {
    /// The session whose end ends the wait.
    pub(crate) session: Option<&'a Session>,
    /// A lease of the waiter's own (the lease TTL lock's), whose loss ends the wait.
    pub(crate) lease: Option<&'a KeepAliveStatus>,
    /// Our own key and its create revision: its deletion means our lease is gone.
    pub(crate) own: Option<(&'a Bytes, i64)>,
}

impl<'a> Stop<'a> {
    /// Ends when `session` ends.
    pub(crate) fn session(session: &'a Session) -> Self {
        Stop { session: Some(session), ..Stop::default() }
    }

    /// Ends when `session` ends or our key (`key` at `revision`) is deleted.
    pub(crate) fn own_key(session: &'a Session, key: &'a Bytes, revision: i64) -> Self {
        Stop { session: Some(session), lease: None, own: Some((key, revision)) }
    }

    /// Resolves when the wait must end; never if nothing can end it.
    async fn fired(&self) {
        tokio::select! {
            () = async { match self.session { Some(s) => drop(s.lost().await), None => std::future::pending().await } } => {}
            () = async { match self.lease { Some(l) => drop(l.lost().await), None => std::future::pending().await } } => {}
        }
    }

    fn check(&self) -> Result<()> {
        if self.session.is_some_and(Session::is_lost) || self.lease.is_some_and(KeepAliveStatus::is_lost) {
            return Err(Error::SessionExpired);
        }
        Ok(())
    }
}

/// What the waiter should do next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Read the state (the watch was just opened, or re-opened, so a change may have been
    /// missed), then call [`Wait::checked`].
    Look,
    /// Events on the watched key or prefix, in order, each revision once.
    Events(Vec<Event>),
}

/// How many identical watches a wait opens on each key it waits on (module docs: the hedge).
const TWINS: usize = 2;

/// One key or prefix a [`Wait`] watches: its twin watches (empty until opened) and the newest
/// revision passed on from them.
struct Target {
    key: Bytes,
    twins: Vec<Watcher>,
    /// Older events (the other twin's copy, or changes a read already showed) are not passed on.
    seen: i64,
}

/// Watches from now on one or more keys or prefixes (each twinned against a late watch, module
/// docs), re-opened when they break (compaction, a canceled stream), with the [`Stop`] signals.
/// See the module docs for the loop.
pub(crate) struct Wait<'a> {
    options: WatchOptions,
    stop: Stop<'a>,
    targets: Vec<Target>,
    own: Option<Watcher>,
    /// The newest creation revision among the watches the last opening step opened.
    opened_at: i64,
}

impl<'a> Wait<'a> {
    /// A wait on `key` with `options` (no start revision: the watch starts now).
    pub(crate) fn new(key: Bytes, options: WatchOptions, stop: Stop<'a>) -> Self {
        let mut wait = Wait { options, stop, targets: Vec::new(), own: None, opened_at: 0 };
        wait.retarget(&[key]);
        wait
    }

    /// From the next step on, watches exactly `keys`: the watches of keys already watched stay
    /// (with what they have seen), the others close, and new keys' watches open at the next step
    /// (which then returns [`Step::Look`]).
    pub(crate) fn retarget(&mut self, keys: &[Bytes]) {
        self.targets.retain(|t| keys.contains(&t.key));
        for key in keys {
            if !self.targets.iter().any(|t| t.key == key) {
                self.targets.push(Target { key: key.clone(), twins: Vec::new(), seen: 0 });
            }
        }
    }

    /// The next step. A call that finds watches to open opens them all at once and returns
    /// [`Step::Look`].
    pub(crate) async fn next(&mut self, op: &mut OpTrace) -> Result<Step> {
        self.stop.check()?;
        let opening: Vec<usize> = (0..self.targets.len()).filter(|&i| self.targets[i].twins.is_empty()).collect();
        let own = self.stop.own.filter(|_| self.own.is_none());
        if !opening.is_empty() || own.is_some() {
            let mut watches: Vec<(Bytes, WatchOptions)> = Vec::new();
            for &i in &opening {
                watches.extend(std::iter::repeat_n((self.targets[i].key.clone(), self.options.clone()), TWINS));
            }
            if let Some((key, _)) = own {
                watches.push((key.clone(), WatchOptions::new().with_no_put()));
            }
            let opened = op.watch_all(watches).await?;
            self.opened_at = opened.iter().map(Watcher::created_revision).max().unwrap_or(0);
            let mut opened = opened.into_iter();
            for &i in &opening {
                self.targets[i].twins = opened.by_ref().take(TWINS).collect();
            }
            self.own = self.own.take().or(opened.next());
            return Ok(Step::Look);
        }
        if self.targets.is_empty() {
            return Err(Error::Recipe("a wait with nothing to wait for".to_owned()));
        }
        loop {
            let watches = self.targets.iter_mut().flat_map(|t| t.twins.iter_mut().map(StreamExt::next));
            let (next, index) = tokio::select! {
                // Our own key first: when it went before the awaited change, the wait fails.
                biased;
                () = own_key_gone(self.own.as_mut(), self.stop.own.map_or(0, |(_, mine)| mine), op) => {
                    return Err(Error::SessionExpired);
                }
                () = self.stop.fired() => return Err(Error::SessionExpired),
                (next, index, _) = futures::future::select_all(watches) => (next, index),
            };
            let target = &mut self.targets[index / TWINS];
            match next {
                Some(Ok(resp)) => {
                    let events: Vec<Event> =
                        resp.events.into_iter().filter(|ev| ev.kv.mod_revision > target.seen).collect();
                    let Some(last) = events.last() else { continue };
                    target.seen = last.kv.mod_revision;
                    for ev in &events {
                        op.event(&ev.kv.key, ev.kind == EventKind::Delete, ev.kv.mod_revision);
                    }
                    return Ok(Step::Events(events));
                }
                // A watch could not continue (compaction, a canceled stream): open them all
                // again, and read again, since changes in between were not seen.
                Some(Err(etcd_wire::Error::Compacted { .. })) | None => {
                    for t in &mut self.targets {
                        t.twins.clear();
                    }
                    self.own = None;
                    return Box::pin(self.next(op)).await;
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The store revision the watches opened by the latest [`Step::Look`] start after (the
    /// newest of their creation revisions): a read at or after it leaves no gap. Each watch
    /// starts right after its own creation revision, so when that is no newer than the caller's
    /// last read, the watches miss nothing since that read.
    pub(crate) fn opened_at(&self) -> i64 {
        self.opened_at
    }

    /// A read made after the watches opened saw the store at `revision`: events up to it are
    /// not passed on.
    pub(crate) fn checked(&mut self, revision: i64) {
        for t in &mut self.targets {
            t.seen = t.seen.max(revision);
        }
    }
}

/// Returns once the incarnation of `key` created at `create_revision` no longer exists.
///
/// With [`Stop::own`], our own key is read and watched too: if it goes, our lease is gone and the
/// wait fails at once with [`Error::SessionExpired`] instead of waiting for predecessors that no
/// longer matter. Each read is one read-only Txn over both keys.
pub(crate) async fn wait_deleted(key: &Bytes, create_revision: i64, stop: Stop<'_>, op: &mut OpTrace) -> Result<()> {
    let mut wait = Wait::new(key.clone(), WatchOptions::new(), stop);
    loop {
        match wait.next(op).await? {
            Step::Look => match gone(key, create_revision, stop.own, op).await? {
                (Some(done), _) => return done,
                (None, revision) => wait.checked(revision),
            },
            Step::Events(events) => {
                if events.iter().any(|ev| ev.kind == EventKind::Delete || ev.kv.create_revision != create_revision) {
                    return Ok(());
                }
            }
        }
    }
}

/// Returns once `key` exists (a read shows it, or a PUT event arrives).
pub(crate) async fn wait_created(key: &Bytes, op: &mut OpTrace) -> Result<()> {
    let mut wait = Wait::new(key.clone(), WatchOptions::new().with_no_delete(), Stop::default());
    loop {
        match wait.next(op).await? {
            Step::Look => {
                let now = op.get(key, GetOptions::new().with_keys_only()).await?;
                if !now.kvs.is_empty() {
                    return Ok(());
                }
                wait.checked(now.header.revision);
            }
            Step::Events(events) => {
                if events.iter().any(|ev| ev.kind == EventKind::Put) {
                    return Ok(());
                }
            }
        }
    }
}

/// One read-only Txn: is that incarnation of `key` gone (then `Ok`), or is ours (then
/// `SessionExpired`)? `None` while neither; with the revision the read saw.
async fn gone(
    key: &Bytes,
    create_revision: i64,
    own: Option<(&Bytes, i64)>,
    op: &mut OpTrace,
) -> Result<(Option<Result<()>>, i64)> {
    let mut txn = Txn::new().and_then([TxnOp::get(key.clone(), GetOptions::new().with_keys_only())]);
    if let Some((k, _)) = own {
        txn = txn.and_then([TxnOp::get(k.clone(), GetOptions::new().with_keys_only())]);
    }
    let now = op.txn("Txn(check)", key, txn).await?;
    let mut gets = now.gets();
    if gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != create_revision) {
        return Ok((Some(Ok(())), now.header.revision));
    }
    if let Some((_, mine)) = own
        && gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != mine)
    {
        return Ok((Some(Err(Error::SessionExpired)), now.header.revision));
    }
    Ok((None, now.header.revision))
}

/// Resolves when our own key is deleted; never if there is no such watch or it ends (the reads
/// then catch a lost key).
async fn own_key_gone(own: Option<&mut Watcher>, mine: i64, op: &mut OpTrace) {
    let Some(w) = own else { return std::future::pending().await };
    while let Some(Ok(resp)) = w.next().await {
        // Only a delete after our key's creation is ours: a watch served by a member that has not
        // applied our join yet starts earlier and can report the previous incarnation's delete.
        if let Some(ev) = resp.events.iter().find(|e| e.kind == EventKind::Delete && e.kv.mod_revision > mine) {
            op.event(&ev.kv.key, true, ev.kv.mod_revision);
            return;
        }
    }
    std::future::pending().await
}

/// Validates a lock or election name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("the name must not be empty"));
    }
    Ok(())
}
