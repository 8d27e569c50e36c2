//! TCC, parallel steps, delayed compensation across a restart, deadlines, abort → stuck → retry
//! with alerts and operator history, and idle sagas leaving memory.

use crate::helpers::{eventually, metric, spawn_app, spawn_app_with, test_settings, until, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ep(p: &Participant, step: &str, phase: &str) -> Value {
    json!({"url": p.url(&format!("/{step}/{phase}"))})
}

fn tcc_step(p: &Participant, name: &str) -> Value {
    json!({"name": name, "try": ep(p, name, "try"), "confirm": ep(p, name, "confirm"), "cancel": ep(p, name, "cancel")})
}

on_every_db!(
    tcc_confirms_only_after_every_try,
    tcc_failed_try_cancels_what_was_tried,
    parallel_steps_run_concurrently_and_join,
    delayed_compensation_survives_a_restart,
    deadline_stops_the_forward_phase,
    abort_then_stuck_then_retry_with_alert_and_history,
);

async fn tcc_confirms_only_after_every_try(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/b/try", Reply::slow(200));
    let body = json!({"id": "tcc-1", "name": "pay", "mode": "tcc", "steps": [tcc_step(&p, "a"), tcc_step(&p, "b")]});
    let (code, v) = app.post("/v1/sagas?wait_ms=10000", &body).await;
    assert_eq!(code, 201);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["mode"], "tcc");
    assert!(v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "confirmed" && s["confirm_attempts"] == 1));
    let got = p.paths_of("tcc-1");
    assert_eq!(got[..2], ["/a/try", "/b/try"]);
    let mut confirms = got[2..].to_vec();
    confirms.sort();
    assert_eq!(confirms, ["/a/confirm", "/b/confirm"]);
    let c = p
        .calls_of("tcc-1")
        .into_iter()
        .find(|c| c.path == "/a/confirm")
        .unwrap();
    assert_eq!(c.header("x-saga-phase"), "confirm");
    assert_eq!(c.header("idempotency-key"), "tcc-1/a/confirm");
    app.stop().await;
}

async fn tcc_failed_try_cancels_what_was_tried(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/c/try", Reply::code(409));
    let body = json!({"id": "tcc-2", "name": "pay", "mode": "tcc",
                      "steps": [tcc_step(&p, "a"), tcc_step(&p, "b"), tcc_step(&p, "c")]});
    app.post("/v1/sagas", &body).await;
    let v = app.wait_status("tcc-2", &["compensated"], 20).await;
    let st = crate::helpers::step_statuses(&v);
    assert_eq!(st, ["cancelled", "cancelled", "failed"]);
    assert_eq!(
        p.paths_of("tcc-2"),
        ["/a/try", "/b/try", "/c/try", "/b/cancel", "/a/cancel"]
    );
    app.stop().await;
}

