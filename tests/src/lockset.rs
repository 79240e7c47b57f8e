//! The lock-set workload and its checker, shared by the `reliability_*` tests and `cargo xtask chaos`.
//!
//! A Jepsen-style run: K separate OS processes (the `lockset_worker` binary) loop on: acquire the
//! lock, read the shared counter, sleep a random while, write counter + 1 back, release.
//! In [`Mode::Fenced`] the write is the guard's [`txn`](etcd_recipes::LockGuard::txn)
//! (it lands only while the lock key is still the one the guard acquired); in [`Mode::Unfenced`] it
//! is an unconditional write. Either way the same Txn also writes an *op record*
//! `<name>-ops/<worker>-<op>` holding the value written, so the checker knows exactly which writes
//! landed, including those whose answer never arrived (killed worker, timed-out request).
//!
//! While the workers run, [`run`] injects [`Fault`]s: SIGKILL or SIGSTOP (past the TTL) of the lock
//! holder, kill and restart of a follower or of the leader, a partition (blackhole) or dropped
//! connections or added latency through a per-worker [`TcpProxy`], and compaction.
//!
//! The checker then compares the counter with the op records: with `L` landed writes and a final
//! counter value `F`, `L - F` increments were lost (a write based on a stale read overwrote
//! others). Fenced runs must lose none; unfenced runs with pauses lose some, which the checker
//! must see. See [`Summary`] for everything reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use etcd_harness::{ClientProcess, EtcdCluster, TcpProxy};
use etcd_wire::{Client, ClientOptions, GetOptions};

use crate::history::{self, Step};

pub use etcd_recipes::Strategy;

/// How the workers write the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Through the guard's Txn, which compares the lock key's create revision (the fencing token).
    Fenced,
    /// Unconditionally (a Txn of plain puts, no compare).
    Unfenced,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Fenced, Mode::Unfenced];

    /// `fenced` or `unfenced`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fenced => "fenced",
            Mode::Unfenced => "unfenced",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .with_context(|| format!("unknown mode {s:?}; expected fenced or unfenced"))
    }
}

/// A fault [`run`] can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the worker holding the lock (any worker if none holds it), then start a new one.
    Kill,
    /// SIGSTOP the worker holding the lock (preferably between its read and its write) for the
    /// lock's TTL + 2 s, then SIGCONT it.
    Pause,
    /// The deterministic stale holder: SIGSTOP a worker only while it is between its read and its
    /// write (checked on its log once it is stopped; tried again otherwise), keep it stopped until
    /// its TTL passed *and* another worker's write landed, then SIGCONT it: its write is stale.
    Stale,
    /// SIGKILL a follower etcd member, restart it a second later.
    Member,
    /// SIGKILL the leader etcd member, restart it a second later.
    Leader,
    /// Blackhole every connection of the holder's proxies for TTL + 2 s (a partition), then heal.
    Partition,
    /// Drop every live connection of every worker.
    Drop,
    /// Add 150 ms latency to the holder's connections for 3 s.
    Delay,
    /// Compact the store at its current revision.
    Compact,
}

impl Fault {
    /// Every fault kind.
    pub const ALL: [Fault; 9] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Stale,
        Fault::Member,
        Fault::Leader,
        Fault::Partition,
        Fault::Drop,
        Fault::Delay,
        Fault::Compact,
    ];

    /// The name used on command lines and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Stale => "stale",
            Fault::Member => "member",
            Fault::Leader => "leader",
            Fault::Partition => "partition",
            Fault::Drop => "drop",
            Fault::Delay => "delay",
            Fault::Compact => "compact",
        }
    }

    /// Parses a comma-separated list (`kill,pause,leader`); `all` means every fault.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Fault::ALL.to_vec());
        }
        s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Fault::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim())).with_context(|| {
            let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// Milliseconds since the Unix epoch: the clock every worker line and fault record uses.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// What a worker did, one line of its stdout each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The worker started with this session lease.
    Start {
        /// Session lease, hex.
        lease: String,
    },
    /// The worker opened a new session (the previous one ended).
    Session {
        /// Session lease, hex.
        lease: String,
    },
    /// `lock()` was called.
    Locking,
    /// `lock()` returned.
    Acquired {
        /// The guard's fencing token.
        token: i64,
        /// The guard's `valid_until` then, in ms since the epoch (`None`: none given).
        valid_until_ms: Option<u64>,
    },
    /// The counter was read under the lock.
    Read {
        /// The value read.
        value: u64,
        /// The fencing token.
        token: i64,
        /// The guard's `valid_until` just before the read, in ms since the epoch.
        valid_until_ms: Option<u64>,
    },
    /// The write succeeded (fenced: the compare held).
    Ok {
        /// The op record's name (`<worker>-<op>`).
        op: String,
        /// The value read.
        read: u64,
        /// The value written.
        written: u64,
        /// The fencing token.
        token: i64,
    },
    /// The fenced write was refused: the lock key was no longer ours.
    Refused {
        /// The op record's name.
        op: String,
        /// The value read.
        read: u64,
        /// The fencing token.
        token: i64,
    },
    /// The write failed in transit: it may or may not have landed.
    Indeterminate {
        /// The op record's name.
        op: String,
        /// The value read.
        read: u64,
        /// The value it tried to write.
        written: u64,
        /// The error.
        error: String,
    },
    /// `unlock()` was called (also on the error paths that give the lock back).
    Unlocking {
        /// The fencing token being released.
        token: i64,
    },
    /// `unlock()` succeeded.
    Released,
    /// The worker learned that it had lost the lock while holding it.
    LostLock {
        /// The fencing token of the lost lock.
        token: i64,
        /// How it learned it (comma-separated): `refused`, `unlock-not-owner`, `session:<why>`.
        reasons: String,
    },
    /// `unlock()` failed for another reason (network).
    UnlockFailed {
        /// The error.
        error: String,
    },
    /// Something else failed (`lock`, `read`, `session`, `connect`).
    Error {
        /// Which step.
        stage: String,
        /// The error.
        error: String,
    },
    /// Elected (election mode).
    Elected {
        /// The leader key's create revision.
        token: i64,
    },
    /// The worker's session ended while it was the leader (election mode).
    LostLeadership {
        /// Why.
        reason: String,
    },
    /// A leader latch's state, sampled (latch mode): it leads by its own clock, until `valid_until_ms`.
    LatchLeader {
        /// The fencing token.
        token: i64,
        /// `valid_until` then, in ms since the epoch.
        valid_until_ms: u64,
    },
    /// A leader latch's state (latch mode): campaigning; the leader's value, if known.
    LatchFollower {
        /// The leader's value (`-`: none observed yet).
        leader: String,
    },
    /// A leader latch's state (latch mode): leadership or session just lost.
    LatchLost,
    /// The worker finished.
    Done {
        /// Writes it attempted.
        ops: u64,
    },
}

/// One worker line: when (ms since epoch, the worker's clock) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch when the worker printed it.
    pub t_ms: u64,
    /// What happened.
    pub event: Event,
}

