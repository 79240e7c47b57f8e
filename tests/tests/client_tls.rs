//! TLS against real etcd: certificates made here with rcgen (a CA, a server certificate for
//! `127.0.0.1` and `localhost`, a client certificate), a harness cluster serving clients over TLS
//! with client-certificate auth, and the failures a client sees with the wrong CA or without a
//! client certificate.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_harness::{ClientTls, ClusterConfig, EtcdCluster};
use etcd_wire::{Client, ClientOptions, Error, GetOptions, PutOptions, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA, a server certificate and a client certificate, all PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

/// A certificate authority able to sign leaf certificates.
fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A leaf certificate for `names` (IP addresses become IP SANs), signed by `issuer`. No extended
/// key usage: usable for both server and client authentication.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, names: &[&str]) -> Result<(String, String)> {
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn pki() -> Result<Pki> {
    let ca = ca("etcd-wire test CA")?;
    Ok(Pki {
        ca: ca.pem(),
        server: leaf(&ca, "etcd server", &["127.0.0.1", "localhost"])?,
        client: leaf(&ca, "etcd client", &[])?,
    })
}

/// A single member serving clients over TLS, requiring client certificates when `client_auth`.
fn tls_cluster(pki: &Pki, client_auth: bool) -> Result<EtcdCluster> {
    let tls = ClientTls::new(&pki.server.0, &pki.server.1, &pki.ca).with_client_cert_auth(client_auth);
    Ok(EtcdCluster::start(ClusterConfig::default().with_client_tls(tls))?)
}

fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions::default().with_tls(tls).with_connect_timeout(Duration::from_secs(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_an_ip_address_endpoint() -> Result<()> {
    let pki = pki()?;
    let etcd = tls_cluster(&pki, true)?;
    let url = etcd.endpoints().remove(0);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let tls =
        TlsOptions::new().with_ca_pem(pki.ca.clone()).with_identity_pem(pki.client.0.clone(), pki.client.1.clone());
    let client = Client::connect([&url], options(tls.clone())).await?;
    client.put("secure", "yes", PutOptions::new()).await?;
    assert_eq!(client.get("secure", GetOptions::new()).await?.kvs[0].value, "yes");
    // Maintenance calls aimed at one endpoint use the same TLS settings.
    assert!(client.status_of(&url).await?.is_leader());

    // Without a scheme, an endpoint means https once TLS is configured.
    let bare = url.trim_start_matches("https://").to_owned();
    let client = Client::connect([&bare], options(tls.clone())).await?;
    assert_eq!(client.endpoints(), [url]);
    assert_eq!(client.get("secure", GetOptions::new()).await?.count, 1);

    // The certificate also names localhost.
    let port = bare.rsplit_once(':').map(|(_, p)| p.to_owned()).unwrap_or_default();
    let client = Client::connect([format!("localhost:{port}")], options(tls)).await?;
    assert_eq!(client.get("secure", GetOptions::new()).await?.count, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_rejected() -> Result<()> {
    let pki = pki()?;
    let etcd = tls_cluster(&pki, false)?;
    let other = ca("some other CA")?;
    let r = Client::connect(etcd.endpoints(), options(TlsOptions::new().with_ca_pem(other.pem()))).await;
    let err = r.err().ok_or_else(|| anyhow::anyhow!("connected with the wrong CA"))?;
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate") && text.contains("unknownissuer"), "the error names the problem: {err}");

    // The right CA, no client certificate needed without client-cert auth.
    let client = Client::connect(etcd.endpoints(), options(TlsOptions::new().with_ca_pem(pki.ca.clone()))).await?;
    client.put("k", "v", PutOptions::new()).await?;
    Ok(())
}

/// The webpki roots (Mozilla's public CAs) are a trust store of their own: alone, they refuse a
/// server whose certificate a private CA signed (naming the unknown issuer); added to that CA,
/// they take nothing away from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webpki_roots_trust_public_cas_only_beside_a_given_ca() -> Result<()> {
    let pki = pki()?;
    let etcd = tls_cluster(&pki, false)?;
    let public = TlsOptions::new().with_webpki_roots();
    assert!(public.uses_webpki_roots() && !public.uses_native_roots());
    let err = Client::connect(etcd.endpoints(), options(public.clone())).await.err().context("trusted a private CA")?;
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(chain(&err).contains("unknownissuer"), "the error names the unknown issuer: {err}");

    let both = public.with_ca_pem(pki.ca.clone());
    let client = Client::connect(etcd.endpoints(), options(both)).await?;
    client.put("roots", "both", PutOptions::new()).await?;
    assert_eq!(client.get("roots", None).await?.kvs[0].value, "both");
    Ok(())
}

/// The platform's root store (the test machine's system CAs) does not hold a private CA either;
/// trusting it beside the given CA connects. (The CLI's test `without_cacert_tls_trusts_the_system_roots`
/// shows the platform store itself being read, through `SSL_CERT_FILE`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_roots_are_a_trust_store_beside_a_given_ca() -> Result<()> {
    let pki = pki()?;
    let etcd = tls_cluster(&pki, false)?;
    let platform = TlsOptions::new().with_native_roots();
    assert!(platform.uses_native_roots() && !platform.uses_webpki_roots());
    let err =
        Client::connect(etcd.endpoints(), options(platform.clone())).await.err().context("trusted a private CA")?;
    assert!(chain(&err).contains("unknownissuer"), "the error names the unknown issuer: {err}");

    let client = Client::connect(etcd.endpoints(), options(platform.with_ca_pem(pki.ca.clone()))).await?;
    client.put("roots", "native", PutOptions::new()).await?;
    Ok(())
}

/// An error with all its sources, as one lower-case text.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_client_certificate_is_reported() -> Result<()> {
    let pki = pki()?;
    let etcd = tls_cluster(&pki, true)?;
    let tls = TlsOptions::new().with_ca_pem(pki.ca.clone());
    // TLS 1.3 completes the client's side of the handshake before the server checks the client
    // certificate, so the server's refusal (a `bad certificate` alert) can be lost to the reset
    // that meets the client's HTTP/2 preface: the connect error then reads "broken pipe" or
    // "connection closed" (3.4.23 did so in 4 runs of 5). The client asks once more, reading
    // before writing, so the error always names the refusal.
    let err =
        Client::connect(etcd.endpoints(), options(tls)).await.err().context("served without a client certificate")?;
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(chain(&err).contains("certificate"), "the error does not name the certificate: {err:#?}");
    Ok(())
}

#[tokio::test]
async fn a_bad_identity_is_a_tls_error() -> Result<()> {
    let pki = pki()?;
    let tls = TlsOptions::new().with_ca_pem(pki.ca).with_identity_pem("not a certificate", "not a key");
    let r = Client::connect(["https://127.0.0.1:1"], options(tls)).await;
    assert!(matches!(r, Err(Error::Tls { .. })), "a PEM that is not one fails before connecting: {r:?}");
    Ok(())
}
