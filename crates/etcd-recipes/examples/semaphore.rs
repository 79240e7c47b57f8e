//! A semaphore of 3 permits: 10 tasks, each with its own session, do a job under a permit; never
//! more than 3 at once. Then: with every permit held, `try_acquire` fails with `Locked`, and each
//! holder fences its writes with its own token. Connects to `ETCD_ENDPOINTS` (comma-separated,
//! default `127.0.0.1:2379`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_recipes::{Error, Semaphore, Session};
use etcd_wire::{Client, ClientOptions, PutOptions, TxnOp};

const PERMITS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;

    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (client, running, most) = (client.clone(), running.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let permit = Semaphore::new(&session, "examples/jobs", PERMITS)?.acquire().await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await; // the job
            running.fetch_sub(1, Ordering::SeqCst);
            permit.unlock().await?;
            session.close().await?;
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let most = most.load(Ordering::SeqCst);
    println!("10 jobs done, at most {most} at once ({PERMITS} permits)");
    assert!(most <= PERMITS);

    // Every permit held: one more fails at once, and leaves no key behind.
    let session = Session::new(&client).await?;
    let semaphore = Semaphore::new(&session, "examples/jobs", PERMITS)?;
    let mut permits = Vec::new();
    for _ in 0..PERMITS {
        permits.push(semaphore.acquire().await?);
    }
    assert!(matches!(semaphore.try_acquire().await, Err(Error::Locked)));
    // Each permit has its own fencing token; a write fenced by it lands only while it is held.
    for (i, permit) in permits.iter().enumerate() {
        let key = format!("examples/jobs-state/{i}");
        let write = permit.txn().and_then([TxnOp::put(key, "running", PutOptions::new())]);
        println!(
            "permit {i}: fencing token {}, fenced write landed: {}",
            permit.fencing_token(),
            client.txn(write).await?.succeeded
        );
    }
    for permit in permits {
        permit.unlock().await?;
    }
    session.close().await?;
    Ok(())
}
