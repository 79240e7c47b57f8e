//! Spawning etcd so that it can never outlive the process that started it.
//!
//! Three layers make sure no etcd process survives the test binary:
//!
//! 1. `Drop` of [`EtcdCluster`](crate::EtcdCluster) (and of each member) SIGKILLs and reaps it.
//! 2. Every etcd runs in its own process group (`process_group(0)`), and the harness always
//!    signals the whole group.
//! 3. `prctl(PR_SET_PDEATHSIG, SIGKILL)` in `pre_exec` makes the kernel SIGKILL etcd when its
//!    parent dies, which covers panics with leaked clusters, `process::exit` and SIGKILL of the
//!    test binary.
//!
//! INVARIANT: PDEATHSIG fires when the *thread* that forked the child exits, not when the process
//! does. Test harnesses run each test on a short-lived thread, and a cluster may outlive that
//! thread (kept in a `static`, moved into a tokio task, ...). So every etcd process is forked from
//! ONE dedicated thread that lives as long as the process: it is started lazily, receives spawn
//! requests over a channel and answers with the `Child`. Its channel sender sits in a `static`
//! and is never dropped, so the thread never returns. Never spawn etcd anywhere else.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

/// One spawn request for the spawner thread.
struct Request {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The spawner thread's inbox; `None` if the thread could not be started.
static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();

fn start_spawner_thread() -> Option<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    let spawned = std::thread::Builder::new().name("etcd-harness-spawner".into()).spawn(move || {
        // Runs until process exit: the sender lives in a `static`.
        for mut request in rx {
            let result = request.command.spawn();
            // The requester may have given up; nothing to do then (the `Child` is dropped,
            // but PDEATHSIG / the process group still bound its lifetime).
            let _ = request.reply.send(result);
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(error) => {
            tracing::error!(%error, "cannot start the etcd-harness spawner thread");
            None
        }
    }
}

/// Spawns `command` (in a new process group, with PDEATHSIG = SIGKILL) from the dedicated
/// process-lifetime spawner thread.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    set_up_child(&mut command);
    let sender = SPAWNER
        .get_or_init(start_spawner_thread)
        .as_ref()
        .ok_or_else(|| io::Error::other("the etcd-harness spawner thread could not be started"))?;
    let (reply, answer) = mpsc::channel();
    sender.send(Request { command, reply }).map_err(|_| io::Error::other("the etcd-harness spawner thread is gone"))?;
    answer.recv().map_err(|_| io::Error::other("the etcd-harness spawner thread dropped a request"))?
}

/// Puts the child in its own process group and arranges for it to die with its parent.
fn set_up_child(command: &mut Command) {
    command.process_group(0);
    // SAFETY: getpid is always safe to call.
    let parent = unsafe { libc::getpid() };
    let pre_exec = move || -> io::Result<()> {
        // Only async-signal-safe calls here (we are between fork and exec), and no allocation:
        // `io::Error::last_os_error` / `from_raw_os_error` do not allocate.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only changes a flag of the calling process.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // If the parent died between fork and prctl, the signal was never armed: bail out.
        // SAFETY: getppid is async-signal-safe.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure only calls async-signal-safe functions and does not allocate.
    unsafe {
        command.pre_exec(pre_exec);
    }
}
