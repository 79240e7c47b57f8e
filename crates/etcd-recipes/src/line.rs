//! Waiting in line by create revision: the queue under [`Mutex`](crate::Mutex),
//! [`Election`](crate::Election) and [`RwMutex`](crate::RwMutex), wire-compatible with Go's
//! `concurrency` package and `recipe.RWMutex`, and under [`Semaphore`](crate::Semaphore), whose
//! front holds N (its [`Rule::Permits`], at the end of these docs).
//!
//! A waiter stands in line as one key bound to its session's lease (`<prefix><lease id in hex>`
//! for the Mutex and Election, as Go names it; a unique name per acquisition for the RwMutex). It
//! waits for the *blockers*: keys under a prefix (the whole line, or only its writers) created
//! before its own. In RPCs:
//!
//! 1. [`join`]: `Txn If(CreateRevision(me) == 0)
//!    Then(Range(<blockers>, newest by create revision), Put(me, value, lease))
//!    Else(Range(me))`.
//!    The Range runs before the Put, so it names the newest blocker ahead of us: our predecessor.
//!    The Else branch means this session already stands in this line; we keep that key. The
//!    cleanup that removes our key is armed *before* the Txn is sent (fenced by our lease until
//!    the answer tells our create revision), so a lost answer leaves no key behind.
//!    The Range returns the *two* newest blockers ahead of us: our predecessor, and the one
//!    before it.
//! 2. [`Place::wait_front`]: while someone is ahead, watch the two newest blockers ahead and our
//!    own key from now (`wait.rs`), and read once to close the watches' gap, unless nothing was
//!    written since our last read (the watches' creation revision is that read's: they start
//!    right after it, and there is no gap). Then:
//!    - with two ahead, the older one's DELETE (normally the holder's release) means one read-only
//!      Txn: "do I still exist, and who are the two newest blockers created before me?" Our
//!      predecessor's watch stays open across it;
//!    - with one ahead, its DELETE puts us in front *without a read*: that one was alone ahead at
//!      a revision after our key was created, and keys created later stand behind us. So the
//!      handoff costs the release's commit and one watch event; the read that used to follow it
//!      happens earlier, off the handoff's path, when the holder before our predecessor leaves.
//!
//!    Each waiter watches at most two blockers, so a departure wakes at most two waiters, never
//!    all of them; and a waiter never assumes it is at the front because one predecessor left,
//!    only because the last one it saw ahead did (etcd #16221).
//!
//! A blocker without a lease is nobody's lock (a plain key): waiting for it would wait forever,
//! so the wait fails with [`Error::ForeignKey`].
//!
//! # N at the front ([`Rule::Permits`])
//!
//! With N permits, the N oldest keys hold and a waiter is in once fewer than N blockers were
//! created before it. Watching "the key N places ahead" alone is not enough: when a holder other
//! than the oldest leaves, the first waiter is in, yet the key N places ahead of it (the oldest
//! holder) is still there, and the one waiter woken (N behind the leaver) is not in; the permit
//! would sit idle until the oldest holder left. So the join and each read name the N + 1 newest
//! blockers ahead, and:
//!
//! - with fewer than N ahead, we are in;
//! - with exactly N ahead (we are the first waiter; they are the holders), we watch all N: any
//!   one's DELETE puts us in without a read, as with the Mutex's last key ahead;
//! - with more than N ahead, we watch only our predecessor (the waiter just ahead): its DELETE,
//!   or its *mark*, means one read and a new target.
//!
//! The mark: a waiter that gets in after waiting rewrites its own key once, fenced
//! (`Txn If(CreateRevision(me) == my revision) Then Put(me, value, lease)`): the PUT tells the
//! waiter behind it that it is now the first waiter and must watch the holders. So every change
//! reaches exactly one waiter: a holder's DELETE the first waiter, a mark or a waiter's DELETE the
//! waiter just behind it. A lost mark (its answer never came) costs no safety: the follower is
//! woken at the latest by that key's DELETE.

