//! Transactions: `If(compares...) Then(ops...) Else(ops...)`, applied atomically at one revision.
//!
//! ```no_run
//! # async fn demo(client: etcd_wire::Client) -> etcd_wire::Result<()> {
//! use etcd_wire::{Compare, CompareOp, PutOptions, Txn, TxnOp};
//!
//! // Create "lock" only if it does not exist (create revision 0), as the lock recipes do.
//! let resp = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
//!             .and_then([TxnOp::put("lock", "me", PutOptions::new())])
//!             .or_else([TxnOp::get("lock", None)]),
//!     )
//!     .await?;
//! println!("acquired: {}", resp.succeeded);
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{DeleteOptions, DeleteResponse, GetOptions, GetResponse, PutOptions, PutResponse};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, compare, request_op, response_op};
use crate::range::prefix_range_end;
use crate::rpc::{Call, stub};
use crate::types::ResponseHeader;

/// How a [`Compare`] relates the key's field to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// The field a [`Compare`] looks at, with the value to compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareTarget {
    /// The key's value.
    Value(Bytes),
    /// The key's version (0 when the key does not exist).
    Version(i64),
    /// The key's create revision (0 when the key does not exist).
    CreateRevision(i64),
    /// The key's mod revision (0 when the key does not exist).
    ModRevision(i64),
    /// The key's lease ID (0 for none).
    Lease(i64),
}

/// One condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    key: Bytes,
    range_end: Bytes,
    op: CompareOp,
    target: CompareTarget,
}

impl Compare {
    /// Compares `key`'s `target` with `op`.
    pub fn new(key: impl Into<Bytes>, op: CompareOp, target: CompareTarget) -> Self {
        Compare { key: key.into(), range_end: Bytes::new(), op, target }
    }
    /// `value(key) op value`.
    pub fn value(key: impl Into<Bytes>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Self::new(key, op, CompareTarget::Value(value.into()))
    }
    /// `version(key) op version`.
    pub fn version(key: impl Into<Bytes>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version(version))
    }
    /// `create_revision(key) op revision`; `Equal, 0` means "the key does not exist".
    pub fn create_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::CreateRevision(revision))
    }
    /// `mod_revision(key) op revision`.
    pub fn mod_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::ModRevision(revision))
    }
    /// `lease(key) op lease`.
    pub fn lease(key: impl Into<Bytes>, op: CompareOp, lease: i64) -> Self {
        Self::new(key, op, CompareTarget::Lease(lease))
    }
    /// Applies the comparison to every key starting with the key (each must satisfy it).
    pub fn with_prefix(mut self) -> Self {
        self.range_end = prefix_range_end(&self.key);
        self
    }
    /// Applies the comparison to every key in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Bytes>) -> Self {
        self.range_end = end.into();
        self
    }
    /// The key compared.
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The field compared, with the value it is compared against.
    pub fn target(&self) -> &CompareTarget {
        &self.target
    }

    /// How the field is compared.
    pub fn op(&self) -> CompareOp {
        self.op
    }

    fn to_pb(&self, ns: &Namespace) -> Result<pb::Compare> {
        if self.key.is_empty() {
            return Err(Error::invalid("empty key in compare"));
        }
        let result = match self.op {
            CompareOp::Equal => compare::CompareResult::Equal,
            CompareOp::NotEqual => compare::CompareResult::NotEqual,
            CompareOp::Greater => compare::CompareResult::Greater,
            CompareOp::Less => compare::CompareResult::Less,
        };
        let (target, union) = match &self.target {
            CompareTarget::Value(v) => (compare::CompareTarget::Value, compare::TargetUnion::Value(v.clone())),
            CompareTarget::Version(v) => (compare::CompareTarget::Version, compare::TargetUnion::Version(*v)),
            CompareTarget::CreateRevision(r) => {
                (compare::CompareTarget::Create, compare::TargetUnion::CreateRevision(*r))
            }
            CompareTarget::ModRevision(r) => (compare::CompareTarget::Mod, compare::TargetUnion::ModRevision(*r)),
            CompareTarget::Lease(l) => (compare::CompareTarget::Lease, compare::TargetUnion::Lease(*l)),
        };
        Ok(pb::Compare {
            result: result as i32,
            target: target as i32,
            key: ns.range_key(self.key.clone(), &self.range_end),
            range_end: ns.range_end(self.range_end.clone()),
            target_union: Some(union),
        })
    }
}

