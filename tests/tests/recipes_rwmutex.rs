//! The RwMutex against real etcd: etcd's `TestRWMutex*`, ported by name, and the faults of the
//! reference it fixes (etcd #16221: a waiter whose session expired).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use etcd_recipes::{Error, LockGuard, RwMutex, Session};
use etcd_tests::{Steps, eventually, single, three, wait_for_watchers, watchers};
use etcd_wire::{Client, ClientOptions, GetOptions};

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Keys under `prefix`, as strings, oldest first.
async fn keys(c: &Client, prefix: &str) -> Result<Vec<String>> {
    let opts = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(etcd_wire::SortTarget::Create, etcd_wire::SortOrder::Ascend);
    let r = c.get(prefix.to_owned(), opts).await?;
    Ok(r.kvs.iter().map(|kv| kv.key_str().into_owned()).collect())
}

/// Waits until `n` keys are queued under `prefix`.
async fn queued(c: &Client, prefix: &str, n: usize) -> Result<()> {
    eventually(Duration::from_secs(10), &format!("{n} keys under {prefix}"), || async {
        (keys(c, prefix).await.ok()?.len() == n).then_some(())
    })
    .await
}

/// `waiters` sessions take the lock, readers and writers mixed; every holder checks that no
/// writer overlaps anyone.
async fn rw_mutex_round(clients: Vec<Client>, waiters: usize) -> Result<()> {
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let client = clients[i % clients.len()].clone();
        let (readers, writers) = (readers.clone(), writers.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let rw = RwMutex::new(&session, "test-rwmutex")?;
            if i % 3 == 0 {
                let guard = rw.write_lock().await?;
                assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0, "two writers at once");
                assert_eq!(readers.load(Ordering::SeqCst), 0, "a reader did not wait for the writer");
                tokio::time::sleep(Duration::from_millis(30)).await;
                writers.fetch_sub(1, Ordering::SeqCst);
                guard.unlock().await?;
            } else {
                let guard = rw.read_lock().await?;
                readers.fetch_add(1, Ordering::SeqCst);
                assert_eq!(writers.load(Ordering::SeqCst), 0, "a writer did not wait for the reader");
                tokio::time::sleep(Duration::from_millis(30)).await;
                readers.fetch_sub(1, Ordering::SeqCst);
                guard.unlock().await?;
            }
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await???;
    }
    assert!(keys(&clients[0], "test-rwmutex/").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rw_mutex_single_node() -> Result<()> {
    let etcd = single()?;
    rw_mutex_round(vec![connect(&etcd.endpoints()).await?], 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rw_mutex_multi_node() -> Result<()> {
    let etcd = three()?;
    let mut clients = Vec::new();
    for ep in etcd.endpoints() {
        clients.push(connect(&[ep]).await?);
    }
    rw_mutex_round(clients, 5).await
}

/// Readers share the lock; a writer waits for them, and readers queued after the writer wait
/// for it: the order is the queue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwmutex_readers_share_and_writers_queue() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(Session::new(&c).await?);
    }
    let read = |i: usize| RwMutex::new(&sessions[i], "rw-order");
    let r0 = read(0)?.read_lock().await?;
    let r1 = tokio::time::timeout(Duration::from_secs(5), read(1)?.read_lock()).await??;
    let r2 = tokio::time::timeout(Duration::from_secs(5), read(2)?.read_lock()).await??;
    let (writer_steps, tracer) = Steps::new();
    let w = read(3)?.with_tracer(tracer);
    let watching = watchers(&etcd.endpoints())?;
    let writer = tokio::spawn(async move { w.write_lock().await });
    queued(&c, "rw-order/", 4).await?;
    let (reader_steps, tracer) = Steps::new();
    let r = read(4)?.with_tracer(tracer);
    let late_reader = tokio::spawn(async move { r.read_lock().await });
    queued(&c, "rw-order/", 5).await?;

    // Both wait on their watches: the writer on the two newest readers ahead of it, the late
    // reader on the writer (what they watch is what can move them up; no sleep can show that).
    wait_for_watchers(&etcd.endpoints(), watching + 3.0).await?;
    assert!(!writer.is_finished() && !late_reader.is_finished());
    let key_of = |g: &LockGuard| String::from_utf8_lossy(g.key()).into_owned();
    let watched = writer_steps.watched();
    assert!(
        watched.contains(&key_of(&r2)) && watched.contains(&key_of(&r1)) && !watched.contains(&key_of(&r0)),
        "the writer waits on the two newest readers ahead of it, not the first: {watched:?}"
    );
    r0.unlock().await?;
    r1.unlock().await?;
    assert!(!writer.is_finished(), "the writer must wait for every reader ahead of it");
    r2.unlock().await?;
    let wg = tokio::time::timeout(Duration::from_secs(10), writer).await???;
    let watched = reader_steps.watched();
    assert!(watched.contains(&key_of(&wg)), "the late reader waits on the writer: {watched:?}");
    assert!(!late_reader.is_finished(), "a reader queued behind a writer must wait for it");
    wg.unlock().await?;
    let rg = tokio::time::timeout(Duration::from_secs(10), late_reader).await???;
    assert!(rg.fencing_token() > 0);
    rg.unlock().await?;
    assert!(keys(&c, "rw-order/").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn rwmutex_try_locks() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let reader = RwMutex::new(&s1, "rw-try")?.try_read_lock().await?;
    let other = RwMutex::new(&s2, "rw-try")?;
    let shared = other.try_read_lock().await?;
    let r = other.try_write_lock().await;
    assert!(matches!(r, Err(Error::Locked)), "{r:?}");
    assert_eq!(keys(&c, "rw-try/").await?.len(), 2, "a failed try leaves no key");
    reader.unlock().await?;
    shared.unlock().await?;
    let writer = other.try_write_lock().await?;
    let r = RwMutex::new(&s1, "rw-try")?.try_read_lock().await;
    assert!(matches!(r, Err(Error::Locked)), "{r:?}");
    assert_eq!(keys(&c, "rw-try/").await?, [String::from_utf8_lossy(writer.key()).into_owned()]);
    writer.unlock().await?;
    assert!(matches!(RwMutex::new(&s1, ""), Err(Error::InvalidArgument(_))));
    Ok(())
}

/// etcd #16221, as the brief of this crate states it: a writer waits behind a reader, a second
/// reader waits behind the writer, and the writer's session ends while it waits. The writer fails
/// with `SessionExpired`; the second reader gets the lock (alongside the first) instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwmutex_expired_waiter() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, sw, s2) = (Session::new(&c).await?, Session::new(&c).await?, Session::new(&c).await?);
    let first = RwMutex::new(&s1, "rw-expired")?.read_lock().await?;
    let w = RwMutex::new(&sw, "rw-expired")?;
    let watching = watchers(&etcd.endpoints())?;
    let writer = tokio::spawn(async move { w.write_lock().await });
    queued(&c, "rw-expired/", 2).await?;
    let r = RwMutex::new(&s2, "rw-expired")?;
    let second = tokio::spawn(async move { r.read_lock().await });
    queued(&c, "rw-expired/", 3).await?;
    // The writer and the second reader both wait on their watches.
    wait_for_watchers(&etcd.endpoints(), watching + 2.0).await?;
    assert!(!second.is_finished(), "the second reader waits behind the writer");

    sw.close().await?;
    let w = tokio::time::timeout(Duration::from_secs(10), writer).await??;
    assert!(matches!(w, Err(Error::SessionExpired)), "{w:?}");
    let g2 = tokio::time::timeout(Duration::from_secs(10), second).await???;
    // Both readers hold the lock now.
    assert_eq!(keys(&c, "rw-expired/").await?.len(), 2);
    g2.unlock().await?;
    first.unlock().await?;
    Ok(())
}

/// etcd #16221, the issue's own scenario: W1 holds the write lock, W2 and W3 queue behind it, and
/// W2's lease is revoked. Go's W2 then "gets" the lock once W1 unlocks, alongside W3. Here W2 fails
/// at once, and W3 still waits for W1, then gets the lock alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_16221_expired_writer_never_gets_the_lock() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2, s3) = (Session::new(&c).await?, Session::new(&c).await?, Session::new(&c).await?);
    let w1 = RwMutex::new(&s1, "f16221")?.write_lock().await?;
    let m2 = RwMutex::new(&s2, "f16221")?;
    let w2 = tokio::spawn(async move { m2.write_lock().await });
    queued(&c, "f16221/", 2).await?;
    let (steps, tracer) = Steps::new();
    let m3 = RwMutex::new(&s3, "f16221")?.with_tracer(tracer);
    let w3 = tokio::spawn(async move { m3.write_lock().await });
    queued(&c, "f16221/", 3).await?;

    let w1_key = String::from_utf8_lossy(w1.key()).into_owned();
    c.lease_revoke(s2.lease_id()).await?;
    let r2 = tokio::time::timeout(Duration::from_secs(10), w2).await??;
    assert!(matches!(r2, Err(Error::SessionExpired)), "{r2:?}");
    // W3 saw W2's key go and waits again, on W1's.
    steps.wait_watching(&w1_key).await?;
    assert!(!w3.is_finished(), "W3 must still wait for W1, which holds the lock");

    w1.unlock().await?;
    let g3: LockGuard = tokio::time::timeout(Duration::from_secs(10), w3).await???;
    assert_eq!(keys(&c, "f16221/").await?, [String::from_utf8_lossy(g3.key()).into_owned()]);
    g3.unlock().await?;
    Ok(())
}

/// A dropped (cancelled) read or write lock future removes its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwmutex_cancelled_lock_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let held = RwMutex::new(&s1, "rw-cancel")?.write_lock().await?;
    let rw = RwMutex::new(&s2, "rw-cancel")?;
    assert!(tokio::time::timeout(Duration::from_millis(500), rw.read_lock()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(500), rw.write_lock()).await.is_err());
    let only_holder = [String::from_utf8_lossy(held.key()).into_owned()];
    eventually(Duration::from_secs(5), "the abandoned waiter keys to go", || async {
        (keys(&c, "rw-cancel/").await.ok()? == only_holder).then_some(())
    })
    .await?;
    held.unlock().await?;
    Ok(())
}
