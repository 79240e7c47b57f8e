//! [`Client`]: the handle every call goes through. It holds the call layer ([`Core`]) and the
//! client's two shared streams (watch, lease keep-alive); the services (`kv`, `txn`, `lease`,
//! `watch`, ...) add their methods to it from above.

use std::sync::Arc;

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::error::Result;
use crate::namespace::Namespace;
use crate::options::ClientOptions;
use crate::rpc::{Call, Core, Meta, Overrides};
use crate::streams::{keepalive, watch};

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
    /// What this view changes for each call (deadline, `hasleader`).
    pub(crate) overrides: Overrides,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.core.pool.urls())
            .field("namespace", &self.ns)
            .field("timeout", &self.timeout())
            .finish()
    }
}

/// State shared by all clones of a client, and by the handles ([`Watcher`](crate::Watcher),
/// [`KeepAlive`](crate::KeepAlive)) that need its streams to live.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) core: Arc<Core>,
    pub(crate) watch: watch::WatchHub,
    pub(crate) leases: keepalive::KeepAliveHub,
}

impl Client {
    /// Connects to the cluster at `endpoints`: `host:port`, `http://host:port`,
    /// `https://host:port`, or a unix socket as `unix:///absolute/path` or `unix://relative`
    /// (etcd's `--listen-client-urls=unix://localhost:2379` makes the socket `localhost:2379` in
    /// its working directory; plaintext only). Returns as soon as one member answers, within
    /// [`ClientOptions::connect_timeout`] (the others join when they answer), after
    /// authenticating when credentials are set.
    pub async fn connect<E, S>(endpoints: E, options: ClientOptions) -> Result<Client>
    where
        E: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect();
        let core = Core::connect(&endpoints, options).await?;
        let inner = Arc::new(Inner {
            watch: watch::hub(Arc::downgrade(&core)),
            leases: keepalive::hub(Arc::downgrade(&core)),
            core,
        });
        Ok(Client { inner, ns: Namespace::default(), overrides: Overrides::default() })
    }

    /// A view of this client in which every key, range, lock and election name is prefixed with
    /// `prefix`, and results have the prefix stripped (Go's `namespace` package). Views nest.
    pub fn with_namespace(&self, prefix: impl AsRef<[u8]>) -> Client {
        Client { inner: self.inner.clone(), ns: self.ns.join(prefix.as_ref()), overrides: self.overrides }
    }

    /// A view of this client whose calls have `timeout` as their deadline, instead of
    /// [`ClientOptions::request_timeout`]; `None` for no deadline. It applies to every call made
    /// through the view, the ones that wait included (a server-side `lock` or `campaign` gives up
    /// after it), like a Go context deadline. Views cost nothing: connections, streams and the
    /// token are shared, and they nest with [`with_namespace`](Self::with_namespace).
    ///
    /// ```no_run
    /// # async fn demo(client: etcd_wire::Client) -> etcd_wire::Result<()> {
    /// use std::time::Duration;
    /// let quick = client.with_timeout(Some(Duration::from_millis(200)));
    /// let value = quick.get("config/feature", None).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        let overrides = Overrides { timeout: Some(timeout), ..self.overrides };
        Client { overrides, ..self.clone() }
    }

    /// A view of this client whose calls carry `hasleader` (a member cut off from its leader
    /// refuses them at once with [`Error::NoLeader`](crate::Error::NoLeader)) or not, whatever
    /// [`ClientOptions::require_leader`] says. See [`with_timeout`](Self::with_timeout) for views.
    pub fn with_require_leader(&self, on: bool) -> Client {
        let overrides = Overrides { require_leader: Some(on), ..self.overrides };
        Client { overrides, ..self.clone() }
    }

    /// The deadline of a call through this view: [`with_timeout`](Self::with_timeout)'s, else
    /// [`ClientOptions::request_timeout`].
    pub fn timeout(&self) -> Option<Duration> {
        self.overrides.timeout_or(self.core().options.request_timeout)
    }

    /// The namespace prefix of this view (empty for a plain client).
    pub fn namespace(&self) -> &[u8] {
        self.ns.prefix()
    }

    /// The member URLs the client is using now.
    pub fn endpoints(&self) -> Vec<String> {
        self.core().pool.urls()
    }

    /// Replaces the client's endpoints with `endpoints`, as Go's `SetEndpoints` does, on a live
    /// client shared by every clone and view: members that stay keep their connection; calls
    /// made from now on go to the new list; the shared watch and keep-alive streams open on a
    /// member that left move to one in the list (watchers resume where they were, exactly once,
    /// and leases stay kept alive); calls already in flight on a removed member finish there.
    /// The new endpoints become the seeds that an auto-sync keeps as a fallback.
    ///
    /// Nothing is connected here: a new member is dialled by the first call picked to go to it,
    /// and a member that does not answer is left for a cool-down, as at any time. An invalid
    /// endpoint fails with [`Error::InvalidEndpoint`](crate::Error::InvalidEndpoint) and an
    /// empty list with [`Error::InvalidArgument`](crate::Error::InvalidArgument), changing nothing.
    pub fn set_endpoints<E, S>(&self, endpoints: E) -> Result<()>
    where
        E: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect();
        self.core().pool.set_seeds(&endpoints, &self.core().options)
    }

    /// Adds `endpoint` to the endpoints in use (see [`set_endpoints`](Self::set_endpoints)); one
    /// already there changes nothing.
    pub fn add_endpoint(&self, endpoint: impl AsRef<str>) -> Result<()> {
        let mut endpoints = self.endpoints();
        endpoints.push(endpoint.as_ref().to_owned());
        self.set_endpoints(endpoints)
    }

    /// Removes `endpoint` from the endpoints in use (see [`set_endpoints`](Self::set_endpoints));
    /// one not there changes nothing. Removing the last fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn remove_endpoint(&self, endpoint: impl AsRef<str>) -> Result<()> {
        let options = &self.core().options;
        let gone = crate::transport::normalize(endpoint.as_ref(), options.tls.is_some())?;
        let endpoints: Vec<String> = self.endpoints().into_iter().filter(|e| *e != gone).collect();
        if endpoints.is_empty() {
            return Err(crate::Error::invalid(format!("{gone} is the client's last endpoint")));
        }
        self.set_endpoints(endpoints)
    }

    /// Replaces the user and password on a live client (every clone and view), or with `None`
    /// stops authenticating. The new credentials are tried first: a wrong password fails with
    /// [`Error::AuthFailed`](crate::Error::AuthFailed) and the client keeps its old credentials
    /// and token. Once they work, calls carry the new token, and the shared watch and keep-alive
    /// streams reopen with it (watchers resume exactly once; leases stay kept alive), so nothing
    /// keeps acting as the old user.
    pub async fn set_credentials(&self, credentials: Option<crate::Credentials>) -> Result<()> {
        self.core().set_credentials(credentials).await
    }

    /// The options the client was made with (later [`set_endpoints`](Self::set_endpoints) and
    /// [`set_credentials`](Self::set_credentials) calls do not show here).
    pub fn options(&self) -> &ClientOptions {
        &self.core().options
    }

    /// The call layer: members, token and the per-call policy.
    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Runs one unary RPC under the client's policy ([`Core::call`]).
    pub(crate) async fn call<T, F, Fut>(&self, how: Call, send: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        self.core().call(self.overrides.apply(how), send).await
    }
}
