//! Rendering: the markdown and terminal tables, and the targets' verdicts.

use std::fmt::Write as _;
use std::time::Duration;

use etcd_lockbench::{Clients, Point, table};
use etcd_recipes::Strategy;

use super::measure::KvRow;
use super::plot::Plot;
use super::{Report, Verdict, ms};
use crate::KeepAliveCost;
use crate::peer::Lock;

/// Labels of the locks the verdicts compare ([`crate::peer::Lock::label`]).
const MUTEX: &str = "mutex";
const NAIVE: &str = "naive";
const SEMAPHORE: &str = "semaphore";
const RPC: &str = "rpc";
const PEER: &str = "etcd-client rpc";

/// One row per lease count: CPU per refresh, share of a core, memory per lease, losses.
pub(super) fn keep_alive_table(costs: &[KeepAliveCost]) -> String {
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
pub(super) fn keep_alive_verdicts(costs: &[KeepAliveCost]) -> Vec<Verdict> {
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

/// The KV comparison as a markdown table.
pub(super) fn kv_table(rows: &[KvRow]) -> String {
    let mut out = String::from(
        "| etcd-wire | op | sequential p50, etcd-wire | sequential p50, etcd-client | ratio | p99, etcd-wire | p99, etcd-client | 64 in flight, etcd-wire | 64 in flight, etcd-client | ratio | client CPU per op, etcd-wire | client CPU per op, etcd-client | ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let (w, p) = (row.wire_sequential.quantile(0.5), row.peer_sequential.quantile(0.5));
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} ms | {:.3} ms | ×{:.2} | {:.3} ms | {:.3} ms | {:.0}/s | {:.0}/s | ×{:.2} | {:.1} µs | {:.1} µs | ×{:.2} |",
            row.setting.name(),
            row.op.name(),
            ms(w),
            ms(p),
            w.as_secs_f64() / p.as_secs_f64().max(1e-12),
            ms(row.wire_sequential.quantile(0.99)),
            ms(row.peer_sequential.quantile(0.99)),
            row.wire_throughput,
            row.peer_throughput,
            row.wire_throughput / row.peer_throughput.max(1e-9),
            row.wire_cpu.as_secs_f64() * 1e6,
            row.peer_cpu.as_secs_f64() * 1e6,
            row.wire_cpu.as_secs_f64() / row.peer_cpu.as_secs_f64().max(1e-12)
        );
    }
    out
}

