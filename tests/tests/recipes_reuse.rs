//! Guard reuse: the most ordinary Rust pattern (lock, work, drop the guard, lock again on the same
//! lock and session) with a second session contending, on both runtime flavours; a `lock()` cut
//! short by a timeout and retried; and several tasks sharing one session and one name, for every
//! strategy. Each must never give a false `SessionExpired`, never hand out a guard whose fenced
//! Txn is refused, and never let two holders overlap.
//!
//! The loops print their counts (`REUSE_ITERATIONS` sets the length, 300 by default), so the
//! same test measures the figures quoted in RELIABILITY.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use etcd_recipes::{DistributedLock, Election, Error, LockGuard, Mutex, Session, Strategy};
use etcd_tests::single;
use etcd_wire::{Client, ClientOptions, PutOptions, TxnOp};

fn iterations() -> usize {
    std::env::var("REUSE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// What went wrong in a loop, counted rather than failed at once so the figures show.
#[derive(Default, Debug)]
struct Tally {
    locked: AtomicUsize,
    session_expired: AtomicUsize,
    other_errors: AtomicUsize,
    refused: AtomicUsize,
    overlaps: AtomicUsize,
}

impl Tally {
    fn check(&self, what: &str) -> Result<()> {
        let load = |a: &AtomicUsize| a.load(Ordering::SeqCst);
        println!(
            "{what}: {} guards, {} SessionExpired, {} other errors, {} refused fenced txns, {} overlaps",
            load(&self.locked),
            load(&self.session_expired),
            load(&self.other_errors),
            load(&self.refused),
            load(&self.overlaps)
        );
        ensure!(
            load(&self.session_expired) + load(&self.other_errors) + load(&self.refused) + load(&self.overlaps) == 0,
            "{what}: {self:?}"
        );
        Ok(())
    }

    /// Counts one `lock()` outcome; on a guard, proves it: no other holder is inside, and a
    /// fenced write lands.
    async fn hold(&self, client: &Client, inside: &AtomicBool, r: Result<LockGuard, Error>) -> Option<LockGuard> {
        let guard = match r {
            Ok(g) => g,
            Err(Error::SessionExpired) => {
                self.session_expired.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            Err(e) => {
                eprintln!("lock(): {e}");
                self.other_errors.fetch_add(1, Ordering::SeqCst);
                return None;
            }
        };
        self.locked.fetch_add(1, Ordering::SeqCst);
        if inside.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let write = guard.txn().and_then([TxnOp::put("reuse/data", "x", PutOptions::new())]);
        match client.txn(write).await {
            Ok(r) if r.succeeded => {}
            _ => {
                self.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
        inside.store(false, Ordering::SeqCst);
        Some(guard)
    }
}

/// A second session that takes and releases the lock until `stop`, so every `lock()` of the loop
/// under test contends.
fn contender(
    client: Client,
    name: &'static str,
    inside: Arc<AtomicBool>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let session = Session::new(&client).await?;
        let m = Mutex::new(&session, name)?;
        while !stop.load(Ordering::SeqCst) {
            if let Some(g) = tally.hold(&client, &inside, m.lock().await).await {
                g.unlock().await?;
            }
        }
        session.close().await?;
        Ok(())
    })
}

async fn drop_and_relock(flavor: &str) -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let name = "reuse/lock";
    let (inside, tally, stop) = (Arc::default(), Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let other = Arc::new(Tally::default());
    let rival = contender(client.clone(), name, Arc::clone(&inside), Arc::clone(&other), Arc::clone(&stop));
    let session = Session::new(&client).await?;
    let m = Mutex::new(&session, name)?;
    for _ in 0..iterations() {
        // The guard is dropped at the end of each iteration: its release runs in the background.
        let _guard = tally.hold(&client, &inside, m.lock().await).await;
    }
    stop.store(true, Ordering::SeqCst);
    rival.await??;
    tally.check(&format!("drop and relock ({flavor})"))?;
    other.check(&format!("the contending session ({flavor})"))
}

#[tokio::test(flavor = "current_thread")]
async fn drop_and_relock_on_a_current_thread_runtime() -> Result<()> {
    drop_and_relock("current-thread").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_relock_on_a_multi_thread_runtime() -> Result<()> {
    drop_and_relock("multi-thread").await
}

/// `timeout(d, m.lock())` cut short while waiting for the contender, then retried at once: the
/// abandoned attempt's cleanup must not delete the key the retry joins with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_cut_short_by_a_timeout_and_retried() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let name = "reuse/timeout";
    let (inside, tally, stop) = (Arc::default(), Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let other = Arc::new(Tally::default());
    let rival = contender(client.clone(), name, Arc::clone(&inside), Arc::clone(&other), Arc::clone(&stop));
    let session = Session::new(&client).await?;
    let m = Mutex::new(&session, name)?;
    let mut timed_out = 0;
    for i in 0..iterations() {
        // A timeout from 0 to 12 ms: some expire before the join Txn is answered, some while
        // waiting, some not at all.
        let r = match tokio::time::timeout(Duration::from_millis((i % 5 * 3) as u64), m.lock()).await {
            Ok(r) => r,
            Err(_) => {
                timed_out += 1;
                m.lock().await
            }
        };
        drop(tally.hold(&client, &inside, r).await);
    }
    stop.store(true, Ordering::SeqCst);
    rival.await??;
    println!("{timed_out} of {} lock() calls timed out and were retried", iterations());

    tally.check("timeout and retry")?;
    other.check("the contending session (timeout and retry)")
}

/// Several tasks sharing one session and one lock name exclude each other, whatever the strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_a_session_exclude_each_other_for_every_strategy() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let session = Session::new(&client).await?;
    for strategy in Strategy::ALL {
        let inside = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let lock: Arc<dyn DistributedLock> = Arc::from(strategy.new_lock(&session, &format!("shared/{strategy}"))?);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (client, lock, inside, tally) =
                    (client.clone(), Arc::clone(&lock), Arc::clone(&inside), Arc::clone(&tally));
                tokio::spawn(async move {
                    for _ in 0..10 {
                        if let Some(g) = tally.hold(&client, &inside, lock.lock().await).await {
                            g.unlock().await?;
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        tally.check(&format!("{strategy}: 4 tasks, one session"))?;
    }
    Ok(())
}

/// An election resign cut short (its fenced delete goes on in the background) and a campaign
/// started at once on the same session: the new leadership must not be the old key that the
/// pending delete then removes. Every leadership's fenced write lands, and no campaign fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resign_cut_short_and_a_campaign_at_once() -> Result<()> {
    let etcd = single()?;
    let client = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let session = Session::new(&client).await?;
    let election = Election::new(&session, "reuse/election")?;
    let (mut errors, mut refused) = (0, 0);
    for i in 0..iterations() {
        let leader = match election.campaign("me").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("campaign(): {e}");
                errors += 1;
                continue;
            }
        };
        let write = leader.txn().and_then([TxnOp::put("reuse/data", "x", PutOptions::new())]);
        if !client.txn(write).await.is_ok_and(|r| r.succeeded) {
            refused += 1;
        }
        // Cut short after 0 to 2 ms: sometimes before the delete was sent, sometimes after.
        let _ = tokio::time::timeout(Duration::from_millis((i % 3) as u64), leader.resign()).await;
    }
    println!(
        "resign cut short, then campaign: {} campaigns, {errors} errors, {refused} refused fenced txns",
        iterations()
    );
    ensure!(errors + refused == 0, "{errors} failed campaigns, {refused} refused fenced writes");
    Ok(())
}
