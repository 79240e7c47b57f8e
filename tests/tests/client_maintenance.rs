//! The typed Maintenance API against real etcd: status (of the balancer's pick, of one endpoint,
//! of all), alarms, defragmentation, KV and backend hashes, snapshots, leadership transfer; and learner
//! membership (add as learner, remove) through the Cluster API; downgrade validation, enabling and
//! cancelling, as etcd 3.5.1 really answers them (3.4.23 has no Downgrade).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::EtcdVersion;
use etcd_tests::{eventually, requests_started, single, three};
use etcd_wire::{Client, ClientOptions, DowngradeAction, Error, PutOptions};
use futures::StreamExt;

async fn connect(endpoints: Vec<String>) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// The bbolt meta page's magic number, at offset 16 of the database file (after the page header).
const BOLT_MAGIC: u32 = 0xED0C_DAED;

#[tokio::test]
async fn status_reports_the_member() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    client.put("k", "v", PutOptions::new()).await?;

    let s = client.status().await?;
    let want_version = etcd.version().to_string();
    assert!(s.version.starts_with(&want_version[..3]), "version {:?} for etcd {want_version}", s.version);
    assert!(s.db_size > 0 && s.db_size_in_use > 0 && s.db_size_in_use <= s.db_size, "{s:?}");
    assert!(s.member_id != 0 && s.member_id == s.header.member_id);
    assert!(s.is_leader(), "a single member leads itself: {s:?}");
    assert!(s.raft_term >= 1 && s.raft_index >= 1 && s.raft_applied_index >= 1, "{s:?}");
    assert!(s.errors.is_empty() && !s.is_learner, "{s:?}");
    assert!(s.header.revision >= 2, "the put is visible: {s:?}");

    let by_url = client.status_of(&etcd.endpoints()[0]).await?;
    assert_eq!(by_url.member_id, s.member_id);
    let all = client.status_all().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.as_ref().map(|s| s.member_id).ok(), Some(s.member_id));

    let bad = client.status_of("ftp://nope").await;
    assert!(matches!(bad, Err(Error::InvalidEndpoint { .. })), "{bad:?}");
    let no_socket = client.status_of("unix:///nope").await;
    assert!(matches!(no_socket, Err(Error::Connect { .. })), "{no_socket:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let down = client.status_of(&format!("127.0.0.1:{port}")).await;
    assert!(matches!(down, Err(Error::Connect { .. })), "{down:?}");
    Ok(())
}

#[tokio::test]
async fn alarms_defragment_and_hash() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    assert!(client.alarm_list().await?.alarms.is_empty());

    for i in 0..50 {
        client.put(format!("key{i}"), vec![b'x'; 1024], PutOptions::new()).await?;
    }
    let before = client.hash_kv(0).await?;
    assert_ne!(before.hash, 0);
    let rev = client.put("key0", "changed", PutOptions::new()).await?.header.revision;
    let after = client.hash_kv(0).await?;
    assert_ne!(before.hash, after.hash, "a write changes the hash");
    // Hashing at an older revision reproduces the old hash.
    let again = client.hash_kv(rev - 1).await?;
    assert_eq!(again.hash, before.hash);
    assert!(matches!(client.hash_kv(-1).await, Err(Error::InvalidArgument { .. })));

    client.compact(rev, true).await?;
    client.defragment().await?;
    client.defragment_of(&etcd.endpoints()[0]).await?;
    let s = client.status().await?;
    assert!(s.db_size_in_use <= s.db_size);
    assert_eq!(client.hash_kv_of(&etcd.endpoints()[0], 0).await?.compact_revision, rev);
    Ok(())
}

