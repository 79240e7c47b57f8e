//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run` calls only this).
//!
//! 1. installs every pinned etcd release (the harness does it; nothing else need be on the machine);
//! 2. `cargo fmt --check` and `cargo clippy --workspace --all-targets -- -D warnings`, and
//!    `cargo package` of the published crates (what each package must carry, and nothing else);
//! 3. every workspace test against etcd 3.5.1 (codegen freshness included);
//! 4. every bench target once in its smoke mode, and every example in `crates/*/examples/`, each
//!    against a fresh etcd from the harness;
//!    etcd-wire built without its `tls` feature: no rustls or ring in its tree, `https://`
//!    refused with a typed error, and an example working against etcd 3.5.1 over plaintext;
//! 5. every test binary (no doctests) and the examples again against etcd 3.4.23;
//! 6. fails if any etcd process started from the harness's binaries, lock worker, `etcd-recipes`
//!    CLI or example outlived the tests (and kills it).
//!
//! Every step runs even when an earlier one failed; the run fails at the end, naming each
//! failed step.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail, ensure};
use etcd_harness::{ClusterConfig, EtcdBinaries, EtcdCluster, EtcdVersion};

pub(crate) fn run(quick: bool) -> Result<()> {
    step("install etcd releases");
    let mut binaries = Vec::new();
    for version in EtcdVersion::ALL {
        let bins = EtcdBinaries::find_or_install(version)?;
        println!("etcd {version}: {}", bins.etcd.display());
        binaries.push(bins.etcd);
    }
    let target = crate::codegen::workspace_root().join("target");
    let before = leftover_pids(&binaries, &target);

    // Every step runs even when an earlier one failed, so one run reports every failure and
    // the leak check always runs; the failures are summed up at the end.
    let mut failed = Vec::new();
    let mut check = |name: &str, result: Result<()>| {
        if let Err(e) = result {
            println!("\n==> FAILED: {name}: {e:#}");
            failed.push(name.to_owned());
        }
    };
    if !quick {
        step("cargo fmt --check");
        check("cargo fmt --check", cargo(&["fmt", "--all", "--check"], None));
        step("cargo clippy");
        check("cargo clippy", cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], None));
        step("cargo package");
        check("cargo package", check_packages());
    }

    step("tests against etcd 3.5.1");
    check("tests against 3.5.1", cargo(&["test", "--workspace", "--no-fail-fast"], Some(EtcdVersion::V3_5_1)));

    // Every bench target once, in its smoke mode (`cargo test` runs them without `--bench`), so
    // none can rot unnoticed; the measuring runs stay behind `cargo xtask compare`.
    step("bench targets, smoke mode, against etcd 3.5.1");
    check(
        "bench smoke runs",
        cargo(&["test", "--workspace", "--benches", "--no-fail-fast"], Some(EtcdVersion::V3_5_1)),
    );

    step("examples against etcd 3.5.1");
    check("examples against 3.5.1", run_examples(EtcdVersion::V3_5_1));

    step("etcd-wire without TLS, against etcd 3.5.1");
    check("etcd-wire without TLS", without_tls());

    // The same package selection as the 3.5.1 step, so cargo unifies features alike and reuses
    // every test binary (selecting only the server-facing crates rebuilt half the workspace);
    // `--tests` leaves out the doctests and examples, which don't talk to etcd here.
    step("tests against etcd 3.4.23");
    check(
        "tests against 3.4.23",
        cargo(&["test", "--workspace", "--tests", "--no-fail-fast"], Some(EtcdVersion::V3_4_23)),
    );

    step("examples against etcd 3.4.23");
    check("examples against 3.4.23", run_examples(EtcdVersion::V3_4_23));

    step("no etcd, worker, CLI or example process left behind");
    let leaked: Vec<_> = leftover_pids(&binaries, &target).difference(&before).copied().collect();
    if leaked.is_empty() {
        println!("none");
    } else {
        for pid in &leaked {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            println!("left behind: pid {pid} ({}); killing it", exe.display());
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        failed.push(format!("processes outlived the tests: {leaked:?}"));
    }
    ensure!(failed.is_empty(), "failed: {}", failed.join("; "));
    Ok(())
}

/// The crates meant for crates.io, and the files each package must carry (the generated code
/// and the docs pages that `include_str!` pulls in among them).
const PUBLISHED: &[(&str, &[&str])] = &[
    ("etcd-wire", &["Cargo.toml", "README.md", "MIGRATION.md", "src/lib.rs", "src/generated/etcdserverpb.rs"]),
    ("etcd-recipes", &["Cargo.toml", "README.md", "src/lib.rs"]),
];

/// Packages the published crates together (`--no-verify`: the test steps build the same
/// sources) and checks each package's file list: everything it needs, no tests, benches or
/// large files.
fn check_packages() -> Result<()> {
    let mut args = vec!["package", "--no-verify", "--allow-dirty"];
    for (krate, _) in PUBLISHED {
        args.extend(["-p", krate]);
    }
    cargo(&args, None)?;
    let root = crate::codegen::workspace_root();
    for (krate, needed) in PUBLISHED {
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["package", "--list", "--allow-dirty", "-p", krate])
            .current_dir(&root)
            .output()?;
        ensure!(
            out.status.success(),
            "`cargo package --list -p {krate}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        for file in *needed {
            ensure!(files.iter().any(|f| f == file), "the {krate} package lacks {file}");
        }
        let dir = root.join("crates").join(krate);
        for file in &files {
            ensure!(
                !file.starts_with("tests/") && !file.starts_with("benches/") && !file.ends_with(".log"),
                "the {krate} package carries {file}, which no user needs"
            );
            let size = std::fs::metadata(dir.join(file)).map(|m| m.len()).unwrap_or(0);
            ensure!(size <= 1 << 20, "the {krate} package carries {file} of {size} bytes");
        }
        println!("{krate}: {} files", files.len());
    }
    Ok(())
}

