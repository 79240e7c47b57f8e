//! Endpoints and connections: one HTTP/2 channel per member, round-robin balancing, and failover.
//!
//! Each member gets a tonic [`Channel`], which multiplexes any number of calls over one HTTP/2
//! connection and reconnects by itself. `connect` returns as soon as one endpoint answers; the
//! others join when theirs does. The pool hands out members round-robin, skipping members that
//! recently failed (`Unavailable`, or no answer within the request timeout) until their cool-down
//! passes (or, when every member is cooling down, the one back soonest). The cool-down doubles
//! with each failure in a row, from 1 s up to 8 s, so a dead or black-holed member costs at
//! most one failed attempt per cool-down, and is back within 8 s of recovering.
//!
//! A sync (auto-sync) replaces the endpoints with the members' advertised URLs but keeps the
//! seeds as a fallback, so advertised URLs the client cannot reach never strand it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result, chain};
use crate::options::{ClientOptions, TlsOptions};

/// How long a member that failed once stays out of the rotation; each further failure in a row
/// doubles it, up to [`MAX_COOL_DOWN`].
const COOL_DOWN: Duration = Duration::from_secs(1);
/// The longest cool-down: a member that keeps failing (black-holed: every try costs a caller one
/// request timeout) is tried again at least this often, so it is back soon after it recovers.
const MAX_COOL_DOWN: Duration = Duration::from_secs(8);

/// The default etcd client port, used when an endpoint names none.
const DEFAULT_PORT: u16 = 2379;

/// One etcd member as the client sees it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    health: Mutex<Health>,
    /// Whether this is one of the endpoints given to `connect` or to `set_endpoints` (kept as a
    /// fallback by syncs).
    seed: AtomicBool,
    /// Set when the member leaves the list (a sync, or the caller changing the endpoints): the
    /// streams open on it then move to a member still in the list.
    retired: tokio::sync::watch::Sender<bool>,
}

/// When a member last failed, and how many times in a row.
#[derive(Debug, Default)]
struct Health {
    failed_at: Option<Instant>,
    strikes: u32,
}

impl Health {
    fn failed(at: Instant) -> Health {
        Health { failed_at: Some(at), strikes: 1 }
    }

    /// When the member is back in the rotation, if it is out now.
    fn back_at(&self, now: Instant) -> Option<Instant> {
        let at = self.failed_at?;
        let doublings = self.strikes.saturating_sub(1).min(8);
        let back = at + COOL_DOWN.saturating_mul(1 << doublings).min(MAX_COOL_DOWN);
        (back > now).then_some(back)
    }
}

impl Member {
    fn new(url: String, channel: Channel, health: Health, seed: bool) -> Arc<Member> {
        let retired = tokio::sync::watch::Sender::new(false);
        Arc::new(Member { url, channel, health: Mutex::new(health), seed: AtomicBool::new(seed), retired })
    }

    /// Resolves once the member has left the client's list (at once if it already has).
    pub(crate) fn retired(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut retired = self.retired.subscribe();
        async move {
            // An error means the member itself is gone, which only happens after it left.
            let _ = retired.wait_for(|r| *r).await;
        }
    }
}

/// The members a client talks to.
#[derive(Debug)]
pub(crate) struct Pool {
    members: RwLock<Arc<Members>>,
    next: AtomicUsize,
}

/// The member list: the first `primary` entries are the endpoints in use (the seeds, or the
/// member URLs of the last sync); after them come the seeds a sync replaced, kept as a
/// fallback for when the advertised URLs cannot be reached (NAT, a load balancer in front).
#[derive(Debug)]
struct Members {
    list: Vec<Arc<Member>>,
    primary: usize,
}

