//! The Mutex against real etcd: etcd's own acceptance cases, ported by name, and one test for
//! each fault of the reference implementation this crate fixes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use etcd_recipes::{Error, Mutex, Session};
use etcd_tests::{Steps, eventually, single, three, wait_for_watchers, watchers};
use etcd_wire::{Client, ClientOptions, DeleteOptions, GetOptions, PutOptions, TxnOp};

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Keys under `prefix`, as strings.
/// A session's key under `prefix` (`<prefix><lease in hex>`, the Mutex's naming).
fn lease_key(prefix: &str, session: &Session) -> String {
    format!("{prefix}{:x}", session.lease_id())
}

async fn keys(c: &Client, prefix: &str) -> Result<Vec<String>> {
    let r = c.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?;
    Ok(r.kvs.iter().map(|kv| kv.key_str().into_owned()).collect())
}

/// `waiters` sessions lock one mutex; each holder checks it is alone, then unlocks.
async fn mutex_lock_round(clients: Vec<Client>, waiters: usize) -> Result<()> {
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..waiters {
        let (client, holders) = (clients[i % clients.len()].clone(), holders.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let guard = Mutex::new(&session, "test-mutex")?.lock().await?;
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
            tokio::time::sleep(Duration::from_millis(20)).await;
            holders.fetch_sub(1, Ordering::SeqCst);
            guard.unlock().await?;
            session.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await???;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_lock_single_node() -> Result<()> {
    let etcd = single()?;
    mutex_lock_round(vec![connect(&etcd.endpoints()).await?], 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_lock_multi_node() -> Result<()> {
    let etcd = three()?;
    let mut clients = Vec::new();
    for ep in etcd.endpoints() {
        clients.push(connect(&[ep]).await?);
    }
    mutex_lock_round(clients, 5).await
}

async fn mutex_try_lock_round(clients: Vec<Client>, lockers: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for i in 0..lockers {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let got = Mutex::new(&session, "test-mutex-try-lock")?.try_lock().await;
            anyhow::Ok((session, got))
        }));
    }
    let mut held = 0;
    let mut sessions = Vec::new();
    for t in tasks {
        let (session, got) = t.await??;
        match got {
            Ok(guard) => {
                held += 1;
                sessions.push((session, Some(guard)));
            }
            Err(Error::Locked) => sessions.push((session, None)),
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(held, 1, "exactly one try_lock wins");
    // The losers left no key behind: only the holder's remains.
    assert_eq!(keys(&clients[0], "test-mutex-try-lock/").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_try_lock_single_node() -> Result<()> {
    let etcd = three()?;
    mutex_try_lock_round(vec![connect(&etcd.endpoints()[..1]).await?], 5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_try_lock_multi_node() -> Result<()> {
    let etcd = three()?;
    let mut clients = Vec::new();
    for ep in etcd.endpoints() {
        clients.push(connect(&[ep]).await?);
    }
    mutex_try_lock_round(clients, 5).await
}

#[tokio::test]
async fn test_mutex_session_relock() -> Result<()> {
    // Go's TestMutexSessionRelock expects a second Lock() of the same session to return at once
    // with the same key: two holders of one lock. Here a lock is held by a (session, name) pair,
    // so the second lock of the same session waits for the first guard like anyone else.
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let session = Session::new(&c).await?;
    let first = Mutex::new(&session, "test-mutex")?.lock().await?;
    let again = Mutex::new(&session, "test-mutex")?;
    assert!(matches!(again.try_lock().await, Err(Error::Locked)), "a second holder in the same session");
    let token = first.fencing_token();
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), again.lock()).await??;
    assert_eq!(keys(&c, "test-mutex/").await?, vec![String::from_utf8_lossy(second.key()).into_owned()]);
    assert!(second.fencing_token() > token, "a new acquisition, not the first one's key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_waits_on_current_holder() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let first = Session::new(&c).await?;
    let owner = Mutex::new(&first, "test-mutex")?.lock().await?;

    let victim = Session::new(&c).await?;
    let victim_lock = Mutex::new(&victim, "test-mutex")?;
    let victim_task = tokio::spawn(async move { victim_lock.lock().await });
    etcd_tests::eventually(Duration::from_secs(5), "the victim to queue", || async {
        (keys(&c, "test-mutex/").await.ok()?.len() == 2).then_some(())
    })
    .await?;

    let newcomer = Session::new(&c).await?;
    let (steps, tracer) = Steps::new();
    let new_lock = Mutex::new(&newcomer, "test-mutex")?.with_tracer(tracer);
    let new_task = tokio::spawn(async move { new_lock.lock().await });
    etcd_tests::eventually(Duration::from_secs(5), "the new owner to queue", || async {
        (keys(&c, "test-mutex/").await.ok()?.len() == 3).then_some(())
    })
    .await?;

    // The waiter just before the newcomer goes away while the first owner still holds the lock:
    // the newcomer sees the deletion and waits again, now on the owner's key.
    let owner_key = lease_key("test-mutex/", &first);
    victim.close().await?;
    steps.wait_watching(&owner_key).await?;
    assert!(!new_task.is_finished(), "new owner obtained the lock before the first owner unlocked");

    owner.unlock().await?;
    let guard = tokio::time::timeout(Duration::from_secs(5), new_task).await???;
    let victim_result = tokio::time::timeout(Duration::from_secs(5), victim_task).await??;
    assert!(matches!(victim_result, Err(Error::SessionExpired)), "{victim_result:?}");
    guard.unlock().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mutex_lock_session_expired() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s1 = Session::new(&c).await?;
    let s2 = Session::new(&c).await?;
    let g1 = Mutex::new(&s1, "/my-lock/")?.lock().await?;
    let m2 = Mutex::new(&s2, "/my-lock/")?;
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { m2.lock().await });
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;

    // Close s2 while it waits, then release s1's lock: s2's lock must fail, not succeed.
    s2.close().await?;
    g1.unlock().await?;
    let r = tokio::time::timeout(Duration::from_secs(5), waiter).await??;
    assert!(matches!(r, Err(Error::SessionExpired)), "expected SessionExpired, got {r:?}");
    assert!(keys(&c, "/my-lock/").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn test_mutex_unlock() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    let m = Mutex::new(&s, "test-mutex-unlock")?;
    let g = m.lock().await?;
    assert_eq!(keys(&c, "test-mutex-unlock/").await?, [String::from_utf8_lossy(g.key())]);
    g.unlock().await?;
    assert!(keys(&c, "test-mutex-unlock/").await?.is_empty(), "unlock deletes the key");
    // And the next lock gets a new, larger fencing token.
    let first = m.lock().await?;
    let token = first.fencing_token();
    first.unlock().await?;
    assert!(m.lock().await?.fencing_token() > token);
    Ok(())
}

#[tokio::test]
async fn mutex_rejects_empty_names() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    assert!(matches!(Mutex::new(&s, ""), Err(Error::InvalidArgument(_))));
    assert!(matches!(Session::builder(&c).ttl(0).build().await, Err(Error::InvalidArgument(_))));
    assert!(matches!(Session::builder(&c).ttl(-5).build().await, Err(Error::InvalidArgument(_))));
    Ok(())
}

// ---- The reference's known faults, one test each. ----

/// etcd #19597: a waiter whose session expires while it waits fails promptly with
/// `SessionExpired`, while the holder still holds the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_19597_waiter_with_expired_session_fails_promptly() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let holder = Session::new(&c).await?;
    let _held = Mutex::new(&holder, "f19597")?.lock().await?;
    let waiter = Session::new(&c).await?;
    let m = Mutex::new(&waiter, "f19597")?;
    let watching = watchers(&etcd.endpoints())?;
    let task = tokio::spawn(async move { m.lock().await });
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    // The waiter's lease is revoked by someone else (as if it expired): it must give up now,
    // not when the holder releases.
    c.lease_revoke(waiter.lease_id()).await?;
    let r = tokio::time::timeout(Duration::from_secs(10), task).await??;
    assert!(matches!(r, Err(Error::SessionExpired)), "{r:?}");
    Ok(())
}

/// etcd #9921 / #11456: `lock()` never returns Ok once the session's lease has expired.
#[tokio::test]
async fn fault_9921_lock_fails_once_the_lease_is_gone() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let s = Session::new(&c).await?;
    c.lease_revoke(s.lease_id()).await?;
    // Right after the revoke the session has not yet heard of it (keep-alives run every TTL/3).
    let r = Mutex::new(&s, "f9921")?.lock().await;
    assert!(matches!(r, Err(Error::SessionExpired)), "{r:?}");
    assert!(keys(&c, "f9921/").await?.is_empty());
    Ok(())
}

/// etcd #22082: unlock is fenced by the key's create revision, so a stale or retried unlock
/// never deletes a newer holder's key (here: the same lease re-creating the same key).
#[tokio::test]
async fn fault_22082_stale_unlock_never_deletes_a_newer_holders_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let a = Session::new(&c).await?;
    let b = Session::builder(&c).lease(a.lease_id()).build().await?;
    let stale = Mutex::new(&a, "f22082")?.lock().await?;
    // The key disappears (an operator, a compaction of sessions...) and is re-created by a
    // new acquisition under the same name.
    c.delete(stale.key().clone(), DeleteOptions::new()).await?;
    let newer = Mutex::new(&b, "f22082")?.lock().await?;
    assert_eq!(stale.key(), newer.key());
    assert!(newer.fencing_token() > stale.fencing_token());

    let r = stale.unlock().await;
    assert!(matches!(r, Err(Error::NotOwner(_))), "{r:?}");
    assert_eq!(keys(&c, "f22082/").await?.len(), 1, "the newer holder's key survives");
    // And the stale holder's fenced writes are refused while the new one's land.
    let write = |g: &etcd_recipes::LockGuard| g.txn().and_then([TxnOp::put("f22082-data", "x", PutOptions::new())]);
    assert!(c.txn(write(&newer)).await?.succeeded);
    Ok(())
}

/// A dropped (cancelled) `lock()` future removes its waiter key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cancelled_lock_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let holder = Session::new(&c).await?;
    let held = Mutex::new(&holder, "fcancel")?.lock().await?;
    let waiter = Session::new(&c).await?;
    let m = Mutex::new(&waiter, "fcancel")?;
    let r = tokio::time::timeout(Duration::from_millis(500), m.lock()).await;
    assert!(r.is_err(), "the lock is held, so the wait times out");
    etcd_tests::eventually(Duration::from_secs(5), "the abandoned waiter key to go", || async {
        (keys(&c, "fcancel/").await.ok()? == [String::from_utf8_lossy(held.key()).into_owned()]).then_some(())
    })
    .await?;
    Ok(())
}

/// A failed `try_lock()` leaves no key behind.
#[tokio::test]
async fn fault_failed_try_lock_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let held = Mutex::new(&s1, "ftry")?.lock().await?;
    let r = Mutex::new(&s2, "ftry")?.try_lock().await;
    assert!(matches!(r, Err(Error::Locked)), "{r:?}");
    assert_eq!(r.err().map(|e| e.to_string()).as_deref(), Some("mutex: Locked by another session"));
    assert_eq!(keys(&c, "ftry/").await?, [String::from_utf8_lossy(held.key()).into_owned()]);
    Ok(())
}

/// Compaction while a waiter waits: no hang, no spurious error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_compaction_while_waiting() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let (s1, s2) = (Session::new(&c).await?, Session::new(&c).await?);
    let held = Mutex::new(&s1, "fcompact")?.lock().await?;
    let m = Mutex::new(&s2, "fcompact")?;
    let watching = watchers(&etcd.endpoints())?;
    let waiter = tokio::spawn(async move { m.lock().await });
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    let mut rev = 0;
    for i in 0..50 {
        rev = c.put("noise", i.to_string(), PutOptions::new()).await?.header.revision;
    }
    c.compact(rev, true).await?;
    held.unlock().await?;
    let guard = tokio::time::timeout(Duration::from_secs(10), waiter).await???;
    guard.unlock().await?;
    Ok(())
}

