//! What a guard promises: it owns its session (the lease lives as long as the guard), it knows how
//! long it is provably valid, it tells when it is lost, and it runs work only while held. Every
//! strategy hands out the same guard, so each test runs for each strategy where it matters.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use etcd_recipes::{Election, Error, Lost, Mutex, Session, Strategy};
use etcd_tests::{eventually, single};
use etcd_wire::{Client, ClientOptions, DeleteOptions};

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Dropping every handle but the guard must not let the lease expire: the guard owns its
/// session. Observed on the server: the lease's remaining TTL goes back up (a keep-alive landed)
/// after the session and the lock handles were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_keeps_its_session_alive() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    for strategy in [Strategy::Mutex, Strategy::Naive, Strategy::Rpc] {
        let session = Session::builder(&client).ttl(4).build().await?;
        let lease = session.lease_id();
        let guard = strategy.new_lock(&session, &format!("owns/{strategy}"))?.lock().await?;
        drop(session);
        let lowest = AtomicI64::new(i64::MAX);
        eventually(Duration::from_secs(20), "a keep-alive after the session handle was dropped", || async {
            let ttl = client.lease_time_to_live(lease, false).await.ok()?.ttl;
            assert!(ttl > 0, "{strategy}: the lease expired while its guard lived");
            (ttl > lowest.fetch_min(ttl, Ordering::SeqCst)).then_some(())
        })
        .await?;
        guard.unlock().await?;
    }
    Ok(())
}

/// `lost()` names each way a lock is lost: its key deleted, its lease revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_reports_a_deleted_key_and_a_revoked_lease() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    for strategy in Strategy::ALL {
        let session = Session::new(&client).await?;
        let guard = strategy.new_lock(&session, &format!("lost/{strategy}"))?.lock().await?;
        let watching = guard.lost();
        client.delete(guard.key().clone(), DeleteOptions::new()).await?;
        let lost = tokio::time::timeout(Duration::from_secs(20), watching).await?;
        ensure!(lost == Lost::KeyGone, "{strategy}: {lost:?}");
        drop(guard);

        let guard = strategy.new_lock(&session, &format!("lost2/{strategy}"))?.lock().await?;
        client.lease_revoke(guard.lease_id()).await?;
        let lost = tokio::time::timeout(Duration::from_secs(20), guard.lost()).await?;
        ensure!(matches!(lost, Lost::Lease(_) | Lost::KeyGone), "{strategy}: {lost:?}");
        ensure!(guard.valid_until().is_none() || lost == Lost::KeyGone, "{strategy}: still valid after loss");
    }
    Ok(())
}

/// `valid_until()` is in the future while held, never later than the lease could last (now + TTL),
/// and moves forward as keep-alives are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_until_is_a_provable_and_advancing_deadline() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    // TTL 10 s: a loaded machine stalling for a few seconds must not make the first check fail.
    let session = Session::builder(&client).ttl(10).build().await?;
    for strategy in Strategy::ALL {
        let guard = strategy.new_lock(&session, &format!("valid/{strategy}"))?.lock().await?;
        let first = guard.valid_until().ok_or_else(|| anyhow::anyhow!("{strategy}: no deadline while held"))?;
        let now = Instant::now();
        ensure!(first > now, "{strategy}: deadline already passed");
        ensure!(first <= now + session.ttl(), "{strategy}: deadline beyond the TTL");
        eventually(Duration::from_secs(20), "the deadline to advance", || async {
            (guard.valid_until()? > first).then_some(())
        })
        .await?;
        guard.unlock().await?;
    }
    Ok(())
}

/// `while_held` runs the work to completion while the lock holds, and cancels it with
/// `LockLost` the moment the lock is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_held_cancels_work_when_the_lock_is_lost() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let session = Session::new(&client).await?;
    let guard = Mutex::new(&session, "while-held")?.lock().await?;
    ensure!(guard.while_held(async { 42 }).await? == 42);

    let (started_tx, started) = tokio::sync::oneshot::channel();
    let work = guard.while_held(async move {
        let _ = started_tx.send(());
        std::future::pending::<()>().await
    });
    let revoke = async {
        started.await?;
        client.lease_revoke(session.lease_id()).await?;
        anyhow::Ok(())
    };
    let (result, revoked) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(work, revoke) }).await?;
    revoked?;
    ensure!(matches!(result, Err(Error::LockLost(_))), "{result:?}");
    Ok(())
}

/// Leadership offers the same: it owns its session and reports its loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_reports_its_loss() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let session = Session::new(&client).await?;
    let leadership = Election::new(&session, "lead-lost")?.campaign("me").await?;
    ensure!(leadership.valid_until().is_some_and(|u| u > Instant::now()));
    drop(session);
    client.delete(leadership.key().clone(), DeleteOptions::new()).await?;
    let lost = tokio::time::timeout(Duration::from_secs(20), leadership.lost()).await?;
    ensure!(lost == Lost::KeyGone, "{lost:?}");
    Ok(())
}
