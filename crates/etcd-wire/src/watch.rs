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

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::client::{Client, Inner, MAX_RESPONSE_BYTES, needs_new_token, needs_new_token_text};
use crate::error::{Error, Result};
use crate::kv::{KeyValue, ResponseHeader};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, watch_client::WatchClient, watch_request::RequestUnion};
use crate::pb::mvccpb;
use crate::range::KeyRange;
use crate::transport::Member;

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (`kv` holds the key and the deletion revision, no value).
    Delete,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change (namespace prefix stripped); `mod_revision` is its revision.
    pub kv: KeyValue,
    /// The key-value before the change, with [`WatchOptions::with_prev_kv`] and if there was one.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    fn from_pb(ev: mvccpb::Event, ns: &Namespace) -> Self {
        let delete = ev.r#type == mvccpb::event::EventType::Delete as i32;
        Event {
            kind: if delete { EventKind::Delete } else { EventKind::Put },
            kv: KeyValue::from_pb(ev.kv.unwrap_or_default(), ns),
            prev_kv: ev.prev_kv.map(|kv| KeyValue::from_pb(kv, ns)),
        }
    }

    /// Roughly the memory this event holds: its keys and values, and a little for the rest.
    fn size(&self) -> usize {
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + 64;
        kv(&self.kv) + self.prev_kv.as_ref().map_or(0, kv)
    }
}

/// One item of a [`Watcher`]: the events of one revision (or of several consecutive revisions),
/// or a progress notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchResponse {
    /// Response header; `revision` is the store revision the response was made at.
    pub header: ResponseHeader,
    /// The events, in revision order; empty for a progress notification.
    pub events: Vec<Event>,
    /// No events, just progress: for a watcher with [`WatchOptions::with_progress_notify`], every
    /// event up to `header.revision` has been delivered. Answers to
    /// [`Watcher::request_progress`] are progress notifications too (see there for their caveat).
    pub progress_notify: bool,
}

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
    /// Include each key's previous value in [`Event::prev_kv`].
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
    _client: Arc<crate::client::Inner>,
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
        let left = this.flow.buffered.fetch_sub(size, Ordering::SeqCst) - size;
        if left <= WATCH_BUFFER_BYTES / 2 && this.flow.paused.swap(false, Ordering::SeqCst) {
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
    pub async fn watch(&self, key: impl Into<Bytes>, options: WatchOptions) -> Result<Watcher> {
        let req = options.to_pb(key.into(), &self.ns)?;
        let hub = &self.inner.watch;
        let cmds = hub.sender(&self.inner);
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
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
        watcher.created = match self.inner.options.request_timeout {
            Some(after) => tokio::time::timeout(after, wait).await.map_err(|_| Error::Timeout { after })??,
            None => wait.await?,
        };
        Ok(watcher)
    }
}

fn stopped() -> Error {
    let why = "the watch task has stopped: every client handle was dropped";
    Error::Unavailable { status: Box::new(Status::unavailable(why)) }
}

/// How many bytes of events (keys and values, plus a little per event) one watcher's buffer
/// may hold before its watch is paused on the server (see the module docs, step 7). A single
/// response larger than this is still delivered when the buffer is empty.
pub const WATCH_BUFFER_BYTES: usize = 4 << 20;

/// What a [`Watcher`] and the task share about its buffer.
#[derive(Debug, Default)]
struct Flow {
    /// Bytes of events sent to the watcher and not yet taken by its reader.
    buffered: AtomicUsize,
    /// Set by the task when it paused the watch; whoever clears it asks for the resume.
    paused: AtomicBool,
}

/// One buffered item and its size in bytes (0 for progress and errors).
type Item = (usize, Result<WatchResponse>);

/// Messages from [`Client::watch`] and [`Watcher`]s to the task.
#[derive(Debug)]
enum Command {
    Create {
        id: i64,
        req: pb::WatchCreateRequest,
        ns: Namespace,
        tx: mpsc::UnboundedSender<Item>,
        flow: Arc<Flow>,
        done: oneshot::Sender<Result<ResponseHeader>>,
    },
    Cancel {
        id: i64,
    },
    /// The reader of a paused watcher has taken half of its buffer.
    Resume {
        id: i64,
    },
    Progress,
    /// The client is gone.
    Shutdown,
}

