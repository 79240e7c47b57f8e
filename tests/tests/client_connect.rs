//! Connecting: bad endpoints, unreachable members, and failover across a 3-member cluster.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_harness::{ClusterConfig, EtcdCluster};
use etcd_tests::{single, three};
use etcd_wire::{Client, ClientOptions, Compare, CompareOp, Error, GetOptions, PutOptions, Txn, TxnOp};
use futures::StreamExt;

#[tokio::test]
async fn malformed_endpoints_fail_before_connecting() {
    for bad in ["", "unixs:///tmp/etcd.sock", "unix://", "http://", "host:notaport"] {
        let r = Client::connect([bad], ClientOptions::default()).await;
        assert!(matches!(r, Err(Error::InvalidEndpoint { .. })), "{bad:?}: {r:?}");
    }
    let none: [&str; 0] = [];
    assert!(matches!(Client::connect(none, ClientOptions::default()).await, Err(Error::InvalidArgument { .. })));
}

#[tokio::test]
async fn unreachable_endpoint_fails_within_the_connect_timeout() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
    let started = Instant::now();
    let options = ClientOptions::default().with_connect_timeout(Duration::from_secs(2));
    let r = Client::connect([format!("127.0.0.1:{port}")], options).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let text = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains(&port.to_string()), "the error names the endpoint: {text}");
}

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_skipped() -> Result<()> {
    let etcd = single()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut endpoints = vec![format!("127.0.0.1:{port}")];
    endpoints.extend(etcd.endpoints());
    let c = Client::connect(&endpoints, ClientOptions::default()).await?;
    for i in 0..20 {
        c.put(format!("k{i}"), "v", PutOptions::new()).await?;
    }
    assert_eq!(c.get("k", GetOptions::new().with_prefix().with_count_only()).await?.count, 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_succeeding_while_a_member_is_down() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    c.put("before", "1", PutOptions::new()).await?;

    for victim in 0..3 {
        etcd.kill(victim)?;
        // A write made while a killed leader is being replaced may time out on the server, and the
        // client rightly does not resend it (it may have landed): let the survivors elect first.
        etcd.wait_for_leader(Duration::from_secs(20))?;
        // Reads retry on the next member; writes to a dead member fail to connect and move on too.
        for i in 0..15 {
            c.get("before", GetOptions::new()).await?;
            c.put(format!("during/{victim}/{i}"), "x", PutOptions::new()).await?;
        }
        etcd.restart(victim)?;
        etcd.wait_for_leader(Duration::from_secs(20))?;
    }
    assert_eq!(c.get("during/", GetOptions::new().with_prefix().with_count_only()).await?.count, 45);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_sync_from_the_member_list() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    // Start from one endpoint; sync discovers all three.
    let c = Client::connect([etcd.endpoints()[0].clone()], ClientOptions::default()).await?;
    let mut synced = c.sync_endpoints().await?;
    synced.sort();
    let mut want = etcd.endpoints();
    want.sort();
    assert_eq!(synced, want);
    let members = c.member_list(true).await?;
    assert_eq!(members.members.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sync_keeps_the_seed_endpoints_when_the_advertised_urls_are_unreachable() -> Result<()> {
    // The member advertises a client URL nobody listens on (as behind NAT or a load balancer).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let advertised = format!("http://127.0.0.1:{closed}");
    let etcd = etcd_harness::EtcdCluster::start(
        etcd_harness::ClusterConfig::default().with_extra_args([format!("--advertise-client-urls={advertised}")]),
    )?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let members = c.member_list(false).await?;
    assert_eq!(
        members.members[0].client_urls,
        std::slice::from_ref(&advertised),
        "the member advertises the closed port"
    );

    // Sync adopts the advertised URL; the seed stays behind it as a fallback.
    assert_eq!(c.sync_endpoints().await?, [advertised]);
    for i in 0..10 {
        c.put(format!("k{i}"), "v", PutOptions::new()).await?;
        assert_eq!(c.get(format!("k{i}"), GetOptions::new()).await?.count, 1);
    }
    Ok(())
}

/// One TCP proxy in front of each member of `etcd`.
fn proxies(etcd: &etcd_harness::EtcdCluster) -> Result<Vec<etcd_harness::TcpProxy>> {
    let ps =
        etcd.endpoints().into_iter().map(|e| etcd_harness::TcpProxy::start(e.trim_start_matches("http://").to_owned()));
    Ok(ps.collect::<std::io::Result<_>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_member_is_left_within_one_timeout_and_rejoins_after_it_recovers() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let ps = proxies(&etcd)?;
    let timeout = Duration::from_secs(1);
    let options = ClientOptions::default().with_request_timeout(Some(timeout));
    let c = Client::connect(ps.iter().map(|p| p.url()), options).await?;
    c.put("k", "v", PutOptions::new()).await?;

    // Member 0 goes silent: a read it gets times out once and is sent again to another member;
    // later reads avoid it. None fails, none waits much beyond one timeout.
    ps[0].set_blackhole(true);
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        assert_eq!(c.get("k", GetOptions::new()).await?.count, 1);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < timeout * 2 + Duration::from_secs(2), "a read took {slowest:?}");

    // It recovers, the other two go silent: reads find member 0 again.
    ps[0].set_blackhole(false);
    ps[1].set_blackhole(true);
    ps[2].set_blackhole(true);
    let found_again = async {
        for _ in 0..5 {
            loop {
                match c.get("k", GetOptions::new()).await {
                    Err(Error::Timeout { .. }) => continue, // both tries of one call hit a silent member
                    other => break assert_eq!(other?.count, 1),
                }
            }
        }
        Ok::<_, Error>(())
    };
    // Bounded only so that a regression fails instead of hanging: 8 s (the longest cool-down)
    // and a few timeouts suffice.
    tokio::time::timeout(Duration::from_secs(120), found_again).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_member_read_only_txns_fail_over() -> Result<()> {
    // A read-only Txn runs detached (it is never cancelled on the server, etcd-io/etcd#14110), but
    // it must still leave a silent member like any read: sent once more elsewhere, not failed.
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let ps = proxies(&etcd)?;
    let timeout = Duration::from_secs(1);
    let options = ClientOptions::default().with_request_timeout(Some(timeout));
    let c = Client::connect(ps.iter().map(|p| p.url()), options).await?;
    c.put("k", "v", PutOptions::new()).await?;
    ps[0].set_blackhole(true);
    for _ in 0..6 {
        let read = Txn::new()
            .when([Compare::version("k", CompareOp::Greater, 0)])
            .and_then([TxnOp::get("k", GetOptions::new())]);
        let resp = c.txn(read).await?;
        assert!(resp.succeeded);
        assert_eq!(resp.gets().next().map(|g| g.count), Some(1));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_member_does_not_delay_connect() -> Result<()> {
    let etcd = single()?;
    let silent = etcd_harness::TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    silent.set_blackhole(true);
    let connect_timeout = Duration::from_secs(10);
    let options = ClientOptions::default().with_connect_timeout(connect_timeout);
    let started = Instant::now();
    let c = Client::connect([silent.url(), etcd.endpoints()[0].clone()], options).await?;
    // Connect waited for the first answer, not for the silent endpoint's connect timeout.
    assert!(started.elapsed() < connect_timeout, "connect took {:?}", started.elapsed());
    for _ in 0..5 {
        c.put("k", "v", PutOptions::new()).await?;
    }
    Ok(())
}

/// A `unix://` endpoint (as Go's client takes them): unary calls, the shared watch stream, leases
/// and calls aimed at the endpoint all go over the socket; a socket nobody serves fails within
/// the connect timeout, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_endpoint_serves_calls_streams_and_leases() -> Result<()> {
    let etcd = EtcdCluster::start(ClusterConfig::default().with_unix_sockets())?;
    let socket = etcd.member(0)?.unix_socket().context("no unix socket")?;
    let url = format!("unix://{}", socket.display());
    let c = Client::connect([&url], ClientOptions::default()).await?;
    assert_eq!(c.endpoints(), [url.as_str()]);

    let mut watch = c.watch("unix/", etcd_wire::WatchOptions::new().with_prefix()).await?;
    let lease = c.lease_grant(30, None).await?;
    c.put("unix/k", "over the socket", PutOptions::new().with_lease(lease.id)).await?;
    assert_eq!(c.get("unix/k", None).await?.kvs[0].value, "over the socket");
    let event = watch.next().await.context("watch ended")??;
    assert_eq!(event.events[0].kv.key, "unix/k");
    assert!(c.lease_keep_alive_once(lease.id).await? > 0);
    assert!(c.status_of(&url).await?.is_leader());

    // The same member over TCP sees the same data.
    let tcp = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    assert_eq!(tcp.get("unix/k", None).await?.count, 1);

    let gone = format!("unix://{}", socket.with_file_name("nobody.sock").display());
    let options = ClientOptions::default().with_connect_timeout(Duration::from_secs(2));
    let err = Client::connect([&gone], options).await.err().context("connected to a missing socket")?;
    assert!(matches!(err, Error::Connect { .. }) && err.to_string().contains("nobody.sock"), "{err}");
    Ok(())
}

/// The endpoints of a live client, changed on a 3-member cluster: after `set_endpoints` the
/// shared watch and keep-alive streams leave the member that was dropped (its watcher gauge
/// falls to 0, the others' rises), so killing it costs nothing; the watch resumes exactly once;
/// `add_endpoint`/`remove_endpoint` edit the list, and bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_change_on_a_live_client_and_streams_follow() -> Result<()> {
    let etcd = three()?;
    // The member the client leaves (and that is then killed) is a follower: killing the leader
    // would make the next write meet an election ("request timed out"), which is not this test's.
    let gone = (etcd.wait_for_leader(Duration::from_secs(20))? + 1) % 3;
    let mut urls = etcd.endpoints();
    urls.swap(0, gone);
    let c = Client::connect([&urls[0]], ClientOptions::default()).await?;
    let mut watch = c.watch("live/", etcd_wire::WatchOptions::new().with_prefix()).await?;
    let lease = c.lease_grant(30, None).await?.id;
    let _keep_alive = c.lease_keep_alive(lease).await?;
    c.put("live/1", "on m0", PutOptions::new()).await?;
    etcd_tests::wait_for_watchers(&urls[..1], 1.0).await?;

    c.set_endpoints([&urls[1], &urls[2]])?;
    assert_eq!(c.endpoints(), [urls[1].clone(), urls[2].clone()]);
    etcd_tests::eventually(Duration::from_secs(20), "the watch stream left m0", || async {
        let on_m0 = etcd_tests::watchers(&urls[..1]).ok()?;
        let elsewhere = etcd_tests::watchers(&urls[1..]).ok()?;
        (on_m0 == 0.0 && elsewhere >= 1.0).then_some(())
    })
    .await?;
    etcd_tests::eventually(Duration::from_secs(20), "keep-alives on m1 or m2", || async {
        let started: f64 =
            urls[1..].iter().filter_map(|u| etcd_tests::requests_started(u, &["LeaseKeepAlive"]).ok()).sum();
        (started >= 1.0).then_some(())
    })
    .await?;

    etcd.kill(gone)?;
    c.put("live/2", "without m0", PutOptions::new().with_lease(lease)).await?;
    let mut keys = Vec::new();
    while keys.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(20), watch.next()).await?.context("watch ended")??;
        keys.extend(r.events.iter().map(|e| e.kv.key_str().into_owned()));
    }
    assert_eq!(keys, ["live/1", "live/2"], "each event once, in order");
    assert!(c.lease_time_to_live(lease, false).await?.ttl > 0);

    // Editing the list: bad input changes nothing.
    let before = c.endpoints();
    assert!(matches!(c.set_endpoints(["http://"]), Err(Error::InvalidEndpoint { .. })));
    assert!(matches!(c.set_endpoints(Vec::<String>::new()), Err(Error::InvalidArgument { .. })));
    assert!(matches!(c.add_endpoint("ftp://x:1"), Err(Error::InvalidEndpoint { .. })));
    assert_eq!(c.endpoints(), before);
    c.add_endpoint(&urls[1])?;
    assert_eq!(c.endpoints(), before, "already there");
    c.remove_endpoint(&urls[2])?;
    c.remove_endpoint(&urls[0])?;
    assert_eq!(c.endpoints(), [urls[1].clone()]);
    assert!(matches!(c.remove_endpoint(&urls[1]), Err(Error::InvalidArgument { .. })), "the last one stays");
    c.add_endpoint(&urls[2])?;
    assert_eq!(c.endpoints(), [urls[1].clone(), urls[2].clone()]);
    for i in 0..6 {
        c.get(format!("live/{i}"), None).await?;
    }
    Ok(())
}
