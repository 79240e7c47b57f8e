//! A guard as a proof of ownership: how long the lock is provably ours (`valid_until`), work that
//! runs only while it is held (`while_held`), and a lock taken again and again from one session in
//! a loop (each `lock()` waits for the previous guard's release). Connects to `ETCD_ENDPOINTS`
//! (comma-separated, default `127.0.0.1:2379`).

use std::time::{Duration, Instant};

use etcd_recipes::etcd_wire::{Client, ClientOptions, DeleteOptions, PutOptions, TxnOp};
use etcd_recipes::{Error, Lost, Mutex, Session};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    let session = Session::builder(&client).ttl(10).build().await?;
    let mutex = Mutex::new(&session, "examples/guard")?;

    // The ordinary loop: drop the guard, lock again at once. Each turn is a new acquisition.
    let mut last = 0;
    for _ in 0..20 {
        let guard = mutex.lock().await?;
        assert!(guard.fencing_token() > last, "every turn is a new acquisition");
        last = guard.fencing_token();
        let write = guard.txn().and_then([TxnOp::put("examples/guard-state", "busy", PutOptions::new())]);
        assert!(client.txn(write).await?.succeeded, "a fenced write of a fresh guard lands");
    }

    // How long is the lock provably ours?
    let guard = mutex.lock().await?;
    let until = guard.valid_until().ok_or("the lease is already lost")?;
    println!("held with token {}; provably ours for {:?} more", guard.fencing_token(), until - Instant::now());

    // Work that stops the moment the lock is lost: here somebody deletes the lock key.
    let work = guard.while_held(async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let vandal = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.delete(guard.key().clone(), DeleteOptions::new()).await
    };
    let (result, deleted) = tokio::join!(work, vandal);
    deleted?;
    match result {
        Err(Error::LockLost(Lost::KeyGone)) => println!("work cancelled: the lock key was deleted"),
        other => return Err(format!("expected LockLost(KeyGone), got {other:?}").into()),
    }
    session.close().await?;
    Ok(())
}
