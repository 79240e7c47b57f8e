//! A 3-member cluster keeps serving while one member is killed, and the member rejoins with its data.

use std::time::Duration;

use anyhow::Result;
use etcd_tests::{channel, eventually, three};
use etcd_wire::pb::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_a_member() -> Result<()> {
    let etcd = three()?;
    let leader = etcd.wait_for_leader(Duration::from_secs(20))?;
    let victim = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    let endpoints = etcd.endpoints();

    let mut kv = KvClient::new(channel(&endpoints[survivor]).await?);
    kv.put(PutRequest { key: "before".into(), value: "1".into(), ..Default::default() }).await?;

    etcd.kill(victim)?;
    assert!(!etcd.is_running(victim));
    // Two of three members are a quorum: writes and linearizable reads still succeed.
    for i in 0..10 {
        kv.put(PutRequest { key: format!("during/{i}").into(), value: "x".into(), ..Default::default() }).await?;
    }
    let during =
        kv.range(RangeRequest { key: "during/".into(), range_end: "during0".into(), ..Default::default() }).await?;
    assert_eq!(during.into_inner().count, 10);

    etcd.restart(victim)?;
    // The restarted member catches up from its own data dir plus the leader's log.
    let restarted = KvClient::new(channel(&endpoints[victim]).await?);
    let count = eventually(Duration::from_secs(20), "the restarted member to catch up", || {
        let mut kv = restarted.clone();
        async move {
            let r = kv
                .range(RangeRequest {
                    key: "during/".into(),
                    range_end: "during0".into(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (r.count == 10).then_some(r.count)
        }
    })
    .await?;
    assert_eq!(count, 10);
    let before = restarted.clone().range(RangeRequest { key: "before".into(), ..Default::default() }).await?;
    assert_eq!(before.into_inner().count, 1);
    Ok(())
}
