//! The background posts' scenarios, run for every lock strategy against real etcd:
//! 100 tasks incrementing a counter, 4 OS processes incrementing a counter in etcd, three clients
//! taking turns, and a holder killed without unlocking (released at its TTL, never before).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use etcd_recipes::{Session, Strategy};
use etcd_tests::single;
use etcd_wire::{Client, ClientOptions, GetOptions};

const WORKER: &str = env!("CARGO_BIN_EXE_lock_worker");

async fn connect(etcd: &etcd_harness::EtcdCluster) -> Result<Client> {
    Ok(Client::connect(etcd.endpoints(), ClientOptions::default()).await?)
}

/// 100 tasks, each with its own session, increment an in-process counter with a deliberately
/// racy read-yield-write under the lock. Any overlap loses an increment.
async fn hundred_tasks(strategy: Strategy) -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd).await?;
    let count = etcd_tests::count_under_lock(&client, strategy, "counter-lock", 100).await?;
    assert_eq!(count, 100, "{strategy}: lost increments mean two holders at once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_count_to_exactly_100_mutex() -> Result<()> {
    hundred_tasks(Strategy::Mutex).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_count_to_exactly_100_naive() -> Result<()> {
    hundred_tasks(Strategy::Naive).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_count_to_exactly_100_lease_ttl() -> Result<()> {
    hundred_tasks(Strategy::LeaseTtl).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_count_to_exactly_100_rpc() -> Result<()> {
    hundred_tasks(Strategy::Rpc).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_count_to_exactly_100_semaphore() -> Result<()> {
    hundred_tasks(Strategy::Semaphore).await
}

/// Four OS processes (the `lock_worker` binary) each increment a counter stored in etcd 25 times.
fn four_processes(strategy: Strategy) -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints().join(",");
    let name = format!("proc-{strategy}");
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(WORKER)
                .args(["count", strategy.name(), &endpoints, &name, "25"])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "worker failed: {}", out.status);
    }
    let value = etcd.run_etcdctl(["get", "--print-value-only", &format!("{name}-counter")])?;
    assert_eq!(value.trim(), "100", "{strategy}");
    Ok(())
}

#[test]
fn four_processes_count_to_100_in_etcd_mutex() -> Result<()> {
    four_processes(Strategy::Mutex)
}
#[test]
fn four_processes_count_to_100_in_etcd_naive() -> Result<()> {
    four_processes(Strategy::Naive)
}
#[test]
fn four_processes_count_to_100_in_etcd_lease_ttl() -> Result<()> {
    four_processes(Strategy::LeaseTtl)
}
#[test]
fn four_processes_count_to_100_in_etcd_rpc() -> Result<()> {
    four_processes(Strategy::Rpc)
}
#[test]
fn four_processes_count_to_100_in_etcd_semaphore() -> Result<()> {
    four_processes(Strategy::Semaphore)
}

/// Three clients (separate connections) take turns, three rounds each; never two at once.
async fn three_clients(strategy: Strategy) -> Result<()> {
    let etcd = single()?;
    let busy = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for who in 0..3 {
        let (client, busy) = (connect(&etcd).await?, busy.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let lock = strategy.new_lock(&session, "turns")?;
            let mut tokens = Vec::new();
            for _ in 0..3 {
                let guard = lock.lock().await?;
                assert!(!busy.swap(true, Ordering::SeqCst), "client {who} entered while another held the lock");
                tokens.push(guard.fencing_token());
                tokio::time::sleep(Duration::from_millis(30)).await;
                busy.store(false, Ordering::SeqCst);
                guard.unlock().await?;
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(tokio::time::timeout(Duration::from_secs(60), t).await???);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 9, "{strategy}: every acquisition has its own fencing token");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_take_turns_mutex() -> Result<()> {
    three_clients(Strategy::Mutex).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_take_turns_naive() -> Result<()> {
    three_clients(Strategy::Naive).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_take_turns_lease_ttl() -> Result<()> {
    three_clients(Strategy::LeaseTtl).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_take_turns_rpc() -> Result<()> {
    three_clients(Strategy::Rpc).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_take_turns_semaphore() -> Result<()> {
    three_clients(Strategy::Semaphore).await
}

/// A holder process is SIGKILLed without unlocking. The next waiter gets the lock once the
/// holder's lease has expired (at most TTL after the kill), and not while it is still alive.
async fn crashed_holder(strategy: Strategy) -> Result<()> {
    const TTL: i64 = 3;
    let etcd = single()?;
    let client = connect(&etcd).await?;
    let mut holder = Command::new(WORKER)
        .args(["hold", strategy.name(), &etcd.endpoints().join(","), "crash", "1", &TTL.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().context("stdout")?).read_line(&mut line)?;
    let lease = line.split_whitespace().nth(2).and_then(|h| i64::from_str_radix(h, 16).ok());
    let lease = lease.with_context(|| format!("unexpected holder output {line:?}"))?;

    let session = Session::builder(&client).ttl(10).build().await?;
    let lock = strategy.new_lock(&session, "crash")?;
    assert!(lock.try_lock().await.is_err(), "{strategy}: the holder holds the lock");

    // Timed from before the kill, so a slow reap on a busy machine can only lengthen `waited`.
    let killed = Instant::now();
    holder.kill()?;
    holder.wait()?;
    let guard = tokio::time::timeout(Duration::from_secs(TTL as u64 + 10), lock.lock()).await.context("deadlock")??;
    let waited = killed.elapsed();
    // The lease was refreshed at most TTL/3 before the kill, so it cannot expire sooner than 2/3 TTL.
    assert!(waited >= Duration::from_secs(TTL as u64) * 2 / 3 - Duration::from_millis(300), "{strategy}: {waited:?}");
    let ttl = client.lease_time_to_live(lease, false).await?;
    assert_eq!(ttl.ttl, -1, "{strategy}: acquired while the dead holder's lease was still alive");
    let held = client.get("crash", GetOptions::new().with_prefix().with_keys_only()).await?;
    assert!(held.kvs.iter().all(|kv| kv.lease != lease), "{strategy}: the dead holder's key is gone");
    guard.unlock().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_releases_at_ttl_mutex() -> Result<()> {
    crashed_holder(Strategy::Mutex).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_releases_at_ttl_naive() -> Result<()> {
    crashed_holder(Strategy::Naive).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_releases_at_ttl_lease_ttl() -> Result<()> {
    crashed_holder(Strategy::LeaseTtl).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_releases_at_ttl_rpc() -> Result<()> {
    crashed_holder(Strategy::Rpc).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_releases_at_ttl_semaphore() -> Result<()> {
    crashed_holder(Strategy::Semaphore).await
}
