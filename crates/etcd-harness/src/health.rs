//! Minimal HTTP/1.0 client for etcd's `/health` and `/v3/maintenance/status` endpoints.
//!
//! HTTP/1.0 with `Connection: close` keeps the server from using chunked encoding, so the body
//! is simply everything after the header block.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Resolves the `host:port` of an `http://host:port[/...]` URL.
fn socket_addr(url: &str) -> io::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL {url}")))
}

/// Sends one request to `base_url` + `path` and reads the whole response.
pub(crate) fn request(
    base_url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let addr = socket_addr(base_url)?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "truncated HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad HTTP status line"))?;
    Ok(HttpResponse { status, body: body.to_owned() })
}

/// `true` if `GET /health` on `client_url` answers 200 with `"health":"true"`.
pub(crate) fn is_healthy(client_url: &str, timeout: Duration) -> bool {
    match request(client_url, "GET", "/health", None, timeout) {
        Ok(resp) => resp.status == 200 && json_field(&resp.body, "health") == Some("true"),
        Err(_) => false,
    }
}

/// The parts of a maintenance status response the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberStatus {
    /// This member's raft id.
    pub(crate) member_id: u64,
    /// The raft id of the leader this member knows about (0 = none).
    pub(crate) leader: u64,
    /// The member's raft term.
    pub(crate) raft_term: u64,
}

/// `POST /v3/maintenance/status` (the gRPC gateway, present in 3.4 and 3.5).
pub(crate) fn member_status(client_url: &str, timeout: Duration) -> Option<MemberStatus> {
    let resp = request(client_url, "POST", "/v3/maintenance/status", Some("{}"), timeout).ok()?;
    if resp.status != 200 {
        return None;
    }
    let num = |key| json_field(&resp.body, key).and_then(|v| v.parse::<u64>().ok());
    Some(MemberStatus {
        member_id: num("member_id")?,
        leader: num("leader").unwrap_or(0),
        raft_term: num("raft_term").unwrap_or(0),
    })
}

/// The value of the first `"key": value` in a JSON text, without quotes. Good enough for the
/// flat, well-known documents etcd returns; not a general JSON parser.
pub(crate) fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let mut from = 0;
    while let Some(pos) = json[from..].find(&needle) {
        let after = &json[from + pos + needle.len()..];
        from += pos + needle.len();
        let Some(value) = after.trim_start().strip_prefix(':') else {
            continue; // the key text appeared as a value
        };
        let value = value.trim_start();
        return if let Some(quoted) = value.strip_prefix('"') {
            quoted.find('"').map(|end| &quoted[..end])
        } else {
            let end =
                value.find(|c: char| c == ',' || c == '}' || c == ']' || c.is_whitespace()).unwrap_or(value.len());
            Some(&value[..end])
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let status = r#"{"header":{"cluster_id":"1","member_id":"123","revision":"1","raft_term":"2"},"version":"3.5.1","leader":"123"}"#;
        assert_eq!(json_field(status, "member_id"), Some("123"));
        assert_eq!(json_field(status, "leader"), Some("123"));
        assert_eq!(json_field(r#"{"health": true}"#, "health"), Some("true"));
        assert_eq!(json_field(r#"{"health":"true","reason":""}"#, "reason"), Some(""));
        assert_eq!(json_field(r#"{"a":"health","health":"false"}"#, "health"), Some("false"));
        assert_eq!(json_field("{}", "health"), None);
    }
}
