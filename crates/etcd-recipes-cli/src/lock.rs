//! `etcd-recipes lock NAME [-- CMD ARGS...]`.

use std::io::Write;
use std::time::{Duration, Instant};

use etcd_recipes::{DistributedLock, Error, LockGuard, Semaphore, Session, Strategy};
use etcd_wire::{Client, GetOptions, SortOrder, SortTarget};

use crate::child::{Cmd, exit_code, terminal_delivers_sigint};
use crate::cli::{GlobalArgs, LockArgs};
use crate::connect::{close_session, start};
use crate::duration::format_duration;
use crate::failure::{EXIT_ERROR, EXIT_LOCKED, EXIT_LOST, EXIT_OK, Failure, explain, signal_exit_code};
use crate::hold::{Lost, lost};
use crate::signals::{self, Signals};
use crate::trace::CliTrace;

/// How long CMD has to exit after SIGTERM when the lock is lost, before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long releasing the lock and revoking the session may take at exit.
const RELEASE_LIMIT: Duration = Duration::from_secs(10);
/// How long the (best-effort) clean-up may take once the lock is lost or etcd is in doubt.
const CLEANUP_LIMIT: Duration = Duration::from_secs(2);

/// How acquiring ended, other than with the lock.
enum NotAcquired {
    Failed(Error),
    TimedOut(Duration),
    Signalled(i32),
}

/// Runs `lock`; returns the exit code.
pub(crate) async fn run(
    args: &LockArgs,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let session = start(g, trace, signals).await?;
    let strategy = if args.permits.is_some() { Strategy::Semaphore } else { Strategy::from(args.strategy) };
    let doing = format!("acquiring lock {:?}", args.name);
    let guard = match acquire(args, strategy, &session, trace, signals).await {
        Ok(guard) => guard,
        Err(why) => {
            let holder = match &why {
                NotAcquired::Failed(Error::Locked) | NotAcquired::TimedOut(_) => {
                    holder(session.client(), strategy, &args.name).await
                }
                _ => String::new(),
            };
            close_session(&session, CLEANUP_LIMIT, trace).await;
            return Err(match why {
                NotAcquired::Failed(Error::Locked) if args.permits.is_some() => Failure::with_code(
                    EXIT_LOCKED,
                    format!(
                        "all {} permits of {:?} are held by other sessions; retry later, or leave out --try to wait",
                        args.permits.unwrap_or(1),
                        args.name
                    ),
                ),
                NotAcquired::Failed(Error::Locked) => Failure::with_code(
                    EXIT_LOCKED,
                    format!(
                        "lock {:?} is locked by another session{holder}; retry later, or leave out --try to wait",
                        args.name
                    ),
                ),
                NotAcquired::Failed(e) => explain(&e, &doing, g),
                NotAcquired::TimedOut(after) => Failure::with_code(
                    EXIT_LOCKED,
                    format!(
                        "gave up waiting for lock {:?} after {}: it is still locked by another session{holder}; retry later or raise --timeout",
                        args.name,
                        format_duration(after)
                    ),
                ),
                NotAcquired::Signalled(sig) => Failure::with_code(
                    signal_exit_code(sig),
                    format!("{} while waiting for lock {:?}; not acquired", signals::name(sig), args.name),
                ),
            });
        }
    };
    if args.command.is_empty() {
        hold(guard, &session, g, trace, signals).await
    } else {
        run_command(guard, &args.command, &session, g, trace, signals).await
    }
}

