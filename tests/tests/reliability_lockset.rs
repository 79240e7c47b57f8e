//! The lock-set workload under faults (bounded version; `cargo xtask chaos` runs the long one).
//!
//! Three `lockset_worker` processes loop lock / read / sleep / write counter + 1 / unlock, each
//! through its own loopback proxies, while faults hit the holder, the members and the network.
//!
//! - Fenced (the guard's Txn): zero lost updates in every run, every acknowledged write landed,
//!   and the final counter equals the number of fenced writes that landed. Each strategy gets
//!   its own mix of faults, so that together they cover every kind: holder SIGKILL, holder
//!   SIGSTOPped past its TTL, follower and leader kill/restart, partitions, dropped connections,
//!   latency, explicit and automatic compaction.
//! - Unfenced (plain writes) with a holder paused past its TTL: the lost update happens, the checker
//!   sees it, and the paused holder is told its lock was lost.
//!
//! - Stale holder (`stale_holder_*`): a worker stopped exactly between its read and its write, until
//!   its lease expired and another worker wrote. Fenced, its write is refused for every strategy
//!   (the fence provably fires); unfenced, it lands and the checker counts the lost update.
//! - A semaphore of 2 permits among 4 workers under a holder kill, a pause and a leader kill:
//!   its history is checked against a semaphore of 2 (never 3 holders by their own clocks).
//! - Every run's lock history is checked against a mutex (`etcd_tests::history`), or a semaphore.
//!
//! Every run prints its summary (`cargo test -- --nocapture` shows them).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::{ClusterConfig, EtcdCluster};
use etcd_tests::lockset::{self, Fault, Mode, RunConfig, Strategy, Summary};

const WORKER: &str = env!("CARGO_BIN_EXE_lockset_worker");

/// A 3-member cluster; with `compaction`, etcd also compacts itself every second.
fn three(compaction: bool) -> Result<EtcdCluster> {
    let mut config = ClusterConfig::default().with_members(3);
    if compaction {
        config = config.with_extra_args(["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"]);
    }
    let etcd = EtcdCluster::start(config).context("starting a 3-member etcd")?;
    etcd.wait_for_leader(Duration::from_secs(30))?;
    Ok(etcd)
}

/// A fenced run through one round of `faults` (then a quiet stretch); the fenced invariants hold.
fn fenced(strategy: Strategy, faults: &[Fault], compaction: bool) -> Result<Summary> {
    let etcd = three(compaction)?;
    let mut cfg = RunConfig::new(WORKER, strategy, Mode::Fenced);
    cfg.faults = faults.to_vec();
    cfg.fault_rounds = Some(1);
    cfg.fault_interval = Duration::from_millis(1500);
    cfg.duration = Duration::from_secs(90);
    cfg.seed = strategy as u64 + 7;
    let summary = lockset::run(&etcd, &cfg)?;
    println!("{summary}");
    ensure!(summary.is_safe(), "fenced writes lost updates:\n{summary}");
    ensure!(summary.acknowledged > 0, "no write was acknowledged:\n{summary}");
    ensure!(summary.paused_holders_told(), "a paused holder was not told it lost the lock:\n{summary}");
    for f in faults {
        ensure!(summary.faults.get(f).copied().unwrap_or(0) >= 1, "fault {f} was not injected:\n{summary}");
    }
    Ok(summary)
}

#[test]
fn fenced_mutex_survives_holder_kill_pause_leader_loss_and_compaction() -> Result<()> {
    fenced(Strategy::Mutex, &[Fault::Kill, Fault::Pause, Fault::Leader, Fault::Compact], true).map(drop)
}

#[test]
fn fenced_naive_survives_pause_partition_member_loss_and_compaction() -> Result<()> {
    fenced(Strategy::Naive, &[Fault::Pause, Fault::Partition, Fault::Member, Fault::Compact], true).map(drop)
}

#[test]
fn fenced_lease_ttl_survives_holder_kill_partition_leader_loss_and_drops() -> Result<()> {
    fenced(Strategy::LeaseTtl, &[Fault::Kill, Fault::Partition, Fault::Leader, Fault::Drop], false).map(drop)
}

