//! Semaphore: up to N holders of a name at once, like Curator's `InterProcessSemaphoreV2` and
//! `consul lock -n`. Each permit is one key with its own fencing token (its create revision),
//! bound to the session's lease, so a holder that dies frees its permit at its TTL.
//!
//! Acquisitions stand in line under `<name>/` as `<name>/<lease id in hex>-<unique>` (see
//! `line.rs`); the N oldest keys hold the permits. In RPCs:
//!
//! - acquire: one Txn to join the line and learn the N + 1 newest keys ahead (fewer than N
//!   ahead: this Txn is all). Then:
//!   - exactly N ahead (we are the first waiter): watch all N (each twice, against a late watch)
//!     and our own key, one Txn to close the gap unless nothing was written since the join; the
//!     first DELETE among them puts us in, with no read;
//!   - more than N ahead: watch only our predecessor (the waiter just ahead); its DELETE, or
//!     its *mark* (below), costs one read-only Txn naming who is ahead now, and a new target.
//!
//!   A waiter that gets in marks its key, one fenced Txn
//!   `If(CreateRevision(me) == my revision) Then Put(me, "", lease)`, which tells the one waiter
//!   behind it to watch the holders now. So a release reaches exactly one waiter (the first), and
//!   its mark exactly one more (the next, which moves up); nobody else wakes. Contended, an
//!   acquisition is the join, at most two gap reads, one read after the predecessor's mark and
//!   the mark: 5 RPCs at most, at any number of waiters (a waiter leaving ahead of us adds one
//!   read).
//! - try_acquire: the same first Txn; with N or more ahead, a fenced delete of our key and
//!   [`Error::Locked`].
//! - release ([`LockGuard::unlock`]): `Txn If(CreateRevision(me) == my revision) Then Delete(me)`.
//!
//! Why not watch only the key N places ahead: when a holder other than the oldest leaves, the
//! first waiter is in, yet the key N places ahead of it (the oldest holder) stays; the one waiter
//! that saw the DELETE (N behind the leaver) is not in, and the permit would sit idle until the
//! oldest holder left. `line.rs` ("N at the front") has the details.
//!
//! As with the Mutex: a waiter whose session ends fails at once with [`Error::SessionExpired`];
//! a dropped `acquire` future removes its key, and a failed `try_acquire` leaves none. Keys are
//! unique per acquisition, so one session may hold several permits; every process must use the
//! same N for a name.

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::line::{Rule, join};
use crate::lock::{DistributedLock, LockGuard, Strategy};
use crate::queue::unique_name;
use crate::session::Session;
use crate::trace::Tracer;
use crate::wait::check_name;

/// A distributed counting semaphore on a name: up to `permits` holders at once, each with a
/// [`LockGuard`] of its own. See the module docs for the algorithm.
///
/// With one permit it is a fair mutex; as a [`DistributedLock`] it is [`Strategy::Semaphore`]'s
/// lock, whose `lock()` and `try_lock()` are [`acquire`](Self::acquire) and
/// [`try_acquire`](Self::try_acquire).
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    prefix: String,
    permits: usize,
    tracer: Tracer,
}

impl Semaphore {
    /// A semaphore of `permits` permits on `name` (keys live under `name/`). Fails with
    /// [`Error::InvalidArgument`] on an empty name or zero permits.
    pub fn new(session: &Session, name: &str, permits: usize) -> Result<Semaphore> {
        check_name(name)?;
        if permits == 0 {
            return Err(Error::invalid("a semaphore needs at least one permit"));
        }
        Ok(Semaphore { session: session.clone(), prefix: format!("{name}/"), permits, tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// How many may hold at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Waits until a permit is ours. Dropping the future before it resolves leaves the line
    /// (our key is removed).
    pub async fn acquire(&self) -> Result<LockGuard> {
        self.take("acquire", false).await
    }

    /// Takes a permit if one is free and nobody waits for it; otherwise removes our key and
    /// fails with [`Error::Locked`].
    pub async fn try_acquire(&self) -> Result<LockGuard> {
        self.take("try_acquire", true).await
    }

    async fn take(&self, op_name: &'static str, just_try: bool) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "semaphore", op_name);
        let key = Bytes::from(format!("{}{:x}-{}", self.prefix, self.session.lease_id(), unique_name()));
        let blockers = Bytes::from(self.prefix.clone());
        let rule = Rule::Permits(self.permits);
        let place = join(&self.session, key, blockers, Bytes::new(), None, rule, &mut op).await?;
        if just_try && !place.is_front() {
            place.leave(&mut op).await?;
            return Err(Error::Locked);
        }
        let place = place.wait_front_or_leave(&mut op).await?;
        Ok(place.into_guard(&op))
    }
}

impl DistributedLock for Semaphore {
    fn strategy(&self) -> Strategy {
        Strategy::Semaphore
    }
    fn lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(self.acquire())
    }
    fn try_lock(&self) -> BoxFuture<'_, Result<LockGuard>> {
        Box::pin(self.try_acquire())
    }
}