impl Pool {
    /// Connects to every endpoint at once and returns as soon as one answers, within the connect
    /// timeout. The others join the rotation when their own answer comes (until then, and if it
    /// never does, they count as failed and are tried again after a cool-down).
    pub(crate) async fn connect(endpoints: &[String], options: &ClientOptions) -> Result<Pool> {
        if endpoints.is_empty() {
            return Err(Error::invalid("no endpoints given"));
        }
        let urls = endpoints.iter().map(|e| normalize(e, options.tls.is_some())).collect::<Result<Vec<_>>>()?;
        let settings = urls.iter().map(|u| endpoint(u, options)).collect::<Result<Vec<_>>>()?;
        let probe = |i: usize, ep: Dial, url: String, options: ClientOptions| async move {
            let result = match tokio::time::timeout(options.connect_timeout, answered(&ep)).await {
                Ok(Ok(channel)) => Ok(channel),
                Ok(Err(reason)) => Err(with_tls_refusal(&url, &options, reason).await),
                Err(_) => Err(format!("no answer within {:?}", options.connect_timeout)),
            };
            (i, result)
        };
        let mut attempts: FuturesUnordered<_> = urls
            .iter()
            .zip(&settings)
            .enumerate()
            .map(|(i, (url, ep))| probe(i, ep.clone(), url.clone(), options.clone()))
            .collect();
        let mut reasons = vec![String::new(); urls.len()];
        let (first, channel) = loop {
            match attempts.next().await {
                Some((i, Ok(channel))) => break (i, channel),
                Some((i, Err(reason))) => reasons[i] = reason,
                None => {
                    let reasons: Vec<_> = urls.iter().zip(&reasons).map(|(u, r)| format!("{u}: {r}")).collect();
                    return Err(Error::Connect { endpoints: urls, reason: reasons.join("; ") });
                }
            }
        };
        let now = Instant::now();
        let members: Vec<_> = urls
            .into_iter()
            .zip(&settings)
            .enumerate()
            .map(|(i, (url, ep))| match i == first {
                true => Member::new(url, channel.clone(), Health::default(), true),
                false => Member::new(url, ep.connect_lazy(), Health::failed(now), true),
            })
            .collect();
        if !attempts.is_empty() {
            let pending = members.clone();
            tokio::spawn(async move {
                while let Some((i, result)) = attempts.next().await {
                    *lock(&pending[i].health) = match result {
                        Ok(_) => Health::default(),
                        Err(_) => Health::failed(Instant::now()),
                    };
                }
            });
        }
        let primary = members.len();
        Ok(Pool { members: RwLock::new(Arc::new(Members { list: members, primary })), next: AtomicUsize::new(0) })
    }

    /// The next member to send a request to: round-robin over the endpoints in use, then the
    /// fallback seeds, skipping members cooling down; when all are, the one back soonest.
    pub(crate) fn pick(&self) -> Arc<Member> {
        let members = self.snapshot();
        let (primary, fallback) = members.list.split_at(members.primary);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut soonest: Option<(Instant, &Arc<Member>)> = None;
        let in_turn = (0..primary.len()).map(|i| &primary[(start + i) % primary.len()]);
        for m in in_turn.chain(fallback) {
            match lock(&m.health).back_at(now) {
                Some(back) => {
                    if soonest.is_none_or(|(s, _)| back < s) {
                        soonest = Some((back, m));
                    }
                }
                None => return m.clone(),
            }
        }
        soonest.map_or_else(|| primary[start % primary.len()].clone(), |(_, m)| m.clone())
    }

    /// Takes `member` out of the rotation for a cool-down (longer after each failure in a row).
    pub(crate) fn mark_failed(&self, member: &Member) {
        let mut health = lock(&member.health);
        health.failed_at = Some(Instant::now());
        health.strikes = health.strikes.saturating_add(1);
    }

    /// Puts `member` back into the rotation.
    pub(crate) fn mark_ok(&self, member: &Member) {
        let mut health = lock(&member.health);
        if health.failed_at.is_some() {
            *health = Health::default();
        }
    }

    /// A channel to exactly `endpoint`: the pool's own when it is a member, else a new connection
    /// with the client's TLS and timeout settings (for calls aimed at one member).
    pub(crate) async fn channel_for(&self, target: &str, options: &ClientOptions) -> Result<Channel> {
        let url = normalize(target, options.tls.is_some())?;
        if let Some(m) = self.snapshot().list.iter().find(|m| m.url == url) {
            return Ok(m.channel.clone());
        }
        match tokio::time::timeout(options.connect_timeout, endpoint(&url, options)?.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => {
                let reason = with_tls_refusal(&url, options, chain(&e)).await;
                Err(Error::Connect { endpoints: vec![url], reason })
            }
            Err(_) => Err(Error::Connect {
                endpoints: vec![url],
                reason: format!("no connection within {:?}", options.connect_timeout),
            }),
        }
    }

