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
//! `watchable_store.go`), delaying its events by up to 100 ms. When a read shows no write since the
//! watch's creation revision, that cannot have happened. Otherwise the wait also asks for a read at
//! 10, 30 and 70 ms ([`Step::Look`] with `hedge: true`): at most three extra reads, only on waits
//! that long, and a failed hedge read is not an error (the watch is still there).
//!
//! [`Stop`] ends a wait with [`Error::SessionExpired`] as soon as the lease it depends on is gone:
//! the session ends, a lock's own lease is lost, or our own key is deleted (etcd #19597).

use std::time::Duration;

use bytes::Bytes;
use etcd_wire::{Event, EventKind, GetOptions, KeepAliveStatus, Txn, TxnOp, WatchOptions, Watcher};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::session::Session;
use crate::trace::OpTrace;

/// Hedge reads after this long, then this long again...: against a late watch (module docs).
const HEDGE: [Duration; 3] = [Duration::from_millis(10), Duration::from_millis(20), Duration::from_millis(40)];

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
    /// Read the state (the watch was just opened, or re-opened, so a change may have been missed;
    /// or, with `hedge`, the watch may have been filed late). Then call [`Wait::checked`].
    Look {
        /// A hedge read: if it fails, just keep waiting.
        hedge: bool,
    },
    /// Events on the watched key or prefix, in order.
    Events(Vec<Event>),
}

/// A watch from now on one key or prefix, re-opened when it breaks (compaction, a canceled
/// stream), with the [`Stop`] signals and the hedge. See the module docs for the loop.
pub(crate) struct Wait<'a> {
    key: Bytes,
    options: WatchOptions,
    stop: Stop<'a>,
    watch: Option<Watcher>,
    own: Option<Watcher>,
    hedge: &'static [Duration],
    /// Whether this watch's hedge was armed already: once per watch, never again after its
    /// three reads (a busy cluster's revision always moves on).
    hedged: bool,
}

impl<'a> Wait<'a> {
    /// A wait on `key` with `options` (no start revision: the watch starts now).
    pub(crate) fn new(key: Bytes, options: WatchOptions, stop: Stop<'a>) -> Self {
        Wait { key, options, stop, watch: None, own: None, hedge: &[], hedged: false }
    }

    /// The next step. The first call opens the watch and returns [`Step::Look`].
    pub(crate) async fn next(&mut self, op: &mut OpTrace) -> Result<Step> {
        self.stop.check()?;
        let Some(watch) = self.watch.as_mut() else {
            self.watch = Some(op.watch(&self.key, self.options.clone()).await?);
            if let Some((key, _)) = self.stop.own {
                self.own = Some(op.watch(key, WatchOptions::new().with_no_put()).await?);
            }
            (self.hedge, self.hedged) = (&[], false);
            return Ok(Step::Look { hedge: false });
        };
        loop {
            let delay = self.hedge.first().copied();
            let next = tokio::select! {
                next = watch.next() => next,
                () = own_key_gone(self.own.as_mut(), op) => return Err(Error::SessionExpired),
                () = self.stop.fired() => return Err(Error::SessionExpired),
                () = sleep_or_never(delay) => {
                    self.hedge = &self.hedge[1..];
                    op.note(|| "re-checking: this watch may have been filed late".to_owned());
                    return Ok(Step::Look { hedge: true });
                }
            };
            match next {
                Some(Ok(resp)) if resp.events.is_empty() => {}
                Some(Ok(resp)) => {
                    for ev in &resp.events {
                        op.event(&ev.kv.key, ev.kind == EventKind::Delete, ev.kv.mod_revision);
                    }
                    return Ok(Step::Events(resp.events));
                }
                // The watch could not continue (compaction, a canceled stream): open another,
                // and read again, since changes in between were not seen.
                Some(Err(etcd_wire::Error::Compacted { .. })) | None => {
                    (self.watch, self.own) = (None, None);
                    return Box::pin(self.next(op)).await;
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// A read made after the watch opened saw the store at `revision`: if anything was written
    /// since the watch's creation revision, the watch may have been filed late (module docs), so
    /// arm the hedge reads (once per watch).
    pub(crate) fn checked(&mut self, revision: i64) {
        let created = [&self.watch, &self.own].into_iter().flatten().map(Watcher::created_revision).min();
        if created.is_some_and(|c| revision > c) && !self.hedged {
            (self.hedge, self.hedged) = (&HEDGE, true);
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
            Step::Look { hedge } => match gone(key, create_revision, stop.own, op).await {
                Ok((Some(done), _)) => return done,
                Ok((None, revision)) => wait.checked(revision),
                Err(e) if hedge => op.note(|| format!("hedge read failed ({e}); still watching")),
                Err(e) => return Err(e),
            },
            Step::Events(events) => {
                if events.iter().any(|ev| ev.kind == EventKind::Delete || ev.kv.create_revision != create_revision) {
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

async fn sleep_or_never(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves when our own key is deleted; never if there is no such watch or it ends (the reads
/// then catch a lost key).
async fn own_key_gone(own: Option<&mut Watcher>, op: &mut OpTrace) {
    let Some(w) = own else { return std::future::pending().await };
    while let Some(Ok(resp)) = w.next().await {
        if let Some(ev) = resp.events.iter().find(|e| e.kind == EventKind::Delete) {
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
