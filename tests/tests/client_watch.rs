//! The typed client's watches against real etcd: event kinds and options, history, progress,
//! fragments, many watchers on one stream, cancel, compaction, and exactly-once resume across a
//! member restart, a member losing its leader, and dropped connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use etcd_harness::{ClusterConfig, EtcdCluster, TcpProxy};
use etcd_tests::{channel, eventually, metric, single, three};
use etcd_wire::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_client::WatchClient, watch_request};
use etcd_wire::{
    Client, ClientOptions, DeleteOptions, Error, Event, EventKind, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchResponse, Watcher,
};
use futures::StreamExt;

/// Generous: the suite runs on small, busy machines.
const WAIT: Duration = Duration::from_secs(30);

async fn connect(endpoints: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// The next item of `w`, which must come within [`WAIT`] and be `Ok`.
async fn next(w: &mut Watcher) -> Result<WatchResponse> {
    match tokio::time::timeout(WAIT, w.next()).await {
        Err(_) => bail!("no watch response within {WAIT:?}"),
        Ok(None) => bail!("the watcher ended"),
        Ok(Some(r)) => Ok(r?),
    }
}

/// The next `n` events of `w`, skipping progress notifications.
async fn events(w: &mut Watcher, n: usize) -> Result<Vec<Event>> {
    let mut all = Vec::new();
    while all.len() < n {
        all.extend(next(w).await?.events);
    }
    ensure!(all.len() == n, "got {} events, wanted {n}: {all:?}", all.len());
    Ok(all)
}

fn keys(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.kv.key_str().into_owned()).collect()
}

#[tokio::test]
async fn put_and_delete_events_carry_kinds_and_previous_values() -> Result<()> {
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    let mut w = c.watch("k", WatchOptions::new().with_prev_kv()).await?;
    assert!(w.watch_id() > 0);
    let created = w.created_revision();
    c.put("k", "1", PutOptions::new()).await?;
    c.put("other", "x", PutOptions::new()).await?;
    c.put("k", "2", PutOptions::new()).await?;
    c.delete("k", DeleteOptions::new()).await?;

    let evs = events(&mut w, 3).await?;
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Put, EventKind::Delete]);
    assert_eq!(evs[0].kv.mod_revision, created + 1, "the first change after creation");
    assert_eq!((evs[0].kv.value_str(), evs[0].prev_kv.is_none()), ("1".into(), true));
    assert_eq!(evs[1].prev_kv.as_ref().map(|p| p.value.clone()), Some(Bytes::from("1")));
    assert_eq!((evs[2].kv.value.len(), evs[2].prev_kv.as_ref().map(|p| p.value.clone())), (0, Some("2".into())));
    assert!(evs.windows(2).all(|p| p[0].kv.mod_revision < p[1].kv.mod_revision));

    // A namespaced view watches inside its prefix and strips it.
    let ns = c.with_namespace("app/");
    let mut nw = ns.watch("", WatchOptions::new().with_prefix()).await?;
    c.put("app/a", "in", PutOptions::new()).await?;
    c.put("apq", "out", PutOptions::new()).await?;
    c.put("app/b", "in", PutOptions::new()).await?;
    assert_eq!(keys(&events(&mut nw, 2).await?), ["a", "b"]);
    Ok(())
}