impl LogLine {
    /// A line stamped now.
    pub fn now(event: Event) -> LogLine {
        LogLine { t_ms: now_ms(), event }
    }
}

/// A `valid_until` (monotonic) as ms since the epoch on the wall clock the lines are stamped with.
pub fn epoch_ms(at: Option<std::time::Instant>) -> Option<u64> {
    let at = at?;
    let now = std::time::Instant::now();
    Some(match at.checked_duration_since(now) {
        Some(ahead) => now_ms().saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX)),
        None => now_ms().saturating_sub(u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX)),
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn parse_opt(s: &str) -> Result<Option<u64>> {
    Ok(if s == "-" { None } else { Some(s.parse()?) })
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.t_ms;
        match &self.event {
            Event::Start { lease } => write!(f, "start {t} {lease}"),
            Event::Session { lease } => write!(f, "session {t} {lease}"),
            Event::Locking => write!(f, "locking {t}"),
            Event::Acquired { token, valid_until_ms } => write!(f, "acquired {t} {token} {}", opt(*valid_until_ms)),
            Event::Read { value, token, valid_until_ms } => {
                write!(f, "read {t} {value} {token} {}", opt(*valid_until_ms))
            }
            Event::Unlocking { token } => write!(f, "unlocking {t} {token}"),
            Event::Ok { op, read, written, token } => write!(f, "ok {t} {op} {read} {written} {token}"),
            Event::Refused { op, read, token } => write!(f, "refused {t} {op} {read} {token}"),
            Event::Indeterminate { op, read, written, error } => {
                write!(f, "indeterminate {t} {op} {read} {written} {}", one_line(error))
            }
            Event::Released => write!(f, "released {t}"),
            Event::LostLock { token, reasons } => write!(f, "lost-lock {t} {token} {reasons}"),
            Event::UnlockFailed { error } => write!(f, "unlock-failed {t} {}", one_line(error)),
            Event::Error { stage, error } => write!(f, "error {t} {stage} {}", one_line(error)),
            Event::Elected { token } => write!(f, "elected {t} {token}"),
            Event::LostLeadership { reason } => write!(f, "lost-leadership {t} {}", one_line(reason)),
            Event::LatchLeader { token, valid_until_ms } => write!(f, "latch-leader {t} {token} {valid_until_ms}"),
            Event::LatchFollower { leader } => write!(f, "latch-follower {t} {}", one_line(leader)),
            Event::LatchLost => write!(f, "latch-lost {t}"),
            Event::Done { ops } => write!(f, "done {t} {ops}"),
        }
    }
}

impl FromStr for LogLine {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut it = s.splitn(3, ' ');
        let (kind, t) = (it.next().unwrap_or_default(), it.next().context("no time")?);
        let t_ms = t.parse().with_context(|| format!("bad time in {s:?}"))?;
        let rest = it.next().unwrap_or_default();
        let f: Vec<&str> = rest.split(' ').collect();
        let word = |i: usize| f.get(i).copied().with_context(|| format!("field {i} missing in {s:?}"));
        let tail = |i: usize| f.get(i..).map(|x| x.join(" ")).unwrap_or_default();
        let event = match kind {
            "start" => Event::Start { lease: word(0)?.to_owned() },
            "session" => Event::Session { lease: word(0)?.to_owned() },
            "locking" => Event::Locking,
            "acquired" => Event::Acquired { token: word(0)?.parse()?, valid_until_ms: parse_opt(word(1)?)? },
            "read" => {
                Event::Read { value: word(0)?.parse()?, token: word(1)?.parse()?, valid_until_ms: parse_opt(word(2)?)? }
            }
            "unlocking" => Event::Unlocking { token: word(0)?.parse()? },
            "ok" => Event::Ok {
                op: word(0)?.to_owned(),
                read: word(1)?.parse()?,
                written: word(2)?.parse()?,
                token: word(3)?.parse()?,
            },
            "refused" => Event::Refused { op: word(0)?.to_owned(), read: word(1)?.parse()?, token: word(2)?.parse()? },
            "indeterminate" => Event::Indeterminate {
                op: word(0)?.to_owned(),
                read: word(1)?.parse()?,
                written: word(2)?.parse()?,
                error: tail(3),
            },
            "released" => Event::Released,
            "lost-lock" => Event::LostLock { token: word(0)?.parse()?, reasons: tail(1) },
            "unlock-failed" => Event::UnlockFailed { error: rest.to_owned() },
            "error" => Event::Error { stage: word(0)?.to_owned(), error: tail(1) },
            "elected" => Event::Elected { token: word(0)?.parse()? },
            "lost-leadership" => Event::LostLeadership { reason: rest.to_owned() },
            "latch-leader" => Event::LatchLeader { token: word(0)?.parse()?, valid_until_ms: word(1)?.parse()? },
            "latch-follower" => Event::LatchFollower { leader: rest.to_owned() },
            "latch-lost" => Event::LatchLost,
            "done" => Event::Done { ops: word(0)?.parse()? },
            other => bail!("unknown worker line kind {other:?} in {s:?}"),
        };
        Ok(LogLine { t_ms, event })
    }
}

/// What a worker process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// The lock-set loop with this write mode.
    Lock(Mode),
    /// Campaign in an election, hold leadership until the session ends, campaign again.
    Elect,
    /// Run a `LeaderLatch` and print each change of its state (`latch-*` lines).
    Latch,
}

