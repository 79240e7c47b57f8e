//! `report`: the lock-strategy comparison, as a report. `cargo xtask compare [--full]` runs it
//! (`cargo bench -p etcd-benches --bench report -- [--full] [--fsync]`).
//!
//! Every lock (our four strategies and etcd-client's server-side lock) runs at each contention
//! level, on separate clients and on one shared client, back to back against the same server, so
//! machine noise hits them alike; then KV (etcd-wire vs etcd-client), election failover and lease
//! keep-alive. It prints progress on stderr, the summary table, the ratios and the targets on
//! stdout, and writes `report.md` and SVG plots to `<target>/lock-report/`.
//!
//! Flags: `--full` (longer points, more contention levels), `--fsync` (etcd with fsync on; also
//! `BENCH_FSYNC=1`), `--kv-only` (just the KV comparison table), `--leases-only` (just the
//! keep-alive scaling table), `--leases=1000,100000` (the lease counts it measures).
//! `ETCD_ENDPOINTS` measures your own cluster instead of a local one.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Lock;
use etcd_benches::{
    BoxError, Contenders, Failover, KeepAliveCost, KvOp, Samples, Server, in_flight, keep_alive_cost, runtime,
    selected, unique, wire_kv,
};
use etcd_lockbench::{Clients, Outcome, Point, Until, table};
use etcd_recipes::Strategy;
use plotters::prelude::*;

/// Session TTL of every lock contender, seconds.
const TTL: i64 = 10;

/// How much to measure.
#[derive(Debug, Clone)]
struct Plan {
    name: &'static str,
    per_point: Duration,
    contenders: Vec<usize>,
    clients: Vec<Clients>,
    kv_rounds: usize,
    kv_sequential: usize,
    kv_in_flight: u64,
    failovers: usize,
    /// Lease counts the keep-alive cost is measured at (its growth from the first to the last is
    /// the scaling figure).
    leases: Vec<usize>,
    lease_ttl: i64,
    lease_window: Duration,
}

impl Plan {
    fn short() -> Plan {
        Plan {
            name: "short",
            per_point: Duration::from_secs(1),
            contenders: vec![1, 2, 4, 16, 64],
            clients: vec![Clients::Separate, Clients::Shared],
            kv_rounds: 6,
            kv_sequential: 300,
            kv_in_flight: 3000,
            failovers: 40,
            leases: vec![1_000, 10_000, 100_000],
            // Refreshed every 10 s: 100,000 leases are 10,000 refreshes per second.
            lease_ttl: 30,
            lease_window: Duration::from_secs(10),
        }
    }

    fn full() -> Plan {
        Plan {
            name: "full",
            per_point: Duration::from_secs(5),
            contenders: vec![1, 2, 4, 8, 16, 32, 64],
            kv_rounds: 20,
            kv_sequential: 1000,
            kv_in_flight: 10_000,
            failovers: 200,
            lease_window: Duration::from_secs(30),
            ..Plan::short()
        }
    }

    /// `cargo test --benches` runs bench targets without `--bench`: a quick check that it all works.
    fn smoke() -> Plan {
        Plan {
            name: "smoke test",
            per_point: Duration::from_millis(200),
            contenders: vec![1, 4],
            clients: vec![Clients::Separate],
            kv_rounds: 2,
            kv_sequential: 50,
            kv_in_flight: 200,
            failovers: 3,
            leases: vec![1000],
            lease_ttl: 6,
            lease_window: Duration::from_secs(2),
        }
    }
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if !selected("report") {
        // `cargo bench -- <filter>` for another bench (or `--list`): nothing of ours is selected.
        return Ok(());
    }
    let plan = if has("--full") {
        Plan::full()
    } else if has("--bench") {
        Plan::short()
    } else {
        Plan::smoke()
    };
    let mut plan = plan;
    if let Some(list) = args.iter().find_map(|a| a.strip_prefix("--leases=")) {
        // Other lease counts, e.g. `--leases=1000,30000`.
        plan.leases = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
    }
    let started = Instant::now();
    eprintln!("report: starting etcd...");
    let server = Server::start(has("--fsync"))?;
    let machine = Machine::read(&server);
    eprintln!("report: {} run against {}", plan.name, server.describe());
    eprintln!("report: {}", machine.cpu_line());
    let rt = runtime();
    let _entered = rt.enter();
    if has("--kv-only") {
        // Only the KV comparison (for before/after measurements of etcd-wire's hot path).
        let kv = rt.block_on(kv_compare(&server, &plan))?;
        println!("{}", kv_table(&kv));
        return Ok(());
    }
    if has("--leases-only") {
        // Only the keep-alive scaling (for before/after measurements of the keep-alive task).
        let costs = rt.block_on(keep_alive_series(&server, &plan))?;
        println!("{}", keep_alive_table(&costs));
        for v in keep_alive_verdicts(&costs) {
            println!("{}: {} ({})", if v.pass { "PASS" } else { "MISS" }, v.target, v.measured);
        }
        return Ok(());
    }

