//! LeaderLatch: a long-running participant for services that "do work while leader". It campaigns,
//! leads until its leadership can no longer be trusted, then campaigns again with a fresh session,
//! and publishes its state on a [`watch`] channel.
//!
//! A background task runs terms, one session (one lease) each. In RPCs, per term:
//!
//! - start: `LeaseGrant(ttl)`, then the lease joins the keep-alive stream (`session.rs`);
//! - campaign: [`Election::campaign`] (one Txn joins the line `<name>/`, then watch the two ahead
//!   and our own key, Txn checks; `election.rs`), while [`Election::observe`] (a watch on
//!   `<name>/`, `Range` of the oldest key per change) names the leader for [`LatchState::Follower`];
//! - lead: no RPC. The keep-alives move [`Leadership::valid_until`], which the task copies into
//!   [`LatchState::Leader`] every TTL/6; one watch on our key notices its deletion (`held.rs`);
//! - end of the term (lease lost, key deleted, or `valid_until` passed with no fresher keep-alive
//!   answer): the state becomes [`LatchState::Lost`] *first*, then `LeaseRevoke` (deletes our key;
//!   best effort, bounded), a short backoff, and a new term with a new lease;
//! - close or drop: the state becomes `Lost`, then `LeaseRevoke`, and the task ends.
//!
//! Leadership ends locally before another participant can win: [`LeaderLatch::is_leader`] (and
//! [`LatchState::is_leader`]) compare `valid_until` with the local monotonic clock, so they turn
//! false when it passes even if the task has not run since (a process paused by SIGSTOP, a
//! starved runtime). No peer can be elected before our lease expires on the server, which is after
//! `valid_until` (see [`Session::valid_until`]). Only someone deleting our key cuts this short; we
//! learn of it through the watch.
//!
//! Errors (etcd unreachable, a foreign key in the line) are retried with a backoff from 50 ms
//! doubling to 2 s; bad input fails [`LatchBuilder::start`] with [`Error::InvalidArgument`].

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_wire::{Client, KeyValue};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::election::{Election, Leadership};
use crate::error::{Error, Result};
use crate::line::my_key;
use crate::session::{DEFAULT_TTL, Session};
use crate::trace::{OpTrace, Tracer};
use crate::wait::check_name;

/// The first backoff after an error, doubled on each further one up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long revoking a term's lease may take before it is left to expire by itself.
const REVOKE_LIMIT: Duration = Duration::from_secs(5);

/// What a [`LeaderLatch`] is, as published on its [`watch`] channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LatchState {
    /// We lead until `valid_until` (monotonic clock) unless a fresher keep-alive answer moves it;
    /// check it with [`is_leader`](Self::is_leader) rather than matching on this variant.
    Leader {
        /// The leader key's create revision: the fencing token, increasing across terms.
        token: i64,
        /// The leader key (`<name>/<lease hex>`), for fenced Txns: `CreateRevision(key) == token`.
        key: Bytes,
        /// The instant before which the leadership is provably ours.
        valid_until: Instant,
    },
    /// Campaigning; `leader` is the leader last observed (`None` until one is).
    Follower {
        /// The leader's key and value.
        leader: Option<KeyValue>,
    },
    /// The leadership (or the session) was just lost, or the latch is closed; a new term follows
    /// unless it is closed.
    Lost,
}

impl LatchState {
    /// Whether this is [`Leader`](Self::Leader) and its `valid_until` has not passed.
    pub fn is_leader(&self) -> bool {
        matches!(self, LatchState::Leader { valid_until, .. } if Instant::now() < *valid_until)
    }
}

/// Options for [`LeaderLatch::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LatchBuilder {
    client: Client,
    name: String,
    value: Bytes,
    ttl: i64,
    margin: Option<Duration>,
    tracer: Tracer,
}

impl LatchBuilder {
    /// The value the candidate key holds (what observers see as the leader). Default: empty.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = value.into();
        self
    }

    /// Each term's session TTL in seconds (default 60): a crashed leader is replaced after about
    /// this long. Must be positive.
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
        self
    }

    /// Each term's [`SessionBuilder::safety_margin`](crate::SessionBuilder::safety_margin).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Reports every step (the campaigns' RPCs, the latch's transitions) to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Starts the background task (on the current Tokio runtime). Fails with
    /// [`Error::InvalidArgument`] on an empty name, a TTL ≤ 0, a margin not shorter than the TTL,
    /// or outside a Tokio runtime; etcd being unreachable is not an error here (the task retries).
    pub fn start(self) -> Result<LeaderLatch> {
        check_name(&self.name)?;
        if self.ttl <= 0 {
            return Err(Error::invalid(format!("latch TTL must be positive, got {}", self.ttl)));
        }
        if let Some(m) = self.margin
            && m >= Duration::from_secs(self.ttl.unsigned_abs())
        {
            return Err(Error::invalid(format!("safety margin {m:?} must be shorter than the TTL ({} s)", self.ttl)));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid("a LeaderLatch must be started inside a Tokio runtime"))?;
        let (state, rx) = watch::channel(LatchState::Follower { leader: None });
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(run(self, state, stopped));
        Ok(LeaderLatch { state: rx, stop, task: Some(task) })
    }
}

