//! Leader election: two candidates, an observer that prints each leader, a handover on resign.
//! Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).

use std::time::Duration;

use etcd_recipes::{Election, Session};
use etcd_wire::{Client, ClientOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    let (alice, bob) = (Session::new(&client).await?, Session::new(&client).await?);

    // A stream starts observing when first polled, like any Rust stream: from the leader then.
    let mut leaders = Box::pin(Election::new(&alice, "examples/election")?.observe());
    let first = Election::new(&alice, "examples/election")?.campaign("alice").await?;
    println!("alice is leader (fencing token {})", first.fencing_token());
    if let Some(leader) = leaders.next().await {
        println!("observed leader: {}", leader?.value_str());
    }

    let election = Election::new(&bob, "examples/election")?;
    let waiting = tokio::spawn(async move { election.campaign("bob").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("bob is waiting: {}", !waiting.is_finished());

    first.resign().await?;
    let second = waiting.await??;
    println!("bob is leader (fencing token {})", second.fencing_token());
    if let Some(leader) = leaders.next().await {
        println!("observed leader: {}", leader?.value_str());
    }
    second.resign().await?;
    Ok(())
}