    let points = rt.block_on(lock_grid(&server, &plan))?;
    eprintln!("report: KV, etcd-wire vs etcd-client...");
    let kv = rt.block_on(kv_compare(&server, &plan))?;
    eprintln!("report: election failover, {} samples...", plan.failovers);
    let failover = rt.block_on(async {
        let mut f = Failover::new(&server).await?;
        let mut s = Samples::default();
        for _ in 0..plan.failovers {
            s.push(f.sample().await?);
        }
        Ok::<_, etcd_recipes::Error>(s)
    })?;
    let keep_alive = rt.block_on(keep_alive_series(&server, &plan))?;

    let report = Report { plan, machine, server: &server, points, kv, failover, keep_alive, took: started.elapsed() };
    let dir = output_dir();
    std::fs::create_dir_all(&dir)?;
    let plots = report.plots(&dir)?;
    let markdown = report.markdown(&plots);
    let path = dir.join("report.md");
    std::fs::write(&path, &markdown)?;
    println!("{}", report.terminal());
    println!("Report: {}", path.display());
    for p in &plots {
        println!("Plot:   {}", dir.join(&p.file).display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// The keep-alive cost at each of the plan's lease counts, each on a new client.
async fn keep_alive_series(server: &Server, plan: &Plan) -> Result<Vec<KeepAliveCost>, BoxError> {
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

/// One row per lease count: CPU per refresh, share of a core, memory per lease, losses.
fn keep_alive_table(costs: &[KeepAliveCost]) -> String {
    let mut out = String::from(
        "| leases | TTL | refreshes in window | CPU per refresh | CPU (share of a core) | memory per lease | lost | setup |\n|---|---|---|---|---|---|---|---|\n",
    );
    for k in costs {
        let _ = writeln!(
            out,
            "| {} | {} s | {:.0}{} | {:.1} µs | {:.1}% | {:.0} B | {} | {:.1} s |",
            k.leases,
            k.ttl,
            k.refreshes,
            if k.counted { "" } else { " (estimated)" },
            k.cpu_per_refresh.as_secs_f64() * 1e6,
            k.cpu_per_sec_per_1000.as_secs_f64() * 100.0 * k.leases as f64 / 1000.0,
            k.rss_per_lease,
            k.lost,
            k.setup.as_secs_f64()
        );
    }
    out
}

/// Keep-alive targets: CPU per refresh flat (×1.5) from the fewest to the most leases, ≤ 15 µs at
/// 100,000, nothing lost.
fn keep_alive_verdicts(costs: &[KeepAliveCost]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let us = |k: &KeepAliveCost| k.cpu_per_refresh.as_secs_f64() * 1e6;
    if let (Some(first), Some(last)) = (costs.first(), costs.last())
        && last.leases > first.leases
    {
        let growth = us(last) / us(first).max(1e-9);
        out.push(Verdict {
            target: format!("Keep-alive CPU per refresh within ×1.5 from {} to {} leases", first.leases, last.leases),
            measured: format!("{:.1} µs → {:.1} µs: ×{growth:.2}", us(first), us(last)),
            pass: growth <= 1.5,
        });
    }
    if let Some(k) = costs.iter().find(|k| k.leases >= 100_000) {
        out.push(Verdict {
            target: format!("Keep-alive ≤ 15 µs of CPU per refresh at {} leases", k.leases),
            measured: format!("{:.1} µs ({:.0} B per lease)", us(k), k.rss_per_lease),
            pass: us(k) <= 15.0,
        });
    }
    let lost: usize = costs.iter().map(|k| k.lost).sum();
    out.push(Verdict {
        target: "No kept-alive lease lost".to_owned(),
        measured: format!("{lost} lost"),
        pass: lost == 0,
    });
    out
}

/// Every lock at every contention level: for each (clients, contenders), all locks back to back.
async fn lock_grid(server: &Server, plan: &Plan) -> Result<Vec<Point>, BoxError> {
    let total = plan.clients.len() * plan.contenders.len() * Lock::ALL.len();
    let mut points = Vec::with_capacity(total);
    for &clients in &plan.clients {
        for &n in &plan.contenders {
            for lock in Lock::ALL {
                let name = unique(&format!("report-{}-{n}", lock.id()));
                let (each, counters) = lock.contenders(server.endpoints(), n, clients, &name, TTL).await?;
                let contenders = Contenders::new(each, counters);
                let outcome = contenders.run(Until::Elapsed(plan.per_point)).await?;
                drop(contenders);
                eprintln!(
                    "[{:>2}/{total}] {:<16} {:>2} contenders, {:<8} clients: {:>8.1} locks/s  wait p50 {:>8.2} ms  p99 {:>8.2} ms  ({:.1} s)",
                    points.len() + 1,
                    lock.label(),
                    n,
                    clients.name(),
                    outcome.throughput(),
                    ms(outcome.wait(0.5)),
                    ms(outcome.wait(0.99)),
                    outcome.elapsed.as_secs_f64(),
                );
                points.push(Point::new(lock.label(), n, clients, outcome));
            }
        }
    }
    Ok(points)
}

/// The KV comparison as a markdown table.
fn kv_table(rows: &[KvRow]) -> String {
    let mut out = String::from(
        "| op | sequential p50, etcd-wire | sequential p50, etcd-client | ratio | p99, etcd-wire | p99, etcd-client | 64 in flight, etcd-wire | 64 in flight, etcd-client | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let (w, p) = (row.wire_sequential.quantile(0.5), row.peer_sequential.quantile(0.5));
        let _ = writeln!(
            out,
            "| {} | {:.3} ms | {:.3} ms | ×{:.2} | {:.3} ms | {:.3} ms | {:.0}/s | {:.0}/s | ×{:.2} |",
            row.op.name(),
            ms(w),
            ms(p),
            w.as_secs_f64() / p.as_secs_f64().max(1e-12),
            ms(row.wire_sequential.quantile(0.99)),
            ms(row.peer_sequential.quantile(0.99)),
            row.wire_throughput,
            row.peer_throughput,
            row.wire_throughput / row.peer_throughput.max(1e-9)
        );
    }
    out
}

/// One KV op, both clients.
#[derive(Debug)]
struct KvRow {
    op: KvOp,
    wire_sequential: Samples,
    peer_sequential: Samples,
    wire_throughput: f64,
    peer_throughput: f64,
}

/// KV ops through both clients, rounds interleaved (alternating who goes first) so drift in the
/// machine's load hits both alike.
async fn kv_compare(server: &Server, plan: &Plan) -> Result<Vec<KvRow>, BoxError> {
    let wire = server.client().await?;
    let peer = common::peer_client(server.endpoints()).await?.kv_client();
    let key = unique("report-kv");
    wire_kv(&wire, &key, KvOp::Put).await?;
    let mut rows = Vec::new();
    for op in KvOp::ALL {
        let mut row = KvRow {
            op,
            wire_sequential: Samples::default(),
            peer_sequential: Samples::default(),
            wire_throughput: 0.0,
            peer_throughput: 0.0,
        };
        let (mut wire_time, mut peer_time) = (Duration::ZERO, Duration::ZERO);
        // Warm both connections up (first requests pay for lazy setup).
        for _ in 0..50 {
            wire_kv(&wire, &key, op).await?;
            common::peer_kv(&mut peer.clone(), &key, op).await?;
        }
        for round in 0..plan.kv_rounds {
            for wire_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                if wire_turn {
                    for _ in 0..plan.kv_sequential {
                        let t = Instant::now();
                        wire_kv(&wire, &key, op).await?;
                        row.wire_sequential.push(t.elapsed());
                    }
                    wire_time += in_flight(plan.kv_in_flight, 64, |_| wire_kv(&wire, &key, op)).await?;
                } else {
                    let mut kv = peer.clone();
                    for _ in 0..plan.kv_sequential {
                        let t = Instant::now();
                        common::peer_kv(&mut kv, &key, op).await?;
                        row.peer_sequential.push(t.elapsed());
                    }
                    peer_time += in_flight(plan.kv_in_flight, 64, |_| {
                        let (mut kv, key) = (peer.clone(), key.as_str());
                        async move { common::peer_kv(&mut kv, key, op).await }
                    })
                    .await?;
                }
            }
        }
        let ops = (plan.kv_in_flight * plan.kv_rounds as u64) as f64;
        row.wire_throughput = ops / wire_time.as_secs_f64().max(1e-9);
        row.peer_throughput = ops / peer_time.as_secs_f64().max(1e-9);
        eprintln!(
            "       kv {:<18} sequential p50 {:.3} ms vs {:.3} ms; 64 in flight {:.0}/s vs {:.0}/s (etcd-wire vs etcd-client)",
            op.name(),
            ms(row.wire_sequential.quantile(0.5)),
            ms(row.peer_sequential.quantile(0.5)),
            row.wire_throughput,
            row.peer_throughput
        );
        rows.push(row);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The machine

#[derive(Debug)]
struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    date: String,
    commit: String,
    etcd: String,
}

impl Machine {
    fn read(server: &Server) -> Machine {
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

    fn cpu_line(&self) -> String {
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

/// `<target>/lock-report`: `CARGO_TARGET_DIR`, else the target directory this binary was built in.
fn output_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir) } else { dir };
        return dir.join("lock-report");
    }
    // <target>/<profile>/deps/report-<hash>
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf)).flatten()
    });
    from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")).join("lock-report")
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    plan: Plan,
    machine: Machine,
    server: &'a Server,
    points: Vec<Point>,
    kv: Vec<KvRow>,
    failover: Samples,
    keep_alive: Vec<KeepAliveCost>,
    took: Duration,
}

