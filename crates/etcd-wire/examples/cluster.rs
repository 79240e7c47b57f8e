//! Cluster and maintenance: the members, each endpoint's status, the leader, alarms, a KV hash
//! and the size of a snapshot.
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example cluster
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{Client, ClientOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;

    let members = client.member_list(true).await?;
    println!("cluster {:x} has {} members:", members.header.cluster_id, members.members.len());
    for m in &members.members {
        let role = if m.is_learner { "learner" } else { "voter" };
        println!("  {:x} {:?} ({role}) peers {:?} clients {:?}", m.id, m.name, m.peer_urls, m.client_urls);
    }

    for (endpoint, status) in client.status_all().await {
        match status {
            Ok(s) => println!(
                "{endpoint}: member {:x}, etcd {}, db {} bytes ({} in use), raft term {} index {}{}",
                s.member_id,
                s.version,
                s.db_size,
                s.db_size_in_use,
                s.raft_term,
                s.raft_index,
                if s.is_leader() { ", LEADER" } else { "" }
            ),
            Err(e) => println!("{endpoint}: unreachable: {e}"),
        }
    }

    let alarms = client.alarm_list().await?;
    println!("alarms: {:?}", alarms.alarms);
    let hash = client.hash_kv(0).await?;
    println!("KV hash {:08x} at revision {}", hash.hash, hash.header.revision);

    let mut snapshot = client.snapshot().await?;
    let mut bytes = 0;
    while let Some(chunk) = snapshot.next().await {
        bytes += chunk?.len();
    }
    println!("a snapshot is {bytes} bytes");
    Ok(())
}
