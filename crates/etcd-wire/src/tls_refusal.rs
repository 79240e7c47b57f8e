//! Why a TLS server closed the connection, when it said so.
//!
//! In TLS 1.3 the client finishes its side of the handshake before the server has checked the
//! client's certificate. The server's verdict (`certificate required`, `bad certificate`, ...)
//! arrives as an alert just after; but the client has by then written its HTTP/2 preface, and
//! if that reaches a socket the server already closed, the reset discards the unread alert. The
//! caller then sees only "broken pipe" or "connection closed", depending on timing.
//!
//! So after a failed connect to an `https` endpoint, this module connects once more with the
//! same TLS settings, completes the handshake, writes nothing, and reads until the server speaks:
//! an alert is then always delivered, and its text is added to the connect error.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::options::TlsOptions;

/// The TLS error the server at `url` (an `https://host:port` URL) reports to a client with
/// these settings, if it reports one within `wait`.
pub(crate) async fn tls_refusal(url: &str, tls: &TlsOptions, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, probe(url, tls)).await.ok().flatten()
}

async fn probe(url: &str, tls: &TlsOptions) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16()?;
    let name = ServerName::try_from(tls.domain_name.clone().unwrap_or_else(|| host.clone())).ok()?;
    let connector = TlsConnector::from(Arc::new(config(tls)?));

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
    let mut stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        Err(e) => return Some(e.to_string()),
    };
    // The server may send its HTTP/2 settings first; an alert, if any, follows or replaces them.
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return None,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Some(e.to_string()),
            Err(_) => return None,
        }
    }
}

/// The client configuration tonic builds from the same settings (see `endpoint()`).
fn config(tls: &TlsOptions) -> Option<ClientConfig> {
    let provider =
        crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(crypto::ring::default_provider()));
    let builder = ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().ok()?;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.ca_pem {
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca).filter_map(Result::ok));
    }
    #[cfg(feature = "tls-webpki-roots")]
    if tls.webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    #[cfg(feature = "tls-native-roots")]
    if tls.native_roots {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match &tls.identity_pem {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().ok()?;
            let key = PrivateKeyDer::from_pem_slice(key).ok()?;
            builder.with_client_auth_cert(certs, key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols.push(b"h2".to_vec());
    Some(config)
}
