//! Leases: [`Client::lease_grant`], [`Client::lease_revoke`], [`Client::lease_time_to_live`],
//! [`Client::leases`], and keeping leases alive with [`Client::lease_keep_alive_once`] or the shared
//! stream behind [`Client::lease_keep_alive`].
//!
//! # The keep-alive stream
//! Every lease a client (and all its clones) keeps alive shares one bidirectional
//! `Lease/LeaseKeepAlive` stream, owned by a background task that starts on first use:
//!
//! 1. Registering a lease sends `LeaseKeepAliveRequest { id }` at once; `lease_keep_alive` returns
//!    when the first `LeaseKeepAliveResponse` for that id arrives.
//! 2. An answer `{ id, ttl > 0 }` sets the lease's deadline to *the send time of the request it
//!    answers* + ttl, and schedules the next request for that send time + ttl/3. Counting from the
//!    send, not the arrival, keeps the client's deadline at or before the server's: the server
//!    started the TTL when it handled the request, after we sent it. A request still unanswered
//!    after ttl/3 is sent again.
//! 3. An answer with `ttl ≤ 0` means the lease is gone (expired or revoked): its owners see
//!    [`LeaseLost::Expired`] and it is no longer sent.
//! 4. When the stream fails, ends, or answers nothing for `clamp(ttl/3, 1 s, 5 s)` while requests
//!    are outstanding, it is dropped, its member is put in cool-down, and after a jittered backoff a
//!    new stream is opened on the next member, carrying one request for every lease at once. A
//!    rejected auth token is refreshed before that.
//! 5. Deadlines are checked on a timer whether or not a stream is up: a lease whose deadline passed
//!    must be presumed expired; its owners see [`LeaseLost::Deadline`] and it is no longer sent.
//! 6. The task holds only a weak reference to the client; every [`KeepAlive`] handle holds a strong
//!    one, so a handle keeps the stream (and its lease) alive after every `Client` clone was
//!    dropped. The task ends when no client clone and no handle is left; a [`KeepAliveStatus`]
//!    still watching then sees [`LeaseLost::ClientClosed`]. While no lease is registered the
//!    stream is closed.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::client::{Client, Inner};
use crate::error::{Error, Result};
use crate::pb::etcdserverpb as pb;
use crate::rpc::{Call, stub};
use crate::streams::keepalive::{Command, State, stopped};
use crate::types::{LeaseLost, ResponseHeader};

/// Answer to [`Client::lease_grant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LeaseGrantResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The lease's ID.
    pub id: i64,
    /// The TTL the server granted, in seconds (it may raise a TTL below its minimum).
    pub ttl: i64,
}

/// Answer to [`Client::lease_time_to_live`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LeaseTimeToLive {
    /// Response header.
    pub header: ResponseHeader,
    /// The lease's ID.
    pub id: i64,
    /// Seconds left; the lease expires in under `ttl + 1` seconds. **-1 if the lease does not
    /// exist** (never granted, expired or revoked): the server reports that as a TTL, not an error.
    pub ttl: i64,
    /// The TTL the lease was granted with, in seconds (0 if it does not exist).
    pub granted_ttl: i64,
    /// The keys attached to the lease (when asked for), limited to this client's namespace and
    /// with the namespace prefix stripped.
    pub keys: Vec<Bytes>,
}

/// A lease being kept alive by the client's shared keep-alive stream, from
/// [`Client::lease_keep_alive`]. Dropping it (or [`stop`](Self::stop)) stops this registration;
/// the lease is kept alive while any handle for it lives, even after every `Client` handle was
/// dropped. Neither revokes the lease.
#[derive(Debug)]
#[must_use = "dropping the handle stops keeping the lease alive"]
pub struct KeepAlive {
    id: i64,
    reg: i64,
    status: KeepAliveStatus,
    cmds: mpsc::UnboundedSender<Command>,
    /// The client's shared state: the keep-alive stream lives while any handle does, so a
    /// handle outliving every `Client` handle keeps its lease alive.
    _client: Arc<Inner>,
}