/// The command line of one `lockset_worker` process (`key=value` arguments).
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Client URLs (a proxy's, or etcd's).
    pub endpoints: Vec<String>,
    /// Lock strategy (ignored in election mode).
    pub strategy: Strategy,
    /// With [`Strategy::Semaphore`], how many may hold at once; 1 for every other strategy.
    pub permits: usize,
    /// What to do.
    pub mode: WorkerMode,
    /// Session (and lease TTL lock) TTL, seconds.
    pub ttl_secs: u64,
    /// Lock or election name; the counter is `<name>-counter`, op records `<name>-ops/`.
    pub name: String,
    /// The worker's ID, unique within a run.
    pub id: String,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many writes.
    pub max_ops: Option<u64>,
    /// Sleep between the read and the write: uniform in this range, milliseconds.
    pub hold_ms: (u64, u64),
    /// Stop (after the current operation) once this file exists.
    pub stop_file: Option<PathBuf>,
}

impl WorkerArgs {
    /// The `key=value` arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mode = match self.mode {
            WorkerMode::Lock(m) => m.name(),
            WorkerMode::Elect => "elect",
            WorkerMode::Latch => "latch",
        };
        let mut args = vec![
            format!("endpoints={}", self.endpoints.join(",")),
            format!("strategy={}", self.strategy.name()),
            format!("mode={mode}"),
            format!("ttl={}", self.ttl_secs),
            format!("name={}", self.name),
            format!("id={}", self.id),
            format!("millis={}", self.duration.as_millis()),
            format!("hold={}..{}", self.hold_ms.0, self.hold_ms.1),
        ];
        if self.permits != 1 {
            args.push(format!("permits={}", self.permits));
        }
        if let Some(n) = self.max_ops {
            args.push(format!("ops={n}"));
        }
        if let Some(f) = &self.stop_file {
            args.push(format!("stop={}", f.display()));
        }
        args
    }

    /// Parses what [`to_args`](Self::to_args) produced.
    pub fn parse(args: &[String]) -> Result<WorkerArgs> {
        let mut map = BTreeMap::new();
        for a in args {
            let (k, v) = a.split_once('=').with_context(|| format!("expected key=value, got {a:?}"))?;
            map.insert(k.to_owned(), v.to_owned());
        }
        let get = |k: &str| map.get(k).cloned().with_context(|| format!("missing {k}=..."));
        let mode = match get("mode")?.as_str() {
            "elect" => WorkerMode::Elect,
            "latch" => WorkerMode::Latch,
            m => WorkerMode::Lock(m.parse()?),
        };
        let hold = get("hold")?;
        let (lo, hi) = hold.split_once("..").with_context(|| format!("hold={hold}: expected LO..HI"))?;
        Ok(WorkerArgs {
            endpoints: get("endpoints")?.split(',').map(str::to_owned).collect(),
            strategy: get("strategy")?.parse()?,
            permits: map.get("permits").map(|s| s.parse()).transpose()?.unwrap_or(1),
            mode,
            ttl_secs: get("ttl")?.parse()?,
            name: get("name")?,
            id: get("id")?,
            duration: Duration::from_millis(get("millis")?.parse()?),
            max_ops: map.get("ops").map(|s| s.parse()).transpose()?,
            hold_ms: (lo.parse()?, hi.parse()?),
            stop_file: map.get("stop").map(PathBuf::from),
        })
    }

    /// Whether the worker should stop: its stop file exists.
    pub fn stop_requested(&self) -> bool {
        self.stop_file.as_ref().is_some_and(|f| f.exists())
    }

    /// The worker command: `bin` with these arguments, its stderr inherited.
    pub fn command(&self, bin: &std::path::Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(self.to_args());
        cmd
    }
}

/// The counter key of a lock-set run on `name`.
pub fn counter_key(name: &str) -> String {
    format!("{name}-counter")
}

/// The prefix of the op records of a lock-set run on `name`.
pub fn ops_prefix(name: &str) -> String {
    format!("{name}-ops/")
}

/// The parsed lines of a worker (lines that do not parse are kept as errors).
pub fn parse_lines(proc_: &ClientProcess) -> Vec<LogLine> {
    proc_
        .lines()
        .into_iter()
        .map(|(_, l)| {
            l.parse().unwrap_or_else(|e: anyhow::Error| {
                LogLine::now(Event::Error { stage: "parse".into(), error: format!("{e}: {l}") })
            })
        })
        .collect()
}

/// Whether a worker holds the lock according to its lines so far, and whether it is between its
/// read and its write (the window a pause turns into a stale write).
fn holding(lines: &[LogLine]) -> (bool, bool) {
    for l in lines.iter().rev() {
        match l.event {
            Event::Read { .. } => return (true, true),
            Event::Acquired { .. } | Event::Ok { .. } | Event::Refused { .. } | Event::Indeterminate { .. } => {
                return (true, false);
            }
            Event::Locking
            | Event::Unlocking { .. }
            | Event::Released
            | Event::LostLock { .. }
            | Event::UnlockFailed { .. }
            | Event::Error { .. }
            | Event::Done { .. }
            | Event::Start { .. }
            | Event::Session { .. } => return (false, false),
            Event::Elected { .. }
            | Event::LostLeadership { .. }
            | Event::LatchLeader { .. }
            | Event::LatchFollower { .. }
            | Event::LatchLost => {}
        }
    }
    (false, false)
}

/// One lock-set run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `lockset_worker` binary.
    pub worker_bin: PathBuf,
    /// The lock strategy.
    pub strategy: Strategy,
    /// With [`Strategy::Semaphore`], how many may hold at once (the history is checked against
    /// that many); 1 for every other strategy. With more than one, holders race on the counter by
    /// design: its lost updates say nothing about the lock.
    pub permits: usize,
    /// Fenced or unfenced writes.
    pub mode: Mode,
    /// Number of worker processes (K).
    pub workers: usize,
    /// Session TTL, seconds.
    pub ttl_secs: u64,
    /// How long the workers run at most.
    pub duration: Duration,
    /// Sleep between read and write, milliseconds.
    pub hold_ms: (u64, u64),
    /// Faults to inject, in turn.
    pub faults: Vec<Fault>,
    /// Pause between two faults (jittered ±30 %).
    pub fault_interval: Duration,
    /// End the run (after the quiet tail) once every fault was injected this many times; `None`
    /// runs for the whole duration.
    pub fault_rounds: Option<u32>,
    /// No new fault this close to the end, so the last one's effects are checked too.
    pub quiet_tail: Duration,
    /// Stop injecting faults once the counter shows a lost update (for the unfenced demonstration).
    pub stop_faults_after_lost_update: bool,
    /// Lock name; keys are `<name>`, `<name>/...`, `<name>-counter`, `<name>-ops/...`.
    pub name: String,
    /// Seed of the fault schedule's randomness.
    pub seed: u64,
    /// Print each fault as it is injected.
    pub verbose: bool,
    /// Write every worker's lines to `<dir>/<name>-<worker>.log`, and the faults to
    /// `<dir>/<name>-faults.log` (ms since epoch, fault), for looking into a run afterwards.
    pub log_dir: Option<PathBuf>,
}

