//! Election: leader election on a name, wire-compatible with Go's `concurrency.Election` (and so
//! with `etcdctl elect` and the server-side Election RPCs).
//!
//! Candidates stand in line under `<name>/` (see `line.rs`), each key holding the candidate's
//! value; the front of the line is the leader. In RPCs:
//!
//! - campaign: join the line (one Txn; a session already in line keeps its key and, if the value
//!   differs, proclaims the new one), wait to reach the front (watch the two ahead and our own
//!   key, Txn checks; see `line.rs`), and re-check our own key before reporting leadership (etcd #11051).
//! - proclaim: `Txn If(CreateRevision(me) == my revision) Then Put(me, value, lease)`.
//! - resign: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`.
//! - leader: `Range(<name>/, oldest by create revision, limit 1)`.
//! - observe: watch `<name>/` from now, `Range` the leader, and on each batch of events `Range`
//!   the leader again, reporting it when it changed. Trusting the events instead reports the wrong
//!   leader when several candidates appear in one batch (etcd #18163). Observing needs no session
//!   ([`ElectionObserver`]); the stream owns its watch and ends it when dropped.
//!
//! [`Leadership`] owns its session, so the lease stays alive while it lives; like a lock guard it
//! tells [`valid_until`](Leadership::valid_until) and [`lost`](Leadership::lost). A cancelled
//! `resign()` still resigns, in the background.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use etcd_wire::{Client, Compare, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions};
use futures::Stream;

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::{Held, Lost};
use crate::line::{Rule, join, my_key};
use crate::session::Session;
use crate::trace::{OpTrace, Tracer};
use crate::wait::{Stop, Wait, check_name};

/// An election on a name, for one session. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    prefix: Bytes,
    tracer: Tracer,
}