#[test]
fn fenced_rpc_survives_pause_holder_kill_member_loss_latency_and_drops() -> Result<()> {
    fenced(Strategy::Rpc, &[Fault::Pause, Fault::Kill, Fault::Member, Fault::Delay, Fault::Drop], false).map(drop)
}

/// A semaphore of 2 permits shared by 4 workers, through a holder SIGKILL, a holder SIGSTOPped
/// past its TTL and a leader kill: by the holders' own clocks never 3 holders at once, both
/// permits in use together, the paused holder told it lost its permit, every acknowledged write
/// landed. (Two holders race on the counter by design, so its lost updates are not checked.)
#[test]
fn semaphore_of_two_never_has_three_holders_through_kill_pause_and_leader_loss() -> Result<()> {
    let etcd = three(false)?;
    let mut cfg = RunConfig::new(WORKER, Strategy::Semaphore, Mode::Fenced);
    cfg.permits = 2;
    cfg.workers = 4;
    cfg.faults = vec![Fault::Kill, Fault::Pause, Fault::Leader];
    cfg.fault_rounds = Some(1);
    cfg.fault_interval = Duration::from_millis(1500);
    cfg.duration = Duration::from_secs(90);
    cfg.seed = 23;
    let summary = lockset::run(&etcd, &cfg)?;
    println!("{summary}");
    ensure!(summary.history.is_valid(), "more than 2 holders, or tokens out of order:\n{summary}");
    ensure!(summary.history.max_holders == 2, "the two permits were never held together:\n{summary}");
    ensure!(summary.missing_acknowledged.is_empty(), "acknowledged writes vanished:\n{summary}");
    ensure!(summary.paused_holders() >= 1, "no pause hit a holder:\n{summary}");
    ensure!(summary.paused_holders_told(), "a paused holder was not told it lost its permit:\n{summary}");
    for f in &cfg.faults {
        ensure!(summary.faults.get(f).copied().unwrap_or(0) >= 1, "fault {f} was not injected:\n{summary}");
    }
    Ok(())
}

/// Unfenced writes, holders paused past their TTL until an update is lost (at most 4 pauses):
/// the checker must see the lost update, and every paused holder must be told it lost the lock.
fn unfenced_pause(strategy: Strategy) -> Result<()> {
    let etcd = EtcdCluster::start(ClusterConfig::default()).context("starting etcd")?;
    let mut cfg = RunConfig::new(WORKER, strategy, Mode::Unfenced);
    cfg.faults = vec![Fault::Pause];
    cfg.fault_rounds = Some(4);
    cfg.stop_faults_after_lost_update = true;
    cfg.fault_interval = Duration::from_millis(500);
    cfg.hold_ms = (200, 500);
    cfg.quiet_tail = Duration::from_secs(2);
    cfg.duration = Duration::from_secs(90);
    cfg.seed = strategy as u64 + 11;
    let summary = lockset::run(&etcd, &cfg)?;
    println!("{summary}");
    ensure!(summary.paused_holders() >= 1, "no pause hit a holder:\n{summary}");
    ensure!(summary.lost_updates > 0, "the checker did not detect the lost update:\n{summary}");
    ensure!(summary.missing_acknowledged.is_empty(), "acknowledged writes vanished:\n{summary}");
    ensure!(summary.paused_holders_told(), "a paused holder was not told it lost the lock:\n{summary}");
    // The lock itself stays a mutex: the paused holder's promise ended before anyone else got in.
    ensure!(summary.history.is_valid(), "the lock history breaks the mutex model:\n{summary}");
    Ok(())
}

#[test]
fn unfenced_mutex_loses_an_update_when_a_holder_pauses_past_its_ttl() -> Result<()> {
    unfenced_pause(Strategy::Mutex)
}

#[test]
fn unfenced_naive_loses_an_update_when_a_holder_pauses_past_its_ttl() -> Result<()> {
    unfenced_pause(Strategy::Naive)
}

#[test]
fn unfenced_lease_ttl_loses_an_update_when_a_holder_pauses_past_its_ttl() -> Result<()> {
    unfenced_pause(Strategy::LeaseTtl)
}

