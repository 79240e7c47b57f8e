//! Maintenance: member status, alarms, defragmentation, KV and backend hashes, snapshots,
//! leadership transfer and cluster downgrades.
//!
//! Most maintenance questions are about one particular member (its database size, its hash, its
//! snapshot), so every such call comes in two forms: the plain one asks whichever member the
//! client's balancer picks next, and the `_of` one asks the member at a given endpoint (one of
//! [`Client::endpoints`], or any other client URL of the cluster, connected to just for that call
//! with the client's TLS settings and credentials). [`Client::status_all`] asks every endpoint.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pb::etcdserverpb as pb;
use crate::rpc::{Call, Meta, stub};
use crate::types::ResponseHeader;

/// One member's view of itself and the cluster, as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatusResponse {
    /// Response header; `member_id` is the answering member.
    pub header: ResponseHeader,
    /// The answering member's ID (the header's `member_id`).
    pub member_id: u64,
    /// The member's etcd version, e.g. `3.5.1`.
    pub version: String,
    /// Size of the member's backend database file, in bytes (including free pages).
    pub db_size: i64,
    /// Bytes of the database actually in use (what a defragmentation would shrink it to).
    /// 0 from servers older than 3.4.
    pub db_size_in_use: i64,
    /// The member's backend quota in bytes; 0 from servers older than 3.6.
    pub db_size_quota: i64,
    /// The ID of the leader this member follows (0 = none known).
    pub leader: u64,
    /// The member's raft index (last log entry).
    pub raft_index: u64,
    /// The member's raft term.
    pub raft_term: u64,
    /// The last raft index applied to the member's store.
    pub raft_applied_index: u64,
    /// Alarm and health problems the member reports (empty when all is well).
    pub errors: Vec<String>,
    /// Whether the member is a non-voting learner.
    pub is_learner: bool,
    /// The storage version (3.6 and later; empty before).
    pub storage_version: String,
}

impl StatusResponse {
    /// Whether the answering member is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }

    fn from_pb(r: pb::StatusResponse) -> Self {
        let header = ResponseHeader::from_pb(r.header);
        StatusResponse {
            member_id: header.member_id,
            header,
            version: r.version,
            db_size: r.db_size,
            db_size_in_use: r.db_size_in_use,
            db_size_quota: r.db_size_quota,
            leader: r.leader,
            raft_index: r.raft_index,
            raft_term: r.raft_term,
            raft_applied_index: r.raft_applied_index,
            errors: r.errors,
            is_learner: r.is_learner,
            storage_version: r.storage_version,
        }
    }
}

/// The kind of an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlarmKind {
    /// The member's backend exceeded its quota: the cluster accepts only reads and deletes
    /// until the alarm is deactivated (after compaction and defragmentation).
    NoSpace,
    /// The member's store was found to differ from the others' (corruption check).
    Corrupt,
    /// A kind this client does not know, by its protobuf number.
    Other(i32),
}

impl AlarmKind {
    fn from_pb(value: i32) -> Self {
        match pb::AlarmType::try_from(value) {
            Ok(pb::AlarmType::Nospace) => AlarmKind::NoSpace,
            Ok(pb::AlarmType::Corrupt) => AlarmKind::Corrupt,
            _ => AlarmKind::Other(value),
        }
    }

    fn to_pb(self) -> i32 {
        match self {
            AlarmKind::NoSpace => pb::AlarmType::Nospace as i32,
            AlarmKind::Corrupt => pb::AlarmType::Corrupt as i32,
            AlarmKind::Other(value) => value,
        }
    }
}

/// One raised alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Alarm {
    /// The member the alarm is about.
    pub member_id: u64,
    /// What the alarm is.
    pub kind: AlarmKind,
}

/// Answer to [`Client::alarm_list`] and [`Client::alarm_deactivate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AlarmResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The alarms raised (list), or the alarms deactivated (deactivate).
    pub alarms: Vec<Alarm>,
}

impl AlarmResponse {
    fn from_pb(r: pb::AlarmResponse) -> Self {
        AlarmResponse {
            header: ResponseHeader::from_pb(r.header),
            alarms: r
                .alarms
                .into_iter()
                .map(|a| Alarm { member_id: a.member_id, kind: AlarmKind::from_pb(a.alarm) })
                .collect(),
        }
    }
}

