//! Auth that changes under a live client. A JWT carries the auth revision it was issued at, so any
//! user, role or permission change makes it stale ("auth: revision in header is old" / "revision
//! of auth store is old"); a client given credentials while auth was off holds no token at all
//! once auth is turned on ("user name is empty"). Go's 3.5.1 client fails both until a restart;
//! here every path (KV, Watch, lease keep-alive, Lock, Election, Maintenance) must keep working,
//! with JWT and with simple tokens.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use etcd_harness::{ClusterConfig, EtcdCluster};
use etcd_wire::{Client, ClientOptions, GetOptions, Permission, PutOptions, WatchOptions, Watcher};
use futures::StreamExt;

const ROOT_PASSWORD: &str = "r00t-pw";
/// A bound for waits that succeed at once when the client works.
const WAIT: Duration = Duration::from_secs(20);

/// A member issuing JWTs signed with a fresh ES256 key pair written into `dir`.
fn jwt_cluster(dir: &Path) -> Result<EtcdCluster> {
    let key = rcgen::KeyPair::generate()?;
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem())?;
    std::fs::write(&public, key.public_key_pem())?;
    let token = format!("jwt,pub-key={},priv-key={},sign-method=ES256", public.display(), private.display());
    Ok(EtcdCluster::start(ClusterConfig::default().with_auth_token(token))?)
}

fn simple_cluster() -> Result<EtcdCluster> {
    Ok(EtcdCluster::start(ClusterConfig::default().with_auth_token("simple"))?)
}

fn as_root() -> ClientOptions {
    ClientOptions::default().with_user("root", ROOT_PASSWORD)
}

/// Creates `root` with the `root` role, through a client without credentials.
async fn add_root(endpoints: &[String]) -> Result<Client> {
    let plain = Client::connect(endpoints, ClientOptions::default()).await?;
    plain.user_add("root", ROOT_PASSWORD).await?;
    plain.user_grant_role("root", "root").await?;
    Ok(plain)
}

/// The next event's key on `w`, skipping progress notifications.
async fn next_key(w: &mut Watcher) -> Result<String> {
    loop {
        let r = tokio::time::timeout(WAIT, w.next()).await.context("no watch event")?.context("watch ended")??;
        if let Some(e) = r.events.first() {
            return Ok(e.kv.key_str().into_owned());
        }
    }
}

/// A client with a watch and a kept-alive lease opened while its token was good.
struct Live {
    c: Client,
    watcher: Watcher,
    keep_alive: etcd_wire::KeepAlive,
    lease: i64,
}

impl Live {
    async fn open(endpoints: &[String]) -> Result<Live> {
        let c = Client::connect(endpoints, as_root()).await?;
        let watcher = c.watch("w/", WatchOptions::new().with_prefix()).await?;
        let lease = c.lease_grant(6, None).await?.id;
        let keep_alive = c.lease_keep_alive(lease).await?;
        c.put("before", "v", PutOptions::new()).await?;
        Ok(Live { c, watcher, keep_alive, lease })
    }
}

/// The paths one call each, in [`on_path`].
const PATHS: usize = 7;

