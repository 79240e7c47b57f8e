//! The typed Lease API against real etcd: grant / time-to-live / list / revoke, and the shared
//! keep-alive stream through expiry, revocation elsewhere, a leader change and a frozen member.
//!
//! Timing: every wait is generous (a noisy 2-core machine must not make these flaky); the only
//! assertions on time are "still alive after several TTLs" and "lost within a bound many TTLs long".

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_tests::{eventually, single, three};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, KeepAlive, LeaseLost, PutOptions};

async fn connect(endpoints: Vec<String>) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Whether `key` exists (read through any member).
async fn exists(client: &Client, key: &str) -> Result<bool> {
    Ok(client.get(key.to_owned(), GetOptions::new()).await?.count == 1)
}

/// Waits (generously) for the keep-alive to report its loss.
async fn lost_within(keep: &KeepAlive, within: Duration) -> Result<LeaseLost> {
    tokio::time::timeout(within, keep.lost())
        .await
        .with_context(|| format!("lease not reported lost within {within:?}"))
}

/// How many `LeaseKeepAlive` streams the member at `url` has accepted, from its Prometheus metrics
/// (`grpc_server_started_total`, served on the client URL).
fn keep_alive_streams_started(url: &str) -> Result<u64> {
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let started = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains("grpc_method=\"LeaseKeepAlive\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    ensure!(text.contains("grpc_server_started_total"), "no gRPC metrics at {url}/metrics");
    Ok(started as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_time_to_live_list_revoke() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let ns = client.with_namespace("app/");

    let granted = client.lease_grant(60, None).await?;
    assert!(granted.id > 0 && granted.ttl == 60, "{granted:?}");
    let chosen = client.lease_grant(30, Some(0x5eed)).await?;
    assert_eq!((chosen.id, chosen.ttl), (0x5eed, 30));

    ns.put("a", "1", PutOptions::new().with_lease(granted.id)).await?;
    ns.put("b", "2", PutOptions::new().with_lease(granted.id)).await?;
    client.put("outside", "3", PutOptions::new().with_lease(granted.id)).await?;

    let ttl = ns.lease_time_to_live(granted.id, true).await?;
    assert_eq!((ttl.id, ttl.granted_ttl), (granted.id, 60));
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    let mut keys = ttl.keys.clone();
    keys.sort();
    assert_eq!(keys, ["a", "b"], "namespaced view: only its own keys, prefix stripped");
    let mut all = client.lease_time_to_live(granted.id, true).await?.keys;
    all.sort();
    assert_eq!(all, ["app/a", "app/b", "outside"]);
    assert!(client.lease_time_to_live(granted.id, false).await?.keys.is_empty(), "keys only when asked");

    let leases = client.leases().await?;
    assert!(leases.contains(&granted.id) && leases.contains(&chosen.id), "{leases:?}");

    client.lease_revoke(granted.id).await?;
    assert!(!exists(&client, "outside").await? && !exists(&ns, "a").await?, "revoking deletes the keys");
    let gone = client.lease_time_to_live(granted.id, true).await?;
    assert_eq!(gone.ttl, -1, "a lease that does not exist reports TTL -1: {gone:?}");
    assert!(!client.leases().await?.contains(&granted.id));
    let again = client.lease_revoke(granted.id).await;
    assert!(matches!(again, Err(Error::LeaseNotFound { .. })), "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ttl_and_id_are_rejected_before_any_rpc() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    // With the only member gone, anything that reached the wire would fail as Unavailable.
    etcd.kill(0)?;
    for (ttl, id) in [(0, None), (-5, None), (10, Some(0)), (10, Some(-1))] {
        let r = client.lease_grant(ttl, id).await;
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "ttl {ttl}, id {id:?}: {r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_once_and_unknown_leases() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let granted = client.lease_grant(20, None).await?;
    assert_eq!(client.lease_keep_alive_once(granted.id).await?, 20);

    fn is_send<T: Send>(_: &T) {}
    is_send(&client.lease_keep_alive(granted.id)); // futures and handles cross threads
    let unknown = 0x7777_0000_i64;
    let once = client.lease_keep_alive_once(unknown).await;
    assert!(matches!(once, Err(Error::LeaseNotFound { .. })), "{once:?}");
    let shared = client.lease_keep_alive(unknown).await;
    assert!(matches!(shared, Err(Error::LeaseNotFound { .. })), "{shared:?}");

    // The shared stream still serves real leases after answering "not found".
    let keep = client.lease_keep_alive(granted.id).await?;
    assert_eq!((keep.id(), keep.ttl()), (granted.id, 20));
    assert!(!keep.is_lost());
    fn is_sync<T: Send + Sync>(_: &T) {}
    is_sync(&keep); // shareable, e.g. in an Arc, so several tasks can await `lost()`
    is_send(&keep.lost());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_a_short_lease_until_dropped() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let lease = client.lease_grant(2, None).await?;
    client.put("held", "v", PutOptions::new().with_lease(lease.id)).await?;

    let keep = client.lease_keep_alive(lease.id).await?;
    let second = client.lease_keep_alive(lease.id).await?;
    assert!(keep.ttl() > 0 && second.ttl() > 0);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(exists(&client, "held").await?, "kept alive for over three TTLs");
    assert!(!keep.is_lost());

    // One of two handles gone: the lease is still kept alive by the other.
    second.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(exists(&client, "held").await?, "the remaining handle keeps the lease alive");

    drop(keep);
    eventually(Duration::from_secs(20), "the key to vanish once nobody keeps its lease alive", || async {
        (!exists(&client, "held").await.ok()?).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_elsewhere_is_reported_as_expired() -> Result<()> {
    let etcd = single()?;
    let keeper = connect(etcd.endpoints()).await?;
    let other = connect(etcd.endpoints()).await?;
    let lease = keeper.lease_grant(6, None).await?;
    let keep = keeper.lease_keep_alive(lease.id).await?;
    let waiter = keep.lost(); // a second, concurrent waiter

    other.lease_revoke(lease.id).await?;
    // The next keep-alive (at most TTL/3 = 2 s later) is answered with TTL 0.
    let why = lost_within(&keep, Duration::from_secs(15)).await?;
    assert_eq!(why, LeaseLost::Expired);
    assert_eq!(tokio::time::timeout(Duration::from_secs(1), waiter).await?, LeaseLost::Expired);
    assert!(keep.is_lost());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_a_leader_change() -> Result<()> {
    let etcd = three()?;
    let leader = tokio::task::block_in_place(|| etcd.wait_for_leader(Duration::from_secs(20)))?;
    let client = connect(etcd.endpoints()).await?;
    // TTL 6 s: several election timeouts (1 s by default), so a re-election fits inside one TTL.
    let lease = client.lease_grant(6, None).await?;
    client.put("survivor", "v", PutOptions::new().with_lease(lease.id)).await?;
    let keep = client.lease_keep_alive(lease.id).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    etcd.kill(leader)?;
    let new_leader = tokio::task::block_in_place(|| etcd.wait_for_leader(Duration::from_secs(30)))?;
    ensure!(new_leader != leader, "the killed member cannot lead");
    tokio::time::sleep(Duration::from_secs(12)).await; // two TTLs after the election
    if keep.is_lost() {
        anyhow::bail!("lost across the leader change: {}", keep.lost().await);
    }
    assert!(exists(&client, "survivor").await?, "the key outlived two TTLs after the leader change");

    tokio::task::block_in_place(|| etcd.restart(leader))?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!keep.is_lost());
    assert!(exists(&client, "survivor").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_member_means_deadline() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let lease = client.lease_grant(2, None).await?;
    let keep = client.lease_keep_alive(lease.id).await?;

    etcd.pause(0)?;
    let why = lost_within(&keep, Duration::from_secs(20)).await;
    etcd.resume(0)?;
    assert_eq!(why?, LeaseLost::Deadline, "no answer while the only member is frozen");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_keeps_fifty_leases() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    let mut ids = Vec::new();
    for i in 0..50 {
        let lease = client.lease_grant(3, None).await?;
        client.put(format!("many/{i:02}"), "v", PutOptions::new().with_lease(lease.id)).await?;
        ids.push(lease.id);
    }
    let keeps = futures::future::try_join_all(ids.iter().map(|&id| client.lease_keep_alive(id))).await?;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let count = client.get("many/", GetOptions::new().with_prefix().with_count_only()).await?.count;
    assert_eq!(count, 50, "all fifty leases kept alive for three TTLs");
    assert!(keeps.iter().all(|k| !k.is_lost() && k.ttl() > 0));
    // One shared stream (a second only if the first stalled on this busy machine), not fifty.
    let streams = tokio::task::block_in_place(|| keep_alive_streams_started(&etcd.endpoints()[0]))?;
    assert!((1..=3).contains(&streams), "{streams} keep-alive streams for 50 leases");

    drop(keeps);
    eventually(Duration::from_secs(30), "all fifty keys to expire", || async {
        let r = client.get("many/", GetOptions::new().with_prefix().with_count_only()).await.ok()?;
        (r.count == 0).then_some(())
    })
    .await?;
    Ok(())
}

/// A `KeepAlive` outliving every `Client` handle (`Client::connect(..).await?.lease_keep_alive(..)`)
/// keeps its stream and its lease: the server sees the lease refreshed (its remaining TTL goes back
/// up) after the last client handle was dropped, and the handle never reports a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_keeps_its_lease_alive_after_every_client_handle_was_dropped() -> Result<()> {
    let etcd = single()?;
    let observer = connect(etcd.endpoints()).await?;
    // TTL 6: a keep-alive every 2 s, so the server's whole-second TTL visibly falls and rises.
    let lease = observer.lease_grant(6, None).await?;
    let keep = connect(etcd.endpoints()).await?.lease_keep_alive(lease.id).await?;
    // Three times: the server-side TTL falls, then a keep-alive from the handle lands and it
    // rises above the lowest value seen.
    for round in 0..3 {
        let lowest = AtomicI64::new(i64::MAX);
        eventually(Duration::from_secs(10), &format!("keep-alive {round} from the handle alone"), || async {
            let ttl = observer.lease_time_to_live(lease.id, false).await.ok()?.ttl;
            assert!(ttl > 0, "the lease expired while its KeepAlive handle lived");
            (ttl > lowest.fetch_min(ttl, Ordering::SeqCst)).then_some(())
        })
        .await?;
        ensure!(!keep.is_lost(), "the handle reported its lease lost");
    }
    Ok(())
}
