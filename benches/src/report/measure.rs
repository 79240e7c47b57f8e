//! Measuring: every lock at every contention level, KV through both clients, the keep-alive cost
//! at each lease count, and the machine the run is on.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_lockbench::{Point, Until};
use etcd_wire::{Client, ClientOptions};

use super::{Plan, ms};
use crate::peer::{Lock, peer_client, peer_kv};
use crate::{
    BoxError, Contenders, KeepAliveCost, KvOp, Samples, Server, cpu_time, in_flight, keep_alive_cost, unique, wire_kv,
};

/// Session TTL of every lock contender, seconds.
const TTL: i64 = 10;

/// The keep-alive cost at each of the plan's lease counts, each on a new client.
pub(super) async fn keep_alive_series(server: &Server, plan: &Plan) -> Result<Vec<KeepAliveCost>, BoxError> {
    let mut costs = Vec::new();
    for &n in &plan.leases {
        eprintln!(
            "report: keeping {n} leases (TTL {} s) alive for {:.0} s...",
            plan.lease_ttl,
            plan.lease_window.as_secs_f64()
        );
        costs.push(keep_alive_cost(server, n, plan.lease_ttl, plan.lease_window).await?);
    }
    Ok(costs)
}

/// Every lock at every contention level: for each (clients, contenders), all locks back to back.
pub(super) async fn lock_grid(server: &Server, plan: &Plan) -> Result<Vec<Cell>, BoxError> {
    let total = plan.clients.len() * plan.contenders.len() * Lock::ALL.len() * plan.reps;
    let mut runs: Vec<(Point, Option<f64>)> = Vec::with_capacity(total);
    for &clients in &plan.clients {
        for &n in &plan.contenders {
            for _ in 0..plan.reps {
                // Every lock once per repetition, in a new random order each time, so drift in
                // the machine's load lands on no lock in particular.
                let mut order = Lock::ALL.to_vec();
                fastrand::shuffle(&mut order);
                for lock in order {
                    let name = unique(&format!("report-{}-{n}", lock.id()));
                    let (each, counters) = lock.contenders(server.endpoints(), n, clients, &name, TTL).await?;
                    let contenders = Contenders::new(each, counters);
                    let before = server_rpcs(server);
                    let outcome = contenders.run(Until::Elapsed(plan.per_point)).await?;
                    let counted = server_rpcs(server).zip(before).map(|(b, a)| b - a);
                    drop(contenders);
                    eprintln!(
                        "[{:>3}/{total}] {:<16} {:>2} contenders, {:<8} clients: {:>8.1} locks/s  wait p50 {:>8.2} ms  p99 {:>8.2} ms  ({:.1} s)",
                        runs.len() + 1,
                        lock.label(),
                        n,
                        clients.name(),
                        outcome.throughput(),
                        ms(outcome.wait(0.5)),
                        ms(outcome.wait(0.99)),
                        outcome.elapsed.as_secs_f64(),
                    );
                    runs.push((Point::new(lock.label(), n, clients, outcome), counted));
                }
            }
        }
    }
    Ok(Cell::from_runs(runs))
}

/// The unary RPCs a lock cycle can make, as etcd counts them.
const LOCK_METHODS: &[&str] = &["Txn", "Range", "Put", "DeleteRange", "Lock", "Unlock", "LeaseGrant", "LeaseRevoke"];

/// Unary RPCs the server's members have finished so far (`grpc_server_handled_total`), if every
/// member's metrics answer.
fn server_rpcs(server: &Server) -> Option<f64> {
    server.endpoints().iter().map(|e| etcd_harness::Metrics::scrape(e).ok().map(|m| m.grpc_handled(LOCK_METHODS))).sum()
}

/// One lock at one contention level, over the plan's repetitions.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    /// The repetition with the median throughput: what the tables and plots show.
    pub(super) median: Point,
    /// Throughput of every repetition, locks per second, ascending.
    pub(super) throughputs: Vec<f64>,
    /// Unary RPCs per acquisition as the server counted them in the median repetition (`None`
    /// when its metrics could not be read).
    pub(super) server_rpcs: Option<f64>,
}

