//! Resuming a lock after a restart (`Session::resume`, `Mutex::resume`), against real etcd: a
//! worker process holds the lock, prints its resume token and is SIGKILLed; this process (a new
//! client, as a restarted worker would be) takes the lock back before the TTL, with the same
//! fencing token, while a waiter stays blocked; or it learns precisely why it cannot: the lease
//! expired, the key was deleted, created again, or moved to another lease. A resume never joins
//! the line and never writes a key.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::ClientProcess;
use etcd_recipes::{Error, Mutex, ResumeToken, Session, Unresumable};
use etcd_tests::{Steps, eventually, single};
use etcd_wire::{Client, ClientOptions, DeleteOptions, GetOptions, PutOptions, TxnOp};

const WORKER: &str = env!("CARGO_BIN_EXE_lock_worker");

async fn connect(endpoints: &[String]) -> Result<Client> {
    Ok(Client::connect(endpoints, ClientOptions::default()).await?)
}

/// A worker process holding the Mutex `name` on a session of `ttl` seconds, and the resume token
/// it printed.
async fn holder(endpoints: &[String], name: &str, ttl: i64) -> Result<(ClientProcess, ResumeToken)> {
    let mut cmd = std::process::Command::new(WORKER);
    cmd.args(["hold", "mutex", &endpoints.join(","), name, "1", &ttl.to_string()]);
    let worker = ClientProcess::spawn(format!("holder-{name}"), cmd)?;
    let line = eventually(Duration::from_secs(30), "the holder to print its token", || async {
        worker.lines().into_iter().map(|(_, l)| l).find(|l| l.starts_with("locked "))
    })
    .await?;
    let token = line.split_whitespace().nth(3).with_context(|| format!("unexpected holder output {line:?}"))?;
    Ok((worker, token.parse()?))
}

/// The lease's remaining TTL as the server sees it (-1 once it is gone).
async fn remaining(client: &Client, lease: i64) -> Result<i64> {
    Ok(client.lease_time_to_live(lease, false).await?.ttl)
}

/// Keys under `prefix`, with their create revision and lease.
async fn keys(client: &Client, prefix: &str) -> Result<Vec<(String, i64, i64)>> {
    let got = client.get(prefix.to_owned(), GetOptions::new().with_prefix()).await?;
    Ok(got.kvs.iter().map(|kv| (kv.key_str().into_owned(), kv.create_revision, kv.lease)).collect())
}

/// The holder is SIGKILLed; a new client resumes its lease and lock before the TTL. The guard is
/// the original (same key, same fencing token, fenced writes land), the lease is kept alive by the
/// new process (its TTL goes back up after the kill), and a waiter queued behind the dead holder
/// stays blocked until the resumed guard unlocks; then it gets a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_holder_resumes_its_lock_while_a_waiter_stays_blocked() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    // Generous, so a loaded machine resumes well within it; no step waits for it to run out.
    let (worker, token) = holder(&etcd.endpoints(), "resume", 15).await?;

    let waiter_session = Session::new(&client).await?;
    let (steps, tracer) = Steps::new();
    let waiter = Mutex::new(&waiter_session, "resume")?.with_tracer(tracer);
    let waiting = tokio::spawn(async move { waiter.lock().await });
    steps.wait_watching(&String::from_utf8_lossy(token.key())).await?;

    worker.kill()?;
    let after_kill = remaining(&client, token.lease_id()).await?;
    ensure!(after_kill > 0, "the lease expired at once: {after_kill}");

    let restarted = connect(&etcd.endpoints()).await?;
    let session = Session::resume(&restarted, token.lease_id()).await?;
    let (resume_steps, tracer) = Steps::new();
    let mutex = Mutex::new(&session, "resume")?.with_tracer(tracer);
    let guard = mutex.resume(&token).await?;
    ensure!(resume_steps.rpcs() == 1 && resume_steps.watched().is_empty(), "a resume is one Txn and no wait");
    ensure!(guard.fencing_token() == token.fencing_token(), "a new fencing token: {}", guard.fencing_token());
    ensure!(guard.key() == token.key() && guard.resume_token() == token);
    // The line is as the dead holder left it: its key (unchanged) and the waiter's, nothing new.
    let line = keys(&client, "resume/").await?;
    ensure!(line.len() == 2 && line[0].1 == token.fencing_token() && line[0].2 == token.lease_id(), "{line:?}");
    // A second resume on the same session is a second holder: refused.
    ensure!(matches!(mutex.resume(&token).await, Err(Error::Locked)));

    // The new process keeps the lease alive: its TTL, read after the kill, goes back up.
    let lowest = AtomicI64::new(after_kill);
    eventually(Duration::from_secs(30), "a keep-alive from the resumed session", || async {
        let ttl = remaining(&client, token.lease_id()).await.ok()?;
        (ttl > lowest.fetch_min(ttl, Ordering::SeqCst)).then_some(())
    })
    .await?;
    let write = guard.txn().and_then([TxnOp::put("resume-state", "mine", PutOptions::new())]);
    ensure!(restarted.txn(write).await?.succeeded, "a fenced write of the resumed guard did not land");
    ensure!(!waiting.is_finished(), "the waiter got the lock while the resumed guard held it");

    guard.unlock().await?;
    let next = tokio::time::timeout(Duration::from_secs(30), waiting).await.context("the waiter never got in")???;
    ensure!(next.fencing_token() > token.fencing_token());
    next.unlock().await?;
    session.close().await?;
    waiter_session.close().await?;
    Ok(())
}

