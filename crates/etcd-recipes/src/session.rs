//! Session: a lease kept alive for as long as the session lives, which every key a recipe writes
//! is bound to. When the process dies, keep-alives stop, the lease expires after its TTL and etcd
//! deletes the keys: a crashed holder releases its locks without anyone's help.
//!
//! In RPCs:
//! - `new`: `LeaseGrant(ttl)` (skipped with an existing lease), then the lease joins the client's
//!   shared `LeaseKeepAlive` stream, refreshed every TTL/3.
//! - `close`: stop refreshing, then `LeaseRevoke`, which deletes every key bound to the lease.
//! - `orphan`: stop refreshing only; the lease expires by itself after its TTL.
//! - `resume` (a restarted process, its lease from a [`ResumeToken`](crate::ResumeToken)): as
//!   `new` with an existing lease: `LeaseTimeToLive`, then the keep-alive stream.
//!
//! [`Session::lost`] resolves when the lease can no longer be trusted: the server said it expired
//! or was revoked, no keep-alive answer arrived before its deadline, or the session was closed or
//! orphaned. Recipes check it, so a waiter whose session is gone fails with
//! [`Error::SessionExpired`] instead of waiting on (etcd #19597).
//!
//! [`Session::valid_until`] is the instant before which the lease provably exists: the send time
//! of the latest answered keep-alive, plus the TTL that answer granted, minus a safety margin for
//! clock-rate drift ([`SessionBuilder::safety_margin`]). Through an `etcd grpc-proxy` that bound
//! does not hold as such: the proxy answers a keep-alive with the answer to its *own* latest
//! keep-alive, which it may have sent up to TTL/3 + 0.5 s before ours; raise the safety margin by
//! that much there.
//!
//! # One holder per session and name
//! A lock is held by a (session, name) pair: Go's key layout gives a session one key per lock
//! name, so two tasks that share a session and lock the same name would otherwise stand on the
//! same key. Every lock therefore first claims the session's local slot for its key: tasks sharing
//! a session queue for it in FIFO order, exactly as tasks in different sessions queue in etcd. A
//! slot is given back only when the lock is released *in etcd* (a dropped guard's background
//! release included), so locking again at once never races the previous release.
//!
//! The slots belong to one `Session` value and its clones. Two sessions built on the same lease
//! ([`SessionBuilder::lease`], e.g. a restarted process resuming it) are the same holder to etcd:
//! keep one such session per lease in a process, or they will share each other's locks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_wire::{Client, KeepAliveStatus, LeaseLost};
use tokio::sync::{OwnedMutexGuard, oneshot, watch};

use crate::error::{Error, Result};

/// The default session TTL, in seconds (Go's `concurrency` uses 60 too).
pub const DEFAULT_TTL: i64 = 60;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The lease was lost: expired, revoked elsewhere, or unanswered past its deadline.
    LeaseLost(LeaseLost),
    /// [`Session::orphan`] stopped the keep-alive.
    Orphaned,
    /// [`Session::close`] revoked the lease.
    Closed,
}

/// A lease with its keep-alive. Cheap to clone; clones share the lease.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    lease: i64,
    ttl: i64,
    margin: Duration,
    /// The keep-alive's state (deadline, loss), readable without keeping the lease alive.
    status: KeepAliveStatus,
    /// Dropping (or sending on) this stops the keep-alive task, which owns the keep-alive handle.
    stop: StdMutex<Option<oneshot::Sender<()>>>,
    end: Arc<watch::Sender<Option<SessionEnd>>>,
    /// One local slot per lock key: see "One holder per session and name" in the module docs.
    slots: StdMutex<HashMap<Bytes, Weak<tokio::sync::Mutex<()>>>>,
}

/// The claim of a session's local slot for one lock key; held by a waiter, then by its guard,
/// then by the guard's release until etcd confirmed it.
pub(crate) type Slot = OwnedMutexGuard<()>;

/// Options for [`Session::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionBuilder {
    client: Client,
    ttl: i64,
    lease: Option<i64>,
    margin: Option<Duration>,
}

impl SessionBuilder {
    /// The lease TTL in seconds (default 60). Must be positive.
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
        self
    }

    /// How much earlier than the lease's provable deadline [`Session::valid_until`] ends, to allow
    /// for the client's and the server's clocks running at slightly different rates. Default: 2%
    /// of the TTL, at least 10 ms. Must be shorter than the TTL.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Adopt an existing lease instead of granting one (e.g. to resume after a restart).
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = Some(id);
        self
    }

    /// Grants (or adopts) the lease and starts keeping it alive.
    pub async fn build(self) -> Result<Session> {
        if self.ttl <= 0 {
            return Err(Error::invalid(format!("session TTL must be positive, got {}", self.ttl)));
        }
        let (lease, ttl) = match self.lease {
            Some(id) => {
                let ttl = self.client.lease_time_to_live(id, false).await?;
                if ttl.ttl <= 0 {
                    return Err(Error::SessionExpired);
                }
                (id, ttl.granted_ttl)
            }
            None => {
                let granted = self.client.lease_grant(self.ttl, None).await?;
                (granted.id, granted.ttl)
            }
        };
        let margin = self.margin.unwrap_or_else(|| default_margin(ttl));
        if margin >= Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) {
            return Err(Error::invalid(format!("safety margin {margin:?} must be shorter than the TTL ({ttl} s)")));
        }
        let keep_alive = self.client.lease_keep_alive(lease).await?;
        let status = keep_alive.status();
        let end = Arc::new(watch::channel(None).0);
        let (stop, stopped) = oneshot::channel::<()>();
        // The task owns the keep-alive handle: it ends (and the refreshing with it) when the lease
        // is lost, or when the session is closed, orphaned or dropped (the sender goes away).
        let report = end.clone();
        tokio::spawn(async move {
            tokio::select! {
                reason = keep_alive.lost() => {
                    report.send_if_modified(|e| e.is_none() && e.replace(SessionEnd::LeaseLost(reason)).is_none());
                }
                _ = stopped => {}
            }
        });
        let inner = Inner {
            client: self.client,
            lease,
            ttl,
            margin,
            status,
            stop: StdMutex::new(Some(stop)),
            end,
            slots: StdMutex::default(),
        };
        Ok(Session { inner: Arc::new(inner) })
    }
}

