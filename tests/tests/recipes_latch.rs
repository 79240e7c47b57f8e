//! LeaderLatch against real etcd: states and hand-overs in one process, re-campaigning after a
//! revoked lease, nothing left behind on close or drop, bad input; and failover between three
//! latch processes (`lockset_worker mode=latch`) under SIGKILL and SIGSTOP of the leader, checked
//! against the participants' own clocks: no two ever report leadership at overlapping instants.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use etcd_harness::ClientProcess;
use etcd_recipes::{Error, LatchState, LeaderLatch};
use etcd_tests::history::{self, Record, Step};
use etcd_tests::lockset::{Event, LogLine, Strategy, WorkerArgs, WorkerMode, now_ms, parse_lines};
use etcd_tests::{eventually, single};
use etcd_wire::{Client, ClientOptions, GetOptions};
use tokio::sync::watch;

const WORKER: &str = env!("CARGO_BIN_EXE_lockset_worker");
const TTL: u64 = 2;
/// What a failover may take beyond the TTL on a loaded 2-core machine: the lease's expiry on the
/// server (checked every 500 ms), the delete event, the next candidate's check. Generous on
/// purpose; the measured times are printed.
const BOUND: Duration = Duration::from_secs(5);
/// Long enough for anything that should happen soon.
const SOON: Duration = Duration::from_secs(30);

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Waits until `rx` shows a state `f` accepts.
async fn until(
    rx: &mut watch::Receiver<LatchState>,
    what: &str,
    f: impl FnMut(&LatchState) -> bool,
) -> Result<LatchState> {
    let seen =
        tokio::time::timeout(SOON, rx.wait_for(f)).await.with_context(|| format!("no {what} within {SOON:?}"))?;
    Ok(seen.context("the latch stopped")?.clone())
}

fn token(state: &LatchState) -> Option<i64> {
    match state {
        LatchState::Leader { token, .. } => Some(*token),
        _ => None,
    }
}

