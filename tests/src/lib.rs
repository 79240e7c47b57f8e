//! Shared helpers for the integration tests in `tests/`.
//!
//! Every test starts its own etcd through [`etcd_harness`] on free loopback ports; the server
//! version comes from `ETCD_VERSION` (default 3.5.1), so one suite runs against each release.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_harness::{ClusterConfig, EtcdCluster};
use tonic::transport::{Channel, Endpoint};

pub use etcd_harness;

pub mod broken;
pub mod history;
pub mod lockset;

/// Starts a single-member cluster of the version named by `ETCD_VERSION`.
pub fn single() -> Result<EtcdCluster> {
    EtcdCluster::start(ClusterConfig::default()).context("starting etcd")
}

/// Starts a three-member cluster of the version named by `ETCD_VERSION`.
pub fn three() -> Result<EtcdCluster> {
    EtcdCluster::start(ClusterConfig::default().with_members(3)).context("starting a 3-member etcd")
}

/// A gRPC channel to one client URL of the cluster.
pub async fn channel(url: &str) -> Result<Channel> {
    Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Retries `f` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gauge or counter from a member's Prometheus endpoint, e.g.
/// `etcd_debugging_mvcc_watcher_total`: what the server sees, for tests that must not trust the
/// client's own account.
pub fn metric(url: &str, name: &str) -> Result<f64> {
    etcd_harness::Metrics::scrape(url)?.value(name).context("no such metric")
}

/// How many requests of any of `methods` (`Txn`, `DeleteRange`, ...) the member at `url` has
/// started serving: its `grpc_server_started_total` for them, summed over the other labels, from
/// one read of its metrics. Counts what reached the server, whatever became of the answer.
pub fn requests_started(url: &str, methods: &[&str]) -> Result<f64> {
    Ok(etcd_harness::Metrics::scrape(url)?.grpc_started(methods))
}

/// etcd's gauge of registered watchers.
pub const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// The watchers etcd holds across the members at `endpoints` (their [`WATCHERS`] gauges; the
/// server-side Lock and Election services' own watches count too).
pub fn watchers(endpoints: &[String]) -> Result<f64> {
    endpoints.iter().map(|e| metric(e, WATCHERS)).sum()
}

/// Waits until etcd holds at least `n` watchers across `endpoints`. A waiter whose watch is
/// registered is blocked on it: a check that it has not finished needs no sleep after this.
pub async fn wait_for_watchers(endpoints: &[String], n: f64) -> Result<()> {
    eventually(Duration::from_secs(30), &format!("{n} watchers"), || async {
        (watchers(endpoints).ok()? >= n).then_some(())
    })
    .await
}

/// Waits until exactly `n` keys are under `prefix` (a contender's key is in the queue, ...).
pub async fn wait_for_keys(client: &etcd_wire::Client, prefix: &str, n: i64) -> Result<()> {
    eventually(Duration::from_secs(30), &format!("{n} keys under {prefix:?}"), || async {
        let opts = etcd_wire::GetOptions::new().with_prefix().with_count_only();
        (client.get(prefix.to_owned(), opts).await.ok()?.count == n).then_some(())
    })
    .await
}

/// What a recipe did, recorded through its tracer: lets a test wait for a waiter's *decision*
/// (it saw an event and is waiting again, on which key) instead of sleeping.
#[derive(Debug, Clone, Default)]
pub struct Steps(std::sync::Arc<std::sync::Mutex<Vec<etcd_recipes::TraceKind>>>);

impl Steps {
    /// A recorder and the tracer that feeds it.
    pub fn new() -> (Steps, etcd_recipes::Tracer) {
        let steps = Steps::default();
        let sink = steps.clone();
        (steps, etcd_recipes::Tracer::new(move |e| sink.lock().push(e.kind.clone())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<etcd_recipes::TraceKind>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys of the watches opened so far, in order.
    pub fn watched(&self) -> Vec<String> {
        let steps = self.lock();
        steps
            .iter()
            .filter_map(|k| if let etcd_recipes::TraceKind::Watch { key, .. } = k { Some(key.clone()) } else { None })
            .collect()
    }

    /// The watch events the recipe has received so far, as `(key, PUT|DELETE)`, in order (each
    /// revision once, whichever twin watch delivered it).
    pub fn events(&self) -> Vec<(String, &'static str)> {
        let steps = self.lock();
        steps
            .iter()
            .filter_map(|k| match k {
                etcd_recipes::TraceKind::Event { key, kind, .. } => Some((key.clone(), *kind)),
                _ => None,
            })
            .collect()
    }

    /// How many RPCs the recipe has made so far (answered or abandoned).
    pub fn rpcs(&self) -> usize {
        self.lock().iter().filter(|k| matches!(k, etcd_recipes::TraceKind::Rpc { .. })).count()
    }

    /// Waits until the recipe opened a watch on `key`: it has decided to wait on that key (for a
    /// waiter that first waited on another one: it saw that one go, by an event or a read).
    pub async fn wait_watching(&self, key: &str) -> Result<()> {
        let waited = eventually(Duration::from_secs(30), &format!("a watch on {key:?}"), || async {
            self.watched().iter().any(|k| k == key).then_some(())
        })
        .await;
        waited.with_context(|| format!("the steps were: {:?}", self.lock()))
    }
}

/// `tasks` tasks, each with its own session on `client`, increment an in-process counter with a
/// deliberately racy read-yield-write under `strategy`'s lock `name`. Returns the final count:
/// `tasks` unless two held the lock at once (an overlap loses an increment).
pub async fn count_under_lock(
    client: &etcd_wire::Client,
    strategy: etcd_recipes::Strategy,
    name: &str,
    tasks: usize,
) -> Result<u64> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let counter = Arc::new(AtomicU64::new(0));
    let mut running = Vec::new();
    for _ in 0..tasks {
        let (client, counter, name) = (client.clone(), counter.clone(), name.to_owned());
        running.push(tokio::spawn(async move {
            let session = etcd_recipes::Session::new(&client).await?;
            let lock = strategy.new_lock(&session, &name)?;
            let guard = lock.lock().await?;
            let seen = counter.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            counter.store(seen + 1, Ordering::SeqCst);
            guard.unlock().await?;
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for task in running {
        tokio::time::timeout(Duration::from_secs(120), task).await.context("a task never got the lock")???;
    }
    Ok(counter.load(Ordering::SeqCst))
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
