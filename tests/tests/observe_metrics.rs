//! What the client and the recipes record through the `metrics` facade (the `metrics` feature),
//! read back from `metrics-util`'s debugging recorder: calls by RPC and outcome, their latency,
//! retries, stream restarts, and lock wait, hold and loss. One test: the recorder is global.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_harness::{ClusterConfig, EtcdCluster};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, PutOptions, WatchOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Everything recorded so far, by name and sorted labels: counters summed, histograms counted
/// (a snapshot drains the recorder, so it is merged in here).
struct Recorded {
    snapshotter: Snapshotter,
    seen: HashMap<(String, Vec<(String, String)>), u64>,
}

impl Recorded {
    fn install() -> Result<Recorded> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().map_err(|e| anyhow::anyhow!("installing the recorder: {e}"))?;
        Ok(Recorded { snapshotter, seen: HashMap::new() })
    }

    /// How many times `name` was incremented (counter) or recorded (histogram) with `labels`
    /// among its labels.
    fn count(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let mut l: Vec<(String, String)> =
                key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            l.sort();
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(values) => values.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            *self.seen.entry((key.name().to_owned(), l)).or_default() += n;
        }
        self.seen
            .iter()
            .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
            .map(|(_, n)| *n)
            .sum()
    }
}

#[test]
fn calls_retries_streams_and_locks_are_recorded() -> Result<()> {
    let mut recorded = Recorded::install()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let etcd = EtcdCluster::start(ClusterConfig::default().with_unix_sockets())?;
        let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
        for i in 0..3 {
            c.put(format!("m/{i}"), "v", PutOptions::new()).await?;
        }
        c.get("m/0", None).await?;
        c.get("m/", GetOptions::new().with_prefix()).await?;
        let future = c.get("m/0", GetOptions::new().with_revision(1_000_000)).await;
        assert!(matches!(future, Err(Error::FutureRevision { .. })), "{future:?}");
        assert_eq!(recorded.count("etcd_client_requests_total", &[("rpc", "Put"), ("outcome", "ok")]), 3);
        assert_eq!(recorded.count("etcd_client_requests_total", &[("rpc", "Range"), ("outcome", "ok")]), 2);
        assert_eq!(recorded.count("etcd_client_requests_total", &[("rpc", "Range"), ("outcome", "FutureRevision")]), 1);
        assert_eq!(recorded.count("etcd_client_request_duration_seconds", &[("rpc", "Put")]), 3);

        // A member nobody serves, added live: round-robin sends a read there, which is retried.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        c.add_endpoint(format!("127.0.0.1:{port}"))?;
        for _ in 0..4 {
            c.get("m/0", None).await?;
        }
        assert!(recorded.count("etcd_client_retries_total", &[("rpc", "Range"), ("reason", "unavailable")]) >= 1);

        // The watch stream moves when its member leaves the list (the same member, by its socket).
        let _watch = c.watch("m/", WatchOptions::new().with_prefix()).await?;
        let socket = etcd.member(0)?.unix_socket().context("no socket")?;
        c.set_endpoints([format!("unix://{}", socket.display())])?;
        etcd_tests::eventually(Duration::from_secs(20), "the watch stream moved", || {
            let moved = recorded.count("etcd_client_stream_restarts_total", &[("reason", "moved")]);
            async move { (moved >= 1).then_some(()) }
        })
        .await?;

        // Locks: two acquisitions (the second waits in line), two holds, a loss counted once.
        let (s1, s2) = (etcd_recipes::Session::new(&c).await?, etcd_recipes::Session::new(&c).await?);
        let first = etcd_recipes::Mutex::new(&s1, "metered")?.lock().await?;
        let second = tokio::spawn({
            let s2 = s2.clone();
            async move { etcd_recipes::Mutex::new(&s2, "metered")?.lock().await }
        });
        etcd_tests::wait_for_keys(&c, "metered/", 2).await?;
        first.unlock().await?;
        let second = second.await??;
        assert_eq!(recorded.count("etcd_lock_acquired_total", &[("recipe", "mutex")]), 2);
        assert_eq!(recorded.count("etcd_lock_wait_seconds", &[("recipe", "mutex")]), 2);
        assert_eq!(recorded.count("etcd_lock_hold_seconds", &[("recipe", "mutex")]), 1);
        c.delete(second.key().clone(), None).await?;
        assert_eq!(second.lost().await, etcd_recipes::Lost::KeyGone);
        assert_eq!(second.lost().await, etcd_recipes::Lost::KeyGone, "asked twice");
        assert!(second.unlock().await.is_err(), "nothing left to release");
        assert_eq!(recorded.count("etcd_lock_lost_total", &[("recipe", "mutex"), ("reason", "key_gone")]), 1);
        assert_eq!(recorded.count("etcd_lock_lost_total", &[("recipe", "mutex")]), 1, "one loss, counted once");
        assert_eq!(recorded.count("etcd_lock_hold_seconds", &[("recipe", "mutex")]), 2);

        // An election: elected, then resigned.
        let leadership = etcd_recipes::Election::new(&s1, "metered-election")?.campaign("me").await?;
        leadership.resign().await?;
        assert_eq!(recorded.count("etcd_lock_acquired_total", &[("recipe", "election")]), 1);
        assert_eq!(recorded.count("etcd_lock_hold_seconds", &[("recipe", "election")]), 1);
        // The RPCs underneath were recorded by etcd-wire.
        assert!(recorded.count("etcd_client_requests_total", &[("rpc", "Txn"), ("outcome", "ok")]) >= 4);
        anyhow::Ok(())
    })
}
