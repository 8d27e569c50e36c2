//! OpenTelemetry export (docs/tracing.md): the real binary sends its spans to a collector on
//! loopback that decodes them with the official OTLP protobuf definitions; the span tree of a
//! saga is request → phases → calls, with the parents, attributes and events a trace UI shows.
//! A collector that is down or slow changes nothing for the sagas: spans are dropped and
//! counted, never waited on.

use crate::helpers::{start_binary_with, until, Api, Lines, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

on_every_db!(
    exported_spans_form_the_tree_of_each_saga,
    a_collector_that_is_down_or_slow_changes_nothing_for_the_sagas,
);

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// OTLP's span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// An OTLP/HTTP collector on loopback keeping every span it decodes; each answer waits
/// `delay` (a slow collector).
struct Collector {
    base: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start(delay: Duration) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Span>>> = Default::default();
        let keep = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let keep = keep.clone();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await?.to_bytes();
                        let export =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        tokio::time::sleep(delay).await;
                        for rs in export.resource_spans {
                            let resource = rs.resource.expect("a resource");
                            let service =
                                resource.attributes.iter().find(|a| a.key == "service.name");
                            assert_eq!(
                                service.map(|a| any(&a.value)),
                                Some("saga-orchestrator".into())
                            );
                            for ss in rs.scope_spans {
                                keep.lock().unwrap().extend(ss.spans);
                            }
                        }
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Collector { base, spans }
    }

    /// The spans of `trace` received so far.
    fn trace(&self, trace: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn any(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attribute, as text ("" when it has none by that key).
fn attr(s: &Span, key: &str) -> String {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| any(&a.value))
        .unwrap_or_default()
}

/// The events of a span by name, each with its attributes.
fn events(s: &Span) -> HashMap<String, HashMap<String, String>> {
    s.events
        .iter()
        .map(|e| {
            let attrs = e.attributes.iter().map(|a| (a.key.clone(), any(&a.value)));
            (e.name.clone(), attrs.collect())
        })
        .collect()
}

/// The one span of `spans` named `name`.
fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} in {:?}", names(spans));
    found[0]
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

async fn start(api: &Api, body: &Value, headers: &[(&str, &str)]) {
    let (code, v) = api.post_with("/v1/sagas", body, headers).await;
    assert_eq!(code, 201, "{v}");
}

fn with_collector<'a>(c: &'a Collector, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("SAGA__TRACING__OTLP_ENDPOINT", c.base.as_str())];
    env.extend_from_slice(more);
    env
}

