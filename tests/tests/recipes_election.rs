//! Election against real etcd: etcd's acceptance cases ported by name, and the reference's
//! election faults.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_recipes::{Election, Error, Session};
use etcd_tests::{single, three};
use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions, Txn, TxnOp};
use futures::StreamExt;

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

async fn next_value<S: futures::Stream<Item = etcd_recipes::Result<etcd_wire::KeyValue>> + Unpin>(
    s: &mut S,
) -> Result<String> {
    let kv = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .context("no leader observed")?
        .context("ended")??;
    Ok(kv.value_str().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_election_wait() -> Result<()> {
    let etcd = three()?;
    let clients =
        futures::future::try_join_all(etcd.endpoints().into_iter().map(|e| async move { connect(&[e]).await })).await?;
    // Three leaders in turn; three followers observe each one.
    let observer_session = Session::new(&clients[0]).await?;
    let mut observers = Vec::new();
    for c in &clients {
        let s = Session::new(c).await?;
        observers.push(Box::pin(Election::new(&s, "test-election")?.observe()));
    }
    for round in 0..3 {
        let s = Session::new(&clients[round % 3]).await?;
        let value = format!("electval-{round}");
        let leader = Election::new(&s, "test-election")?.campaign(value.clone()).await?;
        for o in &mut observers {
            assert_eq!(next_value(o).await?, value);
        }
        leader.resign().await?;
        s.orphan();
    }
    drop(observer_session);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_election_failover() -> Result<()> {
    let etcd = three()?;
    let mut sessions = Vec::new();
    for e in etcd.endpoints() {
        sessions.push(Session::new(&connect(&[e]).await?).await?);
    }
    let first = Election::new(&sessions[0], "test-election")?;
    first.campaign("foo").await?;
    assert_eq!(next_value(&mut Box::pin(first.observe())).await?, "foo");

    let next = Election::new(&sessions[1], "test-election")?;
    let elected = tokio::spawn(async move { next.campaign("bar").await });
    // The second candidate's key is in the queue.
    etcd_tests::wait_for_keys(sessions[2].client(), "test-election/", 2).await?;
    sessions[0].close().await?;

    let watcher = Election::new(&sessions[2], "test-election")?;
    let mut observed = Box::pin(watcher.observe());
    assert_eq!(next_value(&mut observed).await?, "bar");
    tokio::time::timeout(Duration::from_secs(10), elected).await???;
    Ok(())
}

#[tokio::test]
async fn test_election_session_recampaign() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let e = Election::new(&s, "test-elect")?;
    e.campaign("abc").await?;
    let again =
        tokio::time::timeout(Duration::from_secs(5), Election::new(&s, "test-elect")?.campaign("def")).await??;
    assert_eq!(next_value(&mut Box::pin(e.observe())).await?, "def");
    again.resign().await?;
    Ok(())
}

#[tokio::test]
async fn test_election_on_prefix_of_existing_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    c.put("testa", "value", PutOptions::new()).await?;
    let s = Session::new(&c).await?;
    tokio::time::timeout(Duration::from_secs(5), Election::new(&s, "test")?.campaign("abc")).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_election_on_session_restart() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let session = Session::new(&c).await?;
    Election::new(&session, "test-elect")?.campaign("abc").await?;

    let waiter = Session::new(&c).await?;
    let w = Election::new(&waiter, "test-elect")?;
    let waiting = tokio::spawn(async move { w.campaign("123").await });

    // A restart: a new session adopting the old lease campaigns again, and stays leader.
    let restarted = Session::builder(&c).lease(session.lease_id()).build().await?;
    let e = Election::new(&restarted, "test-elect")?;
    tokio::time::timeout(Duration::from_secs(5), e.campaign("def")).await??;
    assert_eq!(next_value(&mut Box::pin(e.observe())).await?, "def");
    assert!(!waiting.is_finished(), "the waiter must not take over");
    waiting.abort();
    Ok(())
}

#[tokio::test]
async fn test_election_observe_compacted() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let e = Election::new(&s, "test-elect")?;
    e.campaign("abc").await?;
    let rev = c.put("foo", "bar", PutOptions::new()).await?.header.revision;
    c.compact(rev, true).await?;
    assert_eq!(next_value(&mut Box::pin(e.observe())).await?, "abc");
    Ok(())
}

#[tokio::test]
async fn test_resume_election() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let e = Election::new(&s, "/resume-election/")?;
    e.campaign("candidate1").await?;
    let leader = e.leader().await?;
    let resumed = e.resume(leader.key.clone(), leader.create_revision);

    let mut observed = Box::pin(e.observe());
    assert_eq!(next_value(&mut observed).await?, "candidate1");
    c.put("foo", "bar", PutOptions::new()).await?;
    resumed.resign().await?;
    e.campaign("candidate2").await?;
    let kv = tokio::time::timeout(Duration::from_secs(10), observed.next()).await?.context("ended")??;
    assert!(kv.key.starts_with(b"/resume-election/"), "{kv:?}");
    assert_eq!(kv.value, "candidate2");
    Ok(())
}

