//! The MultiLock against real etcd: multi-locks over overlapping sets, named in opposite orders,
//! never deadlock and exclude each other name by name (checked on a recorded history per name);
//! a cancelled acquisition leaves no key; a failure part-way releases what was taken; the guard's
//! `txn()` refuses writes once any one key is gone; bad input is a typed error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_recipes::{Error, Lost, MultiLock, Mutex, Session};
use etcd_tests::history::{self, Record, Step};
use etcd_tests::lockset::{epoch_ms, now_ms};
use etcd_tests::{Steps, eventually, single};
use etcd_wire::{Client, ClientOptions, DeleteOptions, GetOptions, PutOptions, TxnOp};

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// Keys under `prefix`, as strings.
async fn keys(c: &Client, prefix: &str) -> Result<Vec<String>> {
    let r = c.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?;
    Ok(r.kvs.iter().map(|kv| kv.key_str().into_owned()).collect())
}

/// Keys under `prefix` bound to `lease`.
async fn keys_of(c: &Client, prefix: &str, lease: i64) -> Result<Vec<String>> {
    let r = c.get(prefix.to_owned(), GetOptions::new().with_prefix()).await?;
    Ok(r.kvs.iter().filter(|kv| kv.lease == lease).map(|kv| kv.key_str().into_owned()).collect())
}

/// Six tasks on three sessions (two tasks share each, so a session's multi-locks also meet on its
/// local slots) take multi-locks over overlapping sets, each set named in another order:
/// `[x, y, z]`, `[z, y]`, `[y, x]`. With no global order the first two would deadlock as soon as
/// one held x and y and the other z. All rounds finish within the bound, and each name's history
/// shows one holder at a time with growing tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_orders_never_deadlock_and_each_name_is_a_mutex() -> Result<()> {
    const TASKS: usize = 6;
    const ROUNDS: usize = 5;
    let sets: [&[&str]; 3] = [&["ml/x", "ml/y", "ml/z"], &["ml/z", "ml/y"], &["ml/y", "ml/x"]];
    let etcd = single()?;
    let records: Arc<StdMutex<BTreeMap<String, Vec<Record>>>> = Arc::default();
    let mut sessions = Vec::new();
    for _ in 0..TASKS / 2 {
        sessions.push(Session::builder(&connect(&etcd.endpoints()).await?).ttl(30).build().await?);
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (session, records) = (sessions[t / 2].clone(), records.clone());
        let names = sets[t % sets.len()];
        tasks.push(tokio::spawn(async move {
            let me = format!("t{t}");
            let record = |name: &str, step| {
                let mut all = records.lock().unwrap_or_else(|e| e.into_inner());
                all.entry(name.to_owned()).or_default().push(Record::new(&me, now_ms(), step));
            };
            let lock = MultiLock::new(&session, names)?;
            for _ in 0..ROUNDS {
                lock.names().iter().for_each(|n| record(n, Step::Invoke));
                let guard = lock.lock().await?;
                let until = epoch_ms(guard.valid_until());
                for (n, token) in lock.names().iter().zip(guard.fencing_tokens()) {
                    record(n, Step::Acquired { token, valid_until_ms: until });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let tokens = guard.fencing_tokens();
                lock.names().iter().zip(&tokens).for_each(|(n, &token)| record(n, Step::ReleaseInvoked { token }));
                guard.unlock().await?;
                lock.names().iter().zip(&tokens).for_each(|(n, &token)| record(n, Step::Released { token }));
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t).await.context("a multi-lock deadlocked")???;
    }
    let records = records.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (name, history) in &records {
        let report = history::check(history, 1);
        let takers = (0..TASKS).filter(|t| sets[t % sets.len()].contains(&name.as_str())).count();
        ensure!(report.is_valid(), "{name}: {report}");
        ensure!(report.claims.len() == takers * ROUNDS, "{name}: {report}");
    }
    ensure!(records.len() == 3, "names recorded: {:?}", records.keys());
    for s in sessions {
        s.close().await?;
    }
    Ok(())
}

/// A multi-lock waiting on its second name (the first already held) is dropped: both its held
/// key and its place in line go, and the blocker's key stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_multilock_leaves_no_key() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let blocker_session = Session::new(&client).await?;
    let blocker = Mutex::new(&blocker_session, "cx/b")?.lock().await?;
    let session = Session::new(&client).await?;
    let (steps, tracer) = Steps::new();
    let lock = MultiLock::new(&session, ["cx/c", "cx/b", "cx/a"])?.with_tracer(tracer);
    let task = tokio::spawn(async move { lock.lock().await });
    steps.wait_watching(&String::from_utf8_lossy(blocker.key())).await?;
    let ours = keys_of(&client, "cx/", session.lease_id()).await?;
    ensure!(ours.len() == 2, "holding cx/a and queued on cx/b: {ours:?}");

    task.abort();
    ensure!(task.await.is_err_and(|e| e.is_cancelled()), "the lock finished before it was dropped");
    eventually(Duration::from_secs(30), "the dropped multi-lock's keys to go", || async {
        keys_of(&client, "cx/", session.lease_id()).await.ok()?.is_empty().then_some(())
    })
    .await?;
    ensure!(keys(&client, "cx/").await? == [String::from_utf8_lossy(blocker.key()).into_owned()]);
    // Nothing of ours is left in the way: the session takes all three at once now.
    blocker.unlock().await?;
    let all = MultiLock::new(&session, ["cx/a", "cx/b", "cx/c"])?.lock().await?;
    all.unlock().await?;
    session.close().await?;
    blocker_session.close().await?;
    Ok(())
}

/// A failure part-way releases the names already held before the error returns: a plain key (no
/// lease) in the second name's line, and a session that ends while waiting on the second name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_part_way_releases_the_others() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let session = Session::new(&client).await?;
    client.put("fx/b/plain", "not a lock key", PutOptions::new()).await?;
    let got = MultiLock::new(&session, ["fx/a", "fx/b", "fx/c"])?.lock().await;
    ensure!(matches!(&got, Err(Error::ForeignKey { key }) if key == "fx/b/plain"), "{got:?}");
    ensure!(keys(&client, "fx/").await? == ["fx/b/plain"], "a part stayed: {:?}", keys(&client, "fx/").await?);

    // The session ends while the multi-lock holds gx/a and waits on gx/b.
    let blocker_session = Session::new(&client).await?;
    let blocker = Mutex::new(&blocker_session, "gx/b")?.lock().await?;
    let (steps, tracer) = Steps::new();
    let lock = MultiLock::new(&session, ["gx/a", "gx/b"])?.with_tracer(tracer);
    let task = tokio::spawn(async move { lock.lock().await });
    steps.wait_watching(&String::from_utf8_lossy(blocker.key())).await?;
    client.lease_revoke(session.lease_id()).await?;
    let got = tokio::time::timeout(Duration::from_secs(30), task).await??;
    ensure!(matches!(got, Err(Error::SessionExpired)), "{got:?}");
    ensure!(keys(&client, "gx/").await? == [String::from_utf8_lossy(blocker.key()).into_owned()]);
    blocker.unlock().await?;
    blocker_session.close().await?;
    Ok(())
}

/// The guard's `txn()` carries every key's create revision: once any one key is deleted, fenced
/// writes stop landing, `lost()` says so, and `unlock()` still releases the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_refuses_writes_after_any_one_key_is_deleted() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let session = Session::new(&client).await?;
    let guard = MultiLock::new(&session, ["tx/a", "tx/b", "tx/c"])?.lock().await?;
    ensure!(guard.txn().compares().len() == 3);
    let put = |v: &str| TxnOp::put("tx-state", v.to_owned(), PutOptions::new());
    ensure!(client.txn(guard.txn().and_then([put("held")])).await?.succeeded);

    let watching = guard.lost();
    client.delete(guard.keys()[1].clone(), DeleteOptions::new()).await?;
    ensure!(!client.txn(guard.txn().and_then([put("stale")])).await?.succeeded, "a stale write landed");
    let value = client.get("tx-state", GetOptions::new()).await?;
    ensure!(value.kvs[0].value_str() == "held");
    let lost = tokio::time::timeout(Duration::from_secs(20), watching).await?;
    ensure!(lost == Lost::KeyGone, "{lost:?}");

    let unlocked = guard.unlock().await;
    ensure!(matches!(unlocked, Err(Error::NotOwner(_))), "{unlocked:?}");
    ensure!(keys(&client, "tx/").await?.is_empty(), "the other parts stayed");
    session.close().await?;
    Ok(())
}