impl RunConfig {
    /// A run of `strategy` in `mode`: 3 workers, TTL 2 s, 20 s, holds of 50-300 ms, no faults.
    pub fn new(worker_bin: impl Into<PathBuf>, strategy: Strategy, mode: Mode) -> RunConfig {
        RunConfig {
            worker_bin: worker_bin.into(),
            strategy,
            permits: 1,
            mode,
            workers: 3,
            ttl_secs: 2,
            duration: Duration::from_secs(20),
            hold_ms: (50, 300),
            faults: Vec::new(),
            fault_interval: Duration::from_secs(2),
            fault_rounds: None,
            quiet_tail: Duration::from_secs(3),
            stop_faults_after_lost_update: false,
            name: format!("ls-{}-{}", strategy.name(), mode.name()),
            seed: 1,
            verbose: false,
            log_dir: None,
        }
    }
}

/// One pause fault, for checking that the paused holder learned it had lost the lock.
#[derive(Debug, Clone)]
pub struct PauseRecord {
    /// The paused worker's ID.
    pub worker: String,
    /// When it was stopped (ms since epoch).
    pub paused_ms: u64,
    /// When it was continued.
    pub resumed_ms: u64,
    /// How many lines it had printed before it was stopped (read just before the resume, when
    /// every line printed before the stop has arrived). Its lines after the pause start here:
    /// times in whole milliseconds cannot tell them apart from the lines of the stop's millisecond.
    pub lines_seen: usize,
    /// Whether it held the lock when stopped.
    pub was_holding: bool,
    /// Whether it was between its read and its write.
    pub in_write_window: bool,
    /// After the resume, its first lock-related line was `lost-lock` (filled in by the checker).
    pub told_lost: bool,
    /// For a [`Fault::Stale`] pause: what became of the write it made after the resume
    /// (`refused`, `ok` or `indeterminate`; filled in by the checker).
    pub stale_write: Option<&'static str>,
}

/// The outcome of one run: the summary the workload prints.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Mode name.
    pub mode: String,
    /// etcd version and member count.
    pub cluster: String,
    /// How long the run took.
    pub elapsed: Duration,
    /// Worker processes started (replacements of killed ones included).
    pub workers_started: usize,
    /// Successful `lock()` calls.
    pub acquisitions: u64,
    /// Writes attempted (ok + refused + indeterminate).
    pub operations: u64,
    /// Writes acknowledged as applied.
    pub acknowledged: u64,
    /// Fenced writes refused because the lock was gone.
    pub refused: u64,
    /// Writes whose outcome the worker could not know.
    pub indeterminate: u64,
    /// Other errors the workers reported (lock timeouts, reads that failed, ...).
    pub errors: u64,
    /// The other errors by step (`lock`, `read`, `session`, `connect`, `unlock`).
    pub errors_by_stage: BTreeMap<String, u64>,
    /// `lost-lock` reports: a holder told it had lost its lock.
    pub lost_lock_reports: u64,
    /// Writes that landed (op records found).
    pub landed: u64,
    /// The counter's final value.
    pub final_value: u64,
    /// Landed writes whose increment is missing from the counter: `landed - final`.
    pub lost_updates: u64,
    /// Landed writes that wrote a value another landed write also wrote.
    pub duplicate_values: u64,
    /// Acknowledged writes without an op record (must be none: an acknowledged write is durable).
    pub missing_acknowledged: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Every fault injected, with when it started (ms since epoch).
    pub fault_log: Vec<(u64, Fault)>,
    /// The pause faults.
    pub pauses: Vec<PauseRecord>,
    /// The longest stretch, inside the run, in which no worker held the lock.
    pub max_no_holder: Duration,
    /// When that stretch began (ms since epoch).
    pub max_no_holder_from_ms: u64,
    /// Problems of the run itself (a worker that did not stop, a fault that could not be injected).
    pub notes: Vec<String>,
    /// How many may hold at once, the bound the history is checked against (0 counts as 1).
    pub permits: usize,
    /// The lock history (acquisitions, promises, releases) checked against a mutex, or a
    /// semaphore of [`permits`](Self::permits): see [`crate::history`].
    pub history: history::Report,
}

impl Summary {
    /// Fenced-mode safety: no lost update, no duplicate value, every acknowledged write landed,
    /// the final value equals the number of landed (fenced) writes, and the lock history is one
    /// a mutex may produce.
    pub fn is_safe(&self) -> bool {
        self.lost_updates == 0
            && self.duplicate_values == 0
            && self.missing_acknowledged.is_empty()
            && self.final_value == self.landed
            && self.history.is_valid()
    }

    /// Whether every worker paused while holding the lock was told it had lost it.
    pub fn paused_holders_told(&self) -> bool {
        self.pauses.iter().filter(|p| p.was_holding).all(|p| p.told_lost)
    }

    /// Pauses that hit a holder.
    pub fn paused_holders(&self) -> usize {
        self.pauses.iter().filter(|p| p.was_holding).count()
    }

