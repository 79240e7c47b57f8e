//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run` calls only this).
//!
//! 1. installs every pinned etcd release (the harness does it; nothing else need be on the machine);
//! 2. `cargo fmt --check` and `cargo clippy --workspace --all-targets -- -D warnings`;
//! 3. every workspace test against etcd 3.5.1 (codegen freshness included);
//! 4. every example in `crates/*/examples/`, each against a fresh etcd from the harness;
//! 5. the server-facing tests again against etcd 3.4.23;
//! 6. fails if any etcd process started from the harness's binaries outlived the tests.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail, ensure};
use etcd_harness::{ClusterConfig, EtcdBinaries, EtcdCluster, EtcdVersion};

/// The crates whose tests talk to etcd; they run once per supported release.
const SERVER_TEST_CRATES: &[&str] = &["etcd-harness", "etcd-recipes-cli", "etcd-tests"];

pub(crate) fn run(quick: bool) -> Result<()> {
    step("install etcd releases");
    let mut binaries = Vec::new();
    for version in EtcdVersion::ALL {
        let bins = EtcdBinaries::find_or_install(version)?;
        println!("etcd {version}: {}", bins.etcd.display());
        binaries.push(bins.etcd);
    }
    let before = etcd_pids(&binaries);

    if !quick {
        step("cargo fmt --check");
        cargo(&["fmt", "--all", "--check"], None)?;
        step("cargo clippy");
        cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], None)?;
    }

    step("tests against etcd 3.5.1");
    cargo(&["test", "--workspace", "--no-fail-fast"], Some(EtcdVersion::V3_5_1))?;

    step("examples against etcd 3.5.1");
    run_examples()?;

    step("server tests against etcd 3.4.23");
    let mut args = vec!["test", "--no-fail-fast"];
    for krate in SERVER_TEST_CRATES {
        args.extend(["-p", krate]);
    }
    cargo(&args, Some(EtcdVersion::V3_4_23))?;

    step("no etcd process left behind");
    let leaked: Vec<_> = etcd_pids(&binaries).difference(&before).copied().collect();
    ensure!(leaked.is_empty(), "etcd processes outlived the tests: {leaked:?}");
    println!("none");
    Ok(())
}

/// How long one example may run.
const EXAMPLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs every `crates/<crate>/examples/<name>.rs` with `ETCD_ENDPOINTS` pointing at a fresh etcd.
fn run_examples() -> Result<()> {
    let root = crate::codegen::workspace_root();
    let mut examples = Vec::new();
    for krate in std::fs::read_dir(root.join("crates"))? {
        let krate = krate?.path();
        let Ok(entries) = std::fs::read_dir(krate.join("examples")) else { continue };
        let name = krate.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for e in entries {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "rs") {
                let example = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                examples.push((name.clone(), example));
            }
        }
    }
    examples.sort();
    // Build them all first, so the per-example time limit below counts only the run.
    cargo(&["build", "--quiet", "--workspace", "--examples"], None)?;
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for (krate, example) in examples {
        let cluster = EtcdCluster::start(ClusterConfig::default().with_version(EtcdVersion::V3_5_1))?;
        println!("-- {krate} example {example} against {}", cluster.endpoints().join(","));
        // coreutils `timeout` kills the whole process group (cargo and the example) when an
        // example hangs, so a stuck example fails CI in minutes instead of at its overall limit.
        let status = Command::new("timeout")
            .args(["-k", "5", &EXAMPLE_LIMIT.as_secs().to_string()])
            .arg(&cargo_bin)
            .args(["run", "--quiet", "-p", &krate, "--example", &example])
            .env("ETCD_ENDPOINTS", cluster.endpoints().join(","))
            .current_dir(&root)
            .status()?;
        ensure!(status.success(), "example {krate}/{example} failed or ran over {EXAMPLE_LIMIT:?} ({status})");
    }
    Ok(())
}

fn step(name: &str) {
    println!("\n==> {name}");
}

fn cargo(args: &[&str], version: Option<EtcdVersion>) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(crate::codegen::workspace_root());
    if let Some(v) = version {
        cmd.env(etcd_harness::ETCD_VERSION_ENV, v.as_str());
    }
    let status = cmd.status()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Pids of running processes whose executable is one of `binaries`.
fn etcd_pids(binaries: &[PathBuf]) -> BTreeSet<u32> {
    let wanted: Vec<_> = binaries.iter().filter_map(|b| b.canonicalize().ok()).collect();
    let Ok(proc) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    proc.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        wanted.contains(&exe).then_some(pid)
    })
    .collect()
}
