//! The call layer: the members ([`Pool`]), the auth token, and the one per-call policy every
//! unary RPC goes through ([`Core::call`]), plus the service stubs ([`stub`]).
//!
//! The policy, for a call described by a [`Call`]:
//! 1. pick a member (round-robin, skipping members cooling down), or use the one fixed target;
//! 2. attach the token, `hasleader` and the deadline ([`Meta`]);
//! 3. no answer within the deadline: the member goes into cool-down, and a read is sent once more,
//!    to another member; a write reports [`Error::Timeout`] (it may have been applied);
//! 4. the server rejected the token (expired, stale after an auth change, missing since auth was
//!    enabled): authenticate again, once, and resend (nothing was done);
//! 5. `Unavailable`: the member goes into cool-down; a read, or a write that provably never left,
//!    is retried after a jittered backoff, up to [`RetryPolicy::max_attempts`](crate::RetryPolicy).
//!
//! A *detached* call (a read-only Txn, see [`Call::detached`]) runs in a task of its own, without
//! a deadline the server could see: giving up on it only stops waiting, it never cancels it.
//!
//! Streams (watch, lease keep-alive) are supervised one layer up, in [`crate::streams`].

use std::future::Future;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::Instrument;

use crate::error::{Error, Result, never_sent};
use crate::options::{ClientOptions, Credentials};
use crate::pb::etcdserverpb::{AuthenticateRequest, MemberListRequest};
use crate::transport::Pool;

/// The largest response the client accepts, in bytes: like Go's client, effectively no limit
/// (a Range over many keys can far exceed gRPC's usual 4 MiB default).
pub const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The tonic client of each etcd service on a channel, accepting responses up to
/// [`MAX_RESPONSE_BYTES`].
pub(crate) mod stub {
    use super::{Channel, MAX_RESPONSE_BYTES};
    use crate::pb::{etcdserverpb as pb, v3electionpb, v3lockpb};

    macro_rules! stubs {
        ($($name:ident => $client:ty),* $(,)?) => {$(
            #[doc = concat!("A `", stringify!($name), "` service client on `channel`.")]
            pub(crate) fn $name(channel: Channel) -> $client {
                <$client>::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
            }
        )*};
    }

    stubs! {
        kv => pb::kv_client::KvClient<Channel>,
        watch => pb::watch_client::WatchClient<Channel>,
        lease => pb::lease_client::LeaseClient<Channel>,
        cluster => pb::cluster_client::ClusterClient<Channel>,
        maintenance => pb::maintenance_client::MaintenanceClient<Channel>,
        auth => pb::auth_client::AuthClient<Channel>,
        lock => v3lockpb::lock_client::LockClient<Channel>,
        election => v3electionpb::election_client::ElectionClient<Channel>,
    }
}

/// What the client shares between all its handles and stream tasks: the members, the options
/// and the auth token.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) pool: Pool,
    pub(crate) options: ClientOptions,
    auth: Auth,
}

/// Whether a request may be sent again after an `Unavailable` answer or a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Read-only: retried on any `Unavailable`, and once elsewhere after a timeout.
    ReadOnly,
    /// Changes state: retried only when it provably never left (connect failure).
    Write,
}

/// How one call is made: its name, whether it may be resent, its deadline, where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    rpc: &'static str,
    idem: Idempotency,
    /// The deadline: `None` for the client's request timeout, `Some(None)` for calls that wait
    /// (Lock, Campaign).
    timeout: Option<Option<Duration>>,
    /// `None`: a member of the pool; else exactly this channel (no failover).
    target: Option<Channel>,
    detached: bool,
    anonymous: bool,
    /// `hasleader` for this call, whatever the client's options say.
    require_leader: Option<bool>,
    /// A call that waits by nature (Lock, Campaign, Observe): running out of time says nothing
    /// about the member, and it is not sent again.
    waits: bool,
}

/// What a client view ([`Client::with_timeout`](crate::Client::with_timeout),
/// [`Client::with_require_leader`](crate::Client::with_require_leader)) changes for every call made
/// through it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    /// The deadline of every call, waiting ones included (`Some(None)`: none).
    pub(crate) timeout: Option<Option<Duration>>,
    /// `hasleader` on every call.
    pub(crate) require_leader: Option<bool>,
}

impl Overrides {
    /// `how`, as this view makes it.
    pub(crate) fn apply(&self, mut how: Call) -> Call {
        if let Some(t) = self.timeout {
            how.timeout = Some(t);
        }
        if let Some(on) = self.require_leader {
            how.require_leader = Some(on);
        }
        how
    }

    /// The deadline of a call that would otherwise have `default`.
    pub(crate) fn timeout_or(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(default)
    }
}

impl Call {
    /// A read-only call, with the client's request timeout.
    pub(crate) fn read(rpc: &'static str) -> Call {
        Call::new(rpc, Idempotency::ReadOnly)
    }

