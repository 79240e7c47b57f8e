//! Key-value calls: [`Client::get`], [`Client::get_stream`], [`Client::put`], [`Client::delete`],
//! [`Client::compact`], with typed options and responses.
//!
//! Keys and values are [`Bytes`]; anything `Into<Bytes>` (`&'static str`, `String`, `Vec<u8>`) is
//! accepted without a copy.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb as pb;
use crate::range::KeyRange;
use crate::rpc::{Call, stub};
use crate::types::{KeyValue, ResponseHeader};

/// Sort order of a [`Client::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SortOrder {
    /// Server order (by key, ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a [`Client::get`] sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Options of [`Client::get`]. Start from [`GetOptions::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    range: KeyRange,
    limit: i64,
    revision: i64,
    sort: Option<(SortTarget, SortOrder)>,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    min_mod_revision: i64,
    max_mod_revision: i64,
    min_create_revision: i64,
    max_create_revision: i64,
}

impl GetOptions {
    /// Just the key, linearizable, at the current revision.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }
    /// Every key from the key on (`range_end = "\0"`).
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }
    /// Keys in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Bytes>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }
    /// At most `limit` keys (0 = no limit).
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
    /// Read at this store revision (0 = current).
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }
    /// Sort the results.
    pub fn with_sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }
    /// Serve from the member's local state without a quorum round (may be stale).
    pub fn with_serializable(mut self) -> Self {
        self.serializable = true;
        self
    }
    /// Return keys without values.
    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    /// Return only the count.
    pub fn with_count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
    /// Only keys whose mod revision is in `[min, max]` (0 = unbounded).
    pub fn with_mod_revision_range(mut self, min: i64, max: i64) -> Self {
        self.min_mod_revision = min;
        self.max_mod_revision = max;
        self
    }
    /// Only keys whose create revision is in `[min, max]` (0 = unbounded).
    pub fn with_create_revision_range(mut self, min: i64, max: i64) -> Self {
        self.min_create_revision = min;
        self.max_create_revision = max;
        self
    }

    pub(crate) fn to_pb(&self, key: Bytes, ns: &Namespace) -> Result<pb::RangeRequest> {
        let end = self.range.end(&key)?;
        if self.limit < 0 || self.revision < 0 {
            return Err(Error::invalid("limit and revision must not be negative"));
        }
        use crate::pb::etcdserverpb::range_request::{SortOrder as O, SortTarget as T};
        let (target, order) = self.sort.unwrap_or_default();
        let order = match order {
            SortOrder::None => O::None,
            SortOrder::Ascend => O::Ascend,
            SortOrder::Descend => O::Descend,
        };
        let target = match target {
            SortTarget::Key => T::Key,
            SortTarget::Version => T::Version,
            SortTarget::Create => T::Create,
            SortTarget::Mod => T::Mod,
            SortTarget::Value => T::Value,
        };
        Ok(pb::RangeRequest {
            key: ns.range_key(key, &end),
            range_end: ns.range_end(end),
            limit: self.limit,
            revision: self.revision,
            sort_order: order as i32,
            sort_target: target as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        })
    }
}

/// Options of [`Client::put`]. Start from [`PutOptions::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

impl PutOptions {
    /// A plain put.
    pub fn new() -> Self {
        Self::default()
    }
    /// Attach the key to this lease: it is deleted when the lease ends.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }
    /// Return the previous key-value.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// Keep the current value (update only the lease); the value argument must be empty.
    pub fn with_ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }
    /// Keep the current lease; no lease may be given.
    pub fn with_ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }

    pub(crate) fn to_pb(&self, key: Bytes, value: Bytes, ns: &Namespace) -> Result<pb::PutRequest> {
        KeyRange::Key.end(&key)?;
        if self.ignore_value && !value.is_empty() {
            return Err(Error::invalid("ignore_value is set but a value was given"));
        }
        if self.ignore_lease && self.lease != 0 {
            return Err(Error::invalid("ignore_lease is set but a lease was given"));
        }
        Ok(pb::PutRequest {
            key: ns.key(key),
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        })
    }
}

/// Options of [`Client::delete`]. Start from [`DeleteOptions::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteOptions {
    range: KeyRange,
    prev_kv: bool,
}

impl DeleteOptions {
    /// Just the key.
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
    /// Return the deleted key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn to_pb(&self, key: Bytes, ns: &Namespace) -> Result<pb::DeleteRangeRequest> {
        let end = self.range.end(&key)?;
        Ok(pb::DeleteRangeRequest { key: ns.range_key(key, &end), range_end: ns.range_end(end), prev_kv: self.prev_kv })
    }
}

/// Answer to [`Client::get`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GetResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The key-values found (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut off more keys.
    pub more: bool,
    /// Number of keys in the range (before `limit`).
    pub count: i64,
}

