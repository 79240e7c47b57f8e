//! Stream supervision: the one mechanism behind the client's long-lived bidirectional streams
//! (the shared watch stream, [`watch`], and the shared lease keep-alive stream, [`keepalive`]).
//!
//! Each stream is owned by a background task, reached through a [`Hub`] (a command channel,
//! the task started on first use) and holding only a weak reference to the [`Core`], so the task
//! ends when the client and every handle that needs the stream are gone. The task keeps its
//! stream in a [`Supervisor`], which opens it on a member picked by the pool, with the token and
//! `hasleader`; and when it fails, puts the member in cool-down (or, when the token was rejected,
//! refreshes it before the next stream) and reopens it after a jittered backoff. What is sent on
//! a new stream (re-creating watchers, resending keep-alives) is each task's own business.

pub(crate) mod keepalive;
pub(crate) mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use crate::rpc::{Core, Meta};
use crate::transport::Member;

/// The way to a stream task: a command channel, the task started (again) on first use.
pub(crate) struct Hub<C> {
    core: Weak<Core>,
    /// Spawns the task, given the receiving end of its command channel.
    start: fn(Weak<Core>, mpsc::UnboundedReceiver<C>),
    cmds: Mutex<Option<mpsc::UnboundedSender<C>>>,
    next_id: AtomicI64,
}

impl<C> std::fmt::Debug for Hub<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl<C> Hub<C> {
    /// A hub whose task `start` spawns.
    pub(crate) fn new(core: Weak<Core>, start: fn(Weak<Core>, mpsc::UnboundedReceiver<C>)) -> Self {
        Hub { core, start, cmds: Mutex::new(None), next_id: AtomicI64::new(0) }
    }

    /// The channel to the task, starting the task if it is not running.
    pub(crate) fn sender(&self) -> mpsc::UnboundedSender<C> {
        let mut slot = self.cmds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        (self.start)(self.core.clone(), rx);
        *slot = Some(tx.clone());
        tx
    }

    /// A new ID, unique within this hub (1, 2, ...).
    pub(crate) fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One open stream: what was sent on it, what comes back, and where it goes.
pub(crate) struct Link<Req, Resp> {
    /// The answers; opening the stream is its first step (etcd sends headers with the first answer).
    answers: BoxStream<'static, Result<Resp, Status>>,
    tx: mpsc::UnboundedSender<Req>,
    member: Arc<Member>,
    /// The token generation the stream was opened with.
    generation: u64,
    /// Resolves when the stream must move: its member left the list, or the credentials changed.
    moved: futures::future::BoxFuture<'static, ()>,
    /// Whether it did (so its end is no fault of the member's).
    was_moved: bool,
}

impl<Req, Resp> Link<Req, Resp> {
    /// Sends `req`; `false` when the stream is closed (which also shows up as its end).
    pub(crate) fn send(&self, req: Req) -> bool {
        self.tx.send(req).is_ok()
    }
}

/// The answer a stream service gives to opening it.
type Opened<Resp> = Result<tonic::Response<tonic::codec::Streaming<Resp>>, Status>;

/// A task's stream, reopened after failures: see the module docs.
pub(crate) struct Supervisor<Req, Resp> {
    core: Weak<Core>,
    name: &'static str,
    link: Option<Link<Req, Resp>>,
    retry_at: Instant,
    failures: u32,
    /// Refresh the token (this stale generation) before the next stream.
    refresh: Option<u64>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Supervisor<Req, Resp> {
    /// A supervisor with no stream yet; `name` appears in the logs.
    pub(crate) fn new(core: Weak<Core>, name: &'static str) -> Self {
        Supervisor { core, name, link: None, retry_at: Instant::now(), failures: 0, refresh: None }
    }

    /// The call layer, while the client lives.
    pub(crate) fn core(&self) -> Option<Arc<Core>> {
        self.core.upgrade()
    }

    /// Whether nothing but the task itself holds the client any more.
    pub(crate) fn client_gone(&self) -> bool {
        self.core.strong_count() == 0
    }

    /// The open stream, if any.
    pub(crate) fn link(&self) -> Option<&Link<Req, Resp>> {
        self.link.as_ref()
    }

    /// Whether a stream is open.
    pub(crate) fn is_open(&self) -> bool {
        self.link.is_some()
    }

    /// Whether there is no stream and its backoff has passed: time to [`open`](Self::open).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.link.is_none() && now >= self.retry_at
    }