/// Answer to [`Client::hash_kv`]: a hash of one member's key-value history up to a revision.
/// Members that agree on the data report the same hash for the same `hash_revision` and
/// `compact_revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HashKvResponse {
    /// Response header; `member_id` is the member that computed the hash.
    pub header: ResponseHeader,
    /// The hash of the keys and values from the compaction revision to `hash_revision`.
    pub hash: u32,
    /// The member's compaction revision when it computed the hash.
    pub compact_revision: i64,
    /// The revision the hash covers (the current revision when 0 was asked for). 0 from
    /// servers older than 3.5.
    pub hash_revision: i64,
}

/// Answer to [`Client::hash`]: a hash of one member's whole backend (every bucket: keys, leases,
/// auth, membership, ...), for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HashResponse {
    /// Response header; `member_id` is the member that computed the hash.
    pub header: ResponseHeader,
    /// The hash of the member's backend database.
    pub hash: u32,
}

/// What a [`Client::downgrade`] asks of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DowngradeAction {
    /// Checks, changing nothing, whether the cluster may downgrade to the target version: etcd
    /// allows exactly one minor version below the cluster version (3.4 for a 3.5 cluster), and
    /// no downgrade may be in progress.
    Validate,
    /// Starts a downgrade to the target version (validated as for [`Validate`](Self::Validate)):
    /// members may then be replaced one by one with the older release.
    Enable,
    /// Cancels the downgrade in progress. The target version is not needed (pass `""`).
    Cancel,
}

impl DowngradeAction {
    fn to_pb(self) -> i32 {
        use pb::downgrade_request::DowngradeAction as A;
        match self {
            DowngradeAction::Validate => A::Validate as i32,
            DowngradeAction::Enable => A::Enable as i32,
            DowngradeAction::Cancel => A::Cancel as i32,
        }
    }
}

/// Answer to [`Client::downgrade`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DowngradeResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The cluster version (`MAJOR.MINOR.0`, e.g. `3.5.0`) when the server answered.
    pub version: String,
}

/// A database snapshot arriving from a member, as a stream of byte chunks: write them, in order,
/// to a file to get a file `etcdutl snapshot restore` accepts. Ends after the last chunk; a
/// stream cut short ends with an error rather than quietly.
///
/// Made by [`Client::snapshot`] and [`Client::snapshot_of`]. To save one:
///
/// ```no_run
/// # async fn demo(client: etcd_wire::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
/// use std::io::Write;
///
/// let mut file = std::fs::File::create("etcd.db")?;
/// let mut snapshot = client.snapshot().await?;
/// while let Some(chunk) = snapshot.next().await {
///     file.write_all(&chunk?)?;
/// }
/// # Ok(()) }
/// ```
pub struct SnapshotStream {
    inner: tonic::Streaming<pb::SnapshotResponse>,
    /// `remaining_bytes` of the last message; `None` before the first.
    remaining: Option<u64>,
    received: u64,
    done: bool,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream")
            .field("received", &self.received)
            .field("remaining", &self.remaining)
            .field("done", &self.done)
            .finish()
    }
}

impl SnapshotStream {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes the server said were still to come after the last chunk (`None` before the first).
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }
}

