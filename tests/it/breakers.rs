//! When a participant is down (docs/operations.md): its breaker opens after unknown outcomes,
//! calls wait at its gate without spending attempts, one probe goes after the cool-down (and a
//! failed one reopens it for longer), closing releases the waiting calls at a ramping rate;
//! business answers never trip it; an operator's pause of a service holds every call, on every
//! instance, until it is resumed.

use crate::helpers::{spawn_app_with, test_settings, until, Api, TestDb};
use crate::participant::{Participant, Reply};
use crate::{on_every_db, on_shared_dbs};
use serde_json::{json, Value};
use std::time::Duration;

on_every_db!(
    a_breaker_opens_probes_and_closes_and_no_attempt_is_spent_while_it_is_open,
    business_answers_never_trip_a_breaker,
    closing_releases_the_waiting_calls_at_a_ramping_rate,
    a_paused_service_holds_every_call_until_it_is_resumed,
);
on_shared_dbs!(a_service_paused_on_one_instance_is_paused_on_all);

/// Test settings with a quick breaker: 3 in a row, 400 ms cool-down.
fn quick(db: &TestDb) -> saga_orchestrator::config::Settings {
    let mut s = test_settings(db);
    let b = &mut s.participant.breaker;
    b.consecutive_failures = 3;
    b.open_ms = 400;
    b.max_open_ms = 800;
    b.ramp_start_per_s = 5;
    b.ramp_ms = 2_000;
    s
}

/// This service as `GET /v1/services` shows it.
async fn service(api: &Api, name: &str) -> Option<Value> {
    let (code, v) = api.get("/v1/services").await;
    assert_eq!(code, 200, "{v}");
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .cloned()
}

