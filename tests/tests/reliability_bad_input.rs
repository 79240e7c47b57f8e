//! The bad-input table, checked in one place against real etcd: each case gets its typed error
//! (the exact variant), no panic, and nothing written (the store revision, the keys under the
//! case's prefix and the lease list are compared before and after). The table is printed as
//! markdown (`-- --nocapture`) and kept in tests/RELIABILITY.md.
//!
//! The findings this table led to (and their fixes) have regression tests of their own in
//! `reliability_findings.rs`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_harness::{ClientTls, ClusterConfig, EtcdCluster, TcpProxy};
use etcd_recipes::{
    Barrier, DoubleBarrier, Election, Error as RecipeError, LeaseTtlLock, MultiLock, Mutex, NaiveLock, PriorityQueue,
    Queue, ResumeToken, RpcLock, RwMutex, Semaphore, Session, Strategy,
};
use etcd_tests::single;
use etcd_wire::{
    Client, ClientOptions, DeleteOptions, Error as WireError, GetOptions, PutOptions, TlsOptions, TxnOp, WatchOptions,
};
use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// The name of an error's variant (`Etcd(RequestTooLarge)` for a wrapped wire error).
fn variant(e: &dyn Debug) -> String {
    let text = format!("{e:?}");
    let end = text.find([' ', '{', '(']).unwrap_or(text.len());
    let head = &text[..end];
    if head == "Etcd" {
        let inner = &text[5..];
        let inner_end = inner.find([' ', '{', '(', ')']).unwrap_or(inner.len());
        return format!("Etcd({})", &inner[..inner_end]);
    }
    head.to_owned()
}

/// What a call returned, for the table: `Ok` or the error variant.
fn outcome<T, E: Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => variant(e),
    }
}

/// The table being checked: every row is recorded, failures are collected, all are printed.
#[derive(Default)]
struct Table {
    rows: Vec<(String, String, String, bool)>,
}

impl Table {
    /// Records a row: `case`, the `call` made, what it returned, whether it is what we expect.
    fn row(&mut self, case: &str, call: &str, got: String, ok: bool) {
        self.rows.push((case.to_owned(), call.to_owned(), got, ok));
    }

    fn finish(self) -> Result<()> {
        println!("| case | call | returns | |\n|---|---|---|---|");
        for (case, call, got, ok) in &self.rows {
            println!("| {case} | `{call}` | {got} | {} |", if *ok { "ok" } else { "UNEXPECTED" });
        }
        let bad: Vec<_> = self.rows.iter().filter(|r| !r.3).map(|r| format!("{} / {}: {}", r.0, r.1, r.2)).collect();
        if !bad.is_empty() {
            bail!("{} unexpected rows:\n{}", bad.len(), bad.join("\n"));
        }
        Ok(())
    }
}

/// What "nothing written" is checked against: the store revision, the keys under a prefix, the leases.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    revision: i64,
    keys: BTreeSet<String>,
    leases: BTreeSet<i64>,
}

async fn snapshot(c: &Client, prefix: &str) -> Result<Snapshot> {
    let got = c.get(prefix.to_owned(), GetOptions::new().with_prefix().with_keys_only()).await?;
    Ok(Snapshot {
        revision: got.header.revision,
        keys: got.kvs.iter().map(|kv| kv.key_str().into_owned()).collect(),
        leases: c.leases().await?.into_iter().collect(),
    })
}

