//! What cluster [`EtcdCluster::start`](crate::EtcdCluster::start) should start.

use std::fmt;
use std::time::Duration;

use crate::version::EtcdVersion;

/// What cluster to start. Build it with [`ClusterConfig::default`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Number of members (at least 1). Default 1.
    pub members: usize,
    /// etcd version; `None` (the default) reads `ETCD_VERSION` when the cluster starts.
    pub version: Option<EtcdVersion>,
    /// Extra command-line arguments for every member, e.g. `--auto-compaction-mode=revision`.
    pub extra_args: Vec<String>,
    /// Pass `--unsafe-no-fsync` if the etcd binary supports it. Default `true`.
    pub unsafe_no_fsync: bool,
    /// How long to wait for the members to report healthy. Default 30 s.
    pub startup_timeout: Duration,
    /// `--heartbeat-interval` in milliseconds; etcd's default (100) when `None`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `--election-timeout` in milliseconds; etcd's default (1000) when `None`.
    pub election_timeout_ms: Option<u64>,
    /// Serve clients over TLS (`https://` client URLs). Default `None`: plain HTTP.
    pub client_tls: Option<ClientTls>,
    /// `--auth-token`, e.g. `simple` or `jwt,...`; etcd's default (`simple`) when `None`.
    pub auth_token: Option<String>,
    /// `--auth-token-ttl` in seconds: how long an unused simple token stays valid; etcd's
    /// default (300) when `None`.
    pub auth_token_ttl_secs: Option<u64>,
    /// Each member also serves clients on a unix socket in its directory
    /// ([`Member::unix_socket`](crate::Member::unix_socket)). Default false.
    pub unix_sockets: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            members: 1,
            version: None,
            extra_args: Vec::new(),
            unsafe_no_fsync: true,
            startup_timeout: Duration::from_secs(30),
            heartbeat_interval_ms: None,
            election_timeout_ms: None,
            client_tls: None,
            auth_token: None,
            auth_token_ttl_secs: None,
            unix_sockets: false,
        }
    }
}

impl ClusterConfig {
    /// Sets the number of members.
    pub fn with_members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// Pins the etcd version (instead of reading `ETCD_VERSION`).
    pub fn with_version(mut self, version: EtcdVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// Adds one extra etcd argument.
    pub fn with_extra_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds several extra etcd arguments.
    pub fn with_extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Turns `--unsafe-no-fsync` on or off.
    pub fn with_unsafe_no_fsync(mut self, on: bool) -> Self {
        self.unsafe_no_fsync = on;
        self
    }

    /// Sets the start-up (and restart) health timeout.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets `--heartbeat-interval` (milliseconds).
    pub fn with_heartbeat_interval_ms(mut self, ms: u64) -> Self {
        self.heartbeat_interval_ms = Some(ms);
        self
    }

    /// Sets `--election-timeout` (milliseconds).
    pub fn with_election_timeout_ms(mut self, ms: u64) -> Self {
        self.election_timeout_ms = Some(ms);
        self
    }

    /// Serves clients over TLS with these certificates (see [`ClientTls`]).
    pub fn with_client_tls(mut self, tls: ClientTls) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Sets `--auth-token` (`simple`, or `jwt,pub-key=...,priv-key=...,sign-method=...`).
    pub fn with_auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Each member also listens for clients on a unix socket (see [`unix_sockets`](Self::unix_sockets)).
    pub fn with_unix_sockets(mut self) -> Self {
        self.unix_sockets = true;
        self
    }

    /// Sets `--auth-token-ttl` (seconds): simple tokens unused for this long become invalid.
    pub fn with_auth_token_ttl_secs(mut self, secs: u64) -> Self {
        self.auth_token_ttl_secs = Some(secs);
        self
    }
}

/// TLS on the members' client URLs: PEM texts the harness writes into the cluster directory and
/// passes as `--cert-file` and `--key-file`, and with client-cert auth as `--trusted-ca-file` and
/// `--client-cert-auth` (etcd requires client certificates whenever it is given a trusted CA, so
/// without client-cert auth the CA is only written for clients and `etcdctl`).
///
/// With TLS the client URLs are `https://127.0.0.1:<port>`, so the harness probes `/health` and
/// `/metrics` on a separate plain-HTTP `--listen-metrics-urls` address
/// ([`Member::health_url`](crate::Member::health_url)). `etcdctl` (see
/// [`EtcdCluster::etcdctl`](crate::EtcdCluster::etcdctl)) trusts `ca_pem` and, with client-cert
/// auth, presents the server certificate as its client certificate: the certificate must then
/// allow client authentication (no extended key usage, or `clientAuth` among them), as etcd
/// itself requires for its internal gRPC gateway.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTls {
    /// The server certificate (PEM); its SANs must cover `127.0.0.1`.
    pub cert_pem: String,
    /// The server certificate's private key (PEM).
    pub key_pem: String,
    /// The CA certificate(s) (PEM) that signed the server certificate and, with
    /// `client_cert_auth`, the client certificates etcd accepts.
    pub ca_pem: String,
    /// Require clients to present a certificate signed by `ca_pem` (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl ClientTls {
    /// TLS with this server certificate, key and CA; no client-certificate requirement.
    pub fn new(cert_pem: impl Into<String>, key_pem: impl Into<String>, ca_pem: impl Into<String>) -> Self {
        Self { cert_pem: cert_pem.into(), key_pem: key_pem.into(), ca_pem: ca_pem.into(), client_cert_auth: false }
    }

    /// Turns `--client-cert-auth` on or off.
    pub fn with_client_cert_auth(mut self, on: bool) -> Self {
        self.client_cert_auth = on;
        self
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("client_cert_auth", &self.client_cert_auth)
            .finish()
    }
}
