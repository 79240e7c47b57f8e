//! Barrier and DoubleBarrier against real etcd: etcd's `TestBarrier*` and `TestDoubleBarrier*`,
//! ported by name.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use etcd_recipes::{Barrier, DoubleBarrier, Error, Session};
use etcd_tests::{eventually, single, three, wait_for_watchers, watchers};
use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions};
use tokio::sync::{Barrier as Rendezvous, Notify};
use tokio::task::JoinSet;

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// One client per member.
async fn clients(etcd: &etcd_tests::etcd_harness::EtcdCluster) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for ep in etcd.endpoints() {
        clients.push(connect(&[ep]).await?);
    }
    Ok(clients)
}

/// The member URLs behind `clients`, for the watcher gauges.
fn endpoints(clients: &[Client]) -> Vec<String> {
    let mut eps: Vec<String> = clients.iter().flat_map(Client::endpoints).collect();
    eps.sort();
    eps.dedup();
    eps
}

async fn count(c: &Client, prefix: &str) -> Result<usize> {
    Ok(c.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?.kvs.len())
}

/// Waits for every task, each within a generous deadline.
async fn join_all(mut tasks: JoinSet<Result<()>>, what: &str) -> Result<()> {
    while let Some(done) = tokio::time::timeout(Duration::from_secs(20), tasks.join_next()).await? {
        done?.map_err(|e| e.context(what.to_owned()))?;
    }
    Ok(())
}

