//! What a member's own Prometheus endpoint (`/metrics` on its client URL) says: the server's
//! account, for tests and benchmarks that must not trust the client's.
//!
//! ```no_run
//! # fn main() -> etcd_harness::Result<()> {
//! # let cluster = etcd_harness::EtcdCluster::start(Default::default())?;
//! let before = etcd_harness::Metrics::scrape(&cluster.endpoints()[0])?;
//! // ... run the workload ...
//! let after = etcd_harness::Metrics::scrape(&cluster.endpoints()[0])?;
//! let txns = after.grpc_handled(&["Txn"]) - before.grpc_handled(&["Txn"]);
//! # Ok(())
//! # }
//! ```

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// One read of a member's metrics (Prometheus text format).
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// Reads the metrics of the member whose client URL is `url` (`http://host:port`).
    pub fn scrape(url: &str) -> Result<Metrics> {
        let io = |source| Error::Io { context: format!("reading {url}/metrics"), source };
        let addr = url.trim_start_matches("http://");
        let mut conn = std::net::TcpStream::connect(addr).map_err(io)?;
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(io)?;
        let mut text = String::new();
        conn.read_to_string(&mut text).map_err(io)?;
        Ok(Metrics::parse(text))
    }

    /// Metrics from Prometheus text already read.
    pub fn parse(text: String) -> Metrics {
        Metrics { text }
    }

    /// The value of the unlabelled metric `name` (a gauge or counter such as
    /// `etcd_debugging_mvcc_watcher_total`), if the member reports it.
    pub fn value(&self, name: &str) -> Option<f64> {
        let line = self.text.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The sum of metric `name` over every label set in which `label` has one of `values`
    /// (all label sets if `values` is empty); 0 if there is none.
    pub fn sum(&self, name: &str, label: &str, values: &[&str]) -> f64 {
        let prefix = format!("{name}{{");
        let wanted: Vec<String> = values.iter().map(|v| format!("{label}=\"{v}\"")).collect();
        self.text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter(|l| wanted.is_empty() || wanted.iter().any(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Requests of any of `methods` (`Txn`, `Range`, `LeaseKeepAlive`, ...) the member started
    /// serving (`grpc_server_started_total`): what reached it, whatever became of the answer.
    pub fn grpc_started(&self, methods: &[&str]) -> f64 {
        self.sum("grpc_server_started_total", "grpc_method", methods)
    }

    /// Requests of any of `methods` the member finished, with any status
    /// (`grpc_server_handled_total`; a stream counts once, when it ends).
    pub fn grpc_handled(&self, methods: &[&str]) -> f64 {
        self.sum("grpc_server_handled_total", "grpc_method", methods)
    }

    /// Messages the member received on calls of `methods` (`grpc_server_msg_received_total`):
    /// for a stream such as `LeaseKeepAlive` or `Watch`, one per request sent on it.
    pub fn grpc_received(&self, methods: &[&str]) -> f64 {
        self.sum("grpc_server_msg_received_total", "grpc_method", methods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_sums_come_from_matching_lines_only() {
        let m = Metrics::parse(
            "# HELP x\netcd_debugging_mvcc_watcher_total 3\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 5\n\
             grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 7\n\
             grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 1e+06\n"
                .to_owned(),
        );
        assert_eq!(m.value("etcd_debugging_mvcc_watcher_total"), Some(3.0));
        assert_eq!(m.value("etcd_debugging_mvcc"), None, "whole names only");
        assert_eq!(m.grpc_handled(&["Txn"]), 7.0);
        assert_eq!(m.grpc_handled(&["Txn", "Range"]), 14.0);
        assert_eq!(m.grpc_handled(&[]), 14.0);
        assert_eq!(m.grpc_started(&["Txn"]), 0.0);
        assert_eq!(m.grpc_received(&["LeaseKeepAlive"]), 1e6);
    }
}
