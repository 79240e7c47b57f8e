//! The Semaphore against real etcd: at most N holders (checked on a recorded history), a release
//! reaching exactly one waiter (and a release out of order still letting the first waiter in), a
//! killed holder's permit freed at its TTL, a waiter whose session ends failing at once, a
//! cancelled acquisition leaving no key, RPCs per acquisition flat in the number of waiters, and
//! bad input as typed errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use etcd_recipes::{Error, LockGuard, OpStats, Semaphore, Session, Strategy};
use etcd_tests::history::{self, Record, Step};
use etcd_tests::lockset::{epoch_ms, now_ms};
use etcd_tests::{Steps, eventually, single, wait_for_keys};
use etcd_wire::{Client, ClientOptions, GetOptions, SortOrder, SortTarget};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

const WORKER: &str = env!("CARGO_BIN_EXE_lock_worker");

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Keys under `prefix`, oldest (by create revision) first.
async fn line(c: &Client, prefix: &str) -> Result<Vec<String>> {
    let opts = GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Create, SortOrder::Ascend);
    Ok(c.get(prefix.to_owned(), opts).await?.kvs.iter().map(|kv| kv.key_str().into_owned()).collect())
}

fn key_of(g: &LockGuard) -> String {
    String::from_utf8_lossy(g.key()).into_owned()
}

/// A waiter: its own session, a traced semaphore, and the spawned `acquire()`.
struct Waiter {
    session: Session,
    steps: Steps,
    task: JoinHandle<etcd_recipes::Result<LockGuard>>,
}

/// Starts a waiter on `name` and returns once its key is the `position`-th in line (0-based) and
/// it has opened its watches: it is blocked on them.
async fn queue(c: &Client, name: &str, permits: usize, position: usize) -> Result<(Waiter, String)> {
    let session = Session::new(c).await?;
    let (steps, tracer) = Steps::new();
    let sem = Semaphore::new(&session, name, permits)?.with_tracer(tracer);
    let task = tokio::spawn(async move { sem.acquire().await });
    wait_for_keys(c, &format!("{name}/"), i64::try_from(position)? + 1).await?;
    let key = line(c, &format!("{name}/")).await?.pop().context("the waiter's key")?;
    eventually(Duration::from_secs(30), "the waiter to watch", || async {
        (!steps.watched().is_empty()).then_some(())
    })
    .await?;
    Ok((Waiter { session, steps, task }, key))
}

/// Contenders, each with its own client and session, take a semaphore of `PERMITS` in rounds
/// (all invoke together), hold briefly, release; the recorded history must never show more than
/// `PERMITS` holders, tokens must grow with acquisition order, and the permits must be used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_never_shows_more_than_n_holders() -> Result<()> {
    const PERMITS: usize = 3;
    const CONTENDERS: usize = 8;
    const ROUNDS: usize = 5;
    let etcd = single()?;
    let records = Arc::new(StdMutex::new(Vec::<Record>::new()));
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let client = connect(&etcd.endpoints()).await?;
        let (records, barrier) = (records.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let me = format!("c{i}");
            let record =
                |step| records.lock().unwrap_or_else(|e| e.into_inner()).push(Record::new(&me, now_ms(), step));
            let session = Session::builder(&client).ttl(30).build().await?;
            let sem = Semaphore::new(&session, "history", PERMITS)?;
            for _ in 0..ROUNDS {
                barrier.wait().await;
                record(Step::Invoke);
                let guard = sem.acquire().await?;
                let token = guard.fencing_token();
                record(Step::Acquired { token, valid_until_ms: epoch_ms(guard.valid_until()) });
                // The work under the permit (the history's overlap is what is checked, not this).
                tokio::time::sleep(Duration::from_millis(20)).await;
                record(Step::ReleaseInvoked { token });
                guard.unlock().await?;
                record(Step::Released { token });
            }
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await???;
    }
    let records = records.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = history::check(&records, PERMITS);
    println!("{report}");
    ensure!(report.is_valid(), "{report}");
    ensure!(report.claims.len() == CONTENDERS * ROUNDS, "{report}");
    ensure!(report.max_holders == PERMITS, "the permits were never all in use at once: {report}");
    // The same history is not one of a semaphore of fewer permits: the checker can fail.
    ensure!(!history::check(&records, PERMITS - 1).is_valid());
    let c = connect(&etcd.endpoints()).await?;
    ensure!(line(&c, "history/").await?.is_empty(), "keys left behind");
    Ok(())
}

