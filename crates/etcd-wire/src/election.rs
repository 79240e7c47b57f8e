//! The server-side Election service (`v3election`): leader election held by a lease.
//!
//! Candidates [`campaign`](Client::campaign) for an election name with a lease and a value; the
//! server answers each once it is the leader (the oldest live candidate). The leader may
//! [`proclaim`](Client::proclaim) a new value and [`resign`](Client::resign); everyone can read
//! the [`leader`](Client::leader) and [`observe`](Client::observe) its values. Leadership also
//! ends with the candidate's lease.
//!
//! A [namespaced](Client::with_namespace) view prefixes election names; the [`LeaderKey`] it
//! returns carries names and keys without the prefix, so pass it back to the same view.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::pb::v3electionpb as pb;
use crate::rpc::{Call, stub};
use crate::types::{KeyValue, ResponseHeader};

/// Proof of leadership returned by [`Client::campaign`]; needed to proclaim and resign.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct LeaderKey {
    /// The election name (namespace prefix stripped).
    pub name: Bytes,
    /// The leader's key in the election (`<name>/<lease id in hex>`, prefix stripped).
    pub key: Bytes,
    /// The revision at which the key was created.
    pub rev: i64,
    /// The lease the leadership is tied to.
    pub lease: i64,
}

impl LeaderKey {
    fn from_pb(k: pb::LeaderKey, ns: &Namespace) -> Self {
        LeaderKey { name: ns.strip(k.name), key: ns.strip(k.key), rev: k.rev, lease: k.lease }
    }

    fn to_pb(&self, ns: &Namespace) -> pb::LeaderKey {
        pb::LeaderKey {
            name: ns.key(self.name.clone()),
            key: ns.key(self.key.clone()),
            rev: self.rev,
            lease: self.lease,
        }
    }
}

/// The values of an election's leaders as they change, from [`Client::observe`]: the current
/// leader's value first (once there is a leader), then every proclamation and every new leader.
/// Periods without a leader produce nothing. Ends with an error if the server ends the stream.
pub struct ObserveStream {
    inner: tonic::Streaming<pb::LeaderResponse>,
    ns: Namespace,
    done: bool,
}

impl std::fmt::Debug for ObserveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveStream").field("namespace", &self.ns).field("done", &self.done).finish()
    }
}

impl Stream for ObserveStream {
    type Item = Result<KeyValue>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match futures::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(resp)) => match resp.kv {
                    Some(kv) => return Poll::Ready(Some(Ok(KeyValue::from_pb(kv, &this.ns)))),
                    None => continue,
                },
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status.into())));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("election name is empty"));
    }
    Ok(())
}

impl Client {
    /// Campaigns in election `name` with `lease` and `value`, waiting (with no deadline: not
    /// bound by the request timeout) until this candidate is the leader. Cancel by dropping the
    /// future; the server then withdraws the candidacy.
    ///
    /// `lease` must be a live lease (> 0): leadership ends with it. (The server would make up a
    /// lease of its own for lease 0, which the caller could neither keep alive nor revoke, so 0
    /// is rejected here.)
    pub async fn campaign(&self, name: impl Into<Bytes>, lease: i64, value: impl Into<Bytes>) -> Result<LeaderKey> {
        let name = name.into();
        check_name(&name)?;
        if lease <= 0 {
            return Err(Error::invalid("a campaign needs a lease (got lease ID 0 or negative)"));
        }
        let req = pb::CampaignRequest { name: self.ns.key(name), lease, value: value.into() };
        let r = self
            .call(Call::write("Campaign").timeout(None), |ch, meta| {
                let req = req.clone();
                async move { stub::election(ch).campaign(meta.request(req)).await }
            })
            .await?;
        let leader =
            r.leader.ok_or_else(|| Error::from(tonic::Status::internal("campaign answer without a leader key")))?;
        Ok(LeaderKey::from_pb(leader, &self.ns))
    }

    /// Sets the leader's value to `value`. Fails with [`Error::NotLeader`] if `leader` is not
    /// (or no longer) the leader.
    pub async fn proclaim(&self, leader: &LeaderKey, value: impl Into<Bytes>) -> Result<ResponseHeader> {
        check_name(&leader.name)?;
        let req = pb::ProclaimRequest { leader: Some(leader.to_pb(&self.ns)), value: value.into() };
        let r = self
            .call(Call::write("Proclaim"), |ch, meta| {
                let req = req.clone();
                async move { stub::election(ch).proclaim(meta.request(req)).await }
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }

    /// The current leader's key and value in election `name`, or `None` while the election has
    /// no leader (the server's `election: no leader` is not an error here).
    pub async fn leader(&self, name: impl Into<Bytes>) -> Result<Option<KeyValue>> {
        let name = name.into();
        check_name(&name)?;
        let req = pb::LeaderRequest { name: self.ns.key(name) };
        let r = self
            .call(Call::read("Leader"), |ch, meta| {
                let req = req.clone();
                async move { stub::election(ch).leader(meta.request(req)).await }
            })
            .await;
        match r {
            Ok(r) => Ok(r.kv.map(|kv| KeyValue::from_pb(kv, &self.ns))),
            Err(Error::NotLeader { reason, .. }) if reason.contains("no leader") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams the leader values of election `name` (see [`ObserveStream`]). Returns once the
    /// server has accepted the request; the stream is not bound by the request timeout.
    pub async fn observe(&self, name: impl Into<Bytes>) -> Result<ObserveStream> {
        let name = name.into();
        check_name(&name)?;
        let req = pb::LeaderRequest { name: self.ns.key(name) };
        let inner = self
            .call(Call::read("Observe").timeout(None), |ch, meta| {
                let req = req.clone();
                async move { stub::election(ch).observe(meta.request(req)).await }
            })
            .await?;
        Ok(ObserveStream { inner, ns: self.ns.clone(), done: false })
    }

    /// Gives up leadership: deletes the leader's key, so the next candidate wins. Resigning a
    /// key that is no longer the leader's succeeds and changes nothing.
    pub async fn resign(&self, leader: &LeaderKey) -> Result<ResponseHeader> {
        check_name(&leader.name)?;
        let req = pb::ResignRequest { leader: Some(leader.to_pb(&self.ns)) };
        let r = self
            .call(Call::write("Resign"), |ch, meta| {
                let req = req.clone();
                async move { stub::election(ch).resign(meta.request(req)).await }
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_keys_round_trip_through_the_namespace() {
        let ns = Namespace::default().join(b"app/");
        let wire = pb::LeaderKey { name: "app/svc".into(), key: "app/svc/694d".into(), rev: 5, lease: 0x694d };
        let key = LeaderKey::from_pb(wire.clone(), &ns);
        assert_eq!((&key.name[..], &key.key[..]), (&b"svc"[..], &b"svc/694d"[..]));
        assert_eq!(key.to_pb(&ns), wire);
    }
}
