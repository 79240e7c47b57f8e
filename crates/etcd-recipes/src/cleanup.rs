//! [`Cleanup`]: the one way a recipe undoes what it wrote, and the only type that releases
//! anything from a `Drop`.
//!
//! A cleanup is armed *before* the request that creates what it removes is sent (the key name is
//! known in advance), so a request whose answer never arrives (a timeout, a dropped future, a
//! member dying mid-call) leaves nothing behind. It is disarmed only after its own RPC succeeded:
//! a cancelled `unlock()`, `resign()` or `try_lock` cleanup still runs, from `Drop`, in the
//! background, retried with backoff until it succeeds, the lease it concerns is gone, or
//! [`GIVE_UP`] passes. The session slot it holds (see `session.rs`) is given back only then, so
//! the same session cannot lock the same name again while a release is still on its way.

use std::time::Duration;

use bytes::Bytes;
use etcd_wire::{Client, Compare, CompareOp, DeleteOptions, Txn, TxnOp};

use crate::error::{Error, Result};
use crate::session::Slot;
use crate::trace::{OpTrace, Tracer};

/// How long a background cleanup keeps retrying before it leaves the rest to the lease's TTL.
const GIVE_UP: Duration = Duration::from_secs(30);

/// What a cleanup does, in one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// `Txn If(CreateRevision(key) == revision) Then Delete(key)`: that incarnation only.
    FencedDelete { key: Bytes, revision: i64 },
    /// `Txn If(Lease(key) == lease) Then Delete(key)`: a key this lease may have created, whose
    /// create revision we never learned (the answer was lost).
    DeleteIfLease { key: Bytes, lease: i64 },
    /// `Txn If(Value(key) == value) Then Delete(key)`: a lease-less key marked with a unique value.
    DeleteIfValue { key: Bytes, value: Bytes },
    /// `LeaseRevoke(lease)`: the lease and every key on it.
    Revoke { lease: i64 },
}

impl Action {
    /// The key (or lease) it concerns, for traces.
    fn label(&self) -> Bytes {
        match self {
            Action::FencedDelete { key, .. }
            | Action::DeleteIfLease { key, .. }
            | Action::DeleteIfValue { key, .. } => key.clone(),
            Action::Revoke { lease } => Bytes::from(format!("lease {lease:x}")),
        }
    }

    /// The Txn of a delete action; `None` for a revoke.
    pub(crate) fn txn(&self) -> Option<Txn> {
        let (key, compare) = match self {
            Action::FencedDelete { key, revision } => {
                (key, Compare::create_revision(key.clone(), CompareOp::Equal, *revision))
            }
            Action::DeleteIfLease { key, lease } => (key, Compare::lease(key.clone(), CompareOp::Equal, *lease)),
            Action::DeleteIfValue { key, value } => (key, Compare::value(key.clone(), CompareOp::Equal, value.clone())),
            Action::Revoke { .. } => return None,
        };
        Some(Txn::new().when([compare]).and_then([TxnOp::delete(key.clone(), DeleteOptions::new())]))
    }