/// Two permits held by A (older) and B; four waiters queued behind. The first waiter watches
/// exactly the two holders, each later one only its predecessor. B (not the oldest) releases:
/// its DELETE reaches only the first waiter, which gets in while A still holds; its mark reaches
/// only the next waiter, which moves up to watch the holders; the two behind see nothing and
/// send nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_exactly_one_waiter_even_out_of_order() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (sa, sb) = (Session::new(&c).await?, Session::new(&c).await?);
    let a = Semaphore::new(&sa, "one", 2)?.acquire().await?;
    let b = Semaphore::new(&sb, "one", 2)?.acquire().await?;
    let mut waiters = Vec::new();
    let mut line_keys = vec![key_of(&a), key_of(&b)];
    for position in 2..6 {
        let (w, key) = queue(&c, "one", 2, position).await?;
        waiters.push(w);
        line_keys.push(key);
    }
    ensure!(line(&c, "one/").await? == line_keys, "the line is in join order");
    // What waiter `i` watches besides its own key.
    let watched = |i: usize| {
        let mut w = waiters[i].steps.watched();
        w.retain(|k| *k != line_keys[i + 2]);
        w.sort();
        w.dedup();
        w
    };
    let mut holders = vec![line_keys[0].clone(), line_keys[1].clone()];
    holders.sort();
    ensure!(watched(0) == holders, "the first waiter watches the two holders: {:?}", watched(0));
    for i in 1..4 {
        ensure!(
            watched(i) == [line_keys[i + 1].clone()],
            "waiter {i} watches only its predecessor {}: {:?}",
            line_keys[i + 1],
            watched(i)
        );
    }
    let before: Vec<(usize, usize)> = waiters.iter().map(|w| (w.steps.events().len(), w.steps.rpcs())).collect();

    b.unlock().await?;
    let w0 = tokio::time::timeout(Duration::from_secs(10), &mut waiters[0].task).await???;
    ensure!(key_of(&w0) == line_keys[2]);
    // The next waiter saw the new holder's mark and now watches the holders: A and the new one.
    waiters[1].steps.wait_watching(&line_keys[0]).await?;
    waiters[1].steps.wait_watching(&line_keys[2]).await?;
    let after: Vec<(usize, usize)> = waiters[1..].iter().map(|w| (w.steps.events().len(), w.steps.rpcs())).collect();
    ensure!(
        waiters[0].steps.events()[before[0].0..] == [(line_keys[1].clone(), "DELETE")],
        "the release reached the first waiter once: {:?}",
        waiters[0].steps.events()
    );
    ensure!(
        waiters[1].steps.events()[before[1].0..] == [(line_keys[2].clone(), "PUT")],
        "the next waiter saw only the new holder's mark: {:?}",
        waiters[1].steps.events()
    );
    ensure!(after[1..] == before[2..], "the waiters further back saw nothing and sent nothing");
    ensure!(!waiters[1].task.is_finished(), "A and the new holder hold both permits");

    // Now in order: A releases, and the next waiter gets in.
    a.unlock().await?;
    let w1 = tokio::time::timeout(Duration::from_secs(10), &mut waiters[1].task).await???;
    ensure!(line(&c, "one/").await?[..2] == [key_of(&w0), key_of(&w1)]);
    w0.unlock().await?;
    w1.unlock().await?;
    for w in &mut waiters[2..] {
        tokio::time::timeout(Duration::from_secs(10), &mut w.task).await???.unlock().await?;
    }
    ensure!(line(&c, "one/").await?.is_empty());
    for w in waiters {
        w.session.close().await?;
    }
    Ok(())
}

