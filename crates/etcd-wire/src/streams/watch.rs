//! The engine behind the client's shared watch stream: one task per client that creates,
//! routes, resumes and paces every watcher. The algorithm, step by step, is in the docs of
//! [`crate::watch`]; the stream itself is kept by a [`Supervisor`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use super::{Hub, Supervisor};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, watch_request::RequestUnion};
use crate::pb::mvccpb;
use crate::rpc::{Core, needs_new_token, needs_new_token_text, stub};
use crate::types::{Event, ResponseHeader, WatchResponse};

/// The error of a watch whose task has stopped.
pub(crate) fn stopped() -> Error {
    let why = "the watch task has stopped: every client handle was dropped";
    Error::Unavailable { status: Status::unavailable(why).into() }
}

/// How many bytes of events (keys and values, plus a little per event) one watcher's buffer
/// may hold before its watch is paused on the server (see the module docs, step 7). A single
/// response larger than this is still delivered when the buffer is empty.
pub const WATCH_BUFFER_BYTES: usize = 4 << 20;

/// What a [`Watcher`](crate::Watcher) and the task share about its buffer.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Bytes of events sent to the watcher and not yet taken by its reader.
    buffered: AtomicUsize,
    /// Set by the task when it paused the watch; whoever clears it asks for the resume.
    paused: AtomicBool,
}

impl Flow {
    /// The reader took an item of `size` bytes; `true` when that made enough room for a paused
    /// watch to be resumed (the caller then sends [`Command::Resume`]).
    pub(crate) fn taken(&self, size: usize) -> bool {
        let left = self.buffered.fetch_sub(size, Ordering::SeqCst) - size;
        left <= WATCH_BUFFER_BYTES / 2 && self.paused.swap(false, Ordering::SeqCst)
    }
}

/// One buffered item and its size in bytes (0 for progress and errors).
pub(crate) type Item = (usize, Result<WatchResponse>);

/// Messages from [`Client::watch`](crate::Client::watch) and [`Watcher`](crate::Watcher)s to the task.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new watcher; `done` gets the header of the server's `created` answer.
    Create {
        id: i64,
        req: pb::WatchCreateRequest,
        ns: Namespace,
        tx: mpsc::UnboundedSender<Item>,
        flow: Arc<Flow>,
        done: oneshot::Sender<Result<ResponseHeader>>,
    },
    /// The watcher was dropped.
    Cancel { id: i64 },
    /// The reader of a paused watcher has taken half of its buffer.
    Resume { id: i64 },
    /// Send a `WatchProgressRequest`.
    Progress,
}

/// The client's shared watch stream: a channel to its task, started on first use.
pub(crate) type WatchHub = Hub<Command>;

/// A hub for a client's watch stream.
pub(crate) fn hub(core: Weak<Core>) -> WatchHub {
    Hub::new(core, |core, cmds| {
        tokio::spawn(Task::new(core, cmds).run());
    })
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

/// The background task behind [`WatchHub`].
struct Task {
    cmds: mpsc::UnboundedReceiver<Command>,
    slots: HashMap<i64, Slot>,
    stream: Supervisor<pb::WatchRequest, pb::WatchResponse>,
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
    progress_wanted: bool,
}

impl Task {
    fn new(core: Weak<Core>, cmds: mpsc::UnboundedReceiver<Command>) -> Self {
        Task {
            cmds,
            slots: HashMap::new(),
            stream: Supervisor::new(core, "watch"),
            pending: VecDeque::new(),
            ids: Ids::Unknown,
            queued: VecDeque::new(),
            wire: HashMap::new(),
            canceled: HashSet::new(),
            progress_wanted: false,
        }
    }

    async fn run(mut self) {
        loop {
            if self.slots.is_empty() {
                self.stream.close();
            } else if self.stream.due(Instant::now()) {
                if !self.stream.open(true, |ch, req| async move { stub::watch(ch).watch(req).await }).await {
                    return self.end_all();
                }
                self.on_open();
            }
            let waiting = !self.stream.is_open() && !self.slots.is_empty();
            let retry_at = self.stream.retry_at();
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => return self.end_all(),
                },
                answer = self.stream.next(), if self.stream.is_open() => match answer {
                    Some(Ok(r)) => self.on_response(r),
                    Some(Err(status)) => self.fail(status.message(), needs_new_token(&status)),
                    None => self.fail("the stream ended", false),
                },
                () = tokio::time::sleep_until(retry_at), if waiting => {}
            }
        }
    }

    /// Sends `req` on the current stream, if any (a closed stream shows up as its end).
    fn send(&self, req: RequestUnion) {
        if let Some(link) = self.stream.link() {
            link.send(pb::WatchRequest { request_union: Some(req) });
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
            Command::Progress => match self.stream.is_open() {
                true => self.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                false => self.progress_wanted = true,
            },
        }
    }

    /// Creates watcher `id` on the current stream, resuming at `next_rev`: sends the request now,
    /// or queues it while another create is in flight and the server may assign its own IDs.
    fn create(&mut self, id: i64, slot: &mut Slot) {
        if !self.stream.is_open() {
            return;
        }
        (slot.wire_id, slot.confirmed, slot.partial) = (None, false, None);
        if self.ids != Ids::ClientChosen && !self.pending.is_empty() {
            self.queued.push_back(id);
            return;
        }
        let req = pb::WatchCreateRequest { watch_id: id, start_revision: slot.next_rev, ..slot.req.clone() };
        self.send(RequestUnion::CreateRequest(req));
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
        if !self.stream.is_open() {
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
        if self.stream.is_open() && self.canceled.insert(id) {
            self.send(RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: id }));
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
        self.stream.answered();
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
        let with_creds = self.stream.core().is_some_and(|core| core.has_credentials());
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
        (slot.wire_id, slot.confirmed, slot.auth_retried) = (Some(wire), true, false);
        self.stream.answered();
        if slot.next_rev == 0 {
            slot.next_rev = header.revision.saturating_add(1);
        }
        if let Some(done) = slot.done.take() {
            let _ = done.send(Ok(header));
        }
    }

    /// A new stream is open: re-creates every watcher on it.
    fn on_open(&mut self) {
        tracing::debug!(watchers = self.slots.len(), "re-creating the watchers on the new stream");
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
        if std::mem::take(&mut self.progress_wanted) {
            self.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}));
        }
    }

    /// Drops the stream; the next one comes after a backoff (see [`Supervisor::fail`]).
    fn fail(&mut self, why: &str, token_rejected: bool) {
        if self.stream.fail(why, token_rejected) {
            for slot in self.slots.values_mut() {
                (slot.wire_id, slot.confirmed, slot.partial) = (None, false, None);
            }
        }
    }

    fn end_all(&mut self) {
        self.stream.close();
        for (_, slot) in self.slots.drain() {
            slot.finish(stopped());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
        let mut sent = task.stream.open_for_test();
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
}
