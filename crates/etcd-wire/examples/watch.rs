//! Watches: watch a prefix, make a few puts and deletes under it, and print the events as they
//! arrive, with their previous values.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example watch
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use std::time::Duration;

use etcd_wire::{Client, ClientOptions, DeleteOptions, EventKind, PutOptions, WatchOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;

    // Returns once the server has created the watch: every change made after this is seen.
    let mut watcher = client.watch("example/watch/", WatchOptions::new().with_prefix().with_prev_kv()).await?;
    println!("watching example/watch/ from revision {}", watcher.created_revision() + 1);

    client.put("example/watch/a", "1", PutOptions::new()).await?;
    client.put("example/watch/b", "2", PutOptions::new()).await?;
    client.put("example/watch/a", "3", PutOptions::new()).await?;
    client.delete("example/watch/", DeleteOptions::new().with_prefix()).await?;

    let mut seen = 0;
    while seen < 5 {
        let Some(response) = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await? else { break };
        for event in response?.events {
            seen += 1;
            let before = event.prev_kv.as_ref().map(|p| p.value_str().into_owned());
            match event.kind {
                EventKind::Delete => {
                    println!("rev {}: delete {} (was {before:?})", event.kv.mod_revision, event.kv.key_str())
                }
                _ => println!(
                    "rev {}: put {} = {} (was {before:?})",
                    event.kv.mod_revision,
                    event.kv.key_str(),
                    event.kv.value_str()
                ),
            }
        }
    }
    // Dropping the watcher cancels the watch on the server.
    watcher.cancel();
    Ok(())
}
