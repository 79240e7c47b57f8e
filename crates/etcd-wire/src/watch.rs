//! Watches: [`Client::watch`] returns a [`Watcher`], a [`Stream`] of [`WatchResponse`]s.
//!
//! # The shared stream
//! Every watcher of a client (and of its clones) shares one bidirectional `Watch/Watch` stream,
//! owned by a background task that opens it on the first watch and closes it with the last watcher.
//! The stream always carries `hasleader` metadata, so a member cut off from its leader ends it.
//!
//! 1. The client chooses each watcher's ID (1, 2, ...; the server honours it since etcd 3.4) and the
//!    watcher keeps it for life. Creating sends `WatchCreateRequest { watch_id, key, range_end,
//!    start_revision, filters, prev_kv, progress_notify, fragment }`. The server answers `created` in
//!    the order creates were sent (which also matches the failures it reports with ID -1), and
//!    [`Client::watch`] returns on that answer: nothing written after it returns is missed.
//!    On each new stream the first create goes alone: if its answer carries another ID, the
//!    server assigns its own (an `etcd grpc-proxy`, which may also answer creates out of order),
//!    so on that stream creates go one at a time and the server's IDs are mapped to the
//!    watchers'; otherwise the rest are pipelined. (The proxy answers no progress requests.)
//! 2. Responses are routed by `watch_id`. Fragments (`fragment = true`) are joined until the last
//!    one, so a watcher only sees complete responses: all events of a revision together.
//! 3. Each watcher keeps `next_rev`, the first revision it has not seen: its start revision, else the
//!    creation's header revision + 1; after each response with events, the last event's
//!    `mod_revision + 1`; after a progress notification for it, `header.revision + 1`. Events below
//!    `next_rev` are dropped, so none is ever delivered twice.
//! 4. When the stream fails or ends (member down, connection lost, no leader), the member is put in
//!    cool-down and, after a jittered backoff, a new stream is opened on the next member which
//!    re-creates every watcher with its own ID and `start_revision = next_rev`. Every event is thus
//!    delivered exactly once and in order across reconnects. A rejected auth token is refreshed first.
//! 5. A server cancel ends the watcher after one error item: [`Error::Compacted`] when its next
//!    revision was compacted (possibly found on a resume), [`Error::WatchCanceled`] with the server's
//!    reason otherwise. Dropping a [`Watcher`] sends `WatchCancelRequest`.
//! 6. `WatchProgressRequest` ([`Watcher::request_progress`]) is answered with `watch_id = -1` and
//!    passed to every watcher on the stream. Up to etcd 3.4.24 / 3.5.7 the member answers with its
//!    store revision at once, possibly ahead of events still on their way to an unsynced watcher, so
//!    this answer never moves `next_rev` (per-watcher `progress_notify` answers are exact).
//! 7. Each watcher's buffer holds at most [`WATCH_BUFFER_BYTES`] of events its reader has not taken: a
//!    slow reader never stalls the other watchers, and its memory stays bounded. A response that
//!    would go beyond is not delivered; the watch is canceled on the server instead and, once the
//!    reader has taken half of the buffer and the server confirmed the cancel, created again with
//!    `start_revision = next_rev`, so nothing is lost or delivered twice (or the reader gets
//!    [`Error::Compacted`] after its buffered events if that history is gone meanwhile).
//!    The task holds only a weak reference to the client; every
//!    [`Watcher`] holds a strong one, so a watcher keeps the stream after every `Client` clone was
//!    dropped, and the task ends when neither is left.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, Inner};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb as pb;
use crate::range::KeyRange;
pub use crate::streams::watch::WATCH_BUFFER_BYTES;
use crate::streams::watch::{Command, Flow, Item, stopped};
use crate::types::{ResponseHeader, WatchResponse};

/// Options of [`Client::watch`]. Start from [`WatchOptions::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    range: KeyRange,
    start_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
}

impl WatchOptions {
    /// Just the key, from the next revision on.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }
    /// Every key from the key on.
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }
    /// Keys in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Bytes>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }
    /// Replay history from this revision (0 = only changes after the watch is created). A
    /// compacted revision ends the watcher with [`Error::Compacted`].
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }
    /// Include each key's previous value in [`Event::prev_kv`](crate::Event::prev_kv).
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// Leave out puts.
    pub fn with_no_put(mut self) -> Self {
        self.no_put = true;
        self
    }
    /// Leave out deletes.
    pub fn with_no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }
    /// Ask the server for periodic progress notifications while nothing changes (every 10 minutes
    /// by default in etcd).
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
    /// Let the server split responses larger than its `--max-request-bytes` into fragments; the
    /// client joins them, so this only changes what goes over the wire.
    pub fn with_fragment(mut self) -> Self {
        self.fragment = true;
        self
    }

    fn to_pb(&self, key: Bytes, ns: &Namespace) -> Result<pb::WatchCreateRequest> {
        if self.start_revision < 0 {
            return Err(Error::invalid("start revision must not be negative"));
        }
        let end = self.range.end(&key)?;
        use pb::watch_create_request::FilterType;
        let filters = [(self.no_put, FilterType::Noput), (self.no_delete, FilterType::Nodelete)];
        Ok(pb::WatchCreateRequest {
            key: ns.range_key(key, &end),
            range_end: ns.range_end(end),
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters: filters.iter().filter(|(on, _)| *on).map(|(_, f)| *f as i32).collect(),
            prev_kv: self.prev_kv,
            watch_id: 0,
            fragment: self.fragment,
        })
    }
}

