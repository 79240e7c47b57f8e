//! Transactions: a compare-and-swap that succeeds, the same one failing once the value changed,
//! and "create only if absent".
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-wire --example txn
//! ```
//! `ETCD_ENDPOINTS` is a comma-separated list; it defaults to `127.0.0.1:2379`.

use etcd_wire::{
    Client, ClientOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".to_owned());
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    let client = Client::connect(&endpoints, ClientOptions::default()).await?;

    client.put("example/txn/balance", "100", PutOptions::new()).await?;

    // Compare-and-swap: set 80 only if the balance is still 100.
    let cas = |expected: &'static str, new: &'static str| {
        Txn::new()
            .when([Compare::value("example/txn/balance", CompareOp::Equal, expected)])
            .and_then([TxnOp::put("example/txn/balance", new, PutOptions::new())])
            .or_else([TxnOp::get("example/txn/balance", GetOptions::new())])
    };
    let won = client.txn(cas("100", "80")).await?;
    println!("CAS 100 -> 80: succeeded = {} (revision {})", won.succeeded, won.header.revision);
    let lost = client.txn(cas("100", "60")).await?;
    println!("CAS 100 -> 60: succeeded = {}", lost.succeeded);
    if let Some(TxnOpResponse::Get(current)) = lost.responses.first() {
        println!("  the balance is now {:?}", current.kvs.first().map(|kv| kv.value_str()));
    }

    // Create only if absent: create_revision == 0 means the key does not exist.
    let create =
        || {
            Txn::new()
                .when([Compare::create_revision("example/txn/owner", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("example/txn/owner", "me", PutOptions::new())])
        };
    println!("create owner: succeeded = {}", client.txn(create()).await?.succeeded);
    println!("create owner again: succeeded = {}", client.txn(create()).await?.succeeded);

    client.delete("example/txn/", DeleteOptions::new().with_prefix()).await?;
    Ok(())
}