/// Runs `call`, then checks it returned the error `want` names and that nothing changed under
/// `prefix` (revision, keys, leases).
macro_rules! case {
    ($t:expr, $c:expr, $prefix:expr, $case:expr, $call:expr, $want:expr, $body:expr) => {{
        let before = snapshot($c, $prefix).await?;
        let r = $body;
        let after = snapshot($c, $prefix).await?;
        let got = outcome(&r);
        let same = before == after;
        let text = if same { got.clone() } else { format!("{got}, but wrote: {before:?} -> {after:?}") };
        $t.row($case, $call, text, got == $want && same);
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_typed_error_and_writes_nothing() -> Result<()> {
    let mut t = Table::default();
    let etcd = single()?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let s = Session::new(&c).await?;
    c.put("bad/seed", "x", PutOptions::new()).await?;

    // Empty lock names and prefixes: rejected before any RPC.
    for st in Strategy::ALL {
        let call = format!("Strategy::{st:?}.new_lock(&session, \"\")");
        case!(t, &c, "bad/", "empty lock name", &call, "InvalidArgument", st.new_lock(&s, ""));
    }
    case!(t, &c, "bad/", "empty lock name", "Mutex::new(&s, \"\")", "InvalidArgument", Mutex::new(&s, ""));
    case!(t, &c, "bad/", "empty lock name", "NaiveLock::new(&s, \"\")", "InvalidArgument", NaiveLock::new(&s, ""));
    case!(t, &c, "bad/", "empty lock name", "RpcLock::new(&s, \"\")", "InvalidArgument", RpcLock::new(&s, ""));
    case!(t, &c, "bad/", "empty lock name", "RwMutex::new(&s, \"\")", "InvalidArgument", RwMutex::new(&s, ""));
    case!(
        t,
        &c,
        "bad/",
        "empty lock name",
        "LeaseTtlLock::new(&s, \"\")",
        "InvalidArgument",
        LeaseTtlLock::new(&s, "")
    );
    case!(t, &c, "bad/", "empty election name", "Election::new(&s, \"\")", "InvalidArgument", Election::new(&s, ""));
    case!(
        t,
        &c,
        "bad/",
        "empty lock name",
        "Semaphore::new(&s, \"\", 2)",
        "InvalidArgument",
        Semaphore::new(&s, "", 2)
    );
    case!(
        t,
        &c,
        "bad/",
        "zero permits",
        "Semaphore::new(&s, name, 0)",
        "InvalidArgument",
        Semaphore::new(&s, "bad/sem", 0)
    );
    case!(
        t,
        &c,
        "bad/",
        "no lock names",
        "MultiLock::new(&s, [])",
        "InvalidArgument",
        MultiLock::new(&s, Vec::<&str>::new())
    );
    case!(
        t,
        &c,
        "bad/",
        "empty lock name",
        "MultiLock::new(&s, [name, \"\"])",
        "InvalidArgument",
        MultiLock::new(&s, ["bad/multi", ""])
    );
    case!(
        t,
        &c,
        "bad/",
        "malformed resume token",
        "\"garbage\".parse::<ResumeToken>()",
        "InvalidResumeToken",
        "garbage".parse::<ResumeToken>()
    );
    case!(
        t,
        &c,
        "bad/",
        "resume token of another lease",
        "Mutex::new(&s, name)?.resume(&token)",
        "InvalidArgument",
        Mutex::new(&s, "bad/resume")?.resume(&ResumeToken::new(s.lease_id() + 1, "bad/resume/1", 2)?).await
    );
    case!(
        t,
        &c,
        "bad/",
        "resume of an unknown lease",
        "Session::resume(&c, unknown)",
        "NotResumable",
        Session::resume(&c, 0x7fff_0000_0000_0001).await
    );
    case!(t, &c, "bad/", "empty prefix", "Barrier::new(&c, \"\")", "InvalidArgument", Barrier::new(&c, ""));
    case!(
        t,
        &c,
        "bad/",
        "empty prefix",
        "DoubleBarrier::new(&s, \"\", 2)",
        "InvalidArgument",
        DoubleBarrier::new(&s, "", 2)
    );
    case!(t, &c, "bad/", "empty prefix", "Queue::new(&c, \"\")", "InvalidArgument", Queue::new(&c, ""));
    case!(t, &c, "bad/", "empty prefix", "PriorityQueue::new(&c, \"\")", "InvalidArgument", PriorityQueue::new(&c, ""));
    case!(
        t,
        &c,
        "bad/",
        "empty key",
        "client.put(\"\", ..)",
        "InvalidArgument",
        c.put("", "v", PutOptions::new()).await
    );
    case!(
        t,
        &c,
        "bad/",
        "empty key",
        "client.watch(\"\", ..)",
        "InvalidArgument",
        c.watch("", WatchOptions::new()).await
    );

    // TTL 0 or negative: rejected before any RPC, no lease granted.
    for ttl in [0, -5] {
        let call = format!("Session::builder(&c).ttl({ttl}).build()");
        case!(t, &c, "bad/", "session TTL <= 0", &call, "InvalidArgument", Session::builder(&c).ttl(ttl).build().await);
        let call = format!("LeaseTtlLock::new(&s, \"bad/l\")?.with_ttl({ttl})");
        case!(t, &c, "bad/", "lock TTL <= 0", &call, "InvalidArgument", LeaseTtlLock::new(&s, "bad/l")?.with_ttl(ttl));
        let call = format!("client.lease_grant({ttl}, None)");
        case!(t, &c, "bad/", "lease TTL <= 0", &call, "InvalidArgument", c.lease_grant(ttl, None).await);
    }

    // A value above the server's request limit (etcd's default --max-request-bytes is 1.5 MiB;
    // gRPC refuses anything over 2 MiB before etcd sees it).
    let big = vec![b'x'; 1_600_000];
    let huge = vec![b'x'; 3 << 20];
    case!(
        t,
        &c,
        "bad/",
        "value above the request limit",
        "client.put(k, 1.6 MB)",
        "RequestTooLarge",
        c.put("bad/big", big.clone(), PutOptions::new()).await
    );
    case!(
        t,
        &c,
        "bad/",
        "value above the request limit",
        "client.put(k, 3 MiB)",
        "RequestTooLarge",
        c.put("bad/huge", huge, PutOptions::new()).await
    );
    let election = Election::new(&s, "bad/elect")?;
    case!(
        t,
        &c,
        "bad/",
        "value above the request limit",
        "election.campaign(1.6 MB)",
        "Etcd(RequestTooLarge)",
        election.campaign(big).await
    );

    // A txn over the max ops (128 by default), through a held lock's fenced Txn: refused whole.
    let guard = Mutex::new(&s, "bad/txn-lock")?.lock().await?;
    let ops = (0..129).map(|i| TxnOp::put(format!("bad/t/{i}"), "v", PutOptions::new()));
    case!(
        t,
        &c,
        "bad/t/",
        "txn over the max ops",
        "client.txn(guard.txn().and_then(129 puts))",
        "TooManyTxnOps",
        c.txn(guard.txn().and_then(ops)).await
    );
    let r = guard.unlock().await;
    t.row("txn over the max ops", "guard.unlock() afterwards", outcome(&r), r.is_ok());

    // A revision in the future, a compacted revision.
    let rev = c.put("bad/rev", "1", PutOptions::new()).await?.header.revision;
    case!(
        t,
        &c,
        "bad/",
        "revision in the future",
        "client.get(k, with_revision(now + 1000))",
        "FutureRevision",
        c.get("bad/rev", GetOptions::new().with_revision(rev + 1000)).await
    );
    c.put("bad/rev", "2", PutOptions::new()).await?;
    let compacted_at = c.put("bad/rev", "3", PutOptions::new()).await?.header.revision;
    c.compact(compacted_at, true).await?;
    case!(
        t,
        &c,
        "bad/",
        "compacted revision",
        "client.get(k, with_revision(compacted))",
        "Compacted",
        c.get("bad/rev", GetOptions::new().with_revision(rev)).await
    );
    let mut w = c.watch("bad/rev", WatchOptions::new().with_start_revision(rev)).await?;
    let first = tokio::time::timeout(Duration::from_secs(10), w.next()).await?.context("watch ended")?;
    let ok = matches!(&first, Err(WireError::Compacted { compact_revision: Some(r), .. }) if *r == compacted_at);
    t.row(
        "compacted revision",
        "client.watch(k, with_start_revision(compacted))",
        format!("{} (first item)", outcome(&first)),
        ok,
    );

    // A lock whose name (or prefix) is also a plain key (no lease: nobody's lock, never released):
    // try_lock and lock both fail at once with ForeignKey and leave nothing.
    c.put("bad/plain/job", "not a lock", PutOptions::new()).await?;
    c.put("bad/plainkey", "not a lock", PutOptions::new()).await?;
    for (st, name) in [
        (Strategy::Mutex, "bad/plain"),
        (Strategy::Rpc, "bad/plain"),
        (Strategy::Naive, "bad/plainkey"),
        (Strategy::LeaseTtl, "bad/plainkey"),
    ] {
        let lock = st.new_lock(&s, name)?;
        let snap = snapshot(&c, "bad/").await?;
        // Looked at as soon as the call returns: a try_lock that fails has already cleaned up.
        let r = lock.try_lock().await;
        let after = snapshot(&c, "bad/").await?;
        let same = snap.keys == after.keys && snap.leases == after.leases;
        t.row(
            "lock on a name or prefix that is a plain key",
            &format!("{st:?} try_lock(\"{name}\") with a plain key there"),
            outcome(&r),
            matches!(r, Err(RecipeError::ForeignKey { .. })) && same,
        );
        let r = tokio::time::timeout(Duration::from_secs(5), lock.lock()).await;
        let after = snapshot(&c, "bad/").await?;
        let same = snap.keys == after.keys && snap.leases == after.leases;
        let (returns, ok) = match r {
            Ok(r) => (outcome(&r), matches!(r, Err(RecipeError::ForeignKey { .. })) && same),
            Err(_) => ("still waiting after 5 s".into(), false),
        };
        t.row(
            "lock on a name or prefix that is a plain key",
            &format!("{st:?} lock(\"{name}\") with a plain key there"),
            returns,
            ok,
        );
    }

    // Lock twice in one session: the second waits for the first (a lock is held by a session and
    // name, not re-entrant), so try_lock says Locked and writes nothing.
    let m = Mutex::new(&s, "bad/twice")?;
    let g1 = m.lock().await?;
    case!(
        t,
        &c,
        "bad/",
        "lock twice",
        "Mutex try_lock() while the same session holds it",
        "Locked",
        m.try_lock().await
    );
    // A stale guard: its key was deleted behind its back and another session holds the lock now.
    c.delete(g1.key().clone(), DeleteOptions::new()).await?;
    let other = Session::new(&c).await?;
    let newer = Mutex::new(&other, "bad/twice")?.lock().await?;
    let newer_key = String::from_utf8_lossy(newer.key()).into_owned();
    case!(
        t,
        &c,
        "bad/twice/",
        "unlock a stale guard",
        "Mutex guard.unlock() after its key was deleted and another session took the lock",
        "NotOwner",
        g1.unlock().await
    );
    let still = c.get(newer_key.clone(), GetOptions::new().with_count_only()).await?.count == 1;
    t.row(
        "unlock a stale guard",
        "the newer holder's key after that",
        if still { "kept".into() } else { "DELETED".into() },
        still,
    );
    newer.unlock().await?;
    let leader = Election::new(&s, "bad/resign")?.campaign("me").await?;
    let copy = leader.clone();
    leader.resign().await?;
    case!(t, &c, "bad/", "unlock twice", "leadership.resign() (second)", "NotOwner", copy.resign().await);
    // The server-side lock, the same way: a stale guard after its key was deleted and another
    // session took the lock. While the stale guard lives, its session cannot lock the name again
    // (one holder per session and name), so try_lock says Locked at once.
    let rpc = RpcLock::new(&s, "bad/rpc-twice")?;
    let stale = rpc.lock().await?;
    c.delete(stale.key().clone(), DeleteOptions::new()).await?;
    let current = RpcLock::new(&other, "bad/rpc-twice")?.lock().await?;
    case!(
        t,
        &c,
        "bad/rpc-twice/",
        "lock twice",
        "RpcLock try_lock() while the same session's stale guard lives",
        "Locked",
        rpc.try_lock().await
    );
    case!(
        t,
        &c,
        "bad/rpc-twice/",
        "unlock a stale guard",
        "RpcLock guard.unlock() after its key was deleted and another session took the lock",
        "NotOwner",
        stale.unlock().await
    );
    let kept = c.get(current.key().clone(), GetOptions::new().with_count_only()).await?.count == 1;
    t.row(
        "unlock a stale guard",
        "the current RpcLock holder's key after that",
        if kept { "kept".into() } else { "DELETED".into() },
        kept,
    );
    current.unlock().await?;

    // Unlock after the session closed.
    for st in [Strategy::Mutex, Strategy::Naive, Strategy::Rpc] {
        let closing = Session::new(&c).await?;
        let g = st.new_lock(&closing, &format!("bad/closed-{st}"))?.lock().await?;
        closing.close().await?;
        let call = format!("{st:?} guard.unlock() after session.close()");
        case!(t, &c, "bad/", "unlock after the session closed", &call, "NotOwner", g.unlock().await);
        let call = format!("{st:?} lock() after session.close()");
        let lock = st.new_lock(&closing, &format!("bad/closed-{st}"))?;
        case!(t, &c, "bad/", "lock after the session closed", &call, "SessionExpired", lock.lock().await);
    }
    {
        // The lease TTL lock holds a lease of its own: closing the session does not release it.
        let closing = Session::new(&c).await?;
        let g = Strategy::LeaseTtl.new_lock(&closing, "bad/closed-lease")?.lock().await?;
        closing.close().await?;
        let held = c.get("bad/closed-lease", GetOptions::new().with_count_only()).await?.count == 1;
        let r = g.unlock().await;
        let gone = c.get("bad/closed-lease", GetOptions::new().with_count_only()).await?.count == 0;
        t.row(
            "unlock after the session closed",
            "LeaseTtl guard.unlock() after session.close()",
            format!("{} (the lock has its own lease: still held until this unlock)", outcome(&r)),
            held && r.is_ok() && gone,
        );
    }

    // Endpoints.
    // (`unix://PATH` is a valid endpoint since unix sockets are supported; `unix://` without a path is not.)
    for bad in ["", "http://", "host:notaport", "unix://", "ftp://host:1"] {
        let call = format!("Client::connect([\"{bad}\"])");
        let r = Client::connect([bad], ClientOptions::default()).await;
        t.row("malformed endpoint", &call, outcome(&r), matches!(r, Err(WireError::InvalidEndpoint { .. })));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let r =
        Client::connect([format!("127.0.0.1:{port}")], ClientOptions::default().with_connect_timeout(connect_timeout))
            .await;
    let took = started.elapsed();
    // Generous slack: the machine is shared; the point is "bounded by the timeout", not its precision.
    let ok = matches!(r, Err(WireError::Connect { .. })) && took < connect_timeout + Duration::from_secs(5);
    t.row(
        "unreachable endpoint",
        "Client::connect([closed port], connect_timeout 2 s)",
        format!("{} after {:.1} s", outcome(&r), took.as_secs_f64()),
        ok,
    );
    // An endpoint that accepts connections and never answers (a black-holed proxy or balancer).
    let silent = TcpProxy::start(etcd.endpoints()[0].trim_start_matches("http://"))?;
    silent.set_blackhole(true);
    let started = Instant::now();
    let r = Client::connect([silent.url()], ClientOptions::default().with_connect_timeout(connect_timeout)).await;
    let took = started.elapsed();
    let ok = matches!(r, Err(WireError::Connect { .. })) && took < connect_timeout + Duration::from_secs(5);
    t.row(
        "unreachable endpoint",
        "Client::connect([silent endpoint], connect_timeout 2 s)",
        format!("{} after {:.1} s", outcome(&r), took.as_secs_f64()),
        ok,
    );

    auth_rows(&mut t).await?;
    tls_rows(&mut t).await?;
    t.finish()
}

const ROOT_PASSWORD: &str = "r00t-pw";
const TOKEN_TTL_SECS: u64 = 2;

/// Wrong password, a token expiring mid-lock, and a token that can no longer be refreshed.
async fn auth_rows(t: &mut Table) -> Result<()> {
    let etcd = EtcdCluster::start(
        ClusterConfig::default().with_auth_token("simple").with_auth_token_ttl_secs(TOKEN_TTL_SECS),
    )?;
    let eps = etcd.endpoints();
    let plain = Client::connect(&eps, ClientOptions::default()).await?;
    plain.user_add("root", ROOT_PASSWORD).await?;
    plain.user_grant_role("root", "root").await?;
    plain.user_add("alice", "alice-pw").await?;
    plain.user_grant_role("alice", "root").await?;
    plain.auth_enable().await?;
    let root = Client::connect(&eps, ClientOptions::default().with_user("root", ROOT_PASSWORD)).await?;

    let before = snapshot(&root, "auth/").await?;
    let r = Client::connect(&eps, ClientOptions::default().with_user("root", "wrong")).await;
    let same = before == snapshot(&root, "auth/").await?;
    t.row(
        "wrong password",
        "Client::connect(.., with_user(\"root\", \"wrong\"))",
        outcome(&r),
        matches!(r, Err(WireError::AuthFailed { .. })) && same,
    );

    // A token expiring while the lock is held: refreshed transparently, the fenced write lands.
    let session = Session::builder(&root).ttl(30).build().await?;
    let guard = Mutex::new(&session, "auth/lock")?.lock().await?;
    tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECS * 2 + 1)).await;
    let w = root.txn(guard.txn().and_then([TxnOp::put("auth/data", "v", PutOptions::new())])).await;
    let landed = w.as_ref().is_ok_and(|r| r.succeeded);
    t.row(
        "token expiring mid-lock",
        "client.txn(guard.txn()..) after the token expired",
        format!("{} (refreshed; the write landed: {landed})", outcome(&w)),
        landed,
    );
    let r = guard.unlock().await;
    t.row("token expiring mid-lock", "guard.unlock() after the token expired", outcome(&r), r.is_ok());
    session.close().await?;

    // A token that expires and cannot be renewed (the password changed meanwhile): AuthFailed,
    // and the fenced write is not applied.
    let alice = Client::connect(&eps, ClientOptions::default().with_user("alice", "alice-pw")).await?;
    let session = Session::builder(&alice).ttl(30).build().await?;
    let guard = Mutex::new(&session, "auth/alice")?.lock().await?;
    root.user_change_password("alice", "new-pw").await?;
    tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECS * 2 + 1)).await;
    let before = snapshot(&root, "auth/").await?;
    let w = alice.txn(guard.txn().and_then([TxnOp::put("auth/alice-data", "v", PutOptions::new())])).await;
    let same = before == snapshot(&root, "auth/").await?;
    t.row(
        "token expired, password changed mid-lock",
        "client.txn(guard.txn()..)",
        outcome(&w),
        matches!(w, Err(WireError::AuthFailed { .. })) && same,
    );
    drop(guard);
    session.orphan();
    Ok(())
}

