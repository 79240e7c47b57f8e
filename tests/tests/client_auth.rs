//! Authentication against real etcd: enabling auth, wrong and right passwords, users, roles and
//! permissions, and transparent token refresh when simple tokens expire (`--auth-token-ttl`) or a
//! restart invalidates them, also for the Lock and Election services and for concurrent callers.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use etcd_harness::{ClusterConfig, EtcdCluster, EtcdVersion};
use etcd_tests::single;
use etcd_wire::pb::etcdserverpb::{AuthenticateRequest, RangeRequest, auth_client::AuthClient, kv_client::KvClient};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, Permission, PermissionKind, PutOptions};

const ROOT_PASSWORD: &str = "r00t-pw";

/// Creates `root` (with the `root` role) and turns auth on, through an unauthenticated client.
async fn enable_auth(endpoints: &[String]) -> Result<()> {
    let plain = Client::connect(endpoints, ClientOptions::default()).await?;
    plain.user_add("root", ROOT_PASSWORD).await?;
    plain.user_grant_role("root", "root").await?;
    plain.auth_enable().await?;
    Ok(())
}

async fn connect_as(endpoints: &[String], user: &str, password: &str) -> etcd_wire::Result<Client> {
    Client::connect(endpoints, ClientOptions::default().with_user(user, password)).await
}

#[tokio::test]
async fn passwords_are_checked_and_auth_can_be_turned_off() -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;

    let wrong = connect_as(&endpoints, "root", "nope").await;
    assert!(matches!(wrong, Err(Error::AuthFailed { .. })), "{wrong:?}");
    let unknown = connect_as(&endpoints, "nobody", "nope").await;
    assert!(matches!(unknown, Err(Error::AuthFailed { .. })), "{unknown:?}");

    let root = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    root.put("k", "v", PutOptions::new()).await?;
    assert_eq!(root.get("k", GetOptions::new()).await?.kvs[0].value, "v");
    let has_auth_status = etcd.version() != EtcdVersion::V3_4_23;
    if has_auth_status {
        let status = root.auth_status().await?;
        assert!(status.enabled && status.auth_revision > 0, "{status:?}");
    } else {
        let r = root.auth_status().await;
        assert!(matches!(&r, Err(Error::Unsupported { what, .. }) if what.ends_with("/AuthStatus")), "{r:?}");
    }
    assert_eq!(root.user_list().await?.users, ["root"]);
    // `root` is built in: granted, but not listed as a role of its own.
    root.role_list().await?;
    assert_eq!(root.user_get("root").await?.roles, ["root"]);

    // Without credentials nothing is served.
    let anonymous = Client::connect(&endpoints, ClientOptions::default()).await?;
    assert!(anonymous.get("k", GetOptions::new()).await.is_err());

    root.auth_disable().await?;
    if has_auth_status {
        assert!(!anonymous.auth_status().await?.enabled);
    }
    assert_eq!(anonymous.get("k", GetOptions::new()).await?.count, 1, "auth is off again");
    Ok(())
}

/// A client with credentials keeps working when auth is off (as Go's clientv3 does: when the
/// server says "authentication is not enabled", it drops its token instead of failing).
#[tokio::test]
async fn credentials_are_harmless_while_auth_is_off() -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints();
    // Auth was never on.
    let c = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    c.put("k", "v", PutOptions::new()).await?;
    // Auth turned off under a client holding a token: the server drops its tokens.
    enable_auth(&endpoints).await?;
    let root = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    root.auth_disable().await?;
    assert_eq!(root.get("k", GetOptions::new()).await?.count, 1);
    Ok(())
}

