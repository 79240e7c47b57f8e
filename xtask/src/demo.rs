//! The main job until the lock-strategy comparison exists: start etcd and drive KV, Watch and Lease
//! through the generated stubs, printing what etcd answers.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_harness::{ClusterConfig, EtcdCluster};
use etcd_wire::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient, watch_request,
};
use tokio_stream::StreamExt;

pub(crate) fn run() -> Result<()> {
    let cluster = EtcdCluster::start(ClusterConfig::default())?;
    println!("started etcd {} at {}", cluster.version(), cluster.endpoints().join(","));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(drive(&cluster.endpoints()[0]))
}

async fn drive(url: &str) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect().await?;
    let mut kv = KvClient::new(channel.clone());
    let mut lease = LeaseClient::new(channel.clone());
    let mut watch = WatchClient::new(channel);

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: "demo/".into(),
            range_end: "demo0".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut events = watch.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    events.next().await.context("watch stream ended")??;
    println!("watching the prefix demo/");

    let put = kv.put(PutRequest { key: "demo/hello".into(), value: "world".into(), ..Default::default() }).await?;
    println!("put demo/hello=world at revision {}", put.into_inner().header.map_or(0, |h| h.revision));
    let got = kv.range(RangeRequest { key: "demo/hello".into(), ..Default::default() }).await?.into_inner();
    for kv in &got.kvs {
        println!("get {} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
    }

    let granted = lease.lease_grant(LeaseGrantRequest { ttl: 10, id: 0 }).await?.into_inner();
    println!("granted lease {:x} with TTL {}s", granted.id, granted.ttl);
    kv.put(PutRequest { key: "demo/leased".into(), value: "bye".into(), lease: granted.id, ..Default::default() })
        .await?;
    lease.lease_revoke(LeaseRevokeRequest { id: granted.id }).await?;
    println!("revoked lease {:x}: its key demo/leased is deleted with it", granted.id);

    let mut seen = 0;
    while seen < 3 {
        let resp = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .context("no watch event within 5s")?
            .context("watch stream ended")??;
        for ev in resp.events {
            seen += 1;
            let kind = if ev.r#type == 0 { "PUT" } else { "DELETE" };
            let kv = ev.kv.unwrap_or_default();
            println!("watch: {kind} {} (revision {})", String::from_utf8_lossy(&kv.key), kv.mod_revision);
        }
    }
    println!("demo done; the lock-strategy comparison will replace this job (see the README).");
    drop(tx);
    Ok(())
}
