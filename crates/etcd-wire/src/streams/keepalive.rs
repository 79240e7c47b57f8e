//! The engine behind the client's shared lease keep-alive stream: one task per client that
//! renews every kept-alive lease, tracks each lease's deadline and tells its owners when it is
//! lost. The algorithm, step by step, is in the docs of [`crate::lease`]; the stream itself is
//! kept by a [`Supervisor`].
//!
//! **Invariant:** no step of the task scans the leases. Answers, sends, deadlines and the stall
//! timeout go through a sorted [`Schedule`], so one refresh costs O(log n) in the number of leases
//! (only opening a new stream touches every lease, once); a task keeping 100,000 leases spends
//! per refresh about what it spends with 1,000.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::{Hub, Supervisor};
use crate::error::Error;
use crate::pb::etcdserverpb as pb;
use crate::rpc::{Core, needs_new_token, stub};
use crate::types::LeaseLost;

/// The error of a keep-alive whose task has stopped.
pub(crate) fn stopped() -> Error {
    Error::Unavailable { status: Status::unavailable("the lease keep-alive task has stopped").into() }
}

/// What a handle sees: the latest TTL, the deadline it implies and, once lost, why.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    /// The TTL of the latest answer; 0 before the first.
    pub(crate) ttl: i64,
    /// Until when the lease provably exists (see the module docs of [`crate::lease`], step 2).
    pub(crate) deadline: Option<Instant>,
    /// Why the lease is no longer kept, once it is not.
    pub(crate) lost: Option<LeaseLost>,
}

/// Messages from handles to the keep-alive task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Keep lease `id` alive for registration `reg`, reporting to `state`.
    Register { id: i64, reg: i64, state: watch::Sender<State> },
    /// Registration `reg` of lease `id` was dropped.
    Unregister { id: i64, reg: i64 },
}

/// The client's shared keep-alive stream: a channel to its task, started on first use.
pub(crate) type KeepAliveHub = Hub<Command>;

/// A hub for a client's keep-alive stream.
pub(crate) fn hub(core: Weak<Core>) -> KeepAliveHub {
    Hub::new(core, |core, cmds| {
        tokio::spawn(Task::new(core, cmds).run());
    })
}

/// How often the task wakes at least, to notice a dropped client, while leases are kept.
const TICK: Duration = Duration::from_millis(500);

/// One kept-alive lease and its registrations.
struct Lease {
    /// Registrations (usually one), by registration ID.
    regs: Vec<(i64, watch::Sender<State>)>,
    /// Latest TTL the server answered; 0 before the first answer.
    ttl: i64,
    /// Send time of the latest answered request + TTL; `None` before the first answer.
    deadline: Option<Instant>,
    /// When the next request is due (on the current stream, or at once on the next).
    next_send: Instant,
    /// Send times of this lease's requests on the current stream not answered yet, oldest first
    /// (the server answers a stream's requests in order).
    sent: VecDeque<Instant>,
}

/// The leases' times, sorted, so the task finds what is due without scanning the leases. Every
/// change to a lease's `next_send`, `deadline` or `ttl` goes through it.
#[derive(Default)]
struct Schedule {
    /// `(next_send, id)` of every lease.
    sends: BTreeSet<(Instant, i64)>,
    /// `(deadline, id)` of every lease that has a deadline.
    deadlines: BTreeSet<(Instant, i64)>,
    /// How many leases have each TTL (answered leases only): the shortest sets the stall timeout.
    ttls: BTreeMap<i64, usize>,
}

impl Schedule {
    fn add(&mut self, id: i64, next_send: Instant) -> Lease {
        self.sends.insert((next_send, id));
        Lease { regs: Vec::new(), ttl: 0, deadline: None, next_send, sent: VecDeque::new() }
    }

    fn send_at(&mut self, id: i64, lease: &mut Lease, at: Instant) {
        self.sends.remove(&(lease.next_send, id));
        lease.next_send = at;
        self.sends.insert((at, id));
    }

    fn set_deadline(&mut self, id: i64, lease: &mut Lease, deadline: Instant) {
        if let Some(old) = lease.deadline.replace(deadline) {
            self.deadlines.remove(&(old, id));
        }
        self.deadlines.insert((deadline, id));
    }

    fn set_ttl(&mut self, lease: &mut Lease, ttl: i64) {
        if lease.ttl == ttl {
            return;
        }
        self.forget_ttl(lease.ttl);
        lease.ttl = ttl;
        if ttl > 0 {
            *self.ttls.entry(ttl).or_default() += 1;
        }
    }

