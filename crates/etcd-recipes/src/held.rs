//! What a held lock or leadership stands on, and how long it can be trusted: the part
//! [`LockGuard`](crate::LockGuard) and [`Leadership`](crate::Leadership) share.
//!
//! A hold is one key at one create revision (the fencing token), bound to a lease. It owns its
//! [`Session`], so the lease is kept alive while the hold lives even if every other handle was
//! dropped. It can tell:
//! - [`valid_until`](Held::valid_until): the instant before which the lock is provably still ours,
//!   unless somebody deletes the key: the send time of the lease's latest answered keep-alive, plus
//!   the TTL it granted, minus the session's safety margin (Chubby's lease rule);
//! - [`lost`](Held::lost): resolves when the hold can no longer be trusted: its lease ended, its key
//!   was deleted or replaced, or `valid_until` passed with no fresher keep-alive answer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_wire::{Compare, CompareOp, KeepAliveStatus, Txn};

use crate::error::{Error, Result};
use crate::session::{Session, SessionEnd};
use crate::trace::Tracer;
use crate::wait::{Stop, wait_deleted};

/// Why a held lock or leadership can no longer be trusted: the answer of
/// [`LockGuard::lost`](crate::LockGuard::lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lost {
    /// The lease under the key ended (expired, revoked, closed, orphaned).
    Lease(SessionEnd),
    /// The key was deleted or replaced by another incarnation.
    KeyGone,
    /// [`valid_until`](crate::LockGuard::valid_until) passed with no fresher keep-alive answer:
    /// the lease may have expired on the server.
    Expired,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Lease(end) => write!(f, "its lease ended ({end:?})"),
            Lost::KeyGone => f.write_str("its key was deleted"),
            Lost::Expired => f.write_str("no keep-alive answer before its validity ended"),
        }
    }
}

/// One key at one create revision, on the session's lease or (the lease TTL lock) a lease of its own.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) session: Session,
    pub(crate) key: Bytes,
    pub(crate) revision: i64,
    /// The lock's own lease, when the key is not on the session's.
    pub(crate) own_lease: Option<(i64, KeepAliveStatus)>,
    /// When the hold began, and whether its loss was counted (shared by clones: once per hold).
    meter: Arc<Meter>,
}

/// What [`observe`](crate::observe) needs of one hold.
#[derive(Debug)]
struct Meter {
    since: Instant,
    loss_counted: AtomicBool,
}

impl Meter {
    fn now() -> Arc<Meter> {
        Arc::new(Meter { since: Instant::now(), loss_counted: AtomicBool::new(false) })
    }
}

impl Held {
    pub(crate) fn new(session: &Session, key: Bytes, revision: i64) -> Self {
        Held { session: session.clone(), key, revision, own_lease: None, meter: Meter::now() }
    }

    /// The same key, held from now on (a waiter's key was created when it joined the line; its
    /// hold begins when it reaches the front).
    pub(crate) fn started(self) -> Self {
        Held { meter: Meter::now(), ..self }
    }

    /// When the hold began.
    pub(crate) fn since(&self) -> Instant {
        self.meter.since
    }

    /// Counts the hold as lost for `why` (`None`: a release found it gone), once per hold.
    pub(crate) fn count_loss(&self, recipe: &'static str, why: Option<Lost>) {
        if !self.meter.loss_counted.swap(true, Ordering::Relaxed) {
            crate::observe::lost(recipe, why);
        }
    }

    /// [`lost`](Self::lost), counted for `recipe`.
    pub(crate) async fn lost_for(&self, recipe: &'static str) -> Lost {
        let why = self.lost().await;
        self.count_loss(recipe, Some(why));
        why
    }

    /// The lease the key is bound to.
    pub(crate) fn lease_id(&self) -> i64 {
        self.own_lease.as_ref().map_or(self.session.lease_id(), |(id, _)| *id)
    }

    /// `CreateRevision(key) == revision`: holds exactly while this incarnation of the key exists.
    pub(crate) fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// A Txn already guarded by [`is_owner`](Self::is_owner).
    pub(crate) fn txn(&self) -> Txn {
        Txn::new().when([self.is_owner()])
    }

    pub(crate) fn valid_until(&self) -> Option<Instant> {
        match &self.own_lease {
            None => self.session.valid_until(),
            Some((_, status)) => self.session.valid_until_of(status),
        }
    }

    pub(crate) async fn lost(&self) -> Lost {
        tokio::select! {
            biased;
            end = self.lease_lost() => Lost::Lease(end),
            () = self.key_gone() => Lost::KeyGone,
            () = self.overdue() => Lost::Expired,
        }
    }

    /// Runs `work` until the hold is lost ([`lost_for`](Self::lost_for) `recipe`).
    pub(crate) async fn while_held<F: Future>(&self, recipe: &'static str, work: F) -> Result<F::Output> {
        tokio::select! {
            biased;
            lost = self.lost_for(recipe) => Err(Error::LockLost(lost)),
            out = work => Ok(out),
        }
    }

    async fn lease_lost(&self) -> SessionEnd {
        match &self.own_lease {
            None => self.session.lost().await,
            Some((_, status)) => SessionEnd::LeaseLost(status.lost().await),
        }
    }

    /// Resolves when this incarnation of the key is gone. A wait that fails (a transport error)
    /// is tried again: the other signals of [`lost`](Self::lost) cover a real loss meanwhile.
    async fn key_gone(&self) {
        let mut op = Tracer::default().op(self.session.client(), "guard", "lost");
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = wait_deleted(&self.key, self.revision, Stop::default(), &mut op).await {
            tracing::debug!(error = %e, ?backoff, "watching a held key failed; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Resolves once `valid_until` has passed (it only moves forward while keep-alives answer).
    async fn overdue(&self) {
        while let Some(until) = self.valid_until().filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_reasons_read_as_sentences() {
        assert_eq!(Lost::KeyGone.to_string(), "its key was deleted");
        assert!(Lost::Expired.to_string().contains("keep-alive"));
        assert!(Lost::Lease(SessionEnd::Closed).to_string().contains("Closed"));
    }
}
