//! `etcd-recipes`: distributed locks and leader election on etcd v3 from the shell, in the manner of
//! `etcdctl lock` and `etcdctl elect` (and interoperating with them), built on [`etcd_recipes`].
//!
//! ```text
//! etcd-recipes [--endpoints ...] lock NAME [-- CMD ARGS...]     # hold a lock while CMD runs
//! etcd-recipes [--endpoints ...] elect NAME PROPOSAL             # campaign, lead until signalled
//! etcd-recipes [--endpoints ...] elect -l NAME                   # print each leader as it changes
//! etcd-recipes [--endpoints ...] elect --latch NAME -- CMD       # run CMD only while leader, again and again
//! etcd-recipes trace lock NAME ...                               # the same, with every RPC on stderr
//! ```
//!
//! The binary is a thin `main` over [`main`]; [`cli::Cli`] is the command line and [`failure`]
//! holds the exit codes.

pub mod cli;
pub mod duration;
pub mod failure;

mod bench;
mod child;
mod connect;
mod elect;
mod hold;
mod latch;
mod lock;
mod signals;
mod trace;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Run};
use crate::failure::{EXIT_ERROR, Failure};

/// Parses the process's arguments, runs the subcommand and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(Failure::error(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(run(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => report(failure),
    }
}

/// Runs a parsed command line; `Ok` carries the exit code of a run that went as intended
/// (including a CMD's own non-zero code).
pub async fn run(cli: &Cli) -> Result<u8, Failure> {
    let mut signals = signals::Signals::new()?;
    let (what, traced) = cli.resolve();
    let trace = trace::CliTrace::new(traced);
    match what {
        Run::Lock(args) => lock::run(args, &cli.global, &trace, &mut signals).await,
        Run::Elect(args) => elect::run(args, &cli.global, &trace, &mut signals).await,
        Run::Bench(args) => bench::run(args, &cli.global).await,
    }
}

fn report(failure: Failure) -> ExitCode {
    if failure.message.is_some() {
        eprintln!("{failure}");
    }
    ExitCode::from(failure.code)
}

/// `--help` and `--version` print and exit 0; a bad command line prints one line and exits 1.
fn usage_exit(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(EXIT_ERROR)
        }
        _ => report(Failure::error(usage_message(&err.render().to_string()))),
    }
}

/// Condenses clap's multi-line usage error into one line: the error, its tips, and where to look.
pub fn usage_message(rendered: &str) -> String {
    let mut parts = Vec::new();
    let mut command = "etcd-recipes".to_owned();
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") {
            continue;
        }
        if let Some(usage) = line.strip_prefix("Usage: ") {
            command = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with('[') && !w.starts_with('<') && !w.starts_with('-'))
                .collect::<Vec<_>>()
                .join(" ");
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
    }
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(&part);
    }
    format!("{message}; see '{command} --help'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_become_one_line() {
        let err = Cli::try_parse_from(["etcd-recipes", "lock", "job", "--bogus"]).err();
        let text = usage_message(&err.map(|e| e.render().to_string()).unwrap_or_default());
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("unexpected argument '--bogus' found"), "{text}");
        assert!(text.ends_with("see 'etcd-recipes lock --help'"), "{text}");

        let err = Cli::try_parse_from(["etcd-recipes", "lock", "job", "--strategy", "fancy"]).err();
        let text = usage_message(&err.map(|e| e.render().to_string()).unwrap_or_default());
        assert!(text.contains("invalid value 'fancy'") && text.contains("mutex"), "{text}");
    }
}