impl Cell {
    /// Groups repetitions by (lock, contenders, clients), in the order first measured.
    fn from_runs(runs: Vec<(Point, Option<f64>)>) -> Vec<Cell> {
        let mut groups: Vec<Vec<(Point, Option<f64>)>> = Vec::new();
        for run in runs {
            let same = |g: &Vec<(Point, Option<f64>)>| {
                let p = &g[0].0;
                (p.label.as_str(), p.contenders, p.clients) == (run.0.label.as_str(), run.0.contenders, run.0.clients)
            };
            match groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.push(run),
                None => groups.push(vec![run]),
            }
        }
        groups
            .into_iter()
            .map(|mut g| {
                g.sort_by(|a, b| a.0.outcome.throughput().total_cmp(&b.0.outcome.throughput()));
                let throughputs = g.iter().map(|(p, _)| p.outcome.throughput()).collect();
                let (median, counted) = g.swap_remove(g.len() / 2);
                let server_rpcs = counted.map(|c| c / median.outcome.acquisitions.max(1) as f64);
                Cell { median, throughputs, server_rpcs }
            })
            .collect()
    }

    /// The spread of the repetitions' throughput around the median: (max − min) / median.
    pub(super) fn spread(&self) -> f64 {
        let (lo, hi) = (self.throughputs[0], self.throughputs[self.throughputs.len() - 1]);
        (hi - lo) / self.median.outcome.throughput().max(1e-9)
    }
}

/// One KV op, both clients.
#[derive(Debug)]
pub(super) struct KvRow {
    /// How our client was configured (etcd-client always runs with its defaults).
    pub(super) setting: KvSetting,
    /// The request.
    pub(super) op: KvOp,
    /// Sequential latencies through etcd-wire.
    pub(super) wire_sequential: Samples,
    /// Sequential latencies through etcd-client.
    pub(super) peer_sequential: Samples,
    /// Requests per second through etcd-wire, 64 in flight.
    pub(super) wire_throughput: f64,
    /// Requests per second through etcd-client, 64 in flight.
    pub(super) peer_throughput: f64,
    /// This process's CPU time (user + system) per request through etcd-wire, over the
    /// sequential and the in-flight runs together.
    pub(super) wire_cpu: Duration,
    /// The same through etcd-client.
    pub(super) peer_cpu: Duration,
}

/// Our client's configuration in a KV comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KvSetting {
    /// Our defaults (a request timeout and HTTP/2 keep-alive pings, which etcd-client lacks).
    Defaults,
    /// As etcd-client's defaults: no request timeout, no HTTP/2 keep-alive.
    Matched,
}

impl KvSetting {
    /// Both settings, the matched one first.
    pub(super) const ALL: [KvSetting; 2] = [KvSetting::Matched, KvSetting::Defaults];

    /// How the report names it.
    pub(super) fn name(self) -> &'static str {
        match self {
            KvSetting::Defaults => "our defaults",
            KvSetting::Matched => "matched (no timeout, no keep-alive)",
        }
    }

    fn options(self) -> ClientOptions {
        match self {
            KvSetting::Defaults => ClientOptions::default(),
            KvSetting::Matched => {
                ClientOptions::default().with_request_timeout(None).with_keep_alive(None, Duration::from_secs(20))
            }
        }
    }
}

/// KV ops through both clients, rounds interleaved (alternating who goes first) so drift in the
/// machine's load hits both alike.
pub(super) async fn kv_compare(server: &Server, plan: &Plan) -> Result<Vec<KvRow>, BoxError> {
    let mut rows = Vec::new();
    for setting in KvSetting::ALL {
        rows.extend(kv_compare_with(server, plan, setting).await?);
    }
    Ok(rows)
}