#[tokio::test]
async fn prefix_range_and_from_key_cover_their_keys() -> Result<()> {
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    let mut prefix = c.watch("p/", WatchOptions::new().with_prefix()).await?;
    let mut range = c.watch("r/b", WatchOptions::new().with_range("r/d")).await?;
    let mut from = c.watch("y", WatchOptions::new().with_from_key()).await?;
    for k in ["p/1", "p", "q", "r/a", "r/b", "r/c", "r/d", "p/2", "y", "z/1"] {
        c.put(k, "v", PutOptions::new()).await?;
    }
    assert_eq!(keys(&events(&mut prefix, 2).await?), ["p/1", "p/2"]);
    assert_eq!(keys(&events(&mut range, 2).await?), ["r/b", "r/c"]);
    assert_eq!(keys(&events(&mut from, 2).await?), ["y", "z/1"]);
    assert!(matches!(c.watch("", WatchOptions::new()).await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(c.watch("b", WatchOptions::new().with_range("a")).await, Err(Error::InvalidArgument { .. })));
    Ok(())
}

#[tokio::test]
async fn start_revision_replays_history_and_filters_leave_out_kinds() -> Result<()> {
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    let mut revs = Vec::new();
    for i in 1..=5 {
        revs.push(c.put("h", format!("{i}"), PutOptions::new()).await?.header.revision);
    }
    revs.push(c.delete("h", DeleteOptions::new()).await?.header.revision);

    let mut replay = c.watch("h", WatchOptions::new().with_start_revision(revs[1])).await?;
    let got = events(&mut replay, 5).await?;
    assert_eq!(got.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), &revs[1..]);
    assert_eq!(got[0].kv.value, "2");

    let mut no_put = c.watch("h", WatchOptions::new().with_start_revision(revs[0]).with_no_put()).await?;
    let mut no_delete = c.watch("h", WatchOptions::new().with_start_revision(revs[0]).with_no_delete()).await?;
    let deletes = events(&mut no_put, 1).await?;
    assert_eq!((deletes[0].kind, deletes[0].kv.mod_revision), (EventKind::Delete, revs[5]));
    let puts = events(&mut no_delete, 5).await?;
    assert!(puts.iter().all(|e| e.kind == EventKind::Put));
    // Nothing else is pending on the filtered watchers: a new put shows up next on no_delete only.
    let rev = c.put("h", "again", PutOptions::new()).await?.header.revision;
    assert_eq!(events(&mut no_delete, 1).await?[0].kv.mod_revision, rev);
    c.delete("h", DeleteOptions::new()).await?;
    assert_eq!(events(&mut no_put, 1).await?[0].kv.mod_revision, rev + 1);
    Ok(())
}

#[tokio::test]
async fn progress_notifications_periodic_and_on_request() -> Result<()> {
    let etcd = EtcdCluster::start(
        ClusterConfig::default().with_extra_arg("--experimental-watch-progress-notify-interval=1s"),
    )?;
    let c = connect(etcd.endpoints()).await?;
    let rev = c.put("busy", "x", PutOptions::new()).await?.header.revision;
    let mut periodic = c.watch("idle", WatchOptions::new().with_progress_notify()).await?;
    let mut plain = c.watch("idle2", WatchOptions::new()).await?;

    // With progress_notify and nothing changing, the server says how far the watcher is.
    let r = next(&mut periodic).await?;
    assert!(r.progress_notify && r.events.is_empty(), "{r:?}");
    assert!(r.header.revision >= rev);

    // On request, every watcher of the client gets a progress notification, plain ones too.
    let rev = c.put("busy", "y", PutOptions::new()).await?.header.revision;
    plain.request_progress()?;
    let r = next(&mut plain).await?;
    assert!(r.progress_notify && r.events.is_empty(), "{r:?}");
    assert_eq!(r.header.revision, rev, "the store revision when the member answered");

    // Progress does not disturb events.
    let put = c.put("idle2", "now", PutOptions::new()).await?.header.revision;
    let evs = events(&mut plain, 1).await?;
    assert_eq!(evs[0].kv.mod_revision, put);
    Ok(())
}

#[tokio::test]
async fn large_revisions_arrive_whole_with_or_without_fragments() -> Result<()> {
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    const KEYS: usize = 12;
    let value = |fill: u8| Bytes::from(vec![fill; 100 * 1024]);
    let txn = |fill| {
        Txn::new().and_then((0..KEYS).map(|i| TxnOp::put(format!("big/{i:02}"), value(fill), PutOptions::new())))
    };
    c.txn(txn(b'a')).await?;
    // ~1.2 MiB of puts; with prev_kv the watch response is ~2.4 MiB, over the default
    // --max-request-bytes (1.5 MiB) at which the server fragments.
    let rev = c.txn(txn(b'b')).await?.header.revision;

    // Proof, on the raw stub, that the server really sends fragments for this revision.
    let mut raw = WatchClient::new(channel(&etcd.endpoints()[0]).await?);
    let create = WatchCreateRequest {
        key: "big/".into(),
        range_end: "big0".into(),
        start_revision: rev,
        prev_kv: true,
        fragment: true,
        ..Default::default()
    };
    let req = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    let mut stream = raw.watch(tokio_stream::iter([req]).chain(tokio_stream::pending())).await?.into_inner();
    let mut fragments = 0;
    loop {
        let r = tokio::time::timeout(WAIT, stream.next()).await?.context("raw stream ended")??;
        if r.created {
            continue;
        }
        fragments += 1;
        if !r.fragment {
            break;
        }
    }
    assert!(fragments >= 2, "the server split the revision into {fragments} messages");

    for opts in [WatchOptions::new().with_fragment(), WatchOptions::new()] {
        let mut w = c.watch("big/", opts.with_prefix().with_prev_kv().with_start_revision(rev)).await?;
        let r = next(&mut w).await?;
        assert_eq!(r.events.len(), KEYS, "one response with every event of the revision");
        assert!(r.events.iter().all(|e| e.kv.mod_revision == rev && e.kv.value == value(b'b')));
        assert!(r.events.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.value == value(b'a'))));
    }
    Ok(())
}

