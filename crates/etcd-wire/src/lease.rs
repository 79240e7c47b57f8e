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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use crate::client::{Client, Idempotency, Inner, MAX_RESPONSE_BYTES, needs_new_token};
use crate::error::{Error, Result};
use crate::kv::ResponseHeader;
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, lease_client::LeaseClient};
use crate::transport::Member;

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

/// Why a kept-alive lease is no longer kept alive: the answer of [`KeepAlive::lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLost {
    /// The server answered a keep-alive with TTL ≤ 0: the lease expired or was revoked, by this or
    /// any other client (etcd does not say which). A lease that did not exist when keep-alive started
    /// is not reported here: [`Client::lease_keep_alive`] fails with [`Error::LeaseNotFound`].
    Expired,
    /// No keep-alive answer arrived before the lease's deadline (the last answer plus its TTL), so
    /// the lease must be presumed expired even if the cluster has not decided so yet.
    Deadline,
    /// Nothing keeps the lease alive any more: every handle for it and every clone of the client
    /// were dropped (seen only through a [`KeepAliveStatus`]).
    ClientClosed,
}

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseLost::Expired => "lease expired or revoked",
            LeaseLost::Deadline => "no keep-alive answer before the lease's deadline",
            LeaseLost::ClientClosed => "client closed",
        })
    }
}

