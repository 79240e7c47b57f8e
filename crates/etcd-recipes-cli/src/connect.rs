//! From the global flags to a connected client and a session.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_recipes::Session;
use etcd_wire::{Client, ClientOptions, TlsOptions};

use crate::cli::GlobalArgs;
use crate::duration::format_duration;
use crate::failure::{Failure, explain, explain_wire, signal_exit_code};
use crate::signals::Signals;
use crate::trace::CliTrace;

/// The client options the flags describe.
pub(crate) fn client_options(g: &GlobalArgs) -> Result<ClientOptions, Failure> {
    let mut options = ClientOptions::default().with_connect_timeout(g.dial_timeout);
    match (&g.user, &g.password) {
        (Some(user), password) => {
            let (name, inline) = match user.split_once(':') {
                Some((name, pw)) => (name, Some(pw)),
                None => (user.as_str(), None),
            };
            if name.is_empty() {
                return Err(Failure::error("--user is empty: pass --user NAME --password PASSWORD"));
            }
            let password = match (inline, password) {
                (Some(_), Some(_)) => {
                    return Err(Failure::error(
                        "the password is given twice: use either --user NAME:PASSWORD or --user NAME --password PASSWORD",
                    ));
                }
                (Some(pw), None) => pw.to_owned(),
                (None, Some(pw)) => pw.clone(),
                (None, None) => {
                    return Err(Failure::error(format!(
                        "no password for user {name:?}: pass --password (or ETCD_PASSWORD), or --user {name}:PASSWORD"
                    )));
                }
            };
            options = options.with_user(name, password);
        }
        (None, Some(_)) => return Err(Failure::error("--password needs --user NAME")),
        (None, None) => {}
    }
    let https = g.endpoints.iter().any(|e| e.trim().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")));
    if https || g.cacert.is_some() || g.cert.is_some() || g.key.is_some() {
        // Like etcdctl: the CA bundle given, else the system's roots.
        let mut tls = match &g.cacert {
            Some(ca) => TlsOptions::new().with_ca_pem(read(ca, "--cacert")?),
            None => TlsOptions::new().with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&g.cert, &g.key) {
            tls = tls.with_identity_pem(read(cert, "--cert")?, read(key, "--key")?);
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::error(format!("cannot read the {flag} file {}: {e}", path.display())))
}

/// How long the first request may take beyond `--dial-timeout`.
const FIRST_ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Connects to `--endpoints` with the flags' options.
pub(crate) async fn connect(g: &GlobalArgs) -> Result<Client, Failure> {
    let options = client_options(g)?;
    let endpoints: Vec<&str> = g.endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        return Err(Failure::error("--endpoints is empty: pass host:port[,host:port...]"));
    }
    // The connect timeout bounds each attempt; this bounds the whole (authentication included).
    let limit = g.dial_timeout + Duration::from_secs(10);
    match tokio::time::timeout(limit, Client::connect(endpoints, options)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(explain_wire(&e, "connecting", g)),
        Err(_) => Err(Failure::error(format!(
            "cannot connect to {} within {}: no answer. Is etcd running there? Check --endpoints",
            g.endpoints.join(","),
            format_duration(limit)
        ))),
    }
}

/// Connects and starts the session, giving up with the signal's exit code if SIGINT/SIGTERM
/// arrives first (the start of `lock` and `elect`).
pub(crate) async fn start(g: &GlobalArgs, trace: &CliTrace, signals: &mut Signals) -> Result<Session, Failure> {
    let client = tokio::select! {
        c = connect(g) => c?,
        sig = signals.recv() => return Err(Failure::silent(signal_exit_code(sig))),
    };
    tokio::select! {
        s = session(&client, g, trace) => s,
        sig = signals.recv() => Err(Failure::silent(signal_exit_code(sig))),
    }
}

/// Starts the session (a lease of `--ttl` seconds, kept alive) that the lock or candidacy binds to.
pub(crate) async fn session(client: &Client, g: &GlobalArgs, trace: &CliTrace) -> Result<Session, Failure> {
    let started = Instant::now();
    // The first request after connecting: bounded like the connection, so that an endpoint that
    // accepts connections but does not speak etcd's gRPC fails as fast as one that refuses them.
    let limit = g.dial_timeout + FIRST_ANSWER_MARGIN;
    let session = match tokio::time::timeout(limit, Session::builder(client).ttl(g.ttl).build()).await {
        Ok(s) => s.map_err(|e| explain(&e, "starting a session", g))?,
        Err(_) => {
            return Err(Failure::error(format!(
                "etcd at {} accepted the connection but did not answer within {}: is it an etcd client URL (not a peer or metrics port)? Check --endpoints, or raise --dial-timeout",
                g.endpoints.join(","),
                format_duration(limit)
            )));
        }
    };
    trace.line("session", "start", started.elapsed(), || {
        format!("LeaseGrant ttl {}s -> lease {:x}, kept alive every ttl/3", session.ttl().as_secs(), session.lease_id())
    });
    Ok(session)
}

/// Ends the session: revokes its lease (deleting whatever is still bound to it), within `limit`.
pub(crate) async fn close_session(session: &Session, limit: Duration, trace: &CliTrace) {
    let started = Instant::now();
    let result = tokio::time::timeout(limit, session.close()).await;
    trace.line("session", "close", started.elapsed(), || match &result {
        Ok(Ok(())) => format!("LeaseRevoke {:x} -> ok", session.lease_id()),
        Ok(Err(e)) => format!("LeaseRevoke {:x} -> error: {e}", session.lease_id()),
        Err(_) => format!("LeaseRevoke {:x} -> no answer; the lease expires by itself", session.lease_id()),
    });
}
