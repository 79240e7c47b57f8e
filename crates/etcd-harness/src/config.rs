//! What cluster [`EtcdCluster::start`](crate::EtcdCluster::start) should start.

use std::time::Duration;

use crate::version::EtcdVersion;

/// What cluster to start. Build it with [`ClusterConfig::default`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Number of members (at least 1). Default 1.
    pub members: usize,
    /// etcd version; `None` (the default) reads `ETCD_VERSION` when the cluster starts.
    pub version: Option<EtcdVersion>,
    /// Extra command-line arguments for every member, e.g. `--auto-compaction-mode=revision`.
    pub extra_args: Vec<String>,
    /// Pass `--unsafe-no-fsync` if the etcd binary supports it. Default `true`.
    pub unsafe_no_fsync: bool,
    /// How long to wait for the members to report healthy. Default 30 s.
    pub startup_timeout: Duration,
    /// `--heartbeat-interval` in milliseconds; etcd's default (100) when `None`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `--election-timeout` in milliseconds; etcd's default (1000) when `None`.
    pub election_timeout_ms: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            members: 1,
            version: None,
            extra_args: Vec::new(),
            unsafe_no_fsync: true,
            startup_timeout: Duration::from_secs(30),
            heartbeat_interval_ms: None,
            election_timeout_ms: None,
        }
    }
}

impl ClusterConfig {
    /// Sets the number of members.
    pub fn with_members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// Pins the etcd version (instead of reading `ETCD_VERSION`).
    pub fn with_version(mut self, version: EtcdVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// Adds one extra etcd argument.
    pub fn with_extra_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds several extra etcd arguments.
    pub fn with_extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Turns `--unsafe-no-fsync` on or off.
    pub fn with_unsafe_no_fsync(mut self, on: bool) -> Self {
        self.unsafe_no_fsync = on;
        self
    }

    /// Sets the start-up (and restart) health timeout.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets `--heartbeat-interval` (milliseconds).
    pub fn with_heartbeat_interval_ms(mut self, ms: u64) -> Self {
        self.heartbeat_interval_ms = Some(ms);
        self
    }

    /// Sets `--election-timeout` (milliseconds).
    pub fn with_election_timeout_ms(mut self, ms: u64) -> Self {
        self.election_timeout_ms = Some(ms);
        self
    }
}