#[tokio::test]
async fn snapshot_streams_a_bolt_database() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    for i in 0..20 {
        client.put(format!("snap{i}"), vec![b'y'; 4096], PutOptions::new()).await?;
    }
    let mut stream = client.snapshot().await?;
    let mut data = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await? {
        data.extend_from_slice(&chunk?);
    }
    assert!(data.len() > 20 * 4096, "snapshot of {} bytes", data.len());
    assert_eq!((stream.received(), stream.remaining()), (data.len() as u64, Some(0)));
    let magic = u32::from_le_bytes(data[16..20].try_into()?);
    assert_eq!(magic, BOLT_MAGIC, "a bbolt file starts with a meta page");

    let mut of = client.snapshot_of(&etcd.endpoints()[0]).await?;
    let mut len = 0;
    while let Some(chunk) = of.next().await {
        len += chunk?.len();
    }
    assert!(len > 20 * 4096);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_hands_leadership_to_the_target() -> Result<()> {
    let etcd = three()?;
    etcd.wait_for_leader(Duration::from_secs(20))?;
    let client = connect(etcd.endpoints()).await?;
    client.put("k", "v", PutOptions::new()).await?;

    let statuses = client.status_all().await;
    let mut ids = Vec::new();
    for (url, s) in &statuses {
        let s = s.as_ref().map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        ids.push((s.member_id, s.leader));
    }
    let leader = ids[0].1;
    ensure!(leader != 0 && ids.iter().all(|(_, l)| *l == leader), "members disagree on the leader: {ids:?}");
    let target = ids.iter().map(|(id, _)| *id).find(|id| *id != leader).context("a follower")?;

    // Only the leader can transfer leadership; the client finds it whichever endpoint it starts at.
    client.move_leader(target).await?;
    eventually(Duration::from_secs(20), "the target to lead", || async {
        let s = client.status().await.ok()?;
        (s.leader == target).then_some(())
    })
    .await?;
    let by_target = statuses.iter().find(|(_, s)| s.as_ref().is_ok_and(|s| s.member_id == target));
    let (url, _) = by_target.context("target's endpoint")?;
    assert!(client.status_of(url).await?.is_leader());

    // Every member computes the same hash at the same revision.
    let rev = client.put("k2", "v", PutOptions::new()).await?.header.revision;
    let hashes = eventually(Duration::from_secs(10), "members to apply the write", || async {
        let mut hashes = Vec::new();
        for url in etcd.endpoints() {
            hashes.push(client.hash_kv_of(&url, rev).await.ok()?.hash);
        }
        Some(hashes)
    })
    .await?;
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    Ok(())
}

#[tokio::test]
async fn learner_can_be_added_and_removed() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    // A learner that never starts: it does not count towards the quorum, so the cluster is fine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let added = client.member_add(vec![format!("http://127.0.0.1:{port}")], true).await?;
    let learner = added.member.context("the added member")?;
    assert!(learner.is_learner && learner.name.is_empty(), "{learner:?}");
    assert_eq!(added.members.len(), 2);

    let list = client.member_list(true).await?;
    assert_eq!(list.members.iter().filter(|m| m.is_learner).count(), 1);
    client.put("still", "writable", PutOptions::new()).await?;

    // Promoting a learner that has not caught up is refused.
    let r = client.member_promote(learner.id).await;
    assert!(r.is_err(), "{r:?}");

    let removed = client.member_remove(learner.id).await?;
    assert_eq!(removed.members.len(), 1);
    assert!(client.member_list(true).await?.members.iter().all(|m| !m.is_learner));
    Ok(())
}

#[tokio::test]
async fn hash_covers_the_whole_backend() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    client.put("k", "v", PutOptions::new()).await?;

    let before = client.hash().await?;
    let kv_before = client.hash_kv(0).await?;
    assert!(before.header.member_id != 0 && before.header.revision >= 2, "{before:?}");

    // A lease lives outside the key-value history: the backend hash sees it, the KV hash does not.
    client.lease_grant(60, None).await?;
    let after = client.hash_of(&etcd.endpoints()[0]).await?;
    assert_eq!(after.header.member_id, before.header.member_id);
    assert_ne!(after.hash, before.hash, "the lease bucket changed");
    assert_eq!(client.hash_kv(0).await?.hash, kv_before.hash, "no key changed");

    client.put("k", "w", PutOptions::new()).await?;
    assert_ne!(client.hash().await?.hash, after.hash, "a write changes the backend too");
    Ok(())
}

/// Whether `r` is etcd 3.4's answer to the Downgrade RPC it does not have.
fn no_downgrade_rpc<T: std::fmt::Debug>(r: &etcd_wire::Result<T>) -> bool {
    matches!(r, Err(Error::Unsupported { what, .. }) if what == "etcdserverpb.Maintenance/Downgrade")
}