impl Stream for SnapshotStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match futures::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(msg)) => {
                    this.remaining = Some(msg.remaining_bytes);
                    this.received += msg.blob.len() as u64;
                    if msg.blob.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(msg.blob)));
                }
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status.into())));
                }
                None => {
                    this.done = true;
                    if this.remaining != Some(0) {
                        let missing = this.remaining.map_or("an unknown number of".to_owned(), |r| r.to_string());
                        let status = Status::data_loss(format!(
                            "snapshot stream ended after {} bytes with {missing} bytes still to come",
                            this.received
                        ));
                        return Poll::Ready(Some(Err(status.into())));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Client {
    /// The status of the member the balancer picks (see [`Client::status_of`] to choose).
    pub async fn status(&self) -> Result<StatusResponse> {
        let r = self
            .call(Call::read("Status"), |ch, meta| async move {
                stub::maintenance(ch).status(meta.request(pb::StatusRequest {})).await
            })
            .await?;
        Ok(StatusResponse::from_pb(r))
    }

    /// The status of the member at `endpoint` (`host:port` or a URL, like
    /// [`Client::connect`]'s endpoints).
    pub async fn status_of(&self, endpoint: &str) -> Result<StatusResponse> {
        let r = self
            .on_endpoint(endpoint, Call::read("Status"), |ch, meta| async move {
                stub::maintenance(ch).status(meta.request(pb::StatusRequest {})).await
            })
            .await?;
        Ok(StatusResponse::from_pb(r))
    }

    /// The status of every endpoint the client uses, asked concurrently, in
    /// [`Client::endpoints`] order; each with its own result (members may be down).
    pub async fn status_all(&self) -> Vec<(String, Result<StatusResponse>)> {
        let endpoints = self.endpoints();
        let answers = futures::future::join_all(endpoints.iter().map(|e| self.status_of(e))).await;
        endpoints.into_iter().zip(answers).collect()
    }

    /// The alarms raised in the cluster (any member answers for all).
    pub async fn alarm_list(&self) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        };
        let r = self
            .call(Call::read("Alarm"), |ch, meta| async move { stub::maintenance(ch).alarm(meta.request(req)).await })
            .await?;
        Ok(AlarmResponse::from_pb(r))
    }

    /// Deactivates alarm `kind` on member `member_id` (after freeing space, for
    /// [`AlarmKind::NoSpace`]). The answer lists the alarms that were deactivated.
    pub async fn alarm_deactivate(&self, member_id: u64, kind: AlarmKind) -> Result<AlarmResponse> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id,
            alarm: kind.to_pb(),
        };
        let r = self
            .call(Call::write("Alarm"), |ch, meta| async move { stub::maintenance(ch).alarm(meta.request(req)).await })
            .await?;
        Ok(AlarmResponse::from_pb(r))
    }

    /// Defragments the backend of the member the balancer picks, releasing the space freed by
    /// compaction to the file system. The member serves nothing while it defragments; see
    /// [`Client::defragment_of`] to defragment the members one by one. Not bound by the request
    /// timeout (a large database takes a while). (etcd's answer carries no header, so there is
    /// nothing to return.)
    pub async fn defragment(&self) -> Result<()> {
        self.call(Call::write("Defragment").timeout(None), |ch, meta| async move {
            stub::maintenance(ch).defragment(meta.request(pb::DefragmentRequest {})).await
        })
        .await?;
        Ok(())
    }

    /// Defragments the member at `endpoint` (see [`Client::defragment`]).
    pub async fn defragment_of(&self, endpoint: &str) -> Result<()> {
        self.on_endpoint(endpoint, Call::write("Defragment").timeout(None), |ch, meta| async move {
            stub::maintenance(ch).defragment(meta.request(pb::DefragmentRequest {})).await
        })
        .await?;
        Ok(())
    }

    /// The hash of the key-value history up to `revision` (0 = the current revision) on the
    /// member the balancer picks; see [`Client::hash_kv_of`] to compare members.
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        check_revision(revision)?;
        let r = self
            .call(Call::read("HashKV"), |ch, meta| async move {
                stub::maintenance(ch).hash_kv(meta.request(pb::HashKvRequest { revision })).await
            })
            .await?;
        Ok(hash_kv_response(r))
    }

    /// [`Client::hash_kv`] on the member at `endpoint`.
    pub async fn hash_kv_of(&self, endpoint: &str, revision: i64) -> Result<HashKvResponse> {
        check_revision(revision)?;
        let r = self
            .on_endpoint(endpoint, Call::read("HashKV"), |ch, meta| async move {
                stub::maintenance(ch).hash_kv(meta.request(pb::HashKvRequest { revision })).await
            })
            .await?;
        Ok(hash_kv_response(r))
    }

    /// The hash of the whole backend of the member the balancer picks (every bucket, not only
    /// the keys); see [`Client::hash_of`] to choose the member.
    ///
    /// **For testing only**, as etcd says: the server hashes without holding the store's locks,
    /// so a hash taken while writes go on is meaningless, and buckets other than the keys (lease
    /// expiries, the member's own metadata) may differ between members that agree on every key.
    /// To check that members agree on the data, use [`Client::hash_kv`].
    pub async fn hash(&self) -> Result<HashResponse> {
        let r = self
            .call(Call::read("Hash"), |ch, meta| async move {
                stub::maintenance(ch).hash(meta.request(pb::HashRequest {})).await
            })
            .await?;
        Ok(HashResponse { header: ResponseHeader::from_pb(r.header), hash: r.hash })
    }

    /// [`Client::hash`] of the member at `endpoint`. For testing only (see there).
    pub async fn hash_of(&self, endpoint: &str) -> Result<HashResponse> {
        let r = self
            .on_endpoint(endpoint, Call::read("Hash"), |ch, meta| async move {
                stub::maintenance(ch).hash(meta.request(pb::HashRequest {})).await
            })
            .await?;
        Ok(HashResponse { header: ResponseHeader::from_pb(r.header), hash: r.hash })
    }

    /// Streams a snapshot of the backend database of the member the balancer picks. Returns once
    /// the member has accepted the request; the chunks follow on the stream, which is not bound by
    /// the request timeout.
    pub async fn snapshot(&self) -> Result<SnapshotStream> {
        let inner = self
            .call(Call::read("Snapshot").timeout(None), |ch, meta| async move {
                stub::maintenance(ch).snapshot(meta.request(pb::SnapshotRequest {})).await
            })
            .await?;
        Ok(SnapshotStream { inner, remaining: None, received: 0, done: false })
    }

    /// [`Client::snapshot`] of the member at `endpoint`.
    pub async fn snapshot_of(&self, endpoint: &str) -> Result<SnapshotStream> {
        let inner = self
            .on_endpoint(endpoint, Call::read("Snapshot").timeout(None), |ch, meta| async move {
                stub::maintenance(ch).snapshot(meta.request(pb::SnapshotRequest {})).await
            })
            .await?;
        Ok(SnapshotStream { inner, remaining: None, received: 0, done: false })
    }

    /// Makes member `target_id` the leader. The request must reach the current leader, so the
    /// client first asks every endpoint for its status and sends it to the one that is the
    /// leader (to the balancer's pick if none of the endpoints is; that member then answers
    /// `etcdserver: not leader` unless it has become the leader meanwhile). The target must be a
    /// voting member that has caught up. Returns once the transfer is done. (etcd's answer
    /// carries no header, so there is nothing to return.)
    pub async fn move_leader(&self, target_id: u64) -> Result<()> {
        let req = pb::MoveLeaderRequest { target_id };
        let statuses = self.status_all().await;
        let leader = statuses
            .iter()
            .filter_map(|(url, s)| s.as_ref().ok().filter(|s| s.is_leader()).map(|s| (url, s.raft_term)))
            .max_by_key(|(_, term)| *term)
            .map(|(url, _)| url.clone());
        match leader {
            Some(url) => {
                self.on_endpoint(&url, Call::write("MoveLeader"), |ch, meta| async move {
                    stub::maintenance(ch).move_leader(meta.request(req)).await
                })
                .await?;
            }
            None => {
                self.call(Call::write("MoveLeader"), |ch, meta| async move {
                    stub::maintenance(ch).move_leader(meta.request(req)).await
                })
                .await?;
            }
        };
        Ok(())
    }

    /// Validates, starts or cancels a downgrade of the cluster version to `version`
    /// (`MAJOR.MINOR` or `MAJOR.MINOR.PATCH`, e.g. `"3.4"`; only its major and minor count). Needs
    /// etcd 3.5 or later: 3.4 answers [`Error::Unsupported`].
    ///
    /// A `version` that is not such a version fails with [`Error::InvalidArgument`] before any
    /// RPC (for [`DowngradeAction::Cancel`], `""` is accepted and the version is ignored). The
    /// server refuses, with:
    /// - [`Error::InvalidDowngradeTarget`] a version other than one minor below the cluster
    ///   version (the same, newer, or two below);
    /// - [`Error::DowngradeInProgress`] a validate or enable while a downgrade is in progress;
    /// - [`Error::NoDowngradeInProgress`] a cancel with none in progress.
    ///
    /// etcd 3.5 (3.5.1 at least) applies `Enable` and `Cancel` but never answers them: after its
    /// own request timeout (about 7 s) it says `etcdserver: request timed out`, which comes back as
    /// [`Error::Unavailable`] with [`Error::is_indeterminate`] set (etcd-io/etcd#15878). Such an
    /// error does not mean it failed: ask with `Validate`, which answers
    /// [`Error::DowngradeInProgress`] once a downgrade is enabled. `Validate` is a read (retried
    /// like one); `Enable` and `Cancel` are writes, never sent twice.
    pub async fn downgrade(&self, action: DowngradeAction, version: &str) -> Result<DowngradeResponse> {
        check_downgrade_version(action, version)?;
        let req = pb::DowngradeRequest { action: action.to_pb(), version: version.to_owned() };
        let how = match action {
            DowngradeAction::Validate => Call::read("Downgrade"),
            DowngradeAction::Enable | DowngradeAction::Cancel => Call::write("Downgrade"),
        };
        let r = self
            .call(how, |ch, meta| {
                let req = req.clone();
                async move { stub::maintenance(ch).downgrade(meta.request(req)).await }
            })
            .await?;
        Ok(DowngradeResponse { header: ResponseHeader::from_pb(r.header), version: r.version })
    }

    /// Runs one RPC on the member at `endpoint` under the client's policy, but with no
    /// balancing and no retry on another member (see [`Call::to`]).
    async fn on_endpoint<T, F, Fut>(&self, endpoint: &str, how: Call, send: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>> + Send + 'static,
    {
        let channel = self.core().pool.channel_for(endpoint, &self.core().options).await?;
        self.call(how.to(channel), send).await
    }
}