    /// How many members there are to choose from (fallback seeds included).
    pub(crate) fn len(&self) -> usize {
        self.snapshot().list.len()
    }

    /// The member URLs in use (not the fallback seeds).
    pub(crate) fn urls(&self) -> Vec<String> {
        let members = self.snapshot();
        members.list[..members.primary].iter().map(|m| m.url.clone()).collect()
    }

    /// Replaces the endpoints in use (auto-sync), keeping the channels of members that stay.
    /// The seeds (the endpoints given to `connect`) that are not among `urls` stay as fallback.
    pub(crate) fn set_urls(&self, urls: &[String], options: &ClientOptions) -> Result<()> {
        self.replace(urls, options, false)
    }

    /// Replaces every endpoint, the seeds included, with `urls` (the caller's new list), keeping
    /// the channels of members that stay. Nothing changes if any of `urls` is invalid.
    pub(crate) fn set_seeds(&self, urls: &[String], options: &ClientOptions) -> Result<()> {
        if urls.is_empty() {
            return Err(Error::invalid("no endpoints given"));
        }
        self.replace(urls, options, true)
    }

    /// The member list with `urls` in use: members already known keep their channel and health;
    /// with `as_seeds`, `urls` become the seeds, else the old seeds stay as fallback. Members
    /// that leave the list are retired, which moves the streams open on them.
    fn replace(&self, urls: &[String], options: &ClientOptions, as_seeds: bool) -> Result<()> {
        if urls.is_empty() {
            return Ok(());
        }
        let urls = urls.iter().map(|u| normalize(u, options.tls.is_some())).collect::<Result<Vec<_>>>()?;
        let mut guard = self.members.write().unwrap_or_else(|e| e.into_inner());
        let current = guard.clone();
        let mut next: Vec<Arc<Member>> = Vec::with_capacity(urls.len() + current.list.len());
        for url in urls {
            if next.iter().any(|m| m.url == url) {
                continue;
            }
            match current.list.iter().find(|m| m.url == url) {
                Some(m) => {
                    if as_seeds {
                        m.seed.store(true, Ordering::Relaxed);
                    }
                    next.push(m.clone());
                }
                None => next.push(Member::new(
                    url.clone(),
                    endpoint(&url, options)?.connect_lazy(),
                    Health::default(),
                    as_seeds,
                )),
            }
        }
        let primary = next.len();
        if !as_seeds {
            let seeds: Vec<_> = current
                .list
                .iter()
                .filter(|m| m.seed.load(Ordering::Relaxed) && !next.iter().any(|n| n.url == m.url))
                .cloned()
                .collect();
            next.extend(seeds);
        }
        for gone in current.list.iter().filter(|m| !next.iter().any(|n| Arc::ptr_eq(n, m))) {
            gone.retired.send_replace(true);
        }
        *guard = Arc::new(Members { list: next, primary });
        Ok(())
    }

