//! `cargo xtask chaos`: the long lock-set run (see `etcd_tests::lockset`).
//!
//! For every strategy and write mode asked for, a fresh 3-member cluster (compacting itself every
//! second when `compact` is among the faults) and `--workers` `lockset_worker` processes, for an
//! equal share of `--minutes`, with the whole fault mix injected in turn. Prints each run's
//! summary, then a markdown table of all of them, and writes that table (with the command, date,
//! commit and one full summary) into `tests/RELIABILITY.md` between the markers of its etcd
//! version, unless `--no-record`. Fails if any fenced run lost an update.

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
    /// Faults to inject, comma-separated: kill, pause, stale, member, leader, partition, drop,
    /// delay, compact; or `all`.
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
    /// Do not write the results into `tests/RELIABILITY.md`.
    #[arg(long)]
    no_record: bool,
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

    let table = std::iter::once(Summary::table_header().to_owned()).chain(summaries.iter().map(Summary::row));
    let table = table.collect::<Vec<_>>().join("\n");
    println!("\n{table}");
    if !args.no_record {
        let path = crate::codegen::workspace_root().join("tests/RELIABILITY.md");
        record(&path, version, &results_block(version, each, &table, &summaries)?)?;
        println!("\nwritten into {}", path.display());
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

/// The markers around `version`'s results in `tests/RELIABILITY.md`.
fn markers(version: EtcdVersion) -> (String, String) {
    (format!("<!-- chaos-results {version} start -->"), format!("<!-- chaos-results {version} end -->"))
}

/// The text recorded for one chaos run: how it was run, the table, the verdict and one full
/// summary (an unfenced run that lost updates, if any).
fn results_block(version: EtcdVersion, each: Duration, table: &str, summaries: &[Summary]) -> Result<String> {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git").args(args).current_dir(crate::codegen::workspace_root()).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let mut commit = git(&["rev-parse", "--short", "HEAD"])?;
    // The page itself does not count: an earlier run (the other version's) may have just written it.
    if !git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!tests/RELIABILITY.md"])?.is_empty() {
        commit.push_str(" with uncommitted changes");
    }
    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let fenced = summaries.iter().filter(|s| s.mode == Mode::Fenced.name());
    let unfenced = summaries.iter().filter(|s| s.mode == Mode::Unfenced.name());
    let verdict = format!(
        "Fenced runs without a lost update: {}/{}. Unfenced runs that lost updates: {}/{}.",
        fenced.clone().filter(|s| s.is_safe()).count(),
        fenced.count(),
        unfenced.clone().filter(|s| s.lost_updates > 0).count(),
        unfenced.count(),
    );
    let example =
        summaries.iter().find(|s| s.mode == Mode::Unfenced.name() && s.lost_updates > 0).or(summaries.first());
    let example =
        example.map(|s| format!("\nOne run's full summary, as printed:\n\n```\n{}\n```\n", s.to_string().trim_end()));
    Ok(format!(
        "`cargo xtask {}` on etcd {version}, {} runs of {:.0} s, on a {cores}-core machine, {} (commit {commit}).\n\n{table}\n\n{verdict}\n{}",
        command.join(" "),
        summaries.len(),
        each.as_secs_f64(),
        String::from_utf8_lossy(&date.stdout).trim(),
        example.unwrap_or_default(),
    ))
}

/// Replaces what stands between `version`'s markers in the file at `path` with `block`.
fn record(path: &std::path::Path, version: EtcdVersion, block: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (start, end) = markers(version);
    let (Some(from), Some(to)) = (text.find(&start), text.find(&end)) else {
        bail!("{} has no `{start}` ... `{end}` markers", path.display());
    };
    if to < from {
        bail!("{}: `{end}` comes before `{start}`", path.display());
    }
    let updated = format!("{}{start}\n{block}{}", &text[..from], &text[to..]);
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_go_between_their_versions_markers_only() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("R.md");
        let (s5, e5) = markers(EtcdVersion::V3_5_1);
        let (s4, e4) = markers(EtcdVersion::V3_4_23);
        std::fs::write(&path, format!("intro\n{s5}\nold 5\n{e5}\nmiddle\n{s4}\nold 4\n{e4}\nend\n"))?;
        record(&path, EtcdVersion::V3_4_23, "new 4\n")?;
        record(&path, EtcdVersion::V3_4_23, "newer 4\n")?;
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text, format!("intro\n{s5}\nold 5\n{e5}\nmiddle\n{s4}\nnewer 4\n{e4}\nend\n"));

        std::fs::write(&path, "no markers\n")?;
        assert!(record(&path, EtcdVersion::V3_5_1, "x").is_err());
        assert_eq!(std::fs::read_to_string(&path)?, "no markers\n", "a failed record writes nothing");
        Ok(())
    }

    #[test]
    fn the_reliability_page_has_every_versions_markers() -> Result<()> {
        let text = std::fs::read_to_string(crate::codegen::workspace_root().join("tests/RELIABILITY.md"))?;
        for version in EtcdVersion::ALL {
            let (start, end) = markers(version);
            let (from, to) = (text.find(&start), text.find(&end));
            assert!(matches!((from, to), (Some(f), Some(t)) if f < t), "{start} / {end}");
        }
        Ok(())
    }
}