fn check_revision(revision: i64) -> Result<()> {
    if revision < 0 {
        return Err(Error::invalid("revision must not be negative"));
    }
    Ok(())
}

/// Checks a downgrade target the way etcd reads it (Go's `semver.NewVersion`, with `.0` added
/// to a `MAJOR.MINOR`): `MAJOR.MINOR`, or `MAJOR.MINOR.PATCH` with an optional `-pre-release` and
/// `+build`. `""` passes for a cancel, which ignores the version.
fn check_downgrade_version(action: DowngradeAction, version: &str) -> Result<()> {
    if action == DowngradeAction::Cancel && version.is_empty() {
        return Ok(());
    }
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    let identifiers =
        |s: &str| s.split('.').all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let ok = match parts.len() {
        2 => pre.is_none() && build.is_none(),
        3 => pre.is_none_or(identifiers) && build.is_none_or(identifiers),
        _ => false,
    } && parts.iter().all(|p| number(p));
    if !ok {
        return Err(Error::invalid(format!(
            "downgrade target version {version:?} is not MAJOR.MINOR or MAJOR.MINOR.PATCH (e.g. \"3.4\")"
        )));
    }
    Ok(())
}

fn hash_kv_response(r: pb::HashKvResponse) -> HashKvResponse {
    HashKvResponse {
        header: ResponseHeader::from_pb(r.header),
        hash: r.hash,
        compact_revision: r.compact_revision,
        hash_revision: r.hash_revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_kinds_round_trip() {
        for kind in [AlarmKind::NoSpace, AlarmKind::Corrupt, AlarmKind::Other(7)] {
            assert_eq!(AlarmKind::from_pb(kind.to_pb()), kind);
        }
    }

    #[test]
    fn downgrade_versions_are_checked_like_etcd_reads_them() {
        use DowngradeAction::*;
        for good in ["3.4", "3.4.0", "3.4.23", "3.4.0-alpha.1", "3.4.0+git.1", "3.4.0-rc-1+b", "10.20.30"] {
            assert!(check_downgrade_version(Validate, good).is_ok(), "{good:?}");
            assert!(check_downgrade_version(Enable, good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "3",
            "v3.4",
            "v3.4.0",
            "3.4.0.1",
            "3.4-alpha",
            "3.4.0-",
            "3.4.0+",
            "3..4",
            "3.x",
            " 3.4",
            "+3.4",
            "3.-4.0",
            "3.4.0-a..b",
            "99999999999999999999.4",
        ] {
            let r = check_downgrade_version(Validate, bad);
            assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{bad:?}: {r:?}");
        }
        assert!(check_downgrade_version(Cancel, "").is_ok(), "a cancel needs no version");
        assert!(check_downgrade_version(Cancel, "3.4").is_ok());
        assert!(check_downgrade_version(Cancel, "nonsense").is_err(), "a version given is checked");
        assert!(check_downgrade_version(Enable, "").is_err());
    }

    proptest::proptest! {
        #[test]
        fn checking_a_downgrade_version_never_panics(version in ".{0,24}") {
            let _ = check_downgrade_version(DowngradeAction::Validate, &version);
        }
    }

    #[test]
    fn downgrade_actions_are_etcds() {
        use pb::downgrade_request::DowngradeAction as A;
        assert_eq!(DowngradeAction::Validate.to_pb(), A::Validate as i32);
        assert_eq!(DowngradeAction::Enable.to_pb(), A::Enable as i32);
        assert_eq!(DowngradeAction::Cancel.to_pb(), A::Cancel as i32);
    }

    #[test]
    fn leader_is_self() {
        let s = StatusResponse { member_id: 3, leader: 3, ..Default::default() };
        assert!(s.is_leader());
        assert!(!StatusResponse::default().is_leader(), "no leader known");
    }
}