/// Go's `testBarrier`: waiters block while the barrier is held and all go when it is released.
async fn barrier_round(clients: Vec<Client>, waiters: usize) -> Result<()> {
    let b = Barrier::new(&clients[0], "test-barrier")?;
    b.hold().await?;
    let again = b.hold().await;
    assert!(matches!(again, Err(Error::Recipe(_))), "able to double-hold barrier: {again:?}");
    // Move the revision forward.
    clients[clients.len() - 1].put("x", "", PutOptions::new()).await?;

    let done = Arc::new(AtomicUsize::new(0));
    let watching = watchers(&endpoints(&clients))?;
    let mut tasks = JoinSet::new();
    for i in 0..waiters {
        let (client, done) = (clients[i % clients.len()].clone(), done.clone());
        tasks.spawn(async move {
            Barrier::new(&client, "test-barrier")?.wait().await?;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    // Every waiter is blocked on its watch; none may have passed.
    wait_for_watchers(&endpoints(&clients), watching + waiters as f64).await?;
    assert_eq!(done.load(Ordering::SeqCst), 0, "barrier did not wait");
    b.release().await?;
    join_all(tasks, "waiting on the barrier").await?;
    assert_eq!(done.load(Ordering::SeqCst), waiters);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_barrier_single_node() -> Result<()> {
    let etcd = single()?;
    barrier_round(vec![connect(&etcd.endpoints()).await?], 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_barrier_multi_node() -> Result<()> {
    let etcd = three()?;
    barrier_round(clients(&etcd).await?, 5).await
}

/// Waiting on a barrier that was never held returns at once, even next to a similar key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_barrier_wait_nonexistent_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    c.put("test-barrier-0", "", PutOptions::new()).await?;
    let mut tasks = JoinSet::new();
    for _ in 0..5 {
        let c = c.clone();
        tasks.spawn(async move { Ok(Barrier::new(&c, "test-barrier")?.wait().await?) });
    }
    join_all(tasks, "waiting on a barrier that does not exist").await
}

/// A barrier released and raised again before a waiter looks still releases that waiter: it
/// waited for the incarnation it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_release_then_hold_again_releases_waiters() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let b = Barrier::new(&c, "re-held")?;
    b.hold().await?;
    let w = Barrier::new(&c, "re-held")?;
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { w.wait().await });
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    b.release().await?;
    b.hold().await?;
    tokio::time::timeout(Duration::from_secs(10), waiter).await???;
    b.release().await?;
    assert!(matches!(Barrier::new(&c, ""), Err(Error::InvalidArgument(_))));
    Ok(())
}

/// Go's `TestDoubleBarrier`: nobody gets past `enter` until all `waiters` entered, and nobody past
/// `leave` until all left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_double_barrier() -> Result<()> {
    let etcd = three()?;
    let clients = clients(&etcd).await?;
    let waiters = 10;
    let (entered, left) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let go_leave = Arc::new(Notify::new());
    let eps = etcd.endpoints();
    let watching = watchers(&eps)?;
    let mut tasks = JoinSet::new();
    for i in 0..waiters - 1 {
        let client = clients[i % clients.len()].clone();
        let (entered, left, go_leave) = (entered.clone(), left.clone(), go_leave.clone());
        tasks.spawn(async move {
            let session = Session::new(&client).await?;
            let mut b = DoubleBarrier::new(&session, "test-barrier", waiters)?;
            let notified = go_leave.notified();
            b.enter().await?;
            entered.fetch_add(1, Ordering::SeqCst);
            notified.await;
            b.leave().await?;
            left.fetch_add(1, Ordering::SeqCst);
            session.orphan();
            Ok(())
        });
    }
    let session = Session::new(&clients[0]).await?;
    let mut b = DoubleBarrier::new(&session, "test-barrier", waiters)?;
    eventually(Duration::from_secs(10), "9 participants to wait", || async {
        (count(&clients[0], "test-barrier/waiters/").await.ok()? == waiters - 1).then_some(())
    })
    .await?;
    // Each waits on its watch for the ready key; none may have entered.
    wait_for_watchers(&eps, watching + (waiters - 1) as f64).await?;
    assert_eq!(entered.load(Ordering::SeqCst), 0, "barrier did not enter-wait");

    b.enter().await?;
    eventually(Duration::from_secs(10), "everyone to enter", || async {
        (entered.load(Ordering::SeqCst) == waiters - 1).then_some(())
    })
    .await?;

    go_leave.notify_waiters();
    // We entered last, so our key is the newest: the oldest participant waits for it, and the
    // others delete their keys and wait for the oldest.
    eventually(Duration::from_secs(10), "the others to delete their keys", || async {
        (count(&clients[0], "test-barrier/waiters/").await.ok()? == 2).then_some(())
    })
    .await?;
    // The oldest watches our key (a twin pair, see wait.rs) and its own, each other one the
    // oldest's (a twin pair; their enter watches gone): two watches per participant but us and
    // the oldest, plus three. None may have left.
    let leaving = 2 * (waiters - 2) + 3;
    eventually(Duration::from_secs(30), "every leaver to wait on its watches", || async {
        (watchers(&eps).ok()? == watching + leaving as f64).then_some(())
    })
    .await?;
    assert_eq!(left.load(Ordering::SeqCst), 0, "barrier did not leave-wait");

    tokio::time::timeout(Duration::from_secs(10), b.leave()).await??;
    join_all(tasks, "a participant").await?;
    assert_eq!(left.load(Ordering::SeqCst), waiters - 1);
    assert_eq!(count(&clients[0], "test-barrier/").await?, 0, "the last one out removes ready");
    Ok(())
}

/// etcd's newer `TestDoubleBarrierTooManyClients`: once `count` participants are in, one more
/// `enter` fails with "too many clients" and creates no key; the others still leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_double_barrier_too_many_clients() -> Result<()> {
    let etcd = three()?;
    let clients = clients(&etcd).await?;
    let waiters = 10;
    // As in Go, every participant shares one session.
    let session = Session::new(&clients[0]).await?;
    let all_entered = Arc::new(Rendezvous::new(waiters + 1));
    let go_leave = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    for _ in 0..waiters {
        let (session, all_entered, go_leave) = (session.clone(), all_entered.clone(), go_leave.clone());
        tasks.spawn(async move {
            let mut b = DoubleBarrier::new(&session, "test-barrier", waiters)?;
            let notified = go_leave.notified();
            b.enter().await?;
            all_entered.wait().await;
            notified.await;
            b.leave().await?;
            Ok(())
        });
    }
    tokio::time::timeout(Duration::from_secs(20), all_entered.wait()).await?;

    let mut extra = DoubleBarrier::new(&session, "test-barrier", waiters)?;
    let r = extra.enter().await;
    assert!(matches!(&r, Err(Error::Recipe(m)) if m == "too many clients"), "{r:?}");
    assert_eq!(count(&clients[1], "test-barrier/waiters/").await?, waiters, "the extra enter left a key");

    go_leave.notify_waiters();
    join_all(tasks, "a participant").await
}

/// Go's `TestDoubleBarrierFailover`: one participant's session is closed after everyone entered;
/// the others still leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_double_barrier_failover() -> Result<()> {
    let etcd = three()?;
    let c = connect(&etcd.endpoints()[..1]).await?;
    let waiters = 10;
    let (s0, s1) = (Session::new(&c).await?, Session::new(&c).await?);
    let all_entered = Arc::new(Rendezvous::new(waiters + 1));
    let go_leave = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    // The sacrificial participant: enters, then never leaves; its lease is revoked.
    {
        let (s0, all_entered) = (s0.clone(), all_entered.clone());
        tasks.spawn(async move {
            DoubleBarrier::new(&s0, "test-barrier", waiters)?.enter().await?;
            all_entered.wait().await;
            Ok(())
        });
    }
    for _ in 0..waiters - 1 {
        let (s1, all_entered, go_leave) = (s1.clone(), all_entered.clone(), go_leave.clone());
        tasks.spawn(async move {
            let mut b = DoubleBarrier::new(&s1, "test-barrier", waiters)?;
            let notified = go_leave.notified();
            b.enter().await?;
            all_entered.wait().await;
            notified.await;
            b.leave().await?;
            Ok(())
        });
    }
    tokio::time::timeout(Duration::from_secs(20), all_entered.wait()).await?;
    s0.close().await?;
    go_leave.notify_waiters();
    join_all(tasks, "a participant").await?;
    assert_eq!(count(&c, "test-barrier/").await?, 0);
    Ok(())
}

/// A cancelled `enter` removes its key, and a waiting `enter` whose session ends fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_cancelled_or_expired_enter() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let mut b = DoubleBarrier::new(&s, "db-cancel", 2)?;
    assert!(tokio::time::timeout(Duration::from_millis(500), b.enter()).await.is_err());
    eventually(Duration::from_secs(5), "the abandoned key to go", || async {
        (count(&c, "db-cancel/").await.ok()? == 0).then_some(())
    })
    .await?;

    let s2 = Session::new(&c).await?;
    let mut b2 = DoubleBarrier::new(&s2, "db-cancel", 2)?;
    let waiter = tokio::spawn(async move { b2.enter().await });
    eventually(Duration::from_secs(5), "the participant to enter", || async {
        (count(&c, "db-cancel/").await.ok()? == 1).then_some(())
    })
    .await?;
    s2.close().await?;
    let r = tokio::time::timeout(Duration::from_secs(10), waiter).await??;
    assert!(matches!(r, Err(Error::SessionExpired)), "{r:?}");
    let r = DoubleBarrier::new(&s, "db-cancel", 2)?.leave().await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "leave before enter: {r:?}");
    assert!(matches!(DoubleBarrier::new(&s, "db-cancel", 0), Err(Error::InvalidArgument(_))));
    Ok(())
}
