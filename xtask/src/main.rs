//! Project automation, run as `cargo xtask <task>` (see `.cargo/config.toml`).

mod chaos;
mod codegen;
mod compare;
mod etcd;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Project automation for the etcd client and lock recipes workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The main job: start a local etcd, compare the lock strategies and etcd-client, and write
    /// the report with its plots to target/lock-report/.
    Compare {
        /// Longer points and more contention levels (minutes longer).
        #[arg(long)]
        full: bool,
        /// Run etcd with fsync on (a realistic run) instead of --unsafe-no-fsync.
        #[arg(long)]
        fsync: bool,
    },
    /// Run every test, as CI does: installs etcd, fmt, clippy, tests on 3.5.1 and 3.4.23.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        quick: bool,
    },
    /// Regenerate crates/etcd-wire/src/generated from proto/ (protox + tonic-prost-build).
    Codegen {
        /// Only check that the committed files are fresh; fail naming the fix if not.
        #[arg(long)]
        check: bool,
    },
    /// The long lock-set reliability run: K worker processes under faults, per strategy and mode.
    Chaos(chaos::ChaosArgs),
    /// Install the pinned etcd releases, or run a local server until Ctrl-C.
    Etcd {
        #[command(subcommand)]
        action: EtcdAction,
    },
}

#[derive(Debug, Subcommand)]
enum EtcdAction {
    /// Install etcd 3.5.1 and 3.4.23 into the project cache (target/etcd-bin) if missing.
    Install,
    /// Start a local server (or cluster) in the foreground and print its endpoints.
    Start {
        /// Number of members (1 or 3 are typical).
        #[arg(long, default_value_t = 1)]
        members: usize,
        /// etcd release: 3.5 (default, or ETCD_VERSION) or 3.4.
        #[arg(long)]
        version: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Compare { full, fsync } => compare::run(full, fsync),
        Task::Test { quick } => test::run(quick),
        Task::Codegen { check } => codegen::run(check),
        Task::Chaos(args) => chaos::run(args),
        Task::Etcd { action: EtcdAction::Install } => etcd::install_all(),
        Task::Etcd { action: EtcdAction::Start { members, version } } => etcd::run(version.as_deref(), members),
    }
}