/// A live watch, from [`Client::watch`]: a [`Stream`] of responses, each `Ok` with complete
/// events (all events of a revision together, fragments joined) or `Err` once before the end:
/// [`Error::Compacted`] with the compaction revision or [`Error::WatchCanceled`] with the server's
/// reason. The watcher keeps the client's watch stream running even after every `Client` handle
/// was dropped.
///
/// Every event is delivered exactly once and in revision order, across member failures and
/// dropped connections: the client re-creates the watch on the next member from the revision
/// after the last one delivered. Responses wait in a buffer per watcher, so a slow reader never
/// holds up the client's other watchers; a reader that lags by more than [`WATCH_BUFFER_BYTES`] has
/// its watch paused on the server and resumed where it left off once it catches up.
/// Dropping the watcher (or [`cancel`](Self::cancel)) cancels the watch on the server.
#[derive(Debug)]
#[must_use = "dropping the watcher cancels the watch"]
pub struct Watcher {
    id: i64,
    created: ResponseHeader,
    events: mpsc::UnboundedReceiver<Item>,
    flow: Arc<Flow>,
    cmds: mpsc::UnboundedSender<Command>,
    /// The client's shared state: the stream task lives while any handle does, so a watcher
    /// outliving every `Client` handle keeps its stream.
    _client: Arc<Inner>,
}

impl Watcher {
    /// The watch ID, chosen by the client and kept across reconnects.
    pub fn watch_id(&self) -> i64 {
        self.id
    }

    /// The store revision when the server created the watch: without a start revision, the
    /// watcher sees exactly the changes after it.
    pub fn created_revision(&self) -> i64 {
        self.created.revision
    }

    /// The header of the server's answer to the first create (which member, at what revision).
    pub fn created_header(&self) -> &ResponseHeader {
        &self.created
    }

    /// Sends a `WatchProgressRequest` on the client's shared stream (or on the next one, while
    /// reconnecting) and returns; the answer arrives as a progress notification on **every**
    /// watcher of the client (never through an `etcd grpc-proxy`, which does not answer it). Caveat: up to etcd 3.4.24 / 3.5.7 its `header.revision` is the
    /// member's store revision when it read the request, which can be ahead of events not yet
    /// delivered to a watcher that is catching up on history.
    pub fn request_progress(&self) -> Result<()> {
        self.cmds.send(Command::Progress).map_err(|_| stopped())
    }

    /// Cancels the watch (same as dropping the watcher).
    pub fn cancel(self) {}
}

impl Stream for Watcher {
    type Item = Result<WatchResponse>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (size, item) = match this.events.poll_recv(cx) {
            Poll::Ready(Some(sized)) => sized,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if this.flow.taken(size) {
            let _ = this.cmds.send(Command::Resume { id: this.id });
        }
        Poll::Ready(Some(item))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.cmds.send(Command::Cancel { id: self.id });
    }
}

impl Client {
    /// Watches `key` (with the options: a prefix or range, from a past revision, ...) on the one
    /// stream all of this client's watchers share. Returns once the server has created the watch,
    /// so every change after the call returns is seen; [`Error::Timeout`] if that takes longer than
    /// the request timeout (the stream is retried on other members meanwhile). See [`Watcher`].
    pub async fn watch(&self, key: impl Into<Bytes>, options: impl Into<Option<WatchOptions>>) -> Result<Watcher> {
        let req = options.into().unwrap_or_default().to_pb(key.into(), &self.ns)?;
        let hub = &self.inner.watch;
        let cmds = hub.sender();
        let id = hub.next_id();
        let (tx, events) = mpsc::unbounded_channel();
        let (done, created) = oneshot::channel();
        let flow = Arc::new(Flow::default());
        let mut watcher = Watcher {
            id,
            created: ResponseHeader::default(),
            events,
            flow: flow.clone(),
            cmds,
            _client: Arc::clone(&self.inner),
        };
        let create = Command::Create { id, req, ns: self.ns.clone(), tx, flow, done };
        watcher.cmds.send(create).map_err(|_| stopped())?;
        let wait = async { created.await.unwrap_or_else(|_| Err(stopped())) };
        watcher.created = match self.timeout() {
            Some(after) => tokio::time::timeout(after, wait).await.map_err(|_| Error::Timeout { after })??,
            None => wait.await?,
        };
        Ok(watcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_build_namespaced_requests() {
        let ns = Namespace::default().join(b"app/");
        let req = WatchOptions::new().with_prefix().with_no_put().with_no_delete().to_pb("k".into(), &ns);
        let req = req.expect("valid");
        assert_eq!(
            (&req.key[..], &req.range_end[..], req.filters.as_slice()),
            (&b"app/k"[..], &b"app/l"[..], &[0, 1][..])
        );
        let all = WatchOptions::new().with_prefix().to_pb(Bytes::new(), &ns).expect("valid");
        assert_eq!(&all.range_end[..], b"app0");
        assert!(WatchOptions::new().to_pb(Bytes::new(), &ns).is_err());
        assert!(WatchOptions::new().with_range("a").to_pb("b".into(), &ns).is_err());
        assert!(WatchOptions::new().with_start_revision(-1).to_pb("b".into(), &ns).is_err());
    }
}
