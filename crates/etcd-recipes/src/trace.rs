//! What a recipe did, for people studying the algorithms and for the benchmarks' herd metric.
//!
//! Every recipe takes a [`Tracer`] (off by default). Each operation (`lock`, `unlock`,
//! `campaign`, ...) counts the RPCs it issued, the watches it opened and the watch events it
//! received, returned as [`OpStats`]; with a sink installed, every step is also reported as a
//! [`TraceEvent`] as it happens (the CLI's `--trace` prints them).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_wire::{Client, GetOptions, GetResponse, Txn, TxnResponse, WatchOptions, Watcher};

use crate::error::Result as RecipeResult;

/// Counts for one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpStats {
    /// Unary RPCs issued (Txn, Range, DeleteRange, LeaseGrant, Lock, ...).
    pub rpcs: u32,
    /// Watches created.
    pub watches: u32,
    /// Watch events received.
    pub watch_events: u32,
    /// Wall time from the operation's start to its end.
    pub elapsed: Duration,
}

impl std::ops::AddAssign for OpStats {
    fn add_assign(&mut self, o: OpStats) {
        self.rpcs += o.rpcs;
        self.watches += o.watches;
        self.watch_events += o.watch_events;
        self.elapsed += o.elapsed;
    }
}

/// One step of one operation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TraceEvent {
    /// The recipe ("mutex", "naive", "lease-ttl", "rpc-lock", "election", ...).
    pub recipe: &'static str,
    /// The operation ("lock", "try_lock", "unlock", "campaign", ...).
    pub op: &'static str,
    /// Time since the operation started.
    pub at: Duration,
    /// What happened.
    pub kind: TraceKind,
}

/// What a [`TraceEvent`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TraceKind {
    /// A unary RPC finished.
    Rpc {
        /// RPC name (`Txn`, `Range`, ...).
        name: &'static str,
        /// The key it concerned.
        key: String,
        /// How long it took.
        took: Duration,
        /// The store revision in the answer's header (0 on error).
        revision: i64,
        /// `ok`, the branch a txn took, or the error.
        outcome: String,
    },
    /// A watch was opened.
    Watch {
        /// The key or prefix watched.
        key: String,
        /// The revision the watch starts after.
        revision: i64,
    },
    /// A watch event arrived.
    Event {
        /// The key.
        key: String,
        /// `PUT` or `DELETE`.
        kind: &'static str,
        /// The event's revision.
        revision: i64,
    },
    /// A decision, in words ("waiting on predecessor k (create revision 42)").
    Note(String),
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.at.as_secs_f64() * 1000.0;
        write!(f, "[{ms:>9.3} ms] {}.{}: ", self.recipe, self.op)?;
        match &self.kind {
            TraceKind::Rpc { name, key, took, revision, outcome } => {
                write!(f, "{name} {key} -> {outcome} @rev {revision} ({:.3} ms)", took.as_secs_f64() * 1000.0)
            }
            TraceKind::Watch { key, revision } => write!(f, "watch {key} from rev {}", revision + 1),
            TraceKind::Event { key, kind, revision } => write!(f, "event {kind} {key} @rev {revision}"),
            TraceKind::Note(text) => f.write_str(text),
        }
    }
}

type Sink = Arc<dyn Fn(&TraceEvent) + Send + Sync>;

/// Where trace events go. `Tracer::default()` discards them (counting still happens).
#[derive(Clone, Default)]
pub struct Tracer {
    sink: Option<Sink>,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer").field("enabled", &self.sink.is_some()).finish()
    }
}

impl Tracer {
    /// Sends every event to `sink`.
    pub fn new(sink: impl Fn(&TraceEvent) + Send + Sync + 'static) -> Self {
        Tracer { sink: Some(Arc::new(sink)) }
    }

    /// Prints every event on stderr, one line each, prefixed with `label`.
    pub fn stderr(label: impl Into<String>) -> Self {
        let label = label.into();
        Tracer::new(move |e| eprintln!("{label} {e}"))
    }

    /// Whether events are delivered anywhere.
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// The recorder of one operation of `recipe`, whose RPCs go through `client`.
    pub(crate) fn op(&self, client: &Client, recipe: &'static str, op: &'static str) -> OpTrace {
        OpTrace {
            client: client.clone(),
            tracer: self.clone(),
            recipe,
            op,
            start: Instant::now(),
            stats: OpStats::default(),
        }
    }
}

/// The recorder of one operation, and the traced client it talks through: every RPC a recipe
/// issues goes through [`OpTrace::txn`], [`OpTrace::get`], [`OpTrace::watch`] or [`OpTrace::rpc`],
/// so it is counted, reported, and its error mapped to the recipes' [`Error`](crate::Error).
#[derive(Debug)]
pub(crate) struct OpTrace {
    client: Client,
    tracer: Tracer,
    recipe: &'static str,
    op: &'static str,
    start: Instant,
    stats: OpStats,
}

/// A response that carries the store revision it was answered at.
pub(crate) trait Revisioned {
    fn revision(&self) -> i64;
    fn outcome(&self) -> String {
        "ok".to_owned()
    }
}

