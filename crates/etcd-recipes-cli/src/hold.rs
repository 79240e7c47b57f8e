//! Noticing that a held lock or leadership is gone: the session's lease was lost (expired,
//! revoked, or unanswered past its deadline), or the key that held it was deleted.

use std::time::Duration;

use bytes::Bytes;
use etcd_recipes::{Session, SessionEnd};
use etcd_wire::{EventKind, GetOptions, WatchOptions};
use futures::StreamExt;

/// Why a held lock or leadership ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The session ended: its lease expired, was revoked, or went unanswered past its deadline.
    Session(String),
    /// The key that held it was deleted (or replaced) by someone else.
    Key(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Session(why) | Lost::Key(why) => f.write_str(why),
        }
    }
}

/// Resolves when the session ends or `key` (created at `create_revision`) stops existing; `what`
/// names the key in messages ("lock key", "leader key").
pub(crate) async fn lost(session: &Session, what: &str, key: &Bytes, create_revision: i64) -> Lost {
    tokio::select! {
        end = session.lost() => Lost::Session(describe(end, session)),
        why = key_gone(session, what, key, create_revision) => Lost::Key(why),
    }
}

fn describe(end: SessionEnd, session: &Session) -> String {
    let lease = session.lease_id();
    let ttl = session.ttl().as_secs();
    match end {
        SessionEnd::LeaseLost(reason) => format!("{reason} (lease {lease:x}, TTL {ttl}s)"),
        SessionEnd::Closed => format!("the session was closed (lease {lease:x})"),
        _ => format!("the session stopped keeping its lease alive (lease {lease:x})"),
    }
}

/// Resolves with a reason once the key's incarnation is gone. Retries quietly while etcd does not
/// answer: if it stays away, the session's deadline ends the wait instead.
async fn key_gone(session: &Session, what: &str, key: &Bytes, create_revision: i64) -> String {
    let client = session.client();
    let shown = String::from_utf8_lossy(key).into_owned();
    loop {
        // Watch from now, then read: a delete after the read arrives as an event.
        let Ok(mut watcher) = client.watch(key.clone(), WatchOptions::new().with_no_put()).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match client.get(key.clone(), GetOptions::new().with_keys_only()).await {
            Ok(now) => match now.kvs.first() {
                None => return format!("the {what} {shown} was deleted"),
                Some(kv) if kv.create_revision != create_revision => {
                    return format!(
                        "the {what} {shown} was deleted and created again (create revision {} instead of {create_revision})",
                        kv.create_revision
                    );
                }
                Some(_) => {}
            },
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        while let Some(Ok(resp)) = watcher.next().await {
            if let Some(ev) = resp.events.iter().find(|e| e.kind == EventKind::Delete) {
                return format!("the {what} {shown} was deleted at revision {}", ev.kv.mod_revision);
            }
        }
        // The watch ended (compaction, a broken stream): look again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
