//! The edges of every recipe that writes: an answer that never arrives in time, and a release
//! that is cancelled half-way. The client under test talks to etcd through the harness's TCP
//! proxy, which forwards requests at once but delays etcd's answers past the caller's timeout
//! (the request is applied, the caller never learns it: an unknown outcome); a second, direct
//! client looks at what is left in etcd. The session's lease stays alive throughout, so anything left behind
//! would stay until somebody deleted it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::{EtcdCluster, TcpProxy};
use etcd_recipes::{DoubleBarrier, Election, Mutex, NaiveLock, Queue, RwMutex, Session, Strategy, TraceKind, Tracer};
use etcd_tests::{eventually, single};
use etcd_wire::{Client, ClientOptions, GetOptions};

/// Longer than any caller's timeout below: an answer sent now arrives after this.
const SLOW: Duration = Duration::from_secs(2);
/// The caller gives up after this.
const IMPATIENT: Duration = Duration::from_millis(500);

/// A cluster, a proxy in front of it, a client through the proxy with a session (long TTL, so
/// nothing expires by itself during a test), and a direct client to look with.
struct Rig {
    _etcd: EtcdCluster,
    proxy: Arc<TcpProxy>,
    slow: Client,
    session: Session,
    direct: Client,
}

impl Rig {
    async fn start() -> Result<Rig> {
        let etcd = single()?;
        let proxy = Arc::new(TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?);
        let slow = Client::connect([proxy.url()], ClientOptions::default()).await?;
        let session = Session::builder(&slow).ttl(60).build().await?;
        let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
        Ok(Rig { _etcd: etcd, proxy, slow, session, direct })
    }

    /// Runs `call` with etcd's answers delayed by [`SLOW`], giving up after [`IMPATIENT`]: the
    /// request reaches etcd and is applied, the answer never reaches the caller.
    async fn abandon<T>(&self, call: impl Future<Output = T>) -> Result<()> {
        self.proxy.set_reply_delay(SLOW);
        self.give_up(call).await
    }

    /// A tracer for a recipe whose write comes after `reads` RPCs: once those are answered, it
    /// delays etcd's answers by [`SLOW`], so the write is applied and its answer is late. Use with
    /// [`give_up`](Self::give_up).
    fn delay_answers_after(&self, reads: usize) -> Tracer {
        let (proxy, seen) = (Arc::clone(&self.proxy), AtomicUsize::new(0));
        Tracer::new(move |event| {
            if matches!(event.kind, TraceKind::Rpc { .. }) && seen.fetch_add(1, Ordering::SeqCst) + 1 == reads {
                proxy.set_reply_delay(SLOW);
            }
        })
    }

    /// Runs `call`, giving up after [`IMPATIENT`]; then lifts every delay.
    async fn give_up<T>(&self, call: impl Future<Output = T>) -> Result<()> {
        let r = tokio::time::timeout(IMPATIENT, call).await;
        self.proxy.set_reply_delay(Duration::ZERO);
        self.proxy.set_delay(Duration::ZERO);
        ensure!(r.is_err(), "the call finished before the caller's timeout");
        Ok(())
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        Ok(self.direct.get(prefix.to_owned(), GetOptions::new().with_prefix().with_count_only()).await?.count)
    }

    /// Every key under `prefix` is eventually gone while the session's lease is still alive.
    async fn nothing_left(&self, prefix: &str, what: &str) -> Result<()> {
        eventually(Duration::from_secs(20), &format!("{what}: nothing left under {prefix}"), || async {
            (self.count(prefix).await.ok()? == 0).then_some(())
        })
        .await?;
        let ttl = self.direct.lease_time_to_live(self.session.lease_id(), false).await?.ttl;
        ensure!(ttl > 0, "{what}: the session's lease expired, so this proves nothing");
        Ok(())
    }
}

/// A lock attempt whose join/create Txn is answered after the caller gave up leaves no key on the
/// live lease, for every strategy that writes a key on the session's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lock_attempt_leaves_no_key() -> Result<()> {
    let rig = Rig::start().await?;
    for strategy in [Strategy::Mutex, Strategy::Naive, Strategy::Rpc] {
        let name = format!("abandoned/{strategy}");
        let lock = strategy.new_lock(&rig.session, &name)?;
        rig.abandon(lock.lock()).await?;
        rig.nothing_left(&name, &format!("{strategy} lock()")).await?;
        // A name of its own: the abandoned lock()'s cleanup may still hold the session's slot
        // for the first one a moment after its key is gone, and try_lock would say Locked.
        let name = format!("abandoned-try/{strategy}");
        rig.abandon(strategy.new_lock(&rig.session, &name)?.try_lock()).await?;
        rig.nothing_left(&name, &format!("{strategy} try_lock()")).await?;
    }
    rig.abandon(RwMutex::new(&rig.session, "abandoned/rw-read")?.read_lock()).await?;
    rig.nothing_left("abandoned/rw-read", "RwMutex read_lock()").await?;
    rig.abandon(RwMutex::new(&rig.session, "abandoned/rw-write")?.write_lock()).await?;
    rig.nothing_left("abandoned/rw-write", "RwMutex write_lock()").await?;
    Ok(())
}

