//! The calls that depend on the server's version: the backend hash, a downgrade check and a
//! streamed range read, each printing what this server answers. etcd 3.4 has no Downgrade and
//! only etcd 3.7 has RangeStream; an older server's answer is `Error::Unsupported`, which this
//! example prints before falling back (to `get`, for the range).
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example maintenance
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{Client, ClientOptions, DowngradeAction, Error, GetOptions, PutOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;
    let status = client.status().await?;
    println!("etcd {} (member {:x})", status.version, status.member_id);

    // The hash of the whole backend (for tests); hash_kv is the one to compare members with.
    let hash = client.hash_of(endpoints[0]).await?;
    let kv_hash = client.hash_kv(0).await?;
    println!("backend hash {:08x}, KV hash {:08x} at revision {}", hash.hash, kv_hash.hash, kv_hash.header.revision);

    // A downgrade may go one minor version down: validate that, and what the server refuses.
    // (Validate changes nothing; this example never enables a downgrade.)
    let (major, minor) = major_minor(&status.version);
    let one_down = format!("{major}.{}", minor.saturating_sub(1));
    let same = format!("{major}.{minor}");
    for (action, target) in [
        (DowngradeAction::Validate, &one_down),
        (DowngradeAction::Validate, &same),
        (DowngradeAction::Cancel, &String::new()),
    ] {
        let what = format!("downgrade {action:?} {target:?}");
        match client.downgrade(action, target).await {
            Ok(r) => println!("{what}: allowed; the cluster version is {}", r.version),
            Err(e @ Error::Unsupported { .. }) => println!("{what}: this server has no Downgrade ({e})"),
            Err(e @ Error::InvalidDowngradeTarget { .. }) => println!("{what}: refused ({e})"),
            Err(e @ Error::NoDowngradeInProgress { .. }) => println!("{what}: nothing to cancel ({e})"),
            Err(e @ Error::DowngradeInProgress { .. }) => println!("{what}: a downgrade is under way ({e})"),
            Err(e) => return Err(e.into()),
        }
    }
    // Checked on the client: no RPC.
    let bad = client.downgrade(DowngradeAction::Validate, "v3.4").await;
    println!("downgrade Validate \"v3.4\": {}", bad.err().map_or("accepted?".to_owned(), |e| e.to_string()));

    // A range read in chunks (etcd 3.7+), or in one answer from older servers.
    let logs = client.with_namespace("example/maintenance/");
    for i in 0..5 {
        logs.put(format!("log{i}"), format!("entry {i}"), PutOptions::new()).await?;
    }
    match logs.get_stream("log", GetOptions::new().with_prefix()).await {
        Ok(mut chunks) => {
            while let Some(kvs) = chunks.next().await {
                let kvs = kvs?;
                println!("chunk of {} keys, from {}", kvs.len(), kvs[0].key_str());
            }
            if let Some(s) = chunks.summary() {
                println!("streamed {} keys at revision {}", s.count, s.header.revision);
            }
        }
        Err(e @ Error::Unsupported { .. }) => {
            println!("get_stream: {e}; reading with get instead");
            let all = logs.get("log", GetOptions::new().with_prefix()).await?;
            println!("got {} keys at revision {}", all.count, all.header.revision);
        }
        Err(e) => return Err(e.into()),
    }
    logs.delete("log", etcd_wire::DeleteOptions::new().with_prefix()).await?;
    Ok(())
}

/// The major and minor numbers of a version such as `3.5.1`.
fn major_minor(version: &str) -> (u64, u64) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