use bytes::Bytes;
use etcd_wire::{EventKind, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions};

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::Held;
use crate::lock::LockGuard;
use crate::session::{Session, Slot};
use crate::trace::OpTrace;
use crate::wait::{Step, Stop, Wait};

/// Our place in line. Until [`keep`](Self::keep) or [`into_guard`](Self::into_guard), dropping it
/// (a cancelled or failed wait) removes our key, fenced.
#[derive(Debug)]
pub(crate) struct Place {
    pub(crate) held: Held,
    /// The value our key held when we joined (the Else branch reads it).
    pub(crate) value: Bytes,
    blockers: Bytes,
    /// The newest blockers created before us (up to [`Rule::look`]), newest first, as of the last read.
    ahead: Vec<KeyValue>,
    rule: Rule,
    /// The revision `ahead` was read at.
    seen_at: i64,
    cleanup: Cleanup,
}

/// How many stand at the front, and what a waiter watches (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// One at the front: a waiter knows and watches the two newest blockers ahead (step 2).
    One,
    /// This many at the front: the first waiter watches them, the others their predecessor, and
    /// a waiter that gets in marks its key (module docs, "N at the front").
    Permits(usize),
}

impl Rule {
    /// How many may stand at the front.
    fn front(self) -> usize {
        match self {
            Rule::One => 1,
            Rule::Permits(n) => n,
        }
    }

    /// How many of the newest blockers ahead a read names.
    fn look(self) -> i64 {
        match self {
            Rule::One => 2,
            Rule::Permits(n) => i64::try_from(n).unwrap_or(i64::MAX - 1) + 1,
        }
    }

    /// How many of the `ahead` (newest first) to watch.
    fn watched(self, ahead: usize) -> usize {
        match self {
            Rule::Permits(n) if ahead > n => 1,
            _ => ahead,
        }
    }
}

/// The key a session stands in line with: `<prefix><lease id in hex>`, as Go names it.
pub(crate) fn my_key(prefix: &[u8], session: &Session) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:x}", session.lease_id()).as_bytes());
    Bytes::from(key)
}

/// Step 1: stand in line as `key` (unless this session already does) and learn our predecessor
/// among `blockers`. `slot` (the session's claim on the key, if any) is held until our key is
/// gone again.
pub(crate) async fn join(
    session: &Session,
    key: Bytes,
    blockers: Bytes,
    value: Bytes,
    slot: Option<Slot>,
    rule: Rule,
    op: &mut OpTrace,
) -> Result<Place> {
    session.check()?;
    let lease = session.lease_id();
    let mut cleanup = Cleanup::arm(op, Action::DeleteIfLease { key: key.clone(), lease }).with_slot(slot);
    let newest =
        GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Descend).with_limit(rule.look());
    let txn = Txn::new()
        .when([etcd_wire::Compare::create_revision(key.clone(), etcd_wire::CompareOp::Equal, 0)])
        .and_then([
            TxnOp::get(blockers.clone(), newest.with_keys_only()),
            TxnOp::put(key.clone(), value.clone(), PutOptions::new().with_lease(lease)),
        ])
        .or_else([TxnOp::get(key.clone(), GetOptions::new())]);
    let resp = op.txn("Txn", &key, txn).await?;
    let first: Vec<KeyValue> = resp.gets().next().map(|g| g.kvs.clone()).unwrap_or_default();
    let (revision, value, joined) = if resp.succeeded {
        (resp.header.revision, value, true)
    } else {
        let mine = first.first().cloned().ok_or(Error::SessionExpired)?;
        (mine.create_revision, mine.value, false)
    };
    cleanup.set(Action::FencedDelete { key: key.clone(), revision });
    let held = Held::new(session, key, revision);
    let mut place = Place { held, value, blockers, ahead: Vec::new(), rule, seen_at: resp.header.revision, cleanup };
    let ahead =
        if joined { check_blockers(first).map(|a| (a, resp.header.revision)) } else { place.read_ahead(op).await };
    match ahead {
        Ok((ahead, at)) => (place.ahead, place.seen_at) = (ahead, at),
        Err(err) => return Err(place.leave_with(err, op).await),
    }
    Ok(place)
}

