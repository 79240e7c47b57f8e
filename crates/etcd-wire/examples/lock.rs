//! The server-side lock: two workers, each with its own lease, take turns holding the same lock.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example lock
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use std::time::Duration;

use etcd_wire::{Client, ClientOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?.with_namespace("example/");

    let workers = (1..=2).map(|n| {
        let client = client.clone();
        tokio::spawn(async move {
            // The lock lives as long as the lease: a crashed worker's lock frees itself.
            let lease = client.lease_grant(10, None).await?;
            let held = client.lock("job", lease.id).await?;
            println!("worker {n}: holding the lock as {}", String::from_utf8_lossy(&held.key));
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!("worker {n}: releasing it");
            client.unlock(held.key).await?;
            client.lease_revoke(lease.id).await?;
            anyhow::Ok(())
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker??;
    }
    println!("both workers had the lock, one after the other");
    Ok(())
}
