//! `etcd-recipes bench`: the comparison table against a harness-started etcd.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{etcd, keys, run, tool};

#[test]
fn bench_prints_a_row_per_strategy_and_contender_count() -> Result<()> {
    let etcd = etcd()?;
    let args = ["bench", "--strategies", "mutex,naive,lease,rpc,semaphore", "--contenders", "1,2", "--seconds", "0.3"];
    let out = run(tool(&etcd, &args), Duration::from_secs(60))?;
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    for strategy in ["mutex", "naive", "lease", "rpc", "semaphore"] {
        for n in [1, 2] {
            let row = format!("| {strategy} | {n} | shared |");
            let line = out.stdout.lines().find(|l| l.starts_with(&row));
            let line = line.unwrap_or_else(|| panic!("no row {row:?} in:\n{}", out.stdout));
            let locks_per_s: f64 = line.split('|').nth(4).unwrap_or_default().trim().parse()?;
            assert!(locks_per_s > 0.0, "{line}");
        }
    }
    // The uncontended Mutex cycle is one Txn and one fenced delete.
    let mutex1 = out.stdout.lines().find(|l| l.starts_with("| mutex | 1 |")).unwrap_or_default();
    assert_eq!(mutex1.split('|').nth(10).map(str::trim), Some("2.00"), "{mutex1}");
    // So is the uncontended one-permit semaphore's (it marks its key only after waiting).
    let semaphore1 = out.stdout.lines().find(|l| l.starts_with("| semaphore | 1 |")).unwrap_or_default();
    assert_eq!(semaphore1.split('|').nth(10).map(str::trim), Some("2.00"), "{semaphore1}");
    assert!(keys(&etcd, "etcd-recipes-bench/")?.is_empty(), "the bench leaves no keys behind");
    Ok(())
}

#[test]
fn bench_help_explains_the_columns() -> Result<()> {
    let out = run(common::bare(&["bench", "--help"]), Duration::from_secs(10))?;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Examples") && out.stdout.contains("handoff"), "{}", out.stdout);
    Ok(())
}
