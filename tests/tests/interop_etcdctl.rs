//! Wire compatibility with Go's `concurrency` package: our Mutex and Election against the real
//! `etcdctl lock` / `etcdctl elect` of the harness's etcd release, on the same names.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_recipes::{Election, Error, Mutex, RpcLock, Session};
use etcd_tests::{single, wait_for_keys, wait_for_watchers, watchers};
use etcd_wire::{Client, ClientOptions};
use futures::StreamExt;

/// Spawns `etcdctl ARGS` and streams its stdout lines over a channel.
fn etcdctl(etcd: &etcd_harness::EtcdCluster, args: &[&str]) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = etcd.etcdctl().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

fn interrupt(child: &Child) -> Result<()> {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    ensure!(status.success(), "kill -INT failed");
    Ok(())
}

fn line(rx: &mpsc::Receiver<String>, within: Duration) -> Result<String> {
    Ok(rx.recv_timeout(within)?)
}

async fn connect(etcd: &etcd_harness::EtcdCluster) -> Result<Client> {
    Ok(Client::connect(etcd.endpoints(), ClientOptions::default()).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_excludes_our_mutex() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let (mut held, out) = etcdctl(&etcd, &["lock", "interop"])?;
    let key = line(&out, Duration::from_secs(10))?;
    assert!(key.starts_with("interop/"), "etcdctl printed {key:?}");

    let session = Session::new(&c).await?;
    let m = Mutex::new(&session, "interop")?;
    assert!(matches!(m.try_lock().await, Err(Error::Locked)));
    assert!(matches!(RpcLock::new(&session, "interop")?.try_lock().await, Err(Error::Locked)));
    let watching = watchers(&etcd.endpoints())?;
    let waiting = tokio::spawn(async move { m.lock().await });
    // Queued behind etcdctl's key and waiting on a watch.
    wait_for_keys(&c, "interop/", 2).await?;
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!waiting.is_finished(), "our Mutex took a lock etcdctl holds");

    interrupt(&held)?; // etcdctl unlocks on SIGINT
    let guard = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
    held.wait()?;
    guard.unlock().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_mutex_excludes_etcdctl_lock() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let session = Session::new(&c).await?;
    let guard = Mutex::new(&session, "interop")?.lock().await?;

    let (mut child, out) = etcdctl(&etcd, &["lock", "interop", "echo", "etcdctl-acquired"])?;
    assert!(out.recv_timeout(Duration::from_millis(1500)).is_err(), "etcdctl ran its command while we held the lock");
    guard.unlock().await?;
    assert_eq!(line(&out, Duration::from_secs(10))?, "etcdctl-acquired");
    assert!(child.wait()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_observes_our_campaign() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let session = Session::new(&c).await?;
    let leadership = Election::new(&session, "interop-elect")?.campaign("ours").await?;

    let (mut observer, out) = etcdctl(&etcd, &["elect", "-l", "interop-elect"])?;
    assert_eq!(line(&out, Duration::from_secs(10))?, String::from_utf8_lossy(leadership.key()));
    assert_eq!(line(&out, Duration::from_secs(5))?, "ours");
    leadership.proclaim("ours-v2").await?;
    line(&out, Duration::from_secs(5))?; // key again
    assert_eq!(line(&out, Duration::from_secs(5))?, "ours-v2");
    interrupt(&observer)?;
    observer.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_observe_sees_etcdctl_elect_and_waits_for_it() -> Result<()> {
    let etcd = single()?;
    let c = connect(&etcd).await?;
    let (mut candidate, out) = etcdctl(&etcd, &["elect", "interop-elect", "theirs"])?;
    let key = line(&out, Duration::from_secs(10))?;
    assert!(key.starts_with("interop-elect/"));

    let session = Session::new(&c).await?;
    let election = Election::new(&session, "interop-elect")?;
    let mut observed = Box::pin(election.observe());
    let first = tokio::time::timeout(Duration::from_secs(10), observed.next()).await?.context("ended")??;
    assert_eq!(first.value, "theirs");

    let ours = election.clone();
    let watching = watchers(&etcd.endpoints())?;
    let campaign = tokio::spawn(async move { ours.campaign("ours").await });
    wait_for_keys(&c, "interop-elect/", 2).await?;
    wait_for_watchers(&etcd.endpoints(), watching + 1.0).await?;
    assert!(!campaign.is_finished(), "two leaders at once");
    interrupt(&candidate)?; // etcdctl resigns on SIGINT
    tokio::time::timeout(Duration::from_secs(10), campaign).await???;
    let next = tokio::time::timeout(Duration::from_secs(10), observed.next()).await?.context("ended")??;
    assert_eq!(next.value, "ours");
    candidate.wait()?;
    Ok(())
}
