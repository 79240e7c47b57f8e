//! A quick lock-strategy comparison against `ETCD_ENDPOINTS` (default `127.0.0.1:2379`):
//! every strategy at 1 and 4 contenders on one shared client, `COMPARE_SECS` seconds each
//! (default 0.5), printed as a table.

use std::time::Duration;

use etcd_lockbench::{Clients, Until, recipe_contenders, run};
use etcd_recipes::Strategy;
use etcd_wire::ClientOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = std::env::var("ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:2379".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let secs: f64 = std::env::var("COMPARE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    println!(
        "{:<8} {:>4} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "strategy", "n", "locks/s", "wait p50", "wait p99", "handoff50", "rpcs/acq"
    );
    for strategy in Strategy::ALL {
        for n in [1, 4] {
            let name = format!("compare-{strategy}-{n}");
            let (contenders, counters) =
                recipe_contenders(&endpoints, &ClientOptions::default(), strategy, n, Clients::Shared, &name, 10)
                    .await?;
            let o =
                run(contenders, Duration::ZERO, Until::Elapsed(Duration::from_secs_f64(secs)), Some(&counters)).await?;
            println!(
                "{:<8} {:>4} {:>10.1} {:>10.2?} {:>10.2?} {:>10.2?} {:>9.2}",
                strategy.name(),
                n,
                o.throughput(),
                o.wait(0.5),
                o.wait(0.99),
                o.handoff(0.5),
                o.rpcs_per_acquisition().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
