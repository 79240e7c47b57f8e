//! The generated Watch stub against real etcd: one bidirectional stream sees a put and a delete.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_tests::{channel, single};
use etcd_wire::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient, watch_client::WatchClient,
    watch_request,
};
use etcd_wire::pb::mvccpb::event::EventType;
use tokio_stream::StreamExt;

#[tokio::test]
async fn watch_sees_put_and_delete() -> Result<()> {
    let etcd = single()?;
    let ch = channel(&etcd.endpoints()[0]).await?;
    let mut kv = KvClient::new(ch.clone());
    let mut watch = WatchClient::new(ch);

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            prev_kv: true,
            ..Default::default()
        })),
    })
    .await?;
    let mut events = watch.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();

    let created = events.next().await.context("stream ended")??;
    assert!(created.created, "the first response confirms the watcher");
    let watch_id = created.watch_id;

    kv.put(PutRequest { key: "w/a".into(), value: "1".into(), ..Default::default() }).await?;
    kv.delete_range(DeleteRangeRequest { key: "w/a".into(), ..Default::default() }).await?;
    kv.put(PutRequest { key: "elsewhere".into(), value: "x".into(), ..Default::default() }).await?;

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let resp = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .context("no watch event within 10s")?
            .context("stream ended")??;
        assert_eq!(resp.watch_id, watch_id);
        for ev in resp.events {
            let kv = ev.kv.context("event without kv")?;
            seen.push((ev.r#type, kv.key, kv.mod_revision, ev.prev_kv.map(|p| p.value)));
        }
    }
    assert_eq!(seen.len(), 2, "only the two events under w/, not the put elsewhere: {seen:?}");
    assert_eq!(seen[0].0, EventType::Put as i32);
    assert_eq!(&seen[0].1[..], b"w/a");
    assert_eq!(seen[1].0, EventType::Delete as i32);
    assert!(seen[1].2 > seen[0].2, "revisions increase");
    assert_eq!(seen[1].3.as_deref(), Some(&b"1"[..]), "prev_kv of the delete is the put's value");
    drop(tx);
    Ok(())
}