/// Keys under `prefix`, and every lease etcd holds.
async fn left_behind(client: &Client, prefix: &str) -> Result<(usize, usize)> {
    let keys = client.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?.kvs.len();
    Ok((keys, client.leases().await?.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_other_follows_it_and_takes_over_on_close() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let a = LeaderLatch::builder(&client, "latch-pair").value("a").ttl(5).start()?;
    let a_state = until(&mut a.subscribe(), "leadership of a", LatchState::is_leader).await?;
    assert!(a.is_leader());
    let b = LeaderLatch::start(&client, "latch-pair", "b")?;
    let seen =
        until(&mut b.subscribe(), "b following a", |s| matches!(s, LatchState::Follower { leader: Some(_) })).await?;
    let LatchState::Follower { leader: Some(leader) } = seen else { unreachable!() };
    assert_eq!(leader.value_str(), "a");
    let LatchState::Leader { key, token: a_token, .. } = &a_state else { unreachable!() };
    assert_eq!((&leader.key, leader.create_revision), (key, *a_token), "b names a's key");
    assert!(!b.is_leader());

    a.close().await?;
    let b_state = b.wait_leader().await?;
    assert!(token(&b_state) > Some(*a_token), "the token grows: {b_state:?}");
    b.close().await?;
    assert_eq!(left_behind(&client, "latch-pair/").await?, (0, 0), "no key and no lease left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_lost_then_recampaigned_with_a_new_lease_and_token() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let latch = LeaderLatch::builder(&client, "latch-revoke").value("me").ttl(5).start()?;
    let mut rx = latch.subscribe();
    let first = until(&mut rx, "leadership", LatchState::is_leader).await?;
    let kv = client.get("latch-revoke/", GetOptions::new().with_prefix()).await?.kvs;
    ensure!(kv.len() == 1, "one candidate key: {kv:?}");
    let old_lease = kv[0].lease;

    client.lease_revoke(old_lease).await?;
    until(&mut rx, "the loss", |s| *s == LatchState::Lost).await?;
    assert!(!latch.is_leader());
    let second = until(&mut rx, "leadership again", LatchState::is_leader).await?;
    assert!(token(&second) > token(&first), "{first:?} then {second:?}");
    let kv = client.get("latch-revoke/", GetOptions::new().with_prefix()).await?.kvs;
    ensure!(kv.len() == 1 && kv[0].lease != old_lease, "a new key on a new lease: {kv:?}");
    assert_eq!(token(&second), Some(kv[0].create_revision));
    latch.close().await?;
    assert_eq!(left_behind(&client, "latch-revoke/").await?, (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_ends_leadership_and_a_new_term_follows() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let latch = LeaderLatch::builder(&client, "latch-del").ttl(5).start()?;
    let mut rx = latch.subscribe();
    let first = until(&mut rx, "leadership", LatchState::is_leader).await?;
    let LatchState::Leader { key, .. } = &first else { unreachable!() };
    client.delete(key.clone(), etcd_wire::DeleteOptions::new()).await?;
    until(&mut rx, "the loss", |s| *s == LatchState::Lost).await?;
    let second = until(&mut rx, "leadership again", LatchState::is_leader).await?;
    assert!(token(&second) > token(&first));
    latch.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_leader_or_a_follower_leaves_no_key_lease_or_task() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let leader = LeaderLatch::start(&client, "latch-drop", "a")?;
    leader.wait_leader().await?;
    let follower = LeaderLatch::start(&client, "latch-drop", "b")?;
    etcd_tests::wait_for_keys(&client, "latch-drop/", 2).await?;
    let (mut a, mut b) = (leader.subscribe(), follower.subscribe());
    drop(follower);
    drop(leader);
    // The tasks end (their state channels close) once their leases are revoked.
    for rx in [&mut a, &mut b] {
        tokio::time::timeout(SOON, async { while rx.changed().await.is_ok() {} }).await.context("a task still runs")?;
        assert_eq!(*rx.borrow(), LatchState::Lost);
    }
    assert_eq!(left_behind(&client, "latch-drop/").await?, (0, 0));
    Ok(())
}

#[test]
fn bad_input_is_a_typed_error_never_a_panic() -> Result<()> {
    let etcd = single()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(connect(&etcd.endpoints()))?;
    let invalid = |r: etcd_recipes::Result<LeaderLatch>| matches!(r, Err(Error::InvalidArgument(_)));
    // Outside a runtime.
    assert!(invalid(LeaderLatch::start(&client, "x", "v")));
    let _in_runtime = runtime.enter();
    assert!(invalid(LeaderLatch::start(&client, "", "v")));
    assert!(invalid(LeaderLatch::builder(&client, "x").ttl(0).start()));
    assert!(invalid(LeaderLatch::builder(&client, "x").ttl(-3).start()));
    assert!(invalid(LeaderLatch::builder(&client, "x").ttl(2).safety_margin(Duration::from_secs(2)).start()));
    drop(_in_runtime);
    // Nothing was started.
    assert_eq!(runtime.block_on(left_behind(&client, "x"))?, (0, 0));
    Ok(())
}

/// Three latch processes, values `p0`, `p1`, `p2`.
fn spawn_workers(endpoints: Vec<String>, name: &str) -> Result<Vec<ClientProcess>> {
    (0..3)
        .map(|i| {
            let args = WorkerArgs {
                endpoints: endpoints.clone(),
                strategy: Strategy::Mutex,
                permits: 1,
                mode: WorkerMode::Latch,
                ttl_secs: TTL,
                name: name.to_owned(),
                id: format!("p{i}"),
                duration: Duration::from_secs(180),
                max_ops: None,
                hold_ms: (0, 0),
                stop_file: None,
            };
            Ok(ClientProcess::spawn(args.id.clone(), args.command(WORKER.as_ref()))?)
        })
        .collect()
}

/// The worker whose latest line says it leads (with a time after `since_ms`), if exactly one does.
fn leader_since(workers: &[ClientProcess], since_ms: u64) -> Option<(usize, i64, u64)> {
    let leading: Vec<(usize, i64, u64)> = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.is_running() && !w.is_paused())
        .filter_map(|(i, w)| match parse_lines(w).last() {
            Some(LogLine { t_ms, event: Event::LatchLeader { token, .. } }) if *t_ms >= since_ms => {
                // The first line of this term: when it became leader.
                let lines = parse_lines(w);
                let first =
                    lines.iter().find(|l| matches!(l.event, Event::LatchLeader { token: t, .. } if t == *token))?;
                Some((i, *token, first.t_ms))
            }
            _ => None,
        })
        .collect();
    (leading.len() == 1).then(|| leading[0])
}

/// The participants' leadership intervals, by their own clocks: from the first `latch-leader` line
/// of a token to its latest `valid_until`, ended early by a later non-leader line. A process that
/// was killed claims its last promise.
fn claims(workers: &[ClientProcess]) -> Vec<Record> {
    let mut records = Vec::new();
    for w in workers {
        let mut open: Option<i64> = None;
        for l in parse_lines(w) {
            let step = match l.event {
                Event::LatchLeader { token, valid_until_ms } if open == Some(token) => {
                    Step::Valid { token, valid_until_ms: Some(valid_until_ms) }
                }
                Event::LatchLeader { token, valid_until_ms } => {
                    open = Some(token);
                    Step::Acquired { token, valid_until_ms: Some(valid_until_ms) }
                }
                Event::LatchFollower { .. } | Event::LatchLost if open.is_some() => {
                    open = None;
                    Step::Gone
                }
                _ => continue,
            };
            records.push(Record::new(w.name(), l.t_ms, step));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_sigkill_and_sigstop_never_has_two_leaders_by_their_own_clocks() -> Result<()> {
    let etcd = single()?;
    let name = "latch-failover";
    let workers = spawn_workers(etcd.endpoints(), name)?;
    let outcome = failover(&workers).await;
    for w in &workers {
        if w.is_paused() {
            w.resume()?;
        }
    }
    let records = claims(&workers);
    for w in &workers {
        w.kill()?;
    }
    let report = history::check(&records, 1);
    println!("{report}");
    for c in &report.claims {
        println!("  {} token {} led [{}..{}] ms", c.process, c.token, c.acquired_ms, c.until_ms);
    }
    outcome?;
    ensure!(report.is_valid(), "two leaders at once by their own clocks: {report}");
    ensure!(report.claims.len() >= 3, "three terms at least: {report}");
    Ok(())
}

async fn failover(workers: &[ClientProcess]) -> Result<()> {
    let first = eventually(SOON, "a first leader", || async { leader_since(workers, 0) }).await?;
    // The others follow it, naming it.
    let value = workers[first.0].name().to_owned();
    eventually(SOON, "both followers to name the leader", || async {
        workers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first.0)
            .all(|(_, w)| {
                parse_lines(w)
                    .last()
                    .is_some_and(|l| matches!(&l.event, Event::LatchFollower { leader } if *leader == value))
            })
            .then_some(())
    })
    .await?;

    // SIGKILL the leader: another takes over within the TTL plus the bound.
    let (killed_at, killed_ms) = (Instant::now(), now_ms());
    workers[first.0].kill()?;
    let second = eventually(SOON, "a leader after the SIGKILL", || async { leader_since(workers, killed_ms) }).await?;
    let took = Duration::from_millis(second.2.saturating_sub(killed_ms));
    println!(
        "SIGKILL of {}: {} leads after {took:?} (waited {:?})",
        value,
        workers[second.0].name(),
        killed_at.elapsed()
    );
    ensure!(second.0 != first.0 && second.1 > first.1, "{first:?} then {second:?}");
    ensure!(took <= Duration::from_secs(TTL) + BOUND, "failover took {took:?}");

    // SIGSTOP the new leader past its TTL: the third takes over; the paused one, resumed, says it
    // lost and follows the new leader.
    let paused_ms = now_ms();
    workers[second.0].pause()?;
    let third = eventually(SOON, "a leader after the SIGSTOP", || async { leader_since(workers, paused_ms) }).await?;
    let took = Duration::from_millis(third.2.saturating_sub(paused_ms));
    println!("SIGSTOP of {}: {} leads after {took:?}", workers[second.0].name(), workers[third.0].name());
    ensure!(third.0 != second.0 && third.1 > second.1, "{second:?} then {third:?}");
    ensure!(took <= Duration::from_secs(TTL) + BOUND, "failover took {took:?}");
    let lines_before = workers[second.0].line_count();
    let resumed_ms = now_ms();
    workers[second.0].resume()?;
    let third_value = workers[third.0].name().to_owned();
    eventually(SOON, "the resumed leader to follow the new one", || async {
        let w = &workers[second.0];
        let lines: Vec<LogLine> = parse_lines(w).into_iter().skip(lines_before).collect();
        let followed =
            lines.iter().any(|l| matches!(&l.event, Event::LatchFollower { leader } if *leader == third_value));
        followed.then_some(lines)
    })
    .await
    .and_then(|lines| {
        // Whatever it printed after the SIGCONT, it never led again under its old token.
        let led = lines
            .iter()
            .any(|l| l.t_ms >= resumed_ms && matches!(l.event, Event::LatchLeader { token, .. } if token == second.1));
        ensure!(!led, "the resumed process reported its old leadership: {lines:?}");
        Ok(())
    })?;
    Ok(())
}
