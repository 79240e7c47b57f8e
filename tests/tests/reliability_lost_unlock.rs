//! The lost-unlock fault (etcd-io/etcd#22082) and its twin, the lost join answer.
//!
//! The old holder talks to etcd through the harness's TCP proxy, which forwards requests at once
//! but holds etcd's answers back: its release (or its join Txn) is applied, its answer never comes,
//! and the client tries again. A new holder, through a direct client, takes the lock meanwhile
//! with **the same key name** (its session shares the old one's lease, as a process resuming its
//! lease would: the Mutex's key is `<name>/<lease>`). The test then waits until etcd has started
//! serving another write of the old holder (its retry, counted by etcd's own
//! `grpc_server_started_total`) and looks: the new holder's key must still be there, with the new
//! holder's create revision.
//!
//! The same check, run with [`broken::unfenced_unlock`] (a plain delete retried until answered,
//! like clients before the fix), sees the new holder's key deleted: it can fail.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::{EtcdCluster, TcpProxy};
use etcd_recipes::{Session, Strategy};
use etcd_tests::{broken, eventually, requests_started, single};
use etcd_wire::{Client, ClientOptions, GetOptions};

/// Answers are held back this long: past every timeout of the test.
const HELD: Duration = Duration::from_secs(120);

struct Rig {
    etcd: EtcdCluster,
    proxy: Arc<TcpProxy>,
    /// Through the proxy, giving up on a request after 1 s.
    slow: Client,
    direct: Client,
}

impl Rig {
    async fn start() -> Result<Rig> {
        let etcd = single()?;
        let proxy = Arc::new(TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?);
        let options = ClientOptions::default().with_request_timeout(Some(Duration::from_secs(1)));
        let slow = Client::connect([proxy.url()], options).await?;
        let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
        Ok(Rig { etcd, proxy, slow, direct })
    }

    /// Writes (Txn or DeleteRange) etcd has started serving so far.
    fn writes(&self) -> Result<f64> {
        requests_started(&self.etcd.endpoints()[0], &["Txn", "DeleteRange"])
    }

    /// Waits until etcd has started serving a write after `since` writes: the old holder's retry.
    async fn next_write(&self, since: f64) -> Result<()> {
        eventually(Duration::from_secs(60), "the old holder's retry to reach etcd", || async {
            (self.writes().ok()? > since).then_some(())
        })
        .await
    }

    /// Whether `key` exists with create revision `token`.
    async fn holds(&self, key: &[u8], token: i64) -> Result<bool> {
        let got = self.direct.get(key.to_vec(), GetOptions::new()).await?;
        Ok(got.kvs.first().is_some_and(|kv| kv.create_revision == token))
    }

    /// Waits until `key` is gone.
    async fn gone(&self, key: &[u8]) -> Result<()> {
        eventually(Duration::from_secs(30), "the old key to be deleted", || async {
            (self.direct.get(key.to_vec(), GetOptions::new()).await.ok()?.count == 0).then_some(())
        })
        .await
    }

    fn heal(&self) {
        self.proxy.set_reply_delay(Duration::ZERO);
        self.proxy.drop_connections();
    }
}

/// How the old holder lets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// The guard's `unlock()` (fenced by the key's create revision).
    Guard,
    /// [`broken::unfenced_unlock`].
    Unfenced,
}

/// The lost unlock: returns whether the new holder's key survived the old holder's retries.
async fn lost_unlock(strategy: Strategy, release: Release) -> Result<bool> {
    let rig = Rig::start().await?;
    let name = format!("lost-unlock-{}", strategy.name());
    let old_session = Session::builder(&rig.slow).ttl(120).build().await?;
    let new_session = Session::builder(&rig.direct).lease(old_session.lease_id()).build().await?;
    let old = strategy.new_lock(&old_session, &name)?.lock().await?;
    let key = old.key().clone();

    // The release is applied; its answer never comes; the client tries again.
    rig.proxy.set_reply_delay(HELD);
    let releasing = match release {
        Release::Guard => tokio::spawn(async move {
            let _ = old.unlock().await;
        }),
        Release::Unfenced => {
            let (client, k) = (rig.slow.clone(), String::from_utf8(key.to_vec())?);
            tokio::spawn(async move {
                broken::unfenced_unlock(&client, &k).await;
                drop(old);
            })
        }
    };
    rig.gone(&key).await?;

    // The new holder takes the lock, under the same key name.
    let new = strategy.new_lock(&new_session, &name)?.lock().await?;
    ensure!(new.key() == &key, "the new holder's key {:?} is not the old one's {key:?}", new.key());
    let since = rig.writes()?;
    rig.next_write(since).await?;
    let survived = rig.holds(&key, new.fencing_token()).await?;
    if survived {
        // And it still holds, as far as a fenced write can tell.
        let wrote = rig.direct.txn(new.txn().and_then([etcd_wire::TxnOp::put(
            format!("{name}-data"),
            "v",
            etcd_wire::PutOptions::new(),
        )]));
        ensure!(wrote.await?.succeeded, "the new holder's fenced write was refused");
    }

    rig.heal();
    releasing.abort();
    let _ = new.unlock().await;
    Ok(survived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_unlock_spares_the_next_holder_mutex() -> Result<()> {
    ensure!(lost_unlock(Strategy::Mutex, Release::Guard).await?, "the retried unlock deleted the new holder's key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_unlock_spares_the_next_holder_naive() -> Result<()> {
    ensure!(lost_unlock(Strategy::Naive, Release::Guard).await?, "the retried unlock deleted the new holder's key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_unlock_spares_the_next_holder_rpc() -> Result<()> {
    ensure!(lost_unlock(Strategy::Rpc, Release::Guard).await?, "the retried unlock deleted the new holder's key");
    Ok(())
}

/// The check can fail: an unlock that is a plain delete, retried, deletes the new holder's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_unlock_check_catches_an_unfenced_unlock() -> Result<()> {
    let survived = lost_unlock(Strategy::Mutex, Release::Unfenced).await?;
    ensure!(!survived, "the unfenced retry should have deleted the new holder's key");
    Ok(())
}

/// The lost join answer: the old contender's join Txn is applied, its answer never comes, its
/// `lock()` fails; the cleanup armed before the join removes its key (retried until answered)
/// and never the key of the holder that came next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_join_answer_spares_the_next_holder() -> Result<()> {
    for strategy in [Strategy::Mutex, Strategy::Naive] {
        let rig = Rig::start().await?;
        let name = format!("lost-join-{}", strategy.name());
        let old_session = Session::builder(&rig.slow).ttl(120).build().await?;
        let new_session = Session::builder(&rig.direct).ttl(120).build().await?;
        let keys = || async {
            let got = rig.direct.get(name.clone(), GetOptions::new().with_prefix()).await?;
            anyhow::Ok(got.kvs.len())
        };
        rig.proxy.set_reply_delay(HELD);
        let joined = strategy.new_lock(&old_session, &name)?.lock().await;
        ensure!(joined.is_err(), "{strategy:?}: the join's answer was held back, yet lock() returned");
        eventually(Duration::from_secs(30), "the abandoned join's key to be removed", || async {
            (keys().await.ok()? == 0).then_some(())
        })
        .await?;
        let new = strategy.new_lock(&new_session, &name)?.lock().await.context("the next holder")?;
        let since = rig.writes()?;
        rig.next_write(since).await?;
        ensure!(rig.holds(new.key(), new.fencing_token()).await?, "{strategy:?}: the next holder's key was deleted");
        rig.heal();
        let _ = new.unlock().await;
    }
    Ok(())
}
