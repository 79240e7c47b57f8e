//! Key-value basics: put, get (one key, a prefix, an older revision), delete, and a namespaced
//! view of the keyspace.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example kv
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{Client, ClientOptions, DeleteOptions, GetOptions, PutOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;

    let first = client.put("example/kv/greeting", "hello", PutOptions::new()).await?;
    println!("put greeting=hello at revision {}", first.header.revision);
    let second = client.put("example/kv/greeting", "bonjour", PutOptions::new().with_prev_kv()).await?;
    let previous = second.prev_kv.map(|kv| kv.value_str().into_owned());
    println!("put greeting=bonjour at revision {} (previous value {previous:?})", second.header.revision);
    client.put("example/kv/farewell", "goodbye", PutOptions::new()).await?;

    let now = client.get("example/kv/greeting", GetOptions::new()).await?;
    for kv in &now.kvs {
        println!("get {} = {} (version {}, modified at {})", kv.key_str(), kv.value_str(), kv.version, kv.mod_revision);
    }
    let then = client.get("example/kv/greeting", GetOptions::new().with_revision(first.header.revision)).await?;
    println!("at revision {} it was {:?}", first.header.revision, then.kvs.first().map(|kv| kv.value_str()));

    let all = client.get("example/kv/", GetOptions::new().with_prefix()).await?;
    println!("{} keys under example/kv/:", all.count);
    for kv in &all.kvs {
        println!("  {} = {}", kv.key_str(), kv.value_str());
    }

    // A namespaced view sees the same keys without the prefix.
    let ns = client.with_namespace("example/kv/");
    let farewell = ns.get("farewell", GetOptions::new()).await?;
    println!("namespaced get farewell = {:?}", farewell.kvs.first().map(|kv| kv.value_str()));

    let deleted = client.delete("example/kv/", DeleteOptions::new().with_prefix()).await?;
    println!("deleted {} keys", deleted.deleted);
    Ok(())
}
