//! STM against real etcd: etcd's `TestSTM*`, ported by name, and the isolation levels' differences.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use etcd_recipes::{Error, Isolation, StmOptions, stm, stm_with};
use etcd_tests::{single, three};
use etcd_wire::{Client, ClientOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use tokio::task::JoinSet;

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

fn number(v: Option<Bytes>) -> i64 {
    v.and_then(|v| String::from_utf8_lossy(&v).parse().ok()).unwrap_or(0)
}

async fn value(c: &Client, key: &str) -> Result<Option<Bytes>> {
    Ok(c.get(key.to_owned(), GetOptions::new()).await?.kvs.into_iter().next().map(|kv| kv.value))
}

/// Go's `TestSTMConflict`: concurrent transfers between keys, retried on conflict, keep the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stm_conflict() -> Result<()> {
    let etcd = three()?;
    let c = connect(&etcd.endpoints()).await?;
    let keys: Vec<String> = (0..5).map(|i| format!("foo-{i}")).collect();
    for k in &keys {
        c.put(k.clone(), "100", PutOptions::new()).await?;
    }
    let mut tasks = JoinSet::new();
    for (i, src) in keys.iter().cloned().enumerate() {
        let client = connect(&etcd.endpoints()[i % 3..=i % 3]).await?;
        let keys = keys.clone();
        tasks.spawn(async move {
            let mut attempt = 0;
            // Inside a spawned task the closure must be `async move` (see `stm`'s docs).
            stm(&client, Isolation::RepeatableReads, async move |tx| {
                attempt += 1;
                // A different destination on each attempt, never the source.
                let dst = keys[(i + attempt) % keys.len()].clone();
                let dst = if dst == src { keys[(i + 1) % keys.len()].clone() } else { dst };
                let (src_v, dst_v) = (number(tx.get(src.clone()).await?), number(tx.get(dst.clone()).await?));
                let xfer = src_v / 3;
                tx.put(src.clone(), (src_v - xfer).to_string());
                tx.put(dst, (dst_v + xfer).to_string());
                Ok::<_, Error>(())
            })
            .await
        });
    }
    while let Some(done) = tokio::time::timeout(Duration::from_secs(30), tasks.join_next()).await? {
        done??;
    }
    let mut sum = 0;
    for k in &keys {
        sum += number(value(&c, k).await?);
    }
    assert_eq!(sum, 500, "bad sum");
    Ok(())
}

/// Go's `TestSTMPutNewKey`: a put of a new key is visible after the commit.
#[tokio::test]
async fn test_stm_put_new_key() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    stm(&c, Isolation::RepeatableReads, async |tx| {
        tx.put("foo", "bar");
        Ok::<_, Error>(())
    })
    .await?;
    assert_eq!(value(&c, "foo").await?.as_deref(), Some(&b"bar"[..]));
    Ok(())
}

/// Go's `TestSTMAbort`: an aborted transaction writes nothing, and its error comes back as is.
#[tokio::test]
async fn test_stm_abort() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let r: Result<(), anyhow::Error> = stm(&c, Isolation::RepeatableReads, async |tx| {
        tx.put("foo", "baz");
        anyhow::bail!("changed my mind");
    })
    .await;
    assert_eq!(r.map_err(|e| e.to_string()), Err("changed my mind".to_owned()));
    assert_eq!(value(&c, "foo").await?, None);
    Ok(())
}

/// Go's `TestSTMSerialize`: a serializable transaction sees all keys at one revision, while
/// another client rewrites them all at once, repeatedly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stm_serialize() -> Result<()> {
    let etcd = three()?;
    let c = connect(&etcd.endpoints()).await?;
    let keys: Vec<String> = (0..5).map(|i| format!("foo-{i}")).collect();
    let mut tasks = JoinSet::new();
    for round in 0..5 {
        let puts = keys.iter().map(|k| TxnOp::put(k.clone(), round.to_string(), PutOptions::new()));
        c.txn(Txn::new().and_then(puts)).await?;
        let (client, keys) = (connect(&etcd.endpoints()[round % 3..=round % 3]).await?, keys.clone());
        tasks.spawn(async move {
            stm(&client, Isolation::Serializable, async move |tx| {
                let mut values = Vec::new();
                for k in &keys {
                    values.push(tx.get(k.clone()).await?);
                }
                anyhow::ensure!(values.iter().all(|v| *v == values[0]), "a torn read: {values:?}");
                Ok(())
            })
            .await
        });
    }
    while let Some(done) = tokio::time::timeout(Duration::from_secs(30), tasks.join_next()).await? {
        done??;
    }
    Ok(())
}

