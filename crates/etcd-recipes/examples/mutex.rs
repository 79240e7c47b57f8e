//! The background posts' scenario: 100 tasks increment a counter under a distributed Mutex, each
//! with its own session; the result must be exactly 100. Then the same lock is shown fencing a
//! write. Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_recipes::{Mutex, Session};
use etcd_wire::{Client, ClientOptions, PutOptions, TxnOp};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;

    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (client, counter) = (client.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let guard = Mutex::new(&session, "examples/counter")?.lock().await?;
            // A read-modify-write that would lose increments without the lock.
            let seen = counter.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            counter.store(seen + 1, Ordering::SeqCst);
            guard.unlock().await?;
            session.close().await?;
            Ok::<_, etcd_recipes::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!("counter = {} (100 tasks, one lock)", counter.load(Ordering::SeqCst));
    assert_eq!(counter.load(Ordering::SeqCst), 100);

    // Fencing: a write that lands only while the lock is still ours.
    let session = Session::new(&client).await?;
    let guard = Mutex::new(&session, "examples/counter")?.lock().await?;
    let write = guard.txn().and_then([TxnOp::put("examples/state", "written under the lock", PutOptions::new())]);
    println!("fenced write landed: {} (fencing token {})", client.txn(write).await?.succeeded, guard.fencing_token());
    guard.unlock().await?;
    session.close().await?;
    Ok(())
}
