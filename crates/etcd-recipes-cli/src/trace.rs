//! `--trace`: the recipes' own trace events, plus the steps the tool takes around them (session,
//! observation, release), all on stderr in one format.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_recipes::Tracer;

/// Where `--trace` lines go, if anywhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct CliTrace {
    label: Option<String>,
}

impl CliTrace {
    /// On when `enabled`; each line starts with `trace[<pid>]` and the time of day (UTC), so the
    /// lines of several processes in one terminal can be told apart and put in order.
    pub(crate) fn new(enabled: bool) -> Self {
        CliTrace { label: enabled.then(|| format!("trace[{}]", std::process::id())) }
    }

    /// The tracer to give the recipes.
    pub(crate) fn recipes(&self) -> Tracer {
        match &self.label {
            Some(label) => {
                let label = label.clone();
                Tracer::new(move |e| emit(format!("{label} {} {e}\n", clock())))
            }
            None => Tracer::default(),
        }
    }

    /// Prints one line in the recipes' format; `text` is built only when tracing.
    pub(crate) fn line(&self, recipe: &str, op: &str, at: Duration, text: impl FnOnce() -> String) {
        if let Some(label) = &self.label {
            let ms = at.as_secs_f64() * 1000.0;
            emit(format!("{label} {} [{ms:>9.3} ms] {recipe}.{op}: {}\n", clock(), text()));
        }
    }
}

/// The time of day (UTC) to the millisecond, so that lines of several processes can be compared.
fn clock() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Writes one whole line to stderr in one write, so that the lines of several processes sharing a
/// terminal or file do not interleave mid-line.
fn emit(line: String) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
