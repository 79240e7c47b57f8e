//! The generated Lease stubs against real etcd: grant, keep-alive, revoke, expiry.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_tests::{channel, eventually, single};
use etcd_wire::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    kv_client::KvClient, lease_client::LeaseClient,
};
use tokio_stream::StreamExt;

#[tokio::test]
async fn grant_keep_alive_revoke() -> Result<()> {
    let etcd = single()?;
    let ch = channel(&etcd.endpoints()[0]).await?;
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);

    let granted = lease.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await?.into_inner();
    assert!(granted.id != 0 && granted.ttl == 30, "{granted:?}");
    kv.put(PutRequest { key: "leased".into(), value: "v".into(), lease: granted.id, ..Default::default() }).await?;

    // One keep-alive round trip on the bidirectional stream renews the TTL.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(LeaseKeepAliveRequest { id: granted.id }).await?;
    let mut acks = lease.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let ack = acks.next().await.context("keep-alive stream ended")??;
    assert_eq!((ack.id, ack.ttl), (granted.id, 30));

    let ttl = lease.lease_time_to_live(LeaseTimeToLiveRequest { id: granted.id, keys: true }).await?.into_inner();
    assert_eq!(ttl.keys.iter().map(|k| &k[..]).collect::<Vec<_>>(), [&b"leased"[..]]);

    lease.lease_revoke(LeaseRevokeRequest { id: granted.id }).await?;
    let gone = kv.range(RangeRequest { key: "leased".into(), ..Default::default() }).await?.into_inner();
    assert_eq!(gone.count, 0, "revoking the lease deletes its keys");
    Ok(())
}

#[tokio::test]
async fn key_vanishes_when_its_lease_expires() -> Result<()> {
    let etcd = single()?;
    let ch = channel(&etcd.endpoints()[0]).await?;
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch);

    let granted = lease.lease_grant(LeaseGrantRequest { ttl: 2, id: 0 }).await?.into_inner();
    kv.put(PutRequest { key: "ephemeral".into(), value: "v".into(), lease: granted.id, ..Default::default() }).await?;
    let present = kv.range(RangeRequest { key: "ephemeral".into(), ..Default::default() }).await?.into_inner();
    assert_eq!(present.count, 1);

    // No keep-alive: etcd expires the lease after its TTL and deletes the key with it.
    let kv2 = kv.clone();
    eventually(Duration::from_secs(15), "the leased key to be deleted", || {
        let mut kv = kv2.clone();
        async move {
            let r = kv.range(RangeRequest { key: "ephemeral".into(), ..Default::default() }).await.ok()?;
            (r.into_inner().count == 0).then_some(())
        }
    })
    .await?;
    let ttl = lease.lease_time_to_live(LeaseTimeToLiveRequest { id: granted.id, keys: false }).await?.into_inner();
    assert_eq!(ttl.ttl, -1, "an expired lease reports TTL -1");
    Ok(())
}