/// A waiter on a busy cluster (the store revision moving all the time) reads only to join and
/// (at most once) to close its watch's gap while it waits: the hedge against a late watch is a twin watch, not reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_a_busy_cluster_reads_a_bounded_number_of_times() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let holder = Session::new(&c).await?;
    let guard = Mutex::new(&holder, "busy")?.lock().await?;
    // Writes elsewhere, all along, so every read sees a revision newer than the waiter's watch.
    let (writes, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let writer = {
        let (c, writes, stop) = (c.clone(), Arc::clone(&writes), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                c.put("elsewhere", "x", PutOptions::new()).await?;
                writes.fetch_add(1, Ordering::SeqCst);
            }
            anyhow::Ok(())
        })
    };
    let waiter = Session::new(&c).await?;
    let (steps, tracer) = Steps::new();
    let m = Mutex::new(&waiter, "busy")?.with_tracer(tracer);
    let waiting = tokio::spawn(async move { m.lock().await.map(drop) });
    eventually(Duration::from_secs(20), "the waiter in line, watching", || async {
        (keys(&c, "busy/").await.ok()?.len() == 2 && !steps.watched().is_empty()).then_some(())
    })
    .await?;
    let from = writes.load(Ordering::SeqCst);
    eventually(Duration::from_secs(60), "300 more writes while the waiter waits", || async {
        (writes.load(Ordering::SeqCst) >= from + 300).then_some(())
    })
    .await?;
    let during = steps.rpcs();
    stop.store(true, Ordering::SeqCst);
    writer.await??;
    guard.unlock().await?;
    waiting.await??;
    // Join, and at most the read that closes the watch's gap (none when nothing was written
    // between the join and the watch).
    ensure!(during <= 2, "{during} RPCs while waiting behind one holder");
    Ok(())
}

