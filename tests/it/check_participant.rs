//! `saga-orchestrator check-participant` against real participants on loopback: the demo shop
//! (built on the Rust participant kit) passes every rule; a naive participant that is only
//! idempotent on its key fails the rules it breaks, and the command exits 1.

use crate::helpers::{start_binary_with, Kind, TestDb};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Runs the real binary's `check-participant` with `args`; answers its exit code and stdout.
async fn check(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
            .arg("check-participant")
            .args(&args)
            .output()
            .expect("the checker runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn verdict<'a>(report: &'a str, rule: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(rule))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no line for {rule} in:\n{report}"))
}

#[actix_web::test]
async fn the_demo_shop_on_the_rust_kit_passes_every_rule() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let (_bin, api, _lines) = start_binary_with(&db, &[("SAGA__DEMO__ENABLED", "true")]);
    let d = format!("{}/demo", api.base);
    let args = [
        ("--action", format!("{d}/balance/deduct")),
        ("--compensation", format!("{d}/balance/refund")),
        ("--try", format!("{d}/balance/reserve")),
        ("--confirm", format!("{d}/balance/commit")),
        ("--cancel", format!("{d}/balance/release")),
        ("--body", r#"{"user_id":7,"amount":10}"#.into()),
        (
            "--reject-body",
            r#"{"user_id":7,"amount":10,"refuse":true}"#.into(),
        ),
        ("--probe", format!("{d}/state")),
        ("--runs", "10".into()),
    ];
    let args = args
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
    let (code, report) = check(args).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report.matches("PASS ").count(), 11, "{report}");
}

/// A participant as many are written: it remembers answers by Idempotency-Key, and that is all.
/// A compensation refunds whatever the body says, a late action takes effect.
#[derive(Default)]
struct Naive {
    balance: i64,
    answers: HashMap<String, (u16, Value)>,
}

async fn naive(
    req: Request<hyper::body::Incoming>,
    shop: Arc<Mutex<Naive>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let amount = serde_json::from_slice::<Value>(&body).unwrap_or_default()["amount"]
        .as_i64()
        .unwrap_or(0);
    let mut s = shop.lock().unwrap();
    let (code, answer) = match (path.as_str(), key.as_ref().and_then(|k| s.answers.get(k))) {
        ("/probe", _) => (200, json!({"balance": s.balance})),
        (_, Some(stored)) => stored.clone(),
        ("/action", None) if amount > 100 => (409, json!({"error": "too much"})),
        ("/action", None) => {
            s.balance -= amount;
            (200, json!({"balance": s.balance}))
        }
        ("/compensation", None) => {
            s.balance += amount;
            (200, json!({"balance": s.balance}))
        }
        _ => (404, json!({"error": "no such path"})),
    };
    if let (Some(k), false) = (key, path == "/probe") {
        s.answers.insert(k, (code, answer.clone()));
    }
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}

#[actix_web::test]
async fn a_naive_participant_fails_the_rules_it_breaks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shop = Arc::new(Mutex::new(Naive {
        balance: 1000,
        ..Default::default()
    }));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let shop = shop.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let shop = shop.clone();
                    async move { Ok::<_, std::convert::Infallible>(naive(req, shop).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let base = format!("http://{addr}");
    let args = vec![
        "--action".into(),
        format!("{base}/action"),
        "--compensation".into(),
        format!("{base}/compensation"),
        "--body".into(),
        r#"{"amount":10}"#.into(),
        "--reject-body".into(),
        r#"{"amount":500}"#.into(),
        "--probe".into(),
        format!("{base}/probe"),
        "--runs".into(),
        "3".into(),
    ];
    let (code, report) = check(args).await;
    assert_eq!(code, 1, "{report}");
    // What the key alone gets right...
    assert_eq!(verdict(&report, "duplicate-action"), "PASS", "{report}");
    assert_eq!(
        verdict(&report, "duplicate-compensation"),
        "PASS",
        "{report}"
    );
    // ...and what it does not.
    assert_eq!(verdict(&report, "null-compensation"), "FAIL", "{report}");
    assert_eq!(verdict(&report, "hanging-action"), "FAIL", "{report}");
    assert_eq!(verdict(&report, "missing-headers"), "FAIL", "{report}");
    assert_eq!(verdict(&report, "repeated-rejection"), "FAIL", "{report}");
    assert_eq!(verdict(&report, "tcc-confirm-twice"), "SKIP", "{report}");
}

#[actix_web::test]
async fn usage_mistakes_exit_2() {
    let (code, _) = check(vec!["--action".into(), "http://127.0.0.1:1/a".into()]).await;
    assert_eq!(code, 2, "an action without its compensation");
    let (code, _) = check(vec![
        "--action".into(),
        "ftp://x".into(),
        "--compensation".into(),
        "http://127.0.0.1:1/c".into(),
    ])
    .await;
    assert_eq!(code, 2, "not an http URL");
}
