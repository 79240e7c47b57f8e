//! `lock`: every lock strategy (Mutex, naive create/watch, lease TTL, our server-side Lock RPC) and
//! the peer (etcd-client's server-side lock), against the same server in the same run:
//! - `lock/<lock>/uncontended`: one lock + unlock cycle, the session already made;
//! - `lock/<lock>/contenders_<n>` (each contender its own client) and
//!   `lock/<lock>/contenders_<n>_shared` (all on one client), n = 2, 4, 16, 64: every contender
//!   loops lock → unlock on one lock, each with its own session. Criterion's time is per
//!   acquisition (its throughput, acquisitions per second).
//!
//! At the end it prints the table criterion cannot: acquire wait p50/p99/max, handoff latency
//! (holder's unlock → next holder's lock returns), and RPCs and watch events per acquisition, over
//! every acquisition criterion ran.

mod common;

use std::time::Duration;

use criterion::{BenchmarkId, SamplingMode, Throughput};
use etcd_benches::peer::Lock;
use etcd_benches::{BoxError, Contenders, Server, merge, runtime, unique};
use etcd_lockbench::{Clients, Outcome, Point, Until, table};

/// Session TTL of every contender, seconds.
const TTL: i64 = 10;

fn main() -> Result<(), BoxError> {
    let server = Server::start(false)?;
    eprintln!("lock: against {}", server.describe());
    let rt = runtime();
    let _entered = rt.enter();
    let mut c = common::criterion();
    let mut points = Vec::new();
    let mut group = c.benchmark_group("lock");
    group.throughput(Throughput::Elements(1));
    // Each run drains every waiter (a 64-contender run of the Lock RPC takes seconds): keep
    // criterion from growing the iteration count sample by sample.
    group.sampling_mode(SamplingMode::Flat);
    let mut cases = Vec::new();
    for lock in Lock::ALL {
        cases.push((lock, 1, Clients::Separate, "uncontended".to_owned()));
    }
    for clients in [Clients::Separate, Clients::Shared] {
        for n in [2, 4, 16, 64] {
            for lock in Lock::ALL {
                let shared = if clients == Clients::Shared { "_shared" } else { "" };
                cases.push((lock, n, clients, format!("contenders_{n}{shared}")));
            }
        }
    }
    for (lock, n, clients, param) in cases {
        let mut total: Option<Outcome> = None;
        group.bench_function(BenchmarkId::new(lock.id(), &param), |b| {
            let contenders = rt
                .block_on(async {
                    let name = unique(&format!("lock-{}-{n}", lock.id()));
                    let (each, counters) = lock.contenders(server.endpoints(), n, clients, &name, TTL).await?;
                    Ok::<_, etcd_lockbench::Error>(Contenders::new(each, counters))
                })
                .unwrap_or_else(|e| panic!("{} contenders: {e}", lock.label()));
            let total = total.get_or_insert_with(Outcome::default);
            b.iter_custom(|iters| {
                let o = rt
                    .block_on(contenders.run(Until::Acquisitions(iters)))
                    .unwrap_or_else(|e| panic!("{} with {n} contenders: {e}", lock.label()));
                // Every waiter finishes its cycle, so a run makes at least n acquisitions: scale.
                let per = o.elapsed.div_f64(o.acquisitions.max(1) as f64);
                merge(total, o);
                per.mul_f64(iters as f64)
            });
            drop(contenders);
        });
        if let Some(total) = total {
            points.push(Point::new(lock.label(), n, clients, total));
        }
    }
    group.finish();
    c.final_summary();
    if !points.is_empty() {
        println!("\nEvery acquisition criterion ran, per lock and contention ({}):\n", server.describe());
        println!("{}", table(&points));
        for p in points.iter().filter(|p| p.contenders == 1) {
            if let Some(r) = p.outcome.rpcs_per_acquisition() {
                println!("lock/{}/uncontended: {r:.2} RPCs per lock + unlock cycle", p.label);
            }
        }
    }
    // Sessions of the last case end with their keep-alives; give in-flight revokes a moment.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