/// One operation in a branch of a [`Txn`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TxnOp {
    /// A get.
    Get(Bytes, GetOptions),
    /// A put.
    Put(Bytes, Bytes, PutOptions),
    /// A delete.
    Delete(Bytes, DeleteOptions),
    /// A nested transaction.
    Txn(Box<Txn>),
}

impl TxnOp {
    /// A get of `key` (options, or `None`).
    pub fn get(key: impl Into<Bytes>, options: impl Into<Option<GetOptions>>) -> Self {
        TxnOp::Get(key.into(), options.into().unwrap_or_default())
    }
    /// A put of `value` at `key` (options, or `None`).
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>, options: impl Into<Option<PutOptions>>) -> Self {
        TxnOp::Put(key.into(), value.into(), options.into().unwrap_or_default())
    }
    /// A delete of `key` (options, or `None`).
    pub fn delete(key: impl Into<Bytes>, options: impl Into<Option<DeleteOptions>>) -> Self {
        TxnOp::Delete(key.into(), options.into().unwrap_or_default())
    }
    /// A nested transaction.
    pub fn txn(txn: Txn) -> Self {
        TxnOp::Txn(Box::new(txn))
    }

    fn is_read_only(&self) -> bool {
        match self {
            TxnOp::Get(..) => true,
            TxnOp::Txn(t) => t.is_read_only(),
            TxnOp::Put(..) | TxnOp::Delete(..) => false,
        }
    }

    fn to_pb(&self, ns: &Namespace) -> Result<pb::RequestOp> {
        let request = match self {
            TxnOp::Get(k, o) => request_op::Request::RequestRange(o.to_pb(k.clone(), ns)?),
            TxnOp::Put(k, v, o) => request_op::Request::RequestPut(o.to_pb(k.clone(), v.clone(), ns)?),
            TxnOp::Delete(k, o) => request_op::Request::RequestDeleteRange(o.to_pb(k.clone(), ns)?),
            TxnOp::Txn(t) => request_op::Request::RequestTxn(t.to_pb(ns)?),
        };
        Ok(pb::RequestOp { request: Some(request) })
    }
}

/// A transaction: when every compare holds, the `and_then` ops run, otherwise the `or_else` ops.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no compares: the success branch runs).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds conditions (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    /// Adds operations to run when the conditions hold.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    /// Adds operations to run when a condition fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
    /// The conditions.
    pub fn compares(&self) -> &[Compare] {
        &self.compares
    }

    /// Whether every op, in both branches, only reads.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(TxnOp::is_read_only)
    }

    pub(crate) fn to_pb(&self, ns: &Namespace) -> Result<pb::TxnRequest> {
        Ok(pb::TxnRequest {
            compare: self.compares.iter().map(|c| c.to_pb(ns)).collect::<Result<_>>()?,
            success: self.success.iter().map(|o| o.to_pb(ns)).collect::<Result<_>>()?,
            failure: self.failure.iter().map(|o| o.to_pb(ns)).collect::<Result<_>>()?,
        })
    }
}

/// The result of one op of the branch that ran.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TxnOpResponse {
    /// From a [`TxnOp::Get`].
    Get(GetResponse),
    /// From a [`TxnOp::Put`].
    Put(PutResponse),
    /// From a [`TxnOp::Delete`].
    Delete(DeleteResponse),
    /// From a nested [`TxnOp::Txn`].
    Txn(TxnResponse),
}

