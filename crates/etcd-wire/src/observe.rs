//! What the client records through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature (without it, every function here is empty and compiles away). A service
//! installs any `metrics` recorder (Prometheus, StatsD, ...) and gets, with no code of its own:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `etcd_client_requests_total` | counter | `rpc`, `outcome` | unary calls made, by outcome: `ok` or the [`crate::Error`] variant (`Unavailable`, `Timeout`, `PermissionDenied`, ...) |
//! | `etcd_client_request_duration_seconds` | histogram | `rpc` | a unary call's time, retries and token refreshes included |
//! | `etcd_client_retries_total` | counter | `rpc`, `reason` | calls sent again: `unavailable`, `timeout` or `token` |
//! | `etcd_client_stream_restarts_total` | counter | `stream`, `reason` | watch / keep-alive streams reopened: `failed`, `token` or `moved` (endpoints or credentials changed) |
//!
//! `rpc` is the gRPC method (`Range`, `Put`, `Txn`, `LeaseGrant`, `Lock`, ...).

#[cfg(feature = "metrics")]
use std::time::Duration;

#[cfg(feature = "metrics")]
use crate::error::Error;

/// One unary call, finished after `took` with `outcome`.
#[cfg(feature = "metrics")]
pub(crate) fn call<T>(rpc: &'static str, took: Duration, outcome: &Result<T, Error>) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(e) => e.variant(),
    };
    metrics::counter!("etcd_client_requests_total", "rpc" => rpc, "outcome" => outcome).increment(1);
    metrics::histogram!("etcd_client_request_duration_seconds", "rpc" => rpc).record(took.as_secs_f64());
}

/// A call sent again, for `reason`.
pub(crate) fn retry(rpc: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("etcd_client_retries_total", "rpc" => rpc, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (rpc, reason);
}

/// A stream given up for `reason`, to be reopened.
pub(crate) fn stream_restart(stream: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("etcd_client_stream_restarts_total", "stream" => stream, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (stream, reason);
}
