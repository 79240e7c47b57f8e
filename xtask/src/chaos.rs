//! `cargo xtask chaos`: the long lock-set run (see `etcd_tests::lockset`).
//!
//! For every strategy and write mode asked for, a fresh 3-member cluster (compacting itself every
//! second when `compact` is among the faults) and `--workers` `lockset_worker` processes, for an
//! equal share of `--minutes`, with the whole fault mix injected in turn. Prints each run's
//! summary, then a markdown table of all of them. Fails if any fenced run lost an update.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_harness::{ClusterConfig, EtcdCluster, EtcdVersion};
use etcd_tests::lockset::{self, Fault, Mode, RunConfig, Strategy, Summary};

/// Options of `cargo xtask chaos`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Total running time, split evenly between the runs (at least 30 s each).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Faults to inject, comma-separated: kill, pause, member, leader, partition, drop, delay,
    /// compact; or `all`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Lock strategies, comma-separated: mutex, naive, lease, rpc.
    #[arg(long, default_value = "mutex,naive,lease,rpc")]
    strategies: String,
    /// Write modes, comma-separated: fenced, unfenced.
    #[arg(long, default_value = "fenced,unfenced")]
    modes: String,
    /// Worker processes per run.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 2)]
    ttl: u64,
    /// Seconds between faults (jittered ±30 %).
    #[arg(long, default_value_t = 3.0)]
    fault_interval: f64,
    /// etcd release: 3.5 (default, or ETCD_VERSION) or 3.4.
    #[arg(long)]
    version: Option<String>,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print every fault as it is injected.
    #[arg(long)]
    verbose: bool,
    /// Keep every worker's log and the fault log of each run in this directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

pub(crate) fn run(args: ChaosArgs) -> Result<()> {
    let faults = Fault::parse_list(&args.faults)?;
    let strategies: Vec<Strategy> =
        args.strategies.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    let modes: Vec<Mode> =
        args.modes.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_>>()?;
    if strategies.is_empty() || modes.is_empty() {
        bail!("nothing to run: give at least one strategy and one mode");
    }
    let version = match &args.version {
        Some(v) => EtcdVersion::parse(v)?,
        None => EtcdVersion::from_env()?,
    };
    let worker = build_worker()?;
    let runs = strategies.len() * modes.len();
    let each = Duration::from_secs_f64((args.minutes * 60.0 / runs as f64).max(30.0));
    println!(
        "chaos: {runs} runs of {:.0} s on etcd {version} x3, {} workers, TTL {} s, faults: {}",
        each.as_secs_f64(),
        args.workers,
        args.ttl,
        faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
    );

    let mut summaries: Vec<Summary> = Vec::new();
    for (n, (strategy, mode)) in strategies.iter().flat_map(|s| modes.iter().map(move |m| (*s, *m))).enumerate() {
        let mut config = ClusterConfig::default().with_version(version).with_members(3);
        if faults.contains(&Fault::Compact) {
            config = config.with_extra_args(["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"]);
        }
        let etcd = EtcdCluster::start(config).context("starting etcd")?;
        etcd.wait_for_leader(Duration::from_secs(30))?;
        let mut cfg = RunConfig::new(&worker, strategy, mode);
        cfg.workers = args.workers;
        cfg.ttl_secs = args.ttl;
        cfg.duration = each;
        cfg.faults = faults.clone();
        cfg.fault_interval = Duration::from_secs_f64(args.fault_interval);
        cfg.quiet_tail = Duration::from_secs(5);
        cfg.seed = args.seed.wrapping_add(n as u64);
        cfg.verbose = args.verbose;
        cfg.log_dir = args.log_dir.clone();
        println!("\n== run {}/{runs}: {strategy} {mode}", n + 1);
        let summary = lockset::run(&etcd, &cfg)?;
        println!("{summary}");
        summaries.push(summary);
    }

    println!("\n{}", Summary::table_header());
    for s in &summaries {
        println!("{}", s.row());
    }
    let unsafe_runs: Vec<String> = summaries
        .iter()
        .filter(|s| s.mode == Mode::Fenced.name() && !s.is_safe())
        .map(|s| format!("{} {}", s.strategy, s.mode))
        .collect();
    if !unsafe_runs.is_empty() {
        bail!("fenced runs lost updates: {}", unsafe_runs.join(", "));
    }
    println!("\nevery fenced run: no lost update");
    Ok(())
}

/// Builds the `lockset_worker` binary and returns its path.
fn build_worker() -> Result<PathBuf> {
    let root = crate::codegen::workspace_root();
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "-p", "etcd-tests", "--bin", "lockset_worker"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building lockset_worker failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("lockset_worker");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}
