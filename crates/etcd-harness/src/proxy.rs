//! [`TcpProxy`]: a loopback TCP forwarder with fault controls, for putting a client's connection to
//! etcd through drops, partitions, latency and refusals.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long connecting to the upstream may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a paused (blackholed) copy thread looks at the controls again.
const POLL: Duration = Duration::from_millis(10);
/// Bytes read at once.
const CHUNK: usize = 64 * 1024;

/// A TCP proxy on `127.0.0.1:<free port>` that forwards every connection to one upstream address,
/// with controls to inject faults while connections are live.
///
/// Each accepted connection gets its own upstream connection and two copy threads (one per
/// direction); one more thread accepts. Controls take `&self` and act at once, from any thread:
///
/// * [`drop_connections`](Self::drop_connections): close every live connection (both sides);
///   new connections are accepted as usual.
/// * [`set_blackhole`](Self::set_blackhole): a partition. Connections are still accepted but no
///   byte is forwarded in either direction; bytes already read are held (not lost) and delivered
///   when the blackhole is lifted, like TCP after a partition heals.
/// * [`set_delay`](Self::set_delay): latency added before forwarding each chunk, both directions.
/// * [`set_reply_delay`](Self::set_reply_delay): latency added to the upstream's answers only, so a
///   request reaches the server at once and its answer arrives late: an *unknown outcome* for a
///   caller whose timeout is shorter.
/// * [`set_refuse`](Self::set_refuse): close new connections as soon as they are accepted.
///
/// Dropping the proxy stops accepting and closes every connection. Synchronous (`std::thread`);
/// usable from async tests, as no call blocks for long.
///
/// ```no_run
/// use etcd_harness::{EtcdCluster, TcpProxy};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let etcd = EtcdCluster::single()?;
/// let upstream = etcd.endpoints()[0].trim_start_matches("http://").to_owned();
/// let proxy = TcpProxy::start(upstream.as_str())?;
/// // Connect the client under test to proxy.url(), then:
/// proxy.drop_connections();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle and its threads.
#[derive(Debug, Default)]
struct Shared {
    stopped: AtomicBool,
    blackhole: AtomicBool,
    refuse: AtomicBool,
    delay_nanos: AtomicU64,
    reply_delay_nanos: AtomicU64,
    accepted: AtomicU64,
    conns: Mutex<Vec<Arc<Conn>>>,
}

/// One proxied connection: both sockets (clones, for shutting them down) and whether it ended.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    closed: AtomicBool,
    /// Copy directions still running.
    running: AtomicUsize,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (`"127.0.0.1:2379"`, a [`SocketAddr`], ...; the first address
    /// it resolves to is used) on a free port of 127.0.0.1.
    pub fn start(upstream: impl ToSocketAddrs) -> io::Result<TcpProxy> {
        let upstream = upstream
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the upstream address resolves to nothing"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("tcp-proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, upstream, &shared))?
        };
        Ok(TcpProxy { addr, upstream, shared, accept: Some(accept) })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the proxy as an etcd client URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every live connection, both towards the client and towards the upstream. New
    /// connections are accepted as before.
    pub fn drop_connections(&self) {
        let conns = std::mem::take(&mut *self.shared.lock_conns());
        for conn in conns {
            conn.close();
        }
    }

    /// Turns the blackhole (a partition) on or off: while on, nothing is forwarded.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Sets the latency added before each forwarded chunk (zero for none).
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Sets the latency added before each chunk forwarded from the upstream to the client only
    /// (zero for none), on top of [`set_delay`](Self::set_delay).
    pub fn set_reply_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.reply_delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// While on, new connections are closed as soon as they are accepted.
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// The number of connections accepted since the proxy started, refused ones included: it
    /// grows when a client reconnects.
    pub fn accepted_count(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The number of connections being forwarded now.
    pub fn connection_count(&self) -> usize {
        let mut conns = self.shared.lock_conns();
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        conns.len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees `stopped` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.drop_connections();
    }
}

impl Shared {
    fn lock_conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latency to add before forwarding a chunk in one direction.
    fn delay(&self, to_client: bool) -> Duration {
        let reply = if to_client { self.reply_delay_nanos.load(Ordering::SeqCst) } else { 0 };
        Duration::from_nanos(self.delay_nanos.load(Ordering::SeqCst).saturating_add(reply))
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        if let Err(error) = forward(client, upstream, shared) {
            tracing::debug!(%error, %upstream, "tcp proxy could not forward a connection");
        }
    }
}

/// Connects `client` to the upstream and starts its two copy threads.
fn forward(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    let server = match TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(error) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(error);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Arc::new(Conn {
        client: client.try_clone()?,
        upstream: server.try_clone()?,
        closed: AtomicBool::new(false),
        running: AtomicUsize::new(2),
    });
    {
        let mut conns = shared.lock_conns();
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        conns.push(conn.clone());
    }
    let up = (client.try_clone()?, server.try_clone()?);
    for ((from, to), to_client) in [(up, false), ((server, client), true)] {
        let (shared, conn) = (shared.clone(), conn.clone());
        thread::Builder::new()
            .name("tcp-proxy-copy".to_owned())
            .spawn(move || copy(from, to, to_client, &shared, &conn))?;
    }
    Ok(())
}

/// Copies `from` to `to` (towards the client if `to_client`) until either side closes, obeying
/// the controls.
fn copy(mut from: TcpStream, mut to: TcpStream, to_client: bool, shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; CHUNK];
    let live = || !conn.closed.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst);
    let wait_while_blackholed = || {
        while shared.blackhole.load(Ordering::SeqCst) && live() {
            thread::sleep(POLL);
        }
    };
    let clean_end = loop {
        wait_while_blackholed();
        let n = match from.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(_) => break false,
        };
        let delay = shared.delay(to_client);
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        wait_while_blackholed();
        if !live() || to.write_all(&buf[..n]).is_err() {
            break false;
        }
    };
    if clean_end && live() {
        // End of one direction: pass the half-close on; the other direction goes on.
        let _ = to.shutdown(Shutdown::Write);
    } else {
        conn.close();
    }
    if conn.running.fetch_sub(1, Ordering::SeqCst) == 1 {
        conn.close();
    }
}
