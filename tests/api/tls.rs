//! HTTPS end to end: the real binary with a certificate made in the test, and the
//! command line trusting the test's CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::helpers::{dynamodb_endpoint, fencelock, fencelock_cli, finished, spawn_binary};

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1: the CA's PEM, the
/// certificate's PEM and the certificate's key's PEM.
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fencelock test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, server.pem(), key.serialize_pem())
}

#[tokio::test]
async fn the_server_speaks_https_and_the_command_line_trusts_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let [ca_path, cert_path, key_path] =
        ["ca.pem", "cert.pem", "key.pem"].map(|file| dir.path().join(file));
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let (mut server, base) = spawn_binary(
        dynamodb_endpoint(),
        &[
            ("FENCELOCK_TLS_CERT", cert_path.to_str().unwrap()),
            ("FENCELOCK_TLS_KEY", key_path.to_str().unwrap()),
        ],
    )
    .await;
    assert!(base.starts_with("https://"));
    let ca = ca_path.to_str().unwrap();

    let acquired = fencelock_cli(&base, &["acquire", "job", "--ca", ca, "--json"]).await;
    assert_eq!(acquired.code, Some(0), "{acquired:?}");
    let fence = acquired.json()["fence"].as_u64().unwrap();

    let status = finished(
        fencelock(&base)
            .args(["status", "job", "--json"])
            .env("FENCELOCK_CA", ca)
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(status.json()["fence"], fence, "{status:?}");

    // A certificate signed by a CA nobody trusts is refused.
    let untrusted = fencelock_cli(&base, &["status", "job"]).await;
    assert_eq!(untrusted.code, Some(69), "{untrusted:?}");
    assert!(untrusted.stderr.contains("cannot reach"), "{untrusted:?}");

    // Plain HTTP gets no answer from the HTTPS port.
    let plain = base.replace("https://", "http://");
    let refused = fencelock_cli(&plain, &["status", "job"]).await;
    assert_eq!(refused.code, Some(69), "{refused:?}");

    let _ = server.kill();
    let _ = server.wait();
}
