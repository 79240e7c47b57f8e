//! The server-side Lock service (`v3lock`): distributed mutexes held by a lease.
//!
//! [`Client::lock`] waits, on the server, until the caller owns the lock named `name`, and returns
//! the key that represents the ownership; [`Client::unlock`] deletes that key. The lock is also
//! released when the lease ends, so keep the lease alive
//! ([`Client::lease_keep_alive`](crate::Client::lease_keep_alive)) for as long as the lock is
//! needed, and check ownership (the key still exists) in the transactions that depend on it.
//!
//! A [namespaced](Client::with_namespace) view prefixes the lock name, and returns keys without
//! the prefix; pass them back to `unlock` of the same view.

use bytes::Bytes;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pb::v3lockpb as pb;
use crate::rpc::{Call, stub};
use crate::types::ResponseHeader;

/// Answer to [`Client::lock`]: the caller owns the lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LockResponse {
    /// Response header.
    pub header: ResponseHeader,
    /// The ownership key (`<name>/<lease id in hex>`, namespace prefix stripped): exists exactly
    /// as long as the caller owns the lock. Pass it to [`Client::unlock`].
    pub key: Bytes,
}

impl Client {
    /// Acquires the lock `name` for lease `lease`, waiting (with no deadline: not bound by the
    /// request timeout) until every earlier holder and waiter is gone. Cancel by dropping the
    /// future; the server then withdraws the request.
    ///
    /// `lease` must be a live lease (> 0): the lock is released when it ends. (The server would
    /// make up a lease of its own for lease 0, which the caller could neither keep alive nor
    /// revoke, so 0 is rejected here.)
    pub async fn lock(&self, name: impl Into<Bytes>, lease: i64) -> Result<LockResponse> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::invalid("lock name is empty"));
        }
        if lease <= 0 {
            return Err(Error::invalid("a lock needs a lease (got lease ID 0 or negative)"));
        }
        let req = pb::LockRequest { name: self.ns.key(name), lease };
        let r = self
            .call(Call::write("Lock").timeout(None), |ch, meta| {
                let req = req.clone();
                async move { stub::lock(ch).lock(meta.request(req)).await }
            })
            .await?;
        Ok(LockResponse { header: ResponseHeader::from_pb(r.header), key: self.ns.strip(r.key) })
    }

    /// Releases the lock owned through `key` (from [`LockResponse::key`]) by deleting it. Unlocking
    /// a key that no longer exists succeeds.
    pub async fn unlock(&self, key: impl Into<Bytes>) -> Result<ResponseHeader> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid("lock key is empty"));
        }
        let req = pb::UnlockRequest { key: self.ns.key(key) };
        let r = self
            .call(Call::write("Unlock"), |ch, meta| {
                let req = req.clone();
                async move { stub::lock(ch).unlock(meta.request(req)).await }
            })
            .await?;
        Ok(ResponseHeader::from_pb(r.header))
    }
}
