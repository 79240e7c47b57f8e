//! `cargo xtask compare [--full] [--fsync]`: the main job. Runs the benches' `report` target
//! (`cargo bench -p etcd-benches --bench report`), which starts a local etcd, compares every lock
//! strategy and etcd-client's server-side lock at each contention level, prints the summary table,
//! ratios and targets, writes `target/lock-report/report.md` with SVG plots, and rewrites the
//! README's results section (between its `bench-results` markers) from the same run.

use std::process::Command;

use anyhow::{Result, bail};

pub(crate) fn run(full: bool, fsync: bool) -> Result<()> {
    let root = crate::codegen::workspace_root();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // `--readme`: the run rewrites the README's results section itself (never copied by hand).
    cmd.args(["bench", "-p", "etcd-benches", "--bench", "report", "--", "--readme"]).current_dir(&root);
    if full {
        cmd.arg("--full");
    }
    if fsync {
        cmd.arg("--fsync");
    }
    // etcd-client (the peer) runs protoc in its build script; benches/protoc finds one.
    if std::env::var_os("PROTOC").is_none() {
        cmd.env("PROTOC", root.join("benches").join("protoc"));
    }
    eprintln!(
        "compare: {} run{}; the first run builds the benches in release mode (a few minutes)",
        if full { "full" } else { "short" },
        if fsync { " with fsync on" } else { "" }
    );
    let status = cmd.status()?;
    if !status.success() {
        bail!("the comparison failed ({status})");
    }
    Ok(())
}
