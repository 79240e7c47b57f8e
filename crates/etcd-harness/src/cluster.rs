//! Starting, controlling and tearing down a local etcd cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ClientTls, ClusterConfig};
use crate::error::{Error, IoContext, Result, tail_lines};
use crate::health;
use crate::install::EtcdBinaries;
use crate::member::Member;
use crate::ports;
use crate::version::EtcdVersion;
use crate::workdir::WorkDir;

/// How many times [`EtcdCluster::start`] tries with fresh ports after a port race.
const START_ATTEMPTS: usize = 3;
/// How many log lines error messages include.
const ERROR_LOG_LINES: usize = 30;
/// Timeout of one health / status probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between health probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long pause / resume wait for every etcd thread to change state.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`EtcdCluster::stop`] waits for a clean exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Directory (inside the cluster directory) holding the client TLS files.
const TLS_DIR: &str = "tls";
/// File names of the CA, server certificate and key in [`TLS_DIR`].
const TLS_CA: &str = "ca.pem";
const TLS_CERT: &str = "server.pem";
const TLS_KEY: &str = "server-key.pem";

/// A running local etcd cluster. Dropping it SIGKILLs every member and deletes its files.
///
/// All methods take `&self`, so a cluster can be shared (`Arc`, `static`) across threads and
/// tests. Member indices run from `0` to `len() - 1`.
#[derive(Debug)]
pub struct EtcdCluster {
    // Field order matters: members are killed before the directory is removed.
    members: Vec<Member>,
    binaries: EtcdBinaries,
    config: ClusterConfig,
    version: EtcdVersion,
    /// Where the client TLS files are, when clients use TLS.
    tls: Option<TlsFiles>,
    dir: WorkDir,
}

/// Why one start attempt failed.
enum AttemptError {
    /// A port was taken by someone else; retry with new ports.
    PortRace(Error),
    /// Anything else.
    Fatal(Error),
}

impl From<Error> for AttemptError {
    fn from(error: Error) -> Self {
        AttemptError::Fatal(error)
    }
}