/// After the TTL the lease is gone, and so is the lock: resuming says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_ttl_fails_with_lease_expired() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let (worker, token) = holder(&etcd.endpoints(), "expire", 2).await?;
    worker.kill()?;
    eventually(Duration::from_secs(30), "the dead holder's lease to expire", || async {
        (remaining(&client, token.lease_id()).await.ok()? == -1).then_some(())
    })
    .await?;
    let resumed = Session::resume(&client, token.lease_id()).await;
    ensure!(matches!(resumed, Err(Error::NotResumable(Unresumable::LeaseExpired))), "{resumed:?}");
    ensure!(keys(&client, "expire/").await?.is_empty(), "a failed resume created a key");
    Ok(())
}

/// The lease is alive but the key is not the token's any more: each way says precisely why, and
/// the failed resume neither deletes nor creates anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_names_why_the_key_is_not_the_tokens() -> Result<()> {
    let etcd = single()?;
    let client = connect(&etcd.endpoints()).await?;
    let (worker, token) = holder(&etcd.endpoints(), "gone", 15).await?;
    worker.kill()?;
    let session = Session::resume(&client, token.lease_id()).await?;
    let mutex = Mutex::new(&session, "gone")?;
    let key = token.key().clone();

    // Rewritten by someone without a lease: the same incarnation, on no lease.
    client.put(key.clone(), "squatter", PutOptions::new()).await?;
    let got = mutex.resume(&token).await;
    ensure!(matches!(got, Err(Error::NotResumable(Unresumable::OtherLease { lease: 0 }))), "{got:?}");
    ensure!(keys(&client, "gone/").await? == [(String::from_utf8_lossy(&key).into_owned(), token.fencing_token(), 0)]);

    // Deleted by someone else.
    client.delete(key.clone(), DeleteOptions::new()).await?;
    let got = mutex.resume(&token).await;
    ensure!(matches!(got, Err(Error::NotResumable(Unresumable::KeyGone))), "{got:?}");
    ensure!(keys(&client, "gone/").await?.is_empty(), "a failed resume created a key");

    // Created again, even on our own lease: another incarnation, another fencing token.
    let put = client.put(key.clone(), "", PutOptions::new().with_lease(token.lease_id())).await?;
    let got = mutex.resume(&token).await;
    let again = put.header.revision;
    ensure!(
        matches!(got, Err(Error::NotResumable(Unresumable::KeyRecreated { create_revision })) if create_revision == again),
        "{got:?}"
    );

    // Tokens for another lease or another lock are refused before any RPC.
    let other = ResumeToken::new(token.lease_id() + 1, key.clone(), token.fencing_token())?;
    ensure!(matches!(mutex.resume(&other).await, Err(Error::InvalidArgument(_))));
    let elsewhere = ResumeToken::new(token.lease_id(), &b"elsewhere/1"[..], token.fencing_token())?;
    ensure!(matches!(mutex.resume(&elsewhere).await, Err(Error::InvalidArgument(_))));
    session.close().await?;
    Ok(())
}

/// Garbage is a typed parse error; a token's text reads back as the same token.
#[test]
fn a_garbage_token_fails_to_parse_with_a_typed_error() -> Result<()> {
    for garbage in ["", "lock please", "etcd-lock-v1:zz:1:6b", "etcd-lock-v1:1:1:6", "etcd-lock-v1:1:0:6b"] {
        let parsed = garbage.parse::<ResumeToken>();
        ensure!(matches!(parsed, Err(Error::InvalidResumeToken(_))), "{garbage:?}: {parsed:?}");
    }
    let token = ResumeToken::new(0x1234, &b"jobs/1234"[..], 7)?;
    ensure!(token.to_string().parse::<ResumeToken>()? == token);
    Ok(())
}
