//! Security: bearer tokens and scopes on every route, `who` from the token's name, the refusal
//! to serve a public address without tokens, and `token new`.

use crate::helpers::{spawn_app_with, test_settings, Kind, Lines, TestDb};
use crate::participant::Participant;
use saga_orchestrator::auth::sha256_hex;
use saga_orchestrator::config::TokenSettings;
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::Duration;

const READER: &str = "sgo_reader-token-for-tests";
const WRITER: &str = "sgo_writer-token-for-tests";
const ADMIN: &str = "sgo_admin-token-for-tests";

pub(crate) fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenSettings {
    TokenSettings {
        name: name.into(),
        sha256: sha256_hex(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// One request with an optional bearer token: status, headers and JSON body.
pub(crate) async fn call(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[actix_web::test]
async fn tokens_guard_every_route_by_scope() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let mut s = test_settings(&db);
    s.auth.tokens = vec![
        token("dashboard", READER, &["read"]),
        token("checkout", WRITER, &["read", "write"]),
        token("oncall", ADMIN, &["read", "admin"]),
    ];
    let app = spawn_app_with(s).await;
    let base = app.base.clone();
    let p = Participant::start().await;
    p.default_reply("/s1/action", crate::participant::Reply::slow(5_000));
    let saga = json!({"id": "sec-1", "name": "n", "steps": [p.quick_step("s1")]});

    for (bearer, why) in [(None, "no token"), (Some("sgo_nobody"), "an unknown token")] {
        let (code, h, v) = call(&base, "GET", "/v1/sagas", bearer, None).await;
        assert_eq!(code, 401, "{why}: {v}");
        assert_eq!(
            v["type"], "urn:saga-orchestrator:problem:unauthorized",
            "{v}"
        );
        assert_eq!(h["www-authenticate"], "Bearer realm=\"saga-orchestrator\"");
    }
    let (code, _, v) = call(&base, "POST", "/v1/sagas", Some(READER), Some(&saga)).await;
    assert_eq!(code, 403, "read cannot start: {v}");
    assert_eq!(v["type"], "urn:saga-orchestrator:problem:forbidden");
    assert!(v["detail"].as_str().unwrap().contains("write"), "{v}");
    let (code, _, v) = call(&base, "POST", "/v1/sagas", Some(WRITER), Some(&saga)).await;
    assert_eq!(code, 201, "{v}");
    let (code, _, _) = call(&base, "GET", "/v1/sagas/sec-1", Some(READER), None).await;
    assert_eq!(code, 200);
    let (code, _, v) = call(&base, "POST", "/v1/sagas/sec-1/abort", Some(WRITER), None).await;
    assert_eq!(code, 403, "write cannot abort: {v}");
    let (code, _, v) = call(&base, "POST", "/v1/sagas/sec-1/abort", Some(ADMIN), None).await;
    assert_eq!(code, 202, "{v}");
    let (_, _, v) = call(
        &base,
        "GET",
        "/v1/sagas/sec-1?include=attempts",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        v["operator_actions"][0]["by"], "oncall",
        "who is the token's name: {v}"
    );
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (code, _, _) = call(&base, "GET", open, None, None).await;
        assert_eq!(code, 200, "{open} is open");
    }
    // Every documented operation needs the scope of its kind: a start write, an operator
    // action admin, the rest read; a stranger learns nothing of unknown paths or methods.
    let (_, _, doc) = call(&base, "GET", "/openapi.json", None, None).await;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let open = ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str());
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let url = path.replace("{id}", "sec-1");
            let needs = match (method.as_str(), path.as_str()) {
                (_, _) if open => None,
                ("POST", "/v1/sagas") => Some("write"),
                // DTM's: its client's own abort is part of a transaction, as a start is.
                ("POST", "/api/dtmsvr/forceStop" | "/api/dtmsvr/resetNextCronTime") => {
                    Some("admin")
                }
                ("POST", p) if p.starts_with("/api/dtmsvr/") => Some("write"),
                ("POST", p) if p.ends_with("/retry") || p.ends_with("/abort") => Some("admin"),
                _ => Some("read"),
            };
            let (code, _, v) = call(&base, &method, &url, None, Some(&json!({}))).await;
            assert_eq!(
                code == 401,
                needs.is_some(),
                "{method} {path} without a token: {v}"
            );
            let (code, _, v) = call(&base, &method, &url, Some(READER), Some(&json!({}))).await;
            let refused = code == 403
                && v["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains(needs.unwrap_or("-"));
            assert_eq!(
                refused,
                matches!(needs, Some("write" | "admin")),
                "{method} {path}: {v}"
            );
        }
    }
    for (method, url, known) in [("GET", "/nowhere", 404), ("DELETE", "/v1/sagas", 405)] {
        let (code, _, _) = call(&base, method, url, None, None).await;
        assert_eq!(code, 401, "{method} {url}: a stranger learns nothing");
        let (code, _, _) = call(&base, method, url, Some(READER), None).await;
        assert_eq!(code, known, "{method} {url} to a reader");
    }
    app.stop().await;
}