/// A holder process is SIGKILLed without releasing: its permit is free once its lease expired
/// (not before), while the other holder keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_permit_is_freed_at_its_ttl() -> Result<()> {
    const TTL: u64 = 3;
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let kept = Semaphore::new(&s, "crash", 2)?.acquire().await?;
    let mut holder = Command::new(WORKER)
        .args(["hold", "semaphore:2", &etcd.endpoints().join(","), "crash", "1", &TTL.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = String::new();
    BufReader::new(holder.stdout.take().context("stdout")?).read_line(&mut out)?;
    let lease = out.split_whitespace().nth(2).and_then(|h| i64::from_str_radix(h, 16).ok());
    let lease = lease.with_context(|| format!("unexpected holder output {out:?}"))?;

    let (w, _) = queue(&c, "crash", 2, 2).await?;
    ensure!(!w.task.is_finished(), "both permits are held");
    let killed = Instant::now();
    holder.kill()?;
    holder.wait()?;
    let guard = tokio::time::timeout(Duration::from_secs(TTL + 10), w.task).await.context("never freed")???;
    let waited = killed.elapsed();
    // The lease was refreshed at most TTL/3 before the kill, so it cannot expire sooner than 2/3 TTL.
    ensure!(waited >= Duration::from_secs(TTL) * 2 / 3 - Duration::from_millis(300), "freed after {waited:?}");
    ensure!(c.lease_time_to_live(lease, false).await?.ttl == -1, "acquired while the dead holder's lease lived");
    ensure!(line(&c, "crash/").await? == [key_of(&kept), key_of(&guard)], "the other holder kept its permit");
    guard.unlock().await?;
    kept.unlock().await?;
    w.session.close().await?;
    Ok(())
}

/// A waiter whose session ends fails with `SessionExpired` at once, while the holders hold, both
/// the first waiter (watching the holders) and one further back (watching its predecessor); the
/// waiter behind the latter moves up, and nothing of theirs is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_session_ends_fails_at_once() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let (h1, h2) = (Semaphore::new(&s, "ends", 2)?.acquire().await?, Semaphore::new(&s, "ends", 2)?.acquire().await?);
    let (first, first_key) = queue(&c, "ends", 2, 2).await?;
    let (second, second_key) = queue(&c, "ends", 2, 3).await?;
    let (third, _) = queue(&c, "ends", 2, 4).await?;

    // Further back: its lease revoked by someone else, as if it expired.
    c.lease_revoke(second.session.lease_id()).await?;
    let r = tokio::time::timeout(Duration::from_secs(5), second.task).await?;
    ensure!(matches!(r, Ok(Err(Error::SessionExpired))), "{r:?}");
    // The waiter behind it saw its key go and now waits on the first waiter.
    third.steps.wait_watching(&first_key).await?;
    // The first waiter: its session closed.
    first.session.close().await?;
    let r = tokio::time::timeout(Duration::from_secs(5), first.task).await?;
    ensure!(matches!(r, Ok(Err(Error::SessionExpired))), "{r:?}");
    ensure!(!line(&c, "ends/").await?.contains(&second_key));
    // The remaining waiter is now the first, watching the holders, and still waits for them.
    third.steps.wait_watching(&key_of(&h1)).await?;
    ensure!(!third.task.is_finished());
    h2.unlock().await?;
    let g = tokio::time::timeout(Duration::from_secs(10), third.task).await???;
    ensure!(line(&c, "ends/").await? == [key_of(&h1), key_of(&g)]);
    g.unlock().await?;
    h1.unlock().await?;
    Ok(())
}

