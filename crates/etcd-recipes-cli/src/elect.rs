//! `etcd-recipes elect NAME PROPOSAL` and `etcd-recipes elect -l NAME` (and `--latch`, in `latch.rs`).

use std::io::Write;
use std::time::{Duration, Instant};

use etcd_recipes::{Election, Session};
use futures::StreamExt;

use crate::cli::{ElectArgs, GlobalArgs};
use crate::connect::{close_session, start};
use crate::failure::{EXIT_LOST, EXIT_OK, Failure, explain, signal_exit_code};
use crate::hold::{Lost, lost};
use crate::signals::{self, Signals};
use crate::trace::CliTrace;

/// How long resigning and revoking the session may take at exit.
const RESIGN_LIMIT: Duration = Duration::from_secs(10);
/// How long the clean-up may take once leadership is lost.
const CLEANUP_LIMIT: Duration = Duration::from_secs(2);

/// Runs `elect`; returns the exit code.
pub(crate) async fn run(
    args: &ElectArgs,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    if args.latch {
        let proposal = args.proposal.clone().unwrap_or_else(default_proposal);
        return crate::latch::run(args, proposal, g, trace, signals).await;
    }
    let session = start(g, trace, signals).await?;
    let election = match Election::new(&session, &args.name) {
        Ok(e) => e.with_tracer(trace.recipes()),
        Err(e) => {
            close_session(&session, CLEANUP_LIMIT, trace).await;
            return Err(explain(&e, &format!("joining election {:?}", args.name), g));
        }
    };
    let result = match &args.proposal {
        Some(proposal) if !args.listen => campaign(&election, &args.name, proposal, &session, g, trace, signals).await,
        _ => observe(&election, &args.name, g, trace, signals).await,
    };
    // Campaigns revoke their session on every path themselves; an observer's has nothing bound to it.
    if args.listen {
        close_session(&session, CLEANUP_LIMIT, trace).await;
    }
    result
}

/// `<hostname>-<pid>`: what a latch without a PROPOSAL stands with, so observers can tell who leads.
fn default_proposal() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let pid = std::process::id();
    if host.is_empty() { pid.to_string() } else { format!("{host}-{pid}") }
}

/// Campaigns with `proposal`; once elected prints the leader key and value, then holds
/// leadership until a signal (resign, exit 0) or until it is lost (exit 3).
async fn campaign(
    election: &Election,
    name: &str,
    proposal: &str,
    session: &Session,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let outcome = tokio::select! {
        r = election.campaign(proposal.to_owned()) => r.map_err(|e| explain(&e, &format!("campaigning in election {name:?}"), g)),
        sig = signals.recv() => Err(Failure::with_code(
            signal_exit_code(sig),
            format!("{} while campaigning in election {name:?}; not elected", signals::name(sig)),
        )),
    };
    let leadership = match outcome {
        Ok(l) => l,
        Err(failure) => {
            close_session(session, CLEANUP_LIMIT, trace).await;
            return Err(failure);
        }
    };
    let key = leadership.key().clone();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}\n{proposal}", String::from_utf8_lossy(&key));
        let _ = out.flush();
    }
    tokio::select! {
        _ = signals.recv() => {
            let started = Instant::now();
            let resigned = tokio::time::timeout(RESIGN_LIMIT, leadership.resign()).await;
            trace.line("election", "resign", started.elapsed(), || match &resigned {
                Ok(Ok(())) => format!("Txn fenced delete {} -> resigned", String::from_utf8_lossy(&key)),
                Ok(Err(e)) => format!("resign failed: {e}"),
                Err(_) => "resign got no answer".to_owned(),
            });
            close_session(session, RESIGN_LIMIT, trace).await;
            match resigned {
                Ok(Ok(())) => Ok(EXIT_OK),
                Ok(Err(e)) => Err(explain(&e, "resigning", g)),
                Err(_) => Err(Failure::error(format!(
                    "could not resign: etcd did not answer; the leadership ends when the lease expires (within {}s)",
                    session.ttl().as_secs()
                ))),
            }
        }
        why = lost(session, "leader key", &key, leadership.fencing_token()) => {
            close_session(session, CLEANUP_LIMIT, trace).await;
            Err(match why {
                Lost::Session(reason) => Failure::with_code(EXIT_LOST, format!("session lost while leader: {reason}")),
                Lost::Key(reason) => Failure::with_code(EXIT_LOST, format!("leadership lost: {reason}")),
            })
        }
    }
}

/// Prints the leader's key and value, and again on every change, until a signal.
async fn observe(
    election: &Election,
    name: &str,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let started = Instant::now();
    let mut leaders = Box::pin(election.observe());
    trace.line("election", "observe", Duration::ZERO, || format!("watching {name}/ for leader changes"));
    loop {
        tokio::select! {
            next = leaders.next() => match next {
                Some(Ok(kv)) => {
                    trace.line("election", "observe", started.elapsed(), || format!(
                        "leader {} (create revision {}, value set at revision {})",
                        String::from_utf8_lossy(&kv.key), kv.create_revision, kv.mod_revision
                    ));
                    let mut out = std::io::stdout().lock();
                    let written = writeln!(out, "{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value))
                        .and_then(|()| out.flush());
                    if written.is_err() {
                        // Nobody reads our output any more (a closed pipe): nothing left to do.
                        return Ok(EXIT_OK);
                    }
                }
                Some(Err(e)) => return Err(explain(&e, &format!("observing election {name:?}"), g)),
                None => return Err(Failure::error(format!("observing election {name:?}: the observer stopped; run it again"))),
            },
            _ = signals.recv() => return Ok(EXIT_OK),
        }
    }
}