impl GetResponse {
    pub(crate) fn from_pb(r: pb::RangeResponse, ns: &Namespace) -> Self {
        GetResponse {
            header: ResponseHeader::from_pb(r.header),
            kvs: r.kvs.into_iter().map(|kv| KeyValue::from_pb(kv, ns)).collect(),
            more: r.more,
            count: r.count,
        }
    }
}

/// Answer to [`Client::put`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PutResponse {
    /// Response header; `revision` is the put's revision.
    pub header: ResponseHeader,
    /// The previous key-value, with `prev_kv` and if the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl PutResponse {
    pub(crate) fn from_pb(r: pb::PutResponse, ns: &Namespace) -> Self {
        PutResponse {
            header: ResponseHeader::from_pb(r.header),
            prev_kv: r.prev_kv.map(|kv| KeyValue::from_pb(kv, ns)),
        }
    }
}

/// Answer to [`Client::delete`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeleteResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, with `prev_kv`.
    pub prev_kvs: Vec<KeyValue>,
}

impl DeleteResponse {
    pub(crate) fn from_pb(r: pb::DeleteRangeResponse, ns: &Namespace) -> Self {
        DeleteResponse {
            header: ResponseHeader::from_pb(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(|kv| KeyValue::from_pb(kv, ns)).collect(),
        }
    }
}

/// A [`Client::get`] answered in chunks, from [`Client::get_stream`] (etcd's `RangeStream`): a
/// [`Stream`] of the key-values, a chunk at a time, in the order `get` would list them. Ends after
/// the last chunk; then [`summary`](Self::summary) holds the header, `count` and `more`, which
/// etcd sends only at the end. [`merge`](Self::merge) reads it all into one [`GetResponse`].
///
/// ```no_run
/// # async fn demo(client: etcd_wire::Client) -> etcd_wire::Result<()> {
/// use etcd_wire::{Error, GetOptions};
/// use futures::StreamExt;
///
/// match client.get_stream("logs/", GetOptions::new().with_prefix()).await {
///     Ok(mut chunks) => {
///         while let Some(kvs) = chunks.next().await {
///             for kv in kvs? {
///                 println!("{}", kv.key_str());
///             }
///         }
///         println!("{:?} keys", chunks.summary().map(|s| s.count));
///     }
///     // etcd before 3.7 has no RangeStream.
///     Err(Error::Unsupported { .. }) => {
///         let all = client.get("logs/", GetOptions::new().with_prefix()).await?;
///         println!("{} keys", all.count);
///     }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct GetStream {
    inner: tonic::Streaming<pb::RangeStreamResponse>,
    chunks: Chunks,
    /// `Some(true)` once the stream ended cleanly, `Some(false)` after an error.
    ended: Option<bool>,
}

impl std::fmt::Debug for GetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetStream").field("chunks", &self.chunks).field("ended", &self.ended).finish()
    }
}

impl GetStream {
    /// Once the stream has ended without an error: the header, `count` and `more` of the whole
    /// read, as [`Client::get`] would report them (its `kvs` are empty: they came as chunks).
    /// `None` before the end, and after an error.
    pub fn summary(&self) -> Option<&GetResponse> {
        (self.ended == Some(true)).then_some(&self.chunks.summary)
    }

    /// Reads the rest of the stream into one [`GetResponse`], the answer [`Client::get`] would
    /// have given (its `kvs` are the ones not already taken from the stream).
    pub async fn merge(mut self) -> Result<GetResponse> {
        let mut kvs = Vec::new();
        while let Some(chunk) = self.next().await {
            kvs.extend(chunk?);
        }
        Ok(GetResponse { kvs, ..self.chunks.summary })
    }
}

