//! Everything through `etcd grpc-proxy start` (the cluster's own binary in proxy mode), which
//! assigns its own watch IDs, coalesces watches, and answers no progress requests: watches with
//! resume, leases and keep-alive, and every lock strategy and recipe.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::{EtcdCluster, GrpcProxy, TcpProxy};
use etcd_tests::three;
use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions, WatchOptions, Watcher};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _etcd: EtcdCluster,
    proxy: GrpcProxy,
}

fn setup() -> Result<Setup> {
    let etcd = three()?;
    etcd.wait_for_leader(WAIT)?;
    let proxy = GrpcProxy::start(&etcd)?;
    Ok(Setup { _etcd: etcd, proxy })
}

/// The keys of the next `n` events of `w`.
async fn keys(w: &mut Watcher, n: usize) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    while keys.len() < n {
        let r = tokio::time::timeout(WAIT, w.next()).await.context("no event")?.context("watch ended")??;
        keys.extend(r.events.iter().map(|e| e.kv.key_str().into_owned()));
    }
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_watches_are_created_deliver_and_cancel() -> Result<()> {
    let s = setup()?;
    let c = Client::connect([s.proxy.url()], ClientOptions::default()).await?;
    // Several watches at once on one stream, two of them on the same key (the proxy coalesces those).
    let mut a = c.watch("a", WatchOptions::new()).await?;
    let mut a2 = c.watch("a", WatchOptions::new()).await?;
    let mut p = c.watch("p/", WatchOptions::new().with_prefix()).await?;
    c.put("a", "1", PutOptions::new()).await?;
    c.put("p/x", "1", PutOptions::new()).await?;
    assert_eq!(keys(&mut a, 1).await?, ["a"]);
    assert_eq!(keys(&mut a2, 1).await?, ["a"]);
    assert_eq!(keys(&mut p, 1).await?, ["p/x"]);
    // From a past revision.
    let first = c.put("h", "1", PutOptions::new()).await?.header.revision;
    c.put("h", "2", PutOptions::new()).await?;
    let mut h = c.watch("h", WatchOptions::new().with_start_revision(first)).await?;
    assert_eq!(keys(&mut h, 2).await?, ["h", "h"]);
    // Dropping one leaves the others working.
    drop(a2);
    c.put("a", "2", PutOptions::new()).await?;
    assert_eq!(keys(&mut a, 1).await?, ["a"]);
    ensure!(c.get("a", GetOptions::new()).await?.count == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_watch_resumes_exactly_once_after_the_connection_drops() -> Result<()> {
    let s = setup()?;
    let tcp = TcpProxy::start(s.proxy.url().trim_start_matches("http://").to_owned())?;
    let c = Client::connect([tcp.url()], ClientOptions::default()).await?;
    let writer = Client::connect([s.proxy.url()], ClientOptions::default()).await?;
    let mut w = c.watch("r/", WatchOptions::new().with_prefix()).await?;
    let mut want = Vec::new();
    for i in 0..30 {
        writer.put(format!("r/{i:02}"), "v", PutOptions::new()).await?;
        want.push(format!("r/{i:02}"));
        if i % 10 == 5 {
            tcp.drop_connections();
        }
    }
    assert_eq!(keys(&mut w, 30).await?, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_leases_are_kept_alive_and_expire() -> Result<()> {
    let s = setup()?;
    let c = Client::connect([s.proxy.url()], ClientOptions::default()).await?;
    // A realistic TTL: the proxy answers keep-alives only on its own cadence (every TTL/3).
    let kept = c.lease_grant(5, None).await?.id;
    let keep_alive = c.lease_keep_alive(kept).await?;
    let left = c.lease_grant(2, None).await?.id;
    let granted_at = std::time::Instant::now();
    // The kept-alive lease is renewed past its first TTL, the other one expires.
    let renewed = async {
        while keep_alive.deadline().is_none_or(|d| d < granted_at + Duration::from_secs(7)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, renewed).await.context("the keep-alive stopped renewing")?;
    etcd_tests::eventually(WAIT, "the other lease expires", || async {
        c.lease_time_to_live(left, false).await.ok().filter(|t| t.ttl == -1)
    })
    .await?;
    ensure!(c.lease_time_to_live(kept, false).await?.ttl > 0, "the kept-alive lease expired");
    c.lease_revoke(kept).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_every_lock_strategy_excludes() -> Result<()> {
    let s = setup()?;
    let c = Client::connect([s.proxy.url()], ClientOptions::default()).await?;
    for strategy in etcd_recipes::Strategy::ALL {
        let count = etcd_tests::count_under_lock(&c, strategy, "proxied", 8).await?;
        assert_eq!(count, 8, "{strategy}: two holders at once");
        // try_lock sees a holder of another session.
        let (a, b) = (etcd_recipes::Session::new(&c).await?, etcd_recipes::Session::new(&c).await?);
        let held = strategy.new_lock(&a, "proxied")?.lock().await?;
        let refused = strategy.new_lock(&b, "proxied")?.try_lock().await;
        ensure!(matches!(refused, Err(etcd_recipes::Error::Locked)), "{strategy}: {refused:?}");
        held.unlock().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxy_election_rwmutex_barriers_and_queues_work() -> Result<()> {
    let s = setup()?;
    let c = Client::connect([s.proxy.url()], ClientOptions::default()).await?;
    let (a, b) = (etcd_recipes::Session::new(&c).await?, etcd_recipes::Session::new(&c).await?);

    // Election: a leads, b waits in line and takes over when a resigns; an observer follows.
    let observer = etcd_recipes::ElectionObserver::new(&c, "svc")?;
    let mut seen = Box::pin(observer.observe());
    let leading = etcd_recipes::Election::new(&a, "svc")?.campaign("a").await?;
    let observed = |r: Option<etcd_recipes::Result<etcd_wire::KeyValue>>| -> Result<String> {
        Ok(r.context("the observer ended")??.value_str().into_owned())
    };
    ensure!(observed(tokio::time::timeout(WAIT, seen.next()).await?)? == "a");
    let election_b = etcd_recipes::Election::new(&b, "svc")?;
    let waiting = tokio::spawn(async move { election_b.campaign("b").await });
    leading.resign().await?;
    let leading_b = tokio::time::timeout(WAIT, waiting).await???;
    while observed(tokio::time::timeout(WAIT, seen.next()).await?)? != "b" {}
    leading_b.resign().await?;

    // RwMutex: two readers at once, a writer excludes them.
    let (ra, rb) = (etcd_recipes::RwMutex::new(&a, "rw")?, etcd_recipes::RwMutex::new(&b, "rw")?);
    let (r1, r2) = (ra.read_lock().await?, rb.read_lock().await?);
    ensure!(matches!(rb.try_write_lock().await, Err(etcd_recipes::Error::Locked)));
    r1.unlock().await?;
    r2.unlock().await?;
    rb.write_lock().await?.unlock().await?;

    // Barrier: a waiter passes once the barrier is released.
    let barrier = etcd_recipes::Barrier::new(&c, "gate")?;
    barrier.hold().await?;
    let waiter = etcd_recipes::Barrier::new(&c, "gate")?;
    let passing = tokio::spawn(async move { waiter.wait().await });
    barrier.release().await?;
    tokio::time::timeout(WAIT, passing).await???;

    // Double barrier of two.
    let mut da = etcd_recipes::DoubleBarrier::new(&a, "round", 2)?;
    let mut db = etcd_recipes::DoubleBarrier::new(&b, "round", 2)?;
    let other = tokio::spawn(async move {
        db.enter().await?;
        db.leave().await
    });
    da.enter().await?;
    da.leave().await?;
    tokio::time::timeout(WAIT, other).await???;

    // Queues: first in, first out; by priority.
    let q = etcd_recipes::Queue::new(&c, "jobs")?;
    q.enqueue("1").await?;
    q.enqueue("2").await?;
    ensure!(q.dequeue().await? == "1" && q.dequeue().await? == "2");
    let consumer = etcd_recipes::Queue::new(&c, "jobs")?;
    let taking = tokio::spawn(async move { consumer.dequeue().await });
    q.enqueue("3").await?;
    ensure!(tokio::time::timeout(WAIT, taking).await??? == "3");
    let pq = etcd_recipes::PriorityQueue::new(&c, "prio")?;
    pq.enqueue("low", 9).await?;
    pq.enqueue("high", 1).await?;
    ensure!(pq.dequeue().await? == "high");
    Ok(())
}
