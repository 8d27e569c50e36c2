//! The saga-mode contract of docs/api.md over HTTP: order, headers, retries, compensation, history.

use crate::helpers::{spawn_app, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};
use std::time::Duration;

fn saga(id: &str, steps: Vec<Value>) -> Value {
    json!({"id": id, "name": "place_order", "payload": {"order_id": 1042, "amount": 1999}, "steps": steps})
}

on_every_db!(
    success_calls_actions_in_order_with_protocol_headers,
    business_failure_compensates_in_reverse_order,
    unknown_outcomes_retry_with_backoff_and_a_stable_key,
    exhausted_retries_compensate_the_step_that_may_have_acted,
    hang_and_dropped_connection_are_unknown_outcomes,
    idempotent_start_and_conflict,
    ids_are_byte_exact,
    the_exact_id_migration_fixes_existing_tables,
    long_poll_until_terminal,
    listing_pages_newest_first,
);

async fn success_calls_actions_in_order_with_protocol_headers(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let mut s3 = p.step("s3");
    s3["action"]["body"] = json!({"sku": "A1"});
    s3["action"]["headers"] = json!({"X-Tenant": "acme"});
    let r = app
        .client
        .post(format!("{}/v1/sagas?wait_ms=10000", app.base))
        .json(&saga("ok-1", vec![p.step("s1"), p.step("s2"), s3]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["location"], "/v1/sagas/ok-1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["mode"], "saga");
    assert!(v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "succeeded" && s["attempts"] == 1));
    assert_eq!(
        p.paths_of("ok-1"),
        vec!["/s1/action", "/s2/action", "/s3/action"]
    );
    let calls = p.calls_of("ok-1");
    for (c, name) in calls.iter().zip(["s1", "s2", "s3"]) {
        assert_eq!(c.method, "POST");
        assert_eq!(c.header("x-saga-step"), name);
        assert_eq!(c.header("x-saga-phase"), "action");
        assert_eq!(c.header("x-saga-attempt"), "1");
        assert_eq!(c.header("idempotency-key"), format!("ok-1/{name}/action"));
        assert_eq!(c.header("content-type"), "application/json");
        assert_eq!(
            c.header("x-saga-created-at"),
            v["created_at"].as_str().unwrap(),
            "when the saga was accepted, RFC 3339 with milliseconds"
        );
    }
    assert_eq!(
        calls[0].body,
        json!({"order_id": 1042, "amount": 1999}),
        "payload is the default body"
    );
    assert_eq!(calls[2].body, json!({"sku": "A1"}));
    assert_eq!(calls[2].header("x-tenant"), "acme");
    let (_, h) = app.get("/v1/sagas/ok-1?include=attempts").await;
    let hist = &h["steps"][1]["history"];
    assert_eq!(hist.as_array().unwrap().len(), 1, "{h}");
    assert_eq!(hist[0]["phase"], "action");
    assert_eq!(hist[0]["outcome"], "success");
    assert_eq!(hist[0]["http_status"], 200);
    assert!(hist[0]["finished_at"].is_string());
    app.stop().await;
}

async fn business_failure_compensates_in_reverse_order(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply(
        "/s3/action",
        Reply::Status {
            code: 409,
            body: json!({"error": "insufficient funds"}),
            delay_ms: 0,
        },
    );
    let steps = vec![p.step("s1"), p.step("s2"), p.step("s3"), p.step("s4")];
    let (code, _) = app.post("/v1/sagas", &saga("bf-1", steps)).await;
    assert_eq!(code, 201);
    let v = app.wait_status("bf-1", &["compensated"], 20).await;
    assert_eq!(v["error"], "s3: 409 insufficient funds");
    let st = crate::helpers::step_statuses(&v);
    assert_eq!(st, vec!["compensated", "compensated", "failed", "skipped"]);
    assert_eq!(
        p.paths_of("bf-1"),
        vec![
            "/s1/action",
            "/s2/action",
            "/s3/action",
            "/s2/compensation",
            "/s1/compensation"
        ],
        "no retry of a 409, no compensation of the refusing or skipped step"
    );
    let comp = &p.calls_of("bf-1")[3];
    assert_eq!(comp.header("x-saga-phase"), "compensation");
    assert_eq!(comp.header("idempotency-key"), "bf-1/s2/compensation");
    assert_eq!(v["steps"][2]["last_error"], "409 insufficient funds");
    app.stop().await;
}

async fn unknown_outcomes_retry_with_backoff_and_a_stable_key(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/s2/action", [Reply::code(503), Reply::code(500)]);
    let mut s2 = p.step("s2");
    s2["retry"] = json!({"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 5000, "multiplier": 2.0});
    app.post("/v1/sagas", &saga("rt-1", vec![p.step("s1"), s2]))
        .await;
    let v = app.wait_status("rt-1", &["succeeded"], 20).await;
    assert_eq!(v["steps"][1]["attempts"], 3);
    assert_eq!(
        v["steps"][1]["last_error"],
        format!(
            "500 from {}: scripted 500",
            p.base.trim_start_matches("http://")
        )
    );
    let calls: Vec<_> = p
        .calls_of("rt-1")
        .into_iter()
        .filter(|c| c.path == "/s2/action")
        .collect();
    assert_eq!(calls.len(), 3);
    let attempts: Vec<&str> = calls.iter().map(|c| c.header("x-saga-attempt")).collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    assert!(calls
        .iter()
        .all(|c| c.header("idempotency-key") == "rt-1/s2/action"));
    // Waits are initial × multiplier^(n−1), scaled by a jitter factor of at least 0.5.
    let gap1 = calls[1].at - calls[0].at;
    let gap2 = calls[2].at - calls[1].at;
    assert!(
        gap1 >= Duration::from_millis(100),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(200),
        "second retry after {gap2:?}"
    );
    let (_, h) = app.get("/v1/sagas/rt-1?include=attempts").await;
    let outcomes: Vec<&str> = h["steps"][1]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["unknown", "unknown", "success"]);
    assert_eq!(h["steps"][1]["history"][0]["http_status"], 503);
    app.stop().await;
}

async fn exhausted_retries_compensate_the_step_that_may_have_acted(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s2/action", Reply::code(500));
    let mut s2 = p.step("s2");
    s2["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 10});
    app.post(
        "/v1/sagas",
        &saga("ex-1", vec![p.step("s1"), s2, p.step("s3")]),
    )
    .await;
    let v = app.wait_status("ex-1", &["compensated"], 20).await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{v}"
    );
    assert_eq!(
        v["steps"][1]["status"], "compensated",
        "an unknown outcome may have taken effect"
    );
    assert_eq!(v["steps"][2]["status"], "skipped");
    let got = p.paths_of("ex-1");
    assert_eq!(
        got[..4],
        ["/s1/action", "/s2/action", "/s2/action", "/s2/action"]
    );
    assert_eq!(got[4..], ["/s2/compensation", "/s1/compensation"]);
    app.stop().await;
}

async fn hang_and_dropped_connection_are_unknown_outcomes(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/s1/action", [Reply::Hang]);
    p.script("/s2/action", [Reply::Drop]);
    let mut s1 = p.step("s1");
    s1["timeout_ms"] = json!(300);
    app.post("/v1/sagas", &saga("hd-1", vec![s1, p.step("s2")]))
        .await;
    let v = app.wait_status("hd-1", &["succeeded"], 20).await;
    assert_eq!(v["steps"][0]["attempts"], 2);
    assert_eq!(v["steps"][1]["attempts"], 2);
    let (_, h) = app.get("/v1/sagas/hd-1?include=attempts").await;
    let first = &h["steps"][0]["history"][0];
    assert_eq!(first["outcome"], "unknown");
    assert!(first["http_status"].is_null());
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .starts_with("timeout after 300 ms"),
        "{first}"
    );
    assert_eq!(h["steps"][1]["history"][0]["outcome"], "unknown");
    app.stop().await;
}

/// `Order-1` and `order-1` are two sagas on every database (MariaDB compared them without case).
async fn ids_are_byte_exact(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let (c1, _) = app
        .post("/v1/sagas", &saga("Order-1", vec![p.step("a")]))
        .await;
    let (c2, v2) = app
        .post(
            "/v1/sagas",
            &saga("order-1", vec![p.step("a"), p.step("b")]),
        )
        .await;
    assert_eq!((c1, c2), (201, 201), "{v2}");
    let a = app.wait_status("Order-1", &["succeeded"], 20).await;
    let b = app.wait_status("order-1", &["succeeded"], 20).await;
    assert_eq!(a["steps"].as_array().unwrap().len(), 1);
    assert_eq!(b["steps"].as_array().unwrap().len(), 2);
    let (_, list) = app.get("/v1/sagas?limit=10").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(app.get("/v1/sagas/ORDER-1").await.0, 404);
    app.stop().await;
}

/// A database made by the first two migrations (MariaDB tables then compared ids without case)
/// is fixed by the third: an existing `Order-1` no longer blocks a new `order-1`.
async fn the_exact_id_migration_fixes_existing_tables(db: TestDb) {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    Migrator::up(&conn, Some(2)).await.unwrap();
    conn.execute_unprepared(
        "INSERT INTO sagas (id, name, mode, status, request, created_at, updated_at, version) \
         VALUES ('Order-1', 'legacy', 'saga', 'succeeded', '{}', 1, 1, 0)",
    )
    .await
    .unwrap();
    let _ = conn.close().await;
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let (code, v) = app
        .post("/v1/sagas", &saga("order-1", vec![p.step("a")]))
        .await;
    assert_eq!(code, 201, "{v}");
    let (code, old) = app.get("/v1/sagas/Order-1").await;
    assert_eq!((code, &old["name"]), (200, &json!("legacy")), "{old}");
    app.stop().await;
}

async fn idempotent_start_and_conflict(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let body = saga("idem-1", vec![p.step("s1")]);
    let (c1, v1) = app.post("/v1/sagas?wait_ms=10000", &body).await;
    assert_eq!(c1, 201);
    assert_eq!(v1["status"], "succeeded");
    let (c2, v2) = app.post("/v1/sagas", &body).await;
    assert_eq!(c2, 200, "{v2}");
    assert_eq!(v2["id"], "idem-1");
    assert_eq!(v2["created_at"], v1["created_at"]);
    let mut other = body.clone();
    other["payload"] = json!({"order_id": 1});
    let (c3, v3) = app.post("/v1/sagas", &other).await;
    assert_eq!(c3, 409);
    assert_eq!(v3["status"], 409);
    assert_eq!(
        p.calls_of("idem-1").len(),
        1,
        "a retried POST never starts a second saga"
    );
    // Generated ids are UUIDs and differ per start.
    let mut anon = body.clone();
    anon.as_object_mut().unwrap().remove("id");
    let (a, va) = app.post("/v1/sagas", &anon).await;
    let (b, vb) = app.post("/v1/sagas", &anon).await;
    assert_eq!((a, b), (201, 201));
    assert_ne!(va["id"], vb["id"]);
    assert!(uuid::Uuid::parse_str(va["id"].as_str().unwrap()).is_ok());
    app.stop().await;
}

async fn long_poll_until_terminal(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s1/action", Reply::slow(400));
    let (code, v) = app
        .post("/v1/sagas", &saga("lp-1", vec![p.step("s1")]))
        .await;
    assert_eq!(code, 201);
    assert_eq!(v["status"], "running");
    assert_eq!(v["steps"][0]["status"], "running");
    let (code, v) = app.get("/v1/sagas/lp-1?wait_ms=10000").await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "succeeded");
    // A short wait on a slow saga answers with the current state.
    p.default_reply("/s1/action", Reply::slow(3000));
    app.post("/v1/sagas", &saga("lp-2", vec![p.step("s1")]))
        .await;
    let (code, v) = app.get("/v1/sagas/lp-2?wait_ms=100").await;
    assert_eq!((code, v["status"].as_str()), (200, Some("running")));
    app.stop().await;
}

