//! Every strategy ends the same way: a waiter whose lease is gone fails with `SessionExpired`
//! (never a raw `LeaseNotFound`), a lease-less blocker is refused with `ForeignKey`, a dropped
//! observe stream ends its watch on the server, and a double barrier serves more than one round.

use std::time::Duration;

use anyhow::{Result, ensure};
use etcd_recipes::{DoubleBarrier, Election, Error, RwMutex, Session, Strategy};
use etcd_tests::{eventually, metric, single};
use etcd_wire::{Client, ClientOptions, PutOptions};
use futures::StreamExt;

const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// For every strategy: a waiter queued behind a holder fails with `SessionExpired` once the lease
/// it stands on is revoked (its session's; the lease TTL lock's own lease). Waiting is observed on
/// the server (a watch created), not guessed with a sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_fails_with_session_expired_once_its_lease_is_gone() -> Result<()> {
    let etcd = single()?;
    let url = etcd.endpoints()[0].clone();
    let client = Client::connect([&url], ClientOptions::default()).await?;
    for strategy in Strategy::ALL {
        let name = format!("ending/{strategy}");
        let holder = Session::new(&client).await?;
        let guard = strategy.new_lock(&holder, &name)?.lock().await?;
        let waiter = Session::builder(&client).ttl(5).build().await?;
        let before: Vec<i64> = client.leases().await?;
        let lock = strategy.new_lock(&waiter, &name)?;
        let waiting = tokio::spawn(async move { lock.lock().await.map(drop) });
        eventually(Duration::from_secs(20), "the waiter's watch", || async {
            (metric(&url, WATCHERS).ok()? >= 1.0).then_some(())
        })
        .await?;
        // The lease TTL lock waits on a lease of its own; the others on the session's.
        let own = client.leases().await?.into_iter().find(|l| !before.contains(l));
        let revoke = if strategy == Strategy::LeaseTtl { own.unwrap_or(waiter.lease_id()) } else { waiter.lease_id() };
        client.lease_revoke(revoke).await?;
        let r = tokio::time::timeout(Duration::from_secs(20), waiting).await;
        ensure!(
            matches!(r, Ok(Ok(Err(Error::SessionExpired)))),
            "{strategy}: the waiter whose lease was revoked got {r:?}"
        );
        guard.unlock().await?;
        eventually(Duration::from_secs(20), "no watcher left", || async {
            (metric(&url, WATCHERS).ok()? == 0.0).then_some(())
        })
        .await?;
    }
    Ok(())
}

/// A lease revoked behind the session's back: the next lock, campaign or RwMutex lock fails with
/// `SessionExpired`, not with the client's raw `LeaseNotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_not_found_never_leaks_out() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    for strategy in [Strategy::Mutex, Strategy::Naive, Strategy::Rpc] {
        let session = Session::new(&client).await?;
        client.lease_revoke(session.lease_id()).await?;
        let r = strategy.new_lock(&session, &format!("gone/{strategy}"))?.lock().await;
        ensure!(matches!(r, Err(Error::SessionExpired)), "{strategy} lock(): {r:?}");
    }
    let session = Session::new(&client).await?;
    client.lease_revoke(session.lease_id()).await?;
    let r = Election::new(&session, "gone/election")?.campaign("me").await;
    ensure!(matches!(r, Err(Error::SessionExpired)), "campaign(): {r:?}");
    let r = RwMutex::new(&session, "gone/rw")?.write_lock().await;
    ensure!(matches!(r, Err(Error::SessionExpired)), "write_lock(): {r:?}");
    Ok(())
}

/// A plain key (no lease: nobody's lock, never released) under an RwMutex's name is refused with
/// `ForeignKey` at once, like the Mutex does, instead of waiting for it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rwmutex_refuses_a_lease_less_blocker() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let session = Session::new(&client).await?;
    client.put("rw/write/plain", "not a lock", PutOptions::new()).await?;
    let rw = RwMutex::new(&session, "rw")?;
    let r = tokio::time::timeout(Duration::from_secs(10), rw.read_lock()).await;
    ensure!(matches!(r, Ok(Err(Error::ForeignKey { .. }))), "read_lock(): {r:?}");
    let r = tokio::time::timeout(Duration::from_secs(10), rw.write_lock()).await;
    ensure!(matches!(r, Ok(Err(Error::ForeignKey { .. }))), "write_lock(): {r:?}");
    Ok(())
}

/// Dropping an `observe()` stream ends its watch on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_observe_stream_ends_its_watch() -> Result<()> {
    let etcd = single()?;
    let url = etcd.endpoints()[0].clone();
    let client = Client::connect([&url], ClientOptions::default()).await?;
    let session = Session::new(&client).await?;
    let election = Election::new(&session, "observed")?;
    let _leader = election.campaign("me").await?;
    let mut leaders = Box::pin(election.observe());
    let first = tokio::time::timeout(Duration::from_secs(10), leaders.next()).await?;
    ensure!(matches!(&first, Some(Ok(kv)) if kv.value == "me"), "first leader: {first:?}");
    eventually(Duration::from_secs(10), "the observer's watch", || async {
        (metric(&url, WATCHERS).ok()? >= 1.0).then_some(())
    })
    .await?;
    drop(leaders);
    eventually(Duration::from_secs(20), "the observer's watch to end", || async {
        (metric(&url, WATCHERS).ok()? == 0.0).then_some(())
    })
    .await?;
    Ok(())
}

/// The same two `DoubleBarrier` values go through two rounds of enter and leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_barrier_serves_a_second_round() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let (s1, s2) = (Session::new(&client).await?, Session::new(&client).await?);
    let mut a = DoubleBarrier::new(&s1, "rounds", 2)?;
    let mut b = DoubleBarrier::new(&s2, "rounds", 2)?;
    for round in 0..2 {
        let both = async { tokio::try_join!(a.enter(), b.enter()) };
        tokio::time::timeout(Duration::from_secs(20), both).await??;
        let both = async { tokio::try_join!(a.leave(), b.leave()) };
        tokio::time::timeout(Duration::from_secs(20), both).await??;
        let left = client.get("rounds/", etcd_wire::GetOptions::new().with_prefix().with_count_only()).await?.count;
        ensure!(left == 0, "round {round}: {left} keys left");
    }
    Ok(())
}
