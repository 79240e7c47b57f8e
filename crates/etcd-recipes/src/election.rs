//! Election: leader election on a name, wire-compatible with Go's `concurrency.Election` (and so
//! with `etcdctl elect` and the server-side Election RPCs).
//!
//! Candidates stand in line under `<name>/` (see `line.rs`), each key holding the candidate's
//! value; the front of the line is the leader. In RPCs:
//!
//! - campaign: join the line (one Txn; a session already in line keeps its key and, if the value
//!   differs, proclaims the new one), wait to reach the front (watch the predecessor and our own
//!   key, Txn checks), and re-check our own key before reporting leadership (etcd #11051).
//! - proclaim: `Txn If(CreateRevision(me) == my revision) Then Put(me, value, lease)`.
//! - resign: `Txn If(CreateRevision(me) == my revision) Then Delete(me)`.
//! - leader: `Range(<name>/, oldest by create revision, limit 1)`.
//! - observe: `Range` the leader, watch `<name>/` from the next revision, and on each batch of
//!   events `Range` the leader again, reporting it when it changed. Trusting the events instead
//!   reports the wrong leader when several candidates appear in one batch (etcd #18163).

use bytes::Bytes;
use etcd_wire::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::line::{delete_fenced, join, lease_gone, wait_front};
use crate::session::Session;
use crate::trace::Tracer;
use crate::wait::check_name;

/// An election on a name, for one session. See the module docs for the algorithm.
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    prefix: Bytes,
    tracer: Tracer,
}

impl Election {
    /// An election on `name` (candidate keys live under `name/`). Fails on an empty name.
    pub fn new(session: &Session, name: &str) -> Result<Election> {
        check_name(name)?;
        Ok(Election { session: session.clone(), prefix: Bytes::from(format!("{name}/")), tracer: Tracer::default() })
    }

    /// Reports every step to `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Stands as a candidate with `value` and waits until elected. Dropping the future withdraws
    /// the candidacy (our key is removed).
    pub async fn campaign(&self, value: impl Into<Bytes>) -> Result<Leadership> {
        let value = value.into();
        let mut op = self.tracer.op("election", "campaign");
        let mut place = join(&self.session, &self.prefix, value.clone(), &mut op).await?;
        let leadership = Leadership {
            client: place.client.clone(),
            key: place.key.clone(),
            revision: place.revision,
            lease: self.session.lease_id(),
        };
        if place.value != value {
            leadership.proclaim(value).await?;
        }
        wait_front(&self.session, &self.prefix, &mut place, &mut op).await?;
        place.keep();
        op.note(|| format!("elected with fencing token {}", place.revision));
        Ok(leadership)
    }

    /// The leadership of a known leader key and its create revision (e.g. read with
    /// [`leader`](Self::leader) after a restart that kept the session's lease), to proclaim or
    /// resign without campaigning again. Go's `ResumeElection`.
    pub fn resume(&self, key: impl Into<Bytes>, create_revision: i64) -> Leadership {
        Leadership {
            client: self.session.client().clone(),
            key: key.into(),
            revision: create_revision,
            lease: self.session.lease_id(),
        }
    }

    /// The current leader's key and value, or [`Error::NoLeader`].
    pub async fn leader(&self) -> Result<KeyValue> {
        leader(self.session.client(), &self.prefix).await?.ok_or(Error::NoLeader)
    }

    /// A stream of leaders: the current one (once there is one), then each change of leader or of
    /// its value, in order. It ends only with an error; drop it to stop observing.
    pub fn observe(&self) -> impl Stream<Item = Result<KeyValue>> + Send + 'static {
        let (client, prefix) = (self.session.client().clone(), self.prefix.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(e) = observe(&client, &prefix, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}

/// The oldest candidate, if any.
async fn leader(client: &Client, prefix: &Bytes) -> Result<Option<KeyValue>> {
    let oldest = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
    Ok(client.get(prefix.clone(), oldest).await?.kvs.into_iter().next())
}

/// Sends each new leader (key, create revision, value) on `tx` until `tx` is closed.
async fn observe(client: &Client, prefix: &Bytes, tx: &tokio::sync::mpsc::Sender<Result<KeyValue>>) -> Result<()> {
    let mut last: Option<KeyValue> = None;
    loop {
        // Watch first, then read: a change after the read arrives as an event.
        let mut watcher = client.watch(prefix.clone(), WatchOptions::new().with_prefix()).await?;
        loop {
            let now = leader(client, prefix).await?;
            let changed = match (&now, &last) {
                (Some(n), Some(l)) => (n.create_revision, n.mod_revision) != (l.create_revision, l.mod_revision),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if changed
                && let Some(n) = &now
                && tx.send(Ok(n.clone())).await.is_err()
            {
                return Ok(());
            }
            last = now;
            match watcher.next().await {
                Some(Ok(_)) => continue,
                Some(Err(etcd_wire::Error::Compacted { .. })) | None => break,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// Leadership won by [`Election::campaign`]. Dropping it does not resign: the key stays until
/// [`resign`](Self::resign) or the session ends.
#[derive(Debug, Clone)]
pub struct Leadership {
    client: Client,
    key: Bytes,
    revision: i64,
    lease: i64,
}

impl Leadership {
    /// The leader key (`<name>/<lease hex>`).
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The leader key's create revision: increasing across terms, for fencing writes elsewhere.
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }

    /// A compare that holds exactly while this leadership lasts, for the caller's own Txns.
    pub fn is_leader(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// A Txn that already carries [`is_leader`](Self::is_leader).
    pub fn txn(&self) -> Txn {
        Txn::new().when([self.is_leader()])
    }

    /// Announces a new value without a new election; [`Error::NotOwner`] if no longer leader.
    pub async fn proclaim(&self, value: impl Into<Bytes>) -> Result<()> {
        let put = TxnOp::put(self.key.clone(), value.into(), PutOptions::new().with_lease(self.lease));
        let resp = self.client.txn(self.txn().and_then([put])).await.map_err(lease_gone)?;
        if !resp.succeeded {
            return Err(Error::NotOwner("no longer the leader".to_owned()));
        }
        Ok(())
    }

    /// Gives up leadership (fenced: never deletes a newer leader's key).
    pub async fn resign(self) -> Result<()> {
        let mut op = Tracer::default().op("election", "resign");
        if !delete_fenced(&self.client, &self.key, self.revision, &mut op).await? {
            return Err(Error::NotOwner("no longer the leader".to_owned()));
        }
        Ok(())
    }
}
