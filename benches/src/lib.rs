//! Shared code of the benchmarks: the etcd server they measure against, the measurements more
//! than one bench (or the report) takes, the peer (`etcd-client`, driven by [`peer`]), and the
//! lock-strategy comparison report ([`report`], which the `report` bench target runs).
//!
//! Environment:
//! - `ETCD_ENDPOINTS=host:port,...`: measure against your own cluster instead of starting one.
//! - `BENCH_FSYNC=1`: start etcd with fsync on (a realistic run). By default the harness starts it
//!   with `--unsafe-no-fsync`, so the numbers show client and protocol overhead, not the disk.

pub mod peer;
pub mod report;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_harness::{ClusterConfig, EtcdCluster, TcpProxy};
use etcd_lockbench::{Contender, Counters, Outcome, Until};
use etcd_recipes::{Election, Leadership, Session};
use etcd_wire::{Client, ClientOptions, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

/// A boxed error for bench setup code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the server persists writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fsync {
    /// `--unsafe-no-fsync`: the numbers show client and protocol overhead.
    Off,
    /// fsync on every commit, as in production.
    On,
    /// The user's own cluster: we cannot tell.
    Unknown,
}

/// The etcd the benches talk to: a local one started through the harness, or the user's own
/// (`ETCD_ENDPOINTS`). A started server stops when this is dropped.
#[derive(Debug)]
pub struct Server {
    endpoints: Vec<String>,
    fsync: Fsync,
    version: String,
    members: usize,
    /// The client round trip the harness's proxy adds, if the server is behind one.
    latency: Option<Duration>,
    _proxy: Option<TcpProxy>,
    _cluster: Option<EtcdCluster>,
}

/// A deployment the report measures besides loopback without fsync (the issue's "realistic
/// profiles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// Three members on loopback, fsync on: every write waits for a quorum's disks.
    ThreeMembersFsync,
    /// One member without fsync behind the harness's TCP proxy adding about this client round
    /// trip (half each way).
    RoundTrip(Duration),
}

impl Profile {
    /// How the report names it.
    pub fn name(self) -> String {
        match self {
            Profile::ThreeMembersFsync => "3 members, fsync on".to_owned(),
            Profile::RoundTrip(rtt) => format!("{:.0} ms client round trip", rtt.as_secs_f64() * 1e3),
        }
    }
}