impl Place {
    /// Whether we are at the front: fewer blockers ahead of us than the front holds.
    pub(crate) fn is_front(&self) -> bool {
        self.ahead.len() < self.rule.front()
    }

    /// Step 2: returns once we are at the front (nobody created before us remains among the
    /// blockers, or fewer than N with [`Rule::Permits`]).
    pub(crate) async fn wait_front(&mut self, op: &mut OpTrace) -> Result<()> {
        let stop = Stop::own_key(&self.held.session, &self.held.key, self.held.revision);
        let front = self.rule.front();
        let waited = !self.is_front();
        let mut wait: Option<Wait<'_>> = None;
        while !self.is_front() {
            let watched = &self.ahead[..self.rule.watched(self.ahead.len())];
            op.note(|| {
                let ahead: Vec<String> = watched
                    .iter()
                    .map(|kv| format!("{} (create revision {})", kv.key_str(), kv.create_revision))
                    .collect();
                format!("waiting on {}", ahead.join(" and "))
            });
            let keys: Vec<Bytes> = watched.iter().map(|kv| kv.key.clone()).collect();
            let wait = wait.get_or_insert_with(|| Wait::new(keys[0].clone(), WatchOptions::new(), stop));
            wait.retarget(&keys);
            let gone = match wait.next(op).await? {
                // New watches that start right after our last read (no write in between): they
                // miss nothing, so there is nothing to read.
                Step::Look if wait.opened_at() <= self.seen_at => {
                    op.note(|| format!("the watches start at revision {}: no gap to close", self.seen_at + 1));
                    wait.checked(self.seen_at);
                    continue;
                }
                // New watches: read, which also closes their gap.
                Step::Look => None,
                Step::Events(events) => {
                    let left = |kv: &KeyValue| {
                        events.iter().any(|ev| {
                            ev.kv.key == kv.key
                                && (ev.kind == EventKind::Delete || ev.kv.create_revision != kv.create_revision)
                        })
                    };
                    // A waiter watching only its predecessor reads again on its mark (module
                    // docs, "N at the front"); other rules ignore puts (an election's proclaim).
                    let relay = matches!(self.rule, Rule::Permits(_)) && watched.len() < self.ahead.len();
                    let marked = relay && events.iter().any(|ev| ev.kv.key == watched[0].key);
                    match watched.iter().position(left) {
                        Some(i) => Some(i),
                        None if marked => None,
                        None => continue,
                    }
                }
            };
            if gone.is_some() && self.ahead.len() == front {
                // One of the last `front` ahead left: we are in front (module docs, step 2).
                self.ahead.clear();
                break;
            }
            let (ahead, revision) = self.read_ahead(op).await?;
            (self.ahead, self.seen_at) = (ahead, revision);
            wait.checked(revision);
        }
        if waited && matches!(self.rule, Rule::Permits(_)) {
            self.mark(op).await?;
        }
        self.held.session.check()
    }

    /// Rewrites our key once, fenced, so the waiter watching it as its predecessor learns we got
    /// in (module docs, "N at the front"). Our key gone means our lease is.
    async fn mark(&self, op: &mut OpTrace) -> Result<()> {
        let put = PutOptions::new().with_lease(self.held.lease_id());
        let txn = self.held.txn().and_then([TxnOp::put(self.held.key.clone(), self.value.clone(), put)]);
        if op.txn("Txn(mark)", &self.held.key, txn).await?.succeeded { Ok(()) } else { Err(Error::SessionExpired) }
    }

