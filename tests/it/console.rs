//! The console's side of the service: its files at `/ui` (open, embedded, locked down by CSP),
//! `GET /v1/whoami`, and the demo shop's fault switch that the browser test
//! (tests/console) breaks and mends a participant with.

use crate::helpers::{spawn_app_with, test_settings, Kind, TestDb};
use crate::security::{call, token};
use serde_json::json;

const VIEWER: &str = "sgo_viewer-token-for-console-tests";
const OPS: &str = "sgo_ops-token-for-console-tests";

#[actix_web::test]
async fn the_console_is_served_without_a_token_and_whoami_tells_what_a_token_may_do() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let mut s = test_settings(&db);
    s.auth.tokens = vec![
        token("viewer", VIEWER, &["read"]),
        token("ops", OPS, &["read", "write", "admin"]),
    ];
    let app = spawn_app_with(s).await;
    let base = app.base.clone();
    for (path, kind, holds) in [
        ("/ui", "text/html", "/ui/console.js"),
        ("/ui/", "text/html", "/ui/console.js"),
        ("/ui/sagas/order-1042", "text/html", "/ui/console.js"),
        ("/ui/console.js", "text/javascript", "function sagaPage"),
        ("/ui/console.css", "text/css", "prefers-color-scheme: dark"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (code, h, body) = call(&base, "GET", path, None, None).await;
        assert_eq!(code, 200, "{path} needs no token");
        let ct = h["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(body.as_str().unwrap().contains(holds), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "/ui");
    // Near misses of /ui are API paths: they need a token like any other.
    let (code, _, _) = call(&base, "GET", "/uix", None, None).await;
    assert_eq!(code, 401);

    let (code, _, v) = call(&base, "GET", "/v1/whoami", None, None).await;
    assert_eq!(code, 401, "{v}");
    let (code, _, v) = call(&base, "GET", "/v1/whoami", Some(VIEWER), None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v,
        json!({"name": "viewer", "scopes": ["read"], "tokens_required": true})
    );
    let (_, _, v) = call(&base, "GET", "/v1/whoami", Some(OPS), None).await;
    assert_eq!(v["scopes"], json!(["read", "write", "admin"]));
    let (code, _, v) = call(&base, "GET", "/v1/counts", Some(VIEWER), None).await;
    assert_eq!(code, 200, "{v}");
    let (code, _, _) = call(&base, "GET", "/v1/counts", None, None).await;
    assert_eq!(code, 401);
    app.stop().await;

    // Without tokens (loopback only) the caller may do everything.
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let app = spawn_app_with(test_settings(&db)).await;
    let (code, _, v) = call(&app.base, "GET", "/v1/whoami", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"name": null, "scopes": ["read", "write", "admin"], "tokens_required": false})
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_demo_shop_breaks_and_mends_an_endpoint_on_request() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let mut s = test_settings(&db);
    s.demo.enabled = true;
    let app = spawn_app_with(s).await;
    let base = app.base.clone();
    let demo = format!("{base}/demo");
    for (bad, why) in [
        (
            json!({"stock/nope": 503}),
            "no demo endpoint /demo/stock/nope",
        ),
        (
            json!({"stock/refund": 200}),
            "the status must be 400 to 599",
        ),
        (json!(["stock/refund"]), "expected an object"),
    ] {
        let (code, _, v) = call(&base, "POST", "/demo/faults", None, Some(&bad)).await;
        assert_eq!(code, 400, "{bad}");
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
    let (code, _, v) = call(
        &base,
        "POST",
        "/demo/faults",
        None,
        Some(&json!({"balance/deduct": 503})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let saga = |id: &str| {
        json!({"id": id, "name": "shop", "payload": {"user_id": 1, "amount": 10},
            "steps": [{"name": "pay", "action": {"url": format!("{demo}/balance/deduct")},
                "compensation": {"url": format!("{demo}/balance/refund")},
                "retry": {"max_attempts": 2, "initial_backoff_ms": 10}}]})
    };
    let (code, v) = app.post("/v1/sagas?wait_ms=10000", &saga("broken")).await;
    assert_eq!(code, 201);
    assert_eq!(v["status"], "compensated", "{v}");
    assert!(
        v["steps"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("fault injected by POST /demo/faults"),
        "{v}"
    );
    let (_, _, state) = call(&base, "GET", "/demo/state", None, None).await;
    assert_eq!(state["faults"], json!({"balance/deduct": 503}));
    assert_eq!(state["balances"]["1"], json!(null), "the fault ran nothing");
    let (code, _, _) = call(&base, "POST", "/demo/faults", None, Some(&json!({}))).await;
    assert_eq!(code, 200);
    let (_, v) = app.post("/v1/sagas?wait_ms=10000", &saga("mended")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let (_, _, state) = call(&base, "GET", "/demo/state", None, None).await;
    assert_eq!(state["faults"], json!({}));
    assert_eq!(state["balances"]["1"], 4990);
    app.stop().await;
}