    fn snapshot(&self) -> Arc<Members> {
        self.members.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A member nothing listens behind, for unit tests.
#[cfg(test)]
pub(crate) fn test_member() -> Arc<Member> {
    let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    Member::new("http://127.0.0.1:1".to_owned(), channel, Health::default(), true)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to `ep` and waits for one answer from the server (a `Status`; any gRPC status counts,
/// even an auth error): a listener that accepts TCP but never speaks etcd's gRPC (a black-holed
/// proxy, another service) must fail within the connect timeout, not at the first request.
async fn answered(ep: &Dial) -> std::result::Result<Channel, String> {
    let channel = ep.connect().await.map_err(|e| chain(&e))?;
    let probe = crate::pb::etcdserverpb::maintenance_client::MaintenanceClient::new(channel.clone())
        .status(crate::pb::etcdserverpb::StatusRequest {})
        .await;
    match probe {
        Ok(_) => Ok(channel),
        Err(status) if std::error::Error::source(&status).is_none() && status.code() != tonic::Code::Unavailable => {
            Ok(channel)
        }
        Err(status) => Err(chain(&status)),
    }
}

/// `reason` for a failed connect, followed by the TLS alert the server sent, if it sent one the
/// failed attempt could not see (see [`crate::tls_refusal`]).
async fn with_tls_refusal(url: &str, options: &ClientOptions, reason: String) -> String {
    #[cfg(feature = "tls")]
    if url.starts_with("https://") {
        let tls = options.tls.clone().unwrap_or_default();
        if let Some(refusal) = crate::tls_refusal::tls_refusal(url, &tls, options.connect_timeout).await
            && !reason.contains(&refusal)
        {
            return format!("{reason}; the server's TLS answer: {refusal}");
        }
    }
    #[cfg(not(feature = "tls"))]
    let _ = (url, options);
    reason
}

/// Turns `host:port`, `http://host:port` or `https://host:port` into a full URL, and `unix://PATH`
/// or `unix:PATH` into `unix://PATH`, or explains why not.
pub(crate) fn normalize(endpoint: &str, tls: bool) -> Result<String> {
    let bad = |reason: &str| Error::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(bad("empty endpoint"));
    }
    if let Some(rest) = trimmed.get(..5).filter(|s| s.eq_ignore_ascii_case("unix:")).map(|_| &trimmed[5..]) {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() || path.contains('\0') {
            return Err(bad(
                "expected unix://PATH (unix:///absolute/path, or unix://relative as etcd names its socket)",
            ));
        }
        return Ok(format!("unix://{path}"));
    }
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            (s.to_ascii_lowercase(), rest)
        }
        Some((s, _)) => return Err(bad(&format!("unsupported scheme {s:?}; use http://, https:// or unix://"))),
        None => (if tls { "https" } else { "http" }.to_owned(), trimmed),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(bad("expected host:port"));
    }
    let parsed: http::uri::Authority = authority.parse().map_err(|e| bad(&format!("{e}")))?;
    if parsed.host().is_empty() {
        return Err(bad("missing host"));
    }
    // The text after the host's last ':' (after ']' for IPv6) must be a port, if present.
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    let port = match after_host.rsplit_once(':') {
        Some((_, p)) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("invalid port"))?,
        None => DEFAULT_PORT,
    };
    Ok(format!("{scheme}://{}:{port}", parsed.host()))
}

/// How to reach one member: tonic's endpoint with the client's settings and, for a `unix://`
/// member, the socket to dial instead of the endpoint's (placeholder) host.
#[derive(Debug, Clone)]
struct Dial {
    ep: Endpoint,
    socket: Option<std::path::PathBuf>,
}

impl Dial {
    async fn connect(&self) -> std::result::Result<Channel, tonic::transport::Error> {
        match &self.socket {
            None => self.ep.connect().await,
            Some(path) => self.ep.connect_with_connector(unix_connector(path.clone())).await,
        }
    }

    fn connect_lazy(&self) -> Channel {
        match &self.socket {
            None => self.ep.connect_lazy(),
            Some(path) => self.ep.connect_with_connector_lazy(unix_connector(path.clone())),
        }
    }
}

/// Dials the unix socket at `path`, whatever URI tonic asks for.
#[cfg(unix)]
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move { Ok(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// Elsewhere there are no unix sockets (`endpoint` refuses `unix://` before any dial).
#[cfg(not(unix))]
fn unix_connector(
    _: std::path::PathBuf,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Error = std::io::Error,
    Future = std::future::Ready<std::io::Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|_: http::Uri| std::future::ready(Err(std::io::ErrorKind::Unsupported.into())))
}

/// tonic's endpoint for `url` (a normalized URL), with the client's timeouts, keep-alive and TLS.
fn endpoint(url: &str, options: &ClientOptions) -> Result<Dial> {
    let invalid = |reason: String| Error::InvalidEndpoint { endpoint: url.to_owned(), reason };
    if let Some(path) = url.strip_prefix("unix://") {
        if !cfg!(unix) {
            return Err(invalid("unix sockets need a unix platform".to_owned()));
        }
        // The authority only names the connection (`:authority`); the connector dials the socket.
        let ep = settings(Endpoint::from_static("http://localhost"), options);
        return Ok(Dial { ep, socket: Some(path.into()) });
    }
    let mut ep = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(chain(&e)))?;
    ep = settings(ep, options);
    if url.starts_with("https://") {
        ep = with_tls(ep, options.tls.clone().unwrap_or_default())?;
    }
    Ok(Dial { ep, socket: None })
}