impl Election {
    /// An election on `name` (candidate keys live under `name/`). Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<Election> {
        check_name(name)?;
        Ok(Election { session: session.clone(), prefix: Bytes::from(format!("{name}/")), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Stands as a candidate with `value` and waits until elected. Dropping the future withdraws
    /// the candidacy (our key is removed). A session has one candidacy per election (Go's key
    /// layout): a second `campaign` of the same session continues the first one's.
    pub async fn campaign(&self, value: impl Into<Bytes>) -> Result<Leadership> {
        let value = value.into();
        let mut op = self.tracer.op(self.session.client(), "election", "campaign");
        let key = my_key(&self.prefix, &self.session);
        // The session's slot for the key, held while campaigning: a resignation still on its way
        // (a cancelled `resign()`) lands before we join, so we never adopt the key it deletes.
        let slot = self.session.claim(&key).await?;
        let place =
            join(&self.session, key, self.prefix.clone(), value.clone(), Some(slot), Rule::One, &mut op).await?;
        if place.value != value {
            Leadership { held: place.held.clone() }.proclaim(value).await?;
        }
        let place = place.wait_front_or_leave(&mut op).await?;
        let held = place.keep().started();
        op.note(|| format!("elected with fencing token {}", held.revision));
        crate::observe::acquired("election", op.finish().elapsed);
        Ok(Leadership { held })
    }

    /// The leadership of a known leader key and its create revision (e.g. read with
    /// [`leader`](Self::leader) after a restart that kept the session's lease), to proclaim or
    /// resign without campaigning again. Go's `ResumeElection`.
    pub fn resume(&self, key: impl Into<Bytes>, create_revision: i64) -> Leadership {
        Leadership { held: Held::new(&self.session, key.into(), create_revision) }
    }

    /// The current leader's key and value, or [`Error::NoLeader`].
    pub async fn leader(&self) -> Result<KeyValue> {
        self.observer().leader().await
    }

    /// A stream of leaders: the current one when it is first polled (once there is one), then each
    /// change of leader or of its value, in order. Like every Rust stream it does nothing until
    /// polled. It ends only with an error; drop it to stop observing.
    pub fn observe(&self) -> impl Stream<Item = Result<KeyValue>> + Send + use<> {
        self.observer().observe()
    }

    fn observer(&self) -> ElectionObserver {
        ElectionObserver {
            client: self.session.client().clone(),
            prefix: self.prefix.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

/// Reads and observes an election's leader without standing in it: no session, no lease.
#[derive(Debug, Clone)]
pub struct ElectionObserver {
    client: Client,
    prefix: Bytes,
    tracer: Tracer,
}

impl ElectionObserver {
    /// An observer of the election `name`. Fails on an empty name.
    pub fn new(client: &Client, name: &str) -> Result<ElectionObserver> {
        check_name(name)?;
        Ok(ElectionObserver {
            client: client.clone(),
            prefix: Bytes::from(format!("{name}/")),
            tracer: Tracer::default(),
        })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The current leader's key and value, or [`Error::NoLeader`].
    pub async fn leader(&self) -> Result<KeyValue> {
        let mut op = self.tracer.op(&self.client, "election", "leader");
        leader(&self.prefix, &mut op).await?.ok_or(Error::NoLeader)
    }

    /// A stream of leaders: the current one when it is first polled (once there is one), then each
    /// change of leader or of its value, in order. Like every Rust stream it does nothing until
    /// polled (Go's `Observe` starts at once). It ends only with an error. Dropping it ends its
    /// watch at once.
    pub fn observe(&self) -> impl Stream<Item = Result<KeyValue>> + Send + use<> {
        let observing = Observing {
            op: self.tracer.op(&self.client, "election", "observe"),
            wait: Wait::new(self.prefix.clone(), WatchOptions::new().with_prefix(), Stop::default()),
            prefix: self.prefix.clone(),
            last: None,
            failed: false,
        };
        futures::stream::unfold(observing, |mut o| async move {
            if o.failed {
                return None;
            }
            let next = o.next_leader().await;
            o.failed = next.is_err();
            Some((next, o))
        })
    }
}

/// The state of one observe stream.
struct Observing {
    op: OpTrace,
    wait: Wait<'static>,
    prefix: Bytes,
    last: Option<KeyValue>,
    failed: bool,
}

impl Observing {
    /// After each watch step, read the leader (etcd #18163: never trust the events alone).
    async fn next_leader(&mut self) -> Result<KeyValue> {
        loop {
            self.wait.next(&mut self.op).await?;
            let now = leader(&self.prefix, &mut self.op).await?;
            let changed = match (&now, &self.last) {
                (Some(n), Some(l)) => (n.create_revision, n.mod_revision) != (l.create_revision, l.mod_revision),
                (Some(_), None) => true,
                (None, _) => false,
            };
            self.last.clone_from(&now);
            if changed && let Some(n) = now {
                return Ok(n);
            }
        }
    }
}

/// The oldest candidate, if any.
async fn leader(prefix: &Bytes, op: &mut OpTrace) -> Result<Option<KeyValue>> {
    let oldest = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
    Ok(op.get(prefix, oldest).await?.kvs.into_iter().next())
}

/// Leadership won by [`Election::campaign`]. It owns the session (the lease stays alive while it
/// lives). Dropping it does not resign: the key stays until [`resign`](Self::resign) or the
/// session ends.
#[derive(Debug, Clone)]
pub struct Leadership {
    held: Held,
}

impl Leadership {
    /// The leader key (`<name>/<lease hex>`).
    pub fn key(&self) -> &Bytes {
        &self.held.key
    }

    /// The leader key's create revision: increasing across terms, for fencing writes elsewhere.
    pub fn fencing_token(&self) -> i64 {
        self.held.revision
    }

    /// The session the leadership stands on.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// A compare that holds exactly while this leadership lasts, for the caller's own Txns.
    pub fn is_leader(&self) -> Compare {
        self.held.is_owner()
    }

    /// A Txn that already carries [`is_leader`](Self::is_leader).
    pub fn txn(&self) -> Txn {
        self.held.txn()
    }

    /// The instant before which the leadership is provably still ours unless somebody deletes its
    /// key; see [`LockGuard::valid_until`](crate::LockGuard::valid_until).
    pub fn valid_until(&self) -> Option<Instant> {
        self.held.valid_until()
    }

    /// Resolves when the leadership can no longer be trusted; see
    /// [`LockGuard::lost`](crate::LockGuard::lost).
    pub async fn lost(&self) -> Lost {
        self.held.lost_for("election").await
    }

    /// Runs `work` only while the leadership lasts; see [`LockGuard::while_held`](crate::LockGuard::while_held).
    pub async fn while_held<F: Future>(&self, work: F) -> Result<F::Output> {
        self.held.while_held("election", work).await
    }

    /// Announces a new value without a new election; [`Error::NotOwner`] if no longer leader.
    pub async fn proclaim(&self, value: impl Into<Bytes>) -> Result<()> {
        let put = TxnOp::put(self.held.key.clone(), value.into(), PutOptions::new().with_lease(self.held.lease_id()));
        let resp = self.held.session.client().txn(self.txn().and_then([put])).await?;
        if !resp.succeeded {
            return Err(Error::NotOwner("no longer the leader".to_owned()));
        }
        Ok(())
    }

    /// Gives up leadership (fenced: never deletes a newer leader's key). If this future is dropped
    /// before it finishes, the resignation still happens in the background.
    pub async fn resign(self) -> Result<()> {
        let mut op = Tracer::default().op(self.held.session.client(), "election", "resign");
        // Held until the delete landed, even if this future is dropped: the session's next
        // campaign waits for it (see `campaign`).
        let slot = self.held.session.claim(&self.held.key).await?;
        let action = Action::FencedDelete { key: self.held.key.clone(), revision: self.held.revision };
        crate::observe::released("election", self.held.since().elapsed());
        if !Cleanup::arm(&op, action).with_slot(Some(slot)).run(&mut op).await? {
            self.held.count_loss("election", None);
            return Err(Error::NotOwner("no longer the leader".to_owned()));
        }
        Ok(())
    }
}
