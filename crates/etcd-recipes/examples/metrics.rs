//! Lock contention as metrics, with no code of our own: 8 tasks take turns on one Mutex while
//! `metrics-util`'s debugging recorder stands in for Prometheus or StatsD; then the recorded
//! `etcd_lock_*` and `etcd_client_requests_total` series are printed. Needs the `metrics` feature.
//! Connects to `ETCD_ENDPOINTS` (comma-separated, default `127.0.0.1:2379`).
//!
//! ```text
//! ETCD_ENDPOINTS=127.0.0.1:2379 cargo run -p etcd-recipes --features metrics --example metrics
//! ```

use etcd_recipes::{Mutex, Session};
use etcd_wire::{Client, ClientOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    let endpoints = std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let client = Client::connect(endpoints.split(','), ClientOptions::default()).await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(&client).await?;
            let guard = Mutex::new(&session, "examples/metrics")?.lock().await?;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await; // the critical section
            guard.unlock().await?;
            session.close().await?;
            Ok::<_, etcd_recipes::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    let mut lines = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        if !key.name().starts_with("etcd_lock_") && key.name() != "etcd_client_requests_total" {
            continue;
        }
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let value = match value {
            DebugValue::Counter(n) => format!("{n}"),
            DebugValue::Gauge(g) => format!("{g}"),
            DebugValue::Histogram(v) => {
                let mut v: Vec<f64> = v.into_iter().map(|x| x.into_inner()).collect();
                v.sort_by(f64::total_cmp);
                let ms = |q: f64| v.get(((v.len() - 1) as f64 * q) as usize).map_or(0.0, |s| s * 1e3);
                format!("{} samples, p50 {:.1} ms, max {:.1} ms", v.len(), ms(0.5), ms(1.0))
            }
        };
        lines.push(format!("{}{{{}}} {value}", key.name(), labels.join(",")));
    }
    lines.sort();
    for line in &lines {
        println!("{line}");
    }
    if !lines.iter().any(|l| l.starts_with("etcd_lock_acquired_total{recipe=mutex} 8")) {
        return Err("expected 8 acquisitions of the mutex to be recorded".into());
    }
    Ok(())
}