#[test]
fn unfenced_rpc_loses_an_update_when_a_holder_pauses_past_its_ttl() -> Result<()> {
    unfenced_pause(Strategy::Rpc)
}

/// The deterministic stale holder ([`Fault::Stale`]): one worker is stopped exactly between its
/// read and its write, until its lease expired and another worker wrote; then it writes.
fn stale_holder(strategy: Strategy, mode: Mode) -> Result<Summary> {
    let etcd = EtcdCluster::start(ClusterConfig::default()).context("starting etcd")?;
    let mut cfg = RunConfig::new(WORKER, strategy, mode);
    cfg.faults = vec![Fault::Stale];
    cfg.fault_rounds = Some(1);
    cfg.fault_interval = Duration::from_millis(300);
    cfg.hold_ms = (600, 900);
    cfg.quiet_tail = Duration::from_secs(2);
    cfg.duration = Duration::from_secs(90);
    cfg.seed = strategy as u64 + 23;
    let summary = lockset::run(&etcd, &cfg)?;
    println!("{summary}");
    let stale: Vec<_> = summary.pauses.iter().filter(|p| p.in_write_window).collect();
    ensure!(!stale.is_empty(), "no worker was stopped between its read and its write:\n{summary}");
    ensure!(summary.history.is_valid(), "the lock history breaks the mutex model:\n{summary}");
    Ok(summary)
}

/// Fenced: the stale write is refused (the fence fired), and nothing is lost.
fn stale_holder_fenced(strategy: Strategy) -> Result<()> {
    let summary = stale_holder(strategy, Mode::Fenced)?;
    for p in summary.pauses.iter().filter(|p| p.in_write_window) {
        ensure!(p.stale_write == Some("refused"), "the stale write was {:?}, not refused:\n{summary}", p.stale_write);
    }
    ensure!(summary.refused >= 1 && summary.is_safe(), "the fence did not hold:\n{summary}");
    Ok(())
}

#[test]
fn stale_holder_fenced_write_is_refused_mutex() -> Result<()> {
    stale_holder_fenced(Strategy::Mutex)
}

#[test]
fn stale_holder_fenced_write_is_refused_naive() -> Result<()> {
    stale_holder_fenced(Strategy::Naive)
}

#[test]
fn stale_holder_fenced_write_is_refused_lease_ttl() -> Result<()> {
    stale_holder_fenced(Strategy::LeaseTtl)
}

#[test]
fn stale_holder_fenced_write_is_refused_rpc() -> Result<()> {
    stale_holder_fenced(Strategy::Rpc)
}

/// Unfenced: the stale write lands over another worker's, and the checker counts the lost update
/// (while the lock history itself stays valid: the lock was not at fault, the write was).
#[test]
fn stale_holder_unfenced_write_is_a_lost_update_the_checker_flags() -> Result<()> {
    let summary = stale_holder(Strategy::Mutex, Mode::Unfenced)?;
    for p in summary.pauses.iter().filter(|p| p.in_write_window) {
        ensure!(p.stale_write == Some("ok"), "the stale write was {:?}, not applied:\n{summary}", p.stale_write);
    }
    ensure!(summary.lost_updates >= 1, "the checker missed the lost update:\n{summary}");
    Ok(())
}

