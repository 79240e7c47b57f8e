//! Writes whose outcome is unknown are named: `Error::is_indeterminate()` says "it may have been
//! applied" exactly when the request left and no answer came, and the client never retries such a
//! write (the lesson of Jepsen's jetcd analysis). Real transport failures through the harness's
//! TCP proxy, observed on the server with a second, direct client.

use std::time::Duration;

use anyhow::{Result, ensure};
use etcd_harness::TcpProxy;
use etcd_tests::{eventually, single};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, PutOptions};

/// Long enough that no answer arrives during a test.
const NEVER: Duration = Duration::from_secs(120);

/// The number of times `key` was written (its version), read directly.
async fn version(direct: &Client, key: &str) -> Result<i64> {
    Ok(direct.get(key.to_owned(), GetOptions::new()).await?.kvs.first().map_or(0, |kv| kv.version))
}

/// The request reaches etcd and is applied; its answer never comes back, so the call times out.
/// The error says the write may have happened, and it happened exactly once (no retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indeterminate_write_when_the_answer_times_out() -> Result<()> {
    let etcd = single()?;
    let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let options = ClientOptions::default().with_request_timeout(Some(Duration::from_secs(1)));
    let slow = Client::connect([proxy.url()], options).await?;
    proxy.set_reply_delay(NEVER);
    let r = slow.put("timed-out", "v", PutOptions::new()).await;
    ensure!(matches!(r, Err(Error::Timeout { .. })), "put: {r:?}");
    ensure!(r.as_ref().is_err_and(Error::is_indeterminate), "a timed-out write must be indeterminate: {r:?}");
    ensure!(version(&direct, "timed-out").await? == 1, "the write was applied once");
    Ok(())
}

/// The connection is cut after etcd applied the write and before its answer arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indeterminate_write_when_the_connection_is_lost_mid_call() -> Result<()> {
    let etcd = single()?;
    let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let slow = Client::connect([proxy.url()], ClientOptions::default()).await?;
    proxy.set_reply_delay(NEVER);
    let put = tokio::spawn(async move { slow.put("cut", "v", PutOptions::new()).await });
    eventually(Duration::from_secs(20), "the write applied on the server", || async {
        (version(&direct, "cut").await.ok()? == 1).then_some(())
    })
    .await?;
    proxy.drop_connections();
    let r = tokio::time::timeout(Duration::from_secs(20), put).await??;
    ensure!(r.as_ref().is_err_and(Error::is_indeterminate), "a write cut mid-call must be indeterminate: {r:?}");
    ensure!(version(&direct, "cut").await? == 1, "the write must not be retried");
    Ok(())
}

/// A write that provably never left (nothing listens any more: connection refused) is not
/// indeterminate, and nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indeterminate_is_false_when_the_request_never_left() -> Result<()> {
    let etcd = single()?;
    let direct = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let proxy = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    let gone = Client::connect([proxy.url()], ClientOptions::default()).await?;
    drop(proxy);
    // Until the client has seen its connection close, a request could still be written into it:
    // wait for a read to fail with "connection refused".
    eventually(Duration::from_secs(20), "the client to see the endpoint refuse", || async {
        gone.get("never", GetOptions::new()).await.err().filter(|e| !e.is_indeterminate()).map(drop)
    })
    .await?;
    let r = gone.put("never", "v", PutOptions::new()).await;
    ensure!(r.as_ref().is_err_and(|e| e.is_unavailable() && !e.is_indeterminate()), "put: {r:?}");
    ensure!(version(&direct, "never").await? == 0, "nothing was written");
    Ok(())
}