    /// A call that changes state, with the client's request timeout.
    pub(crate) fn write(rpc: &'static str) -> Call {
        Call::new(rpc, Idempotency::Write)
    }

    /// A call of the given idempotency, with the client's request timeout.
    pub(crate) fn new(rpc: &'static str, idem: Idempotency) -> Call {
        Call {
            rpc,
            idem,
            timeout: None,
            target: None,
            detached: false,
            anonymous: false,
            require_leader: None,
            waits: false,
        }
    }

    /// With this deadline instead; `None` for a call that waits by nature (Lock, Campaign):
    /// it waits as long as it takes, unless a client view gives it a deadline.
    pub(crate) fn timeout(mut self, timeout: Option<Duration>) -> Call {
        self.timeout = Some(timeout);
        self.waits = timeout.is_none();
        self
    }

    /// Sent to exactly this member, never elsewhere.
    pub(crate) fn to(mut self, channel: Channel) -> Call {
        self.target = Some(channel);
        self
    }

    /// Runs to its end once sent: the call gets a task of its own and no deadline the server
    /// could see, so giving up on it (the deadline, a dropped caller) never cancels it on the
    /// server. For read-only Txns: etcd before 3.5.5 panics when one is cancelled mid-read
    /// (etcd-io/etcd#14110).
    pub(crate) fn detached(mut self) -> Call {
        self.detached = true;
        self
    }

    /// Without a token (Authenticate itself).
    fn anonymous(mut self) -> Call {
        self.anonymous = true;
        self
    }
}

impl Core {
    /// Connects to the endpoints (see [`Pool::connect`]) and authenticates when credentials are set.
    pub(crate) async fn connect(endpoints: &[String], options: ClientOptions) -> Result<Arc<Core>> {
        if let Some(c) = &options.credentials
            && c.user.is_empty()
        {
            return Err(Error::invalid("user name is empty"));
        }
        let pool = Pool::connect(endpoints, &options).await?;
        let auth = Auth {
            token: RwLock::new((0, None)),
            refresh: Default::default(),
            credentials: RwLock::new(options.credentials.clone()),
            changed: tokio::sync::watch::Sender::new(0),
        };
        let core = Arc::new(Core { pool, options, auth });
        if core.has_credentials() {
            core.refresh_token(0).await?;
        }
        if let Some(every) = core.options.auto_sync_interval {
            Core::spawn_auto_sync(Arc::downgrade(&core), every);
        }
        Ok(core)
    }

    /// Runs one unary RPC under the policy described in the module docs. `send` makes the
    /// request on a channel with the metadata it is given; it may be called more than once.
    /// With the `metrics` feature, records the call ([`crate::observe`]).
    pub(crate) async fn call<T, F, Fut>(&self, how: Call, send: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        #[cfg(feature = "metrics")]
        {
            let (rpc, started) = (how.rpc, std::time::Instant::now());
            let result = self.run(how, send).await;
            crate::observe::call(rpc, started.elapsed(), &result);
            result
        }
        #[cfg(not(feature = "metrics"))]
        self.run(how, send).await
    }

