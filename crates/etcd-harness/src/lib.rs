//! Starts **real** etcd servers for tests, benchmarks and `cargo xtask`.
//!
//! The API is synchronous (`std::process`, `std::thread`), so it works from plain `#[test]`s,
//! criterion benchmarks, xtask and async tests alike (call it from `spawn_blocking` or before
//! entering the runtime if blocking a worker thread for a few seconds matters).
//!
//! ```no_run
//! use etcd_harness::{ClusterConfig, EtcdCluster};
//!
//! # fn main() -> etcd_harness::Result<()> {
//! let cluster = EtcdCluster::start(ClusterConfig::default().with_members(3))?;
//! let endpoints = cluster.endpoints(); // ["http://127.0.0.1:PORT", ...]
//! cluster.run_etcdctl(["put", "k", "v"])?;
//! cluster.kill(0)?;
//! cluster.restart(0)?;
//! # Ok(())
//! # }
//! ```
//!
//! * Binaries: [`EtcdBinaries::find_or_install`] uses `ETCD_BIN`, the cache directory or `PATH`
//!   and installs etcd into the cache directory when needed.
//!   The version comes from `ETCD_VERSION` ("3.5" — the default — or "3.4").
//! * Lifetimes: no etcd process outlives the process that started it, even on panic or SIGKILL;
//!   see the `spawner` module for how. A cluster that is never dropped (kept in a `static`, or
//!   its process killed) leaves its temporary directory behind; the next process that starts a
//!   cluster removes it ([`remove_stale_cluster_dirs`]).
//!
//! Linux only (`prctl(PR_SET_PDEATHSIG)`, process groups).

mod cluster;
mod config;
mod error;
mod grpc_proxy;
mod health;
mod install;
mod member;
mod metrics;
mod ports;
mod process;
mod proxy;
mod spawner;
mod version;
mod workdir;

pub use cluster::EtcdCluster;
pub use config::{ClientTls, ClusterConfig};
pub use error::{Error, Result};
pub use grpc_proxy::GrpcProxy;
pub use install::{CACHE_ENV, ETCD_BIN_ENV, ETCDCTL_BIN_ENV, EtcdBinaries, detect_version};
pub use member::Member;
pub use metrics::Metrics;
pub use process::{ClientProcess, ProcessLine};
pub use proxy::TcpProxy;
pub use version::{ETCD_VERSION_ENV, EtcdVersion};
pub use workdir::remove_stale_cluster_dirs;