impl EtcdCluster {
    /// Starts a cluster and waits until every member reports healthy.
    pub fn start(config: ClusterConfig) -> Result<Self> {
        if config.members == 0 {
            return Err(Error::Config("a cluster needs at least one member".into()));
        }
        let version = match config.version {
            Some(version) => version,
            None => EtcdVersion::from_env()?,
        };
        let binaries = EtcdBinaries::find_or_install(version)?;
        let no_fsync = config.unsafe_no_fsync && binaries.supports_unsafe_no_fsync();
        let mut attempt = 1;
        loop {
            match Self::try_start(&config, version, &binaries, no_fsync) {
                Ok(cluster) => return Ok(cluster),
                Err(AttemptError::PortRace(error)) if attempt < START_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "etcd lost a port race; retrying with new ports");
                    attempt += 1;
                }
                Err(AttemptError::PortRace(error) | AttemptError::Fatal(error)) => {
                    return Err(error);
                }
            }
        }
    }

    /// Starts a single-member cluster with the default configuration.
    pub fn single() -> Result<Self> {
        Self::start(ClusterConfig::default())
    }

    /// Starts a three-member cluster with the default configuration.
    pub fn three() -> Result<Self> {
        Self::start(ClusterConfig::default().with_members(3))
    }

    fn try_start(
        config: &ClusterConfig,
        version: EtcdVersion,
        binaries: &EtcdBinaries,
        no_fsync: bool,
    ) -> std::result::Result<Self, AttemptError> {
        let dir = WorkDir::create()?;
        let tls = config.client_tls.as_ref().map(|tls| write_tls_files(dir.path(), tls)).transpose()?;
        // Per member: client and peer port, plus a plain-HTTP metrics port when clients use TLS.
        let per_member = if tls.is_some() { 3 } else { 2 };
        let ports = ports::free_ports(per_member * config.members)?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let client_scheme = if tls.is_some() { "https" } else { "http" };
        let names: Vec<String> = (0..config.members).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", url(ports[per_member * i + 1])))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_token();
        let common = common_args(config, no_fsync);
        let mut members = Vec::with_capacity(config.members);
        for (i, name) in names.iter().enumerate() {
            let client_url = format!("{client_scheme}://127.0.0.1:{}", ports[per_member * i]);
            let peer_url = url(ports[per_member * i + 1]);
            let member_dir = dir.path().join(name);
            let data_dir = member_dir.join("data");
            let mut args = member_args(name, &client_url, &peer_url, &data_dir, &initial_cluster, &token, &common);
            if config.unix_sockets {
                // etcd accepts only `unix://host:port`; the socket is `host:port` in its working
                // directory (the member's), named after the TCP port so it is unique.
                let listen = args.iter_mut().find(|a| a.starts_with("--listen-client-urls="));
                if let Some(listen) = listen {
                    listen.push_str(&format!(",unix://localhost:{}", ports[per_member * i]));
                }
            }
            let member = match &tls {
                Some(files) => {
                    let metrics_url = url(ports[per_member * i + 2]);
                    args.extend(files.server_args(&metrics_url));
                    Member::new(name.clone(), client_url, peer_url, member_dir, binaries.etcd.clone(), args)
                        .with_health_url(metrics_url)
                }
                None => Member::new(name.clone(), client_url, peer_url, member_dir, binaries.etcd.clone(), args),
            };
            members.push(member);
        }
        spawn_and_wait(&members, config.startup_timeout)?;
        tracing::debug!(members = config.members, %version, "etcd cluster is healthy");
        Ok(Self { members, binaries: binaries.clone(), config: config.clone(), version, dir, tls })
    }

    /// The client URLs of all members (`http://127.0.0.1:<port>`, or `https://` with
    /// [`ClusterConfig::with_client_tls`]), running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url().to_owned()).collect()
    }

    /// The client URLs of the members that are running and not paused.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running() && !m.is_paused()).map(|m| m.client_url().to_owned()).collect()
    }

    /// All members, in index order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `index`.
    pub fn member(&self, index: usize) -> Result<&Member> {
        self.members.get(index).ok_or(Error::NoSuchMember { index, len: self.members.len() })
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> &EtcdBinaries {
        &self.binaries
    }

    /// The etcd version this cluster runs.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// The configuration the cluster was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The temporary directory holding every member's directory (removed on drop; see
    /// [`remove_stale_cluster_dirs`](crate::remove_stale_cluster_dirs) for the other cases).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// With client TLS: the files the members were started with (`ca.pem`, `server.pem`,
    /// `server-key.pem` in the cluster directory's `tls/`), as `(ca, cert, key)`.
    pub fn client_tls_files(&self) -> Option<(&Path, &Path, &Path)> {
        self.tls.as_ref().map(|t| (t.ca.as_path(), t.cert.as_path(), t.key.as_path()))
    }

    /// SIGKILLs member `index` (its whole process group) and reaps it.
    pub fn kill(&self, index: usize) -> Result<()> {
        self.member(index)?.kill()
    }

    /// SIGTERMs member `index` and waits for it to exit (SIGKILL after 10 s).
    pub fn stop(&self, index: usize) -> Result<()> {
        self.member(index)?.stop(STOP_TIMEOUT)
    }

    /// Freezes member `index` with SIGSTOP and waits until all its threads are stopped.
    pub fn pause(&self, index: usize) -> Result<()> {
        self.member(index)?.pause(SIGNAL_TIMEOUT)
    }

    /// Thaws member `index` with SIGCONT and waits until its threads run again.
    pub fn resume(&self, index: usize) -> Result<()> {
        self.member(index)?.resume(SIGNAL_TIMEOUT)
    }

    /// Starts member `index` again with the same data directory and ports (SIGKILLing it
    /// first if it is still running) and waits until it reports healthy.
    pub fn restart(&self, index: usize) -> Result<()> {
        let member = self.member(index)?;
        member.spawn()?;
        wait_members_healthy(&[member], self.config.startup_timeout)
    }

    /// `true` if member `index` exists and its process is alive (possibly paused).
    pub fn is_running(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(Member::is_running)
    }

    /// Waits until member `index` reports healthy on `GET /health`.
    pub fn wait_healthy(&self, index: usize, timeout: Duration) -> Result<()> {
        wait_members_healthy(&[self.member(index)?], timeout)
    }

    /// Waits until every member that is running and not paused reports healthy.
    pub fn wait_all_healthy(&self, timeout: Duration) -> Result<()> {
        let live: Vec<&Member> = self.members.iter().filter(|m| m.is_running() && !m.is_paused()).collect();
        wait_members_healthy(&live, timeout)
    }

    /// The index of the current leader, as seen by the running members (the answer of the
    /// member with the highest raft term wins); `None` if there is none right now.
    ///
    /// With client TLS the members' status is not reachable over plain HTTP; the leader is then
    /// the one running member whose metrics say `etcd_server_is_leader 1` (`None` while more
    /// than one claims it, as an isolated old leader may for a moment).
    pub fn leader_index(&self) -> Option<usize> {
        if self.tls.is_some() {
            let claims: Vec<usize> = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_running() && !m.is_paused())
                .filter(|(_, m)| is_leader_by_metrics(m.health_url()) == Some(true))
                .map(|(i, _)| i)
                .collect();
            return match claims[..] {
                [only] => Some(only),
                _ => None,
            };
        }
        let statuses: Vec<(usize, health::MemberStatus)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_running() && !m.is_paused())
            .filter_map(|(i, m)| Some((i, health::member_status(m.client_url(), PROBE_TIMEOUT)?)))
            .collect();
        let leader = statuses.iter().map(|(_, s)| s).filter(|s| s.leader != 0).max_by_key(|s| s.raft_term)?.leader;
        // A leader that does not answer (paused, just killed) is not reported.
        statuses.iter().find(|(_, s)| s.member_id == leader).map(|(i, _)| *i)
    }

    /// Waits until some member is the leader and returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(index) = self.leader_index() {
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout { what: "a leader".into(), timeout, log_tail: String::new() });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// An `etcdctl` command (`ETCDCTL_API=3`) aimed at the running, unpaused members (all
    /// members if none is running); add the subcommand and its arguments. With client TLS it
    /// trusts the cluster's CA and, with client-cert auth, presents the server certificate.
    pub fn etcdctl(&self) -> Command {
        let live = self.running_endpoints();
        let mut command = if live.is_empty() {
            self.binaries.etcdctl_command(self.endpoints())
        } else {
            self.binaries.etcdctl_command(live)
        };
        if let Some(tls) = &self.tls {
            command.arg(format!("--cacert={}", tls.ca.display()));
            if tls.client_cert_auth {
                command.arg(format!("--cert={}", tls.cert.display()));
                command.arg(format!("--key={}", tls.key.display()));
            }
        }
        command
    }

    /// Runs `etcdctl <args>` (see [`EtcdCluster::etcdctl`]) and returns its stdout.
    pub fn run_etcdctl<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.etcdctl();
        command.args(args);
        let line = format!("{command:?}");
        let out = command.output().ctx(|| format!("running {line}"))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: line,
                status: out.status,
                stderr: tail_lines(String::from_utf8_lossy(&out.stderr).trim(), 10),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last `lines` lines of member `index`'s log (empty if there is no such member).
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        self.members.get(index).map(|m| m.log_tail(lines)).unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // SIGKILL everyone first, then reap (each `kill` waits); members also kill themselves
        // on drop, this just avoids serialising the waits behind signals.
        for member in &self.members {
            let _ = member.signal(libc::SIGKILL);
        }
        for member in &self.members {
            if let Err(error) = member.kill() {
                tracing::error!(member = member.name(), %error, "cannot reap etcd");
            }
        }
    }
}

