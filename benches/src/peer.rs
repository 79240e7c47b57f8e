//! The peer, the `etcd-client` crate, driven through the same engine and requests as our client:
//! the locks compared ([`Lock`]: each of our strategies and etcd-client's server-side lock), an
//! etcd-client connection, and the KV requests [`crate::wire_kv`] sends, sent through etcd-client.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, LockOptions, Txn, TxnOp};
use etcd_lockbench::{Clients, Contender, Counters, MarkKind, recipe_contenders};
use etcd_recipes::Strategy;
use etcd_wire::ClientOptions;
use futures::future::BoxFuture;

use crate::{KV_VALUE, KvOp};

/// The locks compared: each strategy of ours, and etcd-client's server-side lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lock {
    /// One of our strategies.
    Ours(Strategy),
    /// `etcd_client::Client::lock` / `unlock` (the server-side Lock RPC) on a kept-alive lease.
    EtcdClientRpc,
}

impl Lock {
    /// Every lock, in table order.
    pub const ALL: [Lock; 6] = [
        Lock::Ours(Strategy::Mutex),
        Lock::Ours(Strategy::Semaphore),
        Lock::Ours(Strategy::Naive),
        Lock::Ours(Strategy::LeaseTtl),
        Lock::Ours(Strategy::Rpc),
        Lock::EtcdClientRpc,
    ];

    /// The label in tables and plots: `mutex`, ..., `etcd-client rpc`.
    pub fn label(self) -> &'static str {
        match self {
            Lock::Ours(s) => s.name(),
            Lock::EtcdClientRpc => "etcd-client rpc",
        }
    }

    /// The label in bench ids (no spaces): `mutex`, ..., `etcd-client-rpc`.
    pub fn id(self) -> &'static str {
        match self {
            Lock::Ours(s) => s.name(),
            Lock::EtcdClientRpc => "etcd-client-rpc",
        }
    }

    /// `n` contenders on lock `name`, each with its own session (lease of `ttl` seconds).
    pub async fn contenders(
        self,
        endpoints: &[String],
        n: usize,
        clients: Clients,
        name: &str,
        ttl: i64,
    ) -> etcd_lockbench::Result<(Vec<Box<dyn Contender>>, Arc<Counters>)> {
        match self {
            Lock::Ours(s) => recipe_contenders(endpoints, &ClientOptions::default(), s, n, clients, name, ttl).await,
            Lock::EtcdClientRpc => peer_contenders(endpoints, n, clients, name, ttl).await,
        }
    }
}

/// Connects an etcd-client client.
pub async fn peer_client(endpoints: &[String]) -> Result<etcd_client::Client, etcd_client::Error> {
    etcd_client::Client::connect(endpoints, None).await
}

fn peer_err(e: impl std::fmt::Display) -> etcd_lockbench::Error {
    etcd_lockbench::Error::Peer(format!("etcd-client: {e}"))
}

/// A contender using etcd-client's server-side lock, the way its docs show: a lease kept alive by
/// a task of its own, `lock(name, lease)`, `unlock(key)`. Counts its 2 RPCs per cycle.
struct PeerLock {
    client: etcd_client::Client,
    name: String,
    lease: i64,
    key: Option<Vec<u8>>,
    keeper: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
    /// Its index among the contenders, for the timeline.
    index: usize,
}

impl Contender for PeerLock {
    fn acquire(&mut self) -> BoxFuture<'_, etcd_lockbench::Result<()>> {
        Box::pin(async move {
            let options = LockOptions::new().with_lease(self.lease);
            let resp = self.client.lock(self.name.as_str(), Some(options)).await.map_err(peer_err)?;
            self.counters.count(self.index, MarkKind::Rpc);
            self.key = Some(resp.key().to_vec());
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, etcd_lockbench::Result<()>> {
        Box::pin(async move {
            if let Some(key) = self.key.take() {
                self.client.unlock(key).await.map_err(peer_err)?;
                self.counters.count(self.index, MarkKind::Rpc);
            }
            Ok(())
        })
    }
}

impl Drop for PeerLock {
    fn drop(&mut self) {
        self.keeper.abort();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (mut client, lease) = (self.client.clone(), self.lease);
            rt.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}

/// `n` etcd-client lock contenders, on one shared client or a client each.
async fn peer_contenders(
    endpoints: &[String],
    n: usize,
    clients: Clients,
    name: &str,
    ttl: i64,
) -> etcd_lockbench::Result<(Vec<Box<dyn Contender>>, Arc<Counters>)> {
    let counters = Arc::new(Counters::default());
    let shared = peer_client(endpoints).await.map_err(peer_err)?;
    let mut out: Vec<Box<dyn Contender>> = Vec::with_capacity(n);
    for index in 0..n {
        let mut client = match clients {
            Clients::Shared => shared.clone(),
            _ => peer_client(endpoints).await.map_err(peer_err)?,
        };
        let lease = client.lease_grant(ttl, None).await.map_err(peer_err)?.id();
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.map_err(peer_err)?;
        let every = Duration::from_secs((ttl / 3).max(1) as u64);
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if keeper.keep_alive().await.is_err() || !matches!(answers.message().await, Ok(Some(_))) {
                    return;
                }
            }
        });
        out.push(Box::new(PeerLock {
            client,
            name: name.to_owned(),
            lease,
            key: None,
            keeper,
            counters: counters.clone(),
            index,
        }));
    }
    Ok((out, counters))
}

/// One `op` on `key` through etcd-client, the same request [`crate::wire_kv`] sends.
pub async fn peer_kv(kv: &mut KvClient, key: &str, op: KvOp) -> Result<(), etcd_client::Error> {
    match op {
        KvOp::Put => kv.put(key, &KV_VALUE[..], None).await.map(drop),
        KvOp::RangeLinearizable => kv.get(key, None).await.map(drop),
        KvOp::RangeSerializable => kv.get(key, Some(GetOptions::new().with_serializable())).await.map(drop),
        KvOp::Txn => {
            let txn = Txn::new().when([Compare::value(key, CompareOp::Equal, &KV_VALUE[..])]).and_then([TxnOp::put(
                key,
                &KV_VALUE[..],
                None,
            )]);
            kv.txn(txn).await.map(drop)
        }
    }
}
