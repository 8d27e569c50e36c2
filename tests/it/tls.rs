//! https participants: trusted through `participant.ca_file` (a CA made in the test), and a
//! clear TLS error in `last_error` when the participant's certificate is not trusted. The
//! database plays no part here, so these run on SQLite only.

use crate::helpers::{spawn_app_with, test_settings, Kind, TestDb};
use crate::participant::Participant;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use std::sync::Arc;

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "saga-orchestrator test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

#[actix_web::test]
async fn a_saga_succeeds_over_https_with_a_private_ca() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let p = Participant::start_tls(pki.server.clone()).await;
    assert!(p.base.starts_with("https://"));
    let mut settings = test_settings(&db);
    settings.participant.ca_file = ca_file.display().to_string();
    settings.alerts.webhook_url = p.url("/alerts");
    let app = spawn_app_with(settings).await;
    let (code, _) = app
        .post(
            "/v1/sagas",
            &json!({"id": "tls-1", "name": "tls", "steps": [p.step("a"), p.step("b")]}),
        )
        .await;
    assert_eq!(code, 201);
    let v = app.wait_status("tls-1", &["succeeded"], 20).await;
    assert_eq!(v["steps"][0]["attempts"], 1, "{v}");
    assert_eq!(p.paths_of("tls-1"), ["/a/action", "/b/action"]);

    // The alert webhook trusts the same roots: a stuck saga's alert arrives over https.
    p.default_reply("/b/action", crate::participant::Reply::code(409));
    p.default_reply("/a/compensation", crate::participant::Reply::code(409));
    app.post(
        "/v1/sagas",
        &json!({"id": "tls-stuck", "name": "tls", "steps": [p.step("a"), p.step("b")]}),
    )
    .await;
    app.wait_status("tls-stuck", &["stuck"], 20).await;
    crate::helpers::eventually(20, "the alert posted over https", || {
        p.calls()
            .iter()
            .any(|c| c.path == "/alerts" && c.body["saga_id"] == "tls-stuck")
    })
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn an_untrusted_certificate_is_named_in_last_error() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let pki = pki();
    // No ca_file: the test CA is not among the platform's roots.
    let app = spawn_app_with(test_settings(&db)).await;
    let p = Participant::start_tls(pki.server.clone()).await;
    // No compensation: it could not get through TLS either (the saga would be stuck).
    let step = json!({"name": "a", "action": {"url": p.url("/a/action")},
                      "retry": {"max_attempts": 2, "initial_backoff_ms": 10}});
    let (code, _) = app
        .post(
            "/v1/sagas",
            &json!({"id": "tls-2", "name": "tls", "steps": [step]}),
        )
        .await;
    assert_eq!(code, 201);
    let v = app.wait_status("tls-2", &["compensated"], 20).await;
    let err = v["steps"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "last_error names the TLS failure: {err:?}"
    );
    assert!(p.calls().is_empty(), "no request got through the handshake");
    app.stop().await;
}