async fn exported_spans_form_the_tree_of_each_saga(db: TestDb) {
    let collector = Collector::start(Duration::ZERO).await;
    let (_bin, api, lines) = start_binary_with(&db, &with_collector(&collector, &[]));
    let p = Participant::start().await;
    // a succeeds; b answers 500 (retried), then 409: b and a compensate, a after a delay.
    p.script("/b/action", [Reply::code(500), Reply::refuse(0)]);
    let mut a = p.step("a");
    a["compensation"]["delay_ms"] = json!(50);
    let traced = json!({"id": "traced", "name": "traced", "steps": [a, p.step("b")]});
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    start(
        &api,
        &traced,
        &[("traceparent", &tp), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    api.wait_status("traced", &["compensated"], 30).await;

    // Calls: five, each a client span whose id is the one the participant was sent.
    let spans = until(20, "the exported spans of the saga", || {
        let s = collector.trace(TRACE);
        let calls = s.iter().filter(|s| s.kind == CLIENT).count();
        let done = calls == 5 && s.len() == 8;
        async move {
            if done {
                Ok(s)
            } else {
                Err(format!("{:?}", names(&s)))
            }
        }
    })
    .await;
    let request = named(&spans, "POST /v1/sagas");
    assert_eq!(request.kind, SERVER);
    assert_eq!(
        hex(&request.parent_span_id),
        CALLER_SPAN,
        "the caller's span is its parent"
    );
    let forward = named(&spans, "saga forward");
    let undo = named(&spans, "saga compensation");
    for phase in [forward, undo] {
        assert_eq!(
            phase.parent_span_id, request.span_id,
            "{}: under the request",
            phase.name
        );
        assert_eq!(attr(phase, "saga.id"), "traced");
    }
    let sent: HashSet<String> = p
        .calls_of("traced")
        .iter()
        .map(|c| {
            c.header("traceparent")
                .split('-')
                .nth(2)
                .unwrap()
                .to_string()
        })
        .collect();
    let calls: Vec<&Span> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    let ids: HashSet<String> = calls.iter().map(|s| hex(&s.span_id)).collect();
    assert_eq!(
        ids, sent,
        "each call's span is the parent the participant was given"
    );
    let mut seen: Vec<(String, String, String, String, String)> = calls
        .iter()
        .map(|c| {
            let phase = if c.parent_span_id == forward.span_id {
                "forward"
            } else {
                assert_eq!(c.parent_span_id, undo.span_id, "{}", c.name);
                "compensation"
            };
            let path = format!("/{}/{}", attr(c, "step"), attr(c, "phase"));
            assert_eq!(attr(c, "url.full"), p.url(&path), "{}", c.name);
            assert_eq!(attr(c, "http.request.method"), "POST");
            assert_eq!(c.name, format!("{} {}", attr(c, "phase"), attr(c, "step")));
            (
                phase.to_string(),
                c.name.clone(),
                attr(c, "attempt"),
                attr(c, "http.response.status_code"),
                attr(c, "saga.outcome"),
            )
        })
        .collect();
    seen.sort();
    let row = |p: &str, n: &str, a: &str, s: &str, o: &str| {
        (
            p.to_string(),
            n.to_string(),
            a.to_string(),
            s.to_string(),
            o.to_string(),
        )
    };
    assert_eq!(
        seen,
        vec![
            row("compensation", "compensation a", "1", "200", "success"),
            row("compensation", "compensation b", "1", "200", "success"),
            row("forward", "action a", "1", "200", "success"),
            row("forward", "action b", "1", "500", "unknown"),
            row("forward", "action b", "2", "409", "failure"),
        ]
    );
    // Timers and turns are events of their phase.
    let fe = events(forward);
    assert_eq!(fe["retry scheduled"]["step"], "b", "{fe:?}");
    assert!(fe["retry scheduled"].contains_key("backoff_ms"), "{fe:?}");
    let ue = events(undo);
    assert!(ue.contains_key("step failed; compensating"), "{ue:?}");
    assert_eq!(ue["delayed"]["delay_ms"], "50", "{ue:?}");

    // A trace that starts here: the request span is its root; an operator's abort is an event
    // of the phase it led to.
    p.default_reply("/slow/action", Reply::slow(800));
    let fresh = json!({"id": "fresh", "name": "fresh", "steps": [p.step("slow")]});
    start(&api, &fresh, &[]).await;
    crate::helpers::eventually(10, "the slow call sent", || !p.calls_of("fresh").is_empty()).await;
    let (code, v) = api.post("/v1/sagas/fresh/abort", &json!({})).await;
    assert_eq!(code, 202, "{v}");
    let saga = api.wait_status("fresh", &["compensated"], 30).await;
    let trace = saga["trace_id"].as_str().unwrap().to_string();
    let spans = until(20, "the spans of the aborted saga", || {
        let s = collector.trace(&trace);
        let done = s.iter().any(|s| s.name == "saga compensation")
            && s.iter().filter(|s| s.kind == CLIENT).count() == 2;
        async move {
            if done {
                Ok(s)
            } else {
                Err(format!("{:?}", names(&s)))
            }
        }
    })
    .await;
    let request = named(&spans, "POST /v1/sagas");
    assert!(request.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        named(&spans, "saga forward").parent_span_id,
        request.span_id
    );
    let undo = named(&spans, "saga compensation");
    assert_eq!(undo.parent_span_id, request.span_id);
    assert_eq!(
        events(undo)["operator action"]["action"],
        "abort",
        "{:?}",
        events(undo)
    );
    let flags = p.calls_of("fresh")[0].header("traceparent").to_string();
    assert_eq!(
        flags,
        format!(
            "00-{trace}-{}-01",
            hex(&spans
                .iter()
                .find(|s| s.name == "action slow")
                .unwrap()
                .span_id)
        )
    );

    // An unsampled caller: passed on unsampled, nothing exported (spans go in order, so the
    // next sampled saga's arrival says this one's would have too).
    let tp = format!("00-{UNSAMPLED}-{CALLER_SPAN}-00");
    let quiet = json!({"id": "quiet", "name": "quiet", "steps": [p.step("q")]});
    start(&api, &quiet, &[("traceparent", &tp)]).await;
    api.wait_status("quiet", &["succeeded"], 30).await;
    assert!(p.calls_of("quiet")[0]
        .header("traceparent")
        .ends_with("-00"));
    let after = json!({"id": "after", "name": "after", "steps": [p.step("r")]});
    start(&api, &after, &[]).await;
    let saga = api.wait_status("after", &["succeeded"], 30).await;
    let trace = saga["trace_id"].as_str().unwrap().to_string();
    until(20, "the next saga's spans", || {
        let n = collector.trace(&trace).len();
        async move {
            if n >= 3 {
                Ok(())
            } else {
                Err(format!("{n} spans"))
            }
        }
    })
    .await;
    assert!(
        collector.trace(UNSAMPLED).is_empty(),
        "an unsampled trace is not exported"
    );
    let (_, text) = api.get_text("/metrics").await;
    assert!(crate::helpers::metric(&text, "saga_trace_spans_exported_total").unwrap() >= 16.0);
    assert_eq!(
        crate::helpers::metric(
            &text,
            "saga_trace_spans_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );
    // Log lines name the exported spans: a log search leads to the trace and back.
    let logged = logged_span_ids(&lines, "traced");
    assert!(
        ids_in(&logged, &sent),
        "the calls' span ids in the log lines: {logged:?}"
    );
    let retry_line = lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["saga_id"] == "traced"
                && v["msg"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("retry scheduled"))
        })
        .expect("a retry scheduled line");
    assert_eq!(retry_line["span_id"], hex(&forward.span_id), "{retry_line}");
    assert_eq!(retry_line["trace_id"], TRACE, "{retry_line}");
}

/// The `span_id`s of the log lines about saga `id`.
fn logged_span_ids(lines: &Lines, id: &str) -> HashSet<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["saga_id"] == id)
        .filter_map(|v| v["span_id"].as_str().map(String::from))
        .collect()
}

