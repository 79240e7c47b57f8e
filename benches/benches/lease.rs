//! `lease`:
//! - `lease/grant/<client>`: one `LeaseGrant` round trip (the leases are revoked, untimed);
//! - `lease/keep_alive_10000`: 10,000 leases kept alive on one client's shared keep-alive stream,
//!   reported as this process's CPU time per refresh and resident memory per lease (printed: criterion
//!   measures time, and this is a cost, not a latency).

mod common;

use std::time::{Duration, Instant};

use etcd_benches::peer::peer_client;
use etcd_benches::{BoxError, Server, keep_alive_cost, runtime, selected};
use futures::{StreamExt, TryStreamExt};

const LEASES: usize = 10_000;

fn main() -> Result<(), BoxError> {
    let server = Server::start(false)?;
    eprintln!("lease: against {}", server.describe());
    let rt = runtime();
    let _entered = rt.enter();
    let (wire, peer) =
        rt.block_on(async { Ok::<_, BoxError>((server.client().await?, peer_client(server.endpoints()).await?)) })?;
    let mut c = common::criterion();
    let mut group = c.benchmark_group("lease/grant");
    group.bench_function("etcd-wire", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut ids = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    ids.push(wire.lease_grant(60, None).await?.id);
                }
                let took = start.elapsed();
                revoke(&wire, ids).await?;
                Ok::<_, etcd_wire::Error>(took)
            })
            .unwrap_or_else(|e| panic!("etcd-wire lease grant: {e}"))
        });
    });
    group.bench_function("etcd-client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut lease = peer.lease_client();
                let mut ids = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    ids.push(lease.grant(60, None).await.map_err(|e| e.to_string())?.id());
                }
                let took = start.elapsed();
                revoke(&wire, ids).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(took)
            })
            .unwrap_or_else(|e| panic!("etcd-client lease grant: {e}"))
        });
    });
    group.finish();

    let id = format!("lease/keep_alive_{LEASES}");
    if selected(&id) {
        eprintln!("{id}: granting and keeping alive {LEASES} leases (TTL 6 s, refreshed every 2 s)...");
        let cost = rt.block_on(keep_alive_cost(&server, LEASES, 6, Duration::from_secs(6)))?;
        println!("{id}");
        println!(
            "                        cpu:    {:.1} µs per refresh ({:.0} refreshes{}; {:.1}% of a core for all {LEASES})",
            cost.cpu_per_refresh.as_secs_f64() * 1e6,
            cost.refreshes,
            if cost.counted { ", counted by the server" } else { ", estimated" },
            cost.cpu_per_sec_per_1000.as_secs_f64() * 100.0 * LEASES as f64 / 1000.0,
        );
        println!("                        memory: {:.0} B resident per lease", cost.rss_per_lease);
        println!(
            "                        setup:  {:.2} s to grant and register {LEASES}; {} lost over a {:.1} s window",
            cost.setup.as_secs_f64(),
            cost.lost,
            cost.window.as_secs_f64()
        );
    }
    c.final_summary();
    Ok(())
}

async fn revoke(client: &etcd_wire::Client, ids: Vec<i64>) -> etcd_wire::Result<()> {
    futures::stream::iter(ids)
        .map(|id| async move { client.lease_revoke(id).await.map(drop) })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}