async fn kv_compare_with(server: &Server, plan: &Plan, setting: KvSetting) -> Result<Vec<KvRow>, BoxError> {
    let wire = Client::connect(server.endpoints(), setting.options()).await?;
    let peer = peer_client(server.endpoints()).await?.kv_client();
    let key = unique("report-kv");
    wire_kv(&wire, &key, KvOp::Put).await?;
    let mut rows = Vec::new();
    for op in KvOp::ALL {
        let mut row = KvRow {
            setting,
            op,
            wire_sequential: Samples::default(),
            peer_sequential: Samples::default(),
            wire_throughput: 0.0,
            peer_throughput: 0.0,
            wire_cpu: Duration::ZERO,
            peer_cpu: Duration::ZERO,
        };
        let (mut wire_time, mut peer_time) = (Duration::ZERO, Duration::ZERO);
        let (mut wire_cpu, mut peer_cpu) = (Duration::ZERO, Duration::ZERO);
        // Warm both connections up (first requests pay for lazy setup).
        for _ in 0..50 {
            wire_kv(&wire, &key, op).await?;
            peer_kv(&mut peer.clone(), &key, op).await?;
        }
        for round in 0..plan.kv_rounds {
            for wire_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                let cpu0 = cpu_time();
                if wire_turn {
                    for _ in 0..plan.kv_sequential {
                        let t = Instant::now();
                        wire_kv(&wire, &key, op).await?;
                        row.wire_sequential.push(t.elapsed());
                    }
                    wire_time += in_flight(plan.kv_in_flight, 64, |_| wire_kv(&wire, &key, op)).await?;
                    wire_cpu += cpu_time().saturating_sub(cpu0);
                } else {
                    let mut kv = peer.clone();
                    for _ in 0..plan.kv_sequential {
                        let t = Instant::now();
                        peer_kv(&mut kv, &key, op).await?;
                        row.peer_sequential.push(t.elapsed());
                    }
                    peer_time += in_flight(plan.kv_in_flight, 64, |_| {
                        let (mut kv, key) = (peer.clone(), key.as_str());
                        async move { peer_kv(&mut kv, key, op).await }
                    })
                    .await?;
                    peer_cpu += cpu_time().saturating_sub(cpu0);
                }
            }
        }
        let ops = (plan.kv_in_flight * plan.kv_rounds as u64) as f64;
        row.wire_throughput = ops / wire_time.as_secs_f64().max(1e-9);
        row.peer_throughput = ops / peer_time.as_secs_f64().max(1e-9);
        let all = ops + (plan.kv_sequential * plan.kv_rounds) as f64;
        (row.wire_cpu, row.peer_cpu) = (wire_cpu.div_f64(all), peer_cpu.div_f64(all));
        eprintln!(
            "       kv {:<18} sequential p50 {:.3} ms vs {:.3} ms; 64 in flight {:.0}/s vs {:.0}/s; CPU {:.1} µs vs {:.1} µs per op (etcd-wire, {}, vs etcd-client)",
            op.name(),
            ms(row.wire_sequential.quantile(0.5)),
            ms(row.peer_sequential.quantile(0.5)),
            row.wire_throughput,
            row.peer_throughput,
            row.wire_cpu.as_secs_f64() * 1e6,
            row.peer_cpu.as_secs_f64() * 1e6,
            setting.name()
        );
        rows.push(row);
    }
    Ok(rows)
}

/// What the run ran on, read once at the start.
#[derive(Debug)]
pub(super) struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    /// When the run started, `YYYY-MM-DD HH:MM UTC`.
    pub(super) date: String,
    /// The workspace's commit, marked when the tree has local changes.
    pub(super) commit: String,
    /// The server, as [`Server::describe`] says it.
    pub(super) etcd: String,
}

impl Machine {
    /// The CPU, memory, kernel, date and commit of this run, against `server`.
    pub(super) fn read(server: &Server) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or_else(|| "unknown".to_owned(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(&root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit =
            match (git(&["rev-parse", "--short", "HEAD"]), git(&["status", "--porcelain", "--untracked-files=no"])) {
                (Some(c), Some(s)) if !s.is_empty() => format!("{c} (with local changes)"),
                (Some(c), _) => c,
                (None, _) => "unknown".to_owned(),
            };
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory,
            kernel,
            date: utc_now(),
            commit,
            etcd: server.describe(),
        }
    }

    /// One line: cores, CPU model, memory, kernel.
    pub(super) fn cpu_line(&self) -> String {
        format!("{} cores ({}), {} memory, Linux {}", self.cores, self.cpu, self.memory, self.kernel)
    }
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
