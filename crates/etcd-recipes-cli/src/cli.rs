//! The command line: flags, subcommands and their help, parsed with clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use etcd_recipes::Strategy;

use crate::duration::{format_duration, parse_duration};

const ABOUT: &str = "Distributed locks and leader election on etcd v3, from the shell";

const LONG_ABOUT: &str = "\
Distributed locks and leader election on etcd v3, from the shell.

It works like `etcdctl lock` and `etcdctl elect`, and interoperates with them: on the same name,
`etcdctl lock` and `etcd-recipes lock` (strategies mutex and rpc) exclude each other, and
`etcdctl elect` and `etcd-recipes elect` take part in the same election.

Every lock and candidacy is bound to a session: a lease of --ttl seconds kept alive while the
tool runs. If the tool dies, etcd releases its lock when the lease expires.";

const MAIN_AFTER: &str = "\
Examples:
  # Run a job while holding the lock \"nightly\"; a second run waits for the first
  etcd-recipes lock nightly -- ./backup.sh

  # Hold a lock until Ctrl-C (prints the lock key first)
  etcd-recipes lock nightly

  # Fail at once (exit 2) if someone holds it
  etcd-recipes lock --try nightly -- ./backup.sh

  # Campaign to lead \"scheduler\" as host-a, and watch who leads from elsewhere
  etcd-recipes elect scheduler host-a
  etcd-recipes elect -l scheduler

  # See every RPC and watch event the lock algorithm issues
  etcd-recipes trace lock --strategy naive nightly

Exit codes:
  0        success
  1        error: unreachable endpoint, authentication failure, bad flag, ...
  2        the lock is held by another session (--try, or --timeout passed)
  3        the session or the lock was lost while held (CMD, if any, was terminated)
  N        lock with CMD: CMD's exit code (128+signal if CMD was killed by a signal)
  130,143  interrupted by SIGINT or SIGTERM before the lock or leadership was acquired

Environment:
  ETCD_ENDPOINTS   default for --endpoints (comma-separated)
  ETCD_USER, ETCD_PASSWORD   defaults for --user and --password";

const LOCK_ABOUT: &str = "Acquires a named lock, runs CMD while holding it, or holds it until signalled";

const LOCK_LONG: &str = "\
Acquires a named lock.