#[actix_web::test]
async fn metrics_can_need_a_scope() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let mut s = test_settings(&db);
    s.auth.tokens = vec![token("prometheus", READER, &["read"])];
    s.auth.metrics_scope = "read".into();
    let app = spawn_app_with(s).await;
    let (code, _, _) = call(&app.base, "GET", "/metrics", None, None).await;
    assert_eq!(code, 401);
    let (code, _, _) = call(&app.base, "GET", "/metrics", Some(READER), None).await;
    assert_eq!(code, 200);
    app.stop().await;
}

/// Starts the real binary with `args` and `env`; answers it, its address once it is bound
/// (`None` if it exits first) and every stdout line it writes, as they come.
fn start(args: &[&str], env: &[(&str, &str)]) -> (crate::helpers::Binary, Option<String>, Lines) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = crate::helpers::Binary::from(cmd.spawn().unwrap());
    let out = child.stdout.take().unwrap();
    let lines: Lines = Default::default();
    let keep = lines.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(b) = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["bound"].as_str().map(String::from))
            {
                let _ = tx.send(b);
            }
            keep.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .map(|b| format!("http://{b}"));
    (child, addr, lines)
}

#[actix_web::test]
async fn a_public_address_without_tokens_needs_allow_anonymous() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let env = [
        ("SAGA__SERVER__BIND", "0.0.0.0:0"),
        ("SAGA__DATABASE__URL", db.url.as_str()),
    ];
    let (mut bin, addr, _) = start(&["serve"], &env);
    assert!(addr.is_none(), "it must not serve");
    let status = bin.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(bin.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("auth.allow_anonymous"), "{err}");

    let env = [env[0], env[1], ("SAGA__AUTH__ALLOW_ANONYMOUS", "true")];
    let (_bin, addr, _) = start(&["serve"], &env);
    let addr = addr
        .expect("it serves when told to")
        .replace("0.0.0.0", "127.0.0.1");
    let (code, _, _) = call(&addr, "GET", "/v1/sagas", None, None).await;
    assert_eq!(code, 200);
}