/// One call on path `step`, by a client whose token the server no longer accepts.
async fn on_path(l: &mut Live, step: usize) -> Result<()> {
    let c = &l.c;
    let changed_at = Instant::now();
    match step {
        0 => {
            c.put(format!("k{step}"), "v", PutOptions::new()).await.context("put")?;
            ensure!(c.get(format!("k{step}"), GetOptions::new()).await.context("get")?.count == 1);
        }
        // A watch opened before the change still delivers.
        1 => {
            c.put(format!("w/{step}"), "v", PutOptions::new()).await?;
            ensure!(next_key(&mut l.watcher).await.context("old watcher")? == format!("w/{step}"));
        }
        // A new watch on the stream opened before the change is created and delivers.
        2 => {
            let mut fresh = c.watch(format!("n{step}/"), WatchOptions::new().with_prefix()).await.context("watch")?;
            c.put(format!("n{step}/a"), "v", PutOptions::new()).await?;
            ensure!(next_key(&mut fresh).await.context("new watcher")? == format!("n{step}/a"));
        }
        // Leases: a grant, and the keep-alive opened before the change keeps renewing.
        3 => {
            let grant = c.lease_grant(60, None).await.context("lease grant")?.id;
            c.lease_revoke(grant).await.context("lease revoke")?;
            let renewed = async {
                while l.keep_alive.deadline().is_none_or(|d| d < changed_at + Duration::from_secs(3)) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(WAIT, renewed).await.context("the keep-alive stopped renewing")?;
            ensure!(c.lease_time_to_live(l.lease, false).await?.ttl > 0, "the kept-alive lease expired");
        }
        4 => {
            let held = c.lock(format!("l{step}"), l.lease).await.context("lock")?;
            c.unlock(held.key).await.context("unlock")?;
        }
        5 => {
            let leader = c.campaign(format!("e{step}"), l.lease, "me").await.context("campaign")?;
            c.resign(&leader).await.context("resign")?;
        }
        // Maintenance (admin only).
        _ => {
            c.alarm_list().await.context("alarm list")?;
            c.status().await.context("status")?;
        }
    }
    Ok(())
}

/// Auth on from the start; before each path's call a user or role changes, so the client's token
/// (a JWT) is stale for that very call.
async fn auth_changes_mid_run(etcd: &EtcdCluster) -> Result<()> {
    let endpoints = etcd.endpoints();
    add_root(&endpoints).await?.auth_enable().await?;
    let mut live = Live::open(&endpoints).await?;
    let admin = Client::connect(&endpoints, as_root()).await?;
    for step in 0..PATHS {
        admin.role_add(format!("role{step}")).await?;
        on_path(&mut live, step).await.with_context(|| format!("path {step}, after an auth change"))?;
    }

    // A permission really taken away is still refused, as a typed error, after the refresh.
    admin.role_grant_permission("role0", Permission::read_write("app/").with_prefix()).await?;
    admin.user_add("alice", "alice-pw").await?;
    admin.user_grant_role("alice", "role0").await?;
    let alice = Client::connect(&endpoints, ClientOptions::default().with_user("alice", "alice-pw")).await?;
    alice.put("app/x", "1", PutOptions::new()).await?;
    admin.role_revoke_permission("role0", "app/", etcd_wire::prefix_range_end(b"app/")).await?;
    let denied = alice.put("app/x", "2", PutOptions::new()).await;
    ensure!(matches!(denied, Err(etcd_wire::Error::PermissionDenied { .. })), "{denied:?}");
    Ok(())
}

/// One client per path connects with credentials while auth is off; then auth is turned on.
async fn auth_enabled_after_connect(etcd: &EtcdCluster) -> Result<()> {
    let endpoints = etcd.endpoints();
    let plain = add_root(&endpoints).await?;
    let mut clients = Vec::new();
    for _ in 0..PATHS {
        clients.push(Live::open(&endpoints).await?);
    }
    plain.auth_enable().await?;
    for (step, live) in clients.iter_mut().enumerate() {
        on_path(live, step).await.with_context(|| format!("path {step}, after auth was enabled"))?;
    }
    // A client without credentials is told what is missing, as a typed error.
    let denied = plain.put("k", "v", PutOptions::new()).await;
    ensure!(matches!(denied, Err(etcd_wire::Error::AuthRequired { .. })), "{denied:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_made_stale_by_auth_changes_is_renewed_on_every_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    auth_changes_mid_run(&jwt_cluster(dir.path())?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tokens_survive_auth_changes_on_every_path() -> Result<()> {
    auth_changes_mid_run(&simple_cluster()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_enabled_after_connect_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    auth_enabled_after_connect(&jwt_cluster(dir.path())?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_after_connect_works_with_simple_tokens() -> Result<()> {
    auth_enabled_after_connect(&simple_cluster()?).await
}