/// TLS with the wrong CA.
async fn tls_rows(t: &mut Table) -> Result<()> {
    let ca = |name: &str| -> Result<CertifiedIssuer<'static, KeyPair>> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
    };
    let right = ca("reliability CA")?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "etcd server");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &right)?;
    let etcd = EtcdCluster::start(ClusterConfig::default().with_client_tls(ClientTls::new(
        cert.pem(),
        key.serialize_pem(),
        right.pem(),
    )))?;
    let wrong = ca("some other CA")?;
    let options = ClientOptions::default().with_connect_timeout(Duration::from_secs(3));
    let r =
        Client::connect(etcd.endpoints(), options.clone().with_tls(TlsOptions::new().with_ca_pem(wrong.pem()))).await;
    let names_it = r.as_ref().err().is_some_and(|e| e.to_string().to_lowercase().contains("certificate"));
    t.row(
        "TLS with the wrong CA",
        "Client::connect(.., with_tls(other CA))",
        format!("{} (names the certificate: {names_it})", outcome(&r)),
        matches!(r, Err(WireError::Connect { .. })) && names_it,
    );
    // Nothing written: the right CA sees an empty store.
    let ok = Client::connect(etcd.endpoints(), options.with_tls(TlsOptions::new().with_ca_pem(right.pem()))).await?;
    let keys = ok.get("\0", GetOptions::new().with_from_key().with_count_only()).await?.count;
    t.row("TLS with the wrong CA", "keys in the store afterwards", keys.to_string(), keys == 0);
    Ok(())
}
