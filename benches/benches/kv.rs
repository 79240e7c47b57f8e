//! `kv`: put, range (linearizable and serializable) and txn, each sequentially and with 16, 64 and
//! 256 requests in flight on one client, for our client (`etcd-wire`) and the peer (`etcd-client`)
//! against the same server in the same run. Ids: `kv/<op>/<client>/sequential`,
//! `kv/<op>/<client>/in_flight_<n>`; criterion's throughput is requests per second.

mod common;

use criterion::{BenchmarkId, Throughput};
use etcd_benches::peer::{peer_client, peer_kv};
use etcd_benches::{BoxError, KvOp, Server, in_flight, runtime, unique, wire_kv};

fn main() -> Result<(), BoxError> {
    let server = Server::start(false)?;
    eprintln!("kv: against {}", server.describe());
    let rt = runtime();
    let _entered = rt.enter();
    let (wire, peer) = rt.block_on(async {
        let wire = server.client().await?;
        let peer = peer_client(server.endpoints()).await?.kv_client();
        Ok::<_, BoxError>((wire, peer))
    })?;
    let key = unique("kv");
    // Ranges find the key and txns take their `then` branch.
    rt.block_on(wire_kv(&wire, &key, KvOp::Put))?;

    let mut c = common::criterion();
    for op in KvOp::ALL {
        let mut group = c.benchmark_group(format!("kv/{}", op.name()));
        group.throughput(Throughput::Elements(1));
        for depth in [1, 16, 64, 256] {
            let param = if depth == 1 { "sequential".to_owned() } else { format!("in_flight_{depth}") };
            group.bench_function(BenchmarkId::new("etcd-wire", &param), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(in_flight(iters, depth, |_| wire_kv(&wire, &key, op)))
                        .unwrap_or_else(|e| panic!("etcd-wire {}: {e}", op.name()))
                });
            });
            group.bench_function(BenchmarkId::new("etcd-client", &param), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        if depth == 1 {
                            // Sequential: one client handle, reused, as a caller would.
                            let mut kv = peer.clone();
                            let start = std::time::Instant::now();
                            for _ in 0..iters {
                                peer_kv(&mut kv, &key, op).await?;
                            }
                            return Ok(start.elapsed());
                        }
                        in_flight(iters, depth, |_| {
                            let (mut kv, key) = (peer.clone(), key.as_str());
                            async move { peer_kv(&mut kv, key, op).await }
                        })
                        .await
                    })
                    .unwrap_or_else(|e: etcd_client::Error| panic!("etcd-client {}: {e}", op.name()))
                });
            });
        }
        group.finish();
    }
    c.final_summary();
    Ok(())
}