/// The client's shared watch stream: a channel to its task, started on first use.
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    cmds: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_id: AtomicI64,
}

impl WatchHub {
    /// The channel to the task, starting the task if it is not running.
    fn sender(&self, inner: &Arc<Inner>) -> mpsc::UnboundedSender<Command> {
        let mut slot = self.cmds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Task::new(Arc::downgrade(inner), rx).run());
        *slot = Some(tx.clone());
        tx
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        if let Some(tx) = self.cmds.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Command::Shutdown);
        }
    }
}

/// One watcher as the task sees it.
#[derive(Debug)]
struct Slot {
    /// The create request, namespaced; `watch_id` and `start_revision` are set per stream.
    req: pb::WatchCreateRequest,
    ns: Namespace,
    tx: mpsc::UnboundedSender<Item>,
    flow: Arc<Flow>,
    /// Paused because the buffer was full: canceled on the server, not re-created until `resume`.
    overflowed: bool,
    /// The reader made room: re-create once the server confirmed the cancel.
    resume: bool,
    /// Until the first creation: where [`Client::watch`] waits.
    done: Option<oneshot::Sender<Result<ResponseHeader>>>,
    /// The first revision not yet delivered; 0 until known.
    next_rev: i64,
    /// The server's ID for this watch on the current stream, once created (the client-chosen
    /// ID, or through `etcd grpc-proxy` the proxy's own); `None` until then and once canceled.
    wire_id: Option<i64>,
    /// Created on the current stream.
    confirmed: bool,
    /// Fragments received so far.
    partial: Option<pb::WatchResponse>,
    /// A create was rejected for auth and the token refreshed since.
    auth_retried: bool,
}

impl Slot {
    /// Delivers a complete response: events at or after `next_rev`, or progress. Returns `false`
    /// when the events would overfill the buffer: then nothing was delivered.
    fn deliver(&mut self, r: pb::WatchResponse) -> bool {
        let header = ResponseHeader::from_pb(r.header);
        if r.events.is_empty() {
            self.progress(header);
            self.next_rev = self.next_rev.max(header.revision.saturating_add(1));
            return true;
        }
        let next = self.next_rev;
        let fresh = |ev: &mvccpb::Event| ev.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next);
        let events: Vec<Event> = r.events.into_iter().filter(fresh).map(|ev| Event::from_pb(ev, &self.ns)).collect();
        let Some(last) = events.last() else { return true };
        let size: usize = events.iter().map(Event::size).sum();
        let buffered = self.flow.buffered.load(Ordering::SeqCst);
        if buffered > 0 && buffered + size > WATCH_BUFFER_BYTES {
            return false;
        }
        self.next_rev = last.kv.mod_revision.saturating_add(1);
        self.flow.buffered.fetch_add(size, Ordering::SeqCst);
        let _ = self.tx.send((size, Ok(WatchResponse { header, events, progress_notify: false })));
        true
    }

    /// Passes on a progress notification, unless it is behind what was delivered (a member that
    /// lags behind the one before a resume).
    fn progress(&self, header: ResponseHeader) {
        if header.revision.saturating_add(1) >= self.next_rev {
            let _ = self.tx.send((0, Ok(WatchResponse { header, events: Vec::new(), progress_notify: true })));
        }
    }

    /// Ends the watcher with `err`: the caller of [`Client::watch`] gets it if still waiting.
    fn finish(mut self, err: Error) {
        match self.done.take() {
            Some(done) => {
                let _ = done.send(Err(err));
            }
            None => {
                let _ = self.tx.send((0, Err(err)));
            }
        }
    }
}

/// The current stream.
struct Link {
    /// The responses; opening the stream is its first step.
    answers: BoxStream<'static, Result<pb::WatchResponse, Status>>,
    tx: mpsc::UnboundedSender<pb::WatchRequest>,
    member: Arc<Member>,
    generation: u64,
}