/// A participant that campaigns in an election for as long as it lives; see the module docs.
///
/// Dropping it stops the task, which revokes its lease (removing its key) in the background;
/// [`close`](Self::close) does the same and waits for it.
///
/// ```no_run
/// # async fn demo(client: etcd_recipes::etcd_wire::Client) -> etcd_recipes::Result<()> {
/// use etcd_recipes::{LatchState, LeaderLatch};
///
/// let latch = LeaderLatch::builder(&client, "scheduler").value("host-a").ttl(10).start()?;
/// loop {
///     let LatchState::Leader { token, .. } = latch.wait_leader().await? else { continue };
///     // Work in steps, each only while still leader by our clock; fence writes with `token`.
///     while latch.is_leader() {
///         # let _ = token;
///         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct LeaderLatch {
    state: watch::Receiver<LatchState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
}

impl LeaderLatch {
    /// A latch on the election `name` (candidate keys under `name/`, wire-compatible with
    /// [`Election`] and `etcdctl elect`).
    pub fn builder(client: &Client, name: &str) -> LatchBuilder {
        LatchBuilder {
            client: client.clone(),
            name: name.to_owned(),
            value: Bytes::new(),
            ttl: DEFAULT_TTL,
            margin: None,
            tracer: Tracer::default(),
        }
    }

    /// Starts a latch on `name` with `value` and the default TTL.
    pub fn start(client: &Client, name: &str, value: impl Into<Bytes>) -> Result<LeaderLatch> {
        LeaderLatch::builder(client, name).value(value).start()
    }

    /// The state now.
    pub fn state(&self) -> LatchState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change. It sees the channel close once the latch's task ended.
    pub fn subscribe(&self) -> watch::Receiver<LatchState> {
        self.state.clone()
    }

