//! Endpoints on a live client: add one nobody serves (calls skip it after one failure), remove
//! it again, and replace the list; a watch opened before keeps delivering throughout. With a
//! unix socket path in `ETCD_UNIX_SOCKET`, the list is replaced by that socket (`unix://`).
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example endpoints
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{Client, ClientOptions, DeleteOptions, PutOptions, WatchOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;
    let mut watch = client.watch("example/endpoints/", WatchOptions::new().with_prefix()).await?;
    println!("connected to {:?}", client.endpoints());

    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dead = format!("127.0.0.1:{port}");
    client.add_endpoint(&dead)?;
    println!("added {dead}: {:?}", client.endpoints());
    for i in 0..4 {
        // Reads sent to the dead member are retried on a live one; a write that provably never
        // left (connection refused) is too.
        client.put(format!("example/endpoints/{i}"), "v", PutOptions::new()).await?;
    }
    client.remove_endpoint(&dead)?;
    println!("removed it: {:?}", client.endpoints());

    let replacement = match std::env::var("ETCD_UNIX_SOCKET") {
        Ok(path) => vec![format!("unix://{path}")],
        Err(_) => client.endpoints(),
    };
    client.set_endpoints(&replacement)?;
    println!("replaced the list: {:?}", client.endpoints());
    client.put("example/endpoints/last", "v", PutOptions::new()).await?;

    let mut seen = 0;
    while seen < 5 {
        let resp = watch.next().await.ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
        seen += resp.events.len();
    }
    println!("the watch opened first saw all {seen} puts, once each");
    client.delete("example/endpoints/", DeleteOptions::new().with_prefix()).await?;
    Ok(())
}