impl Link {
    fn send(&self, req: RequestUnion) {
        // A closed request stream shows up as the end of `answers`.
        let _ = self.tx.send(pb::WatchRequest { request_union: Some(req) });
    }
}

/// The background task behind [`WatchHub`].
/// How the server names the watches of the current stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// Not known yet: the first create is sent alone, and its answer tells.
    Unknown,
    /// The server uses the IDs the client chose (etcd 3.4 and later): creates are pipelined.
    ClientChosen,
    /// The server assigns its own (`etcd grpc-proxy`): creates go one at a time, so each
    /// `created` answer names the watch of the one create in flight.
    ServerAssigned,
}

struct Task {
    inner: Weak<Inner>,
    cmds: mpsc::UnboundedReceiver<Command>,
    slots: HashMap<i64, Slot>,
    link: Option<Link>,
    /// IDs whose create is unanswered on the current stream, in send order.
    pending: VecDeque<i64>,
    /// How the server names watches on the current stream.
    ids: Ids,
    /// Creates not sent yet: while `ids` is not known to be client-chosen, one create at a time.
    queued: VecDeque<i64>,
    /// With server-assigned IDs: the server's ID of each watch to the watcher's own.
    wire: HashMap<i64, i64>,
    /// Server IDs canceled on the current stream (their late responses are ignored).
    canceled: HashSet<i64>,
    retry_at: Instant,
    failures: u32,
    progress_wanted: bool,
    /// Refresh the token (stale generation) before the next stream.
    refresh: Option<u64>,
}

impl Task {
    fn new(inner: Weak<Inner>, cmds: mpsc::UnboundedReceiver<Command>) -> Self {
        Task {
            inner,
            cmds,
            slots: HashMap::new(),
            link: None,
            pending: VecDeque::new(),
            ids: Ids::Unknown,
            queued: VecDeque::new(),
            wire: HashMap::new(),
            canceled: HashSet::new(),
            retry_at: Instant::now(),
            failures: 0,
            progress_wanted: false,
            refresh: None,
        }
    }

