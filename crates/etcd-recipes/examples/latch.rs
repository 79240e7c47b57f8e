//! A leader latch: two participants, one leads while the other follows it; the leader does work
//! only while `is_leader()` holds, then steps down and the other takes over.
//! Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).

use std::time::Duration;

use etcd_recipes::{LatchState, LeaderLatch};
use etcd_wire::{Client, ClientOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;

    let alice = LeaderLatch::builder(&client, "examples/latch").value("alice").ttl(10).start()?;
    if let LatchState::Leader { token, .. } = alice.wait_leader().await? {
        println!("alice leads (fencing token {token})");
    }
    let bob = LeaderLatch::start(&client, "examples/latch", "bob")?;
    let mut bob_state = bob.subscribe();
    let seen = bob_state.wait_for(|s| matches!(s, LatchState::Follower { leader: Some(_) })).await?.clone();
    if let LatchState::Follower { leader: Some(leader) } = seen {
        println!("bob follows {}", leader.value_str());
    }

    // Work in small steps, each only while still leader by the local clock.
    for step in 1..=3 {
        if !alice.is_leader() {
            break;
        }
        println!("alice works, step {step}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.close().await?; // steps down: Lost, then the lease is revoked and bob is elected

    if let LatchState::Leader { token, .. } = bob.wait_leader().await? {
        println!("bob leads (fencing token {token})");
    }
    bob.close().await?;
    Ok(())
}
