//! `election`: failover time, `election/failover`: the leader's session is closed (its lease
//! revoked) → the waiting follower's `observe` reports the follower as the new leader.

mod common;

use std::time::Duration;

use etcd_benches::{BoxError, Failover, Server, runtime};

fn main() -> Result<(), BoxError> {
    let server = Server::start(false)?;
    eprintln!("election: against {}", server.describe());
    let rt = runtime();
    let _entered = rt.enter();
    let mut c = common::criterion();
    c.bench_function("election/failover", |b| {
        let mut failover = rt.block_on(Failover::new(&server)).unwrap_or_else(|e| panic!("election setup: {e}"));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += failover.sample().await?;
                }
                Ok::<_, etcd_recipes::Error>(total)
            })
            .unwrap_or_else(|e| panic!("failover: {e}"))
        });
    });
    c.final_summary();
    Ok(())
}
