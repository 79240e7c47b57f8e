//! One process of the lock-set workload (see `etcd_tests::lockset`), or an election candidate.
//!
//! `lockset_worker endpoints=A,B strategy=mutex mode=fenced|unfenced|elect ttl=2 name=NAME id=ID
//! millis=20000 hold=50..300 [permits=N] [ops=N]` (`permits` with `strategy=semaphore` only)
//!
//! Lock modes loop until the time or op budget is spent: lock, read `<name>-counter`, sleep a random
//! `hold` while, write counter + 1 together with the op record `<name>-ops/<id>-<op>` (through the
//! guard's fenced Txn, or unconditionally), unlock. Election mode campaigns on `name`, holds the
//! leadership until its session ends, and campaigns again. Every step is one line on stdout
//! (`etcd_tests::lockset::LogLine`), which the checker reads.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_recipes::{DistributedLock, Election, Error, LatchState, LeaderLatch, Semaphore, Session, Strategy};
use etcd_tests::lockset::{Event, LogLine, Mode, WorkerArgs, WorkerMode, counter_key, epoch_ms, now_ms, ops_prefix};
use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions, Txn, TxnOp};
use tokio::time::{Instant, sleep, timeout};

/// The longest a `lock()` or `campaign()` may wait before the worker gives up and tries again.
const WAIT_LIMIT: Duration = Duration::from_secs(20);
/// The longest an unlock or a session close may take.
const RELEASE_LIMIT: Duration = Duration::from_secs(10);

fn emit(event: Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", LogLine::now(event));
    let _ = out.flush();
}

fn error(stage: &str, e: impl std::fmt::Display) {
    emit(Event::Error { stage: stage.to_owned(), error: e.to_string() });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = WorkerArgs::parse(&args).context("usage: see the module docs of lockset_worker")?;
    let deadline = Instant::now() + cfg.duration;
    let options = ClientOptions::default()
        .with_connect_timeout(Duration::from_secs(2))
        .with_request_timeout(Some(Duration::from_secs(5)))
        .with_keep_alive(Some(Duration::from_secs(1)), Duration::from_secs(2));
    let client = loop {
        match Client::connect(&cfg.endpoints, options.clone()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                error("connect", e);
                sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    if cfg.mode == WorkerMode::Latch {
        return latch_loop(&client, &cfg, deadline).await;
    }
    let Some(session) = new_session(&client, &cfg, deadline, true).await else {
        emit(Event::Done { ops: 0 });
        return Ok(());
    };
    match cfg.mode {
        WorkerMode::Lock(mode) => lock_loop(&client, &cfg, mode, session, deadline).await,
        WorkerMode::Elect => elect_loop(&client, &cfg, session, deadline).await,
        WorkerMode::Latch => unreachable!("handled above"),
    }
}

/// A session of `ttl` seconds, retried until the deadline; `None` if the time is up.
async fn new_session(client: &Client, cfg: &WorkerArgs, deadline: Instant, first: bool) -> Option<Session> {
    let ttl = i64::try_from(cfg.ttl_secs).unwrap_or(i64::MAX);
    while Instant::now() < deadline {
        match Session::builder(client).ttl(ttl).build().await {
            Ok(s) => {
                let lease = format!("{:x}", s.lease_id());
                emit(if first { Event::Start { lease } } else { Event::Session { lease } });
                return Some(s);
            }
            Err(e) => {
                error("session", e);
                sleep(Duration::from_millis(300)).await;
            }
        }
    }
    None
}

/// The lock of `cfg` on `session`: its strategy's, or a semaphore of its permits.
fn new_lock(cfg: &WorkerArgs, session: &Session) -> Result<Box<dyn DistributedLock>> {
    Ok(match cfg.strategy {
        Strategy::Semaphore => Box::new(Semaphore::new(session, &cfg.name, cfg.permits)?),
        _ if cfg.permits != 1 => anyhow::bail!("permits={} needs strategy=semaphore", cfg.permits),
        strategy => strategy.new_lock(session, &cfg.name)?,
    })
}

async fn lock_loop(
    client: &Client,
    cfg: &WorkerArgs,
    mode: Mode,
    mut session: Session,
    deadline: Instant,
) -> Result<()> {
    let counter = counter_key(&cfg.name);
    let ops_dir = ops_prefix(&cfg.name);
    let mut lock = new_lock(cfg, &session)?;
    let mut op = 0u64;
    while Instant::now() < deadline && cfg.max_ops.is_none_or(|max| op < max) && !cfg.stop_requested() {
        if session.is_lost() {
            session.orphan();
            let Some(s) = new_session(client, cfg, deadline, false).await else { break };
            session = s;
            lock = new_lock(cfg, &session)?;
        }
        let wait = WAIT_LIMIT.min(deadline.saturating_duration_since(Instant::now()));
        emit(Event::Locking);
        let guard = match timeout(wait, lock.lock()).await {
            Ok(Ok(g)) => g,
            Ok(Err(Error::SessionExpired)) => {
                error("lock", Error::SessionExpired);
                session.orphan();
                continue;
            }
            Ok(Err(e)) => {
                error("lock", e);
                sleep(Duration::from_millis(200)).await;
                continue;
            }
            // Cut short by the end of the run: not an error.
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => {
                error("lock", format!("not acquired within {wait:?}"));
                continue;
            }
        };
        let token = guard.fencing_token();
        emit(Event::Acquired { token, valid_until_ms: epoch_ms(guard.valid_until()) });
        let valid_until_ms = epoch_ms(guard.valid_until());
        let read = match client.get(counter.clone(), GetOptions::new()).await {
            Ok(r) => match r.kvs.first().map(|kv| kv.value_str().parse::<u64>()) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    error("read", format!("counter is not a number: {e}"));
                    emit(Event::Unlocking { token });
                    let _ = timeout(RELEASE_LIMIT, guard.unlock()).await;
                    continue;
                }
            },
            Err(e) => {
                error("read", e);
                emit(Event::Unlocking { token });
                let _ = timeout(RELEASE_LIMIT, guard.unlock()).await;
                continue;
            }
        };
        emit(Event::Read { value: read, token, valid_until_ms });
        let (lo, hi) = cfg.hold_ms;
        sleep(Duration::from_millis(fastrand::u64(lo..=hi.max(lo)))).await;

        op += 1;
        let written = read + 1;
        let op_name = format!("{}-{op:06}", cfg.id);
        let puts = [
            TxnOp::put(counter.clone(), written.to_string(), PutOptions::new()),
            TxnOp::put(format!("{ops_dir}{op_name}"), written.to_string(), PutOptions::new()),
        ];
        let txn = match mode {
            Mode::Fenced => guard.txn().and_then(puts),
            Mode::Unfenced => Txn::new().and_then(puts),
        };
        let mut lost = Vec::new();
        match client.txn(txn).await {
            Ok(r) if r.succeeded => emit(Event::Ok { op: op_name, read, written, token }),
            Ok(_) => {
                emit(Event::Refused { op: op_name, read, token });
                lost.push("refused".to_owned());
            }
            Err(e) => emit(Event::Indeterminate { op: op_name, read, written, error: e.to_string() }),
        }
        let mut unlock_failed = false;
        emit(Event::Unlocking { token });
        match timeout(RELEASE_LIMIT, guard.unlock()).await {
            Ok(Ok(())) => emit(Event::Released),
            Ok(Err(Error::NotOwner(_))) => lost.push("unlock-not-owner".to_owned()),
            Ok(Err(e)) => {
                emit(Event::UnlockFailed { error: e.to_string() });
                unlock_failed = true;
            }
            Err(_) => {
                emit(Event::UnlockFailed { error: format!("unlock took over {RELEASE_LIMIT:?}") });
                unlock_failed = true;
            }
        }
        if session.is_lost() {
            lost.push(format!("session:{:?}", session.lost().await));
        }
        if !lost.is_empty() {
            emit(Event::LostLock { token, reasons: lost.join(",") });
        }
        if unlock_failed {
            // The lock key may still be ours: leave it to the lease and start afresh.
            session.orphan();
        }
    }
    emit(Event::Done { ops: op });
    let _ = timeout(RELEASE_LIMIT, session.close()).await;
    Ok(())
}