#[tokio::test]
async fn many_watchers_share_one_stream_and_dropping_cancels() -> Result<()> {
    let etcd = single()?;
    let url = etcd.endpoints()[0].clone();
    let c = connect([&url]).await?;
    let mut watchers = Vec::new();
    for i in 0..100 {
        watchers.push(c.watch(format!("m/{i:03}"), WatchOptions::new()).await?);
    }
    let ids: std::collections::HashSet<i64> = watchers.iter().map(Watcher::watch_id).collect();
    assert_eq!(ids.len(), 100, "distinct IDs");
    // One stream on the server for all of them (clones share it too).
    let clone = c.clone();
    let mut extra = clone.watch("m/extra", WatchOptions::new()).await?;
    assert_eq!(metric(&url, "etcd_debugging_mvcc_watch_stream_total")?, 1.0);
    assert_eq!(metric(&url, "etcd_debugging_mvcc_watcher_total")?, 101.0);

    for i in (0..100).rev() {
        c.put(format!("m/{i:03}"), format!("{i}"), PutOptions::new()).await?;
    }
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_eq!(keys(&events(w, 1).await?), [format!("m/{i:03}")]);
    }

    // Dropping half cancels them on the server; the others keep working.
    let kept: Vec<Watcher> = watchers.into_iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, w)| w).collect();
    eventually(WAIT, "50 cancels", || async {
        (metric(&url, "etcd_debugging_mvcc_watcher_total").ok()? == 51.0).then_some(())
    })
    .await?;
    c.put("m/extra", "x", PutOptions::new()).await?;
    assert_eq!(keys(&events(&mut extra, 1).await?), ["m/extra"]);
    extra.cancel();
    drop(kept);
    // With no watcher left, the client closes the stream.
    eventually(WAIT, "the stream to close", || async {
        (metric(&url, "etcd_debugging_mvcc_watch_stream_total").ok()? == 0.0).then_some(())
    })
    .await?;
    // And opens a new one for the next watch.
    let mut again = c.watch("m/000", WatchOptions::new()).await?;
    c.put("m/000", "back", PutOptions::new()).await?;
    assert_eq!(events(&mut again, 1).await?[0].kv.value, "back");
    Ok(())
}

#[tokio::test]
async fn compaction_ends_the_watcher_with_the_compact_revision() -> Result<()> {
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(c.put("c", format!("{i}"), PutOptions::new()).await?.header.revision);
    }
    c.compact(revs[3], false).await?;
    let mut w = c.watch("c", WatchOptions::new().with_start_revision(revs[1])).await?;
    match tokio::time::timeout(WAIT, w.next()).await? {
        Some(Err(Error::Compacted { compact_revision, .. })) => assert_eq!(compact_revision, Some(revs[3])),
        other => bail!("expected a compaction error, got {other:?}"),
    }
    assert!(tokio::time::timeout(WAIT, w.next()).await?.is_none(), "then the watcher ends");
    // From the compaction revision on, history is there.
    let mut ok = c.watch("c", WatchOptions::new().with_start_revision(revs[3])).await?;
    assert_eq!(events(&mut ok, 2).await?[1].kv.mod_revision, revs[4]);
    Ok(())
}

