//! [`GrpcProxy`]: `etcd grpc-proxy start` in front of a cluster, as some deployments run it.
//!
//! The proxy is the cluster's own `etcd` binary in proxy mode: it serves the KV, Watch, Lease,
//! Lock, Election, Cluster and Maintenance services on one listen address, coalesces identical
//! watches, and assigns its own watch IDs (it ignores the client-chosen ones).

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::EtcdCluster;
use crate::error::{Error, IoContext, Result};
use crate::health;
use crate::install::clean_command;
use crate::ports::free_ports;
use crate::process::ClientProcess;

/// How long [`GrpcProxy::start`] waits for the proxy to report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `etcd grpc-proxy` in front of every member of a cluster. Like the members, it cannot
/// outlive the test process; dropping it SIGKILLs it.
#[derive(Debug)]
pub struct GrpcProxy {
    process: ClientProcess,
    url: String,
    log: std::path::PathBuf,
}

impl GrpcProxy {
    /// Starts a proxy on a free loopback port in front of `cluster` (plain-text clusters only)
    /// and waits until it answers `/health`.
    pub fn start(cluster: &EtcdCluster) -> Result<GrpcProxy> {
        if cluster.client_tls_files().is_some() {
            return Err(Error::Config("the harness starts grpc-proxy in front of plain-text clusters only".into()));
        }
        let port = free_ports(1)?[0];
        let url = format!("http://127.0.0.1:{port}");
        let log = cluster.dir().join(format!("grpc-proxy-{port}.log"));
        let stderr = File::create(&log).ctx(|| format!("creating {}", log.display()))?;
        let endpoints: Vec<String> =
            cluster.endpoints().iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
        let mut command: Command = clean_command(&cluster.binaries().etcd);
        command
            .arg("grpc-proxy")
            .arg("start")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .stderr(Stdio::from(stderr));
        let process = ClientProcess::spawn(format!("grpc-proxy-{port}"), command)?;
        let proxy = GrpcProxy { process, url, log };
        let started = Instant::now();
        while !health::is_healthy(&proxy.url, Duration::from_secs(1)) {
            if !proxy.process.is_running() || started.elapsed() > START_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("grpc-proxy at {} to become healthy", proxy.url),
                    timeout: START_TIMEOUT,
                    log_tail: proxy.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(proxy)
    }

    /// The proxy's client URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The last `lines` lines of the proxy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        crate::error::tail_lines(&text, lines)
    }

    /// SIGKILLs the proxy (also done on drop).
    pub fn kill(&self) -> Result<()> {
        self.process.kill().map(|_| ())
    }
}