/// Go's `TestSTMApplyOnConcurrentDeletion`: a key read and then deleted by someone else fails the
/// commit's compare, and the transaction runs again.
#[tokio::test]
async fn test_stm_apply_on_concurrent_deletion() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    c.put("foo", "bar", PutOptions::new()).await?;
    let mut tries = 0;
    stm(&c, Isolation::RepeatableReads, async |tx| {
        tries += 1;
        tx.get("foo").await?;
        if tries == 1 {
            c.delete("foo", DeleteOptions::new()).await.map_err(Error::from)?;
        }
        tx.put("foo2", "bar2");
        Ok::<_, Error>(())
    })
    .await?;
    assert_eq!(tries, 2, "the transaction runs again after the conflict");
    assert_eq!(value(&c, "foo2").await?.as_deref(), Some(&b"bar2"[..]));
    Ok(())
}

/// Go's `TestSTMSerializableSnapshotPut`: writing a key whose mod revision is above the read key's
/// (but not above the first read's revision) is no conflict.
#[tokio::test]
async fn test_stm_serializable_snapshot_put() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    c.put("a", "0", PutOptions::new()).await?;
    let mut tries = 0;
    for _ in 0..2 {
        stm(&c, Isolation::SerializableSnapshot, async |tx| {
            tries += 1;
            anyhow::ensure!(tries <= 2, "too many retries");
            tx.get("a").await?;
            tx.put("b", "1");
            Ok(())
        })
        .await?;
    }
    let b = c.get("b", GetOptions::new()).await?;
    assert_eq!(b.kvs[0].version, 2, "bad version");
    Ok(())
}

/// A key written by another client after our first read: only `SerializableSnapshot` retries
/// (write-write conflict); `Serializable` and `ReadCommitted` commit on the first attempt.
#[tokio::test]
async fn stm_snapshot_detects_write_conflicts() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    c.put("a", "0", PutOptions::new()).await?;
    for (isolation, expected_tries) in
        [(Isolation::SerializableSnapshot, 2), (Isolation::Serializable, 1), (Isolation::ReadCommitted, 1)]
    {
        let mut tries = 0;
        stm(&c, isolation, async |tx| {
            tries += 1;
            tx.get("a").await?;
            if tries == 1 {
                c.put("b", "theirs", PutOptions::new()).await.map_err(Error::from)?;
            }
            tx.put("b", "ours");
            Ok::<_, Error>(())
        })
        .await?;
        assert_eq!(tries, expected_tries, "{isolation:?}");
        assert_eq!(value(&c, "b").await?.as_deref(), Some(&b"ours"[..]));
    }
    Ok(())
}

/// A transaction that always conflicts gives up after `max_attempts` with `TooManyConflicts`.
/// (Also: reads see the transaction's own writes and deletes; `rev` is the read mod revision;
/// prefetched keys are read before the closure runs.)
#[tokio::test]
async fn stm_gives_up_after_max_attempts() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd.endpoints()).await?;
    let rev = c.put("hot", "0", PutOptions::new()).await?.header.revision;
    let mut tries = 0;
    let options = StmOptions::new(Isolation::Serializable).max_attempts(3).prefetch(["hot"]);
    let r = stm_with(&c, options, async |tx| {
        tries += 1;
        if tries == 1 {
            assert_eq!(tx.rev("hot").await?, rev);
        }
        tx.put("mine", "1");
        assert_eq!(tx.get("mine").await?.as_deref(), Some(&b"1"[..]));
        tx.delete("mine");
        assert_eq!(tx.get("mine").await?, None);
        // Someone else writes the key we read, every time.
        c.put("hot", tries.to_string(), PutOptions::new()).await.map_err(Error::from)?;
        Ok::<_, Error>(())
    })
    .await;
    assert!(matches!(r, Err(Error::TooManyConflicts { attempts: 3 })), "{r:?}");
    assert_eq!(tries, 3);
    assert_eq!(value(&c, "mine").await?, None, "nothing was committed");
    Ok(())
}
