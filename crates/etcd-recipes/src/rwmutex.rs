//! RwMutex: a revision-ordered readers-writer lock, after Go's `recipe.RWMutex`.
//!
//! Every `read_lock` queues as a key `<name>/read/<unique>`, every `write_lock` as
//! `<name>/write/<unique>`, bound to the session's lease; the queue order is the create revision.
//! A reader's blockers are the writers (`<name>/write/`), a writer's are every key (`<name>/`).
//! The line is the Mutex's (`line.rs`), so in RPCs:
//!
//! 1. `Txn If(CreateRevision(me) == 0)
//!    Then(Range(<blockers>, newest by create revision), Put(me, lease)) Else(Range(me))`.
//!    The Range runs before the Put, so it names the two newest blockers created before us. None:
//!    the lock is ours (uncontended: this one Txn).
//! 2. While there is a blocker: watch the two newest (from now, see `wait.rs`) along with our own
//!    key, one Txn to close the gap, and wait for a DELETE. When the older of two goes, one
//!    read-only Txn asks "do I still exist, and who are the two newest blockers created before
//!    me?"; when the only one left goes, the lock is ours (nothing created later is a blocker
//!    created before us).
//! 3. Unlock: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`.
//!
//! Step 2 is the fix for etcd #16221: Go's waiter never checks its own key, so a writer whose session
//! expired while it waited still "gets" the lock once its predecessors go, alongside the writer that
//! queued behind it. Here a waiter whose key vanishes fails with [`Error::SessionExpired`] at once,
//! and a predecessor going away is taken to mean the lock is ours only when a read showed it was
//! the last blocker ahead. A blocker
//! without a lease fails the wait with [`Error::ForeignKey`]. A dropped `read_lock`/`write_lock`
//! future removes its key, and so does one whose join answer was lost; a failed `try_` leaves none.
//! Keys are unique per acquisition, so readers of one session share the lock and its writers
//! queue like anyone else's.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::line::{Rule, join};
use crate::lock::LockGuard;
use crate::queue::unique_name;
use crate::session::Session;
use crate::trace::Tracer;
use crate::wait::check_name;

/// A distributed readers-writer lock on a name, for one session: any number of readers, or one
/// writer. Fair: a reader queued after a writer waits for it. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct RwMutex {
    session: Session,
    prefix: String,
    tracer: Tracer,
}

/// Which side of the lock an acquisition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl RwMutex {
    /// A readers-writer lock on `name` (keys live under `name/`). Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<RwMutex> {
        check_name(name)?;
        Ok(RwMutex { session: session.clone(), prefix: format!("{name}/"), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Waits until the lock is held for reading: no writer queued before us remains.
    pub async fn read_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Read, "read_lock", false).await
    }

    /// Waits until the lock is held for writing: no key queued before us remains.
    pub async fn write_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Write, "write_lock", false).await
    }

    /// Takes the lock for reading if no writer holds or waits for it; otherwise fails with
    /// [`Error::Locked`], leaving no key.
    pub async fn try_read_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Read, "try_read_lock", true).await
    }

    /// Takes the lock for writing if nobody holds or waits for it; otherwise fails with
    /// [`Error::Locked`], leaving no key.
    pub async fn try_write_lock(&self) -> Result<LockGuard> {
        self.lock(Side::Write, "try_write_lock", true).await
    }

    async fn lock(&self, side: Side, name: &'static str, just_try: bool) -> Result<LockGuard> {
        let mut op = self.tracer.op(self.session.client(), "rwmutex", name);
        let (dir, blockers) = match side {
            Side::Read => ("read", format!("{}write/", self.prefix)),
            Side::Write => ("write", self.prefix.clone()),
        };
        let key = Bytes::from(format!("{}{dir}/{}", self.prefix, unique_name()));
        let place = join(&self.session, key, Bytes::from(blockers), Bytes::new(), None, Rule::One, &mut op).await?;
        if just_try && !place.is_front() {
            place.leave(&mut op).await?;
            return Err(Error::Locked);
        }
        let place = place.wait_front_or_leave(&mut op).await?;
        Ok(place.into_guard(&op))
    }
}