/// `ep` with the client's connect timeout, keep-alive and `TCP_NODELAY`.
fn settings(ep: Endpoint, options: &ClientOptions) -> Endpoint {
    let ep = ep
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .keep_alive_timeout(options.keep_alive_timeout)
        .keep_alive_while_idle(true);
    match options.keep_alive_interval {
        Some(interval) => ep.http2_keep_alive_interval(interval),
        None => ep,
    }
}

/// `ep` speaking TLS with these settings.
#[cfg(feature = "tls")]
fn with_tls(ep: Endpoint, tls: TlsOptions) -> Result<Endpoint> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca_pem {
        config = config.ca_certificate(Certificate::from_pem(ca));
    }
    #[cfg(feature = "tls-webpki-roots")]
    if tls.webpki_roots {
        config = config.with_webpki_roots();
    }
    #[cfg(feature = "tls-native-roots")]
    if tls.native_roots {
        config = config.with_native_roots();
    }
    if let Some((cert, key)) = &tls.identity_pem {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = &tls.domain_name {
        config = config.domain_name(name.clone());
    }
    ep.tls_config(config).map_err(|e| {
        let mut reason = chain(&e);
        if tls.uses_native_roots() && reason.contains("no native certs") {
            reason.push_str(
                " (the platform's root store has no CA certificates: install the system's CA bundle, \
                             point SSL_CERT_FILE at one, or trust a CA given with TlsOptions::with_ca_pem)",
            );
        }
        Error::Tls { reason }
    })
}

/// Without the `tls` feature there is no TLS to speak: an `https://` endpoint is refused.
#[cfg(not(feature = "tls"))]
fn with_tls(_: Endpoint, _: TlsOptions) -> Result<Endpoint> {
    Err(Error::Tls { reason: NO_TLS.to_owned() })
}

/// Why a build without the `tls` feature refuses `https://` endpoints.
#[cfg(not(feature = "tls"))]
const NO_TLS: &str = "this build of etcd-wire has no TLS support: enable its `tls` feature for https:// endpoints";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes_endpoints() {
        let ok = [
            ("127.0.0.1:2379", false, "http://127.0.0.1:2379"),
            ("localhost", false, "http://localhost:2379"),
            ("http://10.0.0.1:1234/", false, "http://10.0.0.1:1234"),
            ("HTTPS://a.example:1", false, "https://a.example:1"),
            ("[::1]:2379", true, "https://[::1]:2379"),
            (" etcd:2379 ", false, "http://etcd:2379"),
            ("unix:///run/etcd.sock", true, "unix:///run/etcd.sock"),
            ("UNIX://localhost:2379", false, "unix://localhost:2379"),
            ("unix:relative.sock", false, "unix://relative.sock"),
        ];
        for (input, tls, want) in ok {
            assert_eq!(normalize(input, tls).ok().as_deref(), Some(want), "{input}");
        }
        for bad in [
            "",
            "   ",
            "unix://",
            "unix:",
            "unixs:///tmp/sock",
            "http://",
            "host:notaport",
            "a b:1",
            "http://h:1/path",
            "h:0",
        ] {
            assert!(matches!(normalize(bad, false), Err(Error::InvalidEndpoint { .. })), "{bad:?} accepted");
        }
    }

    /// A plaintext build refuses `https://` with a typed error, before any connection attempt.
    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn https_is_refused_without_the_tls_feature() {
        for (endpoint, options) in [
            ("https://127.0.0.1:2379", ClientOptions::default()),
            ("127.0.0.1:2379", ClientOptions::default().with_tls(TlsOptions::new())),
        ] {
            match Pool::connect(&[endpoint.to_owned()], &options).await {
                Err(Error::Tls { reason }) => assert_eq!(reason, NO_TLS),
                other => panic!("{endpoint}: expected Error::Tls, got {:?}", other.map(|_| ())),
            }
        }
    }

    proptest! {
        #[test]
        fn normalize_never_panics(s in ".{0,40}") {
            let _ = normalize(&s, false);
        }

        #[test]
        fn host_port_round_trips(a in 0u8..=255, b in 0u8..=255, port in 1u16..) {
            let url = normalize(&format!("127.{a}.{b}.1:{port}"), false).ok();
            prop_assert_eq!(url, Some(format!("http://127.{a}.{b}.1:{port}")));
        }
    }
}