fn ids_in(logged: &HashSet<String>, sent: &HashSet<String>) -> bool {
    sent.iter().all(|s| logged.contains(s))
}

async fn a_collector_that_is_down_or_slow_changes_nothing_for_the_sagas(db: TestDb) {
    // Down: nothing listens at the endpoint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // Slow: each export takes 5 s, and the queue holds 8 spans.
    let slow = Collector::start(Duration::from_secs(5)).await;
    for (what, endpoint, reason) in [
        ("down", closed.as_str(), "export_failed"),
        ("slow", slow.base.as_str(), "queue_full"),
    ] {
        let (_bin, api, _) = start_binary_with(
            &db,
            &[
                ("SAGA__TRACING__OTLP_ENDPOINT", endpoint),
                ("SAGA__TRACING__MAX_QUEUE", "8"),
                ("SAGA__TRACING__EXPORT_TIMEOUT_MS", "500"),
            ],
        );
        let p = Participant::start().await;
        let starts = (0..20).map(|i| {
            let body = json!({"id": format!("{what}-{i}"), "name": "n", "steps": [p.step("a"), p.step("b")]});
            let api = &api;
            async move { start(api, &body, &[]).await }
        });
        futures::future::join_all(starts).await;
        for i in 0..20 {
            api.wait_status(&format!("{what}-{i}"), &["succeeded"], 30)
                .await;
        }
        let series = format!("saga_trace_spans_dropped_total{{reason=\"{reason}\"}}");
        until(20, "dropped spans counted", || {
            let api = &api;
            let series = &series;
            async move {
                let (_, text) = api.get_text("/metrics").await;
                match crate::helpers::metric(&text, series) {
                    Some(n) if n > 0.0 => Ok(()),
                    other => Err(format!("{what}: {series} = {other:?}")),
                }
            }
        })
        .await;
    }
}
