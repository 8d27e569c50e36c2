//! What an on-call engineer sees: exact metrics after a known mix of sagas, gauges recomputed
//! after a restart, and JSON log lines that all carry the saga's id.

use crate::helpers::{spawn_app_with, start_binary, test_settings, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};

/// The value of one exact sample line, or None when the series is absent.
fn sample(m: &str, series: &str) -> Option<f64> {
    m.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

on_every_db!(
    metrics_count_a_known_mix_exactly,
    json_logs_carry_the_saga_id
);

async fn metrics_count_a_known_mix_exactly(db: TestDb) {
    let settings = test_settings(&db);
    let app = spawn_app_with(settings.clone()).await;
    let p = Participant::start().await;
    p.default_reply("/no/action", Reply::code(409));
    p.default_reply("/stuck/compensation", Reply::code(500));
    let mut n = 0;
    let mut run = |steps: Vec<Value>| {
        n += 1;
        json!({"id": format!("mix-{n}"), "name": "mix", "steps": steps})
    };
    let mut bodies = vec![];
    for _ in 0..3 {
        bodies.push(run(vec![p.quick_step("a"), p.quick_step("b")]));
    }
    for _ in 0..2 {
        bodies.push(run(vec![p.quick_step("a"), p.quick_step("no")]));
    }
    bodies.push(run(vec![p.quick_step("stuck"), p.quick_step("no")]));
    for b in &bodies {
        let (code, _) = app.post("/v1/sagas", b).await;
        assert_eq!(code, 201);
    }
    for i in 1..=5 {
        app.wait_status(&format!("mix-{i}"), &["succeeded", "compensated"], 20)
            .await;
    }
    app.wait_status("mix-6", &["stuck"], 20).await;
    let (_, m) = app.get_text("/metrics").await;
    let expect = [
        ("saga_started_total{name=\"mix\"}", 6.0),
        ("saga_finished_total{name=\"mix\",status=\"succeeded\"}", 3.0),
        ("saga_finished_total{name=\"mix\",status=\"compensated\"}", 2.0),
        ("saga_failed_total{name=\"mix\",step=\"no\"}", 3.0),
        ("saga_stuck_total{name=\"mix\",step=\"stuck\"}", 1.0),
        ("sagas_stuck{name=\"mix\"}", 1.0),
        ("saga_step_calls_total{name=\"mix\",outcome=\"success\",phase=\"action\",step=\"a\"}", 5.0),
        ("saga_step_calls_total{name=\"mix\",outcome=\"success\",phase=\"action\",step=\"b\"}", 3.0),
        ("saga_step_calls_total{name=\"mix\",outcome=\"failure\",phase=\"action\",step=\"no\"}", 3.0),
        ("saga_step_calls_total{name=\"mix\",outcome=\"success\",phase=\"compensation\",step=\"a\"}", 2.0),
        ("saga_step_calls_total{name=\"mix\",outcome=\"unknown\",phase=\"compensation\",step=\"stuck\"}", 2.0),
        ("saga_retries_scheduled_total{name=\"mix\",phase=\"compensation\",step=\"stuck\"}", 1.0),
        ("saga_duration_seconds_count{name=\"mix\",status=\"succeeded\"}", 3.0),
        ("saga_step_call_duration_seconds_count{name=\"mix\",phase=\"action\",step=\"a\"}", 5.0),
        ("saga_actor_restarts_total", 0.0),
        ("saga_ready", 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&m, series), Some(want), "{series} in\n{m}");
    }
    // Only the label sets that happened: no compensation of b, no failure of a.
    assert_eq!(sample(&m, "saga_step_calls_total{name=\"mix\",outcome=\"success\",phase=\"compensation\",step=\"b\"}"), None);
    assert_eq!(
        sample(&m, "saga_failed_total{name=\"mix\",step=\"a\"}"),
        None
    );
    assert!(m.contains("saga_store_write_duration_seconds_count{op=\"create\"} 6"));

    // After a restart the gauges are recomputed from the log.
    app.stop().await;
    let app = spawn_app_with(settings).await;
    let (_, m) = app.get_text("/metrics").await;
    assert_eq!(sample(&m, "sagas_stuck{name=\"mix\"}"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "saga_started_total{name=\"mix\"}"),
        None,
        "counters are per process"
    );
    // Once everything finishes the gauges return to zero.
    p.default_reply("/stuck/compensation", Reply::ok());
    assert_eq!(app.post("/v1/sagas/mix-6/retry", &json!({})).await.0, 202);
    app.wait_status("mix-6", &["compensated"], 20).await;
    let (_, m) = app.get_text("/metrics").await;
    assert_eq!(sample(&m, "sagas_stuck{name=\"mix\"}"), Some(0.0), "{m}");
    for st in ["running", "compensating", "confirming"] {
        let v = sample(&m, &format!("sagas_active{{name=\"mix\",status=\"{st}\"}}"));
        assert!(v.is_none() || v == Some(0.0), "{st}: {v:?}");
    }
    app.stop().await;
}

async fn json_logs_carry_the_saga_id(db: TestDb) {
    let p = Participant::start().await;
    p.script("/a/action", [Reply::code(503)]);
    p.default_reply("/b/action", Reply::code(409));
    let (mut child, api, lines) = start_binary(&db);
    let id = "logged-saga-7";
    let body = json!({"id": id, "name": "logged", "steps": [p.quick_step("a"), p.quick_step("b")]});
    let (_, v) = api.post("/v1/sagas?wait_ms=20000", &body).await;
    assert_eq!(v["status"], "compensated", "{v}");
    let (code, _) = api.get(&format!("/v1/sagas/{id}?include=attempts")).await;
    assert_eq!(code, 200);
    crate::helpers::eventually(10, "the GET access line", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("include=attempts") && l.contains("HTTP REQUEST - END"))
    })
    .await;
    child.kill().ok();
    let _ = child.wait();
    let lines = lines.lock().unwrap().clone();
    let mut about = 0;
    let mut calls = 0;
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["v", "name", "msg", "level", "hostname", "pid", "time"] {
            assert!(v.get(k).is_some(), "bunyan field {k} missing: {l}");
        }
        if l.contains(id) {
            about += 1;
            assert_eq!(
                v["saga_id"], id,
                "a line about the saga without its saga_id: {l}"
            );
        }
        if v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("participant answered"))
            && v["saga_id"] == id
        {
            calls += 1;
            assert_eq!(v["saga_name"], "logged");
            for k in ["step", "phase", "attempt", "outcome"] {
                assert!(v.get(k).is_some(), "call line without {k}: {l}");
            }
        }
    }
    assert!(about >= 8, "only {about} lines mention the saga");
    let with_msg = |m: &str| -> Vec<Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["saga_id"] == id && v["msg"].as_str().is_some_and(|x| x.contains(m)))
            .collect()
    };
    let finished = with_msg("saga finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(
        finished[0]["saga_name"], "logged",
        "saga lines carry saga_name from the saga span"
    );
    assert_eq!(finished[0]["status"], "compensated");
    assert_eq!(with_msg("step failed; compensating").len(), 1);
    assert!(!with_msg("[SAGA - START]").is_empty(), "one span per saga");
    assert_eq!(calls, 4, "a twice, b once, a's compensation once");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request_id") && l.contains(id)),
        "access lines carry a request id"
    );
}
