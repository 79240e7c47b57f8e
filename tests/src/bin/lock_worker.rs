//! A separate OS process for the multi-process lock tests: `lock_worker MODE STRATEGY ENDPOINTS NAME [N] [TTL]`
//! (STRATEGY `semaphore:P` is a semaphore of P permits).
//!
//! - `count`: N times, take the lock, read the counter key `NAME-counter`, write it back plus one
//!   through the guard's fenced Txn, release. Prints `done N`.
//! - `hold`: take the lock, print `locked <fencing token> <lease id hex> <resume token>`, then
//!   sleep until killed.
//!
//! The session (and the lease TTL lock's own lease) has a TTL of `TTL` seconds (default 60).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_recipes::{DistributedLock, Semaphore, Session, Strategy};
use etcd_wire::{Client, ClientOptions, GetOptions, PutOptions, TxnOp};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, strategy, endpoints, name, rest @ ..] = args.as_slice() else {
        bail!("usage: lock_worker count|hold STRATEGY|semaphore:PERMITS ENDPOINTS NAME [N] [TTL]");
    };
    let n: u32 = rest.first().map_or(Ok(1), |s| s.parse()).context("N")?;
    let ttl: i64 = rest.get(1).map_or(Ok(60), |s| s.parse()).context("TTL")?;
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    let session = Session::builder(&client).ttl(ttl).build().await?;
    // `semaphore:P`: a semaphore of P permits; any other name: that strategy.
    let lock: Box<dyn DistributedLock> = match strategy.strip_prefix("semaphore:") {
        Some(permits) => Box::new(Semaphore::new(&session, name, permits.parse().context("permits")?)?),
        None => strategy.parse::<Strategy>()?.new_lock(&session, name)?,
    };
    let counter = format!("{name}-counter");
    match mode.as_str() {
        "count" => {
            for _ in 0..n {
                let guard = lock.lock().await?;
                let current = client.get(counter.clone(), GetOptions::new()).await?;
                let value: u64 = current.kvs.first().map_or(Ok(0), |kv| kv.value_str().parse()).context("counter")?;
                let put = TxnOp::put(counter.clone(), (value + 1).to_string(), PutOptions::new());
                let written = client.txn(guard.txn().and_then([put])).await?;
                if !written.succeeded {
                    bail!("lost the lock while holding it");
                }
                guard.unlock().await?;
            }
            println!("done {n}");
        }
        "hold" => {
            let guard = lock.lock().await?;
            println!("locked {} {:x} {}", guard.fencing_token(), guard.lease_id(), guard.resume_token());
            std::io::stdout().flush()?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(guard);
        }
        other => bail!("unknown mode {other:?}"),
    }
    Ok(())
}