    fn forget_ttl(&mut self, ttl: i64) {
        if let Some(n) = self.ttls.get_mut(&ttl) {
            *n -= 1;
            if *n == 0 {
                self.ttls.remove(&ttl);
            }
        }
    }

    fn remove(&mut self, id: i64, lease: &Lease) {
        self.sends.remove(&(lease.next_send, id));
        if let Some(deadline) = lease.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        self.forget_ttl(lease.ttl);
    }
}

/// The current stream's bookkeeping: requests sent and not yet answered, and when it last moved.
#[derive(Default)]
struct Flight {
    outstanding: usize,
    /// Last answer, or the send that made `outstanding` non-zero.
    progress: Option<Instant>,
}

/// The background task behind [`KeepAliveHub`].
struct Task {
    stream: Supervisor<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>,
    cmds: mpsc::UnboundedReceiver<Command>,
    leases: HashMap<i64, Lease>,
    schedule: Schedule,
    flight: Flight,
    /// The next wake-up to notice a dropped client; moves by [`TICK`] once passed.
    tick_at: Instant,
}

impl Task {
    fn new(core: Weak<Core>, cmds: mpsc::UnboundedReceiver<Command>) -> Self {
        let stream = Supervisor::new(core, "lease keep-alive");
        let (leases, schedule, flight) = (HashMap::new(), Schedule::default(), Flight::default());
        Task { stream, cmds, leases, schedule, flight, tick_at: Instant::now() + TICK }
    }

