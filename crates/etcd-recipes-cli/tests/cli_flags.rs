//! The command line itself: `--help` everywhere, one-line errors for bad flags, unreachable or
//! silent endpoints and authentication failures, `ETCD_ENDPOINTS`, `--user`/`--password`, and
//! `--cacert`/`--cert`/`--key` against a TLS etcd.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{SOON, bare, etcd, etcdctl, run, tool};
use etcd_harness::{ClientTls, ClusterConfig, EtcdCluster};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

fn one_line(stderr: &str) -> bool {
    stderr.trim().lines().count() == 1 && stderr.starts_with("etcd-recipes: ")
}

#[test]
fn every_subcommand_has_help_with_examples() -> Result<()> {
    let cases: &[&[&str]] = &[
        &["--help"],
        &["lock", "--help"],
        &["elect", "--help"],
        &["trace", "--help"],
        &["trace", "lock", "--help"],
        &["trace", "elect", "--help"],
        &["help", "lock"],
    ];
    for args in cases {
        let out = run(bare(args), SOON)?;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stdout.contains("Examples:"), "{args:?}: {}", out.stdout);
        assert!(out.stdout.contains("Usage: etcd-recipes"), "{args:?}");
    }
    let top = run(bare(&["--help"]), SOON)?.stdout;
    assert!(top.contains("Exit codes:") && top.contains("ETCD_ENDPOINTS"), "{top}");
    let lock = run(bare(&["lock", "--help"]), SOON)?.stdout;
    for flag in ["--strategy", "--timeout", "--try", "--endpoints", "--ttl", "--trace", "ETCD_LOCK_REV"] {
        assert!(lock.contains(flag), "lock --help lacks {flag}");
    }
    let out = run(bare(&["--version"]), SOON)?;
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("etcd-recipes "), "{out:?}");
    Ok(())
}

#[test]
fn bad_flags_are_one_line_errors() -> Result<()> {
    let cases: &[(&[&str], &[&str])] = &[
        (&["lock", "job", "--bogus"], &["unexpected argument '--bogus'", "see 'etcd-recipes lock --help'"]),
        (&["lock", "job", "--strategy", "fancy"], &["invalid value 'fancy'", "mutex, naive, lease, rpc"]),
        (&["lock", "job", "--timeout", "soon"], &["invalid duration \"soon\""]),
        (&["lock", "--try", "--timeout", "1s", "job"], &["cannot be used with"]),
        (&["elect", "e"], &["<PROPOSAL>", "see 'etcd-recipes elect --help'"]),
        (&["lok", "job"], &["unrecognized subcommand 'lok'", "'lock'"]),
        (&["--ttl", "0", "lock", "job"], &["--ttl"]),
        (&["--user", "root", "lock", "job"], &["no password for user \"root\"", "--password"]),
        (&["--cacert", "/no/such/ca.pem", "lock", "job"], &["cannot read the --cacert file /no/such/ca.pem"]),
        (&["--endpoints", "ftp://x:1", "lock", "job"], &["bad endpoint \"ftp://x:1\""]),
    ];
    for (args, wants) in cases {
        let out = run(bare(args), SOON)?;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(one_line(&out.stderr), "{args:?}: {:?}", out.stderr);
        for want in *wants {
            assert!(out.stderr.contains(want), "{args:?}: no {want:?} in {:?}", out.stderr);
        }
    }
    Ok(())
}