With CMD: runs CMD while holding the lock, releases the lock when CMD ends and exits with CMD's
exit code. CMD sees ETCD_LOCK_KEY (the lock key) and ETCD_LOCK_REV (the fencing token: the lock
key's create revision, which grows with every acquisition) in its environment. SIGINT and SIGTERM
are passed on to CMD; a second signal kills it.

Without CMD: prints the lock key and its value (empty) on two lines, as `etcdctl lock` does, then
holds the lock until SIGINT or SIGTERM, and releases it.

If the session is lost while the lock is held (etcd unreachable for longer than --ttl, the lease
revoked, the key deleted), it says so on stderr, terminates CMD (SIGTERM, then SIGKILL after 5s)
and exits with 3.";

const LOCK_AFTER: &str = "\
Strategies (--strategy):
  mutex  revision-ordered queue; each waiter watches only its predecessor (Go's concurrency.Mutex,
         what `etcdctl lock` uses; the keys are NAME/<lease>)
  naive  one key NAME; every waiter watches it and races for it on release (the herd)
  lease  one key NAME on a lease of its own per acquisition (the lease + keep-alive lock)
  rpc    etcd's server-side Lock RPC (v3lock), same keys as mutex
  semaphore  one permit of a semaphore (-n N: N permits); the first waiter watches the holders,
         the others their predecessor (keys NAME/<lease>-<unique>)
  mutex and rpc exclude `etcdctl lock NAME`; naive, lease and semaphore only exclude their own kind.

Examples:
  # Run a job under the lock; waits while someone else holds it
  etcd-recipes lock nightly -- ./backup.sh --full

  # The fencing token, for writes to other systems
  etcd-recipes lock nightly -- sh -c 'echo \"$ETCD_LOCK_KEY holds token $ETCD_LOCK_REV\"'

  # At most 3 jobs at once across all hosts (a semaphore, like `consul lock -n 3`)
  etcd-recipes lock -n 3 encoders -- ./encode.sh

  # Give up after 30 seconds of waiting (exit 2), or at once with --try
  etcd-recipes lock --timeout 30s nightly -- ./backup.sh
  etcd-recipes lock --try nightly -- ./backup.sh || echo \"someone else is on it\"

  # Hold it from a shell until Ctrl-C
  etcd-recipes --endpoints 10.0.0.1:2379,10.0.0.2:2379 lock nightly

  # Watch the naive lock's herd: start a few waiters with --trace, then release the holder
  etcd-recipes lock --strategy naive --trace nightly -- sleep 1

Exit codes: 0 released normally; 1 error; 2 held by another session (--try, --timeout);
3 session or lock lost while held; N CMD's exit code (128+signal if killed);
130/143 signalled while waiting.";

const ELECT_ABOUT: &str = "Campaigns in a named election and holds leadership until signalled, or observes it with -l";

const ELECT_LONG: &str = "\
Observes and participates in leader election, like `etcdctl elect`.

With PROPOSAL: campaigns with it as the value; once elected, prints the leader key and the
proposal on two lines and holds leadership until SIGINT or SIGTERM, then resigns.

With -l: prints the leader key and value on two lines, then again each time the leader or its
value changes, until SIGINT or SIGTERM.

With --latch and a CMD after `--`: a leader latch. Runs CMD only while leader, with
ETCD_LEADER_KEY (the leader key) and ETCD_LEADER_REV (the fencing token) in its environment. When
leadership is lost (the session ends, the key is deleted, or its validity passes by the local
clock, which is before any other candidate can be elected), CMD gets SIGTERM, then SIGKILL after
5 s; the tool campaigns again with a new session and runs CMD again once elected. It stops when
CMD exits by itself (exit code: CMD's), or on SIGINT/SIGTERM: passed on to a running CMD (exit
code: CMD's; a second signal kills it), or, while not leading, exit code 0.";

const ELECT_AFTER: &str = "\
Examples:
  # Campaign as host-a; prints the leader key and \"host-a\" once elected
  etcd-recipes elect scheduler host-a

  # Follow the election: one key line and one value line per change
  etcd-recipes elect -l scheduler

  # Interoperates with etcdctl, both ways
  etcdctl elect scheduler host-b &
  etcd-recipes elect -l scheduler

  # Run the scheduler only while leader; on every host, forever (a leader latch)
  etcd-recipes --ttl 10 elect --latch scheduler host-a -- sh -c './scheduler --fence \"$ETCD_LEADER_REV\"'

Exit codes: 0 resigned or stopped observing on a signal (--latch: signalled while not leading);
1 error; 3 session lost while leader; 130/143 signalled while campaigning; --latch: N CMD's exit
code when it ended (128+signal if killed).";

const TRACE_ABOUT: &str = "Runs lock or elect with --trace: every RPC and watch event on stderr";

const TRACE_AFTER: &str = "\
Each line on stderr is one step of the recipe: the RPC, its key, the branch a Txn took, the store
revision and the time it took; watches opened and the events they deliver; and the recipe's
decisions (who waits on whom). Times are since the operation started.

Examples:
  # The revision-ordered mutex: one waiter wakes per release
  etcd-recipes trace lock nightly -- sleep 2

  # The naive lock: start several waiters, release the holder, watch the herd
  etcd-recipes trace lock --strategy naive nightly -- sleep 2

  # A campaign
  etcd-recipes trace elect scheduler host-a";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "etcd-recipes",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = "See 'etcd-recipes --help' for examples and exit codes.",
    after_long_help = MAIN_AFTER,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and session flags; accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// gRPC endpoints, comma-separated (host:port, http://host:port or https://host:port)
    #[arg(
        long,
        global = true,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        value_name = "ENDPOINTS"
    )]
    pub endpoints: Vec<String>,

    /// User name for authentication, or USER:PASSWORD
    #[arg(long, global = true, env = "ETCD_USER", value_name = "USER")]
    pub user: Option<String>,

    /// Password for authentication (with --user NAME)
    #[arg(long, global = true, env = "ETCD_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// Verify the servers' TLS certificates with this CA bundle (PEM; without it, TLS trusts the
    /// system's roots); turns TLS on
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Identify to the servers with this TLS client certificate (PEM; with --key)
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The TLS client certificate's private key (PEM; with --cert)
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// How long connecting to the endpoints may take (e.g. 5s, 500ms)
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub dial_timeout: Duration,

    /// Session TTL in seconds: how long etcd keeps the lock after the tool stops answering
    #[arg(long, global = true, default_value_t = etcd_recipes::DEFAULT_TTL, value_parser = clap::value_parser!(i64).range(1..), value_name = "SECONDS")]
    pub ttl: i64,

    /// Print every RPC and watch event the recipe issues on stderr, with timings and revisions
    #[arg(long, global = true)]
    pub trace: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Acquires a named lock, runs CMD while holding it, or holds it until signalled.
    #[command(about = LOCK_ABOUT, long_about = LOCK_LONG, after_help = LOCK_AFTER)]
    Lock(LockArgs),
    /// Campaigns in a named election, or observes it with -l.
    #[command(about = ELECT_ABOUT, long_about = ELECT_LONG, after_help = ELECT_AFTER)]
    Elect(ElectArgs),
    /// Compares the lock strategies against the cluster at --endpoints and prints a table.
    #[command(after_help = BENCH_AFTER)]
    Bench(BenchArgs),
    /// Runs lock or elect with --trace.
    #[command(about = TRACE_ABOUT, after_help = TRACE_AFTER, subcommand_required = true, arg_required_else_help = true)]
    Trace {
        /// The traced command.
        #[command(subcommand)]
        command: Traced,
    },
}

