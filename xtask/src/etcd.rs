//! `cargo xtask etcd`: install the pinned etcd releases, or run a local server in the foreground.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_harness::{ClusterConfig, EtcdBinaries, EtcdCluster, EtcdVersion};

/// Installs (if needed) and prints where every supported release lives.
pub(crate) fn install_all() -> Result<()> {
    for version in EtcdVersion::ALL {
        let bins = EtcdBinaries::find_or_install(version).with_context(|| format!("installing etcd {version}"))?;
        println!("etcd {version}: {} (etcdctl {})", bins.etcd.display(), bins.etcdctl.display());
    }
    Ok(())
}

/// Starts `members` members of `version`, prints the endpoints and waits for Ctrl-C.
pub(crate) fn run(version: Option<&str>, members: usize) -> Result<()> {
    let version = match version {
        Some(v) => EtcdVersion::parse(v)?,
        None => EtcdVersion::from_env()?,
    };
    let cluster = EtcdCluster::start(ClusterConfig::default().with_version(version).with_members(members))?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30))?;
    println!("etcd {version}, {members} member(s), leader m{leader}");
    for m in cluster.members() {
        println!("  {}  client {}  peer {}  log {}", m.name(), m.client_url(), m.peer_url(), m.log_path().display());
    }
    println!("ETCD_ENDPOINTS={}", cluster.endpoints().join(","));
    println!("Ctrl-C stops the cluster and removes its data.");
    wait_for_ctrl_c()?;
    drop(cluster);
    Ok(())
}

pub(crate) fn wait_for_ctrl_c() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    Ok(())
}