/// A lease being kept alive by the client's shared keep-alive stream, from
/// [`Client::lease_keep_alive`]. Dropping it (or [`stop`](Self::stop)) stops this registration;
/// the lease is kept alive while any handle for it lives, even after every `Client` handle was
/// dropped. Neither revokes the lease.
#[derive(Debug)]
#[must_use = "dropping the handle stops keeping the lease alive"]
pub struct KeepAlive {
    id: i64,
    reg: u64,
    status: KeepAliveStatus,
    cmds: mpsc::UnboundedSender<Command>,
    /// The client's shared state: the keep-alive stream lives while any handle does, so a
    /// handle outliving every `Client` handle keeps its lease alive.
    _client: Arc<crate::client::Inner>,
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
        let r = self
            .unary("LeaseGrant", Idempotency::Write, |ch, meta| async move {
                LeaseClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES).lease_grant(meta.request(req)).await
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
            .unary("LeaseRevoke", Idempotency::Write, |ch, meta| async move {
                LeaseClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .lease_revoke(meta.request(pb::LeaseRevokeRequest { id }))
                    .await
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// The remaining and granted TTL of lease `id`, and with `keys` its keys. A lease that does not
    /// exist is not an error: the server answers TTL -1. Read-only: retried on `Unavailable`.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLive> {
        let r = self
            .unary("LeaseTimeToLive", Idempotency::ReadOnly, |ch, meta| async move {
                LeaseClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .lease_time_to_live(meta.request(pb::LeaseTimeToLiveRequest { id, keys }))
                    .await
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
            .unary("LeaseLeases", Idempotency::ReadOnly, |ch, meta| async move {
                LeaseClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .lease_leases(meta.request(pb::LeaseLeasesRequest {}))
                    .await
            })
            .await?;
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// Renews lease `id` once, on a stream of its own, and returns its TTL in seconds.
    /// [`Error::LeaseNotFound`] if the lease does not exist. Retried on `Unavailable` (renewing
    /// twice is harmless).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64> {
        let r = self
            .unary("LeaseKeepAlive", Idempotency::ReadOnly, |ch, meta| async move {
                let requests = tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
                let mut answers = LeaseClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .lease_keep_alive(meta.request(requests))
                    .await?
                    .into_inner();
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
        let cmds = hub.sender(&self.inner);
        let reg = hub.next_reg.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(State::default());
        let handle =
            KeepAlive { id, reg, status: KeepAliveStatus { state: rx }, cmds, _client: Arc::clone(&self.inner) };
        handle.cmds.send(Command::Register { id, reg, state: tx }).map_err(|_| stopped())?;
        let mut rx = handle.status.state.clone();
        let first = async move { rx.wait_for(|s| s.ttl > 0 || s.lost.is_some()).await.map(|s| s.clone()) };
        let state = match self.inner.options.request_timeout {
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

fn stopped() -> Error {
    Error::Unavailable { status: Box::new(Status::unavailable("the lease keep-alive task has stopped")) }
}

/// What a handle sees: the latest TTL, the deadline it implies and, once lost, why.
#[derive(Debug, Clone, Default)]
struct State {
    ttl: i64,
    deadline: Option<Instant>,
    lost: Option<LeaseLost>,
}

/// Messages from handles to the keep-alive task.
#[derive(Debug)]
enum Command {
    Register { id: i64, reg: u64, state: watch::Sender<State> },
    Unregister { id: i64, reg: u64 },
}

/// The client's shared keep-alive stream: a channel to its task, started on first use.
#[derive(Debug, Default)]
pub(crate) struct KeepAliveHub {
    cmds: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_reg: AtomicU64,
}

impl KeepAliveHub {
    /// The channel to the task, starting the task if it is not running.
    fn sender(&self, inner: &Arc<Inner>) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.cmds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            inner: Arc::downgrade(inner),
            cmds: rx,
            leases: HashMap::new(),
            link: None,
            retry_at: Instant::now(),
            failures: 0,
        };
        tokio::spawn(task.run());
        *slot = Some(tx.clone());
        tx
    }
}

/// How often the task wakes at least, to notice a dropped client, while leases are kept.
const TICK: Duration = Duration::from_millis(500);

/// One kept-alive lease and its registrations.
struct Lease {
    regs: HashMap<u64, watch::Sender<State>>,
    /// Latest TTL the server answered; 0 before the first answer.
    ttl: i64,
    /// Send time of the latest answered request + TTL; `None` before the first answer.
    deadline: Option<Instant>,
    next_send: Instant,
    /// Send times of this lease's requests on the current stream not answered yet, oldest first
    /// (the server answers a stream's requests in order).
    sent: VecDeque<Instant>,
}

/// The current stream.
struct Link {
    /// The answers; opening the stream is its first step (etcd sends headers with the first answer).
    answers: BoxStream<'static, Result<pb::LeaseKeepAliveResponse, Status>>,
    tx: mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
    member: Arc<Member>,
    generation: u64,
    /// Requests sent and not yet answered.
    outstanding: usize,
    /// Last answer, or the send that made `outstanding` non-zero.
    progress: Instant,
}

/// The background task behind [`KeepAliveHub`].
struct Task {
    inner: Weak<Inner>,
    cmds: mpsc::UnboundedReceiver<Command>,
    leases: HashMap<i64, Lease>,
    link: Option<Link>,
    retry_at: Instant,
    failures: u32,
}

impl Task {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            if self.inner.strong_count() == 0 {
                return self.end_all(LeaseLost::ClientClosed);
            }
            let expired: Vec<i64> =
                self.leases.iter().filter(|(_, l)| l.deadline.is_some_and(|d| d <= now)).map(|(id, _)| *id).collect();
            for id in expired {
                self.end(id, LeaseLost::Deadline);
            }
            if self.leases.is_empty() {
                self.link = None;
            } else {
                if self.link.as_ref().is_some_and(|l| l.outstanding > 0 && now >= l.progress + self.stall_timeout()) {
                    self.fail(None);
                }
                if self.link.is_none() && now >= self.retry_at {
                    self.open(now);
                }
                self.send_due(now);
            }
            let wake = self.next_wake(now);
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return self.end_all(LeaseLost::ClientClosed),
                },
                answer = next_answer(&mut self.link), if self.link.is_some() => match answer {
                    Some(Ok(answer)) => self.on_answer(answer),
                    Some(Err(status)) => self.fail(Some(status)),
                    None => self.fail(None),
                },
                () = tokio::time::sleep_until(wake), if !self.leases.is_empty() => {}
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Register { id, reg, state } => {
                let lease = self.leases.entry(id).or_insert_with(|| Lease {
                    regs: HashMap::new(),
                    ttl: 0,
                    deadline: None,
                    next_send: Instant::now(),
                    sent: VecDeque::new(),
                });
                if lease.ttl > 0 {
                    state.send_replace(State { ttl: lease.ttl, deadline: lease.deadline, lost: None });
                }
                lease.regs.insert(reg, state);
            }
            Command::Unregister { id, reg } => {
                if let Some(lease) = self.leases.get_mut(&id) {
                    lease.regs.remove(&reg);
                    if lease.regs.is_empty() {
                        self.leases.remove(&id);
                    }
                }
            }
        }
    }

    fn on_answer(&mut self, answer: pb::LeaseKeepAliveResponse) {
        let now = Instant::now();
        self.failures = 0;
        if let Some(link) = &mut self.link {
            link.outstanding = link.outstanding.saturating_sub(1);
            link.progress = now;
        }
        let Some(lease) = self.leases.get_mut(&answer.id) else { return };
        if answer.ttl <= 0 {
            return self.end(answer.id, LeaseLost::Expired);
        }
        // The answer is for this lease's oldest unanswered request; the server started the TTL
        // after that request was sent, so counting from the send never overestimates the lease.
        lease.ttl = answer.ttl;
        // An answer with no request on record (one sent before the lease was registered again)
        // proves nothing about when the TTL started: it must not move the deadline.
        if let Some(sent) = lease.sent.pop_front() {
            let sent = sent.min(now);
            let deadline = sent + secs(answer.ttl);
            lease.deadline = Some(lease.deadline.map_or(deadline, |d| d.max(deadline)));
            lease.next_send = sent + secs(answer.ttl) / 3;
        }
        let (ttl, deadline) = (lease.ttl, lease.deadline);
        for state in lease.regs.values() {
            state.send_modify(|s| (s.ttl, s.deadline) = (ttl, deadline));
        }
    }

    /// Opens a new stream on the next member; every lease is sent at once.
    fn open(&mut self, now: Instant) {
        let Some(inner) = self.inner.upgrade() else { return };
        let member = inner.pool.pick();
        let meta = Client { inner: inner.clone(), ns: Namespace::default() }.meta(None);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        meta.apply(&mut request);
        let mut stub = LeaseClient::new(member.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES);
        tracing::debug!(endpoint = %member.url, leases = self.leases.len(), "opening the lease keep-alive stream");
        let answers =
            futures::stream::once(async move { stub.lease_keep_alive(request).await.map(|r| r.into_inner()) })
                .try_flatten()
                .boxed();
        for lease in self.leases.values_mut() {
            lease.next_send = now;
            lease.sent.clear();
        }
        let generation = meta.generation;
        self.link = Some(Link { answers, tx, member, generation, outstanding: 0, progress: now });
    }

    /// Drops the stream, and schedules a new one after a backoff (refreshing the token if needed).
    fn fail(&mut self, status: Option<Status>) {
        let Some(link) = self.link.take() else { return };
        let Some(inner) = self.inner.upgrade() else { return };
        self.failures = self.failures.saturating_add(1);
        match &status {
            Some(s) if needs_new_token(s) => {
                let client = Client { inner: inner.clone(), ns: Namespace::default() };
                let stale = link.generation;
                tokio::spawn(async move {
                    if let Err(e) = client.refresh_token(stale).await {
                        tracing::debug!(error = %e, "token refresh for the lease keep-alive stream failed");
                    }
                });
            }
            _ => inner.pool.mark_failed(&link.member),
        }
        let backoff = inner.options.retry.backoff(self.failures, fastrand::f64());
        self.retry_at = Instant::now() + backoff;
        let why = status.as_ref().map_or("ended or stalled", |s| s.message());
        tracing::debug!(endpoint = %link.member.url, why, ?backoff, "lease keep-alive stream failed; reconnecting");
    }

    /// Sends a request for every lease that is due, on the current stream.
    fn send_due(&mut self, now: Instant) {
        let Some(link) = &mut self.link else { return };
        let mut broken = false;
        for (&id, lease) in self.leases.iter_mut().filter(|(_, l)| l.next_send <= now) {
            if link.tx.send(pb::LeaseKeepAliveRequest { id }).is_err() {
                broken = true;
                break;
            }
            if link.outstanding == 0 {
                link.progress = now;
            }
            link.outstanding += 1;
            lease.sent.push_back(now);
            lease.next_send = now + if lease.ttl > 0 { secs(lease.ttl) / 3 } else { Duration::from_secs(1) };
        }
        if broken {
            self.fail(None);
        }
    }

    /// How long a stream may leave requests unanswered before it is replaced.
    fn stall_timeout(&self) -> Duration {
        let shortest = self.leases.values().filter(|l| l.ttl > 0).map(|l| l.ttl).min().unwrap_or(6);
        (secs(shortest) / 3).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + TICK;
        for lease in self.leases.values() {
            if let Some(deadline) = lease.deadline {
                wake = wake.min(deadline);
            }
            if self.link.is_some() {
                wake = wake.min(lease.next_send);
            }
        }
        match &self.link {
            None => wake = wake.min(self.retry_at),
            Some(link) if link.outstanding > 0 => wake = wake.min(link.progress + self.stall_timeout()),
            Some(_) => {}
        }
        wake.max(now + Duration::from_millis(5))
    }

    /// Tells the owners of lease `id` it is lost, and stops keeping it.
    fn end(&mut self, id: i64, why: LeaseLost) {
        if let Some(lease) = self.leases.remove(&id) {
            tracing::debug!(lease = id, %why, "lease lost");
            for state in lease.regs.values() {
                state.send_modify(|s| s.lost = Some(why));
            }
        }
    }

    fn end_all(&mut self, why: LeaseLost) {
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            self.end(id, why);
        }
    }
}

/// The next answer on the stream (`None` when it ended; pending forever without a stream).
async fn next_answer(link: &mut Option<Link>) -> Option<Result<pb::LeaseKeepAliveResponse, Status>> {
    match link {
        Some(link) => link.answers.next().await,
        None => std::future::pending().await,
    }
}

/// A TTL in seconds as a duration, bounded so that adding it to an instant cannot overflow.
fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, 10 * 365 * 24 * 3600) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let (_, cmds) = mpsc::unbounded_channel();
        Task { inner: Weak::new(), cmds, leases: HashMap::new(), link: None, retry_at: Instant::now(), failures: 0 }
    }