#[actix_web::test]
async fn a_new_token_works_and_is_never_logged() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
        .args(["token", "new", "ci-robot", "--scopes", "read,write"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token line")
        .to_string();
    let config: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[auth.tokens]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(config.contains(&sha256_hex(&secret)) && !config.contains(&secret));

    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let env = [
        ("SAGA__SERVER__BIND", "127.0.0.1:0"),
        ("SAGA__DATABASE__URL", db.url.as_str()),
        ("SAGA__LOG__LEVEL", "info"),
    ];
    let (mut bin, addr, lines) = start(&["--config", path.to_str().unwrap(), "serve"], &env);
    let addr = addr.expect("it starts with the printed lines");
    let p = Participant::start().await;
    let saga = json!({"id": "tok-1", "name": "n", "steps": [p.quick_step("s1")]});
    let (code, _, v) = call(
        &addr,
        "POST",
        "/v1/sagas?wait_ms=5000",
        Some(&secret),
        Some(&saga),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (code, _, _) = call(&addr, "POST", "/v1/sagas/tok-1/retry", Some(&secret), None).await;
    assert_eq!(code, 403, "no admin scope");
    let ids = json!({"ids": ["tok-1"]});
    let (code, _, _) = call(&addr, "POST", "/v1/bulk/retry", Some(&secret), Some(&ids)).await;
    assert_eq!(code, 403, "no admin scope for a bulk action either");
    let who = "\"who\":\"ci-robot\"";
    crate::helpers::eventually(10, "an access-log line with who", || {
        lines.lock().unwrap().iter().any(|l| l.contains(who))
    })
    .await;
    let _ = bin.kill();
    let _ = bin.wait();
    let logged = lines.lock().unwrap();
    assert!(
        logged.iter().all(|l| !l.contains(&secret)),
        "the token never appears in a log line"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
        .args(["token", "new", "x", "--scopes", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown scope is refused");
}

#[actix_web::test]
async fn a_saga_that_would_call_metadata_addresses_is_refused_with_pointers() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let app = spawn_app_with(test_settings(&db)).await;
    let body = json!({"name": "n", "steps": [
        {"name": "a", "action": {"url": "http://169.254.169.254/latest/meta-data/"},
         "compensation": {"url": "http://[fe80::1]:8080/undo"}},
        {"name": "b", "action": {"url": "http://127.0.0.1:9/ok"}}
    ]});
    let (code, v) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 400, "{v}");
    let errs = v["errors"].as_array().unwrap();
    let pointers: Vec<&str> = errs
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/steps/0/action/url", "/steps/0/compensation/url"],
        "{v}"
    );
    assert!(
        errs.iter().all(|e| e["detail"]
            .as_str()
            .unwrap()
            .starts_with("blocked by policy")),
        "{v}"
    );
    let (_, list) = app.get("/v1/sagas").await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing recorded: {list}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_policy_is_applied_again_to_resolved_addresses_at_call_time() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let p = Participant::start().await;
    let mut s = test_settings(&db);
    // A name that passes when the saga is accepted but resolves to a denied address (what DNS
    // rebinding does): the call is refused, not sent, and not retried.
    s.participant.deny = vec!["127.0.0.0/8".into(), "::1".into()];
    let app = spawn_app_with(s).await;
    let mut step = p.quick_step("s1");
    for phase in ["action", "compensation"] {
        let url = p
            .url(&format!("/s1/{phase}"))
            .replace("127.0.0.1", "localhost");
        step[phase]["url"] = json!(url);
    }
    let body = json!({"id": "rebind-1", "name": "n", "steps": [step]});
    let (code, v) = app.post("/v1/sagas?wait_ms=10000", &body).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], "compensated", "{v}");
    let err = v["steps"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.starts_with("blocked by policy") && err.contains("participant.deny"),
        "{v}"
    );
    let (_, full) = app.get("/v1/sagas/rebind-1?include=attempts").await;
    assert_eq!(full["steps"][0]["attempts"], 1, "not retried: {full}");
    assert!(
        p.calls_of("rebind-1").is_empty(),
        "nothing reached the participant"
    );
    // A literal address outside the allow list is refused when the saga is accepted.
    app.stop().await;
    let mut s = test_settings(&db);
    s.participant.allow = vec!["127.0.0.1".into()];
    let app = spawn_app_with(s).await;
    let body =
        json!({"name": "n", "steps": [{"name": "a", "action": {"url": "http://127.0.0.2:9/a"}}]});
    let (code, v) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not in participant.allow"),
        "{v}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_alert_webhook_to_a_refused_address_stops_start_up() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let mut s = test_settings(&db);
    s.alerts.webhook_url = "http://169.254.169.254/hook".into();
    let err = saga_orchestrator::startup::Application::build(s)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("alerts.webhook_url: blocked by policy"),
        "{err}"
    );
}