impl Report<'_> {
    /// Every target of the issue, judged against this run.
    fn verdicts(&self) -> Vec<Verdict> {
        let mut out = keep_alive_verdicts(&self.keep_alive);
        for row in &self.kv {
            let ratio = row.wire_cpu.as_secs_f64() / row.peer_cpu.as_secs_f64().max(1e-12);
            out.push(Verdict {
                target: format!("KV {} client CPU per op ≤ 0.8× etcd-client's ({})", row.op.name(), row.setting.name()),
                measured: format!(
                    "{:.1} µs vs {:.1} µs: ×{ratio:.2}",
                    row.wire_cpu.as_secs_f64() * 1e6,
                    row.peer_cpu.as_secs_f64() * 1e6
                ),
                pass: ratio <= 0.8,
            });
        }
        for row in &self.kv {
            let (w, p) = (row.wire_sequential.quantile(0.5), row.peer_sequential.quantile(0.5));
            let ratio = w.as_secs_f64() / p.as_secs_f64().max(1e-12);
            out.push(Verdict {
                target: format!("KV {} sequential p50 ≤ 0.97× etcd-client's ({})", row.op.name(), row.setting.name()),
                measured: format!("{:.3} ms vs {:.3} ms: ×{ratio:.2}", ms(w), ms(p)),
                pass: ratio <= 0.97,
            });
        }
        for row in &self.kv {
            let ratio = row.wire_throughput / row.peer_throughput.max(1e-9);
            out.push(Verdict {
                target: format!(
                    "KV {} throughput, 64 in flight ≥ 1.05× etcd-client's ({})",
                    row.op.name(),
                    row.setting.name()
                ),
                measured: format!("{:.0}/s vs {:.0}/s: ×{ratio:.2}", row.wire_throughput, row.peer_throughput),
                pass: ratio >= 1.05,
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
            out.push(Verdict {
                target: format!("Mutex's RPCs/acquisition ≤ 4.0 at every contention ({} clients)", clients.name()),
                measured: show(&mutex),
                pass: hi <= 4.0 + 1e-9,
            });
        }
        out.extend(self.semaphore_verdicts());
        out.extend(self.floor_verdicts());
        out.extend(self.rpc_count_verdicts());
        out
    }

    /// The Semaphore with one permit must behave like the Mutex (issue #15): 2 RPCs uncontended,
    /// RPCs per acquisition flat in the number of waiters (one wake per release), no stall.
    fn semaphore_verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        for &clients in &self.plan.clients {
            let series: Vec<(usize, f64, f64)> = self
                .plan
                .contenders
                .iter()
                .filter_map(|&n| {
                    let s = self.point(SEMAPHORE, n, clients)?;
                    let vs_mutex =
                        self.point(MUTEX, n, clients).map_or(0.0, |m| s.throughput() / m.throughput().max(1e-9));
                    Some((n, s.rpcs_per_acquisition()?, vs_mutex))
                })
                .collect();
            let Some(&(1, uncontended, _)) = series.first() else { continue };
            let contended: Vec<_> = series.iter().filter(|(n, ..)| *n >= 2).collect();
            out.push(Verdict {
                target: format!(
                    "Semaphore (1 permit) uncontended cycle is 2 RPCs, like the Mutex ({} clients)",
                    clients.name()
                ),
                measured: format!("{uncontended:.2} per cycle"),
                pass: (uncontended - 2.0).abs() < 1e-9,
            });
            if contended.len() < 2 {
                continue;
            }
            let (lo, hi) = contended.iter().fold((f64::MAX, 0f64), |(lo, hi), (_, r, _)| (lo.min(*r), hi.max(*r)));
            let show = contended
                .iter()
                .map(|(n, r, t)| format!("{n}→{r:.1} RPCs, ×{t:.2} the Mutex's locks/s"))
                .collect::<Vec<_>>()
                .join("; ");
            out.push(Verdict {
                target: format!(
                    "Semaphore (1 permit): RPCs/acquisition flat in the number of waiters, within ×1.5 ({} clients)",
                    clients.name()
                ),
                measured: format!("{show} (max/min ×{:.2})", hi / lo.max(1e-9)),
                pass: hi / lo.max(1e-9) <= 1.5,
            });
            if let Some(s) = self.point(SEMAPHORE, 16, clients) {
                out.push(Verdict {
                    target: format!(
                        "Semaphore (1 permit) at 16 contenders: handoff p99 free of the ~100 ms stall ({} clients)",
                        clients.name()
                    ),
                    measured: format!("handoff p99 {:.2} ms", ms(s.handoff(0.99))),
                    pass: s.handoff(0.99) < Duration::from_millis(50),
                });
            }
        }
        out
    }

    /// The Mutex at the floor and the RpcLock against its peer: handoff p99 ≤ 2 ms at every
    /// contention, throughput ≥ 0.8× its own uncontended rate at 2–16 contenders and ≥ the
    /// naive lock's at every level ≥ 2; our RpcLock ≥ etcd-client's lock uncontended.
    fn floor_verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        for &clients in &self.plan.clients {
            let Some(alone) = self.point(MUTEX, 1, clients) else { continue };
            let contended: Vec<usize> = self.plan.contenders.iter().copied().filter(|&n| n >= 2).collect();
            let each = |f: &dyn Fn(usize) -> Option<(String, bool)>| -> (String, bool) {
                let results: Vec<(String, bool)> = contended.iter().filter_map(|&n| f(n)).collect();
                let shown = results.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ");
                (shown, !results.is_empty() && results.iter().all(|(_, ok)| *ok))
            };
            let (measured, pass) = each(&|n| {
                let p99 = self.point(MUTEX, n, clients)?.handoff(0.99);
                Some((format!("{n}→{:.2} ms", ms(p99)), p99 <= Duration::from_millis(2)))
            });
            out.push(Verdict {
                target: format!("Mutex handoff p99 ≤ 2 ms at every contention ({} clients)", clients.name()),
                measured,
                pass,
            });
            let (measured, pass) = each(&|n| {
                let ratio = self.point(MUTEX, n, clients)?.throughput() / alone.throughput().max(1e-9);
                (n <= 16).then(|| (format!("{n}→×{ratio:.2}"), ratio >= 0.8))
            });
            out.push(Verdict {
                target: format!(
                    "Mutex throughput ≥ 0.8× its uncontended {:.0}/s at 2–16 contenders ({} clients)",
                    alone.throughput(),
                    clients.name()
                ),
                measured,
                pass,
            });
            let (measured, pass) = each(&|n| {
                let (m, v) = (self.point(MUTEX, n, clients)?, self.point(NAIVE, n, clients)?);
                let ratio = m.throughput() / v.throughput().max(1e-9);
                Some((format!("{n}→×{ratio:.2}"), ratio >= 1.0))
            });
            out.push(Verdict {
                target: format!(
                    "Mutex throughput ≥ the naive lock's at every contention ≥ 2 ({} clients)",
                    clients.name()
                ),
                measured,
                pass,
            });
            if let (Some(ours), Some(peer)) = (self.point(RPC, 1, clients), self.point(PEER, 1, clients)) {
                let ratio = ours.throughput() / peer.throughput().max(1e-9);
                out.push(Verdict {
                    target: format!("Our RpcLock uncontended ≥ 1.0× etcd-client's lock ({} clients)", clients.name()),
                    measured: format!(
                        "{:.0}/s vs {:.0}/s: ×{ratio:.2} ({:.1} vs {:.1} RPCs per cycle)",
                        ours.throughput(),
                        peer.throughput(),
                        ours.rpcs_per_acquisition().unwrap_or(0.0),
                        peer.rpcs_per_acquisition().unwrap_or(0.0)
                    ),
                    pass: ratio >= 1.0,
                });
            }
        }
        out
    }

    /// One row per lock, one column per contention level: locks/s, p99 wait, RPCs per lock.
    fn summary(&self, clients: Clients) -> String {
        summary_table(&self.points, &self.plan.contenders, clients)
    }

    /// The lock summary of each other deployment the run measured.
    fn profiles_section(&self) -> String {
        let mut out = String::new();
        for p in &self.profiles {
            let _ = writeln!(
                out,
                "**{}** ({}): acquisitions per second · p99 acquire wait · client RPCs per acquisition, a client per contender, one run per cell.\n\n{}",
                p.name,
                p.server,
                summary_table(&p.points, &p.contenders, Clients::Separate)
            );
        }
        out
    }

    /// Each cell's repetitions and RPC counts: the median throughput and the spread of the
    /// repetitions around it, and RPCs per acquisition as the client counted them and as etcd's
    /// own `grpc_server_handled_total` did.
    fn repetitions_table(&self, clients: Clients) -> String {
        let ns: Vec<usize> = self.plan.contenders.clone();
        let mut out = String::from("| lock |");
        for n in &ns {
            let _ = write!(out, " {n} |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(ns.len()));
        out.push('\n');
        for lock in Lock::ALL {
            let _ = write!(out, "| {} |", lock.label());
            for &n in &ns {
                let cell = self.cells.iter().find(|c| {
                    (c.median.label.as_str(), c.median.contenders, c.median.clients) == (lock.label(), n, clients)
                });
                match cell {
                    Some(c) => {
                        let client =
                            c.median.outcome.rpcs_per_acquisition().map_or("n/a".to_owned(), |r| format!("{r:.2}"));
                        let server = c.server_rpcs.map_or("n/a".to_owned(), |r| format!("{r:.2}"));
                        let _ = write!(
                            out,
                            " {:.0}/s ±{:.0}% ({} runs) · RPCs {client} client / {server} server |",
                            c.median.outcome.throughput(),
                            50.0 * c.spread(),
                            c.throughputs.len()
                        );
                    }
                    None => out.push_str(" n/a |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Whether the client's RPC count agrees with etcd's own for every lock and contention level
    /// (within 5%, or 0.1 RPCs per acquisition).
    fn rpc_count_verdicts(&self) -> Vec<Verdict> {
        let mut off = Vec::new();
        let mut checked = 0;
        for c in &self.cells {
            let (Some(client), Some(server)) = (c.median.outcome.rpcs_per_acquisition(), c.server_rpcs) else {
                continue;
            };
            checked += 1;
            if (client - server).abs() > (0.05 * server).max(0.1) {
                off.push(format!(
                    "{} at {} ({} clients): {client:.2} vs {server:.2}",
                    c.median.label,
                    c.median.contenders,
                    c.median.clients.name()
                ));
            }
        }
        vec![Verdict {
            target: "RPCs per acquisition as counted by the client agree with etcd's grpc_server_handled_total"
                .to_owned(),
            measured: if off.is_empty() {
                format!("all {checked} cells within 5%")
            } else {
                format!("{} of {checked} cells differ: {}", off.len(), off.join("; "))
            },
            pass: checked > 0 && off.is_empty(),
        }]
    }

    /// Throughput of each of our locks as a multiple of etcd-client's server-side lock.
    fn ratio_table(&self) -> String {
        let ours = [Strategy::Mutex, Strategy::Semaphore, Strategy::Naive, Strategy::LeaseTtl, Strategy::Rpc];
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

    /// [`kv_table`] of this run.
    fn kv_table(&self) -> String {
        kv_table(&self.kv)
    }

    /// The verdicts as a markdown table; a miss with a known cause says it.
    fn verdict_table(verdicts: &[Verdict]) -> String {
        let mut out = String::from("| target | measured | verdict |\n|---|---|---|\n");
        for v in verdicts {
            let verdict = match (v.pass, v.cause()) {
                (true, _) => "PASS".to_owned(),
                (false, Some(cause)) => format!("**MISS**: {cause}"),
                (false, None) => "**MISS**".to_owned(),
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", v.target, v.measured);
        }
        out
    }

    /// Election failover and the lease keep-alive table.
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

    /// `report.md`: the whole report, linking `plots`.
    pub(super) fn markdown(&self, plots: &[Plot]) -> String {
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
        if !self.profiles.is_empty() {
            let _ = writeln!(out, "## Other deployments\n\n{}", self.profiles_section());
        }
        for &clients in &self.plan.clients {
            let _ = writeln!(
                out,
                "## Repetitions and RPC counts ({} clients)\n\nEach cell: median throughput ± half the spread of its runs (run in random order among the locks), and RPCs per acquisition as the client counted them and as etcd counted them (`grpc_server_handled_total`, unary calls, during the median run).\n\n{}",
                clients.name(),
                self.repetitions_table(clients)
            );
        }
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

    /// What the run prints on stdout at the end.
    /// The README's results section (between its `bench-results` markers): what ran, where and
    /// when, the summary, every target's verdict, and the KV and keep-alive tables. Written by
    /// the run itself, so no figure in it is copied by hand.
    pub(super) fn readme_section(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "*Written by `cargo xtask compare{}` on {}, commit {}: {}; {} ({} run, {:.0} s). Other runs on a shared machine move these figures by about ±10%; the report has every point.*\n",
            if self.plan.name == "full" { " --full" } else { "" },
            m.date,
            m.commit,
            m.cpu_line(),
            m.etcd,
            self.plan.name,
            self.took.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "Each cell: acquisitions per second · p99 acquire wait · client RPCs per acquisition; each contender with its own session and client, no hold time.\n\n{}",
            self.summary(Clients::Separate)
        );
        let _ = writeln!(out, "The targets, judged by this run:\n\n{}", Self::verdict_table(&self.verdicts()));
        let _ = writeln!(
            out,
            "Repetitions and RPC counts (a client per contender): median throughput ± half the spread of its runs, and RPCs per acquisition as the client and as etcd (`grpc_server_handled_total`) counted them.\n\n{}",
            self.repetitions_table(Clients::Separate)
        );
        if !self.profiles.is_empty() {
            let _ =
                writeln!(out, "The same locks on other deployments, in the same run:\n\n{}", self.profiles_section());
        }
        let _ = writeln!(out, "KV, etcd-wire against etcd-client in the same run:\n\n{}", self.kv_table());
        let _ = write!(out, "{}", self.others());
        out
    }

    pub(super) fn terminal(&self) -> String {
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

/// One row per lock, one column per contention level: locks/s · p99 wait · RPCs per lock.
fn summary_table(points: &[Point], ns: &[usize], clients: Clients) -> String {
    let point = |label: &str, n: usize| {
        points.iter().find(|p| p.label == label && p.contenders == n && p.clients == clients).map(|p| &p.outcome)
    };
    let mut out = String::from("| lock |");
    for n in ns {
        let _ = write!(out, " {n} {} |", if *n == 1 { "contender" } else { "contenders" });
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(ns.len()));
    out.push('\n');
    for lock in Lock::ALL {
        let _ = write!(out, "| {} |", lock.label());
        for &n in ns {
            match point(lock.label(), n) {
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
