//! Project automation, run as `cargo xtask <task>` (see `.cargo/config.toml`).

mod codegen;

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
    /// Regenerate crates/etcd-wire/src/generated from proto/ (protox + tonic-prost-build).
    Codegen {
        /// Only check that the committed files are fresh; fail naming the fix if not.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Codegen { check } => codegen::run(check),
    }
}