/// The naive lock, retried after an abandoned attempt, does not wait on its own leaked key: the
/// retry gets the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_lock_retried_after_an_abandoned_attempt_gets_the_lock() -> Result<()> {
    let rig = Rig::start().await?;
    let lock = NaiveLock::new(&rig.session, "naive-retry")?;
    rig.abandon(lock.lock()).await?;
    let guard = tokio::time::timeout(Duration::from_secs(20), lock.lock())
        .await
        .context("the retry waited on the abandoned attempt's key")??;
    guard.unlock().await?;
    rig.nothing_left("naive-retry", "NaiveLock unlock()").await
}

/// Barriers and queues: an enter or enqueue whose create is applied but whose answer is late
/// leaves nothing behind (a double barrier would otherwise count a participant that is gone; a
/// queue would hand out an item its producer was told had failed, and the producer's retry would
/// add it twice). Both read once before they write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_enter_or_enqueue_leaves_nothing() -> Result<()> {
    let rig = Rig::start().await?;
    let mut barrier = DoubleBarrier::new(&rig.session, "abandoned-barrier", 2)?.with_tracer(rig.delay_answers_after(1));
    rig.give_up(barrier.enter()).await?;
    rig.nothing_left("abandoned-barrier", "DoubleBarrier enter()").await?;

    let queue = Queue::new(&rig.slow, "abandoned-queue")?.with_tracer(rig.delay_answers_after(1));
    rig.give_up(queue.enqueue("job")).await?;
    rig.nothing_left("abandoned-queue", "Queue enqueue()").await
}

/// A cancelled `unlock()` or `resign()` still releases: the cleanup is disarmed only after it
/// succeeded. Every byte is delayed both ways, so the cancelled request never took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_unlock_or_resign_still_releases() -> Result<()> {
    let rig = Rig::start().await?;
    for strategy in Strategy::ALL {
        let name = format!("unlock/{strategy}");
        let guard = strategy.new_lock(&rig.session, &name)?.lock().await?;
        ensure!(rig.count(&name).await? == 1, "{strategy}: no lock key");
        rig.proxy.set_delay(SLOW);
        rig.give_up(guard.unlock()).await?;
        rig.nothing_left(&name, &format!("{strategy} cancelled unlock()")).await?;
    }
    let leader = Election::new(&rig.session, "resign")?.campaign("me").await?;
    rig.proxy.set_delay(SLOW);
    rig.give_up(leader.resign()).await?;
    rig.nothing_left("resign", "cancelled resign()").await
}

/// `valid_until` counts from when the keep-alive was *sent*: with every byte delayed by `delay`
/// each way, the deadline a keep-alive answer gives is at least two delays short of (now + TTL).
/// Counting from the arrival instead would overstate it by both delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_until_counts_from_the_keep_alive_send_time() -> Result<()> {
    let etcd = single()?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let slow = Client::connect([proxy.url()], ClientOptions::default()).await?;
    // A keep-alive every 2 s (TTL / 3), each answered well within that even when delayed.
    let session = Session::builder(&slow).ttl(6).build().await?;
    let guard = Mutex::new(&session, "valid")?.lock().await?;
    let first = eventually(Duration::from_secs(10), "a keep-alive answer", || async { guard.valid_until() }).await?;
    let delay = Duration::from_millis(500);
    proxy.set_delay(delay);
    // The second answer after the delay was set: its request was sent after the first one's
    // answer arrived, so both its legs were delayed.
    let mut seen = vec![first];
    let until = eventually(Duration::from_secs(30), "two keep-alive answers through the delay", || {
        let now = guard.valid_until();
        if let Some(v) = now.filter(|v| seen.last() != Some(v)) {
            seen.push(v);
        }
        let third = seen.get(2).copied();
        async move { third }
    })
    .await?;
    let left = until.saturating_duration_since(std::time::Instant::now());
    let bound = session.ttl() - 2 * delay;
    ensure!(left <= bound, "valid for {left:?} more, beyond TTL - 2 x delay = {bound:?}");
    proxy.set_delay(Duration::ZERO);
    guard.unlock().await?;
    Ok(())
}