/// The flags every member gets after its own: fsync, timing and the caller's extra arguments.
fn common_args(config: &ClusterConfig, no_fsync: bool) -> Vec<String> {
    let mut args = Vec::new();
    if no_fsync {
        args.push("--unsafe-no-fsync".to_owned());
    }
    if let Some(ms) = config.heartbeat_interval_ms {
        args.push(format!("--heartbeat-interval={ms}"));
    }
    if let Some(ms) = config.election_timeout_ms {
        args.push(format!("--election-timeout={ms}"));
    }
    if let Some(token) = &config.auth_token {
        args.push(format!("--auth-token={token}"));
    }
    if let Some(secs) = config.auth_token_ttl_secs {
        args.push(format!("--auth-token-ttl={secs}"));
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// The command line of one member.
fn member_args(
    name: &str,
    client_url: &str,
    peer_url: &str,
    data_dir: &std::path::Path,
    initial_cluster: &str,
    token: &str,
    common: &[String],
) -> Vec<String> {
    let mut args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={initial_cluster}"),
        "--initial-cluster-state=new".to_owned(),
        format!("--initial-cluster-token={token}"),
    ];
    args.extend(common.iter().cloned());
    args
}

/// The client TLS files of a cluster, written into its directory.
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert_auth: bool,
}

impl TlsFiles {
    /// The TLS flags of one member, with its plain-HTTP metrics (and health) URL.
    fn server_args(&self, metrics_url: &str) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.cert.display()),
            format!("--key-file={}", self.key.display()),
            format!("--listen-metrics-urls={metrics_url}"),
        ];
        // etcd turns client-certificate auth on whenever a trusted CA is given, whatever
        // `--client-cert-auth` says; so the CA is passed only when that is wanted.
        if self.client_cert_auth {
            args.push(format!("--trusted-ca-file={}", self.ca.display()));
            args.push("--client-cert-auth".to_owned());
        }
        args
    }
}