    /// Step 2, and when the wait fails, leaves the line before returning the error: a `lock()` or
    /// `campaign()` that fails returns once its key is gone (if that removal fails too, it is
    /// handed to the background like a dropped wait's).
    pub(crate) async fn wait_front_or_leave(mut self, op: &mut OpTrace) -> Result<Place> {
        match self.wait_front(op).await {
            Ok(()) => Ok(self),
            Err(err) => Err(self.leave_with(err, op).await),
        }
    }

    /// Leaves the line now because of `err`, and gives `err` back (if leaving fails too, the
    /// cleanup goes on in the background).
    async fn leave_with(self, err: Error, op: &mut OpTrace) -> Error {
        if let Err(e) = self.leave(op).await {
            tracing::debug!(error = %e, "leaving the line failed; the cleanup goes on in the background");
        }
        err
    }

    /// Leaves the line now (fenced), e.g. after a failed `try_lock`. Disarmed only once it succeeded.
    pub(crate) async fn leave(self, op: &mut OpTrace) -> Result<()> {
        self.cleanup.run(op).await.map(drop)
    }

    /// The wait is over and the key stays (it stands for a held lock or leadership now).
    pub(crate) fn keep(self) -> Held {
        drop(self.cleanup.disarm());
        self.held
    }

    /// The wait is over: the key is a held lock, released by the guard.
    pub(crate) fn into_guard(self, op: &OpTrace) -> LockGuard {
        LockGuard::new(self.held, self.cleanup, op, None)
    }

    /// Our key must still be ours; returns the newest blockers created before it (up to
    /// [`Rule::look`]), and the revision of the read.
    async fn read_ahead(&self, op: &mut OpTrace) -> Result<(Vec<KeyValue>, i64)> {
        let before = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(self.rule.look())
            .with_keys_only()
            .with_create_revision_range(0, self.held.revision - 1);
        let txn = Txn::new().and_then([
            TxnOp::get(self.held.key.clone(), GetOptions::new().with_keys_only()),
            TxnOp::get(self.blockers.clone(), before),
        ]);
        let resp = op.txn("Txn(next)", &self.held.key, txn).await?;
        let mut gets = resp.gets();
        if gets.next().and_then(|g| g.kvs.first()).is_none_or(|kv| kv.create_revision != self.held.revision) {
            // Our key is gone: the session's lease ended. Never report the front of the line.
            return Err(Error::SessionExpired);
        }
        let ahead = check_blockers(gets.next().map(|g| g.kvs.clone()).unwrap_or_default())?;
        Ok((ahead, resp.header.revision))
    }
}

/// Every lock key (this crate's and Go's) is bound to a session's lease; a blocker without one is a
/// plain key that nobody will ever release, so waiting for it would wait forever.
pub(crate) fn check_blocker(kv: Option<KeyValue>) -> Result<Option<KeyValue>> {
    match kv {
        Some(kv) if kv.lease == 0 => Err(Error::ForeignKey { key: kv.key_str().into_owned() }),
        kv => Ok(kv),
    }
}

/// [`check_blocker`] for each blocker.
fn check_blockers(kvs: Vec<KeyValue>) -> Result<Vec<KeyValue>> {
    kvs.into_iter().map(|kv| check_blocker(Some(kv)).map(|kv| kv.unwrap_or_default())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaseless_blocker_is_foreign_and_a_leased_one_is_waited_for() {
        let kv = |lease| {
            let mut kv = KeyValue::default();
            (kv.key, kv.lease) = (Bytes::from_static(b"l/x"), lease);
            kv
        };
        assert!(matches!(check_blocker(Some(kv(0))), Err(Error::ForeignKey { key }) if key == "l/x"));
        assert_eq!(check_blocker(Some(kv(7))).ok().flatten().map(|k| k.lease), Some(7));
        assert!(matches!(check_blocker(None), Ok(None)));
    }
}