    /// A one-line, table-friendly form: strategy, mode, ops, acknowledged, landed, final, lost,
    /// faults, max gap.
    pub fn row(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {:.1} s |",
            self.strategy,
            self.mode,
            self.operations,
            self.acknowledged,
            self.refused,
            self.indeterminate,
            self.landed,
            self.final_value,
            self.lost_updates,
            self.pauses.iter().filter(|p| p.was_holding && p.told_lost).count(),
            self.paused_holders(),
            self.history_cell(),
            faults.join(" "),
            self.max_no_holder.as_secs_f64(),
        )
    }

    /// The header of [`row`](Self::row).
    pub fn table_header() -> &'static str {
        "| strategy | mode | ops | acked | refused | indeterminate | landed | final | lost updates | paused holders told | lock history | faults | max time without holder |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// The lock history's verdict, in a few words.
    pub fn history_cell(&self) -> String {
        match self.history.violations.len() {
            0 => format!("valid, ≤ {} holder", self.history.max_holders),
            n => format!("**{n} violations**"),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let verdict = match (self.mode.as_str(), self.is_safe()) {
            _ if !self.history.is_valid() && self.permits > 1 => "UNSAFE: the lock history breaks the semaphore model",
            _ if !self.history.is_valid() => "UNSAFE: the lock history breaks the mutex model",
            _ if self.permits > 1 && !self.missing_acknowledged.is_empty() => "UNSAFE: acknowledged writes vanished",
            _ if self.permits > 1 => "never more holders than permits (the counter is raced by design)",
            (_, true) => "no lost update",
            ("fenced", false) => "UNSAFE: fenced writes lost updates",
            _ => "lost updates detected (expected without fencing)",
        };
        writeln!(
            f,
            "lock-set {}{} {} on {} ({:.1} s)",
            self.strategy,
            if self.permits > 1 { format!(" of {} permits", self.permits) } else { String::new() },
            self.mode,
            self.cluster,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  operations: {} writes attempted ({} acknowledged, {} refused by the fence, {} indeterminate), {} acquisitions, {} other errors, {} worker processes",
            self.operations,
            self.acknowledged,
            self.refused,
            self.indeterminate,
            self.acquisitions,
            self.errors,
            self.workers_started
        )?;
        writeln!(f, "  faults: {}", if faults.is_empty() { "none".to_owned() } else { faults.join(", ") })?;
        writeln!(
            f,
            "  counter: final {} / landed writes {} -> lost updates {} (duplicate values {}, acknowledged but missing {})",
            self.final_value,
            self.landed,
            self.lost_updates,
            self.duplicate_values,
            self.missing_acknowledged.len()
        )?;
        writeln!(
            f,
            "  lost-lock reports: {}; paused holders told they lost the lock: {}/{}",
            self.lost_lock_reports,
            self.pauses.iter().filter(|p| p.was_holding && p.told_lost).count(),
            self.paused_holders()
        )?;
        let errors: Vec<String> = self.errors_by_stage.iter().map(|(k, n)| format!("{k}={n}")).collect();
        if !errors.is_empty() {
            writeln!(f, "  other errors by step: {}", errors.join(", "))?;
        }
        let gap_end = self.max_no_holder_from_ms + u64::try_from(self.max_no_holder.as_millis()).unwrap_or(0);
        let cause = self.fault_log.iter().rev().find(|(t, _)| *t <= gap_end).map(|(t, k)| {
            let offset = (*t as f64 - self.max_no_holder_from_ms as f64) / 1000.0;
            format!(" (last fault before its end: {k}, {offset:+.1} s from its start)")
        });
        writeln!(
            f,
            "  max time without a holder: {:.2} s{}",
            self.max_no_holder.as_secs_f64(),
            cause.unwrap_or_default()
        )?;
        writeln!(f, "  lock history: {}", self.history)?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        write!(f, "  verdict: {verdict}")
    }
}

/// A worker slot: the current process and its predecessors (killed ones), with the slot's proxies.
struct Slot {
    proxies: Vec<TcpProxy>,
    current: ClientProcess,
    id: String,
    past: Vec<(String, ClientProcess)>,
    generation: u32,
}

/// A small deterministic generator (xorshift) for the fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn jitter(&mut self, d: Duration) -> Duration {
        let unit = (self.next() % 1000) as f64 / 1000.0;
        d.mul_f64(0.7 + 0.6 * unit)
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::default()
        .with_connect_timeout(Duration::from_secs(3))
        .with_request_timeout(Some(Duration::from_secs(10)))
}

