//! `TcpProxy` against a local echo server: forwarding, and each fault control.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use etcd_harness::TcpProxy;

/// An echo server on a free port, one thread per connection; runs until the test process ends.
fn echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn connect(proxy: &TcpProxy) -> Result<TcpStream> {
    let conn = TcpStream::connect(proxy.addr())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

/// Sends `msg` and reads the echo.
fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> Result<Vec<u8>> {
    conn.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    conn.read_exact(&mut got)?;
    Ok(got)
}

/// Whether the peer has closed `conn` (EOF or reset), waiting up to its read timeout.
fn closed(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn forwards_both_ways_and_reports_its_address() -> Result<()> {
    let upstream = echo_server()?;
    let proxy = TcpProxy::start(upstream)?;
    assert_eq!(proxy.upstream(), upstream);
    assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.addr().port()));
    let mut a = connect(&proxy)?;
    let mut b = connect(&proxy)?;
    assert_eq!(round_trip(&mut a, b"hello")?, b"hello");
    let big = vec![7u8; 300_000];
    assert_eq!(round_trip(&mut b, &big)?, big, "larger than one chunk");
    wait_for("two connections", || proxy.connection_count() == 2)?;
    assert_eq!(proxy.accepted_count(), 2);
    drop(a);
    wait_for("the closed connection to go", || proxy.connection_count() == 1)?;
    Ok(())
}

#[test]
fn drop_connections_closes_live_ones_and_accepts_new_ones() -> Result<()> {
    let proxy = TcpProxy::start(echo_server()?)?;
    let mut a = connect(&proxy)?;
    let mut b = connect(&proxy)?;
    round_trip(&mut a, b"x")?;
    round_trip(&mut b, b"y")?;
    proxy.drop_connections();
    assert!(closed(&mut a), "a is closed");
    assert!(closed(&mut b), "b is closed");
    assert_eq!(proxy.connection_count(), 0);
    let mut c = connect(&proxy)?;
    assert_eq!(round_trip(&mut c, b"again")?, b"again");
    Ok(())
}

#[test]
fn blackhole_holds_traffic_until_lifted() -> Result<()> {
    let proxy = TcpProxy::start(echo_server()?)?;
    let mut a = connect(&proxy)?;
    round_trip(&mut a, b"before")?;
    proxy.set_blackhole(true);
    a.write_all(b"during")?;
    a.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 6];
    let err = a.read(&mut buf).err().map(|e| e.kind());
    assert!(matches!(err, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "nothing comes back: {err:?}");
    // New connections are accepted, but nothing flows on them either.
    let mut b = connect(&proxy)?;
    b.write_all(b"new")?;
    b.set_read_timeout(Some(Duration::from_millis(200)))?;
    assert!(b.read(&mut buf).is_err());
    proxy.set_blackhole(false);
    a.set_read_timeout(Some(Duration::from_secs(5)))?;
    a.read_exact(&mut buf)?;
    assert_eq!(&buf, b"during", "held bytes are delivered after the partition heals");
    b.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut three = [0u8; 3];
    b.read_exact(&mut three)?;
    assert_eq!(&three, b"new");
    Ok(())
}

#[test]
fn delay_adds_latency_per_chunk() -> Result<()> {
    let proxy = TcpProxy::start(echo_server()?)?;
    let mut a = connect(&proxy)?;
    round_trip(&mut a, b"warm")?;
    proxy.set_delay(Duration::from_millis(400));
    let started = Instant::now();
    round_trip(&mut a, b"slow")?;
    // One delay each way.
    assert!(started.elapsed() >= Duration::from_millis(800), "took {:?}", started.elapsed());
    proxy.set_delay(Duration::ZERO);
    let started = Instant::now();
    round_trip(&mut a, b"fast")?;
    // Without the delay: well under the 800 ms, with room for a busy 2-core machine.
    assert!(started.elapsed() < Duration::from_millis(700), "took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn refuse_closes_new_connections_only() -> Result<()> {
    let proxy = TcpProxy::start(echo_server()?)?;
    let mut live = connect(&proxy)?;
    // Only once a round trip worked is the connection surely accepted by the proxy.
    round_trip(&mut live, b"first")?;
    proxy.set_refuse(true);
    let mut refused = connect(&proxy)?;
    assert!(closed(&mut refused), "a new connection is closed at once");
    assert_eq!(proxy.accepted_count(), 2, "refused connections count as accepted");
    assert_eq!(round_trip(&mut live, b"still")?, b"still", "live connections are untouched");
    proxy.set_refuse(false);
    let mut again = connect(&proxy)?;
    assert_eq!(round_trip(&mut again, b"ok")?, b"ok");
    Ok(())
}

#[test]
fn dropping_the_proxy_closes_everything() -> Result<()> {
    let proxy = TcpProxy::start(echo_server()?)?;
    let addr = proxy.addr();
    let mut a = connect(&proxy)?;
    round_trip(&mut a, b"x")?;
    drop(proxy);
    assert!(closed(&mut a));
    assert!(TcpStream::connect(addr).is_err(), "the port no longer accepts");
    Ok(())
}

#[test]
fn an_unreachable_upstream_closes_the_client() -> Result<()> {
    // A port nobody listens on: bind, read the port, close.
    let dead = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let proxy = TcpProxy::start(dead)?;
    let mut a = connect(&proxy)?;
    assert!(closed(&mut a));
    Ok(())
}