#[tokio::test]
async fn a_resume_into_compacted_history_is_a_compaction_error() -> Result<()> {
    let etcd = single()?;
    let direct = connect(etcd.endpoints()).await?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let c = connect([proxy.url()]).await?;
    let mut w = c.watch("c", WatchOptions::new()).await?;
    direct.put("c", "seen", PutOptions::new()).await?;
    events(&mut w, 1).await?;
    // Partition the watcher, change and compact past what it has seen, then heal.
    proxy.set_blackhole(true);
    direct.put("c", "missed", PutOptions::new()).await?;
    let rev = direct.put("c", "missed too", PutOptions::new()).await?.header.revision;
    direct.compact(rev, false).await?;
    proxy.drop_connections();
    proxy.set_blackhole(false);
    match tokio::time::timeout(WAIT, w.next()).await? {
        Some(Err(Error::Compacted { compact_revision, .. })) => assert_eq!(compact_revision, Some(rev)),
        other => bail!("expected a compaction error, got {other:?}"),
    }
    assert!(tokio::time::timeout(WAIT, w.next()).await?.is_none());
    Ok(())
}

/// Puts `1, 2, 3, ...` to `key` until told to stop (after at least `min` puts), retrying failed
/// puts; returns the last revision.
struct Writer {
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<i64>>,
}

