//! Free loopback ports, never handed out twice in one process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::error::{IoContext, Result};

/// Every port this process has handed out so far.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns `count` distinct free ports on 127.0.0.1.
///
/// A port is found by binding port 0 and dropping the listener, so another process may still grab
/// it before etcd binds it; cluster start-up retries with new ports when that happens.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>> {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = guard.get_or_insert_with(HashSet::new);
    // Keep the listeners open until all ports are picked, so the kernel cannot repeat one.
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "binding 127.0.0.1:0 to find a free port".to_owned())?;
        let port = listener.local_addr().ctx(|| "reading the local address of a listener".to_owned())?.port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() -> Result<()> {
        let mut all = free_ports(5)?;
        all.extend(free_ports(5)?);
        let unique: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len());
        Ok(())
    }
}