impl Session {
    /// A session with a fresh lease of the default TTL (60 s).
    pub async fn new(client: &Client) -> Result<Session> {
        Session::builder(client).build().await
    }

    /// A session on an existing lease that a previous process (or client) kept alive, e.g. the
    /// lease of a [`ResumeToken`](crate::ResumeToken): `LeaseTimeToLive`, then the lease joins
    /// the client's keep-alive stream. Fails with [`Error::NotResumable`]`(`[`LeaseExpired`](crate::Unresumable::LeaseExpired)`)`
    /// when the lease is gone. See "One holder per session and name" above: resume a lease once.
    pub async fn resume(client: &Client, lease_id: i64) -> Result<Session> {
        if lease_id <= 0 {
            return Err(Error::invalid(format!("lease id {lease_id} is not positive")));
        }
        match Session::builder(client).lease(lease_id).build().await {
            Err(Error::SessionExpired) => Err(Error::NotResumable(crate::Unresumable::LeaseExpired)),
            other => other,
        }
    }

    /// A builder, to set the TTL or adopt an existing lease.
    pub fn builder(client: &Client) -> SessionBuilder {
        SessionBuilder { client: client.clone(), ttl: DEFAULT_TTL, lease: None, margin: None }
    }

    /// The session's lease ID.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease
    }

    /// The lease's granted TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.inner.ttl).unwrap_or(0))
    }

    /// The client the session uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the session has ended; [`lost`](Self::lost) says why.
    pub fn is_lost(&self) -> bool {
        self.inner.end.borrow().is_some()
    }

    /// The instant (monotonic clock) before which the session's lease provably still exists: the
    /// send time of the latest answered keep-alive, plus the TTL it granted, minus the safety
    /// margin. `None` once the session has ended. Every key the session holds lives at least
    /// until then, unless somebody deletes it.
    pub fn valid_until(&self) -> Option<Instant> {
        if self.is_lost() {
            return None;
        }
        self.valid_until_of(&self.inner.status)
    }

    /// The deadline of a kept-alive lease (the session's, or a lock's own), less the margin.
    pub(crate) fn valid_until_of(&self, status: &KeepAliveStatus) -> Option<Instant> {
        status.deadline().and_then(|d| d.checked_sub(self.inner.margin))
    }

    /// The safety margin [`valid_until`](Self::valid_until) subtracts.
    pub fn safety_margin(&self) -> Duration {
        self.inner.margin
    }

    /// Resolves when the session ends, with the reason. Cancel-safe; many may wait.
    pub async fn lost(&self) -> SessionEnd {
        let mut rx = self.inner.end.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(end) => end.unwrap_or(SessionEnd::Orphaned),
            Err(_) => SessionEnd::Orphaned,
        }
    }

    /// Stops the keep-alive without revoking: the lease expires after its TTL. Use it when the
    /// connection is in doubt (a revoke might not arrive) or to hand the lease to someone else.
    pub fn orphan(&self) {
        self.end(SessionEnd::Orphaned);
    }

    /// Stops the keep-alive and revokes the lease, deleting every key bound to it (so every lock
    /// and candidacy of this session ends at once).
    pub async fn close(&self) -> Result<()> {
        self.end(SessionEnd::Closed);
        match self.inner.client.lease_revoke(self.inner.lease).await {
            Ok(_) | Err(etcd_wire::Error::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn end(&self, why: SessionEnd) {
        lock(&self.inner.stop).take();
        self.inner.end.send_if_modified(|e| e.is_none() && e.replace(why).is_none());
    }

    /// Fails with [`Error::SessionExpired`] once the session has ended.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_lost() { Err(Error::SessionExpired) } else { Ok(()) }
    }

    /// Claims this session's local slot for lock `key`, waiting (FIFO) while another task of the
    /// session holds it or its release is still on the way. Fails when the session ends first.
    pub(crate) async fn claim(&self, key: &Bytes) -> Result<Slot> {
        let slot = self.slot(key);
        tokio::select! {
            claimed = slot.lock_owned() => Ok(claimed),
            _ = self.lost() => Err(Error::SessionExpired),
        }
    }

    /// [`claim`](Self::claim) without waiting: `None` while another task of the session holds it.
    pub(crate) fn try_claim(&self, key: &Bytes) -> Option<Slot> {
        let slot = self.slot(key);
        slot.try_lock_owned().ok()
    }

    fn slot(&self, key: &Bytes) -> Arc<tokio::sync::Mutex<()>> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get(key).and_then(Weak::upgrade) {
            return slot;
        }
        slots.retain(|_, s| s.strong_count() > 0);
        let slot = Arc::new(tokio::sync::Mutex::new(()));
        slots.insert(key.clone(), Arc::downgrade(&slot));
        slot
    }
}

/// 2% of the TTL, at least 10 ms.
fn default_margin(ttl: i64) -> Duration {
    (Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) / 50).max(Duration::from_millis(10))
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
