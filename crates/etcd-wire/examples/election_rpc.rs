//! The server-side election: two candidates, an observer printing each leader's value, a
//! proclamation, and a hand-over when the first leader resigns.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example election_rpc
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use std::time::Duration;

use etcd_wire::{Client, ClientOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?.with_namespace("example/");

    println!("leader before anyone campaigns: {:?}", client.leader("primary").await?);

    let first_lease = client.lease_grant(10, None).await?.id;
    let second_lease = client.lease_grant(10, None).await?.id;
    let first = client.campaign("primary", first_lease, "node-1").await?;
    println!("node-1 leads with key {}", String::from_utf8_lossy(&first.key));

    let mut observer = client.observe("primary").await?;
    let watcher = tokio::spawn(async move {
        // The current leader's value, the proclamation, then the next leader's value.
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(10), observer.next()).await {
                Ok(Some(Ok(kv))) => println!("observed: {}", kv.value_str()),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => anyhow::bail!("observation ended early"),
            }
        }
        anyhow::Ok(())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.proclaim(&first, "node-1 (v2)").await?;

    let contender = client.clone();
    let second = tokio::spawn(async move { contender.campaign("primary", second_lease, "node-2").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("node-2 is waiting: {}", !second.is_finished());
    client.resign(&first).await?;
    let second = second.await??;
    println!("node-2 leads after node-1 resigned");
    watcher.await??;

    client.resign(&second).await?;
    client.lease_revoke(first_lease).await?;
    client.lease_revoke(second_lease).await?;
    println!("leader after everyone resigned: {:?}", client.leader("primary").await?);
    Ok(())
}
