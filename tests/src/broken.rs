//! Deliberately broken locks, written only to show that the checks fail on them: a check that
//! cannot fail proves nothing.
//!
//! - [`skip_the_line`]: joins like the Mutex (a key under the lock's prefix, on the session's
//!   lease) but never waits for the keys ahead of it.
//! - [`unfenced_unlock`]: releases a lock key with a plain `DeleteRange` (no compare on its
//!   create revision), retried until an answer comes, like clients before etcd-io/etcd#22082:
//!   a retry that lands after the same key name was created again deletes the new holder's key.

use std::time::Duration;

use anyhow::Result;
use etcd_recipes::Session;
use etcd_wire::{DeleteOptions, PutOptions};

/// Takes "the lock" `prefix` at once: puts `<prefix>/<lease>` on the session's lease and returns
/// its create revision as the fencing token, whoever else holds it.
pub async fn skip_the_line(session: &Session, prefix: &str) -> Result<(String, i64)> {
    let key = format!("{prefix}/{:x}", session.lease_id());
    let put = session.client().put(key.clone(), "", PutOptions::new().with_lease(session.lease_id())).await?;
    let token = put.header.revision;
    Ok((key, token))
}

/// Deletes `key` unconditionally, sending the delete again after every failure (a timeout
/// included) until one is answered.
pub async fn unfenced_unlock(client: &etcd_wire::Client, key: &str) {
    while client.delete(key.to_owned(), DeleteOptions::new()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