/// Waits for the lock (or tries once), giving up at `--timeout` or on a signal. Dropping the
/// recipe's future withdraws from the queue.
async fn acquire(
    args: &LockArgs,
    strategy: Strategy,
    session: &Session,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<LockGuard, NotAcquired> {
    let lock: Box<dyn DistributedLock> = match args.permits {
        Some(n) => Semaphore::new(session, &args.name, n)
            .map(|s| Box::new(s.with_tracer(trace.recipes())) as Box<dyn DistributedLock>),
        None => strategy.new_traced_lock(session, &args.name, trace.recipes()),
    }
    .map_err(NotAcquired::Failed)?;
    let attempt = async { if args.try_lock { lock.try_lock().await } else { lock.lock().await } };
    let deadline = async {
        match args.timeout {
            Some(after) => {
                tokio::time::sleep(after).await;
                after
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = attempt => r.map_err(NotAcquired::Failed),
        after = deadline => Err(NotAcquired::TimedOut(after)),
        sig = signals.recv() => Err(NotAcquired::Signalled(sig)),
    }
}

/// ", held by key K (lease L)" for messages, when the holder can be read quickly.
async fn holder(client: &Client, strategy: Strategy, name: &str) -> String {
    let read = async {
        let resp = match strategy {
            Strategy::Naive | Strategy::LeaseTtl => {
                client.get(name.to_owned(), GetOptions::new().with_keys_only()).await
            }
            _ => {
                let oldest =
                    GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
                client.get(format!("{name}/"), oldest.with_keys_only()).await
            }
        };
        resp.ok().and_then(|r| r.kvs.into_iter().next())
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Some(kv)) if kv.lease != 0 && !kv.key.ends_with(format!("/{:x}", kv.lease).as_bytes()) => {
            format!(" (held by key {}, lease {:x})", String::from_utf8_lossy(&kv.key), kv.lease)
        }
        Ok(Some(kv)) => format!(" (held by key {})", String::from_utf8_lossy(&kv.key)),
        _ => String::new(),
    }
}

/// Without CMD: prints the key (and its empty value, as `etcdctl lock` does), holds the lock
/// until SIGINT/SIGTERM, then releases it.
async fn hold(
    guard: LockGuard,
    session: &Session,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let key = guard.key().clone();
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout does not end the hold: the lock is still wanted until a signal.
        let _ = writeln!(out, "{}\n", String::from_utf8_lossy(&key));
        let _ = out.flush();
    }
    tokio::select! {
        _ = signals.recv() => release(guard, session, g, trace).await.map(|()| EXIT_OK),
        why = lost(session, "lock key", &key, guard.fencing_token()) => {
            abandon(guard, session, trace).await;
            Err(lost_failure(&why))
        }
    }
}

/// With CMD: runs it under the lock and exits with its code.
async fn run_command(
    guard: LockGuard,
    argv: &[String],
    session: &Session,
    g: &GlobalArgs,
    trace: &CliTrace,
    signals: &mut Signals,
) -> Result<u8, Failure> {
    let key = guard.key().clone();
    let token = guard.fencing_token();
    let env = [("ETCD_LOCK_KEY", String::from_utf8_lossy(&key).into_owned()), ("ETCD_LOCK_REV", token.to_string())];
    let mut cmd = match Cmd::spawn(argv, &env) {
        Ok(cmd) => cmd,
        Err(failure) => {
            // Best effort: the command never ran, so the lock goes back at once.
            let _ = release(guard, session, g, trace).await;
            return Err(failure);
        }
    };
    let started = Instant::now();
    trace.line("cmd", "run", Duration::ZERO, || {
        format!("started {argv:?} with ETCD_LOCK_KEY={} ETCD_LOCK_REV={token}", String::from_utf8_lossy(&key))
    });
    let lost_lock = lost(session, "lock key", &key, token);
    tokio::pin!(lost_lock);
    let mut signalled = 0;
    let status = loop {
        tokio::select! {
            status = cmd.wait() => break status?,
            sig = signals.recv() => {
                signalled += 1;
                if signalled > 1 {
                    cmd.signal(libc::SIGKILL);
                } else if sig != libc::SIGINT || !terminal_delivers_sigint() {
                    cmd.signal(sig);
                }
            }
            why = &mut lost_lock => {
                eprintln!("etcd-recipes: {}; terminating the command", lost_failure(&why).message.unwrap_or_default());
                let status = cmd.terminate(KILL_GRACE).await;
                trace.line("cmd", "run", started.elapsed(), || format!("terminated: {status:?}"));
                abandon(guard, session, trace).await;
                return Err(Failure::silent(EXIT_LOST));
            }
        }
    };
    let code = exit_code(status);
    trace.line("cmd", "run", started.elapsed(), || format!("exited: {status} (exit code {code})"));
    match release(guard, session, g, trace).await {
        Ok(()) => Ok(code),
        // The command's failure says more than the release's.
        Err(failure) if code != EXIT_OK => {
            if let Some(m) = failure.message {
                eprintln!("etcd-recipes: {m}");
            }
            Ok(code)
        }
        Err(failure) => Err(failure),
    }
}

/// Releases the lock, then revokes the session's lease.
async fn release(guard: LockGuard, session: &Session, g: &GlobalArgs, trace: &CliTrace) -> Result<(), Failure> {
    let started = Instant::now();
    let result = tokio::time::timeout(RELEASE_LIMIT, guard.unlock()).await;
    trace.line("cli", "release", started.elapsed(), || match &result {
        Ok(Ok(())) => "lock released".to_owned(),
        Ok(Err(e)) => format!("release failed: {e}"),
        Err(_) => "release got no answer".to_owned(),
    });
    close_session(session, RELEASE_LIMIT, trace).await;
    let ttl = session.ttl().as_secs();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Error::NotOwner(why))) => Err(Failure::with_code(
            EXIT_LOST,
            format!(
                "the lock was lost before it was released: {why}; whatever ran under it was not protected at the end"
            ),
        )),
        Ok(Err(e)) => Err(Failure::error(format!(
            "could not release the lock: {}; etcd releases it when the lease expires (within {ttl}s)",
            explain(&e, "releasing the lock", g).message.unwrap_or_default()
        ))),
        Err(_) => Err(Failure::with_code(
            EXIT_ERROR,
            format!(
                "could not release the lock: etcd did not answer within {}; etcd releases it when the lease expires (within {ttl}s)",
                format_duration(RELEASE_LIMIT)
            ),
        )),
    }
}

/// After the lock was lost: gives back whatever may remain, briefly (etcd may be unreachable).
async fn abandon(guard: LockGuard, session: &Session, trace: &CliTrace) {
    let cleanup = async {
        let _ = guard.unlock().await;
        close_session(session, CLEANUP_LIMIT, trace).await;
    };
    let _ = tokio::time::timeout(CLEANUP_LIMIT, cleanup).await;
}

fn lost_failure(why: &Lost) -> Failure {
    match why {
        Lost::Session(reason) => {
            Failure::with_code(EXIT_LOST, format!("session lost while holding the lock: {reason}"))
        }
        Lost::Key(reason) => Failure::with_code(EXIT_LOST, format!("lock lost while holding it: {reason}")),
    }
}
