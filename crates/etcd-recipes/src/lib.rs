//! Distributed locks, elections and etcd's other recipes, built from scratch on [`etcd_wire`].
//!
//! The lock strategies, interchangeable behind [`DistributedLock`]:
//!
//! | strategy | waiting | a release wakes | crash of the holder |
//! |---|---|---|---|
//! | [`Mutex`] | on the two keys ahead, revision-ordered (fair) | the next waiter (and the one after reads once) | released at the session TTL |
//! | [`NaiveLock`] | on the one key, then retry | every waiter (the herd) | released at the session TTL |
//! | [`LeaseTtlLock`] | on the one key, then retry | every waiter | released at the lock's own TTL |
//! | [`RpcLock`] | inside etcd (`v3lock`) | one waiter, ~100 ms later | released at the session TTL |
//! | [`Semaphore`] (N permits; 1 as a strategy) | the first waiter on the N holders, the rest on their predecessor | the first waiter (its mark then the next) | released at the session TTL |
//!
//! etcd's other recipes: [`RwMutex`], [`Semaphore`] (up to N holders), [`MultiLock`] (several
//! Mutexes taken as one, in one global order, so never deadlocked), [`Barrier`],
//! [`DoubleBarrier`], [`Queue`], [`PriorityQueue`] and software transactional memory ([`stm`])
//! with its four [`Isolation`] levels.
//!
//! A [`Mutex`] lock survives a restart of its holder: persist the guard's
//! [`resume_token`](LockGuard::resume_token), and take the lock back with [`Session::resume`] and
//! [`Mutex::resume`] (one Txn, no waiting in line, the same fencing token) or learn precisely why
//! it is lost ([`Unresumable`]).
//!
//! | recipe | for | state | crash of the leader |
//! |---|---|---|---|
//! | [`Election`] | one campaign: a [`Leadership`] to hold, proclaim and resign | `observe()` stream of leaders | next leader at the session TTL |
//! | [`LeaderLatch`] | "do work while leader": campaigns again after every loss, with a new lease | a `watch` of [`LatchState`]; `is_leader()` false once `valid_until` passes by the local clock | next leader at the TTL, after the old one stopped claiming |
//!
//! Every recipe binds its keys to a [`Session`]'s lease and states its algorithm in RPCs at the top
//! of its file. Every lock hands out a [`LockGuard`] whose [`fencing_token`](LockGuard::fencing_token)
//! and [`txn`](LockGuard::txn) keep a holder that lost its lock from writing.
//!
//! # Cargo features
//! - **`tls`** (default), **`tls-webpki-roots`**, **`tls-native-roots`**: etcd-wire's features of
//!   the same names (`default-features = false` builds no rustls or ring).
//! - **`metrics`**: lock wait, hold and loss through the `metrics` facade, and etcd-wire's RPC
//!   metrics; [`observe`] lists what is recorded.
//!
//! # Guarantees
//! - **A guard is a proof of ownership.** It owns its session (the lease lives while the guard
//!   does); [`valid_until`](LockGuard::valid_until) is the instant before which the lock is provably
//!   still ours, [`lost`](LockGuard::lost) resolves when it can no longer be trusted, and
//!   [`while_held`](LockGuard::while_held) runs work only until then.
//! - **One holder per session and name.** Tasks sharing a session exclude each other for every
//!   strategy, as tasks in different sessions do; dropping a guard and locking again at once waits
//!   for the dropped guard's release to land. Locks are therefore not re-entrant.
//! - **Nothing is left behind.** A dropped `lock()`/`campaign()`/wait removes its key; a request
//!   whose answer never arrives leaves no key on a live lease (its cleanup was armed before it was
//!   sent); a cancelled `unlock()` or `resign()` still happens, in the background.
//! - **Every strategy ends the same way.** A waiter whose lease is gone fails with
//!   [`Error::SessionExpired`] (never a raw `LeaseNotFound`); a blocker that is no lock key (it has
//!   no lease) fails the wait with [`Error::ForeignKey`].
//!
//! `tests/RELIABILITY.md` in the repository shows each of these tested against real etcd.
//!
//! ```no_run
//! # async fn demo() -> etcd_recipes::Result<()> {
//! use etcd_recipes::{Mutex, Session};
//! use etcd_recipes::etcd_wire::{Client, ClientOptions, PutOptions, TxnOp};
//!
//! let client = Client::connect(["127.0.0.1:2379"], ClientOptions::default()).await?;
//! let session = Session::new(&client).await?;
//! let mutex = Mutex::new(&session, "jobs/nightly")?;
//! let guard = mutex.lock().await?;
//! // A write that lands only while we still hold the lock:
//! let txn = guard.txn().and_then([TxnOp::put("jobs/state", "running", PutOptions::new())]);
//! assert!(client.txn(txn).await?.succeeded);
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

mod barrier;
mod cleanup;
mod election;
mod error;
mod held;
mod latch;
mod line;
mod lock;
mod multilock;
mod mutex;
mod naive;
pub mod observe;
mod queue;
mod resume;
mod rpc_lock;
mod rwmutex;
mod semaphore;
mod session;
mod stm;
mod trace;
mod ttl_lock;
mod wait;

pub use barrier::{Barrier, DoubleBarrier};
pub use election::{Election, ElectionObserver, Leadership};
pub use error::{Error, Result};
/// The client these recipes run on, re-exported so `guard.txn()` users need no second dependency.
pub use etcd_wire;
pub use held::Lost;
pub use latch::{LatchBuilder, LatchState, LeaderLatch};
pub use lock::{DistributedLock, LockGuard, Strategy};
pub use multilock::{MultiGuard, MultiLock};
pub use mutex::Mutex;
pub use naive::NaiveLock;
pub use queue::{PriorityQueue, Queue};
pub use resume::{ResumeToken, Unresumable};
pub use rpc_lock::RpcLock;
pub use rwmutex::RwMutex;
pub use semaphore::Semaphore;
pub use session::{DEFAULT_TTL, Session, SessionBuilder, SessionEnd};
pub use stm::{Isolation, Stm, StmOptions, stm, stm_with};
pub use trace::{OpStats, TraceEvent, TraceKind, Tracer};
pub use ttl_lock::LeaseTtlLock;

/// The crate README's program, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
