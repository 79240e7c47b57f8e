//! The lock-strategy comparison: N contenders loop `lock → hold → unlock` on one lock for a while,
//! and the run reports throughput, how long acquisitions waited, how long each handoff took
//! (holder starts its unlock → the next holder's `lock` returns), and the RPCs, watches and watch
//! events each acquisition cost. The benches, the report and `etcd-recipes bench` all use it.
//!
//! Contenders are anything implementing [`Contender`]: every strategy of `etcd-recipes` (see
//! [`recipe_contenders`]), and peers such as other client libraries, which the benches add.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_recipes::{DistributedLock, LockGuard, Session, Strategy, TraceKind, Tracer};
use etcd_wire::{Client, ClientOptions};
use futures::future::BoxFuture;

/// What can go wrong in a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lock recipe failed.
    #[error(transparent)]
    Recipe(#[from] etcd_recipes::Error),
    /// The client failed.
    #[error(transparent)]
    Etcd(#[from] etcd_wire::Error),
    /// A peer implementation failed.
    #[error("{0}")]
    Peer(String),
    /// Two contenders held the lock at once: the lock is broken, the numbers meaningless.
    #[error("mutual exclusion violated: two holders at once")]
    Exclusion,
}

/// A specialised `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One participant: takes and releases the lock under test.
pub trait Contender: Send {
    /// Waits until the lock is held.
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>>;
    /// Releases the lock held.
    fn release(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// Whether contenders share one client (one HTTP/2 connection) or each has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Clients {
    /// One client for all contenders.
    Shared,
    /// A client per contender.
    Separate,
}

impl Clients {
    /// `shared` or `separate`.
    pub fn name(self) -> &'static str {
        match self {
            Clients::Shared => "shared",
            Clients::Separate => "separate",
        }
    }
}

/// RPC, watch and event counts, shared by every contender of a run, and when each happened
/// to which contender (for the timeline).
#[derive(Debug, Default)]
pub struct Counters {
    /// Unary RPCs issued.
    pub rpcs: AtomicU64,
    /// Watches created.
    pub watches: AtomicU64,
    /// Watch events received.
    pub events: AtomicU64,
    marks: StdMutex<Vec<(usize, MarkKind, Instant)>>,
}

/// What a [`Mark`] on a contender's timeline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarkKind {
    /// A unary RPC answered (or abandoned).
    Rpc,
    /// A watch created.
    Watch,
    /// A watch event received.
    Event,
}

impl Counters {
    /// A tracer that counts into these counters, for contender number `contender` (its index
    /// in the contenders handed to [`run`]).
    pub fn tracer(self: &Arc<Self>, contender: usize) -> Tracer {
        let me = self.clone();
        Tracer::new(move |e| {
            let kind = match e.kind {
                TraceKind::Rpc { .. } => MarkKind::Rpc,
                TraceKind::Watch { .. } => MarkKind::Watch,
                TraceKind::Event { .. } => MarkKind::Event,
                _ => return,
            };
            me.count(contender, kind);
        })
    }

    /// Counts one `kind` for `contender`, now.
    pub fn count(&self, contender: usize, kind: MarkKind) {
        let c = match kind {
            MarkKind::Rpc => &self.rpcs,
            MarkKind::Watch => &self.watches,
            MarkKind::Event => &self.events,
        };
        c.fetch_add(1, Ordering::Relaxed);
        lock(&self.marks).push((contender, kind, Instant::now()));
    }
}

/// One acquisition on a contender's timeline, as offsets from the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cycle {
    /// The contender (its index in the contenders handed to [`run`]).
    pub contender: usize,
    /// `lock` called.
    pub asked: Duration,
    /// `lock` returned: the lock is held.
    pub got: Duration,
    /// The holder started its unlock.
    pub releasing: Duration,
    /// The unlock returned.
    pub released: Duration,
}

/// A moment on a contender's timeline: an RPC answered, a watch created, an event received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mark {
    /// The contender.
    pub contender: usize,
    /// What happened.
    pub kind: MarkKind,
    /// When, from the run's start.
    pub at: Duration,
}

/// A contender driving one of this project's lock strategies.
struct RecipeContender {
    lock: Box<dyn DistributedLock>,
    held: Option<LockGuard>,
    _session: Session,
}