    /// Whether we lead now by the local clock: false once `valid_until` has passed, even before
    /// the task has noticed.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leader()
    }

    /// Waits until we lead; returns the [`LatchState::Leader`] state. Fails with
    /// [`Error::Recipe`] if the task ended first (it never does until the latch is closed).
    pub async fn wait_leader(&self) -> Result<LatchState> {
        let mut rx = self.state.clone();
        let state = rx.wait_for(LatchState::is_leader).await.map_err(|_| Error::Recipe("the latch stopped".into()))?;
        Ok(state.clone())
    }

    /// Stops campaigning (or leading): the state becomes [`LatchState::Lost`], then the lease is
    /// revoked, which deletes our key. Returns once the task ended, with the revoke's outcome.
    pub async fn close(mut self) -> Result<()> {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Recipe(format!("the latch task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for LeaderLatch {
    fn drop(&mut self) {
        // The task sees the stop and revokes its lease by itself.
        self.stop.send_replace(true);
    }
}

/// The task: terms until stopped. Returns the last revoke's outcome.
async fn run(cfg: LatchBuilder, state: watch::Sender<LatchState>, stop: watch::Receiver<bool>) -> Result<()> {
    let op = cfg.tracer.op(&cfg.client, "latch", "run");
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut builder = Session::builder(&cfg.client).ttl(cfg.ttl);
        if let Some(m) = cfg.margin {
            builder = builder.safety_margin(m);
        }
        let session = tokio::select! {
            biased;
            () = stopped(&stop) => return closed(&state),
            s = builder.build() => s,
        };
        match session {
            Ok(session) => {
                op.note(|| format!("new session, lease {:x}", session.lease_id()));
                let ended = tokio::select! {
                    biased;
                    () = stopped(&stop) => None,
                    why = term(&cfg, &session, &state, &mut backoff, &op) => Some(why),
                };
                // Leadership ends here, before our key can go.
                state.send_replace(LatchState::Lost);
                let revoked = tokio::time::timeout(REVOKE_LIMIT, session.close()).await;
                let revoked = revoked.unwrap_or_else(|_| Err(Error::Recipe("the lease revoke got no answer".into())));
                let Some(why) = ended else {
                    op.note(|| "closed; lease revoked".to_owned());
                    return revoked;
                };
                op.note(|| format!("term ended: {why}; a new session in {backoff:?}"));
                if let Err(e) = revoked {
                    tracing::debug!(error = %e, "leader latch: revoking the old lease failed; it expires by itself");
                }
            }
            Err(e) => {
                op.note(|| format!("starting a session failed: {e}; again in {backoff:?}"));
            }
        }
        tokio::select! {
            biased;
            () = stopped(&stop) => return closed(&state),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Closed between terms (no session to revoke): the last state is `Lost`.
fn closed(state: &watch::Sender<LatchState>) -> Result<()> {
    state.send_replace(LatchState::Lost);
    Ok(())
}

/// Resolves once the latch is closed or dropped.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// One term on `session`: campaign (following the leader meanwhile), then lead until the
/// leadership can no longer be trusted. Returns why it ended.
async fn term(
    cfg: &LatchBuilder,
    session: &Session,
    state: &watch::Sender<LatchState>,
    backoff: &mut Duration,
    op: &OpTrace,
) -> String {
    state.send_replace(LatchState::Follower { leader: None });
    let election = match Election::new(session, &cfg.name) {
        Ok(e) => e.with_tracer(cfg.tracer.clone()),
        Err(e) => return e.to_string(),
    };
    let leadership = loop {
        let campaign = election.campaign(cfg.value.clone());
        let outcome = tokio::select! {
            r = campaign => r,
            () = follow(&election, my_key(format!("{}/", cfg.name).as_bytes(), session), state) => continue,
        };
        match outcome {
            Ok(l) => break l,
            Err(Error::SessionExpired) => return "the session expired while campaigning".to_owned(),
            Err(e) => {
                op.note(|| format!("campaign failed: {e}; again in {backoff:?}"));
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    *backoff = BACKOFF_MIN;
    lead(&leadership, state, op).await
}

/// Publishes each leader observed (other than us) as [`LatchState::Follower`]; observes again
/// after a failure. Never returns.
async fn follow(election: &Election, me: Bytes, state: &watch::Sender<LatchState>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut leaders = Box::pin(election.observe());
        while let Some(next) = leaders.next().await {
            match next {
                Ok(kv) if kv.key != me => {
                    backoff = BACKOFF_MIN;
                    state.send_replace(LatchState::Follower { leader: Some(kv) });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "leader latch: observing the leader failed"),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Leads: publishes [`LatchState::Leader`], moving its `valid_until` as keep-alives answer, until
/// the leadership is lost. Returns why.
async fn lead(leadership: &Leadership, state: &watch::Sender<LatchState>, op: &OpTrace) -> String {
    let (token, key) = (leadership.fencing_token(), leadership.key().clone());
    let refresh = (leadership.session().ttl() / 6).clamp(Duration::from_millis(50), Duration::from_secs(2));
    let lost = leadership.lost();
    tokio::pin!(lost);
    let mut announced = false;
    loop {
        let Some(valid_until) = leadership.valid_until().filter(|u| *u > Instant::now()) else {
            // The lease may have expired on the server: lead no longer, even before `lost` says so.
            state.send_replace(LatchState::Lost);
            return "valid_until passed with no fresher keep-alive answer".to_owned();
        };
        let now = LatchState::Leader { token, key: key.clone(), valid_until };
        // Subscribers hear of a new `valid_until` (every keep-alive answer), not of every tick.
        state.send_if_modified(|s| {
            *s != now && {
                *s = now;
                true
            }
        });
        if !announced {
            announced = true;
            op.note(|| format!("leader with fencing token {token}, valid for {:?}", valid_until - Instant::now()));
        }
        tokio::select! {
            biased;
            why = &mut lost => {
                state.send_replace(LatchState::Lost);
                op.note(|| format!("leadership with fencing token {token} lost: {why}"));
                return format!("leadership lost: {why}");
            }
            () = tokio::time::sleep(refresh) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_state_ends_by_the_local_clock() {
        let key = Bytes::from_static(b"l/1");
        let soon =
            LatchState::Leader { token: 3, key: key.clone(), valid_until: Instant::now() + Duration::from_secs(60) };
        assert!(soon.is_leader());
        let past = Instant::now().checked_sub(Duration::from_millis(1)).unwrap_or_else(Instant::now);
        assert!(!LatchState::Leader { token: 3, key, valid_until: past }.is_leader());
        assert!(!LatchState::Lost.is_leader());
        assert!(!LatchState::Follower { leader: None }.is_leader());
    }
}