#[actix_web::test]
async fn secret_headers_reach_the_participant_and_show_nowhere_else() {
    let p = Participant::start().await;
    // Step b refuses, step a's compensation refuses too: the saga is stuck and alerts.
    p.default_reply("/b/action", crate::participant::Reply::refuse(0));
    p.default_reply("/a/compensation", crate::participant::Reply::refuse(0));
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let hook = p.url("/hook");
    std::fs::write(
        &path,
        format!("[participant]\nsecret_headers = [\"X-Vault-Token\"]\n[alerts]\nwebhook_url = {hook:?}\n"),
    )
    .unwrap();
    let env = [
        ("SAGA__SERVER__BIND", "127.0.0.1:0"),
        ("SAGA__DATABASE__URL", db.url.as_str()),
        (
            "SAGA__LOG__LEVEL",
            "debug,sqlx=warn,sea_orm=warn,hyper_util=info,reqwest=info,h2=info",
        ),
    ];
    let (_bin, addr, lines) = start(&["--config", path.to_str().unwrap(), "serve"], &env);
    let addr = addr.expect("it starts");
    let secrets = [
        "s3cr3t-auth",
        "s3cr3t-key",
        "s3cr3t-cookie",
        "s3cr3t-vault",
        "s3cr3t-proxy",
    ];
    let mut a = p.step("a");
    a["action"]["headers"] = json!({"Authorization": "Bearer s3cr3t-auth", "X-Api-Key": "s3cr3t-key",
        "Cookie": "sid=s3cr3t-cookie", "X-Vault-Token": "s3cr3t-vault", "X-Trace": "visible-1"});
    a["compensation"]["headers"] = json!({"Proxy-Authorization": "Basic s3cr3t-proxy"});
    let body = json!({"id": "sec-h", "name": "n", "steps": [a, p.step("b")]});
    let (code, _, v) = call(&addr, "POST", "/v1/sagas?wait_ms=10000", None, Some(&body)).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], "stuck", "{v}");
    let sent = p.calls_of("sec-h");
    assert_eq!(
        sent[0].header("authorization"),
        "Bearer s3cr3t-auth",
        "sent as given"
    );
    assert_eq!(sent[0].header("x-vault-token"), "s3cr3t-vault");

    let (_, _, view) = call(
        &addr,
        "GET",
        "/v1/sagas/sec-h?include=attempts,request",
        None,
        None,
    )
    .await;
    let headers = &view["request"]["steps"][0]["action"]["headers"];
    for h in ["Authorization", "X-Api-Key", "Cookie", "X-Vault-Token"] {
        assert_eq!(headers[h], "***", "{h}: {view}");
    }
    assert_eq!(headers["X-Trace"], "visible-1");
    assert_eq!(
        view["request"]["steps"][0]["compensation"]["headers"]["Proxy-Authorization"],
        "***"
    );
    crate::helpers::eventually(10, "the alert", || {
        p.calls().iter().any(|c| c.path == "/hook")
    })
    .await;
    let (_, _, list) = call(&addr, "GET", "/v1/sagas", None, None).await;
    let (_, _, metrics) = call(&addr, "GET", "/metrics", None, None).await;
    let alert: Vec<String> = p
        .calls()
        .iter()
        .filter(|c| c.path == "/hook")
        .map(|c| c.body.to_string())
        .collect();
    let logged = lines.lock().unwrap().join("\n");
    assert!(logged.contains("sec-h"), "the logs are about this saga");
    for (what, text) in [
        ("the saga view", view.to_string()),
        ("the listing", list.to_string()),
        ("/metrics", metrics.to_string()),
        ("the alert", alert.join("\n")),
        ("the logs", logged),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "{s} shows in {what}");
        }
    }
}