impl Contender for RecipeContender {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.held = Some(self.lock.lock().await?);
            Ok(())
        })
    }
    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(g) = self.held.take() {
                g.unlock().await?;
            }
            Ok(())
        })
    }
}

/// `n` contenders of `strategy` on lock `name`, each with its own session (TTL `ttl` seconds), on
/// one shared client or a client each. Their RPCs, watches and events are counted in the result.
pub async fn recipe_contenders(
    endpoints: &[String],
    options: &ClientOptions,
    strategy: Strategy,
    n: usize,
    clients: Clients,
    name: &str,
    ttl: i64,
) -> Result<(Vec<Box<dyn Contender>>, Arc<Counters>)> {
    let counters = Arc::new(Counters::default());
    let shared = Client::connect(endpoints, options.clone()).await?;
    let mut out: Vec<Box<dyn Contender>> = Vec::with_capacity(n);
    for i in 0..n {
        let client = match clients {
            Clients::Shared => shared.clone(),
            Clients::Separate => Client::connect(endpoints, options.clone()).await?,
        };
        let session = Session::builder(&client).ttl(ttl).build().await?;
        let lock = strategy.new_traced_lock(&session, name, counters.tracer(i))?;
        out.push(Box::new(RecipeContender { lock, held: None, _session: session }));
    }
    Ok((out, counters))
}

/// The numbers of one run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Outcome {
    /// Lock acquisitions completed.
    pub acquisitions: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time each `lock` call took, sorted.
    pub waits: Vec<Duration>,
    /// For acquisitions that waited on a release: that release's start → this `lock` returning, sorted.
    pub handoffs: Vec<Duration>,
    /// RPCs / watches / events over the run (locks and unlocks), when counted.
    pub rpcs: Option<u64>,
    /// Watches created over the run, when counted.
    pub watches: Option<u64>,
    /// Watch events received over the run, when counted.
    pub events: Option<u64>,
    /// Every acquisition, by contender, in the order they completed.
    pub cycles: Vec<Cycle>,
    /// Every counted RPC, watch and event of the run, by contender (empty when not counted).
    pub marks: Vec<Mark>,
}

impl Outcome {
    /// Acquisitions per second.
    pub fn throughput(&self) -> f64 {
        self.acquisitions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// The `q` quantile (0..=1) of the waits.
    pub fn wait(&self, q: f64) -> Duration {
        quantile(&self.waits, q)
    }
    /// The `q` quantile (0..=1) of the handoffs.
    pub fn handoff(&self, q: f64) -> Duration {
        quantile(&self.handoffs, q)
    }
    /// RPCs per acquisition (lock + unlock), when counted.
    pub fn rpcs_per_acquisition(&self) -> Option<f64> {
        self.rpcs.map(|r| r as f64 / self.acquisitions.max(1) as f64)
    }
    /// Watch events per acquisition, when counted.
    pub fn events_per_acquisition(&self) -> Option<f64> {
        self.events.map(|e| e as f64 / self.acquisitions.max(1) as f64)
    }
}

/// The `q` quantile of sorted samples (nearest rank); zero when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Until {
    /// After this long (contenders finish the cycle they are in).
    Elapsed(Duration),
    /// After this many acquisitions in all.
    Acquisitions(u64),
}

