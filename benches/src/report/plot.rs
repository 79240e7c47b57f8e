//! Plots, as SVG (no fonts or system libraries needed): metrics against contenders, and the CDF of
//! acquire waits.

use std::path::Path;
use std::time::Duration;

use etcd_lockbench::{Clients, MarkKind, Outcome};
use etcd_recipes::Strategy;
use plotters::prelude::*;

use super::{Report, ms};
use crate::BoxError;
use crate::peer::Lock;

/// A plot written next to the report.
#[derive(Debug)]
pub(super) struct Plot {
    /// The SVG's file name, in the report's directory.
    pub(super) file: String,
    /// Its title (and the report's heading for it).
    pub(super) title: String,
}

/// What a plot shows of one point.
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

/// Each lock's colour, the same in every plot.
fn color_of(lock: Lock) -> RGBColor {
    match lock {
        Lock::Ours(Strategy::Mutex) => RGBColor(31, 119, 180),
        Lock::Ours(Strategy::Naive) => RGBColor(214, 39, 40),
        Lock::Ours(Strategy::LeaseTtl) => RGBColor(255, 127, 14),
        Lock::Ours(Strategy::Rpc) => RGBColor(44, 160, 44),
        Lock::Ours(Strategy::Semaphore) => RGBColor(148, 103, 189),
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

/// The caption of a client setup's panel.
fn panel_title(clients: Clients) -> &'static str {
    match clients {
        Clients::Shared => "all contenders on one shared client",
        _ => "each contender on its own client",
    }
}

impl Report<'_> {
    /// Draws every plot into `dir`.
    pub(super) fn plots(&self, dir: &Path) -> Result<Vec<Plot>, BoxError> {
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
            self.timeline_plot(dir)?,
        ])
    }

    /// Each lock at 16 contenders (or the most measured below that), a client each: one row per
    /// contender over the run's first second, its waits (light), holds and unlocks (dark), RPC
    /// answers (ticks) and watch events (dots). The herd, the queue and the Lock RPC's 100 ms
    /// stall show at a glance.
    fn timeline_plot(&self, dir: &Path) -> Result<Plot, BoxError> {
        let n = self.plan.contenders.iter().copied().filter(|&n| n <= 16).max().unwrap_or(1);
        let file = "timeline.svg";
        let title = format!("Timelines at {n} contenders, a client each: the first second of each lock's run");
        let path = dir.join(file);
        let locks = Lock::ALL;
        let root = SVGBackend::new(&path, (1200, 230 * locks.len() as u32 + 40)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&title, ("sans-serif", 20))?;
        let window = self.plan.per_point.min(Duration::from_secs(1));
        let end = ms(window);
        for (area, lock) in root.split_evenly((locks.len(), 1)).iter().zip(locks) {
            let Some(point) = self
                .points
                .iter()
                .find(|p| p.label == lock.label() && p.contenders == n && p.clients == Clients::Separate)
            else {
                continue;
            };
            let o = &point.outcome;
            let caption = format!(
                "{}: {} acquisitions, {} RPCs, {} watch events in the run (light: waiting, dark: holding and unlocking, |: an RPC answered, •: a watch event)",
                lock.label(),
                o.acquisitions,
                o.rpcs.unwrap_or(0),
                o.events.unwrap_or(0)
            );
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 13))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(36)
                .build_cartesian_2d(0f64..end, -0.5f64..(n as f64 - 0.5))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc("ms from the run's start")
                .y_desc("contender")
                .y_labels(n.min(16))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style(("sans-serif", 11))
                .axis_desc_style(("sans-serif", 12))
                .draw()?;
            let color = color_of(lock);
            let in_window = |from: Duration, to: Duration| from < window && to >= from;
            let row = |c: usize| c as f64;
            chart.draw_series(o.cycles.iter().filter(|c| in_window(c.asked, c.got)).map(|c| {
                let y = row(c.contender);
                Rectangle::new([(ms(c.asked), y - 0.3), (ms(c.got).min(end), y + 0.3)], color.mix(0.25).filled())
            }))?;
            chart.draw_series(o.cycles.iter().filter(|c| in_window(c.got, c.released)).map(|c| {
                let y = row(c.contender);
                // At least 1 px wide (holds are empty in these runs; the unlock is what shows).
                let to = ms(c.released).max(ms(c.got) + end / 1200.0).min(end);
                Rectangle::new([(ms(c.got), y - 0.4), (to, y + 0.4)], color.filled())
            }))?;
            let marks = o.marks.iter().filter(|m| m.at < window && m.contender < n);
            chart.draw_series(marks.clone().filter(|m| m.kind == MarkKind::Rpc).map(|m| {
                let (x, y) = (ms(m.at), row(m.contender));
                PathElement::new(vec![(x, y - 0.45), (x, y + 0.45)], BLACK.stroke_width(1))
            }))?;
            chart.draw_series(
                marks
                    .filter(|m| m.kind == MarkKind::Event)
                    .map(|m| Circle::new((ms(m.at), row(m.contender)), 2, RED.filled())),
            )?;
        }
        root.present()?;
        Ok(Plot { file: file.to_owned(), title })
    }

    /// A metric against contenders, one panel per client setup, one line per lock.
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