async fn elect_loop(client: &Client, cfg: &WorkerArgs, mut session: Session, deadline: Instant) -> Result<()> {
    while Instant::now() < deadline && !cfg.stop_requested() {
        if session.is_lost() {
            session.orphan();
            let Some(s) = new_session(client, cfg, deadline, false).await else { break };
            session = s;
        }
        let election = Election::new(&session, &cfg.name)?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let leadership = match timeout(wait, election.campaign(cfg.id.clone())).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                error("campaign", e);
                sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => break,
        };
        emit(Event::Elected { token: leadership.fencing_token() });
        tokio::select! {
            end = session.lost() => emit(Event::LostLeadership { reason: format!("{end:?}") }),
            () = tokio::time::sleep_until(deadline) => {
                let _ = timeout(RELEASE_LIMIT, leadership.resign()).await;
            }
        }
    }
    emit(Event::Done { ops: 0 });
    let _ = timeout(RELEASE_LIMIT, session.close()).await;
    Ok(())
}

/// Runs a `LeaderLatch` with the worker's ID as its value. On every state change, and every 50 ms,
/// stamps the time, *then* takes the state: a `latch-leader` line's time is one at which
/// `is_leader()` held, so its interval up to `valid_until` is what this process claims. Prints a
/// line when the state differs from the last one printed.
async fn latch_loop(client: &Client, cfg: &WorkerArgs, deadline: Instant) -> Result<()> {
    let ttl = i64::try_from(cfg.ttl_secs).unwrap_or(i64::MAX);
    let latch = LeaderLatch::builder(client, &cfg.name).value(cfg.id.clone()).ttl(ttl).start()?;
    let mut changes = latch.subscribe();
    let mut last: Option<Event> = None;
    while Instant::now() < deadline && !cfg.stop_requested() {
        tokio::select! {
            _ = changes.changed() => {}
            () = sleep(Duration::from_millis(50)) => {}
        }
        let t_ms = now_ms();
        let state = latch.state();
        let event = match &state {
            LatchState::Leader { token, valid_until, .. } if state.is_leader() => {
                Event::LatchLeader { token: *token, valid_until_ms: epoch_ms(Some(*valid_until)).unwrap_or(t_ms) }
            }
            LatchState::Leader { .. } | LatchState::Lost => Event::LatchLost,
            LatchState::Follower { leader } => Event::LatchFollower {
                leader: leader.as_ref().map_or_else(|| "-".to_owned(), |kv| kv.value_str().into_owned()),
            },
            _ => continue,
        };
        if last.as_ref() != Some(&event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", LogLine { t_ms, event: event.clone() });
            let _ = out.flush();
            last = Some(event);
        }
    }
    let _ = timeout(RELEASE_LIMIT, latch.close()).await;
    emit(Event::Done { ops: 0 });
    Ok(())
}