/// Runs the contenders: each loops `acquire → hold → release` until `until`. Checks mutual
/// exclusion on every acquisition and fails the run with [`Error::Exclusion`] if it breaks.
pub async fn run(
    contenders: Vec<Box<dyn Contender>>,
    hold: Duration,
    until: Until,
    counters: Option<&Counters>,
) -> Result<Outcome> {
    let before = counters.map(|c| (load(&c.rpcs), load(&c.watches), load(&c.events)));
    let shared = Arc::new(Shared {
        holding: AtomicBool::new(false),
        released_at: StdMutex::new(None),
        acquisitions: AtomicU64::new(0),
        samples: StdMutex::new((Vec::new(), Vec::new())),
        cycles: StdMutex::new(Vec::new()),
    });
    let start = Instant::now();
    let tasks: Vec<_> = contenders
        .into_iter()
        .enumerate()
        .map(|(contender, mut c)| {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let done = match until {
                        Until::Elapsed(d) => start.elapsed() >= d,
                        Until::Acquisitions(n) => shared.acquisitions.load(Ordering::SeqCst) >= n,
                    };
                    if done {
                        return Ok(());
                    }
                    let asked = Instant::now();
                    c.acquire().await?;
                    let got = Instant::now();
                    if shared.holding.swap(true, Ordering::SeqCst) {
                        return Err(Error::Exclusion);
                    }
                    shared.acquisitions.fetch_add(1, Ordering::SeqCst);
                    let released = *lock(&shared.released_at);
                    {
                        let mut s = lock(&shared.samples);
                        s.0.push(got - asked);
                        if let Some(r) = released.filter(|r| *r > asked) {
                            s.1.push(got.saturating_duration_since(r));
                        }
                    }
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    shared.holding.store(false, Ordering::SeqCst);
                    let releasing = Instant::now();
                    *lock(&shared.released_at) = Some(releasing);
                    c.release().await?;
                    let at = |t: Instant| t.saturating_duration_since(start);
                    let cycle = Cycle {
                        contender,
                        asked: at(asked),
                        got: at(got),
                        releasing: at(releasing),
                        released: at(Instant::now()),
                    };
                    lock(&shared.cycles).push(cycle);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| Error::Peer(format!("contender task: {e}")))??;
    }
    let elapsed = start.elapsed();
    let (mut waits, mut handoffs) = std::mem::take(&mut *lock(&shared.samples));
    waits.sort_unstable();
    handoffs.sort_unstable();
    let delta = |now: u64, then: u64| now.saturating_sub(then);
    let (rpcs, watches, events) = match (counters, before) {
        (Some(c), Some((r, w, e))) => {
            (Some(delta(load(&c.rpcs), r)), Some(delta(load(&c.watches), w)), Some(delta(load(&c.events), e)))
        }
        _ => (None, None, None),
    };
    let marks = counters.map_or_else(Vec::new, |c| {
        let marks = std::mem::take(&mut *lock(&c.marks));
        marks
            .into_iter()
            .filter(|(_, _, t)| *t >= start)
            .map(|(contender, kind, t)| Mark { contender, kind, at: t - start })
            .collect()
    });
    let cycles = std::mem::take(&mut *lock(&shared.cycles));
    Ok(Outcome {
        acquisitions: shared.acquisitions.load(Ordering::SeqCst),
        elapsed,
        waits,
        handoffs,
        rpcs,
        watches,
        events,
        cycles,
        marks,
    })
}

struct Shared {
    holding: AtomicBool,
    released_at: StdMutex<Option<Instant>>,
    acquisitions: AtomicU64,
    samples: StdMutex<(Vec<Duration>, Vec<Duration>)>,
    cycles: StdMutex<Vec<Cycle>>,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let s: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&s, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&s, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}

/// One measured point: who ran, with how many contenders, on what clients, and the outcome.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Point {
    /// The strategy's (or peer's) name, e.g. `mutex` or `etcd-client rpc`.
    pub label: String,
    /// Number of contenders.
    pub contenders: usize,
    /// Shared or separate clients.
    pub clients: Clients,
    /// The numbers.
    pub outcome: Outcome,
}

impl Point {
    /// A point.
    pub fn new(label: impl Into<String>, contenders: usize, clients: Clients, outcome: Outcome) -> Self {
        Point { label: label.into(), contenders, clients, outcome }
    }
}

/// The summary table, as GitHub markdown: one row per point.
pub fn table(points: &[Point]) -> String {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let per = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    let mut out = String::from(
        "| strategy | contenders | clients | locks/s | wait p50 ms | wait p99 ms | wait max ms | handoff p50 ms | handoff p99 ms | RPCs/lock | events/lock |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let o = &p.outcome;
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.label,
            p.contenders,
            p.clients.name(),
            o.throughput(),
            ms(o.wait(0.5)),
            ms(o.wait(0.99)),
            ms(o.wait(1.0)),
            ms(o.handoff(0.5)),
            ms(o.handoff(0.99)),
            per(o.rpcs_per_acquisition()),
            per(o.events_per_acquisition()),
        ));
    }
    out
}