    /// [`call`](Self::call), unobserved.
    async fn run<T, F, Fut>(&self, how: Call, mut send: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        let retry = self.options.retry;
        let timeout = how.timeout.unwrap_or(self.options.request_timeout);
        let mut refreshed = false;
        let mut timed_out = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let member = how.target.is_none().then(|| self.pool.pick());
            let channel = match (&member, &how.target) {
                (Some(m), _) => m.channel.clone(),
                (None, Some(ch)) => ch.clone(),
                (None, None) => unreachable!("a call without a target picks a member"),
            };
            let mut meta = self.meta(if how.detached { None } else { timeout }, how.anonymous);
            if let Some(on) = how.require_leader {
                meta.require_leader = on;
            }
            let generation = meta.generation;
            let endpoint = member.as_ref().map_or("(fixed)", |m| m.url.as_str());
            let span = tracing::debug_span!("etcd_rpc", rpc = how.rpc, endpoint, attempt);
            let fut = send(channel, meta).instrument(span);
            let result = match (how.detached, timeout) {
                (false, None) => fut.await,
                (false, Some(after)) => {
                    tokio::time::timeout(after, fut).await.unwrap_or_else(|_| Err(Status::deadline_exceeded("")))
                }
                (true, timeout) => detach(fut, timeout).await?,
            };
            let status = match result {
                Ok(resp) => {
                    if let Some(m) = &member {
                        self.pool.mark_ok(m);
                    }
                    return Ok(resp.into_inner());
                }
                Err(status) => status,
            };
            tracing::debug!(rpc = how.rpc, endpoint, code = ?status.code(), message = status.message(), "etcd rpc failed");
            if let Some(after) = timeout
                && is_deadline(&status)
            {
                // No answer in time: the member may be black-holed or stalled. Later calls go
                // elsewhere for a cool-down; a read is sent once more, to another member. (Not for
                // a call that waits by nature and was given a deadline: it simply ran out.)
                let Some(m) = member.as_ref().filter(|_| !how.waits) else { return Err(Error::Timeout { after }) };
                self.pool.mark_failed(m);
                if how.idem == Idempotency::ReadOnly
                    && !timed_out
                    && attempt < retry.max_attempts
                    && self.pool.len() > 1
                {
                    timed_out = true;
                    crate::observe::retry(how.rpc, "timeout");
                    continue;
                }
                return Err(Error::Timeout { after });
            }
            if !how.anonymous && needs_new_token(&status) && self.has_credentials() && !refreshed {
                // The server rejected the token before doing anything: refreshing and resending is safe.
                refreshed = true;
                self.refresh_token(generation).await?;
                crate::observe::retry(how.rpc, "token");
                continue;
            }
            let unavailable = status.code() == tonic::Code::Unavailable;
            let Some(m) = &member else { return Err(status.into()) };
            if unavailable {
                self.pool.mark_failed(m);
            }
            let retriable = unavailable && (how.idem == Idempotency::ReadOnly || never_sent(&status));
            if retriable && attempt < retry.max_attempts {
                tokio::time::sleep(retry.backoff(attempt, fastrand::f64())).await;
                crate::observe::retry(how.rpc, "unavailable");
                continue;
            }
            return Err(status.into());
        }
    }

    /// Metadata for one request: the current token (unless `anonymous`), `hasleader`, deadline.
    pub(crate) fn meta(&self, timeout: Option<Duration>, anonymous: bool) -> Meta {
        let (generation, token) = self.auth.token.read().unwrap_or_else(|e| e.into_inner()).clone();
        let token = if anonymous { None } else { token };
        Meta { token, generation, require_leader: self.options.require_leader, timeout }
    }

    /// Authenticates again unless another caller already replaced token `stale` (single flight).
    pub(crate) async fn refresh_token(&self, stale: u64) -> Result<()> {
        let _one_at_a_time = self.auth.refresh.lock().await;
        let Some(creds) = self.credentials() else { return Ok(()) };
        if self.auth.token.read().unwrap_or_else(|e| e.into_inner()).0 != stale {
            return Ok(());
        }
        let value = self.token_for(&creds).await?;
        let mut slot = self.auth.token.write().unwrap_or_else(|e| e.into_inner());
        *slot = (slot.0 + 1, value);
        Ok(())
    }

    /// Whether the client authenticates (it has credentials now).
    pub(crate) fn has_credentials(&self) -> bool {
        self.auth.credentials.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn credentials(&self) -> Option<Credentials> {
        self.auth.credentials.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the credentials: authenticates with the new ones first (nothing changes if that
    /// fails), then swaps credentials and token, and tells the streams to reopen with the token.
    pub(crate) async fn set_credentials(&self, credentials: Option<Credentials>) -> Result<()> {
        if credentials.as_ref().is_some_and(|c| c.user.is_empty()) {
            return Err(Error::invalid("user name is empty"));
        }
        let _one_at_a_time = self.auth.refresh.lock().await;
        let value = match &credentials {
            Some(creds) => self.token_for(creds).await?,
            None => None,
        };
        *self.auth.credentials.write().unwrap_or_else(|e| e.into_inner()) = credentials;
        {
            let mut slot = self.auth.token.write().unwrap_or_else(|e| e.into_inner());
            *slot = (slot.0 + 1, value);
        }
        self.auth.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Resolves once the credentials change after this call (for streams opened with the old token).
    pub(crate) fn credentials_changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut changed = self.auth.changed.subscribe();
        async move {
            let _ = changed.changed().await;
        }
    }

    /// A token for `creds`: `None` when auth is off (never enabled, or disabled since), where
    /// calls need no token, as in Go's client.
    async fn token_for(&self, creds: &Credentials) -> Result<Option<AsciiMetadataValue>> {
        // Boxed: authenticating is a call, and a call may refresh the token.
        match Box::pin(self.authenticate(creds)).await {
            Ok(token) => Ok(Some(
                MetadataValue::try_from(token.as_str())
                    .map_err(|_| Error::invalid("the server returned a token that is not valid ASCII metadata"))?,
            )),
            Err(Error::AuthNotEnabled { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the endpoints with the voting members' client URLs (see
    /// [`Client::sync_endpoints`](crate::Client::sync_endpoints)) and returns them.
    pub(crate) async fn sync_endpoints(&self) -> Result<Vec<String>> {
        let req = MemberListRequest { linearizable: false };
        let list =
            self.call(Call::read("MemberList"), |ch, meta| async move {
                stub::cluster(ch).member_list(meta.request(req)).await
            })
            .await?;
        let urls: Vec<String> =
            list.members.iter().filter(|m| !m.is_learner).flat_map(|m| m.client_ur_ls.iter().cloned()).collect();
        self.pool.set_urls(&urls, &self.options)?;
        Ok(self.pool.urls())
    }

    /// Refreshes the endpoints every `every` until the client is gone.
    pub(crate) fn spawn_auto_sync(core: Weak<Core>, every: Duration) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(core) = core.upgrade() else { return };
                if let Err(e) = core.sync_endpoints().await {
                    tracing::debug!(error = %e, "endpoint auto-sync failed; keeping the current endpoints");
                }
            }
        });
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<String> {
        let req = AuthenticateRequest { name: creds.user.clone(), password: creds.password.clone() };
        let how = Call::read("Authenticate").anonymous();
        let resp = self
            .call(how, |ch, meta| {
                let req = req.clone();
                async move { stub::auth(ch).authenticate(meta.request(req)).await }
            })
            .await?;
        Ok(resp.token)
    }
}

/// Runs `fut` in a task of its own and waits for it at most `timeout`; on timeout the task goes on.
async fn detach<T, Fut>(fut: Fut, timeout: Option<Duration>) -> Result<std::result::Result<T, Status>>
where
    T: Send + 'static,
    Fut: Future<Output = std::result::Result<T, Status>> + Send + 'static,
{
    let task = tokio::spawn(fut);
    let joined = match timeout {
        Some(after) => match tokio::time::timeout(after, task).await {
            Ok(joined) => joined,
            Err(_) => return Ok(Err(Status::deadline_exceeded(""))),
        },
        None => task.await,
    };
    match joined {
        Ok(result) => Ok(result),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime is shutting down.
        Err(_) => Err(Error::Unavailable { status: Status::unavailable("the runtime is shutting down").into() }),
    }
}

/// Per-request metadata, attached by [`Meta::request`].
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    token: Option<AsciiMetadataValue>,
    /// The token generation this was made with (to refresh exactly that one when it is rejected).
    pub(crate) generation: u64,
    require_leader: bool,
    timeout: Option<Duration>,
}

impl Meta {
    /// Wraps `message` in a request carrying the token, `hasleader` and the deadline.
    pub(crate) fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(message);
        self.apply(&mut req);
        req
    }

    /// Adds the metadata to an existing request (streams).
    pub(crate) fn apply<M>(&self, req: &mut tonic::Request<M>) {
        if let Some(token) = &self.token {
            req.metadata_mut().insert("token", token.clone());
        }
        if self.require_leader {
            req.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
        }
        if let Some(t) = self.timeout {
            req.set_timeout(t);
        }
    }

    /// Always asks for a member with a leader, whatever the options say (watch streams).
    pub(crate) fn with_leader(mut self) -> Meta {
        self.require_leader = true;
        self
    }
}

/// The token state: a generation counter (bumped by every refresh) and the token itself, and
/// the credentials it comes from.
#[derive(Debug)]
struct Auth {
    token: RwLock<(u64, Option<AsciiMetadataValue>)>,
    /// Held while authenticating: one refresh at a time, and none during a credentials change.
    refresh: tokio::sync::Mutex<()>,
    credentials: RwLock<Option<Credentials>>,
    /// Bumped by every credentials change.
    changed: tokio::sync::watch::Sender<u64>,
}

/// Whether a status reports the request's deadline passing: tonic's own timer ("Timeout expired")
/// or the server's (`DeadlineExceeded`; the Lock and Election services of etcd 3.4 pass the
/// context's error on as `Unknown`, "context deadline exceeded").
fn is_deadline(status: &Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        || status.code() == tonic::Code::Cancelled && status.message().contains("Timeout expired")
        || status.code() == tonic::Code::Unknown && status.message().contains("context deadline exceeded")
}

/// Whether the server rejected the request for want of a current token, before doing anything,
/// so that authenticating again and resending is safe. See [`needs_new_token_text`].
pub(crate) fn needs_new_token(status: &Status) -> bool {
    needs_new_token_text(status.message())
}

/// Whether an error text (a status message or a watch's cancel reason) says the token must be
/// renewed: expired or from before a restart ("invalid auth token"); issued before a user, role
/// or permission change, which makes a JWT stale ("revision of auth store is old", or on the
/// paths that pass the auth store's own error along, "auth: revision in header is old"); or
/// missing because auth was enabled after the client connected ("user name is empty"). Like
/// Go's `shouldRefreshToken`. The Lock and Election services report these with code `Unknown`
/// and only the words.
pub(crate) fn needs_new_token_text(text: &str) -> bool {
    ["invalid auth token", "revision of auth store is old", "revision in header is old", "user name is empty"]
        .iter()
        .any(|words| text.contains(words))
}
