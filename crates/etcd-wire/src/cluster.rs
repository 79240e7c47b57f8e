//! Cluster membership: list, add (also as learner), remove, update, promote; and the endpoint
//! auto-sync that keeps a client's member list current
//! (its task lives in the call layer, which owns the members).

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pb::etcdserverpb as pb;
use crate::rpc::{Call, stub};
use crate::types::ResponseHeader;

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
            .call(Call::read("MemberList"), |ch, meta| async move {
                stub::cluster(ch).member_list(meta.request(pb::MemberListRequest { linearizable })).await
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
            .call(Call::write("MemberAdd"), |ch, meta| {
                let req = req.clone();
                async move { stub::cluster(ch).member_add(meta.request(req)).await }
            })
            .await?;
        Ok(members(r.header, r.member, r.members))
    }

    /// Removes the member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MembersResponse> {
        let r = self
            .call(Call::write("MemberRemove"), |ch, meta| async move {
                stub::cluster(ch).member_remove(meta.request(pb::MemberRemoveRequest { id })).await
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
            .call(Call::write("MemberUpdate"), |ch, meta| {
                let req = req.clone();
                async move { stub::cluster(ch).member_update(meta.request(req)).await }
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Promotes the learner `id` to a voting member (it must have caught up with the leader).
    pub async fn member_promote(&self, id: u64) -> Result<MembersResponse> {
        let r = self
            .call(Call::write("MemberPromote"), |ch, meta| async move {
                stub::cluster(ch).member_promote(meta.request(pb::MemberPromoteRequest { id })).await
            })
            .await?;
        Ok(members(r.header, None, r.members))
    }

    /// Replaces the client's endpoints with the members' client URLs (what auto-sync does), and
    /// returns them. The endpoints given to `connect` stay behind them as a fallback: when no
    /// advertised URL can be reached (members behind NAT or a load balancer), calls go there.
    pub async fn sync_endpoints(&self) -> Result<Vec<String>> {
        self.core().sync_endpoints().await
    }
}