impl Stream for GetStream {
    type Item = Result<Vec<KeyValue>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended.is_some() {
                return Poll::Ready(None);
            }
            match futures::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(msg)) => {
                    let kvs = this.chunks.take(msg);
                    if !kvs.is_empty() {
                        return Poll::Ready(Some(Ok(kvs)));
                    }
                }
                Some(Err(status)) => {
                    this.ended = Some(false);
                    return Poll::Ready(Some(Err(status.into())));
                }
                None => {
                    this.ended = Some(true);
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// The chunks of a `RangeStream` so far: each chunk's key-values go out as they come; the rest is
/// merged as protobuf's `Merge` would (etcd's contract: merging every chunk gives the `Range`
/// answer), and etcd fills it only in the last chunk.
#[derive(Debug)]
struct Chunks {
    ns: Namespace,
    /// The merged header, `count` and `more`; `kvs` stays empty.
    summary: GetResponse,
}

impl Chunks {
    fn new(ns: Namespace) -> Self {
        Chunks { ns, summary: GetResponse::default() }
    }

    /// Merges one chunk and returns its key-values, namespace stripped.
    fn take(&mut self, msg: pb::RangeStreamResponse) -> Vec<KeyValue> {
        let Some(r) = msg.range_response else { return Vec::new() };
        let s = &mut self.summary;
        if let Some(h) = r.header {
            // Field by field, a set (non-zero) field replacing the one before.
            let h = ResponseHeader::from_pb(Some(h));
            let pick = |new: u64, old: u64| if new != 0 { new } else { old };
            s.header.cluster_id = pick(h.cluster_id, s.header.cluster_id);
            s.header.member_id = pick(h.member_id, s.header.member_id);
            s.header.raft_term = pick(h.raft_term, s.header.raft_term);
            if h.revision != 0 {
                s.header.revision = h.revision;
            }
        }
        s.more |= r.more;
        if r.count != 0 {
            s.count = r.count;
        }
        r.kvs.into_iter().map(|kv| KeyValue::from_pb(kv, &self.ns)).collect()
    }
}

impl Client {
    /// Reads a key, or a range of keys with [`GetOptions`] (`None` for a plain get of one key).
    /// Read-only: retried on `Unavailable`.
    pub async fn get(&self, key: impl Into<Bytes>, options: impl Into<Option<GetOptions>>) -> Result<GetResponse> {
        let req = options.into().unwrap_or_default().to_pb(key.into(), &self.ns)?;
        let resp = self
            .call(Call::read("Range"), |ch, meta| {
                let req = req.clone();
                async move { stub::kv(ch).range(meta.request(req)).await }
            })
            .await?;
        Ok(GetResponse::from_pb(resp, &self.ns))
    }

    /// [`Client::get`], answered as a stream of chunks (etcd's `RangeStream`): neither side holds
    /// a large range in memory at once. Same options, same namespace handling, same answer once
    /// [merged](GetStream::merge). Read-only: opening it is retried on `Unavailable`. Returns once
    /// the member has accepted the request; the chunks are not bound by the request timeout
    /// ([`Client::with_timeout`] gives the whole read a deadline).
    ///
    /// Needs etcd 3.7 or later: older servers (3.6 and before) answer [`Error::Unsupported`],
    /// and [`Client::get`] is the way to read there.
    pub async fn get_stream(&self, key: impl Into<Bytes>, options: impl Into<Option<GetOptions>>) -> Result<GetStream> {
        let req = options.into().unwrap_or_default().to_pb(key.into(), &self.ns)?;
        let inner = self
            .call(Call::read("RangeStream").timeout(None), |ch, meta| {
                let req = req.clone();
                async move { stub::kv(ch).range_stream(meta.request(req)).await }
            })
            .await?;
        Ok(GetStream { inner, chunks: Chunks::new(self.ns.clone()), ended: None })
    }

    /// Writes `value` at `key` (with [`PutOptions`], or `None`). Retried only when the request
    /// provably never left.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: impl Into<Option<PutOptions>>,
    ) -> Result<PutResponse> {
        let req = options.into().unwrap_or_default().to_pb(key.into(), value.into(), &self.ns)?;
        let resp = self
            .call(Call::write("Put"), |ch, meta| {
                let req = req.clone();
                async move { stub::kv(ch).put(meta.request(req)).await }
            })
            .await?;
        Ok(PutResponse::from_pb(resp, &self.ns))
    }

    /// Deletes a key, or a range of keys with [`DeleteOptions`] (`None` for one key).
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        options: impl Into<Option<DeleteOptions>>,
    ) -> Result<DeleteResponse> {
        let req = options.into().unwrap_or_default().to_pb(key.into(), &self.ns)?;
        let resp = self
            .call(Call::write("DeleteRange"), |ch, meta| {
                let req = req.clone();
                async move { stub::kv(ch).delete_range(meta.request(req)).await }
            })
            .await?;
        Ok(DeleteResponse::from_pb(resp, &self.ns))
    }

    /// Discards history before `revision`. With `physical`, returns only once the space is
    /// reclaimed on the member. Compacting twice to the same revision is an error.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<ResponseHeader> {
        if revision <= 0 {
            return Err(Error::invalid("compaction revision must be positive"));
        }
        let req = pb::CompactionRequest { revision, physical };
        let resp = self
            .call(Call::write("Compact"), |ch, meta| async move { stub::kv(ch).compact(meta.request(req)).await })
            .await?;
        Ok(ResponseHeader::from_pb(resp.header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_views_fail_where_the_lossy_ones_replace() {
        let kv = KeyValue { key: Bytes::from_static(b"k\xff"), value: Bytes::from_static(b"v"), ..Default::default() };
        assert_eq!(kv.key_str(), "k\u{fffd}");
        assert!(kv.key_utf8().is_err());
        assert_eq!(kv.value_utf8(), Ok("v"));
    }

    #[test]
    fn encodes_get_options() {
        let ns = Namespace::default();
        let req = GetOptions::new()
            .with_prefix()
            .with_limit(10)
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_serializable()
            .to_pb(Bytes::from_static(b"a/"), &ns)
            .ok();
        let req = req.unwrap_or_default();
        assert_eq!((&req.key[..], &req.range_end[..]), (&b"a/"[..], &b"a0"[..]));
        assert_eq!((req.limit, req.serializable), (10, true));
        assert_eq!(req.sort_order, pb::range_request::SortOrder::Descend as i32);
        assert_eq!(req.sort_target, pb::range_request::SortTarget::Mod as i32);
    }

    #[test]
    fn rejects_bad_input_before_any_rpc() {
        let ns = Namespace::default();
        assert!(matches!(GetOptions::new().to_pb(Bytes::new(), &ns), Err(Error::InvalidArgument { .. })));
        assert!(GetOptions::new().with_prefix().to_pb(Bytes::new(), &ns).is_ok(), "\"\" + prefix = all keys");
        assert!(PutOptions::new().to_pb(Bytes::new(), Bytes::new(), &ns).is_err());
        assert!(PutOptions::new().with_ignore_value().to_pb("k".into(), "v".into(), &ns).is_err());
        assert!(DeleteOptions::new().to_pb(Bytes::new(), &ns).is_err());
        assert!(GetOptions::new().with_limit(-1).to_pb("k".into(), &ns).is_err());
    }

    fn kv(key: &'static str, rev: i64) -> crate::pb::mvccpb::KeyValue {
        crate::pb::mvccpb::KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            mod_revision: rev,
            ..Default::default()
        }
    }

    fn chunk(
        kvs: Vec<crate::pb::mvccpb::KeyValue>,
        header: Option<pb::ResponseHeader>,
        more: bool,
        count: i64,
    ) -> pb::RangeStreamResponse {
        pb::RangeStreamResponse { range_response: Some(pb::RangeResponse { header, kvs, more, count }) }
    }

    #[test]
    fn stream_chunks_merge_into_the_range_answer() {
        let ns = Namespace::default().join(b"app/");
        let header = pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 9, raft_term: 3 };
        // What etcd sends: disjoint slices of the keys, then header, count and more on the last.
        let sent = [
            chunk(vec![kv("app/a", 4), kv("app/b", 5)], None, false, 0),
            pb::RangeStreamResponse { range_response: None },
            chunk(vec![kv("app/c", 6)], None, false, 0),
            chunk(vec![], Some(header), true, 7),
        ];
        let whole = pb::RangeResponse {
            header: Some(header),
            kvs: vec![kv("app/a", 4), kv("app/b", 5), kv("app/c", 6)],
            more: true,
            count: 7,
        };
        let mut chunks = Chunks::new(ns.clone());
        let mut kvs = Vec::new();
        let mut sizes = Vec::new();
        for msg in sent {
            let got = chunks.take(msg);
            sizes.push(got.len());
            kvs.extend(got);
        }
        assert_eq!(sizes, [2, 0, 1, 0]);
        let merged = GetResponse { kvs, ..chunks.summary.clone() };
        let want = GetResponse::from_pb(whole, &ns);
        assert_eq!(merged.kvs, want.kvs);
        assert_eq!((merged.header, merged.more, merged.count), (want.header, want.more, want.count));
        assert_eq!(merged.kvs[0].key, "a", "the namespace is stripped");
    }

    #[test]
    fn stream_headers_merge_field_by_field() {
        let mut chunks = Chunks::new(Namespace::default());
        let first = pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 5, raft_term: 0 };
        let later = pb::ResponseHeader { cluster_id: 0, member_id: 0, revision: 0, raft_term: 4 };
        chunks.take(chunk(vec![], Some(first), true, 3));
        chunks.take(chunk(vec![], Some(later), false, 0));
        let s = &chunks.summary;
        assert_eq!((s.header.cluster_id, s.header.member_id, s.header.revision, s.header.raft_term), (1, 2, 5, 4));
        assert_eq!((s.more, s.count), (true, 3), "unset fields keep what came before");
    }

    #[test]
    fn namespaced_from_key_stays_inside_the_namespace() {
        let ns = Namespace::default().join(b"ns/");
        let req = GetOptions::new().with_from_key().to_pb(Bytes::from_static(b"a"), &ns).unwrap_or_default();
        assert_eq!((&req.key[..], &req.range_end[..]), (&b"ns/a"[..], &b"ns0"[..]));
    }
}
