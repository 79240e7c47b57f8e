//! Client options against real etcd: `require_leader`, the per-request timeout, endpoint
//! auto-sync, and membership updates.

use std::time::{Duration, Instant};

use anyhow::Result;
use etcd_tests::{eventually, single, three};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, PutOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_fails_fast_on_a_member_without_quorum() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let survivor = etcd.endpoints()[0].clone();
    let options = ClientOptions::default().with_require_leader(true).with_request_timeout(Some(Duration::from_secs(5)));
    let c = Client::connect([survivor.clone()], options).await?;
    c.put("k", "v", PutOptions::new()).await?;
    // A client without the option, asking for it in one view.
    let plain = Client::connect([survivor], ClientOptions::default()).await?;
    let view = plain.with_require_leader(true);

    etcd.kill(1)?;
    etcd.kill(2)?;
    // Once the member notices it has no leader, it refuses at once instead of hanging.
    let err = eventually(Duration::from_secs(30), "the member to report no leader", || async {
        match c.get("k", GetOptions::new()).await {
            Err(e @ Error::NoLeader { .. }) => Some(e),
            _ => None,
        }
    })
    .await?;
    assert!(err.is_unavailable());
    let started = Instant::now();
    assert!(matches!(c.get("k", GetOptions::new()).await, Err(Error::NoLeader { .. })));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(view.get("k", None).await, Err(Error::NoLeader { .. })), "the view asks for a leader");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_with_a_timeout_bounds_each_of_its_calls_waiting_ones_included() -> Result<()> {
    let etcd = single()?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    // Options may be left out.
    c.put("k", "v", None).await?;
    assert_eq!(c.get("k", None).await?.count, 1);

    // A server-side lock held by another lease: Lock waits as long as it takes, unless the view
    // it is called through has a deadline.
    let holder = c.lease_grant(60, None).await?.id;
    c.lock("view-lock", holder).await?;
    let waiter = c.lease_grant(60, None).await?.id;
    let quick = c.with_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let r = quick.lock("view-lock", waiter).await;
    assert!(matches!(r, Err(Error::Timeout { after }) if after == Duration::from_millis(300)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // The view's deadline is its own: the client and other views keep theirs; views nest.
    assert_eq!(quick.timeout(), Some(Duration::from_millis(300)));
    assert_eq!(c.timeout(), ClientOptions::default().request_timeout);
    assert_eq!(quick.with_namespace("app/").timeout(), Some(Duration::from_millis(300)));
    assert_eq!(quick.with_timeout(None).timeout(), None);
    assert_eq!(quick.get("k", None).await?.count, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_its_timeout_fails_with_timeout() -> Result<()> {
    let etcd = single()?;
    let options = ClientOptions::default().with_request_timeout(Some(Duration::from_secs(1)));
    let c = Client::connect(etcd.endpoints(), options).await?;
    c.put("k", "v", PutOptions::new()).await?;
    etcd.pause(0)?;
    let started = Instant::now();
    let r = c.get("k", GetOptions::new()).await;
    let took = started.elapsed();
    etcd.resume(0)?;
    assert!(matches!(r, Err(Error::Timeout { after }) if after == Duration::from_secs(1)), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // And the client recovers once the member answers again.
    assert_eq!(c.get("k", GetOptions::new()).await?.count, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sync_discovers_every_member() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let options = ClientOptions::default().with_auto_sync(Duration::from_millis(300));
    let c = Client::connect([etcd.endpoints()[0].clone()], options).await?;
    assert_eq!(c.endpoints().len(), 1);
    let mut want = etcd.endpoints();
    want.sort();
    eventually(Duration::from_secs(15), "auto-sync to find all members", || async {
        let mut now = c.endpoints();
        now.sort();
        (now == want).then_some(())
    })
    .await?;
    // The discovered members are used: with the first one down, calls still succeed. (A write
    // made while a killed leader is being replaced may time out on the server; the client does not
    // resend writes that may have landed, so wait for the new leader first.)
    etcd.kill(0)?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    for i in 0..10 {
        c.put(format!("after/{i}"), "v", PutOptions::new()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_changes_peer_urls() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    let (a, b) = (free()?, free()?);
    // etcd refuses membership changes until every voter has been connected for 5 s.
    let added = eventually(Duration::from_secs(30), "etcd to accept a new learner", || async {
        c.member_add(vec![format!("http://127.0.0.1:{a}")], true).await.ok()
    })
    .await?;
    let learner = added.member.expect("the added member");
    let updated = c.member_update(learner.id, vec![format!("http://127.0.0.1:{b}")]).await?;
    let now = updated.members.iter().find(|m| m.id == learner.id).expect("still listed");
    assert_eq!(now.peer_urls, [format!("http://127.0.0.1:{b}")]);
    assert!(matches!(c.member_update(learner.id, vec![]).await, Err(Error::InvalidArgument { .. })));
    c.member_remove(learner.id).await?;
    Ok(())
}
