//! The data types several services share: [`KeyValue`] and [`ResponseHeader`] (in every
//! answer), the watch [`Event`]s and [`WatchResponse`]s, and why a kept-alive lease ended
//! ([`LeaseLost`]).

use bytes::Bytes;

use crate::namespace::Namespace;
use crate::pb::{etcdserverpb as pb, mvccpb};

/// A key and its value, with etcd's revision bookkeeping.
///
/// `key` and `value` are [`Bytes`] views into the buffer their response was decoded from: cloning
/// them copies nothing, and keeping one alive keeps that whole buffer alive (copy it with
/// `Bytes::copy_from_slice` to keep a small piece of a large response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyValue {
    /// The key (namespace prefix stripped).
    pub key: Bytes,
    /// The value (empty with `keys_only`).
    pub value: Bytes,
    /// Revision of the key's last creation.
    pub create_revision: i64,
    /// Revision of the key's last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after creation; a delete resets it).
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl KeyValue {
    pub(crate) fn from_pb(kv: mvccpb::KeyValue, ns: &Namespace) -> Self {
        KeyValue {
            key: ns.strip(kv.key),
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }

    /// The key as UTF-8, lossily (invalid bytes become U+FFFD). See [`key_utf8`](Self::key_utf8)
    /// for a view that fails instead.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as UTF-8, lossily (invalid bytes become U+FFFD). See
    /// [`value_utf8`](Self::value_utf8) for a view that fails instead.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }

    /// The key as `&str`, or the UTF-8 error when it is not valid UTF-8. Copies nothing.
    pub fn key_utf8(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.key)
    }

    /// The value as `&str`, or the UTF-8 error when it is not valid UTF-8. Copies nothing.
    pub fn value_utf8(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.value)
    }
}

/// Which cluster and member answered, at what store revision and raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResponseHeader {
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The answering member's ID.
    pub member_id: u64,
    /// The key-value store revision when the request was applied.
    pub revision: i64,
    /// The raft term when the request was applied.
    pub raft_term: u64,
}

impl ResponseHeader {
    pub(crate) fn from_pb(h: Option<pb::ResponseHeader>) -> Self {
        let h = h.unwrap_or_default();
        ResponseHeader {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

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
    /// The key-value before the change, with [`WatchOptions::with_prev_kv`](crate::WatchOptions::with_prev_kv) and if there was one.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub(crate) fn from_pb(ev: mvccpb::Event, ns: &Namespace) -> Self {
        let delete = ev.r#type == mvccpb::event::EventType::Delete as i32;
        Event {
            kind: if delete { EventKind::Delete } else { EventKind::Put },
            kv: KeyValue::from_pb(ev.kv.unwrap_or_default(), ns),
            prev_kv: ev.prev_kv.map(|kv| KeyValue::from_pb(kv, ns)),
        }
    }

    /// Roughly the memory this event holds: its keys and values, and a little for the rest.
    pub(crate) fn size(&self) -> usize {
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + 64;
        kv(&self.kv) + self.prev_kv.as_ref().map_or(0, kv)
    }
}

/// One item of a [`Watcher`](crate::Watcher): the events of one revision (or of several consecutive revisions),
/// or a progress notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchResponse {
    /// Response header; `revision` is the store revision the response was made at.
    pub header: ResponseHeader,
    /// The events, in revision order; empty for a progress notification.
    pub events: Vec<Event>,
    /// No events, just progress: for a watcher with [`WatchOptions::with_progress_notify`](crate::WatchOptions::with_progress_notify), every
    /// event up to `header.revision` has been delivered. Answers to
    /// [`Watcher::request_progress`](crate::Watcher::request_progress) are progress notifications too (see there for their caveat).
    pub progress_notify: bool,
}

/// Why a kept-alive lease is no longer kept alive: the answer of [`KeepAlive::lost`](crate::KeepAlive::lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLost {
    /// The server answered a keep-alive with TTL ≤ 0: the lease expired or was revoked, by this or
    /// any other client (etcd does not say which). A lease that did not exist when keep-alive started
    /// is not reported here: [`Client::lease_keep_alive`](crate::Client::lease_keep_alive) fails with [`Error::LeaseNotFound`](crate::Error::LeaseNotFound).
    Expired,
    /// No keep-alive answer arrived before the lease's deadline (the last answer plus its TTL), so
    /// the lease must be presumed expired even if the cluster has not decided so yet.
    Deadline,
    /// Nothing keeps the lease alive any more: every handle for it and every clone of the client
    /// were dropped (seen only through a [`KeepAliveStatus`](crate::KeepAliveStatus)).
    ClientClosed,
}

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseLost::Expired => "lease expired or revoked",
            LeaseLost::Deadline => "no keep-alive answer before the lease's deadline",
            LeaseLost::ClientClosed => "client closed",
        })
    }
}