#[tokio::test]
async fn downgrade_validates_and_refuses_as_etcd_does() -> Result<()> {
    let etcd = single()?;
    let url = etcd.endpoints()[0].clone();
    let client = connect(etcd.endpoints()).await?;

    // Malformed versions never reach the server.
    let sent = requests_started(&url, &["Downgrade"])?;
    for bad in ["", "3", "v3.4.0", "3.4.0.1", "three.four", "3.4-rc"] {
        let r = client.downgrade(DowngradeAction::Validate, bad).await;
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{bad:?}: {r:?}");
    }
    let r = client.downgrade(DowngradeAction::Enable, "latest").await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(requests_started(&url, &["Downgrade"])?, sent, "no Downgrade RPC was sent");

    if etcd.version() == EtcdVersion::V3_4_23 {
        for action in [DowngradeAction::Validate, DowngradeAction::Enable, DowngradeAction::Cancel] {
            let r = client.downgrade(action, "3.3").await;
            assert!(no_downgrade_rpc(&r), "{action:?} on 3.4: {r:?}");
        }
        return Ok(());
    }

    // etcd 3.5.1: one minor version down is fine, with or without a patch; the answer is the
    // cluster version.
    for target in ["3.4", "3.4.0", "3.4.23"] {
        let ok = client.downgrade(DowngradeAction::Validate, target).await?;
        assert_eq!(ok.version, "3.5.0", "{target}: {ok:?}");
        assert!(ok.header.member_id != 0);
    }
    // The same version, a newer one, or two minors down are refused.
    for target in ["3.5", "3.5.1", "3.6.0", "3.3", "2.3"] {
        let r = client.downgrade(DowngradeAction::Validate, target).await;
        assert!(matches!(r, Err(Error::InvalidDowngradeTarget { .. })), "{target}: {r:?}");
    }
    let r = client.downgrade(DowngradeAction::Enable, "3.3").await;
    assert!(matches!(r, Err(Error::InvalidDowngradeTarget { .. })), "{r:?}");
    // Nothing to cancel.
    let r = client.downgrade(DowngradeAction::Cancel, "").await;
    assert!(matches!(r, Err(Error::NoDowngradeInProgress { .. })), "{r:?}");
    assert_eq!(r.map_err(|e| e.status().map(|s| s.code())).err(), Some(Some(etcd_wire::GrpcCode::FailedPrecondition)));
    Ok(())
}

/// etcd 3.5.1 applies an Enable or a Cancel but never answers it: after its own request timeout
/// (about 7 s) it says "request timed out", an indeterminate error; Validate shows what happened.
#[tokio::test]
async fn downgrade_enable_then_cancel() -> Result<()> {
    let etcd = single()?;
    let client = connect(etcd.endpoints()).await?;
    if etcd.version() == EtcdVersion::V3_4_23 {
        let r = client.downgrade(DowngradeAction::Enable, "3.3").await;
        assert!(no_downgrade_rpc(&r), "{r:?}");
        return Ok(());
    }
    let timed_out = |r: &etcd_wire::Result<_>| match r {
        Err(e @ Error::Unavailable { status }) => {
            status.message().contains("request timed out") && e.is_indeterminate()
        }
        _ => false,
    };

    let r = client.downgrade(DowngradeAction::Enable, "3.4").await;
    assert!(timed_out(&r), "etcd 3.5.1 answers an enable with a timeout: {r:?}");
    let r = client.downgrade(DowngradeAction::Validate, "3.4").await;
    assert!(matches!(r, Err(Error::DowngradeInProgress { .. })), "the enable was applied: {r:?}");
    let r = client.downgrade(DowngradeAction::Enable, "3.4").await;
    assert!(matches!(r, Err(Error::DowngradeInProgress { .. })), "{r:?}");
    client.put("k", "v", PutOptions::new()).await?;

    let r = client.downgrade(DowngradeAction::Cancel, "").await;
    assert!(timed_out(&r), "etcd 3.5.1 answers a cancel with a timeout: {r:?}");
    let r = client.downgrade(DowngradeAction::Cancel, "").await;
    assert!(matches!(r, Err(Error::NoDowngradeInProgress { .. })), "the cancel was applied: {r:?}");
    assert_eq!(client.downgrade(DowngradeAction::Validate, "3.4").await?.version, "3.5.0");
    Ok(())
}