/// Writes the PEMs of `tls` into `<dir>/tls/` (the key readable by the owner only).
fn write_tls_files(dir: &Path, tls: &ClientTls) -> Result<TlsFiles> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let tls_dir = dir.join(TLS_DIR);
    std::fs::create_dir_all(&tls_dir).ctx(|| format!("creating {}", tls_dir.display()))?;
    std::fs::set_permissions(&tls_dir, std::fs::Permissions::from_mode(0o700))
        .ctx(|| format!("restricting {}", tls_dir.display()))?;
    let files = TlsFiles {
        ca: tls_dir.join(TLS_CA),
        cert: tls_dir.join(TLS_CERT),
        key: tls_dir.join(TLS_KEY),
        client_cert_auth: tls.client_cert_auth,
    };
    for (path, pem) in [(&files.ca, &tls.ca_pem), (&files.cert, &tls.cert_pem), (&files.key, &tls.key_pem)] {
        let mut file = std::fs::File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .ctx(|| format!("creating {}", path.display()))?;
        file.write_all(pem.as_bytes()).ctx(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

/// Whether the member serving `/metrics` at `health_url` says it is the raft leader; `None`
/// when the metrics cannot be read.
fn is_leader_by_metrics(health_url: &str) -> Option<bool> {
    let resp = health::request(health_url, "GET", "/metrics", None, PROBE_TIMEOUT).ok()?;
    if resp.status != 200 {
        return None;
    }
    resp.body.lines().find_map(|line| line.strip_prefix("etcd_server_is_leader ")).map(|v| v.trim() == "1")
}

/// Starts every member and waits until all are healthy, classifying failures.
fn spawn_and_wait(members: &[Member], timeout: Duration) -> std::result::Result<(), AttemptError> {
    for member in members {
        member.spawn()?;
    }
    let all: Vec<&Member> = members.iter().collect();
    match wait_members_healthy(&all, timeout) {
        Ok(()) => Ok(()),
        Err(error) if is_port_race(&error) => Err(AttemptError::PortRace(error)),
        Err(error) => Err(AttemptError::Fatal(error)),
    }
}

/// Polls `/health` on `members` until all say true. Fails early if one of them exits.
fn wait_members_healthy(members: &[&Member], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Member> = members.to_vec();
    loop {
        for member in &pending {
            if let Some(status) = member.exit_status() {
                return Err(Error::StartFailed {
                    member: member.name().to_owned(),
                    reason: describe_exit(status),
                    log_tail: member.log_tail(ERROR_LOG_LINES),
                });
            }
        }
        pending.retain(|m| !health::is_healthy(m.health_url(), PROBE_TIMEOUT));
        let Some(first) = pending.first() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let names: Vec<&str> = pending.iter().map(|m| m.name()).collect();
            return Err(Error::Timeout {
                what: format!("{} to report healthy on GET /health", names.join(", ")),
                timeout,
                log_tail: first.log_tail(ERROR_LOG_LINES),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("etcd exited ({status}) before it became healthy"),
        None => "etcd is not running".to_owned(),
    }
}

/// A start failure caused by a port somebody else grabbed between our probe and etcd's bind.
fn is_port_race(error: &Error) -> bool {
    matches!(error, Error::StartFailed { log_tail, .. } if log_tail.contains("address already in use"))
}

/// An `--initial-cluster-token` no other cluster on this machine uses.
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("etcd-harness-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's complaint about a taken port must be recognised, for every supported version.
    #[test]
    fn port_conflicts_are_recognised() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let version = EtcdVersion::from_env()?;
        let binaries = EtcdBinaries::find_or_install(version)?;
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client_url = format!("http://{}", taken.local_addr()?);
        let peer_url = format!("http://127.0.0.1:{}", ports::free_ports(1)?[0]);
        let dir = tempfile::tempdir()?;
        let args = member_args(
            "m0",
            &client_url,
            &peer_url,
            &dir.path().join("m0/data"),
            &format!("m0={peer_url}"),
            &unique_token(),
            &[],
        );
        let member = Member::new("m0".into(), client_url, peer_url, dir.path().join("m0"), binaries.etcd.clone(), args);
        match spawn_and_wait(std::slice::from_ref(&member), Duration::from_secs(20)) {
            Err(AttemptError::PortRace(_)) => Ok(()),
            Err(AttemptError::Fatal(e)) => Err(format!("not seen as a port race: {e}").into()),
            Ok(()) => Err("etcd started on a taken port".into()),
        }
    }

    /// A test CA and a server certificate it signed (SANs `127.0.0.1` and `localhost`, server
    /// and client auth, valid 2000-2100), made once with `openssl`; the harness has no
    /// certificate generator and needs none.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBcTCCARigAwIBAgICEAAwCgYIKoZIzj0EAwIwHzEdMBsGA1UEAwwUZXRjZC1o\n\
YXJuZXNzIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBa\n\
MB8xHTAbBgNVBAMMFGV0Y2QtaGFybmVzcyB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAEPfmskmwezHy7/U0tE4kPtWemPQi1QY1AW4VjP6Hog8vCNCel\n\
Sc2MQ0v4J/2jCHev93vJfny21Mla2ArWXZQY8KNCMEAwDwYDVR0TAQH/BAUwAwEB\n\
/zAOBgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFD/TXSO0VGGhUI+Yvtuv6BnehdKj\n\
MAoGCCqGSM49BAMCA0cAMEQCIEKCD8ktHCs/BjpToHKHVLvwHvGei7lSK6bawl92\n\
esz7AiAF9mFRb/rDRnV3EPhD6xwRMcvLb04JRujTNfK74gK7eg==\n\
-----END CERTIFICATE-----\n";
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBzTCCAXSgAwIBAgICEAEwCgYIKoZIzj0EAwIwHzEdMBsGA1UEAwwUZXRjZC1o\n\
YXJuZXNzIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBa\n\
MCMxITAfBgNVBAMMGGV0Y2QtaGFybmVzcyB0ZXN0IHNlcnZlcjBZMBMGByqGSM49\n\
AgEGCCqGSM49AwEHA0IABIbP9GljFAL0qjZ+PgW64OghQ7aJqwpigfB9iLk4iW+i\n\
qzMffgYCrQSeooNCl8Oypw16aqEEaLP2vxdWGCQjExCjgZkwgZYwGgYDVR0RBBMw\n\
EYcEfwAAAYIJbG9jYWxob3N0MB0GA1UdJQQWMBQGCCsGAQUFBwMBBggrBgEFBQcD\n\
AjAOBgNVHQ8BAf8EBAMCBaAwCQYDVR0TBAIwADAfBgNVHSMEGDAWgBQ/010jtFRh\n\
oVCPmL7br+gZ3oXSozAdBgNVHQ4EFgQUDlYj7+6Ywrly7oreyhcFhEPyYhcwCgYI\n\
KoZIzj0EAwIDRwAwRAIgO+9xiUfBvFCVgUXkzDilKySCvpmg/EVcG1z5m3GyzdoC\n\
ICKULc89mz//PjrCVCDnJm0xKTr4c3tnGbN0yugjS41l\n\
-----END CERTIFICATE-----\n";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6yE3TWebDWK9X0G+\n\
t3NxMdCTBP2tp0gD/mHQo+rUm5WhRANCAASGz/RpYxQC9Ko2fj4FuuDoIUO2iasK\n\
YoHwfYi5OIlvoqszH34GAq0EnqKDQpfDsqcNemqhBGiz9r8XVhgkIxMQ\n\
-----END PRIVATE KEY-----\n";

    /// A TLS cluster with client-cert auth starts, reports healthy over its metrics URL, names
    /// its leader, serves etcdctl over https and restarts.
    #[test]
    fn tls_cluster_starts_and_serves_etcdctl() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let tls = ClientTls::new(TEST_CERT, TEST_KEY, TEST_CA).with_client_cert_auth(true);
        let cluster = EtcdCluster::start(ClusterConfig::default().with_client_tls(tls))?;
        let url = cluster.endpoints().remove(0);
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let member = cluster.member(0)?;
        assert!(member.health_url().starts_with("http://127.0.0.1:") && member.health_url() != url);
        assert!(member.args().iter().any(|a| a == "--client-cert-auth"));
        assert_eq!(cluster.wait_for_leader(Duration::from_secs(10))?, 0);
        let (ca, _, key) = cluster.client_tls_files().ok_or("no TLS files")?;
        assert!(ca.exists() && key.exists());

        cluster.run_etcdctl(["put", "tls-key", "v"])?;
        assert_eq!(cluster.run_etcdctl(["get", "tls-key", "--print-value-only"])?.trim(), "v");
        // Without a client certificate the member refuses the TLS handshake.
        let refused = cluster
            .binaries()
            .etcdctl_command([&url])
            .arg(format!("--cacert={}", ca.display()))
            .args(["--dial-timeout=2s", "get", "tls-key"])
            .output()?;
        assert!(!refused.status.success(), "a client without a certificate was served");

        cluster.restart(0)?;
        assert_eq!(cluster.run_etcdctl(["get", "tls-key", "--print-value-only"])?.trim(), "v");
        Ok(())
    }
}