    async fn run(mut self) {
        let sleep = tokio::time::sleep_until(self.tick_at);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            if self.stream.client_gone() {
                return self.end_all(LeaseLost::ClientClosed);
            }
            while let Some(&(deadline, id)) = self.schedule.deadlines.first()
                && deadline <= now
            {
                self.schedule.deadlines.pop_first();
                self.end(id, LeaseLost::Deadline);
            }
            if self.leases.is_empty() {
                self.stream.close();
            } else {
                if self.flight.progress.is_some_and(|p| now >= p + self.stall_timeout()) {
                    self.fail("stalled", false);
                }
                if self.stream.due(now) {
                    let open = |ch, req| async move { stub::lease(ch).lease_keep_alive(req).await };
                    if !self.stream.open(false, open).await {
                        return self.end_all(LeaseLost::ClientClosed);
                    }
                    self.on_open(Instant::now());
                }
                self.send_due(Instant::now());
            }
            let wake = self.next_wake(now);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return self.end_all(LeaseLost::ClientClosed),
                },
                answer = self.stream.next(), if self.stream.is_open() => match answer {
                    Some(Ok(answer)) => self.on_answer(answer),
                    Some(Err(status)) => self.fail(status.message(), needs_new_token(&status)),
                    None => self.fail("the stream ended", false),
                },
                () = &mut sleep, if !self.leases.is_empty() => {}
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Register { id, reg, state } => {
                let schedule = &mut self.schedule;
                let lease = self.leases.entry(id).or_insert_with(|| schedule.add(id, Instant::now()));
                if lease.ttl > 0 {
                    state.send_replace(State { ttl: lease.ttl, deadline: lease.deadline, lost: None });
                }
                lease.regs.push((reg, state));
            }
            Command::Unregister { id, reg } => {
                if let Some(lease) = self.leases.get_mut(&id) {
                    lease.regs.retain(|(r, _)| *r != reg);
                    if lease.regs.is_empty()
                        && let Some(lease) = self.leases.remove(&id)
                    {
                        self.schedule.remove(id, &lease);
                    }
                }
            }
        }
    }

    fn on_answer(&mut self, answer: pb::LeaseKeepAliveResponse) {
        let now = Instant::now();
        self.stream.answered();
        self.flight.outstanding = self.flight.outstanding.saturating_sub(1);
        self.flight.progress = (self.flight.outstanding > 0).then_some(now);
        let Some(lease) = self.leases.get_mut(&answer.id) else { return };
        if answer.ttl <= 0 {
            return self.end(answer.id, LeaseLost::Expired);
        }
        // The answer is for this lease's oldest unanswered request; the server started the TTL
        // after that request was sent, so counting from the send never overestimates the lease.
        self.schedule.set_ttl(lease, answer.ttl);
        // An answer with no request on record (one sent before the lease was registered again)
        // proves nothing about when the TTL started: it must not move the deadline.
        if let Some(sent) = lease.sent.pop_front() {
            let sent = sent.min(now);
            let deadline = sent + secs(answer.ttl);
            if lease.deadline.is_none_or(|d| d < deadline) {
                self.schedule.set_deadline(answer.id, lease, deadline);
            }
            self.schedule.send_at(answer.id, lease, sent + secs(answer.ttl) / 3);
        }
        let (ttl, deadline) = (lease.ttl, lease.deadline);
        for (_, state) in &lease.regs {
            // Owners read the deadline when they need it; only a new TTL (the first answer among
            // them) wakes those waiting for a change, so a refresh wakes no one.
            state.send_if_modified(|s| {
                let woken = s.ttl != ttl;
                (s.ttl, s.deadline) = (ttl, deadline);
                woken
            });
        }
    }

    /// A new stream is open: every lease is sent at once.
    fn on_open(&mut self, now: Instant) {
        tracing::debug!(leases = self.leases.len(), "sending every lease on the new keep-alive stream");
        self.schedule.sends.clear();
        for (&id, lease) in &mut self.leases {
            lease.next_send = now;
            lease.sent.clear();
            self.schedule.sends.insert((now, id));
        }
        self.flight = Flight::default();
    }

    /// Drops the stream; the next one comes after a backoff (see [`Supervisor::fail`]).
    fn fail(&mut self, why: &str, token_rejected: bool) {
        self.stream.fail(why, token_rejected);
        self.flight = Flight::default();
    }

    /// Sends a request for every lease that is due, on the current stream.
    fn send_due(&mut self, now: Instant) {
        let Some(link) = self.stream.link() else { return };
        let mut broken = false;
        while let Some(&(at, id)) = self.schedule.sends.first()
            && at <= now
        {
            let Some(lease) = self.leases.get_mut(&id) else {
                self.schedule.sends.pop_first();
                continue;
            };
            if !link.send(pb::LeaseKeepAliveRequest { id }) {
                broken = true;
                break;
            }
            if self.flight.outstanding == 0 {
                self.flight.progress = Some(now);
            }
            self.flight.outstanding += 1;
            lease.sent.push_back(now);
            let next = now + if lease.ttl > 0 { secs(lease.ttl) / 3 } else { Duration::from_secs(1) };
            self.schedule.send_at(id, lease, next);
        }
        if broken {
            self.fail("the stream is closed", false);
        }
    }

    /// How long a stream may leave requests unanswered before it is replaced.
    fn stall_timeout(&self) -> Duration {
        let shortest = self.schedule.ttls.keys().next().copied().unwrap_or(6);
        (secs(shortest) / 3).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// The next instant something is due: a deadline, a send (or a new stream), a stall, or
    /// the tick. Unchanged by an answer that moves none of these, so the timer is left alone.
    fn next_wake(&mut self, now: Instant) -> Instant {
        if self.tick_at <= now {
            self.tick_at = now + TICK;
        }
        let mut wake = self.tick_at;
        if let Some(&(deadline, _)) = self.schedule.deadlines.first() {
            wake = wake.min(deadline);
        }
        if self.stream.is_open() {
            if let Some(&(send, _)) = self.schedule.sends.first() {
                wake = wake.min(send);
            }
        } else {
            wake = wake.min(self.stream.retry_at());
        }
        if let Some(progress) = self.flight.progress {
            wake = wake.min(progress + self.stall_timeout());
        }
        wake.max(now + Duration::from_millis(5))
    }

    /// Tells the owners of lease `id` it is lost, and stops keeping it.
    fn end(&mut self, id: i64, why: LeaseLost) {
        if let Some(lease) = self.leases.remove(&id) {
            tracing::debug!(lease = id, %why, "lease lost");
            self.schedule.remove(id, &lease);
            for (_, state) in &lease.regs {
                state.send_modify(|s| s.lost = Some(why));
            }
        }
    }

    fn end_all(&mut self, why: LeaseLost) {
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            self.end(id, why);
        }
    }
}

