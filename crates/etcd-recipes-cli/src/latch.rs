//! `etcd-recipes elect --latch NAME [PROPOSAL] -- CMD`: a [`LeaderLatch`] that runs CMD only while
//! leader, stops it (SIGTERM, then SIGKILL after a grace period, as `lock` does) when leadership is
//! lost or its `valid_until` passes, and runs it again when elected again.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use etcd_recipes::{LatchState, LeaderLatch};

use crate::child::{Cmd, exit_code, terminal_delivers_sigint};
use crate::cli::{ElectArgs, GlobalArgs};
use crate::connect::connect;
use crate::failure::{EXIT_OK, Failure, explain, signal_exit_code};
use crate::lock::KILL_GRACE;
use crate::signals::Signals;
use crate::trace::CliTrace;

/// How long closing the latch (revoking its lease) may take at exit.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// CMD while it runs: the process and the term it runs for.
struct Running {
    cmd: Cmd,
    token: i64,
    started: Instant,
    /// A signal was passed on: CMD's exit ends the tool instead of waiting to lead again.
    stopping: bool,
}

/// Runs `elect --latch`; returns the exit code: CMD's when it ended by itself (or after a signal
/// passed on to it), 0 when a signal arrived while not leading.
pub(crate) async fn run(
    args: &ElectArgs,
    proposal: String,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let client = tokio::select! {
        c = connect(g) => c?,
        sig = signals.recv() => return Err(Failure::silent(signal_exit_code(sig))),
    };
    let latch = LeaderLatch::builder(&client, &args.name)
        .value(proposal)
        .ttl(g.ttl)
        .with_tracer(trace.recipes())
        .start()
        .map_err(|e| explain(&e, &format!("starting a leader latch on {:?}", args.name), g))?;
    let mut states = latch.subscribe();
    let mut running: Option<Running> = None;
    let mut signalled = 0;
    let code = loop {
        let state = states.borrow_and_update().clone();
        if let Some(r) = running.as_mut().filter(|r| !r.stopping && !leads(&state, r.token)) {
            eprintln!("etcd-recipes: leadership lost (fencing token {}); terminating the command", r.token);
            let status = r.cmd.terminate(KILL_GRACE).await;
            trace.line("cmd", "run", r.started.elapsed(), || format!("terminated: {status:?}"));
            running = None;
            continue;
        }
        if running.is_none()
            && let LatchState::Leader { token, key, .. } = &state
            && state.is_leader()
        {
            let key = String::from_utf8_lossy(key).into_owned();
            let env = [("ETCD_LEADER_KEY", key.clone()), ("ETCD_LEADER_REV", token.to_string())];
            let cmd = match Cmd::spawn(&args.command, &env) {
                Ok(cmd) => cmd,
                Err(failure) => {
                    let _ = tokio::time::timeout(CLOSE_LIMIT, latch.close()).await;
                    return Err(failure);
                }
            };
            trace.line("cmd", "run", Duration::ZERO, || {
                format!("started {:?} with ETCD_LEADER_KEY={key} ETCD_LEADER_REV={token}", args.command)
            });
            running = Some(Running { cmd, token: *token, started: Instant::now(), stopping: false });
        }
        // While CMD runs, its term ends at `valid_until` by our clock even if the latch is late.
        let deadline = match (&state, &running) {
            (LatchState::Leader { valid_until, .. }, Some(_)) => Some(*valid_until),
            _ => None,
        };
        tokio::select! {
            status = exited(&mut running) => {
                let status = status?;
                let code = exit_code(status);
                let took = running.take().map_or(Duration::ZERO, |r| r.started.elapsed());
                trace.line("cmd", "run", took, || format!("exited: {status} (exit code {code})"));
                break code;
            }
            changed = states.changed() => {
                if changed.is_err() {
                    return Err(Failure::error("the leader latch stopped unexpectedly"));
                }
            }
            () = until(deadline) => {}
            sig = signals.recv() => {
                signalled += 1;
                match running.as_mut() {
                    None => break EXIT_OK,
                    Some(r) if signalled > 1 => r.cmd.signal(libc::SIGKILL),
                    Some(r) => {
                        r.stopping = true;
                        if sig != libc::SIGINT || !terminal_delivers_sigint() {
                            r.cmd.signal(sig);
                        }
                    }
                }
            }
        }
    };
    let started = Instant::now();
    let closed = tokio::time::timeout(CLOSE_LIMIT, latch.close()).await;
    trace.line("latch", "close", started.elapsed(), || match &closed {
        Ok(Ok(())) => "closed: lease revoked".to_owned(),
        Ok(Err(e)) => format!("close failed: {e}"),
        Err(_) => "close got no answer; the lease expires by itself".to_owned(),
    });
    Ok(code)
}

/// Whether `state` is still the leadership of the term with `token`, by our clock.
fn leads(state: &LatchState, token: i64) -> bool {
    matches!(state, LatchState::Leader { token: t, .. } if *t == token) && state.is_leader()
}

/// Resolves when CMD exits; never while none runs.
async fn exited(running: &mut Option<Running>) -> Result<ExitStatus, Failure> {
    match running {
        Some(r) => r.cmd.wait().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