impl Writer {
    fn start(client: Client, key: &'static str) -> Writer {
        let (done, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (d, s) = (done.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut last = 0;
            let mut i = 1usize;
            let mut failing_since = None;
            while !s.load(Ordering::SeqCst) {
                match client.put(key, i.to_string(), PutOptions::new()).await {
                    Ok(r) => {
                        (last, failing_since) = (r.header.revision, None);
                        i += 1;
                        d.store(i - 1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                        ensure!(since.elapsed() < Duration::from_secs(60), "writes keep failing: {e}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(last)
        });
        Writer { done, stop, task }
    }

    async fn wait_for(&self, n: usize) -> Result<()> {
        let done = self.done.clone();
        eventually(Duration::from_secs(90), "writes", || {
            let d = done.load(Ordering::SeqCst);
            async move { (d >= n).then_some(()) }
        })
        .await
    }

    async fn finish(self) -> Result<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// (event revision, member that sent it), in arrival order.
type Seen = Arc<Mutex<Vec<(i64, u64)>>>;

/// Reads `w` in the background into a [`Seen`] list.
fn collect(mut w: Watcher) -> (Seen, tokio::task::JoinHandle<Result<()>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(r) = w.next().await {
            let r = r.context("the watcher failed")?;
            let member = r.header.member_id;
            out.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(r.events.iter().map(|e| (e.kv.mod_revision, member)));
        }
        bail!("the watcher ended")
    });
    (seen, task)
}

/// Waits until `seen` reaches revision `last`, then checks it is exactly `first..=last`.
async fn check_exactly_once(seen: &Mutex<Vec<(i64, u64)>>, first: i64, last: i64) -> Result<()> {
    eventually(Duration::from_secs(60), "every event", || async {
        (seen.lock().unwrap_or_else(PoisonError::into_inner).last().map_or(0, |e| e.0) >= last).then_some(())
    })
    .await?;
    let seen: Vec<i64> = seen.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|e| e.0).collect();
    let want: Vec<i64> = (first..=last).collect();
    if seen != want {
        let dup = seen.windows(2).find(|p| p[0] >= p[1]);
        let gap = seen.windows(2).find(|p| p[1] > p[0] + 1);
        bail!("{} events for {} revisions; first out of order {dup:?}; first gap {gap:?}", seen.len(), want.len());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_once_across_a_member_restart() -> Result<()> {
    let etcd = Arc::new(three()?);
    let eps = etcd.endpoints();
    let leader = etcd.wait_for_leader(WAIT)?;
    let target = (leader + 1) % 3;
    let others: Vec<String> = (0..3).filter(|&i| i != target).map(|i| eps[i].clone()).collect();
    let target_id = connect([&eps[target]]).await?.get("x", GetOptions::new()).await?.header.member_id;

    // Connected to `target` alone, the watch stream starts there; the sync then adds the other
    // members, where the stream resumes while `target` is down.
    let watching = connect([&eps[target]]).await?;
    let w = watching.watch("seq", WatchOptions::new()).await?;
    assert_eq!(w.created_header().member_id, target_id, "the watch started on the member to restart");
    assert_eq!(watching.sync_endpoints().await?.len(), 3);
    let first = w.created_revision() + 1;
    let (seen, reader) = collect(w);

    let writer = Writer::start(connect(&others).await?, "seq");
    writer.wait_for(100).await?;
    let e = etcd.clone();
    tokio::task::spawn_blocking(move || e.kill(target)).await??;
    writer.wait_for(250).await?;
    let e = etcd.clone();
    tokio::task::spawn_blocking(move || e.restart(target)).await??;
    writer.wait_for(400).await?;
    let last = writer.finish().await?;
    ensure!(!reader.is_finished(), "reader stopped: {:?}", reader.await);
    check_exactly_once(&seen, first, last).await?;
    reader.abort();
    let members: std::collections::HashSet<u64> = seen.lock().unwrap().iter().map(|e| e.1).collect();
    assert!(members.len() >= 2, "the watch moved to another member: {members:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_once_across_dropped_connections() -> Result<()> {
    let etcd = single()?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let watching = connect([proxy.url()]).await?;
    let w = watching.watch("seq", WatchOptions::new().with_prefix()).await?;
    let first = w.created_revision() + 1;
    let (seen, reader) = collect(w);

    let writer = Writer::start(connect(etcd.endpoints()).await?, "seq");
    for round in 1..=4 {
        writer.wait_for(round * 80).await?;
        proxy.drop_connections();
    }
    writer.wait_for(400).await?;
    let last = writer.finish().await?;
    ensure!(!reader.is_finished(), "reader stopped: {:?}", reader.await);
    check_exactly_once(&seen, first, last).await?;
    reader.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_once_after_a_silent_partition() -> Result<()> {
    let etcd = single()?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    // Nothing fails on its own in a partition: HTTP/2 keep-alive is what notices it.
    let options = ClientOptions::default()
        .with_keep_alive(Some(Duration::from_millis(300)), Duration::from_millis(700))
        .with_connect_timeout(Duration::from_secs(1));
    let watching = Client::connect([proxy.url()], options).await?;
    let w = watching.watch("seq", WatchOptions::new()).await?;
    let first = w.created_revision() + 1;
    let (seen, reader) = collect(w);

    let writer = Writer::start(connect(etcd.endpoints()).await?, "seq");
    writer.wait_for(50).await?;
    let accepted = proxy.accepted_count();
    proxy.set_blackhole(true);
    // The client gives up on the silent connection and dials again (into the partition).
    eventually(WAIT, "a reconnect", || async { (proxy.accepted_count() > accepted).then_some(()) }).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_blackhole(false);
    let during = writer.done.load(Ordering::SeqCst);
    writer.wait_for(during + 100).await?;
    let last = writer.finish().await?;
    ensure!(!reader.is_finished(), "reader stopped: {:?}", reader.await);
    check_exactly_once(&seen, first, last).await?;
    reader.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_leader_ends_the_stream_and_the_watch_resumes() -> Result<()> {
    let etcd = Arc::new(three()?);
    let eps = etcd.endpoints();
    let target = (etcd.wait_for_leader(WAIT)? + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != target).collect();
    // The stream starts on `target` (the only endpoint), then the sync adds the others.
    let c = connect([&eps[target]]).await?;
    let mut w = c.watch("lone", WatchOptions::new()).await?;
    let target_id = c.get("x", GetOptions::new()).await?.header.member_id;
    assert_eq!(w.created_header().member_id, target_id, "the watch started on the member to cut off");
    assert_eq!(c.sync_endpoints().await?.len(), 3);
    let before = c.put("lone", "1", PutOptions::new()).await?.header.revision;
    assert_eq!(events(&mut w, 1).await?[0].kv.mod_revision, before);

    // What etcd does: a raw stream with `hasleader` on the member ends with "no leader".
    let mut raw = WatchClient::new(channel(&eps[target]).await?);
    let create = WatchCreateRequest { key: "lone".into(), ..Default::default() };
    let req = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    let mut request = tonic::Request::new(tokio_stream::iter([req]).chain(tokio_stream::pending()));
    request.metadata_mut().insert("hasleader", "true".parse()?);
    let mut stream = raw.watch(request).await?.into_inner();
    assert!(stream.message().await?.is_some_and(|r| r.created));

    for &i in &others {
        let e = etcd.clone();
        tokio::task::spawn_blocking(move || e.kill(i)).await??;
    }
    let status = match tokio::time::timeout(WAIT, stream.message()).await? {
        Err(status) => status,
        Ok(other) => bail!("expected the stream to fail, got {other:?}"),
    };
    assert!(status.message().contains("no leader"), "{status:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // Bring quorum back (both at once: neither is healthy alone); the watcher saw no error.
    let restarts: Vec<_> = others
        .iter()
        .map(|&i| {
            let e = etcd.clone();
            tokio::task::spawn_blocking(move || e.restart(i))
        })
        .collect();
    for r in restarts {
        r.await??;
    }
    let after = c.put("lone", "2", PutOptions::new()).await?.header.revision;
    let evs = events(&mut w, 1).await?;
    assert_eq!((evs[0].kv.mod_revision, evs[0].kv.value_str()), (after, "2".into()));
    Ok(())
}

/// A `Watcher` outliving every `Client` handle (`Client::connect(..).await?.watch(..)`) keeps its
/// stream: it sees a change made afterwards through another client.
#[tokio::test]
async fn handle_keeps_its_watch_after_every_client_handle_was_dropped() -> Result<()> {
    let etcd = single()?;
    let mut w = connect(etcd.endpoints()).await?.watch("k", WatchOptions::new()).await?;
    let other = connect(etcd.endpoints()).await?;
    let rev = other.put("k", "v", PutOptions::new()).await?.header.revision;
    let evs = events(&mut w, 1).await?;
    assert_eq!((evs[0].kv.mod_revision, evs[0].kv.value_str()), (rev, "v".into()));
    assert!(w.request_progress().is_ok());
    Ok(())
}

/// The resident memory of this process, in bytes.
fn resident_bytes() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).context("no VmRSS")?;
    Ok(kb.trim().trim_end_matches("kB").trim().parse::<usize>()? * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_memory_stays_bounded_and_every_event_arrives_once_in_order() -> Result<()> {
    const TXNS: usize = 1000;
    const PER_TXN: usize = 100; // 100,000 events of ~600 bytes: ~60 MB if all were buffered
    let etcd = single()?;
    let c = connect(etcd.endpoints()).await?;
    let mut paused = c.watch("s/", WatchOptions::new().with_prefix()).await?;
    let mut reader = c.watch("s/", WatchOptions::new().with_prefix()).await?;
    let value = Bytes::from(vec![b'v'; 512]);

    // Write while `paused` is not read; `reader` takes every event, so once it has seen the last
    // revision the stream has carried everything `paused` would have been sent as well. The first
    // tenth (6 MB) fills the paused watcher's buffer; from then on the process must not grow.
    let (mut last, mut read, mut filled) = (0, 0, 0);
    for t in 0..TXNS {
        let puts = (0..PER_TXN).map(|k| TxnOp::put(format!("s/{k:03}"), value.clone(), PutOptions::new()));
        last = c.txn(Txn::new().and_then(puts)).await?.header.revision;
        if t % 100 == 99 {
            while read < last {
                read = next(&mut reader).await?.header.revision;
            }
        }
        if t == TXNS / 10 - 1 {
            filled = resident_bytes()?;
        }
    }
    let grown = resident_bytes()?.saturating_sub(filled);
    assert!(grown < 16 << 20, "with a watcher not read, the process grew by {} MB more", grown >> 20);

    // Now read: every event exactly once, in order, across the pauses.
    let mut expected = (last - TXNS as i64 + 1, 0usize); // (revision, key index)
    let mut seen = 0;
    while seen < TXNS * PER_TXN {
        for e in next(&mut paused).await?.events {
            assert_eq!((e.kv.mod_revision, e.kv.key_str().into_owned()), (expected.0, format!("s/{:03}", expected.1)));
            seen += 1;
            expected = if expected.1 + 1 == PER_TXN { (expected.0 + 1, 0) } else { (expected.0, expected.1 + 1) };
        }
    }
    assert_eq!(expected.0, last + 1);
    Ok(())
}
