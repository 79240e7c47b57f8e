//! [`Client`]: the handle every call goes through, and the plumbing each unary RPC shares
//! (member choice, auth token, `hasleader`, deadline, retry, tracing).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::Instrument;

use crate::error::{Error, Result, never_sent};
use crate::namespace::Namespace;
use crate::options::{ClientOptions, Credentials};
use crate::pb::etcdserverpb::{AuthenticateRequest, auth_client::AuthClient};
use crate::transport::Pool;

/// The largest response the client accepts, in bytes: like Go's client, effectively no limit
/// (a Range over many keys can far exceed gRPC's usual 4 MiB default).
pub const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// An etcd client. Cheap to clone (clones share connections, the watch stream and the lease
/// keep-alive stream); every method takes `&self`, and any number of calls may be in flight.
///
/// ```no_run
/// # async fn demo() -> etcd_wire::Result<()> {
/// use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions};
///
/// let client = Client::connect(["127.0.0.1:2379"], ClientOptions::default()).await?;
/// client.put("greeting", "hello", PutOptions::new()).await?;
/// let resp = client.get("greeting", GetOptions::new()).await?;
/// assert_eq!(resp.kvs[0].value, "hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) ns: Namespace,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.inner.pool.urls()).field("namespace", &self.ns).finish()
    }
}

/// State shared by all clones of a client.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) options: ClientOptions,
    auth: Auth,
    pub(crate) watch: crate::watch::WatchHub,
    pub(crate) leases: crate::lease::KeepAliveHub,
}

/// Whether a request may be sent again after an `Unavailable` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Read-only: retried on any `Unavailable`.
    ReadOnly,
    /// Changes state: retried only when it provably never left (connect failure).
    Write,
}