impl Server {
    /// The user's cluster when `ETCD_ENDPOINTS` is set; otherwise a local single member, with
    /// fsync when `BENCH_FSYNC=1` (or `fsync` is true), without it otherwise.
    pub fn start(fsync: bool) -> Result<Server, BoxError> {
        let fsync = fsync || std::env::var("BENCH_FSYNC").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if let Ok(list) = std::env::var("ETCD_ENDPOINTS") {
            let endpoints: Vec<String> =
                list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            if endpoints.is_empty() {
                return Err("ETCD_ENDPOINTS is set but empty".into());
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let version = rt.block_on(async {
                let client = Client::connect(&endpoints, ClientOptions::default()).await?;
                Ok::<_, etcd_wire::Error>(client.status().await?.version)
            })?;
            let members = endpoints.len();
            return Ok(Server {
                endpoints,
                fsync: Fsync::Unknown,
                version,
                members,
                latency: None,
                _proxy: None,
                _cluster: None,
            });
        }
        let cluster = EtcdCluster::start(ClusterConfig::default().with_unsafe_no_fsync(!fsync))?;
        let no_fsync = !fsync && cluster.binaries().supports_unsafe_no_fsync();
        Ok(Server {
            endpoints: cluster.endpoints(),
            fsync: if no_fsync { Fsync::Off } else { Fsync::On },
            version: cluster.version().to_string(),
            members: cluster.len(),
            latency: None,
            _proxy: None,
            _cluster: Some(cluster),
        })
    }

    /// A local server in `profile`, started by the harness (never the user's cluster).
    pub fn start_profile(profile: Profile) -> Result<Server, BoxError> {
        let (config, latency) = match profile {
            Profile::ThreeMembersFsync => (ClusterConfig::default().with_members(3), None),
            Profile::RoundTrip(rtt) => (ClusterConfig::default().with_unsafe_no_fsync(true), Some(rtt)),
        };
        let cluster = EtcdCluster::start(config)?;
        let no_fsync = latency.is_some() && cluster.binaries().supports_unsafe_no_fsync();
        let (endpoints, proxy) = match latency {
            Some(rtt) => {
                let upstream = cluster.endpoints()[0].trim_start_matches("http://").to_owned();
                let proxy = TcpProxy::start(upstream)?;
                proxy.set_delay(rtt / 2);
                (vec![proxy.url()], Some(proxy))
            }
            None => (cluster.endpoints(), None),
        };
        Ok(Server {
            endpoints,
            fsync: if no_fsync { Fsync::Off } else { Fsync::On },
            version: cluster.version().to_string(),
            members: cluster.len(),
            latency,
            _proxy: proxy,
            _cluster: Some(cluster),
        })
    }

    /// The client URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The etcd version the server reports (or the harness started).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How the server persists writes.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// The fsync mode as a label for tables and plots.
    pub fn fsync_label(&self) -> &'static str {
        match self.fsync {
            Fsync::Off => "--unsafe-no-fsync (client-overhead run)",
            Fsync::On => "fsync on (realistic run)",
            Fsync::Unknown => "your cluster (ETCD_ENDPOINTS; fsync as configured there)",
        }
    }

    /// One line saying what was measured against.
    pub fn describe(&self) -> String {
        let place = if self._cluster.is_some() { "on loopback, started by the harness" } else { "from ETCD_ENDPOINTS" };
        let members = if self.members == 1 { "1 member".to_owned() } else { format!("{} members", self.members) };
        let latency = self.latency.map_or(String::new(), |rtt| {
            format!(", behind a proxy adding {:.1} ms per round trip", rtt.as_secs_f64() * 1e3)
        });
        format!("etcd {}, {members} {place}{latency}, {}", self.version, self.fsync_label())
    }

    /// A client of ours with default options.
    pub async fn client(&self) -> etcd_wire::Result<Client> {
        Client::connect(&self.endpoints, ClientOptions::default()).await
    }
}

/// The runtime every bench drives its clients on (multi-threaded, one worker per core).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A name no earlier run used, so runs against a long-lived cluster never meet old keys.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("bench/{prefix}/{}-{:x}-{}", std::process::id(), nanos & 0xffff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether the criterion filters on the command line (if any) select `id`, for measurements made
/// outside criterion. Approximates criterion's regex filter with a substring match, which is how
/// filters are usually written.
pub fn selected(id: &str) -> bool {
    selected_in(&std::env::args().skip(1).collect::<Vec<_>>(), id)
}

/// [`selected`], for the command line `args` (after the program name) instead of this process's.
pub fn selected_in(args: &[String], id: &str) -> bool {
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--color",
        "-c",
        "--profile-time",
        "--format",
    ];
    let mut filters = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--list" {
            return false;
        }
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

// ---------------------------------------------------------------------------------------------
// KV

/// The KV requests the benches compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// `Put(key, 64-byte value)`.
    Put,
    /// `Range(key)`, linearizable (the default: a read index round through the leader).
    RangeLinearizable,
    /// `Range(key)`, serializable (answered from the member's own store).
    RangeSerializable,
    /// `Txn If(Value(key) == v) Then Put(key, v)`.
    Txn,
}

impl KvOp {
    /// Every op, in report order.
    pub const ALL: [KvOp; 4] = [KvOp::Put, KvOp::RangeLinearizable, KvOp::RangeSerializable, KvOp::Txn];

