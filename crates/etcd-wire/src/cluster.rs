//! Cluster membership: list, add (also as learner), remove, update, promote; and the endpoint
//! auto-sync that keeps a client's member list current.

use std::sync::Weak;
use std::time::Duration;

use crate::client::{Client, Idempotency, Inner, MAX_RESPONSE_BYTES};
use crate::error::{Error, Result};
use crate::kv::ResponseHeader;
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, cluster_client::ClusterClient};

/// One member of the cluster, as `MemberList` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The member's ID.
    pub id: u64,
    /// The member's name (empty until it has started).
    pub name: String,
    /// URLs the member talks to its peers on.
    pub peer_urls: Vec<String>,
    /// URLs the member serves clients on (empty until it has started).
    pub client_urls: Vec<String>,
    /// Whether the member is a non-voting learner.
    pub is_learner: bool,
}

impl From<pb::Member> for MemberInfo {
    fn from(m: pb::Member) -> Self {
        MemberInfo {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// Answer to the membership calls: the header, the member concerned (add) and the member list.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MembersResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The member added, for [`Client::member_add`].
    pub member: Option<MemberInfo>,
    /// The cluster's members after the call.
    pub members: Vec<MemberInfo>,
}

fn members(header: Option<pb::ResponseHeader>, member: Option<pb::Member>, list: Vec<pb::Member>) -> MembersResponse {
    MembersResponse {
        header: ResponseHeader::from_pb(header),
        member: member.map(Into::into),
        members: list.into_iter().map(Into::into).collect(),
    }
}

impl Client {
    /// Lists the members. `linearizable` reads through the leader; otherwise the answering member's view.
    pub async fn member_list(&self, linearizable: bool) -> Result<MembersResponse> {
        let r = self
            .unary("MemberList", Idempotency::ReadOnly, |ch, meta| async move {
                ClusterClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .member_list(meta.request(pb::MemberListRequest { linearizable }))
                    .await
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Adds a member with these peer URLs; `learner` adds it as a non-voting learner.
    pub async fn member_add(&self, peer_urls: Vec<String>, learner: bool) -> Result<MembersResponse> {
        if peer_urls.is_empty() {
            return Err(Error::invalid("a member needs at least one peer URL"));
        }
        let req = pb::MemberAddRequest { peer_ur_ls: peer_urls, is_learner: learner };
        let r = self
            .unary("MemberAdd", Idempotency::Write, |ch, meta| {
                let req = req.clone();
                async move {
                    ClusterClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .member_add(meta.request(req))
                        .await
                }
            })
            .await?;
        Ok(members(r.header, r.member, r.members))
    }

    /// Removes the member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MembersResponse> {
        let r = self
            .unary("MemberRemove", Idempotency::Write, |ch, meta| async move {
                ClusterClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .member_remove(meta.request(pb::MemberRemoveRequest { id }))
                    .await
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Replaces the peer URLs of member `id`.
    pub async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<MembersResponse> {
        if peer_urls.is_empty() {
            return Err(Error::invalid("a member needs at least one peer URL"));
        }
        let req = pb::MemberUpdateRequest { id, peer_ur_ls: peer_urls };
        let r = self
            .unary("MemberUpdate", Idempotency::Write, |ch, meta| {
                let req = req.clone();
                async move {
                    ClusterClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .member_update(meta.request(req))
                        .await
                }
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Promotes the learner `id` to a voting member (it must have caught up with the leader).
    pub async fn member_promote(&self, id: u64) -> Result<MembersResponse> {
        let r = self
            .unary("MemberPromote", Idempotency::Write, |ch, meta| async move {
                ClusterClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .member_promote(meta.request(pb::MemberPromoteRequest { id }))
                    .await
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Replaces the client's endpoints with the members' client URLs (what auto-sync does), and
    /// returns them. The endpoints given to `connect` stay behind them as a fallback: when no
    /// advertised URL can be reached (members behind NAT or a load balancer), calls go there.
    pub async fn sync_endpoints(&self) -> Result<Vec<String>> {
        let list = self.member_list(false).await?;
        let urls: Vec<String> =
            list.members.iter().filter(|m| !m.is_learner).flat_map(|m| m.client_urls.iter().cloned()).collect();
        self.inner.pool.set_urls(&urls, &self.inner.options)?;
        Ok(self.inner.pool.urls())
    }
}

/// Refreshes the endpoints every `every` until the last clone of the client is dropped.
pub(crate) fn spawn_auto_sync(inner: Weak<Inner>, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = inner.upgrade() else { return };
            let client = Client { inner, ns: Namespace::default() };
            if let Err(e) = client.sync_endpoints().await {
                tracing::debug!(error = %e, "endpoint auto-sync failed; keeping the current endpoints");
            }
        }
    });
}