impl Client {
    /// Connects to the cluster at `endpoints` (`host:port`, `http://host:port` or
    /// `https://host:port`). Returns as soon as one member answers, within
    /// [`ClientOptions::connect_timeout`] (the others join when they answer), after
    /// authenticating when credentials are set.
    pub async fn connect<E, S>(endpoints: E, options: ClientOptions) -> Result<Client>
    where
        E: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect();
        if let Some(c) = &options.credentials
            && c.user.is_empty()
        {
            return Err(Error::invalid("user name is empty"));
        }
        let pool = Pool::connect(&endpoints, &options).await?;
        let auth = Auth {
            credentials: options.credentials.clone(),
            token: RwLock::new((0, None)),
            refresh: Default::default(),
        };
        let inner = Arc::new(Inner {
            pool,
            options,
            auth,
            watch: crate::watch::WatchHub::default(),
            leases: crate::lease::KeepAliveHub::default(),
        });
        let client = Client { inner, ns: Namespace::default() };
        if client.inner.auth.credentials.is_some() {
            client.refresh_token(0).await?;
        }
        if let Some(every) = client.inner.options.auto_sync_interval {
            crate::cluster::spawn_auto_sync(Arc::downgrade(&client.inner), every);
        }
        Ok(client)
    }

    /// A view of this client in which every key, range, lock and election name is prefixed with
    /// `prefix`, and results have the prefix stripped (Go's `namespace` package). Views nest.
    pub fn with_namespace(&self, prefix: impl AsRef<[u8]>) -> Client {
        Client { inner: self.inner.clone(), ns: self.ns.join(prefix.as_ref()) }
    }

    /// The namespace prefix of this view (empty for a plain client).
    pub fn namespace(&self) -> &[u8] {
        self.ns.prefix()
    }

    /// The member URLs the client is using now.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.pool.urls()
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Runs one unary RPC with the shared policy: pick a member, attach token, `hasleader` and
    /// deadline, retry per [`Idempotency`] (a read that timed out once more, on another member),
    /// refresh the token once when the server rejects it
    /// (expired, stale after an auth change, or missing since auth was enabled).
    pub(crate) async fn unary<T, F, Fut>(&self, rpc: &'static str, idem: Idempotency, call: F) -> Result<T>
    where
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.unary_with(rpc, idem, self.inner.options.request_timeout, call).await
    }

    /// [`unary`](Self::unary) with an explicit deadline (`None` for calls that wait, like Lock).
    pub(crate) async fn unary_with<T, F, Fut>(
        &self,
        rpc: &'static str,
        idem: Idempotency,
        timeout: Option<Duration>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let retry = self.inner.options.retry;
        let mut refreshed = false;
        let mut timed_out = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let member = self.inner.pool.pick();
            let meta = self.meta(timeout);
            let generation = meta.generation;
            let span = tracing::debug_span!("etcd_rpc", rpc, endpoint = %member.url, attempt);
            let fut = call(member.channel.clone(), meta).instrument(span);
            let result = match timeout {
                Some(after) => {
                    tokio::time::timeout(after, fut).await.unwrap_or_else(|_| Err(Status::deadline_exceeded("")))
                }
                None => fut.await,
            };
            let status = match result {
                Ok(resp) => {
                    self.inner.pool.mark_ok(&member);
                    return Ok(resp.into_inner());
                }
                Err(status) => status,
            };
            tracing::debug!(rpc, endpoint = %member.url, code = ?status.code(), message = status.message(), "etcd rpc failed");
            if let Some(after) = timeout
                && is_deadline(&status)
            {
                // No answer in time: the member may be black-holed or stalled. Later calls go
                // elsewhere for a cool-down; a read is sent once more, to another member.
                self.inner.pool.mark_failed(&member);
                if idem == Idempotency::ReadOnly
                    && !timed_out
                    && attempt < retry.max_attempts
                    && self.inner.pool.len() > 1
                {
                    timed_out = true;
                    continue;
                }
                return Err(Error::Timeout { after });
            }
            if needs_new_token(&status) && self.inner.auth.credentials.is_some() && !refreshed {
                // The server rejected the token before doing anything: refreshing and resending is safe.
                refreshed = true;
                self.refresh_token(generation).await?;
                continue;
            }
            let unavailable = status.code() == tonic::Code::Unavailable;
            if unavailable {
                self.inner.pool.mark_failed(&member);
            }
            let retriable = unavailable && (idem == Idempotency::ReadOnly || never_sent(&status));
            if retriable && attempt < retry.max_attempts {
                tokio::time::sleep(retry.backoff(attempt, fastrand::f64())).await;
                continue;
            }
            return Err(status.into());
        }
    }

    /// Metadata for one request: the current token, `hasleader`, deadline.
    pub(crate) fn meta(&self, timeout: Option<Duration>) -> Meta {
        let (generation, token) = self.inner.auth.token.read().unwrap_or_else(|e| e.into_inner()).clone();
        Meta { token, generation, require_leader: self.inner.options.require_leader, timeout }
    }

    /// Authenticates again unless another caller already replaced token `stale` (single flight).
    pub(crate) async fn refresh_token(&self, stale: u64) -> Result<()> {
        let Some(creds) = self.inner.auth.credentials.clone() else { return Ok(()) };
        let _one_at_a_time = self.inner.auth.refresh.lock().await;
        if self.inner.auth.token.read().unwrap_or_else(|e| e.into_inner()).0 != stale {
            return Ok(());
        }
        let token = match self.authenticate(&creds).await {
            Ok(token) => token,
            // Auth is off (never enabled, or disabled since): calls need no token, as in Go's client.
            Err(Error::AuthNotEnabled { .. }) => {
                let mut slot = self.inner.auth.token.write().unwrap_or_else(|e| e.into_inner());
                *slot = (slot.0 + 1, None);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let value: AsciiMetadataValue = MetadataValue::try_from(token.as_str())
            .map_err(|_| Error::invalid("the server returned a token that is not valid ASCII metadata"))?;
        let mut slot = self.inner.auth.token.write().unwrap_or_else(|e| e.into_inner());
        *slot = (slot.0 + 1, Some(value));
        Ok(())
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<String> {
        let retry = self.inner.options.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let member = self.inner.pool.pick();
            let req = AuthenticateRequest { name: creds.user.clone(), password: creds.password.clone() };
            let mut request = tonic::Request::new(req);
            if let Some(t) = self.inner.options.request_timeout {
                request.set_timeout(t);
            }
            match AuthClient::new(member.channel.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .authenticate(request)
                .await
            {
                Ok(resp) => return Ok(resp.into_inner().token),
                Err(status) if status.code() == tonic::Code::Unavailable && attempt < retry.max_attempts => {
                    self.inner.pool.mark_failed(&member);
                    tokio::time::sleep(retry.backoff(attempt, fastrand::f64())).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// Per-request metadata, attached by [`Meta::request`].
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    token: Option<AsciiMetadataValue>,
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
}

/// The token state: a generation counter (bumped by every refresh) and the token itself.
#[derive(Debug)]
struct Auth {
    credentials: Option<Credentials>,
    token: RwLock<(u64, Option<AsciiMetadataValue>)>,
    refresh: tokio::sync::Mutex<()>,
}

/// Whether a status reports the request's deadline passing: tonic's own timer ("Timeout expired")
/// or the server's (`DeadlineExceeded`).
fn is_deadline(status: &Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        || status.code() == tonic::Code::Cancelled && status.message().contains("Timeout expired")
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