    /// The name used in bench ids: `put`, `range_linearizable`, `range_serializable`, `txn`.
    pub fn name(self) -> &'static str {
        match self {
            KvOp::Put => "put",
            KvOp::RangeLinearizable => "range_linearizable",
            KvOp::RangeSerializable => "range_serializable",
            KvOp::Txn => "txn",
        }
    }
}

/// The value every KV bench writes and reads: 64 bytes.
pub const KV_VALUE: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One `op` on `key` through our client.
pub async fn wire_kv(client: &Client, key: &str, op: KvOp) -> etcd_wire::Result<()> {
    let key = key.as_bytes().to_vec();
    match op {
        KvOp::Put => client.put(key, &KV_VALUE[..], PutOptions::new()).await.map(drop),
        KvOp::RangeLinearizable => client.get(key, GetOptions::new()).await.map(drop),
        KvOp::RangeSerializable => client.get(key, GetOptions::new().with_serializable()).await.map(drop),
        KvOp::Txn => {
            let txn = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, &KV_VALUE[..])])
                .and_then([TxnOp::put(key, &KV_VALUE[..], PutOptions::new())]);
            client.txn(txn).await.map(drop)
        }
    }
}

/// Runs `total` calls of `op` with at most `in_flight` of them outstanding at once (all polled by
/// the calling task, on whatever client `op` uses); returns the wall time.
pub async fn in_flight<F, Fut, E>(total: u64, in_flight: usize, op: F) -> Result<Duration, E>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let start = Instant::now();
    let mut calls = futures::stream::iter(0..total).map(op).buffer_unordered(in_flight.max(1));
    while calls.try_next().await?.is_some() {}
    Ok(start.elapsed())
}

/// Sorted samples, with nearest-rank quantiles.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    /// Adds many.
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Duration>) {
        self.0.extend(ds);
    }
    /// The `q` quantile (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        etcd_lockbench::quantile(&self.sorted(), q)
    }
    /// The samples, sorted.
    pub fn sorted(&self) -> Vec<Duration> {
        let mut all = self.0.clone();
        all.sort_unstable();
        all
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Locks

/// A set of contenders that can run many times: [`etcd_lockbench::run`] consumes its contenders,
/// and making 64 clients and sessions for every criterion sample would cost more than the sample.
pub struct Contenders {
    each: Vec<Arc<tokio::sync::Mutex<Box<dyn Contender>>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Contenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contenders").field("n", &self.each.len()).finish()
    }
}

struct Handle(Arc<tokio::sync::Mutex<Box<dyn Contender>>>);

impl Contender for Handle {
    fn acquire(&mut self) -> BoxFuture<'_, etcd_lockbench::Result<()>> {
        Box::pin(async move { self.0.lock().await.acquire().await })
    }
    fn release(&mut self) -> BoxFuture<'_, etcd_lockbench::Result<()>> {
        Box::pin(async move { self.0.lock().await.release().await })
    }
}

impl Contenders {
    /// Wraps contenders (and the counters they count into) for repeated runs.
    pub fn new(contenders: Vec<Box<dyn Contender>>, counters: Arc<Counters>) -> Self {
        Contenders { each: contenders.into_iter().map(|c| Arc::new(tokio::sync::Mutex::new(c))).collect(), counters }
    }

    /// How many contenders.
    pub fn len(&self) -> usize {
        self.each.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.each.is_empty()
    }

    /// One run: every contender loops `lock → unlock` (no hold) until `until`, then finishes the
    /// cycle it is in.
    pub async fn run(&self, until: Until) -> etcd_lockbench::Result<Outcome> {
        let handles: Vec<Box<dyn Contender>> =
            self.each.iter().map(|c| Box::new(Handle(c.clone())) as Box<dyn Contender>).collect();
        etcd_lockbench::run(handles, Duration::ZERO, until, Some(&self.counters)).await
    }
}