    async fn run(mut self) {
        loop {
            if self.slots.is_empty() {
                self.link = None;
            } else if self.link.is_none() && Instant::now() >= self.retry_at {
                let Some(inner) = self.inner.upgrade() else { return self.end_all() };
                let client = Client { inner, ns: Namespace::default() };
                if let Some(stale) = self.refresh.take()
                    && let Err(e) = client.refresh_token(stale).await
                {
                    tracing::debug!(error = %e, "token refresh for the watch stream failed");
                }
                self.open(&client);
            }
            let waiting = self.link.is_none() && !self.slots.is_empty();
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Shutdown) | None => return self.end_all(),
                    Some(cmd) => self.apply(cmd),
                },
                answer = next_answer(&mut self.link), if self.link.is_some() => match answer {
                    Some(Ok(r)) => self.on_response(r),
                    Some(Err(status)) => self.fail(status.message(), needs_new_token(&status)),
                    None => self.fail("the stream ended", false),
                },
                () = tokio::time::sleep_until(self.retry_at), if waiting => {}
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Create { id, req, ns, tx, flow, done } => {
                let next_rev = req.start_revision;
                let mut slot = Slot {
                    req,
                    ns,
                    tx,
                    flow,
                    overflowed: false,
                    resume: false,
                    done: Some(done),
                    next_rev,
                    wire_id: None,
                    confirmed: false,
                    partial: None,
                    auth_retried: false,
                };
                self.create(id, &mut slot);
                self.slots.insert(id, slot);
            }
            Command::Cancel { id } => {
                let Some(slot) = self.slots.remove(&id) else { return };
                if let Some(at) = self.queued.iter().position(|q| *q == id) {
                    self.queued.remove(at);
                } else if let Some(wire) = slot.wire_id {
                    self.cancel_on_server(wire);
                }
                // Else its create is unanswered: the answer finds no watcher and cancels it.
            }
            Command::Resume { id } => {
                if let Some(slot) = self.slots.get_mut(&id)
                    && slot.overflowed
                {
                    slot.resume = true;
                    self.resume_if_ready(id);
                }
            }
            Command::Progress => match &self.link {
                Some(link) => link.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                None => self.progress_wanted = true,
            },
            Command::Shutdown => self.end_all(),
        }
    }

    /// Creates watcher `id` on the current stream, resuming at `next_rev`: sends the request now,
    /// or queues it while another create is in flight and the server may assign its own IDs.
    fn create(&mut self, id: i64, slot: &mut Slot) {
        let Some(link) = &self.link else { return };
        (slot.wire_id, slot.confirmed, slot.partial) = (None, false, None);
        if self.ids != Ids::ClientChosen && !self.pending.is_empty() {
            self.queued.push_back(id);
            return;
        }
        let req = pb::WatchCreateRequest { watch_id: id, start_revision: slot.next_rev, ..slot.req.clone() };
        link.send(RequestUnion::CreateRequest(req));
        self.pending.push_back(id);
    }

    /// Sends the queued creates that may go now (all of them once IDs are known to be the client's).
    fn send_queued(&mut self) {
        while self.ids == Ids::ClientChosen || self.pending.is_empty() {
            let Some(id) = self.queued.pop_front() else { return };
            let Some(mut slot) = self.slots.remove(&id) else { continue };
            self.create(id, &mut slot);
            self.slots.insert(id, slot);
        }
    }

    /// The watcher a server-side watch ID names, if any.
    fn watcher_of(&self, wire: i64) -> Option<i64> {
        match self.ids {
            Ids::ServerAssigned => self.wire.get(&wire).copied(),
            _ => Some(wire),
        }
    }

    /// Pauses watcher `id`, whose buffer is full: cancels it on the server (see the module docs,
    /// step 7). If its reader has already made room meanwhile, it resumes after the cancel.
    fn overflow(&mut self, id: i64) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        (slot.overflowed, slot.resume, slot.confirmed, slot.partial) = (true, false, false, None);
        let wire = slot.wire_id;
        slot.flow.paused.store(true, Ordering::SeqCst);
        if slot.flow.buffered.load(Ordering::SeqCst) <= WATCH_BUFFER_BYTES / 2
            && slot.flow.paused.swap(false, Ordering::SeqCst)
        {
            slot.resume = true;
        }
        tracing::debug!(id, "watcher buffer full; pausing the watch until its reader catches up");
        if let Some(wire) = wire {
            self.cancel_on_server(wire);
        }
    }

    /// Re-creates paused watcher `id` from its next revision, once its reader made room and the
    /// server confirmed the cancel (or the stream it was canceled on is gone).
    fn resume_if_ready(&mut self, id: i64) {
        if self.link.is_none() {
            return;
        }
        let Some(mut slot) = self.slots.remove(&id) else { return };
        if slot.overflowed && slot.resume && slot.wire_id.is_none() {
            (slot.overflowed, slot.resume) = (false, false);
            self.create(id, &mut slot);
        }
        self.slots.insert(id, slot);
    }

    fn cancel_on_server(&mut self, id: i64) {
        if let Some(link) = &self.link
            && self.canceled.insert(id)
        {
            link.send(RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: id }));
        }
    }

    fn on_response(&mut self, mut r: pb::WatchResponse) {
        if r.created {
            return self.on_created(r);
        }
        if r.canceled {
            if r.cancel_reason.contains("no leader") {
                return self.fail(&r.cancel_reason, false);
            }
            // The server confirmed our cancel (or canceled by itself): nothing more comes for this
            // ID, so forget it; a long-lived stream with many short watches stays small.
            let wire = r.watch_id;
            self.canceled.remove(&wire);
            let watcher = self.watcher_of(wire);
            self.wire.remove(&wire);
            let Some(id) = watcher else { return };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.wire_id = None;
                if r.compact_revision == 0 && slot.overflowed {
                    return self.resume_if_ready(id);
                }
            }
            let Some(slot) = self.slots.remove(&id) else { return };
            self.cancel_on_server(wire); // a compacted watcher lingers on the server
            return slot.finish(if r.compact_revision != 0 {
                Error::Compacted { compact_revision: Some(r.compact_revision), status: None }
            } else {
                let reason = if r.cancel_reason.is_empty() { "canceled".to_owned() } else { r.cancel_reason };
                Error::WatchCanceled { reason }
            });
        }
        if r.watch_id == -1 && r.events.is_empty() {
            // The answer to a WatchProgressRequest: passed on, but `next_rev` is left alone.
            let header = ResponseHeader::from_pb(r.header);
            self.slots.values().filter(|s| s.confirmed).for_each(|s| s.progress(header));
            return;
        }
        let wire = r.watch_id;
        let Some((id, slot)) = self.watcher_of(wire).and_then(|id| Some((id, self.slots.get_mut(&id)?))) else {
            return self.cancel_on_server(wire); // dropped, or not ours
        };
        if slot.overflowed {
            return; // sent before the server saw our cancel
        }
        self.failures = 0;
        let r = match slot.partial.take() {
            Some(mut head) => {
                head.events.append(&mut r.events);
                head.fragment = r.fragment;
                head
            }
            None => r,
        };
        if r.fragment {
            slot.partial = Some(r);
        } else if !slot.deliver(r) {
            self.overflow(id);
        }
    }

    /// The answer to the oldest create in flight; then the next queued creates go.
    fn on_created(&mut self, r: pb::WatchResponse) {
        let Some(id) = self.pending.pop_front() else { return };
        let wire = r.watch_id;
        if wire != -1 && self.ids == Ids::Unknown {
            self.ids = if wire == id { Ids::ClientChosen } else { Ids::ServerAssigned };
            tracing::debug!(ids = ?self.ids, "watch IDs on this stream");
        }
        self.on_created_for(id, r);
        self.send_queued();
    }

    fn on_created_for(&mut self, id: i64, r: pb::WatchResponse) {
        let wire = r.watch_id;
        if wire != -1 && !r.canceled && !self.slots.contains_key(&id) {
            // Dropped while its create was in flight.
            self.wire.insert(wire, id);
            return self.cancel_on_server(wire);
        }
        if self.ids == Ids::ServerAssigned && wire != -1 {
            if !r.canceled {
                self.wire.insert(wire, id);
            }
        } else if wire != id && wire != -1 {
            if !r.canceled {
                self.cancel_on_server(r.watch_id);
            }
            let why = "the server did not use the client-chosen watch ID (etcd 3.4 or newer is needed)";
            if let Some(slot) = self.slots.remove(&id) {
                slot.finish(Error::WatchCanceled { reason: why.to_owned() });
            }
            return;
        }
        let with_creds = self.inner.upgrade().is_some_and(|i| i.options.credentials.is_some());
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if r.canceled {
            let reason = r.cancel_reason;
            if reason.contains("no leader") {
                return self.fail(&reason, false);
            }
            let auth = needs_new_token_text(&reason) || reason.contains("permission denied");
            if auth && with_creds && !slot.auth_retried {
                // The stream's token may have expired or gone stale (3.5.1 reports both as
                // "permission denied"): reopen the stream with a new token and ask once more.
                slot.auth_retried = true;
                return self.fail(&reason, true);
            }
            if let Some(slot) = self.slots.remove(&id) {
                slot.finish(Error::WatchCanceled { reason });
            }
            return;
        }
        let header = ResponseHeader::from_pb(r.header);
        (slot.wire_id, slot.confirmed, slot.auth_retried, self.failures) = (Some(wire), true, false, 0);
        if slot.next_rev == 0 {
            slot.next_rev = header.revision.saturating_add(1);
        }
        if let Some(done) = slot.done.take() {
            let _ = done.send(Ok(header));
        }
    }

    /// Opens a new stream on the next member and re-creates every watcher on it.
    fn open(&mut self, client: &Client) {
        let member = client.inner.pool.pick();
        let meta = client.meta(None);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        meta.apply(&mut request);
        request.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
        let mut stub = WatchClient::new(member.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_decoding_message_size(usize::MAX);
        tracing::debug!(endpoint = %member.url, watchers = self.slots.len(), "opening the watch stream");
        let answers = futures::stream::once(async move { stub.watch(request).await.map(|r| r.into_inner()) })
            .try_flatten()
            .boxed();
        self.link = Some(Link { answers, tx, member, generation: meta.generation });
        self.pending.clear();
        self.canceled.clear();
        self.queued.clear();
        self.wire.clear();
        self.ids = Ids::Unknown;
        let mut ids: Vec<i64> = self.slots.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(mut slot) = self.slots.remove(&id) {
                // A paused watcher waits for its reader; the cancel went with the old stream.
                if !slot.overflowed || slot.resume {
                    (slot.overflowed, slot.resume) = (false, false);
                    self.create(id, &mut slot);
                }
                self.slots.insert(id, slot);
            }
        }
        if std::mem::take(&mut self.progress_wanted)
            && let Some(link) = &self.link
        {
            link.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}));
        }
    }

    /// Drops the stream and schedules a new one after a backoff (refreshing the token first if
    /// `refresh`, else putting the member in cool-down).
    fn fail(&mut self, why: &str, refresh: bool) {
        let Some(link) = self.link.take() else { return };
        for slot in self.slots.values_mut() {
            (slot.wire_id, slot.confirmed, slot.partial) = (None, false, None);
        }
        let Some(inner) = self.inner.upgrade() else { return };
        self.failures = self.failures.saturating_add(1);
        if refresh {
            self.refresh = Some(link.generation);
        } else {
            inner.pool.mark_failed(&link.member);
        }
        let backoff = inner.options.retry.backoff(self.failures, fastrand::f64());
        self.retry_at = Instant::now() + backoff;
        tracing::debug!(endpoint = %link.member.url, why, ?backoff, "watch stream failed; resuming on the next member");
    }

    fn end_all(&mut self) {
        self.link = None;
        for (_, slot) in self.slots.drain() {
            slot.finish(stopped());
        }
    }
}