/// Runs on every database: header values are sealed in the log, opened to be sent, and survive a
/// restart with the same key.
async fn headers_are_encrypted_at_rest_and_sent_in_clear(db: TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let p = Participant::start().await;
    p.default_reply("/a/action", crate::participant::Reply::code(503));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef".repeat(4)).unwrap();
    let settings = || {
        let mut s = test_settings(&db);
        s.secrets.key_file = key.to_str().unwrap().into();
        s
    };
    let app = spawn_app_with(settings()).await;
    let mut a = p.step("a");
    a["action"]["headers"] =
        json!({"Authorization": "Bearer s3cr3t-at-rest", "X-Trace": "visible-2"});
    a["retry"] = json!({"max_attempts": 100, "initial_backoff_ms": 50, "max_backoff_ms": 50});
    let body = json!({"id": "sealed-1", "name": "n", "steps": [a]});
    let (code, v) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 201, "{v}");
    crate::helpers::eventually(10, "a first call", || !p.calls_of("sealed-1").is_empty()).await;
    let (_, view) = app.get("/v1/sagas/sealed-1?include=request").await;
    let h = &view["request"]["steps"][0]["action"]["headers"];
    assert_eq!(
        (h["Authorization"].as_str(), h["X-Trace"].as_str()),
        (Some("***"), Some("visible-2")),
        "{view}"
    );
    app.stop().await;

    // What a dump of the log would show.
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT request, definition FROM sagas",
        ))
        .await
        .unwrap()
        .unwrap();
    let request: serde_json::Value = row.try_get("", "request").unwrap();
    let definition: String = row.try_get("", "definition").unwrap();
    let _ = conn.close().await;
    // Packed (zlib, docs/saga-log.md) or not, the text within is what a dump would reveal.
    let text = |c: &str| saga_orchestrator::store::unpack(c).unwrap().into_owned();
    let request = match request {
        serde_json::Value::String(s) => text(&s),
        other => other.to_string(),
    };
    for column in [request, text(&definition)] {
        assert!(
            !column.contains("s3cr3t-at-rest") && !column.contains("visible-2"),
            "{column}"
        );
        assert!(column.contains("enc:v1:"), "{column}");
    }

    // A restart with the same key resumes the saga and still sends the header in clear.
    p.default_reply("/a/action", crate::participant::Reply::ok());
    let app = spawn_app_with(settings()).await;
    let v = app.wait_status("sealed-1", &["succeeded"], 20).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let calls = p.calls_of("sealed-1");
    assert!(calls.len() >= 2);
    assert!(calls
        .iter()
        .all(|c| c.header("authorization") == "Bearer s3cr3t-at-rest"));
    app.stop().await;
}

crate::on_every_db!(headers_are_encrypted_at_rest_and_sent_in_clear);

/// A named definition's header values are sealed at rest like a saga's, shown as `***` to
/// readers, and sent in clear by the sagas started from it.
async fn definition_headers_are_sealed_at_rest_and_masked(db: TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let p = Participant::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef".repeat(4)).unwrap();
    let mut s = test_settings(&db);
    s.secrets.key_file = key.to_str().unwrap().into();
    let app = spawn_app_with(s).await;
    let mut a = p.step("a");
    a["action"]["headers"] =
        json!({"Authorization": "Bearer def-s3cret", "X-Tenant": {"$payload": "/t"}});
    let r = app
        .client
        .put(format!("{}/v1/definitions/secretive", app.base))
        .json(&json!({"steps": [a]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (_, v) = app.get("/v1/definitions/secretive").await;
    let h = &v["definition"]["steps"][0]["action"]["headers"];
    assert_eq!(h["Authorization"], "***", "{v}");
    assert_eq!(
        h["X-Tenant"],
        json!({"$payload": "/t"}),
        "references are shown"
    );
    let (code, s) = app
        .post(
            "/v1/sagas?wait_ms=10000",
            &json!({"definition": "secretive", "id": "sd-1", "payload": {"t": "acme"}}),
        )
        .await;
    assert_eq!(
        (code, s["status"].as_str()),
        (201, Some("succeeded")),
        "{s}"
    );
    let call = &p.calls_of("sd-1")[0];
    assert_eq!(
        (call.header("authorization"), call.header("x-tenant")),
        ("Bearer def-s3cret", "acme")
    );
    app.stop().await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT document FROM saga_definitions",
        ))
        .await
        .unwrap()
        .unwrap();
    let document: String = row.try_get("", "document").unwrap();
    let _ = conn.close().await;
    assert!(
        !document.contains("def-s3cret") && document.contains("enc:v1:"),
        "{document}"
    );
}

crate::on_every_db!(definition_headers_are_sealed_at_rest_and_masked);

#[actix_web::test]
async fn documented_request_limits_are_answered_with_pointers() {
    let db = TestDb::new(Kind::Sqlite).await.unwrap();
    let app = spawn_app_with(test_settings(&db)).await;
    let headers: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let deep = (0..40).fold(json!(1), |v, _| json!({"a": v}));
    let body = json!({"name": "n", "payload": deep, "steps": [
        {"name": "a", "action": {"url": format!("http://127.0.0.1:9/{}", "a".repeat(2100)), "headers": headers}}
    ]});
    let (code, v) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 400, "{v}");
    let pointers: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/payload", "/steps/0/action/url", "/steps/0/action/headers"],
        "{v}"
    );
    app.stop().await;
}