    fn register(task: &mut Task, id: i64, reg: u64) -> watch::Receiver<State> {
        let (state, rx) = watch::channel(State::default());
        task.apply(Command::Register { id, reg, state });
        rx
    }

    #[test]
    fn answers_update_ttl_or_end_the_lease_and_never_panic() {
        let mut task = task();
        let a = register(&mut task, 1, 1);
        let b = register(&mut task, 1, 2);
        let c = register(&mut task, 2, 3);
        let answer = |id, ttl| pb::LeaseKeepAliveResponse { header: None, id, ttl };
        // As if a keep-alive had been sent for lease 1: only an answer to a recorded request
        // moves the deadline.
        task.leases.get_mut(&1).expect("registered").sent.push_back(Instant::now());
        task.on_answer(answer(1, i64::MAX));
        task.on_answer(answer(99, 5)); // not ours: ignored
        assert_eq!((a.borrow().ttl, b.borrow().ttl, a.borrow().lost), (i64::MAX, i64::MAX, None));
        assert!(task.leases[&1].deadline.is_some());
        task.on_answer(answer(1, -7));
        assert_eq!((a.borrow().lost, b.borrow().lost), (Some(LeaseLost::Expired), Some(LeaseLost::Expired)));
        assert!(!task.leases.contains_key(&1), "a lost lease is no longer sent");

        // A second registration joins a lease already answered for, and sees its TTL at once.
        task.on_answer(answer(2, 10));
        let d = register(&mut task, 2, 4);
        assert_eq!(d.borrow().ttl, 10);
        task.apply(Command::Unregister { id: 2, reg: 3 });
        assert!(task.leases.contains_key(&2), "kept while a registration remains");
        task.apply(Command::Unregister { id: 2, reg: 4 });
        assert!(task.leases.is_empty());
        assert_eq!(c.borrow().lost, None, "unregistering is not a loss");
    }

    #[test]
    fn stall_timeout_follows_the_shortest_ttl_within_bounds() {
        let mut task = task();
        assert_eq!(task.stall_timeout(), Duration::from_secs(2));
        let _a = register(&mut task, 1, 1);
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 1, ttl: 2 });
        assert_eq!(task.stall_timeout(), Duration::from_secs(1));
        task.leases.clear();
        let _b = register(&mut task, 2, 2);
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 2, ttl: 3600 });
        assert_eq!(task.stall_timeout(), Duration::from_secs(5));
    }
}