#[tokio::test]
async fn roles_grant_exactly_their_permissions() -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;
    let root = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    root.put("app/x", "1", PutOptions::new()).await?;
    root.put("other", "2", PutOptions::new()).await?;

    root.role_add("reader").await?;
    root.role_grant_permission("reader", Permission::read("app/").with_prefix()).await?;
    root.role_grant_permission("reader", Permission::new(PermissionKind::ReadWrite, "app/rw")).await?;
    let perms = root.role_get("reader").await?.permissions;
    assert!(perms.contains(&Permission::read("app/").with_prefix()), "{perms:?}");
    assert!(perms.contains(&Permission::read_write("app/rw")), "{perms:?}");
    root.user_add("alice", "alice-pw").await?;
    root.user_grant_role("alice", "reader").await?;
    assert_eq!(root.user_get("alice").await?.roles, ["reader"]);

    let alice = connect_as(&endpoints, "alice", "alice-pw").await?;
    assert_eq!(alice.get("app/x", GetOptions::new()).await?.count, 1);
    alice.put("app/rw", "ok", PutOptions::new()).await?;
    let denied = alice.put("app/x", "no", PutOptions::new()).await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "{denied:?}");
    let denied = alice.get("other", GetOptions::new()).await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "{denied:?}");
    let denied = alice.user_list().await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "only root manages users: {denied:?}");

    // Revoking the permission takes effect for the existing token.
    root.role_revoke_permission("reader", "app/", etcd_wire::prefix_range_end(b"app/")).await?;
    let denied = alice.get("app/x", GetOptions::new()).await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "{denied:?}");
    root.user_revoke_role("alice", "reader").await?;
    assert!(root.user_get("alice").await?.roles.is_empty());

    // A new password replaces the old one.
    root.user_change_password("alice", "new-pw").await?;
    assert!(matches!(connect_as(&endpoints, "alice", "alice-pw").await, Err(Error::AuthFailed { .. })));
    connect_as(&endpoints, "alice", "new-pw").await?;

    // A user without a password cannot log in with one.
    root.user_add_no_password("bob").await?;
    assert!(matches!(connect_as(&endpoints, "bob", "").await, Err(Error::AuthFailed { .. })));
    assert!(matches!(connect_as(&endpoints, "bob", "x").await, Err(Error::AuthFailed { .. })));

    root.user_delete("alice").await?;
    root.user_delete("bob").await?;
    root.role_delete("reader").await?;
    assert_eq!(root.user_list().await?.users, ["root"]);
    assert!(!root.role_list().await?.roles.contains(&"reader".to_owned()));
    Ok(())
}

#[tokio::test]
async fn empty_names_are_rejected_before_any_rpc() -> Result<()> {
    let etcd = single()?;
    let c = Client::connect(etcd.endpoints(), ClientOptions::default()).await?;
    let invalid = |r: etcd_wire::Result<etcd_wire::ResponseHeader>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(invalid(c.user_add("", "pw").await));
    assert!(invalid(c.user_add("u", "").await));
    assert!(invalid(c.user_add_no_password("").await));
    assert!(invalid(c.user_delete("").await));
    assert!(invalid(c.user_change_password("", "pw").await));
    assert!(invalid(c.user_grant_role("", "r").await));
    assert!(invalid(c.user_grant_role("u", "").await));
    assert!(invalid(c.user_revoke_role("u", "").await));
    assert!(invalid(c.role_add("").await));
    assert!(invalid(c.role_delete("").await));
    assert!(invalid(c.role_grant_permission("", Permission::read("k")).await));
    assert!(invalid(c.role_revoke_permission("", "k", "").await));
    assert!(matches!(c.user_get("").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(c.role_get("").await, Err(Error::InvalidArgument { .. })));
    let empty_user = Client::connect(etcd.endpoints(), ClientOptions::default().with_user("", "pw")).await;
    assert!(matches!(empty_user, Err(Error::InvalidArgument { .. })), "{empty_user:?}");
    // Nothing was created on the way.
    assert!(c.user_list().await?.users.is_empty());
    Ok(())
}

/// Simple tokens live this long without use.
const TOKEN_TTL_SECS: u64 = 2;

fn short_token_cluster() -> Result<EtcdCluster> {
    EtcdCluster::start(ClusterConfig::default().with_auth_token("simple").with_auth_token_ttl_secs(TOKEN_TTL_SECS))
        .context("starting etcd with short-lived tokens")
}

/// Waits long enough for every simple token to expire.
async fn let_tokens_expire() {
    tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECS * 2 + 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refreshed_transparently() -> Result<()> {
    let etcd = short_token_cluster()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;

    // First prove the server really expires an idle token: a raw request with an old token fails.
    let channel = etcd_tests::channel(&endpoints[0]).await?;
    let token = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest { name: "root".into(), password: ROOT_PASSWORD.into() })
        .await?
        .into_inner()
        .token;
    let client = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    client.put("k", "v", PutOptions::new()).await?;
    let_tokens_expire().await;
    let mut raw = tonic::Request::new(RangeRequest { key: "k".into(), ..Default::default() });
    raw.metadata_mut().insert("token", token.parse()?);
    let stale = KvClient::new(channel).range(raw).await;
    let stale = stale.err().context("an expired token was accepted")?;
    ensure!(stale.message().contains("invalid auth token"), "unexpected: {stale:?}");

    // The client's token expired the same way; the next call refreshes it and succeeds.
    assert_eq!(client.get("k", GetOptions::new()).await?.kvs[0].value, "v");
    client.put("k", "v2", PutOptions::new()).await?;

    // Many callers hitting the expired token at once all succeed (they share one refresh).
    let_tokens_expire().await;
    let calls = (0..20).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get("k", GetOptions::new()).await })
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r??.kvs[0].value, "v2");
    }

    // A restart forgets every simple token.
    tokio::task::block_in_place(|| etcd.restart(0))?;
    assert_eq!(client.get("k", GetOptions::new()).await?.kvs[0].value, "v2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_refresh_expired_tokens_too() -> Result<()> {
    let etcd = short_token_cluster()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;
    let client = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    let lease = client.lease_grant(60, None).await?.id;

    // Each service reports a rejected token in its own way; every one must lead to a refresh.
    let_tokens_expire().await;
    let held = client.lock("job", lease).await?;
    client.unlock(held.key).await?;
    let_tokens_expire().await;
    let leader = client.campaign("svc", lease, "me").await?;
    let_tokens_expire().await;
    assert_eq!(client.leader("svc").await?.map(|kv| kv.value), Some("me".into()));
    client.proclaim(&leader, "me2").await?;
    client.resign(&leader).await?;
    assert_eq!(client.leader("svc").await?, None);
    Ok(())
}