/// How long one example may run.
const EXAMPLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs every `crates/<crate>/examples/<name>.rs` with `ETCD_ENDPOINTS` pointing at a fresh etcd
/// of `version`.
fn run_examples(version: EtcdVersion) -> Result<()> {
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
    // Build them all first, as the workspace (the features the test steps built with), and run
    // the binaries: `cargo run -p <crate>` would build each crate again with its own features,
    // and the per-example time limit below counts only the run.
    cargo(&["build", "--quiet", "--workspace", "--examples"], None)?;
    for (krate, example) in examples {
        let binary = root.join("target/debug/examples").join(&example);
        ensure!(binary.exists(), "example {krate}/{example} was not built at {}", binary.display());
        run_example(&format!("{krate}/{example}"), Command::new(binary), version)?;
    }
    Ok(())
}

/// Runs one example (`command`) against a fresh single etcd of `version`, within [`EXAMPLE_LIMIT`].
fn run_example(name: &str, command: Command, version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::start(ClusterConfig::default().with_version(version))?;
    println!("-- example {name} against {}", cluster.endpoints().join(","));
    // coreutils `timeout` kills the whole process group (cargo and the example) when an example
    // hangs, so a stuck example fails CI in minutes instead of at its overall limit.
    let status = Command::new("timeout")
        .args(["-k", "5", &EXAMPLE_LIMIT.as_secs().to_string()])
        .arg(command.get_program())
        .args(command.get_args())
        .env("ETCD_ENDPOINTS", cluster.endpoints().join(","))
        .current_dir(crate::codegen::workspace_root())
        .status()?;
    ensure!(status.success(), "example {name} failed or ran over {EXAMPLE_LIMIT:?} ({status})");
    Ok(())
}

/// The crates of the TLS stack, which a build without etcd-wire's `tls` feature must not contain.
const TLS_CRATES: &[&str] = &["rustls", "tokio-rustls", "ring", "rustls-webpki", "webpki-roots", "rustls-native-certs"];

/// etcd-wire as a plaintext user builds it (`default-features = false`): its dependency tree
/// holds no TLS crate, its unit tests pass (among them the typed refusal of `https://`), and
/// an example works against a real etcd 3.5.1.
fn without_tls() -> Result<()> {
    let root = crate::codegen::workspace_root();
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tree = Command::new(&cargo_bin)
        .args(["tree", "-p", "etcd-wire", "--no-default-features", "-e", "normal", "--prefix", "none"])
        .current_dir(&root)
        .output()?;
    ensure!(tree.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8_lossy(&tree.stdout);
    let found: BTreeSet<&str> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| TLS_CRATES.contains(c)).collect();
    ensure!(found.is_empty(), "etcd-wire without `tls` still depends on {found:?}");
    println!("no TLS crate in etcd-wire's tree without `tls`");
    cargo(&["test", "--quiet", "-p", "etcd-wire", "--no-default-features", "--lib"], None)?;
    cargo(&["build", "--quiet", "-p", "etcd-wire", "--no-default-features", "--example", "kv"], None)?;
    let mut example = Command::new(&cargo_bin);
    example.args(["run", "--quiet", "-p", "etcd-wire", "--no-default-features", "--example", "kv"]);
    run_example("etcd-wire/kv without TLS", example, EtcdVersion::V3_5_1)
}

/// Prints a step's header with the time since the first step, so a CI log shows where the
/// suite's minutes go (it must stay well inside CI's limit on 2 cores).
fn step(name: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let at = START.get_or_init(std::time::Instant::now).elapsed().as_secs();
    println!("\n==> {name} (at {}m{:02}s)", at / 60, at % 60);
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

/// The programs CI starts that must not outlive it: besides etcd itself, the lock workers the
/// reliability tests spawn, the `etcd-recipes` CLI and the examples (all under `target`).
const OWN_PROGRAMS: &[&str] = &["lock_worker", "lockset_worker", "etcd-recipes"];

/// Pids of running processes whose executable is one of `binaries`, or one of [`OWN_PROGRAMS`]
/// or an example built under `target` (also after a rebuild replaced the file).
fn leftover_pids(binaries: &[PathBuf], target: &std::path::Path) -> BTreeSet<u32> {
    let wanted: Vec<_> = binaries.iter().filter_map(|b| b.canonicalize().ok()).collect();
    let target = target.canonicalize().unwrap_or_else(|_| target.to_owned());
    let ours = |exe: &std::path::Path| {
        let name = exe.file_name().unwrap_or_default().to_string_lossy();
        let name = name.trim_end_matches(" (deleted)");
        let dir = exe.parent().unwrap_or(exe);
        dir.starts_with(&target) && ((dir.ends_with("examples") && !name.contains('.')) || OWN_PROGRAMS.contains(&name))
    };
    let Ok(proc) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    proc.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        (wanted.contains(&exe) || ours(&exe)).then_some(pid)
    })
    .collect()
}