    /// Runs it once: whether it removed something (`false`: it was already gone, or not ours).
    async fn run(&self, op: &mut OpTrace) -> Result<bool> {
        let label = self.label();
        match self {
            Action::Revoke { lease } => {
                let client = op.client().clone();
                match op.rpc("LeaseRevoke", &label, client.lease_revoke(*lease)).await {
                    Ok(_) => Ok(true),
                    Err(etcd_wire::Error::LeaseNotFound { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            _ => match self.txn() {
                Some(txn) => Ok(op.txn("Txn", &label, txn).await?.succeeded),
                None => Ok(false),
            },
        }
    }
}

/// An armed undo action; see the module docs.
#[derive(Debug)]
pub(crate) struct Cleanup {
    client: Client,
    action: Action,
    armed: bool,
    slot: Option<Slot>,
    tracer: Tracer,
    recipe: &'static str,
    /// When the hold this cleanup releases began (a lock guard's release): the release records
    /// the hold's length ([`crate::observe::released`]), once, whichever way it runs.
    held_since: Option<std::time::Instant>,
    /// The runtime the cleanup was armed on, to run it from `Drop` wherever that happens.
    runtime: Option<tokio::runtime::Handle>,
}

impl Cleanup {
    /// Arms `action`, to run through `op`'s client unless [`disarm`](Self::disarm)ed.
    pub(crate) fn arm(op: &OpTrace, action: Action) -> Self {
        Cleanup {
            client: op.client().clone(),
            action,
            armed: true,
            slot: None,
            tracer: Tracer::default(),
            recipe: "cleanup",
            held_since: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Holds `slot` until the cleanup has run (or is disarmed and dropped).
    pub(crate) fn with_slot(mut self, slot: Option<Slot>) -> Self {
        self.slot = slot;
        self
    }

    /// Reports the cleanup's RPCs to `tracer` under `recipe` when it runs as a release.
    pub(crate) fn traced(mut self, tracer: &Tracer, recipe: &'static str) -> Self {
        (self.tracer, self.recipe) = (tracer.clone(), recipe);
        self
    }

    /// Releases a hold that began at `since` (see the field).
    pub(crate) fn holding(mut self, since: std::time::Instant) -> Self {
        self.held_since = Some(since);
        self
    }

    /// Records the end of the hold it releases, the first time it is asked to.
    fn record_release(&mut self) {
        if let Some(since) = self.held_since.take() {
            crate::observe::released(self.recipe, since.elapsed());
        }
    }

    /// Replaces the action (e.g. once the create revision of the key is known).
    pub(crate) fn set(&mut self, action: Action) {
        self.action = action;
    }

    /// The operation finished and what it wrote stays: nothing will run. Returns the slot.
    pub(crate) fn disarm(mut self) -> Option<Slot> {
        self.armed = false;
        self.slot.take()
    }

    /// Runs the action now; disarmed only if it succeeded. Whether it removed something.
    pub(crate) async fn run(mut self, op: &mut OpTrace) -> Result<bool> {
        let removed = self.action.run(op).await?;
        self.armed = false;
        Ok(removed)
    }

    /// Runs the action now as a release, with its own traced operation (`unlock`, `resign`).
    pub(crate) async fn release(mut self, op_name: &'static str) -> Result<bool> {
        self.record_release();
        let mut op = self.tracer.op(&self.client, self.recipe, op_name);
        self.run(&mut op).await
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.record_release();
        let Some(rt) = self.runtime.clone().or_else(|| tokio::runtime::Handle::try_current().ok()) else {
            tracing::warn!(action = ?self.action, "no Tokio runtime to run a cleanup on; the lease's TTL will remove it");
            return;
        };
        let (action, slot) = (self.action.clone(), self.slot.take());
        let mut op = self.tracer.op(&self.client, self.recipe, "cleanup");
        rt.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut backoff = Duration::from_millis(50);
            loop {
                match action.run(&mut op).await {
                    Ok(_) | Err(Error::SessionExpired) => break,
                    Err(e) if started.elapsed() >= GIVE_UP => {
                        tracing::warn!(error = %e, ?action, "giving up a background cleanup; the lease's TTL will remove the rest");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, ?action, ?backoff, "background cleanup failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_wire::CompareTarget;

    #[test]
    fn each_delete_is_fenced_by_what_identifies_our_incarnation() {
        let key = Bytes::from_static(b"lock/1");
        let fenced = Action::FencedDelete { key: key.clone(), revision: 7 }.txn().expect("a txn");
        assert_eq!(fenced.compares()[0].key(), &key);
        assert!(matches!(fenced.compares()[0].target(), CompareTarget::CreateRevision(7)));
        let by_lease = Action::DeleteIfLease { key: key.clone(), lease: 0x2a }.txn().expect("a txn");
        assert!(matches!(by_lease.compares()[0].target(), CompareTarget::Lease(0x2a)));
        let by_value = Action::DeleteIfValue { key, value: Bytes::from_static(b"v") }.txn().expect("a txn");
        assert!(matches!(by_value.compares()[0].target(), CompareTarget::Value(v) if v == &b"v"[..]));
        assert!(Action::Revoke { lease: 1 }.txn().is_none());
        assert!(!by_lease.is_read_only());
    }
}