/// Adds run `b` to the running total `a` (samples pooled, counts and time summed).
pub fn merge(a: &mut Outcome, b: Outcome) {
    a.acquisitions += b.acquisitions;
    a.elapsed += b.elapsed;
    a.waits.extend(b.waits);
    a.waits.sort_unstable();
    a.handoffs.extend(b.handoffs);
    a.handoffs.sort_unstable();
    let add = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    a.rpcs = add(a.rpcs, b.rpcs);
    a.watches = add(a.watches, b.watches);
    a.events = add(a.events, b.events);
}

// ---------------------------------------------------------------------------------------------
// Election

/// Election failover, measured again and again on one election: the leader's session is closed,
/// and the time until the waiting follower's `observe` reports the follower as leader is one
/// sample. The follower then leads, and the next sample brings a new follower.
#[derive(Debug)]
pub struct Failover {
    clients: [Client; 2],
    name: String,
    leader: (Session, Leadership),
    turn: usize,
}

impl Failover {
    /// A first leader on one client; followers alternate between two clients (two processes).
    pub async fn new(server: &Server) -> etcd_recipes::Result<Failover> {
        let clients = [server.client().await?, server.client().await?];
        let name = unique("election");
        let session = Session::builder(&clients[0]).ttl(10).build().await?;
        let leadership = Election::new(&session, &name)?.campaign("leader-0").await?;
        Ok(Failover { clients, name, leader: (session, leadership), turn: 1 })
    }

    /// One failover; returns the time from closing the leader's session to the follower's
    /// `observe` reporting the new leader.
    pub async fn sample(&mut self) -> etcd_recipes::Result<Duration> {
        let client = self.clients[self.turn % 2].clone();
        let session = Session::builder(&client).ttl(10).build().await?;
        let election = Election::new(&session, &self.name)?;
        let value = format!("leader-{}", self.turn);
        let campaign = tokio::spawn({
            let election = election.clone();
            async move { election.campaign(value).await }
        });
        // Wait until the follower stands in line behind the leader.
        let key = format!("{}/{:x}", self.name, session.lease_id());
        while client.get(key.clone(), GetOptions::new().with_count_only()).await?.count == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut observe = Box::pin(election.observe());
        let first = observe.next().await.ok_or(etcd_recipes::Error::NoLeader)??;
        debug_assert_eq!(first.key, self.leader.1.key().clone());
        let start = Instant::now();
        self.leader.0.close().await?;
        loop {
            let seen = observe.next().await.ok_or(etcd_recipes::Error::NoLeader)??;
            if seen.key.as_ref() == key.as_bytes() {
                break;
            }
        }
        let took = start.elapsed();
        let leadership = campaign.await.map_err(|e| etcd_recipes::Error::Recipe(format!("campaign task: {e}")))??;
        self.leader = (session, leadership);
        self.turn += 1;
        Ok(took)
    }
}

// ---------------------------------------------------------------------------------------------
// Lease keep-alive cost

/// What keeping many leases alive on one client costs this process.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct KeepAliveCost {
    /// Leases kept alive.
    pub leases: usize,
    /// Their TTL, seconds (refreshed every TTL/3).
    pub ttl: i64,
    /// How long granting and registering them all took.
    pub setup: Duration,
    /// The window CPU was measured over.
    pub window: Duration,
    /// Keep-alive requests the server received in the window (its
    /// `grpc_server_msg_received_total` for `LeaseKeepAlive`), or, when its metrics cannot be read,
    /// the number the TTL implies.
    pub refreshes: f64,
    /// Whether `refreshes` was counted by the server (not estimated).
    pub counted: bool,
    /// CPU time (user + system) this process spent per second of the window, per 1,000 leases.
    pub cpu_per_sec_per_1000: Duration,
    /// CPU time per refresh: the window's CPU over `refreshes`.
    pub cpu_per_refresh: Duration,
    /// Resident memory the registrations added, bytes per lease.
    pub rss_per_lease: f64,
    /// Leases lost during the window (should be 0).
    pub lost: usize,
}