#[test]
fn unreachable_and_silent_endpoints_fail_fast_with_advice() -> Result<()> {
    // Nothing listens: refused at once.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let endpoint = format!("127.0.0.1:{port}");
    let out = run(bare(&["--endpoints", &endpoint, "--dial-timeout", "1s", "lock", "job", "--", "true"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains(&format!("cannot connect to {endpoint} within 1s")), "{:?}", out.stderr);
    assert!(out.stderr.contains("Is etcd running there? Check --endpoints"), "{:?}", out.stderr);

    // Something accepts connections but never answers: bounded by --dial-timeout (+5s), not 30s.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("127.0.0.1:{}", silent.local_addr()?.port());
    let out = run(bare(&["--endpoints", &endpoint, "--dial-timeout", "1s", "elect", "-l", "e"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains("Check --endpoints"), "{:?}", out.stderr);
    assert!(out.took < Duration::from_secs(15), "{out:?}");
    drop(silent);
    Ok(())
}

#[test]
fn endpoints_come_from_the_environment() -> Result<()> {
    let etcd = etcd()?;
    let mut c = bare(&["lock", "env-job", "--", "sh", "-c", "echo $ETCD_LOCK_KEY"]);
    c.env("ETCD_ENDPOINTS", etcd.endpoints().join(","));
    let out = run(c, SOON)?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("env-job/"), "{out:?}");
    Ok(())
}

#[test]
fn authentication_failures_say_what_to_do() -> Result<()> {
    let etcd = etcd()?;
    for args in [
        &["user", "add", "root", "--new-user-password=r00t", "--interactive=false"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(&etcd, args).output()?;
        anyhow::ensure!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = run(tool(&etcd, &["--user", "root", "--password", "wrong", "lock", "job", "--", "true"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains("authentication failed for user \"root\": check --user/--password"), "{out:?}");

    let out = run(tool(&etcd, &["lock", "job", "--", "true"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains("authentication enabled") && out.stderr.contains("--user"), "{out:?}");

    let out = run(tool(&etcd, &["--user", "root:r00t", "lock", "job", "--", "echo", "in"]), SOON)?;
    assert_eq!((out.code, out.stdout.as_str()), (0, "in"), "{out:?}");
    let mut c = tool(&etcd, &["--user", "root", "lock", "job", "--", "echo", "in"]);
    c.env("ETCD_PASSWORD", "r00t");
    let out = run(c, SOON)?;
    assert_eq!((out.code, out.stdout.as_str()), (0, "in"), "{out:?}");
    Ok(())
}

/// A CA, and a certificate for 127.0.0.1 signed by it that serves as both server and client
/// certificate (no extended key usage), all PEM.
fn pki() -> Result<(String, (String, String))> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, "etcd-recipes test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, "etcd");
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok((ca.pem(), (cert.pem(), key.serialize_pem())))
}

#[test]
fn tls_flags_reach_a_tls_etcd() -> Result<()> {
    let (ca, (cert, key)) = pki()?;
    let tls = ClientTls::new(cert, key, ca).with_client_cert_auth(true);
    let etcd = EtcdCluster::start(ClusterConfig::default().with_client_tls(tls))?;
    let (ca, cert, key) = etcd.client_tls_files().context("TLS files")?;
    let (ca, cert, key) = (ca.to_str().context("ca")?, cert.to_str().context("cert")?, key.to_str().context("key")?);

    let out =
        run(tool(&etcd, &["--cacert", ca, "--cert", cert, "--key", key, "lock", "tls-job", "--", "echo", "in"]), SOON)?;
    assert_eq!((out.code, out.stdout.as_str()), (0, "in"), "{out:?}");

    // Without a client certificate the server refuses: one line, pointing at the TLS flags.
    let out = run(tool(&etcd, &["--cacert", ca, "--dial-timeout", "2s", "lock", "tls-job", "--", "true"]), SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains("--cacert/--cert/--key"), "{:?}", out.stderr);
    Ok(())
}

/// Without `--cacert`, TLS trusts the system's roots, as etcdctl does: the test CA is not among
/// them (refused, pointing at the TLS flags), until `SSL_CERT_FILE` names it as the store.
#[test]
fn without_cacert_tls_trusts_the_system_roots() -> Result<()> {
    let (ca, (cert, key)) = pki()?;
    let etcd = EtcdCluster::start(ClusterConfig::default().with_client_tls(ClientTls::new(cert, key, ca)))?;
    let (ca, _, _) = etcd.client_tls_files().context("TLS files")?;
    let store = tempfile::tempdir()?;
    let (other_ca, _) = pki()?;
    let other_ca_file = store.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca)?;

    // A system store without the server's CA: refused, pointing at the TLS flags.
    let mut untrusted = tool(&etcd, &["--dial-timeout", "2s", "lock", "roots-job", "--", "true"]);
    untrusted.env("SSL_CERT_FILE", &other_ca_file).env_remove("SSL_CERT_DIR");
    let out = run(untrusted, SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(one_line(&out.stderr) && out.stderr.contains("--cacert/--cert/--key"), "{:?}", out.stderr);

    // An empty system store: said so, with the way out.
    let empty = store.path().join("empty");
    std::fs::create_dir(&empty)?;
    let mut nothing = tool(&etcd, &["--dial-timeout", "2s", "lock", "roots-job", "--", "true"]);
    nothing.env("SSL_CERT_DIR", &empty).env_remove("SSL_CERT_FILE");
    let out = run(nothing, SOON)?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        one_line(&out.stderr) && out.stderr.contains("no CA certificates") && out.stderr.contains("--cacert"),
        "{:?}",
        out.stderr
    );

    let mut trusted = tool(&etcd, &["lock", "roots-job", "--", "echo", "in"]);
    trusted.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    let out = run(trusted, SOON)?;
    assert_eq!((out.code, out.stdout.as_str()), (0, "in"), "{out:?}");
    Ok(())
}