/// On a quiet cluster nothing is written between a waiter's join and its watches, so the watches
/// start right after the join's revision and the waiter needs no read to close a gap: its join
/// is the only RPC until the holder leaves, and the release alone puts it in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_a_quiet_holder_makes_one_rpc_until_the_release() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let holder = Session::new(&c).await?;
    let guard = Mutex::new(&holder, "quiet")?.lock().await?;
    let waiter = Session::new(&c).await?;
    let (steps, tracer) = Steps::new();
    let m = Mutex::new(&waiter, "quiet")?.with_tracer(tracer);
    let waiting = tokio::spawn(async move { m.lock().await });
    eventually(Duration::from_secs(20), "the waiter watching", || async { (steps.watched().len() >= 3).then_some(()) })
        .await?;
    let before_release = steps.rpcs();
    guard.unlock().await?;
    let g = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
    ensure!(before_release == 1, "{before_release} RPCs before the release (the join only)");
    ensure!(steps.rpcs() == 1, "the release put the waiter in front without a read");
    g.unlock().await?;
    Ok(())
}

/// A waiter's watches and its reads can be served by different members, and a member that has not
/// yet applied our join reports from before it: the delete of our key's previous incarnation (our
/// own last unlock) is not our key going. Lock cycles on a 3-member cluster, each contender on a
/// client of its own over every member, never fail with `SessionExpired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_cycles_across_members_never_take_an_old_delete_for_our_key() -> Result<()> {
    let etcd = three()?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let c = connect(&etcd.endpoints()).await?;
        tasks.spawn(async move {
            let session = Session::new(&c).await?;
            let m = Mutex::new(&session, "cycles")?;
            for _ in 0..300 {
                m.lock().await?.unlock().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