/// Keep-alive requests the server's members received so far, if every member's metrics answer.
fn keep_alives_received(server: &Server) -> Option<f64> {
    server
        .endpoints()
        .iter()
        .map(|e| etcd_harness::Metrics::scrape(e).ok().map(|m| m.grpc_received(&["LeaseKeepAlive"])))
        .sum()
}

/// Grants `leases` leases of `ttl` seconds on a new client of ours, keeps them all alive on its
/// shared keep-alive stream for `window` (after one refresh round, so the window is steady
/// state), and reports the process's CPU per refresh and memory per lease. Revokes them
/// afterwards.
pub async fn keep_alive_cost(
    server: &Server,
    leases: usize,
    ttl: i64,
    window: Duration,
) -> etcd_wire::Result<KeepAliveCost> {
    let client = server.client().await?;
    let client = &client;
    let rss0 = rss_bytes();
    let start = Instant::now();
    let ids: Vec<i64> = futures::stream::iter(0..leases)
        .map(|_| async { client.lease_grant(ttl, None).await.map(|g| g.id) })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let kept: Vec<etcd_wire::KeepAlive> = futures::stream::iter(ids.iter().copied())
        .map(|id| client.lease_keep_alive(id))
        .buffer_unordered(256)
        .try_collect()
        .await?;
    let setup = start.elapsed();
    tokio::time::sleep(Duration::from_secs((ttl / 3).max(1) as u64)).await;
    let rss1 = rss_bytes();
    let received0 = keep_alives_received(server);
    let cpu0 = cpu_time();
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = cpu_time().saturating_sub(cpu0);
    let window = w0.elapsed();
    let received = keep_alives_received(server).zip(received0).map(|(b, a)| b - a);
    let lost = kept.iter().filter(|k| k.is_lost()).count();
    drop(kept);
    let estimate = leases as f64 * window.as_secs_f64() / ((ttl / 3).max(1) as f64);
    let refreshes = received.unwrap_or(estimate).max(1.0);
    let cost = KeepAliveCost {
        leases,
        ttl,
        setup,
        window,
        refreshes,
        counted: received.is_some(),
        cpu_per_sec_per_1000: cpu.div_f64(window.as_secs_f64() * leases as f64 / 1000.0),
        cpu_per_refresh: cpu.div_f64(refreshes),
        rss_per_lease: rss1.saturating_sub(rss0) as f64 / leases as f64,
        lost,
    };
    futures::stream::iter(ids)
        .map(|id| async move { client.lease_revoke(id).await.map(drop).or_else(ignore_lease_not_found) })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(cost)
}

fn ignore_lease_not_found(e: etcd_wire::Error) -> etcd_wire::Result<()> {
    match e {
        etcd_wire::Error::LeaseNotFound { .. } => Ok(()),
        e => Err(e),
    }
}

/// User + system CPU time of this process so far, every thread included (`getrusage`).
pub fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data for which all-zero bytes are valid, and `getrusage` only
    // writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// This process's resident set size in bytes (from `/proc/self/status`; zero elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_pools_samples_and_sums_counts() {
        let mut a = Outcome::default();
        let mut b = Outcome::default();
        b.acquisitions = 2;
        b.elapsed = Duration::from_millis(10);
        b.waits = vec![Duration::from_millis(3), Duration::from_millis(1)];
        b.rpcs = Some(4);
        merge(&mut a, b.clone());
        merge(&mut a, b);
        assert_eq!(a.acquisitions, 4);
        assert_eq!(a.elapsed, Duration::from_millis(20));
        assert_eq!(a.waits.len(), 4);
        assert!(a.waits.is_sorted());
        assert_eq!(a.rpcs, Some(8));
        assert_eq!(a.events, None);
    }

    #[test]
    fn process_counters_read_proc() {
        assert!(rss_bytes() > 0);
        let t0 = cpu_time();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time() > t0);
    }
}
