//! `etcd-recipes bench`: the lock-strategy comparison (the engine the benches use) against the
//! cluster at `--endpoints`, printed as a table.

use std::time::Duration;

use etcd_lockbench::{Clients, Point, Until, recipe_contenders, run as run_contenders, table};

use crate::cli::{BenchArgs, GlobalArgs};
use crate::connect::{client_options, connect};
use crate::failure::Failure;

/// Runs every strategy at every contender count for `--seconds` each and prints the table.
pub(crate) async fn run(args: &BenchArgs, g: &GlobalArgs) -> Result<u8, Failure> {
    // Fail fast, with the usual one-line advice, when the cluster cannot be reached.
    drop(connect(g).await?);
    let options = client_options(g)?;
    let endpoints: Vec<String> = g.endpoints.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    let clients = if args.separate_clients { Clients::Separate } else { Clients::Shared };
    let mut points = Vec::new();
    for &strategy in &args.strategies {
        for &n in &args.contenders {
            eprintln!("bench: {strategy:?} with {n} contender(s), {} client(s), {}s ...", clients.name(), args.seconds);
            let name = format!("etcd-recipes-bench/{}/{strategy:?}-{n}", std::process::id()).to_lowercase();
            let fail = |e: etcd_lockbench::Error| Failure::error(format!("bench {strategy:?} x{n}: {e}"));
            let (contenders, counters) =
                recipe_contenders(&endpoints, &options, strategy.into(), n, clients, &name, g.ttl)
                    .await
                    .map_err(fail)?;
            let hold = Duration::from_micros(args.hold_us);
            let until = Until::Elapsed(Duration::from_secs_f64(args.seconds));
            let outcome = run_contenders(contenders, hold, until, Some(&counters)).await.map_err(fail)?;
            points.push(Point::new(strategy.as_str(), n, clients, outcome));
        }
    }
    print!("{}", table(&points));
    Ok(0)
}