/// What `trace` runs.
#[derive(Debug, Subcommand)]
pub enum Traced {
    /// `lock` with --trace.
    #[command(about = LOCK_ABOUT, long_about = LOCK_LONG, after_help = LOCK_AFTER)]
    Lock(LockArgs),
    /// `elect` with --trace.
    #[command(about = ELECT_ABOUT, long_about = ELECT_LONG, after_help = ELECT_AFTER)]
    Elect(ElectArgs),
}

/// `lock NAME [-- CMD ARGS...]`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// The lock's name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The command to run while holding the lock, with its arguments (put `--` before it when
    /// its arguments start with `-`)
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    pub command: Vec<String>,

    /// The lock algorithm
    #[arg(long, value_enum, default_value_t = StrategyArg::Mutex)]
    pub strategy: StrategyArg,

    /// Up to N holders at once: a semaphore of N permits (as `consul lock -n`); a waiter
    /// behind N holders waits, and each holder's CMD gets its own fencing token
    #[arg(short = 'n', long = "permits", value_name = "N", conflicts_with = "strategy")]
    pub permits: Option<usize>,

    /// Give up waiting after this long (e.g. 30s, 2m) and exit with 2
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "try_lock")]
    pub timeout: Option<Duration>,

    /// Do not wait: exit with 2 at once if the lock is held by another session
    #[arg(long = "try")]
    pub try_lock: bool,
}

/// `elect NAME [PROPOSAL]` or `elect -l NAME`.
#[derive(Debug, Clone, Args)]
pub struct ElectArgs {
    /// The election's name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The value to campaign with (required unless -l; with --latch, default <hostname>-<pid>)
    #[arg(value_name = "PROPOSAL", required_unless_present_any = ["listen", "latch"], conflicts_with = "listen")]
    pub proposal: Option<String>,

    /// Observation mode: print each leader's key and value as it changes
    #[arg(short = 'l', long)]
    pub listen: bool,

    /// Leader latch: run CMD (after `--`) only while leader; stop it when leadership is lost,
    /// campaign again with a new session, and run it again once elected again
    #[arg(long, requires = "command", conflicts_with = "listen")]
    pub latch: bool,

    /// With --latch: the command to run while leader, after `--`
    #[arg(value_name = "CMD", last = true, requires = "latch")]
    pub command: Vec<String>,
}

/// `bench [--strategies ...] [--contenders ...] [--seconds S]`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The strategies to compare (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StrategyArg::Mutex, StrategyArg::Naive, StrategyArg::Lease, StrategyArg::Rpc])]
    pub strategies: Vec<StrategyArg>,

    /// Contender counts to run (comma-separated); each contender has its own session
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16], value_parser = clap::value_parser!(usize))]
    pub contenders: Vec<usize>,

    /// Seconds per point
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,

    /// How long each holder keeps the lock, in microseconds
    #[arg(long = "hold-us", default_value_t = 0)]
    pub hold_us: u64,

    /// Give every contender its own client (connection) instead of one shared client
    #[arg(long)]
    pub separate_clients: bool,
}

const BENCH_AFTER: &str = "\
Examples:
  etcd-recipes bench
  etcd-recipes --endpoints 10.0.0.1:2379 bench --strategies mutex,rpc --contenders 4,16 --seconds 5
  etcd-recipes bench --separate-clients --hold-us 500

Columns: locks/s; how long lock() waited (p50/p99/max); handoff = a holder starts its unlock until the
next holder's lock() returns; RPCs and watch events per acquisition (lock + unlock). Keys live under
etcd-recipes-bench/<pid>/ and are removed as the run ends.";

/// The `--strategy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Revision-ordered queue, waiters watch their predecessor (etcdctl's lock)
    Mutex,
    /// One key, every waiter watches it and retries (the herd)
    Naive,
    /// One key on a lease of its own per acquisition
    Lease,
    /// etcd's server-side Lock RPC
    Rpc,
    /// A semaphore of one permit (see -n for more)
    Semaphore,
}