impl KeepAlive {
    /// The lease's ID.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL, in seconds, of the server's latest keep-alive answer (not updated after loss).
    pub fn ttl(&self) -> i64 {
        self.status.ttl()
    }

    /// The instant before which the lease provably still exists: the send time of the latest
    /// answered keep-alive plus the TTL that answer granted. See [`KeepAliveStatus::deadline`].
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.status.deadline()
    }

    /// Whether the lease has been lost; [`lost`](Self::lost) says why.
    pub fn is_lost(&self) -> bool {
        self.status.is_lost()
    }

    /// Resolves when the lease is lost, with the reason. Cancel-safe; any number of callers may
    /// wait at once.
    pub async fn lost(&self) -> LeaseLost {
        self.status.lost().await
    }

    /// A view of this lease's keep-alive state that does not itself keep the lease alive.
    pub fn status(&self) -> KeepAliveStatus {
        self.status.clone()
    }

    /// Stops keeping the lease alive for this handle (same as dropping it). Does not revoke.
    pub fn stop(self) {}
}

/// What the client knows of a kept-alive lease, from [`KeepAlive::status`]. Cheap to clone; unlike
/// the [`KeepAlive`] handle it does not keep the lease alive. Once every handle for the lease is
/// dropped, the status reports the lease lost ([`LeaseLost::ClientClosed`] if no other reason).
#[derive(Debug, Clone)]
pub struct KeepAliveStatus {
    state: watch::Receiver<State>,
}

impl KeepAliveStatus {
    /// The TTL, in seconds, of the server's latest keep-alive answer (not updated after loss).
    pub fn ttl(&self) -> i64 {
        self.state.borrow().ttl
    }

    /// The instant before which the lease provably still exists: the send time of the latest
    /// answered keep-alive plus the TTL that answer granted. The server starts that TTL when it
    /// handles the request, which is after we sent it, so (clocks running at the same rate) the
    /// lease cannot expire before this instant. `None` once the lease is lost.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        if self.is_lost() {
            return None;
        }
        self.state.borrow().deadline.map(Instant::into_std)
    }

    /// Whether the lease has been lost; [`lost`](Self::lost) says why.
    pub fn is_lost(&self) -> bool {
        self.state.borrow().lost.is_some() || self.state.has_changed().is_err()
    }

    /// Resolves when the lease is lost, with the reason. Cancel-safe; any number of callers may
    /// wait at once.
    pub async fn lost(&self) -> LeaseLost {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| s.lost.is_some()).await;
        let lost = rx.borrow().lost;
        lost.unwrap_or(LeaseLost::ClientClosed)
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.cmds.send(Command::Unregister { id: self.id, reg: self.reg });
    }
}

impl Client {
    /// Grants a lease of `ttl_secs` seconds, with the ID `id` or (`None`) one the server picks.
    /// Keys attached to it ([`PutOptions::with_lease`](crate::PutOptions::with_lease)) are deleted
    /// when it ends. `ttl_secs ≤ 0` or `id ≤ 0` fail with [`Error::InvalidArgument`] before any RPC.
    pub async fn lease_grant(&self, ttl_secs: i64, id: Option<i64>) -> Result<LeaseGrantResponse> {
        if ttl_secs <= 0 {
            return Err(Error::invalid("lease TTL must be positive"));
        }
        if id.is_some_and(|id| id <= 0) {
            return Err(Error::invalid("lease ID must be positive (None lets the server choose)"));
        }
        let req = pb::LeaseGrantRequest { ttl: ttl_secs, id: id.unwrap_or(0) };
        let r =
            self.call(Call::write("LeaseGrant"), |ch, meta| async move {
                stub::lease(ch).lease_grant(meta.request(req)).await
            })
            .await?;
        if !r.error.is_empty() {
            return Err(Status::unknown(r.error).into());
        }
        Ok(LeaseGrantResponse { header: ResponseHeader::from_pb(r.header), id: r.id, ttl: r.ttl })
    }

