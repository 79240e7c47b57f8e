//! Connection settings: [`ClientOptions`], [`TlsOptions`] and [`RetryPolicy`].

use std::fmt;
use std::time::Duration;

/// How a [`Client`](crate::Client) connects and behaves. Start from [`ClientOptions::default`]
/// (or `new`) and adjust with the `with_*` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long establishing a connection to one member may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Deadline for each unary request, sent to the server as `grpc-timeout` too. Waiting calls
    /// (server-side `lock`, `campaign`) and streams are not bound by it. Default 30 s; `None` = none.
    /// A member that lets it expire is left for a cool-down, and a read is then sent once more,
    /// to another member (so a read takes at most about two timeouts; a write is never resent).
    pub request_timeout: Option<Duration>,
    /// HTTP/2 PING interval on idle and busy connections. Default 30 s; `None` turns pings off.
    pub keep_alive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is considered dead. Default 10 s.
    pub keep_alive_timeout: Duration,
    /// Ask members to refuse requests while they have no leader (`hasleader` metadata), so a
    /// partitioned member fails fast and the client moves to another. Default false.
    pub require_leader: bool,
    /// User name and password; the client authenticates and sends the token on every call.
    pub credentials: Option<Credentials>,
    /// TLS settings; with them, endpoints without a scheme use `https://`.
    pub tls: Option<TlsOptions>,
    /// Refresh the endpoint list from `MemberList` this often. Default `None` (off).
    pub auto_sync_interval: Option<Duration>,
    /// Retries of requests that failed because no member could serve them.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            require_leader: false,
            credentials: None,
            tls: None,
            auto_sync_interval: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("require_leader", &self.require_leader)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("auto_sync_interval", &self.auto_sync_interval)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Sets the HTTP/2 keep-alive interval and timeout.
    pub fn with_keep_alive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }
    /// Sets [`require_leader`](Self::require_leader).
    pub fn with_require_leader(mut self, on: bool) -> Self {
        self.require_leader = on;
        self
    }
    /// Authenticate as `user` with `password`. The client authenticates again by itself
    /// whenever the server refuses its token: expired, issued before a user, role or permission
    /// change (a JWT carries the auth revision), or missing because auth was enabled after the
    /// client connected; on every path (unary calls, watch and keep-alive streams).
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials { user: user.into(), password: password.into() });
        self
    }
    /// Use TLS.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Refresh the endpoints from `MemberList` every `interval`.
    pub fn with_auto_sync(mut self, interval: Duration) -> Self {
        self.auto_sync_interval = Some(interval);
        self
    }
    /// Sets the [`RetryPolicy`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A user name and password. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials { user: user.into(), password: password.into() }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// TLS settings: which certificate authorities to trust, and optionally a client identity.
///
/// A server certificate is trusted when one of the enabled sources vouches for it: the CA
/// certificates in [`ca_pem`](Self::ca_pem) (a private CA, as etcd's own docs set up), the
/// webpki roots (Mozilla's list, compiled in) and the platform's root store (for etcd behind a
/// certificate from a public CA, as managed services use). Any combination may be enabled; with
/// none, no server is trusted and connecting fails with the handshake's "unknown issuer".
///
/// TLS needs etcd-wire's `tls` feature (on by default); the two root stores need
/// `tls-webpki-roots` and `tls-native-roots`. Without `tls`, connecting to an `https://`
/// endpoint fails with [`Error::Tls`](crate::Error::Tls).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM of the CA certificate(s) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Trust the webpki roots (Mozilla's root CAs, compiled into the binary). Needs the
    /// `tls-webpki-roots` feature.
    #[cfg(feature = "tls-webpki-roots")]
    pub webpki_roots: bool,
    /// Trust the platform's root store, read when the client connects (on Linux the system's
    /// CA bundle; `SSL_CERT_FILE` or `SSL_CERT_DIR` replace it). Needs the `tls-native-roots`
    /// feature.
    #[cfg(feature = "tls-native-roots")]
    pub native_roots: bool,
    /// PEM certificate and private key presented to the server (mutual TLS).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify in the server's certificate, when it differs from the endpoint's host.
    pub domain_name: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("webpki_roots", &self.uses_webpki_roots())
            .field("native_roots", &self.uses_native_roots())
            .field("identity", &self.identity_pem.is_some())
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

impl TlsOptions {
    /// No CA, no identity.
    pub fn new() -> Self {
        Self::default()
    }
    /// Trust the CA certificate(s) in this PEM.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }
    /// Also trust the webpki roots (Mozilla's root CAs). Needs the `tls-webpki-roots` feature.
    #[cfg(feature = "tls-webpki-roots")]
    pub fn with_webpki_roots(mut self) -> Self {
        self.webpki_roots = true;
        self
    }
    /// Also trust the platform's root store. Needs the `tls-native-roots` feature.
    #[cfg(feature = "tls-native-roots")]
    pub fn with_native_roots(mut self) -> Self {
        self.native_roots = true;
        self
    }
    /// Whether the webpki roots are trusted (always false without the `tls-webpki-roots` feature).
    pub fn uses_webpki_roots(&self) -> bool {
        #[cfg(feature = "tls-webpki-roots")]
        return self.webpki_roots;
        #[cfg(not(feature = "tls-webpki-roots"))]
        false
    }
    /// Whether the platform's roots are trusted (always false without the `tls-native-roots` feature).
    pub fn uses_native_roots(&self) -> bool {
        #[cfg(feature = "tls-native-roots")]
        return self.native_roots;
        #[cfg(not(feature = "tls-native-roots"))]
        false
    }
    /// Present this certificate and key (both PEM) to the server.
    pub fn with_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }
    /// Verify this name in the server certificate instead of the endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }
}

/// Retries of requests that failed because no member could serve them: read-only requests on any
/// `Unavailable`, writes only when the request provably never left the client (connect failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 5; 1 turns retries off.
    pub max_attempts: u32,
    /// Backoff before the first retry. Default 25 ms.
    pub initial_backoff: Duration,
    /// Cap on one backoff. Default 1 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(25), max_backoff: Duration::from_secs(1) }
    }
}

impl RetryPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`max_attempts`](Self::max_attempts) (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
    /// Sets the initial and maximum backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The backoff before retry number `retry` (1 = first retry): exponential from
    /// `initial_backoff`, capped at `max_backoff`, with "full jitter" (uniform in `[d/2, d]`) so
    /// that many clients do not retry in lockstep. `unit` in `[0, 1)` supplies the randomness.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let capped = exp.min(self.max_backoff);
        capped.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_is_bounded_and_grows(retry in 1u32..64, unit in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let d = p.backoff(retry, unit);
            prop_assert!(d <= p.max_backoff);
            prop_assert!(d >= p.initial_backoff / 2);
            // The upper bound of each step never shrinks.
            prop_assert!(p.backoff(retry, 0.999_999) <= p.backoff(retry + 1, 0.999_999) + Duration::from_nanos(1));
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let o = ClientOptions::new().with_user("root", "hunter2");
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