async fn parallel_steps_run_concurrently_and_join(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    for s in ["a", "b", "c"] {
        p.default_reply(&format!("/{s}/action"), Reply::slow(1000));
    }
    let mut steps: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|s| {
            let mut v = p.quick_step(s);
            v["depends_on"] = json!([]);
            v
        })
        .collect();
    let mut join = p.quick_step("join");
    join["depends_on"] = json!(["a", "b", "c"]);
    steps.push(join);
    let (code, v) = app
        .post(
            "/v1/sagas?wait_ms=20000",
            &json!({"id": "fan-1", "name": "fan", "steps": steps}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    app.wait_status("fan-1", &["succeeded"], 30).await;
    let calls = p.calls_of("fan-1");
    let starts: Vec<Instant> = calls
        .iter()
        .filter(|c| c.path != "/join/action")
        .map(|c| c.at)
        .collect();
    // The participant holds each call 1 s: all three arrived before the first was answered,
    // so they were in flight together (one after the other, they would be 1 s apart or more).
    let spread = *starts.iter().max().unwrap() - *starts.iter().min().unwrap();
    assert!(
        spread < Duration::from_millis(1000),
        "the three started {spread:?} apart"
    );
    assert_eq!(
        calls.last().unwrap().path,
        "/join/action",
        "the join waits for all three"
    );
    app.stop().await;
}

async fn delayed_compensation_survives_a_restart(db: TestDb) {
    let settings = test_settings(&db);
    let app = spawn_app_with(settings.clone()).await;
    let p = Participant::start().await;
    p.default_reply("/b/action", Reply::code(409));
    let mut a = p.quick_step("a");
    // Long enough that the stop below comes before it even on a loaded machine.
    a["compensation"]["delay_ms"] = json!(3000);
    app.post(
        "/v1/sagas",
        &json!({"id": "dc-1", "name": "refund_later", "steps": [a, p.quick_step("b")]}),
    )
    .await;
    let v = app.wait_status("dc-1", &["compensating"], 20).await;
    assert_eq!(v["steps"][0]["status"], "compensation_scheduled", "{v}");
    assert!(v["steps"][0]["next_attempt_at"].is_string());
    let refused_at = p
        .calls_of("dc-1")
        .iter()
        .find(|c| c.path == "/b/action")
        .unwrap()
        .at;
    app.stop().await;
    let app = spawn_app_with(settings).await;
    let v = app.wait_status("dc-1", &["compensated"], 20).await;
    assert_eq!(v["steps"][0]["status"], "compensated");
    let comps: Vec<_> = p
        .calls_of("dc-1")
        .into_iter()
        .filter(|c| c.path == "/a/compensation")
        .collect();
    assert_eq!(comps.len(), 1, "neither lost nor doubled by the restart");
    let waited = comps[0].at - refused_at;
    assert!(
        waited >= Duration::from_millis(3000),
        "the delay was shortened to {waited:?}"
    );
    app.stop().await;
}

async fn deadline_stops_the_forward_phase(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/b/action", Reply::Hang);
    let mut b = p.quick_step("b");
    b["timeout_ms"] = json!(1500);
    let body = json!({"id": "dl-1", "name": "slow", "timeout_ms": 500, "steps": [p.quick_step("a"), b, p.quick_step("c")]});
    let (_, v) = app.post("/v1/sagas", &body).await;
    assert!(v["deadline_at"].is_string());
    let v = app.wait_status("dl-1", &["compensated"], 20).await;
    assert_eq!(v["error"], "deadline exceeded");
    let st = crate::helpers::step_statuses(&v);
    assert_eq!(
        st,
        ["compensated", "compensated", "skipped"],
        "the call in flight at the deadline counts as unknown"
    );
    assert_eq!(
        p.paths_of("dl-1"),
        [
            "/a/action",
            "/b/action",
            "/b/compensation",
            "/a/compensation"
        ],
        "no retry after the deadline"
    );
    app.stop().await;
}

async fn abort_then_stuck_then_retry_with_alert_and_history(db: TestDb) {
    let p = Participant::start().await;
    let mut settings = test_settings(&db);
    settings.alerts.webhook_url = p.url("/alerts");
    let app = spawn_app_with(settings).await;
    p.default_reply("/b/action", Reply::slow(400));
    p.default_reply("/a/compensation", Reply::code(500));
    p.script("/alerts", [Reply::code(503)]);
    app.post(
        "/v1/sagas",
        &json!({"id": "ops-1", "name": "ops", "steps": [p.quick_step("a"), p.quick_step("b")]}),
    )
    .await;
    eventually(10, "b called", || p.calls_of("ops-1").len() >= 2).await;
    let (code, _) = app.post("/v1/sagas/ops-1/abort", &json!({})).await;
    assert_eq!(code, 202);
    let v = app.wait_status("ops-1", &["stuck"], 20).await;
    assert_eq!(v["steps"][0]["stuck"], true);
    assert_eq!(v["steps"][1]["status"], "compensated");
    // The alert is retried until the webhook takes it.
    eventually(10, "alert delivered", || {
        p.calls().iter().filter(|c| c.path == "/alerts").count() >= 2
    })
    .await;
    let alert = p
        .calls()
        .into_iter()
        .rfind(|c| c.path == "/alerts")
        .unwrap()
        .body;
    assert_eq!(alert["alert"], "saga_stuck");
    assert_eq!(alert["saga_id"], "ops-1");
    assert_eq!(alert["step"], "a");
    assert_eq!(alert["phase"], "compensation");
    p.default_reply("/a/compensation", Reply::ok());
    let (code, _) = app.post("/v1/sagas/ops-1/retry", &json!({})).await;
    assert_eq!(code, 202);
    app.wait_status("ops-1", &["compensated"], 20).await;
    let (_, h) = app.get("/v1/sagas/ops-1?include=attempts").await;
    let ops = h["operator_actions"].as_array().unwrap();
    assert_eq!(ops.len(), 2, "{h}");
    assert_eq!(ops[0]["action"], "abort");
    assert_eq!(ops[1]["action"], "retry");
    assert!(ops[0]["by"].as_str().unwrap().starts_with("127.0.0.1"));
    assert!(ops[1]["at"].is_string());
    app.stop().await;
}

on_every_db!(idle_sagas_leave_memory_and_wake_from_the_log);

async fn idle_sagas_leave_memory_and_wake_from_the_log(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/b/action", Reply::code(409));
    for i in 0..20 {
        let mut a = p.quick_step("a");
        a["compensation"]["delay_ms"] = json!(2500);
        app.post(
            "/v1/sagas",
            &json!({"id": format!("idle-{i}"), "name": "idle", "steps": [a, p.quick_step("b")]}),
        )
        .await;
    }
    let live = |m: &str| metric(m, "saga_live_actors").unwrap_or(-1.0);
    // One scrape reads the log's counts before it renders the actor gauge: wait for both.
    until(10, "waiting sagas to leave memory", || async {
        let (_, m) = app.get_text("/metrics").await;
        let waiting = m.contains("sagas_active{name=\"idle\",status=\"compensating\"} 20");
        (live(&m) == 0.0 && waiting).then_some(()).ok_or(m)
    })
    .await;
    for i in 0..20 {
        app.wait_status(&format!("idle-{i}"), &["compensated"], 20)
            .await;
    }
    let (_, m) = app.get_text("/metrics").await;
    assert!(
        m.contains("sagas_active{name=\"idle\",status=\"compensating\"} 0"),
        "{m}"
    );
    app.stop().await;
}

on_every_db!(ended_sagas_leave_no_timer_behind);

/// A deadline far away (and a stuck saga's retries) must not stay in the timer once the saga
/// ended: `saga_timers_pending` counts live wakes only.
async fn ended_sagas_leave_no_timer_behind(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/no/action", Reply::code(409));
    p.default_reply("/a/compensation", Reply::code(409));
    for i in 0..10 {
        let body = json!({"id": format!("dl-{i}"), "name": "dl", "timeout_ms": 3_600_000,
                          "steps": [p.step("a"), p.step("b")]});
        app.post("/v1/sagas", &body).await;
    }
    let body = json!({"id": "dl-stuck", "name": "dl", "timeout_ms": 3_600_000,
                      "steps": [p.quick_step("a"), p.step("no")]});
    app.post("/v1/sagas", &body).await;
    for i in 0..10 {
        app.wait_status(&format!("dl-{i}"), &["succeeded"], 20)
            .await;
    }
    app.wait_status("dl-stuck", &["stuck"], 20).await;
    until(10, "the wakes of ended sagas to go", || async {
        let (_, m) = app.get_text("/metrics").await;
        let none = metric(&m, "saga_timers_pending") == Some(0.0);
        none.then_some(()).ok_or(m)
    })
    .await;
    app.stop().await;
}

on_every_db!(deadline_survives_a_restart);

async fn deadline_survives_a_restart(db: TestDb) {
    let settings = test_settings(&db);
    let app = spawn_app_with(settings.clone()).await;
    let p = Participant::start().await;
    p.script("/b/action", [Reply::code(503)]);
    let mut b = p.step("b");
    // The retry would come 2.5-5 s later; the deadline passes first, while the service is down.
    b["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 5000});
    let body = json!({"id": "dlr-1", "name": "dlr", "timeout_ms": 1500, "steps": [p.step("a"), b]});
    let (code, v) = app.post("/v1/sagas", &body).await;
    assert_eq!(code, 201, "{v}");
    assert!(v["deadline_at"].is_string());
    // Usually stopped before the deadline; on a slow machine it may pass first, which ends the
    // same way (only the answer to the stop is recorded earlier).
    eventually(10, "b refused once", || p.paths_of("dlr-1").len() == 2).await;
    app.stop().await;
    let app = spawn_app_with(settings).await;
    let v = app.wait_status("dlr-1", &["compensated"], 20).await;
    assert_eq!(v["error"], "deadline exceeded");
    assert_eq!(
        p.paths_of("dlr-1"),
        [
            "/a/action",
            "/b/action",
            "/b/compensation",
            "/a/compensation"
        ],
        "no retry after the deadline; b may have acted, so it is compensated"
    );
    app.stop().await;
}