macro_rules! revisioned {
    ($($t:ty),*) => {$(
        impl Revisioned for $t {
            fn revision(&self) -> i64 { self.header.revision }
        }
    )*};
}
revisioned!(
    etcd_wire::GetResponse,
    etcd_wire::PutResponse,
    etcd_wire::DeleteResponse,
    etcd_wire::LockResponse,
    etcd_wire::LeaseGrantResponse
);

impl Revisioned for etcd_wire::TxnResponse {
    fn revision(&self) -> i64 {
        self.header.revision
    }
    fn outcome(&self) -> String {
        if self.succeeded { "then" } else { "else" }.to_owned()
    }
}

impl Revisioned for etcd_wire::ResponseHeader {
    fn revision(&self) -> i64 {
        self.revision
    }
}

impl Revisioned for () {
    fn revision(&self) -> i64 {
        0
    }
}

impl OpTrace {
    /// The client this operation talks through.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Where this operation's events go.
    pub(crate) fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The recipe this operation belongs to.
    pub(crate) fn recipe(&self) -> &'static str {
        self.recipe
    }

    /// One traced Txn; `label` names it in traces (`Txn`, `Txn(check)`, ...).
    pub(crate) async fn txn(&mut self, label: &'static str, key: &[u8], txn: Txn) -> RecipeResult<TxnResponse> {
        let client = self.client.clone();
        Ok(self.rpc(label, key, client.txn(txn)).await?)
    }

    /// One traced Range.
    pub(crate) async fn get(&mut self, key: &Bytes, options: GetOptions) -> RecipeResult<GetResponse> {
        let client = self.client.clone();
        Ok(self.rpc("Range", key, client.get(key.clone(), options)).await?)
    }

    /// Opens watches (stream messages on the client's shared watch stream, not RPCs), all at
    /// once (pipelined: one round trip for all), and records them, in the order given.
    pub(crate) async fn watch_all(&mut self, watches: Vec<(Bytes, WatchOptions)>) -> RecipeResult<Vec<Watcher>> {
        let client = self.client.clone();
        let opened = futures::future::try_join_all(
            watches.iter().map(|(key, options)| client.watch(key.clone(), options.clone())),
        )
        .await?;
        for ((key, _), w) in watches.iter().zip(&opened) {
            self.watched(key, w.created_revision());
        }
        Ok(opened)
    }

    /// Awaits one RPC, counting and reporting it.
    pub(crate) async fn rpc<T: Revisioned, E: fmt::Display>(
        &mut self,
        name: &'static str,
        key: &[u8],
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        // Counted once sent: a call dropped before its answer (a lost select, a cancelled lock)
        // reached the server all the same, and etcd's own count includes it.
        self.stats.rpcs += 1;
        let mut abandoned = Abandoned { trace: self, name, key, started, armed: true };
        let result = call.await;
        abandoned.armed = false;
        if self.tracer.is_enabled() {
            let (revision, outcome) = match &result {
                Ok(r) => (r.revision(), r.outcome()),
                Err(e) => (0, format!("error: {e}")),
            };
            let key = String::from_utf8_lossy(key).into_owned();
            self.emit(TraceKind::Rpc { name, key, took: started.elapsed(), revision, outcome });
        }
        result
    }

    /// Records a watch opened on `key`, starting after `revision`.
    pub(crate) fn watched(&mut self, key: &[u8], revision: i64) {
        self.stats.watches += 1;
        if self.tracer.is_enabled() {
            self.emit(TraceKind::Watch { key: String::from_utf8_lossy(key).into_owned(), revision });
        }
    }

    /// Records a watch event.
    pub(crate) fn event(&mut self, key: &[u8], delete: bool, revision: i64) {
        self.stats.watch_events += 1;
        if self.tracer.is_enabled() {
            let kind = if delete { "DELETE" } else { "PUT" };
            self.emit(TraceKind::Event { key: String::from_utf8_lossy(key).into_owned(), kind, revision });
        }
    }

    /// Records a decision; the text is built only when a sink listens.
    pub(crate) fn note(&self, text: impl FnOnce() -> String) {
        if self.tracer.is_enabled() {
            self.emit(TraceKind::Note(text()));
        }
    }

    /// The counts so far, with the elapsed time.
    pub(crate) fn finish(&self) -> OpStats {
        OpStats { elapsed: self.start.elapsed(), ..self.stats }
    }

    fn emit(&self, kind: TraceKind) {
        if let Some(sink) = &self.tracer.sink {
            sink(&TraceEvent { recipe: self.recipe, op: self.op, at: self.start.elapsed(), kind });
        }
    }
}

/// Reports an RPC whose future was dropped before its answer, from `Drop`: it was sent, so the
/// trace (and every count built on it) has it, with the outcome "abandoned". Disarmed once the
/// answer arrived.
struct Abandoned<'a> {
    trace: &'a OpTrace,
    name: &'static str,
    key: &'a [u8],
    started: Instant,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed && self.trace.tracer.is_enabled() {
            let key = String::from_utf8_lossy(self.key).into_owned();
            let (took, outcome) = (self.started.elapsed(), "abandoned".to_owned());
            self.trace.emit(TraceKind::Rpc { name: self.name, key, took, revision: 0, outcome });
        }
    }
}