/// Runs the lock-set workload on `etcd` with `cfg`'s faults, then checks it. Synchronous: call it
/// from a plain `#[test]` or from `main`, not from inside a Tokio runtime.
pub fn run(etcd: &EtcdCluster, cfg: &RunConfig) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let client = rt.block_on(Client::connect(etcd.endpoints(), client_options()))?;
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let mut rng = Rng(cfg.seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut summary = Summary {
        strategy: cfg.strategy.name().to_owned(),
        mode: cfg.mode.name().to_owned(),
        cluster: format!("etcd {} x{}", etcd.version(), etcd.len()),
        permits: cfg.permits,
        ..Summary::default()
    };

    let stop_file = std::env::temp_dir().join(format!("lockset-stop-{}-{}-{}", std::process::id(), cfg.name, now_ms()));
    let _ = std::fs::remove_file(&stop_file);
    let result = drive(etcd, cfg, &client, &rt, &stop_file, &mut summary, &mut rng, started, deadline);
    let _ = std::fs::remove_file(&stop_file);
    result?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn drive(
    etcd: &EtcdCluster,
    cfg: &RunConfig,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    stop_file: &std::path::Path,
    summary: &mut Summary,
    rng: &mut Rng,
    started: Instant,
    deadline: Instant,
) -> Result<()> {
    let upstreams: Vec<String> = etcd.endpoints().iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
    let mut slots = Vec::with_capacity(cfg.workers);
    for i in 0..cfg.workers {
        let proxies = upstreams.iter().map(|u| TcpProxy::start(u.as_str())).collect::<std::io::Result<Vec<_>>>()?;
        let id = format!("w{i}g0");
        let current = spawn_worker(cfg, &proxies, &id, cfg.duration, stop_file)?;
        summary.workers_started += 1;
        slots.push(Slot { proxies, current, id, past: Vec::new(), generation: 0 });
    }

    let mut turn = rng.below(cfg.faults.len().max(1));
    let mut next_fault = Instant::now() + rng.jitter(cfg.fault_interval);
    let mut faults_on = !cfg.faults.is_empty();
    while Instant::now() + cfg.quiet_tail < deadline && faults_on {
        // With rounds: the next fault (in turn) not yet injected that many times; none left = done.
        let due =
            |f: &Fault| cfg.fault_rounds.is_none_or(|r| summary.faults.get(f).copied().unwrap_or(0) < u64::from(r));
        let Some(skip) = (0..cfg.faults.len()).find(|i| due(&cfg.faults[(turn + i) % cfg.faults.len()])) else {
            break;
        };
        if Instant::now() < next_fault {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let fault = cfg.faults[(turn + skip) % cfg.faults.len()];
        turn += skip + 1;
        let fault_ms = now_ms();
        let injected = inject(fault, etcd, client, rt, cfg, stop_file, &mut slots, summary, rng, deadline)?;
        if injected {
            *summary.faults.entry(fault).or_default() += 1;
            summary.fault_log.push((fault_ms, fault));
        }
        if cfg.stop_faults_after_lost_update && injected && fault == Fault::Pause {
            // Give the resumed worker time to write, then look at the counter.
            std::thread::sleep(Duration::from_millis(cfg.hold_ms.1 + 1500));
            let (final_value, landed) = rt.block_on(read_outcome(client, &cfg.name))?;
            if landed.len() as u64 > final_value {
                faults_on = false;
            }
        }
        next_fault = Instant::now() + rng.jitter(cfg.fault_interval);
    }
    if cfg.fault_rounds.is_some() || cfg.stop_faults_after_lost_update {
        // The faults are done: a quiet stretch, then ask the workers to stop.
        let end = deadline.min(Instant::now() + cfg.quiet_tail);
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        std::fs::write(stop_file, b"stop")?;
    }

    // Let the workers finish on their own.
    for slot in &slots {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(60);
        if slot.current.wait_timeout(left)?.is_none() {
            summary.notes.push(format!("worker {} did not stop by itself; killed", slot.id));
            slot.current.kill()?;
        }
    }
    summary.elapsed = started.elapsed();

    let (final_value, landed) = rt.block_on(read_outcome(client, &cfg.name))?;
    let mut logs: Vec<(String, Vec<LogLine>)> = Vec::new();
    for slot in &slots {
        for (id, p) in &slot.past {
            logs.push((id.clone(), parse_lines(p)));
        }
        logs.push((slot.id.clone(), parse_lines(&slot.current)));
    }
    check(summary, &logs, final_value, &landed);
    if let Some(dir) = &cfg.log_dir {
        std::fs::create_dir_all(dir)?;
        for slot in &slots {
            for (id, p) in slot.past.iter().map(|(id, p)| (id, p)).chain([(&slot.id, &slot.current)]) {
                let text: String = p.lines().into_iter().map(|(_, l)| l + "\n").collect();
                std::fs::write(dir.join(format!("{}-{id}.log", cfg.name)), text)?;
            }
        }
        let faults: String = summary.fault_log.iter().map(|(t, f)| format!("{t} {f}\n")).collect();
        std::fs::write(dir.join(format!("{}-faults.log", cfg.name)), faults)?;
    }
    Ok(())
}

fn spawn_worker(
    cfg: &RunConfig,
    proxies: &[TcpProxy],
    id: &str,
    duration: Duration,
    stop_file: &std::path::Path,
) -> Result<ClientProcess> {
    let args = WorkerArgs {
        endpoints: proxies.iter().map(TcpProxy::url).collect(),
        strategy: cfg.strategy,
        permits: cfg.permits,
        mode: WorkerMode::Lock(cfg.mode),
        ttl_secs: cfg.ttl_secs,
        name: cfg.name.clone(),
        id: id.to_owned(),
        duration,
        max_ops: None,
        hold_ms: cfg.hold_ms,
        stop_file: Some(stop_file.to_owned()),
    };
    Ok(ClientProcess::spawn(id, args.command(&cfg.worker_bin))?)
}

/// The slot of the worker holding the lock now (preferring one between read and write when
/// `want_window`), waiting up to `wait` for one.
fn find_holder(slots: &[Slot], want_window: bool, wait: Duration) -> Option<(usize, bool)> {
    let until = Instant::now() + wait;
    loop {
        let mut fallback = None;
        for (i, s) in slots.iter().enumerate() {
            if !s.current.is_running() || s.current.is_paused() {
                continue;
            }
            let (held, window) = holding(&parse_lines(&s.current));
            if held && (window || !want_window) {
                return Some((i, window));
            }
            if held {
                fallback = Some((i, window));
            }
        }
        if Instant::now() >= until {
            return fallback;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// [`Fault::Stale`]: see there. `Ok(false)` if no worker could be caught in its window.
fn stale_holder(
    slots: &[Slot],
    cfg: &RunConfig,
    summary: &mut Summary,
    ttl: Duration,
    hold_wait: Duration,
    say: &dyn Fn(String),
) -> Result<bool> {
    for _attempt in 0..5 {
        let Some((i, true)) = find_holder(slots, true, hold_wait) else { continue };
        let slot = &slots[i];
        let paused_ms = now_ms();
        slot.current.pause()?;
        // It sleeps at least `hold_ms.0` between logging its read and writing: stopped before
        // that much time passed since the read line, it was stopped before its write.
        let lines = parse_lines(&slot.current);
        let read_at = lines.iter().rev().find(|l| matches!(l.event, Event::Read { .. })).map(|l| l.t_ms);
        if read_at.is_none_or(|r| paused_ms >= r + cfg.hold_ms.0) {
            slot.current.resume()?;
            continue;
        }
        say(format!("SIGSTOP worker {} between its read and its write (stale holder)", slot.id));
        // Stopped until its lease is surely gone and another worker has written since.
        let expired = Instant::now() + ttl + Duration::from_millis(500);
        let limit = Instant::now() + ttl + Duration::from_millis(cfg.hold_ms.1 * 4) + Duration::from_secs(30);
        loop {
            let others_wrote = slots.iter().enumerate().filter(|(j, _)| *j != i).any(|(_, s)| {
                parse_lines(&s.current).iter().any(|l| l.t_ms > paused_ms && matches!(l.event, Event::Ok { .. }))
            });
            if others_wrote && Instant::now() >= expired {
                break;
            }
            if Instant::now() >= limit {
                summary.notes.push("stale: no other worker wrote while the holder was stopped".into());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines_seen = parse_lines(&slot.current).len();
        slot.current.resume()?;
        summary.pauses.push(PauseRecord {
            worker: slot.id.clone(),
            paused_ms,
            resumed_ms: now_ms(),
            lines_seen,
            was_holding: true,
            in_write_window: true,
            told_lost: false,
            stale_write: None,
        });
        return Ok(true);
    }
    summary.notes.push("stale: no worker was caught between its read and its write".into());
    Ok(false)
}

#[allow(clippy::too_many_arguments)]
fn inject(
    fault: Fault,
    etcd: &EtcdCluster,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    cfg: &RunConfig,
    stop_file: &std::path::Path,
    slots: &mut [Slot],
    summary: &mut Summary,
    rng: &mut Rng,
    deadline: Instant,
) -> Result<bool> {
    let ttl = Duration::from_secs(cfg.ttl_secs);
    let hold_wait = Duration::from_millis(cfg.hold_ms.1 * 2 + 3000);
    let say = |what: String| {
        if cfg.verbose {
            println!("  [{:>6.1}s left] {what}", deadline.saturating_duration_since(Instant::now()).as_secs_f64());
        }
    };
    match fault {
        Fault::Kill => {
            let i = find_holder(slots, false, hold_wait).map_or_else(|| rng.below(slots.len()), |(i, _)| i);
            let slot = &mut slots[i];
            slot.current.kill()?;
            say(format!("SIGKILL worker {}", slot.id));
            slot.generation += 1;
            let id = format!("w{i}g{}", slot.generation);
            let left = deadline.saturating_duration_since(Instant::now());
            let fresh = spawn_worker(cfg, &slot.proxies, &id, left, stop_file)?;
            summary.workers_started += 1;
            let old = std::mem::replace(&mut slot.current, fresh);
            let old_id = std::mem::replace(&mut slot.id, id);
            slot.past.push((old_id, old));
        }
        Fault::Pause => {
            let Some((i, _)) = find_holder(slots, true, hold_wait) else {
                summary.notes.push("pause: no holder found".into());
                return Ok(false);
            };
            let slot = &slots[i];
            let paused_ms = now_ms();
            slot.current.pause()?;
            // What it was doing when it stopped (its last lines may still have been in the pipe).
            std::thread::sleep(Duration::from_millis(100));
            let (was_holding, in_write_window) = holding(&parse_lines(&slot.current));
            let pause_for = ttl + Duration::from_secs(2);
            say(format!(
                "SIGSTOP worker {} (holding: {was_holding}, before its write: {in_write_window}) for {pause_for:?}",
                slot.id
            ));
            std::thread::sleep(pause_for.saturating_sub(Duration::from_millis(100)));
            let lines_seen = parse_lines(&slot.current).len();
            slot.current.resume()?;
            summary.pauses.push(PauseRecord {
                worker: slot.id.clone(),
                paused_ms,
                resumed_ms: now_ms(),
                lines_seen,
                was_holding,
                in_write_window,
                told_lost: false,
                stale_write: None,
            });
        }
        Fault::Stale => return stale_holder(slots, cfg, summary, ttl, hold_wait, &say),
        Fault::Member | Fault::Leader => {
            if etcd.len() < 3 && fault == Fault::Member {
                summary.notes.push("member: needs 3 members; skipped".into());
                return Ok(false);
            }
            let leader = etcd.wait_for_leader(Duration::from_secs(30))?;
            let victim = if fault == Fault::Leader {
                leader
            } else {
                let followers: Vec<usize> = (0..etcd.len()).filter(|&m| m != leader).collect();
                followers[rng.below(followers.len())]
            };
            etcd.kill(victim)?;
            say(format!("SIGKILL etcd member {victim} ({})", if victim == leader { "leader" } else { "follower" }));
            std::thread::sleep(Duration::from_secs(1));
            etcd.restart(victim)?;
            say(format!("restarted etcd member {victim}"));
        }
        Fault::Partition => {
            let i = find_holder(slots, true, hold_wait).map_or_else(|| rng.below(slots.len()), |(i, _)| i);
            let slot = &slots[i];
            for p in &slot.proxies {
                p.set_blackhole(true);
            }
            say(format!("partition: worker {} cut off for {:?}", slot.id, ttl + Duration::from_secs(2)));
            std::thread::sleep(ttl + Duration::from_secs(2));
            for p in &slot.proxies {
                p.set_blackhole(false);
            }
        }
        Fault::Drop => {
            for p in slots.iter().flat_map(|s| &s.proxies) {
                p.drop_connections();
            }
            say("dropped every worker connection".into());
        }
        Fault::Delay => {
            let i = find_holder(slots, false, hold_wait).map_or_else(|| rng.below(slots.len()), |(i, _)| i);
            for p in &slots[i].proxies {
                p.set_delay(Duration::from_millis(150));
            }
            say(format!("delay: 150 ms on worker {}", slots[i].id));
            std::thread::sleep(Duration::from_secs(3));
            for p in &slots[i].proxies {
                p.set_delay(Duration::ZERO);
            }
        }
        Fault::Compact => {
            let done = rt.block_on(async {
                let rev = client.get("compact-probe", GetOptions::new()).await?.header.revision;
                match client.compact(rev, false).await {
                    Ok(_) => anyhow::Ok(Some(rev)),
                    // Auto-compaction may have got there first.
                    Err(etcd_wire::Error::Compacted { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })?;
            say(format!("compacted at {done:?}"));
        }
    }
    Ok(true)
}

/// The counter's value and the landed op records (`<worker>-<op>` → value written).
pub async fn read_outcome(client: &Client, name: &str) -> Result<(u64, BTreeMap<String, u64>)> {
    let counter = client.get(counter_key(name), GetOptions::new()).await?;
    let final_value = match counter.kvs.first() {
        Some(kv) => kv.value_str().parse().with_context(|| format!("counter value {:?}", kv.value_str()))?,
        None => 0,
    };
    let prefix = ops_prefix(name);
    let ops = client.get(prefix.clone(), GetOptions::new().with_prefix()).await?;
    let mut landed = BTreeMap::new();
    for kv in ops.kvs {
        let key = kv.key_str().trim_start_matches(prefix.as_str()).to_owned();
        landed.insert(key, kv.value_str().parse().with_context(|| format!("op record {:?}", kv.value_str()))?);
    }
    Ok((final_value, landed))
}

/// A short class of a worker's error text, for counting.
fn error_class(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    [
        ("session is expired", "session-expired"),
        ("not acquired within", "wait-limit"),
        ("timed out", "timeout"),
        ("took over", "timeout"),
        ("no leader", "no-leader"),
        ("unavailable", "unavailable"),
        ("could not connect", "connect"),
        ("lease not found", "lease-not-found"),
    ]
    .into_iter()
    .find(|(needle, _)| e.contains(needle))
    .map_or("other", |(_, class)| class)
}

/// The lock history in the workers' logs (see [`crate::history`]); a worker whose log ends
/// without `done` was killed: its claim ends at its last line.
pub fn history_of(logs: &[(String, Vec<LogLine>)]) -> Vec<history::Record> {
    let mut records = Vec::new();
    for (worker, lines) in logs {
        let mut releasing = 0;
        for l in lines {
            let step = match l.event {
                Event::Locking => Step::Invoke,
                Event::Acquired { token, valid_until_ms } => Step::Acquired { token, valid_until_ms },
                Event::Read { token, valid_until_ms, .. } => Step::Valid { token, valid_until_ms },
                Event::Unlocking { token } => {
                    releasing = token;
                    Step::ReleaseInvoked { token }
                }
                Event::Released => Step::Released { token: releasing },
                Event::LostLock { .. } => Step::Gone,
                _ => continue,
            };
            records.push(history::Record::new(worker.clone(), l.t_ms, step));
        }
        if let Some(last) = lines.last().filter(|l| !matches!(l.event, Event::Done { .. })) {
            records.push(history::Record::new(worker.clone(), last.t_ms, Step::Gone));
        }
    }
    records
}

/// Fills `summary` from the workers' logs and the outcome read from etcd.
pub fn check(summary: &mut Summary, logs: &[(String, Vec<LogLine>)], final_value: u64, landed: &BTreeMap<String, u64>) {
    let mut acked = BTreeSet::new();
    // Per acquisition: (acquired, last read or acquisition, end). A holder that learns it lost
    // the lock held it, as far as anyone can prove, only until its read.
    let mut intervals: Vec<(u64, u64, u64)> = Vec::new();
    for (_, lines) in logs {
        let first_of_worker = intervals.len();
        let mut open: Option<(u64, u64)> = None;
        for l in lines {
            let t = l.t_ms;
            match &l.event {
                Event::Acquired { .. } => {
                    summary.acquisitions += 1;
                    open = Some((t, t));
                }
                Event::Read { .. } => {
                    if let Some(o) = open.as_mut() {
                        o.1 = t;
                    }
                }
                Event::Ok { op, .. } => {
                    summary.operations += 1;
                    summary.acknowledged += 1;
                    acked.insert(op.clone());
                }
                Event::Refused { .. } => {
                    summary.operations += 1;
                    summary.refused += 1;
                }
                Event::Indeterminate { .. } => {
                    summary.operations += 1;
                    summary.indeterminate += 1;
                }
                Event::Released => {
                    if let Some((s, r)) = open.take() {
                        intervals.push((s, r, t));
                    }
                }
                Event::LostLock { .. } => {
                    summary.lost_lock_reports += 1;
                    match open.take() {
                        Some((s, r)) => intervals.push((s, r, r)),
                        // Reported after a "successful" unlock (the server-side Unlock cannot tell).
                        None => {
                            if let Some(last) = intervals[first_of_worker..].last_mut() {
                                last.2 = last.1;
                            }
                        }
                    }
                }
                Event::Error { .. } | Event::UnlockFailed { .. } => {
                    summary.errors += 1;
                    let (stage, error) = match &l.event {
                        Event::Error { stage, error } => (stage.as_str(), error.as_str()),
                        Event::UnlockFailed { error } => ("unlock", error.as_str()),
                        _ => ("", ""),
                    };
                    let stage = format!("{stage}:{}", error_class(error));
                    *summary.errors_by_stage.entry(stage).or_default() += 1;
                    if let Some((s, r)) = open.take() {
                        intervals.push((s, r, t));
                    }
                }
                Event::Done { .. } => {
                    if let Some((s, r)) = open.take() {
                        intervals.push((s, r, t));
                    }
                }
                _ => {}
            }
        }
        // A killed holder held the lock until its last line, as far as anyone can tell.
        if let (Some((s, r)), Some(last)) = (open, lines.last()) {
            intervals.push((s, r, last.t_ms));
        }
    }
    summary.history = history::check(&history_of(logs), summary.permits.max(1));
    summary.landed = landed.len() as u64;
    summary.final_value = final_value;
    summary.lost_updates = summary.landed.saturating_sub(final_value);
    let distinct: BTreeSet<u64> = landed.values().copied().collect();
    summary.duplicate_values = summary.landed - distinct.len() as u64;
    summary.missing_acknowledged = acked.iter().filter(|op| !landed.contains_key(*op)).cloned().collect();
    if summary.mode == "fenced" && final_value == summary.landed && distinct != (1..=final_value).collect() {
        summary.notes.push("the landed values are not exactly 1..=final".into());
        summary.duplicate_values = summary.duplicate_values.max(1);
    }

    intervals.sort_unstable();
    let mut max_gap = 0;
    let mut reach: Option<u64> = None;
    for (s, _, e) in intervals {
        if let Some(r) = reach
            && s.saturating_sub(r) > max_gap
        {
            max_gap = s - r;
            summary.max_no_holder_from_ms = r;
        }
        reach = Some(reach.map_or(e, |r| r.max(e)));
    }
    summary.max_no_holder = Duration::from_millis(max_gap);

    for p in &mut summary.pauses {
        let Some((_, lines)) = logs.iter().find(|(id, _)| *id == p.worker) else { continue };
        if p.in_write_window {
            p.stale_write = lines.iter().skip(p.lines_seen).find_map(|l| match l.event {
                Event::Ok { .. } => Some("ok"),
                Event::Refused { .. } => Some("refused"),
                Event::Indeterminate { .. } => Some("indeterminate"),
                _ => None,
            });
        }
        for l in lines.iter().skip(p.lines_seen) {
            match l.event {
                Event::LostLock { .. } => {
                    p.told_lost = true;
                    break;
                }
                Event::Acquired { .. } | Event::Done { .. } => break,
                _ => {}
            }
        }
    }
}
