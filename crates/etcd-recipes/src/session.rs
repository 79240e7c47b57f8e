//! Session: a lease kept alive for as long as the session lives, which every key a recipe writes
//! is bound to. When the process dies, keep-alives stop, the lease expires after its TTL and etcd
//! deletes the keys: a crashed holder releases its locks without anyone's help.
//!
//! In RPCs:
//! - `new`: `LeaseGrant(ttl)` (skipped with an existing lease), then the lease joins the client's
//!   shared `LeaseKeepAlive` stream, refreshed every TTL/3.
//! - `close`: stop refreshing, then `LeaseRevoke`, which deletes every key bound to the lease.
//! - `orphan`: stop refreshing only; the lease expires by itself after its TTL.
//!
//! [`Session::lost`] resolves when the lease can no longer be trusted: the server said it expired
//! or was revoked, no keep-alive answer arrived before its deadline, or the session was closed or
//! orphaned. Recipes check it, so a waiter whose session is gone fails with
//! [`Error::SessionExpired`] instead of waiting on (etcd #19597).

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_wire::{Client, LeaseLost};
use tokio::sync::{oneshot, watch};

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
    /// Dropping (or sending on) this stops the keep-alive task, which owns the keep-alive handle.
    stop: StdMutex<Option<oneshot::Sender<()>>>,
    end: Arc<watch::Sender<Option<SessionEnd>>>,
}

/// Options for [`Session::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionBuilder {
    client: Client,
    ttl: i64,
    lease: Option<i64>,
}

impl SessionBuilder {
    /// The lease TTL in seconds (default 60). Must be positive.
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
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
        let keep_alive = self.client.lease_keep_alive(lease).await?;
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
        let inner = Inner { client: self.client, lease, ttl, stop: StdMutex::new(Some(stop)), end };
        Ok(Session { inner: Arc::new(inner) })
    }
}

impl Session {
    /// A session with a fresh lease of the default TTL (60 s).
    pub async fn new(client: &Client) -> Result<Session> {
        Session::builder(client).build().await
    }

    /// A builder, to set the TTL or adopt an existing lease.
    pub fn builder(client: &Client) -> SessionBuilder {
        SessionBuilder { client: client.clone(), ttl: DEFAULT_TTL, lease: None }
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
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
