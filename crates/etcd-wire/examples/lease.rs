//! Leases end to end: grant a lease, attach a key, keep the lease alive for a few seconds on the
//! client's shared keep-alive stream, then revoke it and watch the key and the keep-alive go.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example lease
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use std::time::Duration;

use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;

    let lease = client.lease_grant(3, None).await?;
    println!("granted lease {:x} with a TTL of {} s", lease.id, lease.ttl);
    client.put("example/lease", "hello", PutOptions::new().with_lease(lease.id)).await?;

    let keep = client.lease_keep_alive(lease.id).await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ttl = client.lease_time_to_live(lease.id, true).await?;
        let keys: Vec<_> = ttl.keys.iter().map(|k| String::from_utf8_lossy(k)).collect();
        println!("kept alive: {} s left of {}, keys {keys:?}", ttl.ttl, ttl.granted_ttl);
    }

    client.lease_revoke(lease.id).await?;
    let why = tokio::time::timeout(Duration::from_secs(10), keep.lost()).await?;
    println!("revoked; the keep-alive reports: {why}");
    let present = client.get("example/lease", GetOptions::new()).await?.count > 0;
    println!("key still present: {present}");
    Ok(())
}
