//! Several locks as one: 8 tasks, each with its own session, move money between two of three
//! accounts, each taking both accounts' locks with a `MultiLock`. Half name them in one order,
//! half in the other; the multi-lock takes them in one global order, so nobody deadlocks. Each
//! transfer writes through the guard's `txn()`, which lands only while both locks are held.
//! Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).

use etcd_recipes::etcd_wire::{Client, ClientOptions, GetOptions, PutOptions, TxnOp};
use etcd_recipes::{MultiLock, Session};

const ACCOUNTS: [&str; 3] = ["examples/accounts/a", "examples/accounts/b", "examples/accounts/c"];

async fn balance(client: &Client, account: &str) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let got = client.get(format!("{account}-balance"), GetOptions::new()).await?;
    Ok(got.kvs.first().map_or(Ok(0), |kv| kv.value_str().parse())?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    for account in ACCOUNTS {
        client.put(format!("{account}-balance"), "100", PutOptions::new()).await?;
    }

    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            // Task i moves 1 from one account to the next, naming the pair in either order.
            let (from, to) = (ACCOUNTS[i % 3], ACCOUNTS[(i + 1) % 3]);
            let names = if i % 2 == 0 { [from, to] } else { [to, from] };
            let lock = MultiLock::new(&session, names)?;
            for _ in 0..5 {
                let guard = lock.lock().await?;
                let (a, b) = (balance(&client, from).await?, balance(&client, to).await?);
                let write = guard.txn().and_then([
                    TxnOp::put(format!("{from}-balance"), (a - 1).to_string(), PutOptions::new()),
                    TxnOp::put(format!("{to}-balance"), (b + 1).to_string(), PutOptions::new()),
                ]);
                assert!(client.txn(write).await?.succeeded, "both locks are held");
                guard.unlock().await?;
            }
            session.close().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut total = 0;
    for account in ACCOUNTS {
        let b = balance(&client, account).await?;
        println!("{account}: {b}");
        total += b;
    }
    assert_eq!(total, 300, "no transfer was lost or doubled");
    println!("40 transfers, no deadlock, total still {total}");
    Ok(())
}