/// A TTL in seconds as a duration, bounded so that adding it to an instant cannot overflow.
fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, 10 * 365 * 24 * 3600) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let (_, cmds) = mpsc::unbounded_channel();
        Task::new(Weak::new(), cmds)
    }

    fn register(task: &mut Task, id: i64, reg: i64) -> watch::Receiver<State> {
        let (state, rx) = watch::channel(State::default());
        task.apply(Command::Register { id, reg, state });
        task.assert_scheduled();
        rx
    }

    impl Task {
        /// The schedule holds exactly the leases' times.
        fn assert_scheduled(&self) {
            let sends: BTreeSet<_> = self.leases.iter().map(|(&id, l)| (l.next_send, id)).collect();
            assert_eq!(self.schedule.sends, sends);
            let deadlines: BTreeSet<_> = self.leases.iter().filter_map(|(&id, l)| Some((l.deadline?, id))).collect();
            assert_eq!(self.schedule.deadlines, deadlines);
            let mut ttls = BTreeMap::new();
            for lease in self.leases.values().filter(|l| l.ttl > 0) {
                *ttls.entry(lease.ttl).or_default() += 1;
            }
            assert_eq!(self.schedule.ttls, ttls);
        }
    }

    #[tokio::test]
    async fn the_schedule_follows_sends_answers_losses_and_new_streams() {
        let mut task = task();
        let mut sent = task.stream.open_for_test();
        let (_a, _b, _c) = (register(&mut task, 1, 1), register(&mut task, 2, 2), register(&mut task, 3, 3));
        let now = Instant::now();
        task.send_due(now);
        task.assert_scheduled();
        let mut ids: Vec<i64> = std::iter::from_fn(|| sent.try_recv().ok()).map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3], "each due lease sent once");
        assert_eq!(task.schedule.sends.first().map(|s| s.0), Some(now + Duration::from_secs(1)));
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 1, ttl: 30 });
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 2, ttl: 3 });
        task.assert_scheduled();
        assert_eq!(task.stall_timeout(), Duration::from_secs(1), "the shortest TTL sets it");
        assert_eq!(task.leases[&1].next_send, now.min(Instant::now()) + Duration::from_secs(10));
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 2, ttl: 0 });
        task.assert_scheduled();
        assert_eq!(
            task.stall_timeout(),
            Duration::from_secs(5),
            "the lost lease's TTL no longer counts (30 s / 3, at most 5 s)"
        );
        let later = Instant::now() + Duration::from_secs(60);
        while let Some(&(deadline, id)) = task.schedule.deadlines.first()
            && deadline <= later
        {
            task.schedule.deadlines.pop_first();
            task.end(id, LeaseLost::Deadline);
        }
        task.assert_scheduled();
        assert_eq!(task.leases.keys().copied().collect::<Vec<_>>(), [3], "lease 1 passed its deadline");
        task.on_open(later);
        task.assert_scheduled();
        assert_eq!(task.schedule.sends.first(), Some(&(later, 3)), "a new stream sends every lease at once");
    }

    #[test]
    fn answers_update_ttl_or_end_the_lease_and_never_panic() {
        let mut task = task();
        let a = register(&mut task, 1, 1);
        let b = register(&mut task, 1, 2);
        let c = register(&mut task, 2, 3);
        let answer = |id, ttl| pb::LeaseKeepAliveResponse { header: None, id, ttl };
        // As if a keep-alive had been sent for lease 1: only an answer to a recorded request
        // moves the deadline.
        task.leases.get_mut(&1).expect("registered").sent.push_back(Instant::now());
        task.on_answer(answer(1, i64::MAX));
        task.on_answer(answer(99, 5)); // not ours: ignored
        assert_eq!((a.borrow().ttl, b.borrow().ttl, a.borrow().lost), (i64::MAX, i64::MAX, None));
        assert!(task.leases[&1].deadline.is_some());
        task.on_answer(answer(1, -7));
        assert_eq!((a.borrow().lost, b.borrow().lost), (Some(LeaseLost::Expired), Some(LeaseLost::Expired)));
        assert!(!task.leases.contains_key(&1), "a lost lease is no longer sent");

        // A second registration joins a lease already answered for, and sees its TTL at once.
        task.on_answer(answer(2, 10));
        let d = register(&mut task, 2, 4);
        assert_eq!(d.borrow().ttl, 10);
        task.apply(Command::Unregister { id: 2, reg: 3 });
        assert!(task.leases.contains_key(&2), "kept while a registration remains");
        task.apply(Command::Unregister { id: 2, reg: 4 });
        assert!(task.leases.is_empty());
        task.assert_scheduled();
        assert_eq!(c.borrow().lost, None, "unregistering is not a loss");
    }

    #[test]
    fn stall_timeout_follows_the_shortest_ttl_within_bounds() {
        let mut task = task();
        assert_eq!(task.stall_timeout(), Duration::from_secs(2));
        let _a = register(&mut task, 1, 1);
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 1, ttl: 2 });
        assert_eq!(task.stall_timeout(), Duration::from_secs(1));
        task.apply(Command::Unregister { id: 1, reg: 1 });
        task.assert_scheduled();
        let _b = register(&mut task, 2, 2);
        task.on_answer(pb::LeaseKeepAliveResponse { header: None, id: 2, ttl: 3600 });
        assert_eq!(task.stall_timeout(), Duration::from_secs(5));
    }
}
