//! A lock that survives a restart: the holder persists its guard's resume token, "crashes" (here:
//! its client stops keeping the lease alive and its guard is leaked, so nothing is released), and
//! a new client takes the lock back from the token before the TTL, with the same fencing token,
//! without waiting in line. Once the lock is released, the same token is refused with the reason.
//! Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).

use etcd_recipes::etcd_wire::{Client, ClientOptions, PutOptions, TxnOp};
use etcd_recipes::{Error, Mutex, ResumeToken, Session, Unresumable};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());

    // The first run: take the lock and persist the token before doing any work under it.
    let saved = {
        let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
        let session = Session::builder(&client).ttl(10).build().await?;
        let guard = Mutex::new(&session, "examples/resume")?.lock().await?;
        let token = guard.resume_token().to_string();
        println!("holding with fencing token {}; persisted {token}", guard.fencing_token());
        // The crash: keep-alives stop and the guard is never released (a killed process does
        // neither). The lease now expires in at most 10 s unless someone resumes it.
        session.orphan();
        std::mem::forget(guard);
        token
    };

    // The restart: a new client, the token read back.
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    let token: ResumeToken = saved.parse()?;
    let session = Session::resume(&client, token.lease_id()).await?;
    let mutex = Mutex::new(&session, "examples/resume")?;
    let guard = mutex.resume(&token).await?;
    assert_eq!(guard.fencing_token(), token.fencing_token(), "the same acquisition, not a new one");
    let write = guard.txn().and_then([TxnOp::put("examples/resume-state", "resumed", PutOptions::new())]);
    assert!(client.txn(write).await?.succeeded, "the resumed guard fences writes like the original");
    println!("resumed with fencing token {}", guard.fencing_token());
    guard.unlock().await?;

    // Released: the token names a key that is gone, and resuming says so.
    match mutex.resume(&token).await {
        Err(Error::NotResumable(Unresumable::KeyGone)) => println!("after unlock: the lock is no longer the token's"),
        other => return Err(format!("expected NotResumable(KeyGone), got {other:?}").into()),
    }
    session.close().await?;
    Ok(())
}