/// No name is a typed error; duplicates count once; the order is the prefixes' byte order
/// whatever order the names come in; `try_lock` on a partly held set fails and leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_duplicate_names() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let session = Session::new(&client).await?;
    ensure!(matches!(MultiLock::new(&session, Vec::<&str>::new()), Err(Error::InvalidArgument(_))));
    ensure!(matches!(MultiLock::new(&session, ["dx/a", ""]), Err(Error::InvalidArgument(_))));

    let lock = MultiLock::new(&session, ["dx/b", "dx/a/n", "dx/a", "dx/b"])?;
    ensure!(lock.names() == ["dx/a", "dx/a/n", "dx/b"], "{:?}", lock.names());
    let guard = lock.lock().await?;
    let tokens = guard.fencing_tokens();
    ensure!(tokens.len() == 3 && tokens.windows(2).all(|w| w[0] < w[1]), "taken in order: {tokens:?}");
    ensure!(keys(&client, "dx/").await?.len() == 3);
    let until = guard.valid_until().context("no deadline while held")?;
    ensure!(guard.guards().iter().all(|g| g.valid_until().is_some_and(|u| u >= until)));
    guard.unlock().await?;

    let other = Session::new(&client).await?;
    let holder = Mutex::new(&other, "dx/b")?.lock().await?;
    let tried = lock.try_lock().await;
    ensure!(matches!(tried, Err(Error::Locked)), "{tried:?}");
    ensure!(keys_of(&client, "dx/", session.lease_id()).await?.is_empty(), "try_lock left a key");
    holder.unlock().await?;
    other.close().await?;
    session.close().await?;
    Ok(())
}