/// One target of the issue, judged.
#[derive(Debug)]
struct Verdict {
    target: String,
    measured: String,
    pass: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const MUTEX: &str = "mutex";
const NAIVE: &str = "naive";
const RPC: &str = "rpc";
const PEER: &str = "etcd-client rpc";

impl Report<'_> {
    fn point(&self, label: &str, n: usize, clients: Clients) -> Option<&Outcome> {
        self.points.iter().find(|p| p.label == label && p.contenders == n && p.clients == clients).map(|p| &p.outcome)
    }

    fn verdicts(&self) -> Vec<Verdict> {
        let mut out = keep_alive_verdicts(&self.keep_alive);
        for row in &self.kv {
            let (w, p) = (row.wire_sequential.quantile(0.5), row.peer_sequential.quantile(0.5));
            let ratio = w.as_secs_f64() / p.as_secs_f64().max(1e-12);
            out.push(Verdict {
                target: format!("KV {} sequential p50 ≤ etcd-client's", row.op.name()),
                measured: format!("{:.3} ms vs {:.3} ms: ×{ratio:.2}", ms(w), ms(p)),
                pass: ratio <= 1.0,
            });
        }
        for row in &self.kv {
            let ratio = row.wire_throughput / row.peer_throughput.max(1e-9);
            out.push(Verdict {
                target: format!("KV {} throughput, 64 in flight ≥ etcd-client's", row.op.name()),
                measured: format!("{:.0}/s vs {:.0}/s: ×{ratio:.2}", row.wire_throughput, row.peer_throughput),
                pass: ratio >= 1.0,
            });
        }
        for &clients in &self.plan.clients {
            if let Some(o) = self.point(MUTEX, 1, clients) {
                let rpcs = o.rpcs.unwrap_or(0);
                out.push(Verdict {
                    target: format!("Mutex uncontended cycle is exactly 2 RPCs ({} clients)", clients.name()),
                    measured: format!(
                        "{rpcs} RPCs for {} cycles: {:.3} per cycle",
                        o.acquisitions,
                        o.rpcs_per_acquisition().unwrap_or(0.0)
                    ),
                    pass: o.acquisitions > 0 && rpcs == 2 * o.acquisitions,
                });
            }
        }
        for &clients in &self.plan.clients {
            for n in [4, 16] {
                let (Some(m), Some(p)) = (self.point(MUTEX, n, clients), self.point(PEER, n, clients)) else {
                    continue;
                };
                let ratio = m.throughput() / p.throughput().max(1e-9);
                let ours = self.point(RPC, n, clients).map_or(String::new(), |r| {
                    format!("; vs our rpc lock ×{:.1}", m.throughput() / r.throughput().max(1e-9))
                });
                out.push(Verdict {
                    target: format!(
                        "Mutex at {n} contenders ({} clients) ≥ 15× the Lock RPC's throughput",
                        clients.name()
                    ),
                    measured: format!(
                        "{:.0} vs {:.1} locks/s: ×{ratio:.1} vs etcd-client rpc{ours}",
                        m.throughput(),
                        p.throughput()
                    ),
                    pass: ratio >= 15.0,
                });
                let stall_free = m.handoff(0.99) < Duration::from_millis(50)
                    && m.wait(0.99) < Duration::from_millis(50) * (n as u32 - 1);
                out.push(Verdict {
                    target: format!(
                        "Mutex at {n} contenders ({} clients): p99 wait free of the ~100 ms stall",
                        clients.name()
                    ),
                    measured: format!(
                        "handoff p99 {:.2} ms, wait p99 {:.2} ms (Lock RPC: handoff p99 {:.1} ms, wait p99 {:.1} ms)",
                        ms(m.handoff(0.99)),
                        ms(m.wait(0.99)),
                        ms(p.handoff(0.99)),
                        ms(p.wait(0.99))
                    ),
                    pass: stall_free,
                });
            }
        }
        for &clients in &self.plan.clients {
            let series = |label: &str| -> Vec<(usize, f64)> {
                self.plan
                    .contenders
                    .iter()
                    .filter(|&&n| n >= 2)
                    .filter_map(|&n| self.point(label, n, clients)?.rpcs_per_acquisition().map(|r| (n, r)))
                    .collect()
            };
            let (naive, mutex) = (series(NAIVE), series(MUTEX));
            if naive.len() < 2 || mutex.len() < 2 {
                continue;
            }
            let show = |s: &[(usize, f64)]| s.iter().map(|(n, r)| format!("{n}→{r:.1}")).collect::<Vec<_>>().join(", ");
            let growth = naive[naive.len() - 1].1 / naive[0].1.max(1e-9);
            out.push(Verdict {
                target: format!("Naive lock's RPCs/acquisition grow with contenders ({} clients)", clients.name()),
                measured: format!(
                    "{} (×{growth:.1} from {} to {} contenders)",
                    show(&naive),
                    naive[0].0,
                    naive[naive.len() - 1].0
                ),
                pass: naive.windows(2).all(|w| w[1].1 >= w[0].1) && growth >= 2.0,
            });
            let (lo, hi) = mutex.iter().fold((f64::MAX, 0f64), |(lo, hi), (_, r)| (lo.min(*r), hi.max(*r)));
            let spread = hi / lo.max(1e-9);
            out.push(Verdict {
                target: format!("Mutex's RPCs/acquisition stay flat, within ×1.5 ({} clients)", clients.name()),
                measured: format!("{} (max/min ×{spread:.2}; naive ×{growth:.1})", show(&mutex)),
                pass: spread <= 1.5,
            });
        }
        out
    }