/// Dropping `acquire()` futures (the first waiter and one in the middle of the line) removes
/// their keys, and the waiter behind the middle one moves up to the right place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let held = Semaphore::new(&s, "cancel", 1)?.acquire().await?;
    let (first, first_key) = queue(&c, "cancel", 1, 1).await?;
    let (middle, _) = queue(&c, "cancel", 1, 2).await?;
    let (last, last_key) = queue(&c, "cancel", 1, 3).await?;
    middle.task.abort();
    last.steps.wait_watching(&first_key).await?;
    first.task.abort();
    last.steps.wait_watching(&key_of(&held)).await?;
    ensure!(line(&c, "cancel/").await? == [key_of(&held), last_key], "the cancelled waiters' keys are gone");
    ensure!(!last.task.is_finished());
    held.unlock().await?;
    let g = tokio::time::timeout(Duration::from_secs(10), last.task).await???;
    g.unlock().await?;
    ensure!(line(&c, "cancel/").await?.is_empty());
    Ok(())
}

/// `try_acquire` takes one of the free permits, and fails with `Locked` (leaving no key) once
/// they are all held.
#[tokio::test]
async fn try_acquire_takes_free_permits_only() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let sem = Semaphore::new(&s, "try", 2)?;
    let (g1, g2) = (sem.try_acquire().await?, sem.try_acquire().await?);
    ensure!(g2.fencing_token() > g1.fencing_token(), "each permit has its own token");
    let r = sem.try_acquire().await;
    ensure!(matches!(r, Err(Error::Locked)), "{r:?}");
    ensure!(line(&c, "try/").await? == [key_of(&g1), key_of(&g2)], "a failed try leaves no key");
    g1.unlock().await?;
    let g3 = sem.try_acquire().await?;
    ensure!(g3.fencing_token() > g2.fencing_token());
    g2.unlock().await?;
    g3.unlock().await?;
    Ok(())
}

/// Bad input fails with a typed error before any RPC.
#[tokio::test]
async fn bad_input_is_a_typed_error() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    ensure!(matches!(Semaphore::new(&s, "zero", 0), Err(Error::InvalidArgument(_))));
    ensure!(matches!(Semaphore::new(&s, "", 2), Err(Error::InvalidArgument(_))));
    ensure!(matches!(Strategy::Semaphore.new_lock(&s, ""), Err(Error::InvalidArgument(_))));
    ensure!("semaphore".parse::<Strategy>().ok() == Some(Strategy::Semaphore));
    Ok(())
}

/// `contenders` tasks (own session each, one shared client) take a semaphore of 2 permits
/// `cycles` times each; returns the mean RPCs per acquisition (the acquisition's own, from its
/// guard's stats, plus the release).
async fn rpcs_per_acquisition(c: &Client, name: &str, contenders: usize, cycles: usize) -> Result<f64> {
    let mut tasks = Vec::new();
    for _ in 0..contenders {
        let c = c.clone();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&c).await?;
            let sem = Semaphore::new(&session, &name, 2)?;
            let mut stats = OpStats::default();
            for _ in 0..cycles {
                let guard = sem.acquire().await?;
                stats += guard.stats();
                tokio::task::yield_now().await;
                guard.unlock().await?;
            }
            session.close().await?;
            anyhow::Ok(stats.rpcs)
        }));
    }
    let mut rpcs = 0;
    for t in tasks {
        rpcs += tokio::time::timeout(Duration::from_secs(120), t).await???;
    }
    let acquisitions = (contenders * cycles) as f64;
    Ok((f64::from(rpcs) + acquisitions) / acquisitions)
}

/// RPCs per acquisition stay flat as the line grows: with 4 or with 16 contenders, an
/// acquisition is at most the join, two gap reads, one read after the predecessor's mark and
/// the mark, plus the release (6); no waiter reads on every release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_per_acquisition_are_flat_in_the_number_of_waiters() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let few = rpcs_per_acquisition(&c, "flat-4", 4, 20).await?;
    let many = rpcs_per_acquisition(&c, "flat-16", 16, 5).await?;
    println!("RPCs per acquisition: {few:.2} with 4 contenders, {many:.2} with 16");
    ensure!(few <= 6.0 && many <= 6.0, "{few:.2} and {many:.2} RPCs per acquisition");
    Ok(())
}

// With one permit it is a mutex: `reliability_lock_history.rs` runs the lock-history check on
// `Strategy::Semaphore` with the other strategies (`lock_history_is_a_mutex_semaphore`).