    /// When the next stream may be opened.
    pub(crate) fn retry_at(&self) -> Instant {
        self.retry_at
    }

    /// Opens a stream on the next member (refreshing the token first if the last one was
    /// rejected for it). `call` makes the RPC on a channel with the request stream, given the
    /// metadata; `with_leader` always asks for a member with a leader. `false` if the client is gone.
    pub(crate) async fn open<F, Fut>(&mut self, with_leader: bool, call: F) -> bool
    where
        F: FnOnce(Channel, tonic::Request<UnboundedReceiverStream<Req>>) -> Fut,
        Fut: Future<Output = Opened<Resp>> + Send + 'static,
    {
        let Some(core) = self.core.upgrade() else { return false };
        if let Some(stale) = self.refresh.take()
            && let Err(e) = core.refresh_token(stale).await
        {
            tracing::debug!(stream = self.name, error = %e, "token refresh for the stream failed");
        }
        let member = core.pool.pick();
        let meta: Meta = core.meta(None, false);
        let meta = if with_leader { meta.with_leader() } else { meta };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        meta.apply(&mut request);
        tracing::debug!(stream = self.name, endpoint = %member.url, "opening the stream");
        let opening = call(member.channel.clone(), request);
        let answers = futures::stream::once(async move { opening.await.map(|r| r.into_inner()) }).try_flatten().boxed();
        let moved = futures::future::select(Box::pin(member.retired()), Box::pin(core.credentials_changed()));
        let moved = async move { drop(moved.await) }.boxed();
        self.link = Some(Link { answers, tx, member, generation: meta.generation, moved, was_moved: false });
        true
    }

    /// The next answer on the stream (`None` when it ended; pending forever without a stream).
    /// When the stream must move (its member left the client's list, or the credentials
    /// changed), an `Unavailable` saying so: the task fails the stream as usual, and the next
    /// opens at once, on a member in the list, with the current token.
    pub(crate) async fn next(&mut self) -> Option<Result<Resp, Status>> {
        match &mut self.link {
            Some(link) => tokio::select! {
                biased;
                answer = link.answers.next() => answer,
                () = &mut link.moved => {
                    link.was_moved = true;
                    Some(Err(Status::unavailable("the client's endpoints or credentials changed; moving the stream")))
                }
            },
            None => std::future::pending().await,
        }
    }

    /// The stream works: the next failure starts the backoff from its shortest.
    pub(crate) fn answered(&mut self) {
        self.failures = 0;
    }

    /// Drops the stream and schedules the next after a backoff: when `token_rejected`,
    /// refreshing the token before it, else putting the member in cool-down. `false` if there
    /// was no stream.
    pub(crate) fn fail(&mut self, why: &str, token_rejected: bool) -> bool {
        let Some(link) = self.link.take() else { return false };
        let Some(core) = self.core.upgrade() else { return true };
        let reason = match (link.was_moved, token_rejected) {
            (true, _) => "moved",
            (false, true) => "token",
            (false, false) => "failed",
        };
        crate::observe::stream_restart(self.name, reason);
        if link.was_moved {
            self.retry_at = Instant::now();
            tracing::debug!(stream = self.name, endpoint = %link.member.url, "stream moved");
            return true;
        }
        self.failures = self.failures.saturating_add(1);
        if token_rejected {
            self.refresh = Some(link.generation);
        } else {
            core.pool.mark_failed(&link.member);
        }
        let backoff = core.options.retry.backoff(self.failures, fastrand::f64());
        self.retry_at = Instant::now() + backoff;
        tracing::debug!(stream = self.name, endpoint = %link.member.url, why, ?backoff, "stream failed; reopening on the next member");
        true
    }

    /// Closes the stream (nothing left to keep on it).
    pub(crate) fn close(&mut self) {
        self.link = None;
    }

    /// Pretends a stream is open (on a member nothing listens behind) and returns what is sent on it.
    #[cfg(test)]
    pub(crate) fn open_for_test(&mut self) -> mpsc::UnboundedReceiver<Req> {
        let (tx, rx) = mpsc::unbounded_channel();
        let member = crate::transport::test_member();
        let moved = std::future::pending().boxed();
        self.link = Some(Link {
            answers: futures::stream::empty().boxed(),
            tx,
            member,
            generation: 0,
            moved,
            was_moved: false,
        });
        rx
    }
}