/// The next answer on the stream (`None` when it ended; pending forever without a stream).
async fn next_answer(link: &mut Option<Link>) -> Option<Result<pb::WatchResponse, Status>> {
    match link {
        Some(link) => link.answers.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher's receiving end, without the sizes.
    struct Rx(mpsc::UnboundedReceiver<Item>);

    impl Rx {
        fn try_recv(&mut self) -> std::result::Result<Result<WatchResponse>, mpsc::error::TryRecvError> {
            self.0.try_recv().map(|(_, item)| item)
        }
    }

    fn task_with(id: i64, start: i64) -> (Task, Rx) {
        let (_, cmds) = mpsc::unbounded_channel();
        let mut task = Task::new(Weak::new(), cmds);
        let (tx, rx) = mpsc::unbounded_channel();
        let (done, _) = oneshot::channel();
        let req = pb::WatchCreateRequest { start_revision: start, ..Default::default() };
        let flow = Arc::new(Flow::default());
        task.apply(Command::Create { id, req, ns: Namespace::default().join(b"ns/"), tx, flow, done });
        task.pending.push_back(id); // as if sent on a stream
        (task, Rx(rx))
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader { revision, ..Default::default() })
    }

    fn put(key: &str, rev: i64) -> mvccpb::Event {
        let kv = mvccpb::KeyValue { key: Bytes::from(format!("ns/{key}")), mod_revision: rev, ..Default::default() };
        mvccpb::Event { r#type: 0, kv: Some(kv), prev_kv: None }
    }

    fn resp(id: i64, rev: i64, events: Vec<mvccpb::Event>, fragment: bool) -> pb::WatchResponse {
        pb::WatchResponse { header: header(rev), watch_id: id, events, fragment, ..Default::default() }
    }

    #[test]
    fn joins_fragments_drops_duplicates_and_tracks_next_revision() {
        let (mut task, mut rx) = task_with(7, 0);
        task.on_response(pb::WatchResponse { header: header(10), watch_id: 7, created: true, ..Default::default() });
        assert_eq!(task.slots[&7].next_rev, 11);
        task.on_response(resp(7, 12, vec![put("a", 11)], true));
        assert!(rx.try_recv().is_err(), "a fragment alone is not delivered");
        task.on_response(resp(7, 12, vec![put("b", 11), put("c", 12)], false));
        let got = rx.try_recv().ok().and_then(|r| r.ok()).expect("joined response");
        let keys: Vec<_> = got.events.iter().map(|e| e.kv.key_str().into_owned()).collect();
        assert_eq!(keys, ["a", "b", "c"], "fragments joined, namespace stripped");
        task.on_response(resp(7, 13, vec![put("c", 12), put("d", 13)], false));
        let got = rx.try_recv().ok().and_then(|r| r.ok()).expect("response");
        assert_eq!(got.events.len(), 1, "revision 12 was delivered already");
        task.on_response(resp(7, 20, vec![], false));
        assert!(rx.try_recv().ok().and_then(|r| r.ok()).is_some_and(|r| r.progress_notify));
        assert_eq!(task.slots[&7].next_rev, 21);
        // The answer to a progress request does not move next_rev; stale progress is not passed on.
        task.on_response(resp(-1, 99, vec![], false));
        assert_eq!(task.slots[&7].next_rev, 21);
        assert!(rx.try_recv().ok().and_then(|r| r.ok()).is_some_and(|r| r.header.revision == 99));
        task.on_response(resp(7, 15, vec![], false));
        assert!(rx.try_recv().is_err(), "progress behind delivered events is dropped");
        // Garbage does not panic: an event without kv, unknown IDs, an unexpected created.
        task.on_response(resp(7, 30, vec![mvccpb::Event { r#type: 9, kv: None, prev_kv: None }], false));
        task.on_response(resp(12345, 30, vec![put("x", 30)], false));
        task.on_response(pb::WatchResponse { created: true, watch_id: 3, ..Default::default() });
        assert_eq!(task.slots[&7].next_rev, 21);
    }

    #[test]
    fn compaction_and_server_cancel_end_the_watcher() {
        let (mut task, mut rx) = task_with(1, 5);
        task.on_response(pb::WatchResponse { header: header(50), watch_id: 1, created: true, ..Default::default() });
        assert_eq!(task.slots[&1].next_rev, 5, "a start revision is kept");
        task.on_response(pb::WatchResponse { watch_id: 1, canceled: true, compact_revision: 9, ..Default::default() });
        assert!(matches!(rx.try_recv(), Ok(Err(Error::Compacted { compact_revision: Some(9), .. }))));
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)), "then the stream ends");

        let (mut task, mut rx) = task_with(2, 0);
        task.on_response(pb::WatchResponse { header: header(3), watch_id: 2, created: true, ..Default::default() });
        let reason = "etcdserver: permission denied".to_owned();
        task.on_response(pb::WatchResponse {
            watch_id: 2,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        });
        assert!(matches!(rx.try_recv(), Ok(Err(Error::WatchCanceled { reason })) if reason.contains("permission")));
    }

    #[tokio::test]
    async fn confirmed_cancels_are_forgotten() {
        let (mut task, _rx) = task_with(1, 0);
        let (tx, mut sent) = mpsc::unbounded_channel();
        let member = crate::transport::test_member();
        task.link = Some(Link { answers: futures::stream::empty().boxed(), tx, member, generation: 0 });
        // A thousand short watches, each dropped: an event after the drop makes the task cancel
        // it on the server, which confirms.
        for id in 100..1100 {
            task.on_response(resp(id, 5, vec![put("x", 5)], false));
            task.on_response(resp(id, 6, vec![put("x", 6)], false));
            task.on_response(pb::WatchResponse { watch_id: id, canceled: true, ..Default::default() });
        }
        let mut cancels = 0;
        while let Ok(req) = sent.try_recv() {
            cancels += usize::from(matches!(req.request_union, Some(RequestUnion::CancelRequest(_))));
        }
        assert_eq!(cancels, 1000, "one cancel per dropped watcher");
        assert!(task.canceled.is_empty(), "{} confirmed cancels remembered", task.canceled.len());
    }

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
