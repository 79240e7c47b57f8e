//! The server-side `v3lock` and `v3election` services, through the generated stubs.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_tests::{channel, single, wait_for_watchers, watchers};
use etcd_wire::pb::etcdserverpb::{LeaseGrantRequest, RangeRequest, kv_client::KvClient, lease_client::LeaseClient};
use etcd_wire::pb::v3electionpb::{
    CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest, election_client::ElectionClient,
};
use etcd_wire::pb::v3lockpb::{LockRequest, UnlockRequest, lock_client::LockClient};
use tokio_stream::StreamExt;

async fn grant(lease: &mut LeaseClient<tonic::transport::Channel>) -> Result<i64> {
    Ok(lease.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await?.into_inner().id)
}

#[tokio::test]
async fn lock_excludes_until_unlock() -> Result<()> {
    let etcd = single()?;
    let ch = channel(&etcd.endpoints()[0]).await?;
    let mut lease = LeaseClient::new(ch.clone());
    let (a, b) = (grant(&mut lease).await?, grant(&mut lease).await?);
    let mut locks = LockClient::new(ch.clone());

    let held = locks.lock(LockRequest { name: "job".into(), lease: a }).await?.into_inner();
    assert!(held.key.starts_with(b"job/"), "lock keys live under the name: {:?}", held.key);

    // The second locker waits while the first holds the lock.
    let mut second = LockClient::new(ch.clone());
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { second.lock(LockRequest { name: "job".into(), lease: b }).await });
    // The server waits on a watch for the second locker.
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!waiter.is_finished(), "the lock must exclude a second holder");

    locks.unlock(UnlockRequest { key: held.key.clone() }).await?;
    let next =
        tokio::time::timeout(Duration::from_secs(10), waiter).await.context("waiter never got the lock")???;
    let next_key = next.into_inner().key;
    assert_ne!(next_key, held.key);

    let mut kv = KvClient::new(ch);
    let left = kv.range(RangeRequest { key: "job/".into(), range_end: "job0".into(), ..Default::default() }).await?;
    let keys: Vec<_> = left.into_inner().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, [next_key], "only the new holder's key remains");
    Ok(())
}

#[tokio::test]
async fn election_campaign_proclaim_observe_resign() -> Result<()> {
    let etcd = single()?;
    let ch = channel(&etcd.endpoints()[0]).await?;
    let mut lease = LeaseClient::new(ch.clone());
    let (a, b) = (grant(&mut lease).await?, grant(&mut lease).await?);
    let mut election = ElectionClient::new(ch.clone());

    let leader_a = election
        .campaign(CampaignRequest { name: "svc".into(), lease: a, value: "a".into() })
        .await?
        .into_inner()
        .leader
        .context("campaign returns the leader key")?;
    let now = election.leader(LeaderRequest { name: "svc".into() }).await?.into_inner();
    assert_eq!(now.kv.map(|kv| kv.value).as_deref(), Some(&b"a"[..]));

    let mut observe = ElectionClient::new(ch.clone()).observe(LeaderRequest { name: "svc".into() }).await?.into_inner();
    let first = observe.next().await.context("observe ended")??;
    assert_eq!(first.kv.map(|kv| kv.value).as_deref(), Some(&b"a"[..]));

    election.proclaim(ProclaimRequest { leader: Some(leader_a.clone()), value: "a2".into() }).await?;
    let proclaimed =
        tokio::time::timeout(Duration::from_secs(10), observe.next()).await?.context("observe ended")??;
    assert_eq!(proclaimed.kv.map(|kv| kv.value).as_deref(), Some(&b"a2"[..]));

    // A second candidate waits until the leader resigns, then wins.
    let mut other = ElectionClient::new(ch);
    let watching = watchers(&etcd.endpoints())?;
    let candidate = tokio::spawn(async move {
        other.campaign(CampaignRequest { name: "svc".into(), lease: b, value: "b".into() }).await
    });
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!candidate.is_finished(), "only one leader at a time");
    election.resign(ResignRequest { leader: Some(leader_a) }).await?;
    tokio::time::timeout(Duration::from_secs(10), candidate).await.context("candidate never won")???;
    let observed = tokio::time::timeout(Duration::from_secs(10), observe.next()).await?.context("observe ended")??;
    assert_eq!(observed.kv.map(|kv| kv.value).as_deref(), Some(&b"b"[..]));
    Ok(())
}