    /// One row per lock, one column per contention level: locks/s, p99 wait, RPCs per lock.
    fn summary(&self, clients: Clients) -> String {
        let ns: Vec<usize> = self.plan.contenders.clone();
        let mut out = String::from("| lock |");
        for n in &ns {
            let _ = write!(out, " {n} {} |", if *n == 1 { "contender" } else { "contenders" });
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(ns.len()));
        out.push('\n');
        for lock in Lock::ALL {
            let _ = write!(out, "| {} |", lock.label());
            for &n in &ns {
                match self.point(lock.label(), n, clients) {
                    Some(o) => {
                        let rpcs = o.rpcs_per_acquisition().map_or("n/a".to_owned(), |r| format!("{r:.1}"));
                        let _ = write!(out, " {:.0}/s · {:.1} ms · {rpcs} |", o.throughput(), ms(o.wait(0.99)));
                    }
                    None => out.push_str(" n/a |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Throughput of each of our locks as a multiple of etcd-client's server-side lock.
    fn ratio_table(&self) -> String {
        let ours = [Strategy::Mutex, Strategy::Naive, Strategy::LeaseTtl, Strategy::Rpc];
        let mut out = String::from("| contenders | clients | etcd-client rpc locks/s |");
        for s in ours {
            let _ = write!(out, " {} ×throughput | {} ×wait p99 |", s.name(), s.name());
        }
        out.push_str("\n|---:|---|---:|");
        out.push_str(&"---:|---:|".repeat(ours.len()));
        out.push('\n');
        for &clients in &self.plan.clients {
            for &n in &self.plan.contenders {
                let Some(peer) = self.point(PEER, n, clients) else { continue };
                let _ = write!(out, "| {n} | {} | {:.1} |", clients.name(), peer.throughput());
                for s in ours {
                    match self.point(s.name(), n, clients) {
                        Some(o) => {
                            let t = o.throughput() / peer.throughput().max(1e-9);
                            let w = o.wait(0.99).as_secs_f64() / peer.wait(0.99).as_secs_f64().max(1e-12);
                            let _ = write!(out, " {t:.2} | {w:.2} |");
                        }
                        None => out.push_str(" n/a | n/a |"),
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    fn kv_table(&self) -> String {
        kv_table(&self.kv)
    }

    fn verdict_table(verdicts: &[Verdict]) -> String {
        let mut out = String::from("| target | measured | verdict |\n|---|---|---|\n");
        for v in verdicts {
            let _ = writeln!(out, "| {} | {} | {} |", v.target, v.measured, if v.pass { "PASS" } else { "**MISS**" });
        }
        out
    }

    fn others(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "- **Election failover** (leader's session closed → the follower's `observe` reports the new leader), {} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
            self.failover.len(),
            ms(self.failover.quantile(0.5)),
            ms(self.failover.quantile(0.99)),
            ms(self.failover.quantile(1.0))
        );
        let _ = writeln!(
            out,
            "\n**Lease keep-alive** on one client's shared stream (this process's CPU over the window; refreshes counted by the server):\n\n{}",
            keep_alive_table(&self.keep_alive)
        );
        out
    }

    fn markdown(&self, plots: &[Plot]) -> String {
        let verdicts = self.verdicts();
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# Lock strategies compared\n");
        let _ = writeln!(
            out,
            "Generated by `cargo xtask compare{}` (the `report` bench of `benches/`) on {}, commit {} ({} run, {:.0} s).\n",
            if self.plan.name == "full" { " --full" } else { "" },
            m.date,
            m.commit,
            self.plan.name,
            self.took.as_secs_f64()
        );
        let _ = writeln!(out, "- Machine: {}.", m.cpu_line());
        let _ = writeln!(out, "- Server: {}; etcd shares the machine with the benchmark.", m.etcd);
        let _ = writeln!(
            out,
            "- Each point: {:.1} s of lock → unlock cycles with no hold time, each contender with its own session; when time is up every waiter finishes its cycle. All locks run back to back at each contention level, so machine noise hits them alike.\n",
            self.plan.per_point.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "## Summary\n\nEach cell: acquisitions per second · p99 acquire wait · client RPCs per acquisition; each contender on its own client.\n\n{}",
            self.summary(Clients::Separate)
        );
        let _ = writeln!(out, "## Targets\n\n{}", Self::verdict_table(&verdicts));
        let _ = writeln!(
            out,
            "\"Free of the stall\": no handoff at the 99th percentile near etcd's 100 ms unsynced-watch interval (p99 handoff < 50 ms), and p99 wait below 50 ms per contender ahead.\n"
        );
        for &clients in &self.plan.clients {
            let subset: Vec<Point> = self.points.iter().filter(|p| p.clients == clients).cloned().collect();
            let title = match clients {
                Clients::Shared => "all contenders on one shared client",
                _ => "each contender on its own client",
            };
            let _ = writeln!(out, "## Locks: {title}\n\n{}", table(&subset));
        }
        let _ = writeln!(
            out,
            "RPCs/lock counts the client's unary RPCs per acquisition (lock and unlock); events/lock the watch events it received. etcd-client's lock makes 2 (`Lock`, `Unlock`); our `rpc` lock adds its safety checks (it reads the fencing token and unlocks with a fenced Txn, see `crates/etcd-recipes/src/rpc_lock.rs`). The waiting etcd does inside the member for the Lock RPC (its own watches) is invisible to both.\n"
        );
        let _ = writeln!(
            out,
            "## Ratios against etcd-client's server-side lock\n\nThroughput (higher is better) and p99 acquire wait (lower is better) as multiples of etcd-client's, same contention, same run.\n\n{}",
            self.ratio_table()
        );
        let _ = writeln!(out, "## KV: etcd-wire against etcd-client\n\n{}", self.kv_table());
        let _ = writeln!(out, "## Election and leases\n\n{}", self.others());
        let _ = writeln!(out, "## Plots\n");
        for p in plots {
            let _ = writeln!(out, "### {}\n\n![{}]({})\n", p.title, p.title, p.file);
        }
        out
    }

    fn terminal(&self) -> String {
        let verdicts = self.verdicts();
        let mut out = String::new();
        let _ = writeln!(out, "\n{} ({} run)\n{}\n", self.server.describe(), self.plan.name, self.machine.cpu_line());
        let _ = writeln!(out, "{}", table(&self.points));
        let _ = writeln!(
            out,
            "Summary (locks/s · p99 wait · RPCs per lock; a client per contender):\n\n{}",
            self.summary(Clients::Separate)
        );
        let _ = writeln!(
            out,
            "Ratios against etcd-client's server-side lock (throughput ×, p99 wait ×):\n\n{}",
            self.ratio_table()
        );
        let _ = writeln!(out, "KV, etcd-wire against etcd-client:\n\n{}", self.kv_table());
        let _ = writeln!(out, "{}", self.others());
        let _ = writeln!(out, "Targets:\n\n{}", Self::verdict_table(&verdicts));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Plots (SVG: no fonts or system libraries needed)

/// A plot written next to the report.
#[derive(Debug)]
struct Plot {
    file: String,
    title: String,
}

type Metric = fn(&Outcome) -> Option<f64>;

/// One plot of a metric against contenders, a panel per client setup.
struct PlotSpec {
    file: &'static str,
    title: &'static str,
    y_desc: &'static str,
    /// Drawn solid, with markers, and named in the legend.
    main: Metric,
    /// Drawn dashed in the same colour.
    dashed: Option<Metric>,
    legend: SeriesLabelPosition,
    /// A log y axis (else linear from 0).
    log_y: bool,
}

fn color_of(lock: Lock) -> RGBColor {
    match lock {
        Lock::Ours(Strategy::Mutex) => RGBColor(31, 119, 180),
        Lock::Ours(Strategy::Naive) => RGBColor(214, 39, 40),
        Lock::Ours(Strategy::LeaseTtl) => RGBColor(255, 127, 14),
        Lock::Ours(Strategy::Rpc) => RGBColor(44, 160, 44),
        Lock::Ours(_) => RGBColor(127, 127, 127),
        Lock::EtcdClientRpc => RGBColor(148, 103, 189),
    }
}

/// Tick labels for a log axis: no trailing zeros, no scientific notation.
fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}").trim_end_matches(".0").to_owned()
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A log range covering `values` with some room.
fn log_range(values: impl IntoIterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { 0.1..10.0 } else { lo / 1.6..hi * 1.6 }
}

fn panel_title(clients: Clients) -> &'static str {
    match clients {
        Clients::Shared => "all contenders on one shared client",
        _ => "each contender on its own client",
    }
}

impl Report<'_> {
    fn plots(&self, dir: &Path) -> Result<Vec<Plot>, BoxError> {
        Ok(vec![
            self.contenders_plot(
                dir,
                PlotSpec {
                    file: "wait-vs-contenders.svg",
                    title: "Acquire wait vs contenders (p99 solid, p50 dashed; log-log)",
                    y_desc: "acquire wait (ms)",
                    main: |o| Some(ms(o.wait(0.99))),
                    dashed: Some(|o| Some(ms(o.wait(0.5)))),
                    legend: SeriesLabelPosition::UpperLeft,
                    log_y: true,
                },
            )?,
            self.contenders_plot(
                dir,
                PlotSpec {
                    file: "throughput-vs-contenders.svg",
                    title: "Throughput vs contenders (log-log)",
                    y_desc: "acquisitions per second",
                    main: |o| Some(o.throughput()),
                    dashed: None,
                    legend: SeriesLabelPosition::LowerRight,
                    log_y: true,
                },
            )?,
            self.contenders_plot(
                dir,
                PlotSpec {
                    file: "rpcs-vs-contenders.svg",
                    title: "RPCs per acquisition vs contenders (the herd; log x)",
                    y_desc: "client RPCs per acquisition",
                    main: Outcome::rpcs_per_acquisition,
                    dashed: None,
                    legend: SeriesLabelPosition::UpperLeft,
                    log_y: false,
                },
            )?,
            self.cdf_plot(dir)?,
        ])
    }

    fn contenders_plot(&self, dir: &Path, spec: PlotSpec) -> Result<Plot, BoxError> {
        let PlotSpec { file, title, y_desc, main, dashed, legend, log_y } = spec;
        let path = dir.join(file);
        let panels = self.plan.clients.len().max(1);
        let root = SVGBackend::new(&path, (600 * panels as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let metric = |o: &Outcome, f: Metric| f(o).filter(|v| v.is_finite() && *v > 0.0);
        let y = log_range(
            self.points
                .iter()
                .flat_map(|p| [metric(&p.outcome, main), dashed.and_then(|d| metric(&p.outcome, d))])
                .flatten(),
        );
        let (first, last) = (self.plan.contenders.first().copied(), self.plan.contenders.last().copied());
        let x = first.unwrap_or(1) as f64 * 0.8..last.unwrap_or(64) as f64 * 1.25;
        // The same panel on a log or a linear y axis (different coordinate types, hence a macro).
        macro_rules! panel {
            ($area:expr, $clients:expr, $y:expr) => {{
                let clients = $clients;
                let mut chart = ChartBuilder::on($area)
                    .caption(panel_title(clients), ("sans-serif", 16))
                    .margin(14)
                    .x_label_area_size(44)
                    .y_label_area_size(70)
                    .build_cartesian_2d(x.clone().log_scale(), $y)?;
                chart
                    .configure_mesh()
                    .x_desc("contenders")
                    .y_desc(y_desc)
                    .x_label_formatter(&|v| tick(*v))
                    .y_label_formatter(&|v| tick(*v))
                    .label_style(("sans-serif", 13))
                    .axis_desc_style(("sans-serif", 14))
                    .draw()?;
                for lock in Lock::ALL {
                    let color = color_of(lock);
                    let line = |f: Metric| -> Vec<(f64, f64)> {
                        self.points
                            .iter()
                            .filter(|p| p.label == lock.label() && p.clients == clients)
                            .filter_map(|p| metric(&p.outcome, f).map(|v| (p.contenders as f64, v)))
                            .collect()
                    };
                    let solid = line(main);
                    chart
                        .draw_series(LineSeries::new(solid.clone(), color.stroke_width(2)))?
                        .label(lock.label())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
                    chart.draw_series(solid.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                    if let Some(d) = dashed {
                        chart.draw_series(DashedLineSeries::new(line(d), 5, 4, color.stroke_width(1)))?;
                    }
                }
                chart
                    .configure_series_labels()
                    .position(legend.clone())
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.5))
                    .label_font(("sans-serif", 13))
                    .draw()?;
            }};
        }
        for (area, &clients) in root.split_evenly((1, panels)).iter().zip(&self.plan.clients) {
            if log_y {
                panel!(area, clients, y.clone().log_scale());
            } else {
                panel!(area, clients, 0f64..y.end / 1.6 * 1.1);
            }
        }
        root.present()?;
        Ok(Plot { file: file.to_owned(), title: title.to_owned() })
    }

    /// CDF of acquire waits, Mutex against the Lock RPC (ours and etcd-client's), at 16
    /// contenders (or the most measured below that).
    fn cdf_plot(&self, dir: &Path) -> Result<Plot, BoxError> {
        let n = self.plan.contenders.iter().copied().filter(|&n| n <= 16).max().unwrap_or(1);
        let file = "wait-cdf-mutex-vs-lock-rpc.svg";
        let title = format!("Acquire wait CDF at {n} contenders: Mutex vs the Lock RPC (log x)");
        let path = dir.join(file);
        let panels = self.plan.clients.len().max(1);
        let root = SVGBackend::new(&path, (600 * panels as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&title, ("sans-serif", 22))?;
        let locks = [Lock::Ours(Strategy::Mutex), Lock::Ours(Strategy::Rpc), Lock::EtcdClientRpc];
        let waits = |lock: Lock, clients: Clients| {
            self.points
                .iter()
                .find(|p| p.label == lock.label() && p.contenders == n && p.clients == clients)
                .map(|p| p.outcome.waits.clone())
                .unwrap_or_default()
        };
        let x = log_range(self.plan.clients.iter().flat_map(|&c| locks.iter().flat_map(move |&l| waits(l, c))).map(ms));
        for (area, &clients) in root.split_evenly((1, panels)).iter().zip(&self.plan.clients) {
            let mut chart = ChartBuilder::on(area)
                .caption(panel_title(clients), ("sans-serif", 16))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(60)
                .build_cartesian_2d(x.clone().log_scale(), 0f64..1.3)?;
            chart
                .configure_mesh()
                .x_desc("acquire wait (ms)")
                .y_desc("fraction of acquisitions")
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| if *v <= 1.0 { format!("{v:.1}") } else { String::new() })
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .draw()?;
            for lock in locks {
                let color = color_of(lock);
                let w = waits(lock, clients);
                if w.is_empty() {
                    continue;
                }
                // A staircase (the empirical CDF), at most ~500 steps per curve to keep the SVG small.
                let step = (w.len() / 500).max(1);
                let total = w.len() as f64;
                let mut curve = vec![(ms(w[0]).max(x.start), 0.0)];
                for i in (0..w.len()).step_by(step).chain([w.len() - 1]) {
                    let at = ms(w[i]).max(x.start);
                    curve.push((at, curve[curve.len() - 1].1));
                    curve.push((at, (i + 1) as f64 / total));
                }
                chart
                    .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
                    .label(format!("{} ({} acquisitions)", lock.label(), w.len()))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperMiddle)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.5))
                .label_font(("sans-serif", 13))
                .draw()?;
        }
        root.present()?;
        Ok(Plot { file: file.to_owned(), title })
    }
}
