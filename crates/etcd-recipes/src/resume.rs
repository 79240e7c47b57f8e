//! Resuming a held lock after a restart (etcd #22382): a process that persisted its guard's
//! [`ResumeToken`] (lease, key, fencing token) takes the lock back without waiting in line, or
//! learns precisely why it cannot ([`Unresumable`]).
//!
//! A lock key lives as long as its lease, and a process that dies without releasing leaves its
//! key in place until the lease's TTL runs out. Within that time the key is still the front of
//! the line: whoever keeps the lease alive holds the lock. In RPCs:
//!
//! - [`Session::resume`](crate::Session::resume): `LeaseTimeToLive(lease)` (TTL ≤ 0: the lease
//!   expired or never existed, [`Unresumable::LeaseExpired`]), then the lease joins the client's
//!   keep-alive stream, whose first answer proves it alive now.
//! - [`Mutex::resume`](crate::Mutex::resume): one read-only Txn
//!   `If(CreateRevision(key) == token, Lease(key) == lease) Then() Else(Range(key))`.
//!   Success means the key is the very incarnation the token names, still on our lease: nobody
//!   can have come between (a waiter is in only once that incarnation is deleted), so the guard
//!   handed out is the original one, with the same fencing token. Otherwise the Range says why:
//!   no key ([`Unresumable::KeyGone`]; [`Unresumable::LeaseExpired`] if the session ended
//!   meanwhile), another incarnation ([`Unresumable::KeyRecreated`]), or the same incarnation
//!   rewritten onto another lease ([`Unresumable::OtherLease`]).
//!
//! A resume never joins the line and never writes: it creates no key, so a failed or cancelled
//! resume leaves everything as it found it (a cancelled one can be tried again while the session
//! keeps the lease alive). The guard releases like any other, with a fenced delete.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use etcd_wire::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::cleanup::{Action, Cleanup};
use crate::error::{Error, Result};
use crate::held::Held;
use crate::lock::LockGuard;
use crate::session::Session;
use crate::trace::OpTrace;

/// What the text form of a [`ResumeToken`] starts with; a new layout would get a new one.
const VERSION: &str = "etcd-lock-v1";

/// Everything a restarted process needs to take back a lock it held: the lease, the lock key and
/// its create revision (the fencing token). From [`LockGuard::resume_token`]; used by
/// [`Session::resume`] and [`Mutex::resume`](crate::Mutex::resume).
///
/// Its text form, from `Display` and parsed by `FromStr`, is stable:
/// `etcd-lock-v1:<lease id in hex>:<fencing token>:<key in hex>`, e.g.
/// `etcd-lock-v1:694d7a1b2c3d4e5f:42:6a6f62732f6e696768746c792f...`. Persist it before acting on
/// the lock. It is no secret (anyone may read the key and its lease from etcd), but it lets its
/// bearer keep the lock, so store it as you would the lock's work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken {
    lease: i64,
    key: Bytes,
    revision: i64,
}

impl ResumeToken {
    /// A token from its three parts, for a process that persisted them separately. Fails with
    /// [`Error::InvalidResumeToken`] on a lease or fencing token that is not positive, or an
    /// empty key.
    pub fn new(lease_id: i64, key: impl Into<Bytes>, fencing_token: i64) -> Result<ResumeToken> {
        let key = key.into();
        if lease_id <= 0 {
            return Err(Error::InvalidResumeToken(format!("lease id {lease_id} is not positive")));
        }
        if fencing_token <= 0 {
            return Err(Error::InvalidResumeToken(format!("fencing token {fencing_token} is not positive")));
        }
        if key.is_empty() {
            return Err(Error::InvalidResumeToken("the key is empty".into()));
        }
        Ok(ResumeToken { lease: lease_id, key, revision: fencing_token })
    }

    pub(crate) fn of(held: &Held) -> ResumeToken {
        ResumeToken { lease: held.lease_id(), key: held.key.clone(), revision: held.revision }
    }

    /// The lease the lock key is bound to: resume it with [`Session::resume`].
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// The lock key (without the client's namespace).
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The key's create revision when the lock was taken: the guard's fencing token.
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VERSION}:{:x}:{}:", self.lease, self.revision)?;
        self.key.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for ResumeToken {
    type Err = Error;

    /// Parses the text form (see [`ResumeToken`]); anything else is [`Error::InvalidResumeToken`].
    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: &str| Error::InvalidResumeToken(format!("{what} in {s:?}"));
        let mut parts = s.trim().split(':');
        if parts.next() != Some(VERSION) {
            return Err(bad(&format!("no {VERSION:?} prefix")));
        }
        let (Some(lease), Some(revision), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not four ':'-separated fields"));
        };
        let lease = i64::from_str_radix(lease, 16).map_err(|_| bad("a lease id that is not hex"))?;
        let revision = revision.parse::<i64>().map_err(|_| bad("a fencing token that is not a number"))?;
        if key.len() % 2 != 0 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a key that is not hex"));
        }
        let key: Vec<u8> = (0..key.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&key[i..i + 2], 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("a key that is not hex"))?;
        ResumeToken::new(lease, key, revision)
    }
}

