//! End-to-end tests of the harness against real etcd (the version comes from `ETCD_VERSION`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etcd_harness::{ClusterConfig, Error, EtcdBinaries, EtcdCluster, EtcdVersion, detect_version};

/// Environment variable that turns [`leak_child_mode`] into a child-process helper.
const LEAK_MODE_ENV: &str = "ETCD_HARNESS_TEST_LEAK_MODE";
/// Prefix of the line on which the child reports its cluster directory and etcd pids.
const PIDS_PREFIX: &str = "ETCD_HARNESS_TEST_PIDS:";

/// `etcdctl put` with retries (a fresh leader election may make the first attempts fail).
fn put(cluster: &EtcdCluster, key: &str, value: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.run_etcdctl(["--command-timeout=3s", "put", key, value]) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key} failed, retrying: {e}");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `etcdctl get --print-value-only` (linearizable) through the cluster's live endpoints.
fn get(cluster: &EtcdCluster, key: &str) -> Result<String> {
    let out = cluster.run_etcdctl(["--command-timeout=5s", "get", key, "--print-value-only"])?;
    Ok(out.trim().to_owned())
}

/// A serializable read answered by member `index` alone, retried until it returns `expected`.
fn local_get_eventually(cluster: &EtcdCluster, index: usize, key: &str, expected: &str) -> Result<()> {
    let endpoint = cluster.member(index)?.client_url().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = cluster
            .binaries()
            .etcdctl_command([&endpoint])
            .args(["get", key, "--print-value-only", "--consistency=s"])
            .output()?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && value == expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("member {index} never returned {key}={expected} (last: {value:?})");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `true` if `pid` no longer exists (or is a zombie waiting to be reaped).
fn pid_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name: "123 (etcd) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Makes this process the reaper of orphaned descendants, so the etcds of a dead child test
/// binary are reparented to us (and reaped below) instead of to PID 1, which in some containers
/// never reaps zombies.
fn become_child_subreaper() -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    ensure!(rc == 0, "PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Reaps `pid` if it is a dead child of ours; `true` if it was reaped now.
fn try_reap(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a specific pid only touches `status`.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// Waits until every pid is dead; reaps those reparented to us (see [`become_child_subreaper`]).
fn assert_pids_gone(pids: &[u32]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut remaining: Vec<u32> = pids.to_vec();
    loop {
        remaining.retain(|&pid| {
            let reaped = try_reap(pid);
            !reaped && std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if remaining.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            // Zombies that are not ours to reap are dead all the same.
            let alive: Vec<u32> = remaining.iter().copied().filter(|&p| !pid_is_gone(p)).collect();
            ensure!(alive.is_empty(), "etcd processes outlived their parent: {alive:?}");
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn single_member_round_trip() -> Result<()> {
    let expected = EtcdVersion::from_env()?;
    let cluster = EtcdCluster::single()?;
    assert_eq!(cluster.len(), 1);
    assert_eq!(cluster.version(), expected);
    assert_eq!(detect_version(&cluster.binaries().etcd)?, expected.as_str());
    cluster.wait_healthy(0, Duration::from_secs(5))?;
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].starts_with("http://127.0.0.1:"), "{endpoints:?}");

    let out = cluster.etcdctl().args(["put", "greeting", "hello"]).output()?;
    ensure!(out.status.success(), "put failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&cluster, "greeting")?, "hello");

    let member = &cluster.members()[0];
    assert_eq!(member.name(), "m0");
    assert!(member.pid().is_some());
    assert!(member.data_dir().join("member").is_dir());
    assert!(cluster.log_tail(0, 30).lines().count() > 0);
    assert_eq!(cluster.leader_index(), Some(0));

    let dir = cluster.dir().to_owned();
    let pid = member.pid().context("no pid")?;
    drop(cluster);
    assert!(pid_is_gone(pid), "etcd {pid} survived the drop");
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    Ok(())
}

#[test]
fn three_members_survive_a_kill_and_restart() -> Result<()> {
    let cluster = EtcdCluster::three()?;
    assert_eq!(cluster.len(), 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10))?;
    assert!(leader < 3);
    assert_eq!(cluster.leader_index(), Some(leader));
    put(&cluster, "before", "1")?;

    // Kill the leader: the other two must elect a new one and keep accepting writes.
    let pid = cluster.members()[leader].pid().context("leader has no pid")?;
    cluster.kill(leader)?;
    assert!(!cluster.is_running(leader));
    assert!(pid_is_gone(pid));
    assert_eq!(cluster.running_endpoints().len(), 2);
    put(&cluster, "during", "2")?;
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10))?;
    assert_ne!(new_leader, leader);

    // Restart it with the same data dir and ports: it must hold the old data and catch up.
    cluster.restart(leader)?;
    assert!(cluster.is_running(leader));
    cluster.wait_all_healthy(Duration::from_secs(10))?;
    local_get_eventually(&cluster, leader, "before", "1")?;
    local_get_eventually(&cluster, leader, "during", "2")?;
    put(&cluster, "after", "3")?;
    assert_eq!(get(&cluster, "after")?, "3");

    // A graceful stop of a follower also works.
    let follower = (0..3).find(|&i| Some(i) != cluster.leader_index()).context("no follower")?;
    cluster.stop(follower)?;
    assert!(!cluster.is_running(follower));
    put(&cluster, "stopped", "4")?;
    cluster.restart(follower)?;
    local_get_eventually(&cluster, follower, "stopped", "4")?;
    Ok(())
}

#[test]
fn pause_and_resume() -> Result<()> {
    let cluster = EtcdCluster::single()?;
    cluster.pause(0)?;
    assert!(cluster.is_running(0));
    assert!(cluster.members()[0].is_paused());
    match cluster.wait_healthy(0, Duration::from_millis(1500)) {
        Err(Error::Timeout { .. }) => {}
        other => bail!("a paused member should not be healthy, got {other:?}"),
    }
    cluster.resume(0)?;
    assert!(!cluster.members()[0].is_paused());
    cluster.wait_healthy(0, Duration::from_secs(10))?;
    put(&cluster, "k", "v")?;
    assert_eq!(get(&cluster, "k")?, "v");
    // Drop must also work on a paused member.
    cluster.pause(0)?;
    Ok(())
}

#[test]
fn cluster_outlives_the_thread_that_started_it() -> Result<()> {
    let cluster =
        thread::spawn(EtcdCluster::single).join().map_err(|_| anyhow::anyhow!("starter thread panicked"))??;
    // PDEATHSIG would have fired by now if etcd had been forked from the (finished) thread.
    thread::sleep(Duration::from_millis(500));
    assert!(cluster.is_running(0), "{}", cluster.log_tail(0, 30));
    cluster.wait_healthy(0, Duration::from_secs(5))?;
    put(&cluster, "k", "v")?;
    Ok(())
}

#[test]
fn bad_flags_fail_with_the_log_tail() -> Result<()> {
    let config = ClusterConfig::default().with_extra_arg("--no-such-flag-for-etcd-harness");
    match EtcdCluster::start(config) {
        Err(e @ Error::StartFailed { .. }) => {
            let message = e.to_string();
            assert!(message.contains("no-such-flag-for-etcd-harness"), "{message}");
            Ok(())
        }
        other => bail!("expected StartFailed, got {other:?}"),
    }
}

#[test]
fn cluster_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EtcdCluster>();
    assert_send_sync::<EtcdBinaries>();
    assert_send_sync::<Error>();
}

#[test]
fn stale_cluster_dirs_are_swept() -> Result<()> {
    let make = |locked: bool| -> Result<(tempfile::TempDir, std::fs::File)> {
        let dir = tempfile::Builder::new().prefix("etcd-harness-sweeptest-").tempdir()?;
        let lock = std::fs::File::create(dir.path().join(".owner.lock"))?;
        if locked {
            lock.lock()?;
        }
        // Old enough to be considered.
        let two_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(120);
        std::fs::File::open(dir.path())?.set_modified(two_minutes_ago)?;
        Ok((dir, lock))
    };
    let (dead, _dead_lock) = make(false)?;
    let (alive, _alive_lock) = make(true)?;
    let (young, _young_lock) = make(false)?;
    std::fs::File::open(young.path())?.set_modified(std::time::SystemTime::now())?;

    etcd_harness::remove_stale_cluster_dirs();
    assert!(!dead.path().exists(), "a dir with a free owner lock must be swept");
    assert!(alive.path().exists(), "a dir whose owner holds the lock must stay");
    assert!(young.path().exists(), "a dir younger than a minute must stay");
    Ok(())
}

#[test]
fn zero_members_is_a_config_error() {
    let result = EtcdCluster::start(ClusterConfig::default().with_members(0));
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
}

#[test]
fn concurrent_installs_agree() -> Result<()> {
    let version = EtcdVersion::from_env()?;
    // Through the default cache (usually already installed).
    let a = thread::spawn(move || EtcdBinaries::find_or_install(version));
    let b = thread::spawn(move || EtcdBinaries::find_or_install(version));
    let a = a.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    let b = b.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
    assert_eq!(a, b);

    // A real, racing install into an empty cache directory, from the kept packages: only an
    // install that found none downloads (so CI does not download on every pass).
    let packages = EtcdBinaries::package_dir(version);
    let kept_before = kept_packages(&packages);
    let cache = tempfile::tempdir()?;
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let dir = cache.path().to_owned();
            thread::spawn(move || EtcdBinaries::ensure_installed_in(version, &dir))
        })
        .collect();
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(detect_version(&results[0].etcd)?, version.as_str());
    assert!(results[0].etcdctl.is_file());
    assert_eq!(results[0].etcdutl.is_some(), version == EtcdVersion::V3_5_1);
    // Only the binaries and the lock file remain; the staging directory is gone.
    let mut names: Vec<String> = std::fs::read_dir(cache.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut expected = vec![".install.lock", "etcd", "etcdctl"];
    if version == EtcdVersion::V3_5_1 {
        expected.push("etcdutl");
    }
    assert_eq!(names, expected);
    let kept_after = kept_packages(&packages);
    assert_eq!(kept_after.len(), if version == EtcdVersion::V3_5_1 { 1 } else { 2 }, "{kept_after:?}");
    if !kept_before.is_empty() {
        assert_eq!(kept_after, kept_before, "the kept packages were downloaded again");
    }
    Ok(())
}

/// The package files kept in `dir`, with their modification times.
fn kept_packages(dir: &std::path::Path) -> Vec<(std::ffi::OsString, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.file_name(), e.metadata().ok()?.modified().ok()?)))
        .collect();
    files.sort();
    files
}