#[tokio::test]
async fn leader_proclaim_resign_and_fencing() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let e1 = Election::new(&s1, "svc")?;
    assert!(matches!(e1.leader().await, Err(Error::NoLeader)));
    let lead = e1.campaign("a").await?;
    lead.proclaim("a2").await?;
    assert_eq!(e1.leader().await?.value, "a2");
    let fenced = |l: &etcd_recipes::Leadership| l.txn().and_then([TxnOp::put("svc-state", "x", PutOptions::new())]);
    assert!(c.txn(fenced(&lead)).await?.succeeded);

    let e2 = Election::new(&s2, "svc")?;
    let next = tokio::spawn(async move { e2.campaign("b").await });
    let stale = lead.clone();
    lead.resign().await?;
    let second = tokio::time::timeout(Duration::from_secs(10), next).await???;
    assert!(second.fencing_token() > stale.fencing_token());
    // The old leadership can neither proclaim nor write, nor resign the new leader.
    assert!(matches!(stale.proclaim("zombie").await, Err(Error::NotOwner(_))));
    assert!(!c.txn(fenced(&stale)).await?.succeeded);
    assert!(matches!(stale.resign().await, Err(Error::NotOwner(_))));
    assert_eq!(Election::new(&s1, "svc")?.leader().await?.value, "b");
    Ok(())
}

/// etcd #11051: `campaign()` re-checks its own key after waiting: a candidate whose key vanished
/// while it waited does not report phantom leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_11051_no_phantom_leadership() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let lead = Election::new(&s1, "f11051")?.campaign("one").await?;
    let e2 = Election::new(&s2, "f11051")?;
    let watching = etcd_tests::watchers(&etcd.endpoints())?;
    let candidate = tokio::spawn(async move { e2.campaign("two").await });
    // The candidate is queued and waiting on its watch.
    etcd_tests::wait_for_keys(&c, "f11051/", 2).await?;
    etcd_tests::wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    // The candidate's key is deleted behind its back (as if its lease expired), then the leader resigns.
    let mine = format!("f11051/{:x}", s2.lease_id());
    c.delete(mine, etcd_wire::DeleteOptions::new()).await?;
    lead.resign().await?;
    let r = tokio::time::timeout(Duration::from_secs(10), candidate).await??;
    assert!(matches!(r, Err(Error::SessionExpired)), "phantom leadership: {r:?}");
    assert!(matches!(Election::new(&s1, "f11051")?.leader().await, Err(Error::NoLeader)));
    Ok(())
}

/// A dropped `campaign()` future removes its candidate key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cancelled_campaign_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let _lead = Election::new(&s1, "fcancel")?.campaign("one").await?;
    let r = tokio::time::timeout(Duration::from_millis(500), Election::new(&s2, "fcancel")?.campaign("two")).await;
    assert!(r.is_err());
    etcd_tests::eventually(Duration::from_secs(5), "the abandoned candidate key to go", || async {
        (c.get("fcancel/", GetOptions::new().with_prefix().with_count_only()).await.ok()?.count == 1).then_some(())
    })
    .await?;
    Ok(())
}

/// etcd #18163: when several candidates appear in one batch of watch events, observe still
/// reports the true leader (the oldest key), not the first event.
#[tokio::test]
async fn fault_18163_observe_with_several_candidates_in_one_batch() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let watcher_session = Session::new(&c).await?;
    let e = Election::new(&watcher_session, "f18163")?;
    // The observer starts on its first poll: poll it in a task and wait for its watch.
    let mut observed = Box::pin(e.observe());
    let watching = etcd_tests::watchers(&etcd.endpoints())?;
    let first = tokio::spawn(async move { next_value(&mut observed).await });
    etcd_tests::wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    // Two candidates appear in ONE revision: keys sort "b..." before "z...", but neither was
    // created first; the leader is the one etcd returns as oldest, which observe must report.
    let (l1, l2) = (c.lease_grant(30, None).await?.id, c.lease_grant(30, None).await?.id);
    let txn = Txn::new().and_then([
        TxnOp::put("f18163/z-second", "z", PutOptions::new().with_lease(l1)),
        TxnOp::put("f18163/b-first", "b", PutOptions::new().with_lease(l2)),
    ]);
    c.txn(txn).await?;
    let reported = first.await??;
    assert_eq!(reported, e.leader().await?.value_str(), "observe and leader() disagree");
    Ok(())
}