/// Waits until `check` holds of the service.
async fn service_until(api: &Api, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    until(20, what, || async {
        match service(api, name).await {
            Some(s) if check(&s) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn host_port(p: &Participant) -> String {
    p.url("").trim_start_matches("http://").to_string()
}

async fn a_breaker_opens_probes_and_closes_and_no_attempt_is_spent_while_it_is_open(db: TestDb) {
    let app = spawn_app_with(quick(&db)).await;
    let p = Participant::start().await;
    let svc = host_port(&p);
    p.default_reply("/a/action", Reply::code(503));
    let mut a = p.step("a");
    a["retry"] = json!({"max_attempts": 20, "initial_backoff_ms": 10, "max_backoff_ms": 10});
    let body = json!({"id": "br-1", "name": "n", "steps": [a]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    // Three unknown outcomes in a row: open, and the next call waits at the gate.
    let s = service_until(&app, &svc, "the breaker open with a call waiting", |s| {
        s["breaker"] == "open" && s["waiting"] == 1
    })
    .await;
    assert_eq!(s["unknown_rate"], 1.0, "{s}");
    let (_, v) = app.get("/v1/sagas/br-1").await;
    let waiting = v["waiting_on"].as_str().unwrap_or_default();
    assert!(
        waiting.starts_with(&format!("breaker open: {svc} since ")),
        "{v}"
    );
    let series = format!("saga_breaker_state{{service=\"{svc}\"}}");
    assert_eq!(app.metric(&series).await, 1.0);
    // The probes fail (each reopens it, for longer); then the service comes back.
    until(20, "two probes", || async {
        let n = p.calls_of("br-1").len();
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    p.default_reply("/a/action", Reply::ok());
    let v = app.wait_status("br-1", &["succeeded"], 20).await;
    let calls = p.calls_of("br-1");
    // Every attempt the saga counts was one call the participant got: none spent waiting.
    assert_eq!(
        v["steps"][0]["attempts"].as_u64(),
        Some(calls.len() as u64),
        "{v}"
    );
    // After the third, calls went only as probes: each at least a cool-down after the last.
    for w in calls[2..].windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(350),
            "a call {gap:?} after the last while open"
        );
    }
    service_until(&app, &svc, "closed", |s| {
        s["breaker"] == "closed" && s["waiting"] == 0
    })
    .await;
    for to in ["open", "half_open", "closed"] {
        let series = format!("saga_breaker_transitions_total{{service=\"{svc}\",to=\"{to}\"}}");
        assert!(app.metric(&series).await >= 1.0, "{series}");
    }
    app.stop().await;
}

async fn business_answers_never_trip_a_breaker(db: TestDb) {
    let app = spawn_app_with(quick(&db)).await;
    let p = Participant::start().await;
    let svc = host_port(&p);
    p.default_reply("/a/action", Reply::refuse(0));
    for i in 0..8 {
        let body = json!({"id": format!("no-{i}"), "name": "n", "steps": [p.step("a")]});
        assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
        app.wait_status(&format!("no-{i}"), &["compensated"], 20)
            .await;
    }
    let s = service(&app, &svc).await.expect("seen");
    assert_eq!(
        (s["breaker"].as_str(), s["calls"].as_u64()),
        (Some("closed"), Some(8)),
        "{s}"
    );
    assert_eq!(s["unknown_rate"], 0.0);
    assert!(s["p99_ms"].as_u64().is_some(), "{s}");
    app.stop().await;
}

async fn closing_releases_the_waiting_calls_at_a_ramping_rate(db: TestDb) {
    // A long cool-down: 30 sagas are started and wait at the gate before the first probe.
    let mut settings = quick(&db);
    settings.participant.breaker.open_ms = 3_000;
    settings.participant.breaker.max_open_ms = 3_000;
    let app = spawn_app_with(settings).await;
    let p = Participant::start().await;
    let svc = host_port(&p);
    p.default_reply("/a/action", Reply::code(503));
    let mut a = p.step("a");
    a["retry"] = json!({"max_attempts": 20, "initial_backoff_ms": 10, "max_backoff_ms": 10});
    let trip = json!({"id": "trip", "name": "n", "steps": [a]});
    assert_eq!(app.post("/v1/sagas", &trip).await.0, 201);
    service_until(&app, &svc, "open", |s| s["breaker"] == "open").await;
    for i in 0..30 {
        let body = json!({"id": format!("w-{i}"), "name": "n", "steps": [p.step("b")]});
        assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    }
    service_until(&app, &svc, "31 calls waiting", |s| s["waiting"] == 31).await;
    let seen = std::time::Instant::now();
    assert!(
        p.calls().iter().all(|c| c.path == "/a/action"),
        "nothing reached b"
    );
    p.default_reply("/a/action", Reply::ok());
    for i in 0..30 {
        app.wait_status(&format!("w-{i}"), &["succeeded"], 30).await;
    }
    app.wait_status("trip", &["succeeded"], 30).await;
    // The first call after they all waited is the probe; it closed the breaker, and in the
    // ramp's first second at most 5 more calls went.
    let after: Vec<std::time::Instant> = p
        .calls()
        .iter()
        .map(|c| c.at)
        .filter(|t| *t > seen)
        .collect();
    assert_eq!(after.len(), 31, "each waiting call sent once");
    let t0 = *after.iter().min().unwrap();
    let first_second = after
        .iter()
        .filter(|t| **t > t0 && t.duration_since(t0) < Duration::from_secs(1))
        .count();
    assert!(
        first_second <= 5,
        "{first_second} calls in the ramp's first second"
    );
    app.stop().await;
}

async fn a_paused_service_holds_every_call_until_it_is_resumed(db: TestDb) {
    let app = spawn_app_with(quick(&db)).await;
    let p = Participant::start().await;
    let svc = host_port(&p);
    let path = format!("/v1/services/{svc}");
    let (code, v) = app
        .post(&format!("{path}/pause"), &json!({"reason": "deploy 4.2"}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (
            v["paused"]["reason"].as_str(),
            v["paused"]["by"].is_string()
        ),
        (Some("deploy 4.2"), true)
    );
    let (code, v) = app.post(&format!("{path}/pause"), &json!({})).await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (409, Some("the service is paused already"))
    );
    let body = json!({"id": "ps-1", "name": "n", "steps": [p.step("a")]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    service_until(&app, &svc, "a call waiting", |s| s["waiting"] == 1).await;
    assert!(p.calls_of("ps-1").is_empty());
    let (_, v) = app.get("/v1/sagas/ps-1").await;
    assert!(
        v["waiting_on"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("service paused: {svc} since ")),
        "{v}"
    );
    let (code, v) = app
        .post(&format!("{path}/resume"), &json!({"reason": "done"}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert!(v["paused"].is_null(), "{v}");
    app.wait_status("ps-1", &["succeeded"], 20).await;
    let (code, v) = app.post(&format!("{path}/resume"), &json!({})).await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (409, Some("the service is not paused"))
    );
    let (_, v) = app.get(&path).await;
    let audit: Vec<(&str, Option<&str>)> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["reason"].as_str()))
        .collect();
    assert_eq!(
        audit,
        [("resume", Some("done")), ("pause", Some("deploy 4.2"))]
    );
    assert_eq!(app.get("/v1/services/never.seen:1").await.0, 404);
    app.stop().await;
}

async fn a_service_paused_on_one_instance_is_paused_on_all(db: TestDb) {
    let one = spawn_app_with(quick(&db)).await;
    let two = spawn_app_with(quick(&db)).await;
    let p = Participant::start().await;
    let svc = host_port(&p);
    let (code, _) = two
        .post(&format!("/v1/services/{svc}/pause"), &json!({}))
        .await;
    assert_eq!(code, 200);
    // Instance one follows the log within a poll.
    service_until(&one, &svc, "paused on instance one", |s| {
        s["paused"].is_object()
    })
    .await;
    let body = json!({"id": "ps-2", "name": "n", "steps": [p.step("a")]});
    assert_eq!(one.post("/v1/sagas", &body).await.0, 201);
    service_until(&one, &svc, "the call waiting on one", |s| s["waiting"] == 1).await;
    assert!(p.calls_of("ps-2").is_empty());
    let (code, _) = two
        .post(&format!("/v1/services/{svc}/resume"), &json!({}))
        .await;
    assert_eq!(code, 200);
    one.wait_status("ps-2", &["succeeded"], 20).await;
    one.stop().await;
    two.stop().await;
}