/// Child-process helper for the leak tests; does nothing unless [`LEAK_MODE_ENV`] is set.
#[test]
fn leak_child_mode() -> Result<()> {
    let Ok(mode) = std::env::var(LEAK_MODE_ENV) else {
        return Ok(());
    };
    let cluster = EtcdCluster::start(ClusterConfig::default().with_members(3))?;
    let pids: Vec<String> = cluster.members().iter().filter_map(|m| m.pid()).map(|p| p.to_string()).collect();
    println!("{PIDS_PREFIX}{} {}", cluster.dir().display(), pids.join(" "));
    match mode.as_str() {
        // Unwinding drops the cluster.
        "panic" => panic!("leak test: panicking with a live cluster"),
        // No destructor runs at all: only PDEATHSIG can clean up.
        "forget-panic" => {
            std::mem::forget(cluster);
            panic!("leak test: panicking with a forgotten cluster")
        }
        "forget-exit" => {
            std::mem::forget(cluster);
            std::process::exit(3)
        }
        // Wait for the parent's SIGKILL.
        "sigkill" => {
            thread::sleep(Duration::from_secs(120));
            bail!("leak test: the parent never killed us")
        }
        other => bail!("unknown leak mode {other}"),
    }
}

/// Runs [`leak_child_mode`] in a child copy of this test binary and checks its etcds die.
fn run_leak_child(mode: &str) -> Result<()> {
    become_child_subreaper()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "leak_child_mode", "--nocapture", "--test-threads=1"])
        .env(LEAK_MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        // libtest prints "test leak_child_mode ... " on the same line.
        if let Some((_, rest)) = line?.split_once(PIDS_PREFIX) {
            report = Some(rest.to_owned());
            break;
        }
    }
    let mut fields = report.as_deref().unwrap_or_default().split_whitespace();
    let dir = std::path::PathBuf::from(fields.next().unwrap_or_default());
    let pids = fields.map(str::parse).collect::<Result<Vec<u32>, _>>()?;
    if pids.len() != 3 {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the {mode} child did not report 3 etcd pids: {report:?}");
    }
    if mode == "sigkill" {
        assert!(pids.iter().all(|&p| !pid_is_gone(p)), "etcd died too early");
        child.kill()?; // SIGKILL
    }
    let status = child.wait()?;
    assert!(!status.success(), "the {mode} child should fail, got {status}");
    assert_pids_gone(&pids)?;

    if mode == "panic" {
        assert!(!dir.exists(), "unwinding should have removed {}", dir.display());
    } else {
        // Destructors never ran, so the directory is left; its owner lock must be free now
        // (that is what lets a later run sweep it). Clean up after ourselves.
        let lock = std::fs::File::open(dir.join(".owner.lock"))?;
        ensure!(lock.try_lock().is_ok(), "the dead child's owner lock is still held");
        drop(lock);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

#[test]
fn no_leak_when_the_test_panics() -> Result<()> {
    run_leak_child("panic")
}

#[test]
fn no_leak_when_a_forgotten_cluster_meets_a_panic() -> Result<()> {
    run_leak_child("forget-panic")
}

#[test]
fn no_leak_on_process_exit_without_destructors() -> Result<()> {
    run_leak_child("forget-exit")
}

#[test]
fn no_leak_when_the_test_process_is_sigkilled() -> Result<()> {
    run_leak_child("sigkill")
}