    /// Revokes lease `id`, deleting its keys. [`Error::LeaseNotFound`] if it does not exist.
    pub async fn lease_revoke(&self, id: i64) -> Result<ResponseHeader> {
        let r = self
            .call(Call::write("LeaseRevoke"), |ch, meta| async move {
                stub::lease(ch).lease_revoke(meta.request(pb::LeaseRevokeRequest { id })).await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// The remaining and granted TTL of lease `id`, and with `keys` its keys. A lease that does not
    /// exist is not an error: the server answers TTL -1. Read-only: retried on `Unavailable`.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLive> {
        let r = self
            .call(Call::read("LeaseTimeToLive"), |ch, meta| async move {
                stub::lease(ch).lease_time_to_live(meta.request(pb::LeaseTimeToLiveRequest { id, keys })).await
            })
            .await?;
        let prefix = self.ns.prefix();
        Ok(LeaseTimeToLive {
            header: ResponseHeader::from_pb(r.header),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys.into_iter().filter(|k| k.starts_with(prefix)).map(|k| self.ns.strip(k)).collect(),
        })
    }

    /// The IDs of all leases in the cluster. Read-only: retried on `Unavailable`.
    pub async fn leases(&self) -> Result<Vec<i64>> {
        let r = self
            .call(Call::read("LeaseLeases"), |ch, meta| async move {
                stub::lease(ch).lease_leases(meta.request(pb::LeaseLeasesRequest {})).await
            })
            .await?;
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// Renews lease `id` once, on a stream of its own, and returns its TTL in seconds.
    /// [`Error::LeaseNotFound`] if the lease does not exist. Retried on `Unavailable` (renewing
    /// twice is harmless).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64> {
        let r = self
            .call(Call::read("LeaseKeepAlive"), |ch, meta| async move {
                let requests = tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
                let mut answers = stub::lease(ch).lease_keep_alive(meta.request(requests)).await?.into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(tonic::Response::new(answer)),
                    None => Err(Status::unavailable("the keep-alive stream ended without an answer")),
                }
            })
            .await?;
        if r.ttl <= 0 {
            return Err(Error::LeaseNotFound { status: None });
        }
        Ok(r.ttl)
    }

    /// Keeps lease `id` alive until the returned handle is dropped, on the one keep-alive stream
    /// all of this client's leases share: renewed TTL/3 after each answer, the stream re-opened on
    /// another member after a failure, and [`KeepAlive::lost`] told when the server reports the
    /// lease gone or no answer came before its deadline (last answer + TTL).
    ///
    /// Returns once the server has answered the first keep-alive: [`Error::LeaseNotFound`] if the
    /// lease does not exist, [`Error::Timeout`] if no answer came within the request timeout.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<KeepAlive> {
        let hub = &self.inner.leases;
        let cmds = hub.sender();
        let reg = hub.next_id();
        let (tx, rx) = watch::channel(State::default());
        let handle =
            KeepAlive { id, reg, status: KeepAliveStatus { state: rx }, cmds, _client: Arc::clone(&self.inner) };
        handle.cmds.send(Command::Register { id, reg, state: tx }).map_err(|_| stopped())?;
        let mut rx = handle.status.state.clone();
        let first = async move { rx.wait_for(|s| s.ttl > 0 || s.lost.is_some()).await.map(|s| s.clone()) };
        let state = match self.timeout() {
            Some(after) => tokio::time::timeout(after, first).await.map_err(|_| Error::Timeout { after })?,
            None => first.await,
        };
        match state {
            Ok(State { ttl, .. }) if ttl > 0 => Ok(handle),
            Ok(State { lost: Some(LeaseLost::Expired), .. }) => Err(Error::LeaseNotFound { status: None }),
            _ => Err(stopped()),
        }
    }
}