impl StrategyArg {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        Strategy::from(self).name()
    }
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::Mutex => Strategy::Mutex,
            StrategyArg::Naive => Strategy::Naive,
            StrategyArg::Lease => Strategy::LeaseTtl,
            StrategyArg::Rpc => Strategy::Rpc,
            StrategyArg::Semaphore => Strategy::Semaphore,
        }
    }
}

impl Cli {
    /// The subcommand to run and whether tracing is on (`--trace` or the `trace` subcommand).
    pub fn resolve(&self) -> (Run<'_>, bool) {
        match &self.command {
            Command::Lock(a) => (Run::Lock(a), self.global.trace),
            Command::Elect(a) => (Run::Elect(a), self.global.trace),
            Command::Trace { command: Traced::Lock(a) } => (Run::Lock(a), true),
            Command::Trace { command: Traced::Elect(a) } => (Run::Elect(a), true),
            Command::Bench(a) => (Run::Bench(a), self.global.trace),
        }
    }
}

/// A subcommand ready to run.
#[derive(Debug, Clone, Copy)]
pub enum Run<'a> {
    /// `lock`.
    Lock(&'a LockArgs),
    /// `elect`.
    Elect(&'a ElectArgs),
    /// `bench`.
    Bench(&'a BenchArgs),
}

/// `--dial-timeout` in words, for messages.
pub(crate) fn dial_timeout_text(g: &GlobalArgs) -> String {
    format_duration(g.dial_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("etcd-recipes").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn elect_latch_takes_its_command_after_double_dash_only() {
        let cli =
            parse(&["elect", "--latch", "sched", "host-a", "--", "sh", "-c", "x"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Elect(a) = &cli.command else { panic!("not elect") };
        assert!(a.latch);
        assert_eq!(
            (a.proposal.as_deref(), &a.command[..]),
            (Some("host-a"), &["sh", "-c", "x"].map(str::to_owned)[..])
        );
        let cli = parse(&["elect", "--latch", "sched", "--", "true"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Elect(a) = &cli.command else { panic!("not elect") };
        assert_eq!((a.proposal.as_deref(), &a.command[..]), (None, &["true".to_owned()][..]));
        assert!(parse(&["elect", "--latch", "sched", "host-a"]).is_err(), "--latch needs CMD");
        assert!(parse(&["elect", "sched", "host-a", "--", "true"]).is_err(), "CMD needs --latch");
        assert!(parse(&["elect", "-l", "--latch", "sched", "--", "true"]).is_err());
    }

    #[test]
    fn lock_with_command_after_double_dash_or_not() {
        let cli = parse(&["lock", "job", "--", "ls", "-l"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Lock(a) = &cli.command else { panic!("not lock") };
        assert_eq!(a.command, ["ls", "-l"]);
        let cli = parse(&["lock", "--try", "job", "sh", "-c", "echo hi"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Lock(a) = &cli.command else { panic!("not lock") };
        assert!(a.try_lock);
        assert_eq!(a.command, ["sh", "-c", "echo hi"]);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["lock", "job", "--endpoints", "a:1,b:2", "--ttl", "5", "--trace", "--strategy", "naive"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.ttl, 5);
        let (run, trace) = cli.resolve();
        assert!(trace);
        let Run::Lock(a) = run else { panic!("not lock") };
        assert_eq!(Strategy::from(a.strategy), Strategy::Naive);
        assert!(a.command.is_empty());
    }

    #[test]
    fn trace_subcommand_turns_tracing_on() {
        let cli = parse(&["trace", "elect", "e", "me"]).unwrap_or_else(|e| panic!("{e}"));
        let (run, trace) = cli.resolve();
        assert!(trace);
        assert!(matches!(run, Run::Elect(ElectArgs { proposal: Some(p), listen: false, .. }) if p == "me"));
    }

    #[test]
    fn elect_needs_a_proposal_or_listen_but_not_both() {
        assert!(parse(&["elect", "e"]).is_err());
        assert!(parse(&["elect", "-l", "e", "p"]).is_err());
        assert!(parse(&["elect", "-l", "e"]).is_ok());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["lock", "j", "--strategy", "fancy"]).is_err());
        assert!(parse(&["lock", "j", "--ttl", "0"]).is_err());
        assert!(parse(&["lock", "j", "--timeout", "soon"]).is_err());
        assert!(parse(&["lock", "j", "--try", "--timeout", "1s"]).is_err());
        assert!(parse(&["lock", "j", "--cert", "c.pem"]).is_err());
    }
}
