//! W3C trace context: every participant call of a saga carries the caller's trace (a new span
//! id per call, the caller's flags and tracestate), through retries and compensation; a start
//! without one, or with a malformed one, gets a new trace shared by all its calls; a restart
//! after SIGKILL continues the same trace; the resource and the log lines show it.

use crate::helpers::{spawn_app, start_binary_with, until, Api, TestDb};
use crate::on_every_db;
use crate::participant::{Call, Participant, Reply};
use serde_json::{json, Value};
use std::collections::HashSet;

on_every_db!(
    calls_carry_the_callers_trace_through_retries_and_compensation,
    a_saga_without_a_valid_trace_gets_one_of_its_own,
    a_restart_after_sigkill_continues_the_same_trace,
);

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// (trace id, span id, flags) of a call's `traceparent`.
fn traceparent(c: &Call) -> (String, String, String) {
    let tp = c.header("traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{} {tp:?}", c.path);
    assert_eq!(parts[0], "00", "{tp}");
    assert_eq!(parts[1].len(), 32, "{tp}");
    assert_eq!(parts[2].len(), 16, "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Step `a` succeeds, step `b` fails once (500, retried) then refuses (409): both compensate
/// (`b`'s first outcome was unknown).
fn failing_saga(p: &Participant, id: &str) -> Value {
    p.script("/b/action", [Reply::code(500), Reply::refuse(0)]);
    json!({"id": id, "name": "traced", "steps": [p.step("a"), p.step("b")]})
}

async fn start(api: &Api, body: &Value, headers: &[(&str, &str)]) {
    let (code, v) = api.post_with("/v1/sagas", body, headers).await;
    assert_eq!(code, 201, "{v}");
}

async fn calls_carry_the_callers_trace_through_retries_and_compensation(db: TestDb) {
    let app = spawn_app(&db).await;
    for (id, flags) in [("sampled", "01"), ("unsampled", "00")] {
        let p = Participant::start().await;
        let tp = format!("00-{TRACE}-{CALLER_SPAN}-{flags}");
        start(
            &app,
            &failing_saga(&p, id),
            &[
                ("traceparent", &tp),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("tracestate", "rojo=00f067aa0ba902b7"),
            ],
        )
        .await;
        let saga = app.wait_status(id, &["compensated"], 30).await;
        assert_eq!(saga["trace_id"], TRACE, "{saga}");
        let calls = p.calls_of(id);
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/a/action",
                "/b/action",
                "/b/action",
                "/b/compensation",
                "/a/compensation"
            ],
            "{id}"
        );
        let mut spans = HashSet::new();
        for c in &calls {
            let (trace, span, f) = traceparent(c);
            assert_eq!(trace, TRACE, "{id} {}", c.path);
            assert_eq!(f, flags, "{id} {}: the caller's flags", c.path);
            assert_ne!(span, CALLER_SPAN, "{id} {}: a new parent id", c.path);
            assert!(spans.insert(span), "{id} {}: one span per call", c.path);
            assert_eq!(c.header("tracestate"), STATE, "{id} {}", c.path);
        }
    }
    // Through DTM's protocol too.
    let p = Participant::start().await;
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let body = json!({"gid": "dtm-traced", "trans_type": "saga", "wait_result": true,
        "steps": [{"action": p.url("/d/action"), "compensate": p.url("/d/compensation")}],
        "payloads": ["{}"]});
    let (code, v) = app
        .post_with(
            "/api/dtmsvr/submit",
            &body,
            &[("traceparent", &tp), ("tracestate", STATE)],
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let calls = p.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(traceparent(&calls[0]).0, TRACE);
    assert_eq!(calls[0].header("tracestate"), STATE);
    app.stop().await;
}

async fn a_saga_without_a_valid_trace_gets_one_of_its_own(db: TestDb) {
    let app = spawn_app(&db).await;
    let mut traces = HashSet::new();
    for (id, tp) in [
        ("none", None),
        (
            "upper",
            Some(format!("00-{}-{CALLER_SPAN}-01", TRACE.to_uppercase())),
        ),
        (
            "zeros",
            Some(format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32))),
        ),
        ("garbage", Some("not a traceparent".to_string())),
    ] {
        let p = Participant::start().await;
        let mut headers = vec![("tracestate", "congo=t61rcWkgMzE")];
        if let Some(tp) = &tp {
            headers.push(("traceparent", tp.as_str()));
        }
        start(&app, &failing_saga(&p, id), &headers).await;
        let saga = app.wait_status(id, &["compensated"], 30).await;
        let calls = p.calls_of(id);
        assert_eq!(calls.len(), 5, "{id}");
        let trace = traceparent(&calls[0]).0;
        assert_ne!(trace, TRACE, "{id}: a new trace");
        assert_ne!(trace, "0".repeat(32), "{id}");
        assert!(trace
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(saga["trace_id"], trace.as_str(), "{id}");
        for c in &calls {
            let (t, _, flags) = traceparent(c);
            assert_eq!(t, trace, "{id} {}: one trace for all calls", c.path);
            assert_eq!(flags, "01", "{id}: a trace of our own is sampled");
            assert_eq!(
                c.header("tracestate"),
                "",
                "{id}: no tracestate without a parent"
            );
        }
        assert!(traces.insert(trace), "{id}: each saga its own trace");
    }
    app.stop().await;
}

async fn a_restart_after_sigkill_continues_the_same_trace(db: TestDb) {
    let p = Participant::start().await;
    // The first call of `b` hangs past the kill; the restarted service sends it again.
    p.script("/b/action", [Reply::slow(30_000)]);
    let (mut child, api, lines) = start_binary_with(&db, &[]);
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let body = json!({"id": "restarted", "name": "traced", "steps": [p.step("a"), p.step("b")]});
    start(&api, &body, &[("traceparent", &tp), ("tracestate", STATE)]).await;
    until(30, "b called", || async {
        if p.calls_of("restarted").len() == 2 {
            Ok(())
        } else {
            Err(format!("{:?}", p.paths_of("restarted")))
        }
    })
    .await;
    // The log lines about the saga carry its trace id, and a call's its span id.
    let logged: Vec<Value> = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["saga_id"] == "restarted")
        .collect();
    assert!(!logged.is_empty(), "log lines about the saga");
    let with_trace: Vec<&Value> = logged.iter().filter(|v| v["trace_id"] == TRACE).collect();
    assert!(
        !with_trace.is_empty(),
        "trace_id in the log lines: {logged:?}"
    );
    let b_span = traceparent(&p.calls_of("restarted")[1]).1;
    assert!(
        logged.iter().any(|v| v["span_id"] == b_span.as_str()),
        "the call's span_id {b_span} in a log line: {logged:?}"
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (mut child, api, _) = start_binary_with(&db, &[]);
    let saga = api.wait_status("restarted", &["succeeded"], 60).await;
    assert_eq!(saga["trace_id"], TRACE);
    let calls = p.calls_of("restarted");
    assert_eq!(calls.len(), 3, "{:?}", p.paths_of("restarted"));
    let mut spans = HashSet::new();
    for c in &calls {
        let (trace, span, _) = traceparent(c);
        assert_eq!(trace, TRACE, "{}: the same trace after the restart", c.path);
        assert!(spans.insert(span), "{}: its own span", c.path);
        assert_eq!(c.header("tracestate"), STATE);
    }
    crate::helpers::sigterm_and_wait(&mut child).await;
}