#[tokio::test]
async fn lock_and_election_enforce_permissions() -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;
    let root = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    root.role_add("locker").await?;
    root.role_grant_permission("locker", Permission::read_write("locks/").with_prefix()).await?;
    root.user_add("worker", "pw").await?;
    root.user_grant_role("worker", "locker").await?;

    let worker = connect_as(&endpoints, "worker", "pw").await?;
    let lease = worker.lease_grant(60, None).await?.id;
    let held = worker.with_namespace("locks/").lock("a", lease).await?;
    worker.with_namespace("locks/").unlock(held.key).await?;
    let denied = worker.lock("elsewhere", lease).await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "{denied:?}");
    Ok(())
}

/// Credentials replaced on a live client: a wrong password changes nothing; the new user's
/// permissions apply at once to calls and to the shared watch stream, which reopens with the new
/// token (a watch the new user may not read is cancelled, "permission denied", instead of
/// going on as the old user); `None` stops authenticating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_change_on_a_live_client() -> Result<()> {
    let etcd = single()?;
    let endpoints = etcd.endpoints();
    enable_auth(&endpoints).await?;
    let root = connect_as(&endpoints, "root", ROOT_PASSWORD).await?;
    for (user, prefix) in [("alice", "a/"), ("bob", "b/")] {
        root.role_add(user).await?;
        root.role_grant_permission(user, Permission::read_write(prefix).with_prefix()).await?;
        root.user_add(user, format!("{user}-pw")).await?;
        root.user_grant_role(user, user).await?;
    }

    let c = connect_as(&endpoints, "alice", "alice-pw").await?;
    let view = c.with_namespace("a/");
    let mut watch = c.watch("a/", etcd_wire::WatchOptions::new().with_prefix()).await?;
    c.put("a/1", "alice", PutOptions::new()).await?;

    let wrong = c.set_credentials(Some(etcd_wire::Credentials::new("bob", "not-bobs"))).await;
    assert!(matches!(wrong, Err(Error::AuthFailed { .. })), "{wrong:?}");
    view.put("2", "still alice", PutOptions::new()).await?;
    let empty = c.set_credentials(Some(etcd_wire::Credentials::new("", "x"))).await;
    assert!(matches!(empty, Err(Error::InvalidArgument { .. })), "{empty:?}");

    c.set_credentials(Some(etcd_wire::Credentials::new("bob", "bob-pw"))).await?;
    c.put("b/1", "bob", PutOptions::new()).await?;
    let denied = view.get("1", None).await;
    assert!(matches!(denied, Err(Error::PermissionDenied { .. })), "every clone and view is bob now: {denied:?}");

    // The watch saw alice's two puts, then ends: bob may not watch a/.
    let mut keys = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(&mut watch)).await {
            Ok(Some(Ok(r))) => keys.extend(r.events.iter().map(|e| e.kv.key_str().into_owned())),
            Ok(Some(Err(e))) => break Some(e),
            Ok(None) => break None,
            Err(_) => anyhow::bail!("the watch went on as alice: {keys:?}"),
        }
    };
    assert_eq!(keys, ["a/1", "a/2"]);
    assert!(matches!(&end, Some(Error::WatchCanceled { reason }) if reason.contains("permission denied")), "{end:?}");
    let mut bobs = c.watch("b/", etcd_wire::WatchOptions::new().with_prefix()).await?;
    root.put("b/2", "from root", PutOptions::new()).await?;
    let event = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(&mut bobs))
        .await?
        .context("ended")??;
    assert_eq!(event.events[0].kv.key, "b/2");

    c.set_credentials(None).await?;
    let anonymous = c.get("b/1", None).await;
    assert!(matches!(anonymous, Err(Error::AuthRequired { .. } | Error::PermissionDenied { .. })), "{anonymous:?}");
    Ok(())
}
