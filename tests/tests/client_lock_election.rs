//! The typed server-side Lock and Election APIs against real etcd: mutual exclusion between two
//! leases, release by unlock and by lease revocation, namespacing, and a full election round
//! (campaign, leader, observe, proclaim, a waiting candidate, resign, no leader).

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_tests::{single, wait_for_keys, wait_for_watchers, watchers};
use etcd_wire::{Client, ClientOptions, Error, GetOptions};
use futures::StreamExt;

async fn connect(endpoints: Vec<String>) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// The keys under `prefix`, read through the un-namespaced client.
async fn keys(client: &Client, prefix: &str) -> Result<Vec<String>> {
    let r = client.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?;
    Ok(r.kvs.iter().map(|kv| kv.key_str().into_owned()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_a_second_lease_until_unlock() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let ns = client.with_namespace("app/");
    let a = client.lease_grant(60, None).await?.id;
    let b = client.lease_grant(60, None).await?.id;

    let held = ns.lock("job", a).await?;
    assert!(held.key.starts_with(b"job/"), "the namespace is stripped from the key: {:?}", held.key);
    assert_eq!(keys(&client, "app/job/").await?, [format!("app/{}", String::from_utf8_lossy(&held.key))]);

    let other = ns.clone();
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { other.lock("job", b).await });
    // The waiter is queued under the name and the server waits on a watch for it.
    wait_for_keys(&client, "app/job/", 2).await?;
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!waiter.is_finished(), "a second lease must wait while the lock is held");

    ns.unlock(held.key.clone()).await?;
    let next =
        tokio::time::timeout(Duration::from_secs(10), waiter).await.context("waiter never got the lock")???;
    assert_ne!(next.key, held.key);
    assert!(next.header.revision > held.header.revision);
    assert_eq!(keys(&client, "app/job/").await?, [format!("app/{}", String::from_utf8_lossy(&next.key))]);

    // Unlocking a key that is already gone is not an error.
    ns.unlock(held.key).await?;
    // The plain client's lock of the same name is another lock: it is not under "app/".
    let plain = tokio::time::timeout(Duration::from_secs(10), client.lock("job", a)).await??;
    assert!(plain.key.starts_with(b"job/"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_holders_lease_releases_the_lock() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let a = client.lease_grant(60, None).await?.id;
    let b = client.lease_grant(60, None).await?.id;
    client.lock("res", a).await?;

    let other = client.clone();
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { other.lock("res", b).await });
    wait_for_keys(&client, "res/", 2).await?;
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!waiter.is_finished());
    client.lease_revoke(a).await?;
    let next = tokio::time::timeout(Duration::from_secs(10), waiter).await.context("lock not handed over")???;
    assert_eq!(client.get(next.key.clone(), GetOptions::new()).await?.kvs[0].lease, b);
    Ok(())
}

#[tokio::test]
async fn lock_arguments_are_checked_before_any_rpc() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    assert!(matches!(client.lock("", 1).await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.lock("x", 0).await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.unlock("").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.campaign("", 1, "v").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.campaign("e", 0, "v").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.leader("").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(client.observe("").await, Err(Error::InvalidArgument { .. })));
    // A lease that does not exist is the server's to reject.
    let r = client.lock("x", 0x7777).await;
    assert!(matches!(r, Err(Error::LeaseNotFound { .. })), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_round_trip() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let ns = client.with_namespace("app/");
    let a = client.lease_grant(60, None).await?.id;
    let b = client.lease_grant(60, None).await?.id;

    assert_eq!(ns.leader("svc").await?, None, "no candidate yet");

    let leader_a = ns.campaign("svc", a, "a").await?;
    assert_eq!((&leader_a.name[..], leader_a.lease), (&b"svc"[..], a));
    assert!(leader_a.key.starts_with(b"svc/"), "{:?}", leader_a.key);
    let now = ns.leader("svc").await?.context("a leader")?;
    assert_eq!((now.key.clone(), now.value_str()), (leader_a.key.clone(), "a".into()));
    assert_eq!(keys(&client, "app/svc/").await?.len(), 1, "the election lives under the namespace");
    assert_eq!(client.leader("svc").await?, None, "and not outside it");

    let mut observe = ns.observe("svc").await?;
    let first = tokio::time::timeout(Duration::from_secs(10), observe.next()).await?.context("observe ended")??;
    assert_eq!((first.key.clone(), first.value_str()), (leader_a.key.clone(), "a".into()));

    ns.proclaim(&leader_a, "a2").await?;
    let proclaimed =
        tokio::time::timeout(Duration::from_secs(10), observe.next()).await?.context("observe ended")??;
    assert_eq!(proclaimed.value_str(), "a2");
    assert_eq!(ns.leader("svc").await?.map(|kv| kv.value), Some("a2".into()));

    // A second candidate waits until the leader resigns, then wins.
    let other = ns.clone();
    let watching = watchers(&etcd.endpoints())?;
    let candidate = tokio::spawn(async move { other.campaign("svc", b, "b").await });
    wait_for_keys(&client, "app/svc/", 2).await?;
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!candidate.is_finished(), "only one leader at a time");
    ns.resign(&leader_a).await?;
    let leader_b =
        tokio::time::timeout(Duration::from_secs(10), candidate).await.context("candidate never won")???;
    assert_eq!(leader_b.lease, b);
    let next = tokio::time::timeout(Duration::from_secs(10), observe.next()).await?.context("observe ended")??;
    assert_eq!((next.key.clone(), next.value_str()), (leader_b.key.clone(), "b".into()));

    // The old leader key no longer leads.
    let r = ns.proclaim(&leader_a, "stale").await;
    assert!(matches!(&r, Err(Error::NotLeader { reason, .. }) if reason.contains("not leader")), "{r:?}");

    // Resigning a key that no longer leads changes nothing.
    ns.resign(&leader_a).await?;
    assert_eq!(ns.leader("svc").await?.map(|kv| kv.key), Some(leader_b.key.clone()));

    ns.resign(&leader_b).await?;
    assert_eq!(ns.leader("svc").await?, None, "everyone resigned");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_ends_with_the_lease() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let a = client.lease_grant(60, None).await?.id;
    let leader = client.campaign("e", a, "x").await?;
    assert!(client.leader("e").await?.is_some());
    client.lease_revoke(a).await?;
    assert_eq!(client.leader("e").await?, None);
    let r = client.proclaim(&leader, "y").await;
    assert!(r.is_err(), "proclaiming with a revoked lease: {r:?}");
    Ok(())
}