async fn listing_pages_newest_first(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/bad/action", Reply::code(409));
    for i in 0..5 {
        let steps = if i % 2 == 0 {
            vec![p.step("s1")]
        } else {
            vec![p.step("bad")]
        };
        let mut b = saga(&format!("ls-{i}"), steps);
        b["name"] = json!(if i < 4 { "listed" } else { "other" });
        let (code, _) = app.post("/v1/sagas?wait_ms=10000", &b).await;
        assert_eq!(code, 201);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (_, page1) = app.get("/v1/sagas?name=listed&limit=3").await;
    let ids: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ls-3", "ls-2", "ls-1"]);
    assert!(
        page1["items"][0]["steps"][0].get("depends_on").is_none(),
        "a listing does not load definitions"
    );
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let (_, page2) = app
        .get(&format!("/v1/sagas?name=listed&limit=3&cursor={cursor}"))
        .await;
    let ids: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ls-0"]);
    assert!(page2["next_cursor"].is_null());
    // Counts per status, of every name or of one; the listing and the counts agree.
    let (code, c) = app.get("/v1/counts").await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(
        c["counts"],
        json!({"prepared": 0, "running": 0, "compensating": 0, "confirming": 0, "stuck": 0, "succeeded": 3, "compensated": 2})
    );
    assert_eq!(c["capped_at"], 10_000);
    let (_, c) = app.get("/v1/counts?name=listed").await;
    assert_eq!(c["counts"]["succeeded"], 2);
    assert_eq!(c["counts"]["compensated"], 2);
    let (_, c) = app.get("/v1/counts?name=nobody").await;
    assert!(
        c["counts"].as_object().unwrap().values().all(|n| n == 0),
        "{c}"
    );
    let (code, c) = app.get("/v1/counts?name=no%20spaces").await;
    assert_eq!(code, 400, "{c}");
    assert_eq!(c["errors"][0]["parameter"], "name", "{c}");
    let (_, comp) = app.get("/v1/sagas?status=compensated,stuck").await;
    let ids: Vec<&str> = comp["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ls-3", "ls-1"]);
    // Several statuses of one name are read as a range each and merged, page after page.
    let mut walked = vec![];
    let mut cursor = String::new();
    loop {
        let (_, page) = app
            .get(&format!(
                "/v1/sagas?name=listed&status=succeeded,compensated&limit=1&cursor={cursor}"
            ))
            .await;
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(walked, vec!["ls-3", "ls-2", "ls-1", "ls-0"]);
    let (code, bad) = app.get("/v1/sagas?limit=0&status=nope").await;
    assert_eq!(code, 400);
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2, "{bad}");
    app.stop().await;
}