/// Why a lock cannot be resumed: it is no longer the token's. The lock is lost for good;
/// acquire it anew (with a new fencing token) if it is still wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unresumable {
    /// The lease expired or was revoked (or never existed), and every key on it with it.
    LeaseExpired,
    /// The key no longer exists: somebody deleted it (its lease is still alive).
    KeyGone,
    /// The key exists, but as another incarnation: deleted and created again at this revision.
    KeyRecreated {
        /// The create revision of the key now.
        create_revision: i64,
    },
    /// The key is the token's incarnation but was rewritten onto another lease (0: none).
    OtherLease {
        /// The lease the key is bound to now.
        lease: i64,
    },
}

impl fmt::Display for Unresumable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresumable::LeaseExpired => f.write_str("its lease expired"),
            Unresumable::KeyGone => f.write_str("its key was deleted"),
            Unresumable::KeyRecreated { create_revision } => {
                write!(f, "its key was created again (create revision {create_revision})")
            }
            Unresumable::OtherLease { lease } => write!(f, "its key is now bound to lease {lease:x}"),
        }
    }
}

/// Takes back the lock `token` names as `key`, on `session`'s lease, in one read-only Txn
/// (module docs). `key` is the lock's key for this session: a token for another is refused.
pub(crate) async fn take_back(
    session: &Session,
    key: Bytes,
    token: &ResumeToken,
    op: &mut OpTrace,
) -> Result<LockGuard> {
    if token.lease != session.lease_id() {
        return Err(Error::invalid(format!(
            "the token's lease {:x} is not the session's {:x}; resume that lease with Session::resume",
            token.lease,
            session.lease_id()
        )));
    }
    if token.key != key {
        return Err(Error::invalid(format!(
            "the token's key {} is not this lock's {}",
            String::from_utf8_lossy(&token.key),
            String::from_utf8_lossy(&key)
        )));
    }
    if session.is_lost() {
        return Err(Error::NotResumable(Unresumable::LeaseExpired));
    }
    // Another task of this session holding (or resuming) the lock is a holder like any other.
    let slot = session.try_claim(&key).ok_or(Error::Locked)?;
    let txn = Txn::new()
        .when([
            Compare::create_revision(key.clone(), CompareOp::Equal, token.revision),
            Compare::lease(key.clone(), CompareOp::Equal, token.lease),
        ])
        .or_else([TxnOp::get(key.clone(), GetOptions::new().with_keys_only())]);
    let resp = op.txn("Txn(resume)", &key, txn).await?;
    if !resp.succeeded {
        let now = resp.gets().next().and_then(|g| g.kvs.first().cloned());
        return Err(Error::NotResumable(match now {
            None if session.is_lost() => Unresumable::LeaseExpired,
            None => Unresumable::KeyGone,
            Some(kv) if kv.create_revision != token.revision => {
                Unresumable::KeyRecreated { create_revision: kv.create_revision }
            }
            Some(kv) => Unresumable::OtherLease { lease: kv.lease },
        }));
    }
    // The key stands for a held lock again: armed only now, so a failed resume deletes nothing.
    let release = Cleanup::arm(op, Action::FencedDelete { key: key.clone(), revision: token.revision });
    let held = Held::new(session, key, token.revision);
    Ok(LockGuard::new(held, release.with_slot(Some(slot)), op, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_itself() {
        let token = ResumeToken::new(0x694d_7a1b, &b"jobs/nightly/694d7a1b"[..], 42).expect("valid");
        let text = token.to_string();
        assert!(text.starts_with("etcd-lock-v1:694d7a1b:42:"), "{text}");
        assert_eq!(text.parse::<ResumeToken>().expect("parses"), token);
        let binary = ResumeToken::new(i64::MAX, vec![0u8, b':', 0xff], 1).expect("valid");
        assert_eq!(binary.to_string().parse::<ResumeToken>().expect("parses"), binary);
    }

    #[test]
    fn garbage_is_an_invalid_resume_token() {
        for garbage in [
            "",
            "garbage",
            "etcd-lock-v1",
            "etcd-lock-v2:1:2:6b",
            "etcd-lock-v1:1:2",
            "etcd-lock-v1:1:2:6b:extra",
            "etcd-lock-v1:xyz:2:6b",
            "etcd-lock-v1:1:two:6b",
            "etcd-lock-v1:1:2:6",
            "etcd-lock-v1:1:2:zz",
            "etcd-lock-v1:1:2:",
            "etcd-lock-v1:0:2:6b",
            "etcd-lock-v1:1:-2:6b",
            "etcd-lock-v1:-1:2:6b",
            "etcd-lock-v1:1:2:é6",
        ] {
            let parsed = garbage.parse::<ResumeToken>();
            assert!(matches!(parsed, Err(Error::InvalidResumeToken(_))), "{garbage:?}: {parsed:?}");
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(Unresumable::KeyGone.to_string(), "its key was deleted");
        assert!(Unresumable::KeyRecreated { create_revision: 9 }.to_string().contains('9'));
        assert!(Unresumable::OtherLease { lease: 0xab }.to_string().contains("ab"));
    }
}