/// The checker itself: a history with a stale write is a lost update; a serial one is not.
#[test]
fn the_checker_counts_lost_updates_from_op_records() {
    use etcd_tests::lockset::{Event, LogLine, PauseRecord, check};
    use std::collections::BTreeMap;
    let line = |t, event| LogLine { t_ms: t, event };
    let ok = |op: &str, read, token| Event::Ok { op: op.into(), read, written: read + 1, token };
    let logs = vec![
        (
            "a".to_owned(),
            vec![
                line(0, Event::Locking),
                line(0, Event::Acquired { token: 5, valid_until_ms: Some(5_000) }),
                line(10, ok("a-1", 0, 5)),
                line(11, Event::Unlocking { token: 5 }),
                line(11, Event::Released),
                line(12, Event::Done { ops: 1 }),
            ],
        ),
        (
            "b".to_owned(),
            vec![
                line(1, Event::Locking),
                line(20, Event::Acquired { token: 9, valid_until_ms: Some(5_000) }),
                line(30, ok("b-1", 1, 9)),
                line(31, Event::Unlocking { token: 9 }),
                line(31, Event::Released),
                line(32, Event::Done { ops: 1 }),
            ],
        ),
    ];
    let serial: BTreeMap<String, u64> = [("a-1".to_owned(), 1), ("b-1".to_owned(), 2)].into();
    let mut s = Summary { mode: "fenced".into(), ..Summary::default() };
    check(&mut s, &logs, 2, &serial);
    assert!(s.is_safe(), "{s}");
    assert_eq!((s.acknowledged, s.landed, s.lost_updates, s.max_no_holder), (2, 2, 0, Duration::from_millis(9)));

    // b read 0 too (a stale read): both wrote 1, the counter says 1, one increment is lost.
    let stale: BTreeMap<String, u64> = [("a-1".to_owned(), 1), ("b-1".to_owned(), 1)].into();
    let mut s = Summary { mode: "unfenced".into(), ..Summary::default() };
    check(&mut s, &logs, 1, &stale);
    assert!(!s.is_safe());
    assert_eq!((s.lost_updates, s.duplicate_values), (1, 1));

    // An acknowledged write without its op record is reported.
    let mut s = Summary { mode: "fenced".into(), ..Summary::default() };
    check(&mut s, &logs, 1, &[("a-1".to_owned(), 1)].into());
    assert_eq!(s.missing_acknowledged, ["b-1"]);
    assert!(!s.is_safe());

    // b let in while a still holds (a lock that skips the line): the history checker says so.
    let mut overlapping = logs.clone();
    overlapping[1].1[1].t_ms = 5;
    let mut s = Summary { mode: "fenced".into(), ..Summary::default() };
    check(&mut s, &overlapping, 2, &serial);
    assert!(!s.is_safe() && s.history.violations.len() == 1, "{s}");

    // A holder paused in the very millisecond it logged its acquisition (clocks in whole ms):
    // its lost-lock line after the resume still counts, the acquisition before the stop does not.
    let paused = vec![(
        "c".to_owned(),
        vec![
            line(100, Event::Locking),
            line(100, Event::Acquired { token: 4, valid_until_ms: Some(3_000) }),
            line(100, Event::Read { value: 0, token: 4, valid_until_ms: Some(3_000) }),
            line(4_200, ok("c-1", 0, 4)),
            line(4_201, Event::Unlocking { token: 4 }),
            line(4_202, Event::LostLock { token: 4, reasons: "unlock-not-owner".into() }),
            line(4_203, Event::Done { ops: 1 }),
        ],
    )];
    let mut s = Summary { mode: "unfenced".into(), ..Summary::default() };
    s.pauses.push(PauseRecord {
        worker: "c".into(),
        paused_ms: 100,
        resumed_ms: 4_100,
        lines_seen: 3,
        was_holding: true,
        in_write_window: true,
        told_lost: false,
        stale_write: None,
    });
    check(&mut s, &paused, 1, &[("c-1".to_owned(), 1)].into());
    assert!(s.paused_holders_told(), "{s}");
    assert_eq!(s.pauses[0].stale_write, Some("ok"));

    // Worker lines survive a round trip through their text form.
    for e in [
        Event::Locking,
        Event::Acquired { token: 3, valid_until_ms: None },
        Event::Read { value: 1, token: 3, valid_until_ms: Some(99) },
        Event::Unlocking { token: 3 },
        Event::Indeterminate { op: "w-1".into(), read: 3, written: 4, error: "etcd unavailable: x y".into() },
        Event::LostLock { token: 7, reasons: "refused,session:LeaseLost(Deadline)".into() },
        Event::Error { stage: "lock".into(), error: "session is expired".into() },
    ] {
        let l = line(42, e);
        assert_eq!(l.to_string().parse::<LogLine>().ok(), Some(l));
    }
}