/// Answer to [`Client::txn`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TxnResponse {
    /// Response header; `revision` is the transaction's revision.
    pub header: ResponseHeader,
    /// Whether the compares held (so the `and_then` branch ran).
    pub succeeded: bool,
    /// One response per op of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    pub(crate) fn from_pb(r: pb::TxnResponse, ns: &Namespace) -> Self {
        let responses = r
            .responses
            .into_iter()
            .filter_map(|op| {
                Some(match op.response? {
                    response_op::Response::ResponseRange(g) => TxnOpResponse::Get(GetResponse::from_pb(g, ns)),
                    response_op::Response::ResponsePut(p) => TxnOpResponse::Put(PutResponse::from_pb(p, ns)),
                    response_op::Response::ResponseDeleteRange(d) => {
                        TxnOpResponse::Delete(DeleteResponse::from_pb(d, ns))
                    }
                    response_op::Response::ResponseTxn(t) => TxnOpResponse::Txn(TxnResponse::from_pb(t, ns)),
                })
            })
            .collect();
        TxnResponse { header: ResponseHeader::from_pb(r.header), succeeded: r.succeeded, responses }
    }

    /// The get responses of the branch that ran, in order (a convenience for the common case).
    pub fn gets(&self) -> impl Iterator<Item = &GetResponse> {
        self.responses.iter().filter_map(|r| if let TxnOpResponse::Get(g) = r { Some(g) } else { None })
    }
}

impl Client {
    /// Runs a transaction. A transaction that only reads is retried like a get; one that writes
    /// only when it provably never left.
    ///
    /// A read-only transaction, once sent, always runs to its end: dropping this future (or the
    /// request timeout firing) only stops waiting for it. etcd before 3.5.5 panics when the
    /// context of a read-only Txn is cancelled while the server reads (etcd-io/etcd#14110), and a
    /// dropped gRPC call cancels it. So the call runs in a task of its own, without a deadline the
    /// server could see, and the request timeout is applied to waiting for that task.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let req = txn.to_pb(&self.ns)?;
        let how = match txn.is_read_only() {
            true => Call::read("Txn").detached(),
            false => Call::write("Txn"),
        };
        let resp = self
            .call(how, |ch, meta| {
                let req = req.clone();
                async move { stub::kv(ch).txn(meta.request(req)).await }
            })
            .await?;
        Ok(TxnResponse::from_pb(resp, &self.ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_compare_target() {
        let ns = Namespace::default().join(b"n/");
        let cases = [
            (Compare::value("k", CompareOp::Equal, "v"), compare::CompareTarget::Value),
            (Compare::version("k", CompareOp::Greater, 1), compare::CompareTarget::Version),
            (Compare::create_revision("k", CompareOp::Equal, 0), compare::CompareTarget::Create),
            (Compare::mod_revision("k", CompareOp::Less, 9), compare::CompareTarget::Mod),
            (Compare::lease("k", CompareOp::NotEqual, 7), compare::CompareTarget::Lease),
        ];
        for (cmp, target) in cases {
            let pb = cmp.to_pb(&ns).unwrap();
            assert_eq!(pb.target, target as i32);
            assert_eq!(&pb.key[..], b"n/k");
        }
        let ranged = Compare::version("p/", CompareOp::Equal, 0).with_prefix().to_pb(&ns).unwrap();
        assert_eq!(&ranged.range_end[..], b"n/p0");
    }

    #[test]
    fn read_only_detection_sees_nested_txns() {
        let reads = Txn::new().and_then([TxnOp::get("a", GetOptions::new())]);
        assert!(reads.is_read_only());
        let nested_write =
            Txn::new().or_else([TxnOp::txn(Txn::new().and_then([TxnOp::delete("a", DeleteOptions::new())]))]);
        assert!(!nested_write.is_read_only());
    }

    #[test]
    fn empty_keys_fail_before_the_rpc() {
        let ns = Namespace::default();
        assert!(Txn::new().when([Compare::value("", CompareOp::Equal, "v")]).to_pb(&ns).is_err());
        assert!(Txn::new().and_then([TxnOp::put("", "v", PutOptions::new())]).to_pb(&ns).is_err());
    }
}
