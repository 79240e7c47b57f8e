//! The public futures and handles are `Send` (and handles `Sync`), so they can be spawned on a
//! multi-threaded runtime (tokio's `async_send_sync.rs` pattern). Compile-time only: the
//! functions are never run.

#![allow(dead_code, clippy::let_underscore_future, reason = "compile-time assertions only")]

use etcd_recipes::{
    DistributedLock, Election, LeaderLatch, Leadership, LockGuard, MultiGuard, MultiLock, Mutex, ResumeToken,
    Semaphore, Session,
};
use etcd_wire::{Client, ClientOptions, DowngradeAction, GetOptions, GetStream, PutOptions, Txn, WatchOptions};

fn send<T: Send>(_: T) {}
fn send_sync<T: Send + Sync>() {}

fn wire_futures(c: &Client) {
    send(Client::connect(["x:1"], ClientOptions::default()));
    send(c.get("k", GetOptions::new()));
    send(c.put("k", "v", PutOptions::new()));
    send(c.txn(Txn::new()));
    send(c.watch("k", WatchOptions::new()));
    send(c.lease_grant(5, None));
    send(c.lease_keep_alive(1));
    send(c.lock("n", 1));
    send(c.campaign("n", 1, "v"));
    send(c.member_list(false));
    send(c.status());
    send(c.hash());
    send(c.downgrade(DowngradeAction::Validate, "3.4"));
    send(c.get_stream("k", GetOptions::new()));
}

fn wire_stream_futures(s: GetStream) {
    send(s.merge());
}

fn recipe_futures(
    s: &Session,
    m: &Mutex,
    sem: &Semaphore,
    e: &Election,
    l: &dyn DistributedLock,
    g: LockGuard,
    lead: Leadership,
) {
    send(Session::new(s.client()));
    send(m.lock());
    send(m.try_lock());
    send(l.lock());
    send(sem.acquire());
    send(sem.try_acquire());
    send(e.campaign("v"));
    send(e.observe());
    send(g.unlock());
    send(lead.resign());
    send(s.close());
    send(s.lost());
}

fn latch_futures(latch: &LeaderLatch, owned: LeaderLatch) {
    send(latch.wait_leader());
    send(owned.close());
}

#[test]
fn latch_handles_are_send_and_sync() {
    send_sync::<LeaderLatch>();
    send_sync::<etcd_recipes::LatchState>();
}

fn resume_futures(s: &Session, m: &Mutex, token: &ResumeToken) {
    send(Session::resume(s.client(), 1));
    send(m.resume(token));
}

fn multilock_futures(m: &MultiLock, g: MultiGuard) {
    send(m.lock());
    send(m.try_lock());
    send(g.lost());
    send(g.unlock());
}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<Client>();
    send_sync::<Session>();
    send_sync::<Mutex>();
    send_sync::<Semaphore>();
    send_sync::<Election>();
    send_sync::<LockGuard>();
    send_sync::<ResumeToken>();
    send_sync::<MultiLock>();
    send_sync::<MultiGuard>();
    send_sync::<etcd_wire::KeepAlive>();
    send_sync::<Box<dyn DistributedLock>>();
}