on_every_db!(a_listing_while_sagas_move_shows_each_saga_once);

/// A listing by name reads one index range per status and the counts one count per status:
/// while sagas start and move from status to status, each saga is still listed (and counted)
/// exactly once. Read in separate snapshots, a saga that moved between two of them came twice
/// or not at all (the console listed 102 or 97 of 101 sagas).
async fn a_listing_while_sagas_move_shows_each_saga_once(db: TestDb) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const N: usize = 80;
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let steps = vec![p.step("s1"), p.step("s2"), p.step("s3")];
    // Sagas accepted so far: mv-0 .. mv-{started-1} are durable, so every listing has them.
    let started = Arc::new(AtomicUsize::new(0));
    let starter = {
        let (api, started) = (crate::helpers::Api::new(app.base.clone()), started.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let (code, v) = api
                    .post("/v1/sagas", &saga(&format!("mv-{i}"), steps.clone()))
                    .await;
                assert_eq!(code, 201, "{v}");
                started.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut reads = 0;
    loop {
        let before = started.load(Ordering::SeqCst);
        let (code, page) = app.get("/v1/sagas?name=place_order&limit=500").await;
        assert_eq!(code, 200, "{page}");
        let (_, c) = app.get("/v1/counts?name=place_order").await;
        let after = started.load(Ordering::SeqCst);
        let items = page["items"].as_array().unwrap();
        let ids: Vec<&str> = items.iter().map(|s| s["id"].as_str().unwrap()).collect();
        let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "read {reads} listed a saga twice: {ids:?}"
        );
        for i in 0..before {
            let id = format!("mv-{i}");
            assert!(
                unique.contains(id.as_str()),
                "read {reads} missed {id}: {ids:?}"
            );
        }
        let counted: u64 = c["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        // One start may be durable, and counted, before its 201 arrives.
        assert!(
            (before as u64..=after as u64 + 1).contains(&counted),
            "read {reads} counted {counted} sagas, {before}..={after} were started: {c}"
        );
        reads += 1;
        if after == N && items.iter().all(|s| s["status"] == "succeeded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sagas did not all succeed in time"
        );
    }
    starter.await.unwrap();
    assert!(reads > 1, "the listings overlapped the sagas' progress");
    app.stop().await;
}

on_every_db!(a_large_payload_over_many_steps_is_stored_once);

/// 64 steps sharing a payload near the body limit: stored once, sent to every step.
async fn a_large_payload_over_many_steps_is_stored_once(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let big = "x".repeat(700_000);
    let steps: Vec<Value> = (0..64).map(|i| p.step(&format!("s{i}"))).collect();
    let body = json!({"id": "big-1", "name": "big", "payload": {"blob": big}, "steps": steps});
    let (code, v) = app.post("/v1/sagas?wait_ms=30000", &body).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], "succeeded");
    let calls = p.calls_of("big-1");
    // Every step got it (at least once: a database hiccup may make a call go again).
    let keys: std::collections::HashSet<&str> =
        calls.iter().map(|c| c.header("idempotency-key")).collect();
    assert_eq!(keys.len(), 64, "{} calls", calls.len());
    assert!(calls
        .iter()
        .all(|c| c.body["blob"].as_str().map(str::len) == Some(700_000)));
    let (code, _) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 200, "the stored request compares equal");
}
