//! Errors, operator actions, stuck sagas and the service endpoints, over HTTP.

use crate::helpers::{spawn_app, spawn_app_with, test_settings, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};

on_every_db!(
    bad_input_gets_problem_documents_and_records_nothing,
    stuck_compensation_waits_for_an_operator_retry,
    abort_stops_a_running_saga_and_compensates,
    abort_reaches_a_saga_idle_until_a_distant_retry,
    bulk_actions_answer_for_each_saga_in_order,
    service_endpoints_answer,
);

async fn bad_input_gets_problem_documents_and_records_nothing(db: TestDb) {
    let mut settings = test_settings(&db);
    settings.server.max_body_bytes = 2_000;
    let app = spawn_app_with(settings).await;
    let url = format!("{}/v1/sagas", app.base);
    let send = |ct: &'static str, body: String| {
        let c = app.client.clone();
        let url = url.clone();
        async move {
            let r = c
                .post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
            (code, ctype, r.json::<Value>().await.unwrap())
        }
    };
    let invalid = json!({"id": "has space", "mode": "both", "steps": [
        {"name": "a", "action": {"url": "not a url"}, "depends_on": ["zzz"]},
        {"name": "a", "action": {"url": "http://127.0.0.1:1/x", "method": "BREW"}, "retry": {"max_attempts": 0}}
    ]});
    let (code, ctype, v) = send("application/json", invalid.to_string()).await;
    assert_eq!(code, 400);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(v["status"], 400);
    let ptrs: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for want in [
        "/id",
        "/name",
        "/mode",
        "/steps/0/action/url",
        "/steps/0/depends_on/0",
        "/steps/1/name",
        "/steps/1/action/method",
        "/steps/1/retry/max_attempts",
    ] {
        assert!(ptrs.contains(&want), "missing {want} in {v}");
    }
    let (code, ctype, v) = send("text/plain", "{}".into()).await;
    assert_eq!(
        (code, ctype.as_str()),
        (415, "application/problem+json"),
        "{v}"
    );
    let (code, _, v) = send("application/json", "{\"name\": ".into()).await;
    assert_eq!(code, 400);
    assert!(v["detail"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(v["errors"][0]["pointer"], "");
    let big = json!({"name": "n", "payload": "x".repeat(5_000), "steps": []}).to_string();
    let (code, _, v) = send("application/json", big).await;
    assert_eq!(code, 413, "{v}");
    let (code, v) = app.get("/v1/sagas/nope").await;
    assert_eq!((code, v["status"].as_u64()), (404, Some(404)));
    let (code, v) = app.get("/no/such/route").await;
    assert_eq!((code, v["status"].as_u64()), (404, Some(404)));
    let r = app.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers()["allow"],
        "GET, POST",
        "RFC 9110: a 405 lists what is allowed"
    );
    let r = app
        .client
        .post(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), &r.headers()["allow"]),
        (405, &"GET".parse().unwrap())
    );
    let (code, _) = app.get("/v1/sagas/x?wait_ms=999999").await;
    assert_eq!(code, 400);
    let (code, v) = app.post("/v1/sagas/nope/retry", &json!({})).await;
    assert_eq!((code, v["status"].as_u64()), (404, Some(404)));
    let (_, list) = app.get("/v1/sagas").await;
    assert_eq!(list["items"], json!([]), "nothing was recorded");
    app.stop().await;
}

async fn stuck_compensation_waits_for_an_operator_retry(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s2/action", Reply::code(422));
    p.default_reply("/s1/compensation", Reply::code(503));
    let body = json!({"id": "stuck-1", "name": "refund", "steps": [p.quick_step("s1"), p.quick_step("s2")]});
    app.post("/v1/sagas", &body).await;
    let v = app.wait_status("stuck-1", &["stuck"], 20).await;
    assert_eq!(v["steps"][0]["stuck"], true);
    assert_eq!(v["steps"][0]["compensation_attempts"], 2);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("s1: compensation gave up after 2 attempts"),
        "{v}"
    );
    let (_, m) = app.get_text("/metrics").await;
    assert!(
        m.contains("saga_stuck_total{name=\"refund\",step=\"s1\"} 1"),
        "{m}"
    );
    assert!(m.contains("sagas_stuck{name=\"refund\"} 1"));
    // The resource says what an operator may do now, and why not (the console's buttons).
    let (_, v) = app.get("/v1/sagas/stuck-1").await;
    assert_eq!(
        v["actions"],
        json!([
            {"action": "retry", "allowed": true, "scope": "admin", "reason": null},
            {"action": "abort", "allowed": false, "scope": "admin", "reason": "the saga is stuck, only a running saga can be aborted"},
            {"action": "pause", "allowed": false, "scope": "admin", "reason": "the saga is stuck, only a running, compensating or confirming saga can be paused"},
            {"action": "resume", "allowed": false, "scope": "admin", "reason": "the saga is not paused"},
            {"action": "wake", "allowed": false, "scope": "admin", "reason": "the saga is stuck, only a running, compensating or confirming saga can be woken"},
            {"action": "keep", "allowed": true, "scope": "admin", "reason": null},
            {"action": "unkeep", "allowed": false, "scope": "admin", "reason": "the saga is not kept"},
            {"action": "skip", "step": "s1", "allowed": true, "scope": "admin", "reason": null},
            {"action": "edit", "step": "s1", "allowed": true, "scope": "admin", "reason": null},
            {"action": "edit", "step": "s2", "allowed": true, "scope": "admin", "reason": null}
        ])
    );
    // A plain list: each step after the one before, as resolved at acceptance.
    assert_eq!(v["steps"][0]["depends_on"], json!([]));
    assert_eq!(v["steps"][1]["depends_on"], json!(["s1"]));
    let (code, _) = app.post("/v1/sagas/stuck-1/abort", &json!({})).await;
    assert_eq!(code, 409, "a stuck saga is past aborting");
    p.default_reply("/s1/compensation", Reply::ok());
    let (code, v) = app.post("/v1/sagas/stuck-1/retry", &json!({})).await;
    assert_eq!(code, 202, "{v}");
    assert_ne!(v["status"], "stuck");
    let v = app.wait_status("stuck-1", &["compensated"], 20).await;
    assert_eq!(v["steps"][0]["compensation_attempts"], 3);
    let attempts: Vec<String> = p
        .calls_of("stuck-1")
        .iter()
        .filter(|c| c.path == "/s1/compensation")
        .map(|c| c.header("x-saga-attempt").to_string())
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    let (code, _) = app.post("/v1/sagas/stuck-1/retry", &json!({})).await;
    assert_eq!(code, 409, "not stuck any more");
    let (_, v) = app.get("/v1/sagas/stuck-1").await;
    assert_eq!(v["actions"][0]["allowed"], false);
    assert_eq!(
        v["actions"][0]["reason"],
        "the saga is compensated, only a stuck saga can be retried"
    );
    let (_, m) = app.get_text("/metrics").await;
    assert!(m.contains("sagas_stuck{name=\"refund\"} 0"), "{m}");
    app.stop().await;
}

/// A saga that waits a minute for its next retry has no actor in memory; an abort claims it,
/// and its new actor must not give the lease up again before the abort arrives (it answered
/// 503 "released" every time, so such a saga could not be aborted at all).
async fn abort_reaches_a_saga_idle_until_a_distant_retry(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s1/action", Reply::code(503));
    let mut s1 = p.step("s1");
    s1["retry"] = json!({"max_attempts": 5, "initial_backoff_ms": 60000, "max_backoff_ms": 60000});
    let (code, _) = app
        .post(
            "/v1/sagas",
            &json!({"id": "idle-1", "name": "idle", "steps": [s1]}),
        )
        .await;
    assert_eq!(code, 201);
    crate::helpers::until(20, "the saga to be idle", || async {
        let (_, v) = app.get("/v1/sagas/idle-1").await;
        let idle = v["steps"][0]["status"] == "retry_scheduled"
            && app.metric("saga_live_actors").await == 0.0;
        idle.then_some(()).ok_or(v.to_string())
    })
    .await;
    let released = r#"saga_leases_total{event="released"}"#;
    let before = app.metric(released).await;
    assert!(before >= 1.0, "the idle saga gave its lease up");
    let (code, v) = app.post("/v1/sagas/idle-1/abort", &json!({})).await;
    assert_eq!(code, 202, "{v}");
    // The answer is the saga as read after the action: its compensation may be over already.
    assert_after_undo_began(&v["status"]);
    app.wait_status("idle-1", &["compensated"], 20).await;
    let (code, v) = app.post("/v1/sagas/idle-1/abort", &json!({})).await;
    assert_eq!(code, 409, "{v}");
    // Its lease is given up again once it has nothing to do.
    crate::helpers::until(20, "the lease to be given up again", || async {
        let (n, live) = (
            app.metric(released).await,
            app.metric("saga_live_actors").await,
        );
        (n > before && live == 0.0)
            .then_some(())
            .ok_or(format!("released {n}, live actors {live}"))
    })
    .await;
    app.stop().await;
}

/// An action's answer shows the saga as read after the action's transition: compensating, or
/// already compensated (on a loaded machine the undo may finish before the read).
fn assert_after_undo_began(status: &Value) {
    assert!(
        matches!(status.as_str(), Some("compensating" | "compensated")),
        "the saga should be compensating or compensated after the action, not {status}"
    );
}

/// The `status` of each result of a bulk action, in order.
fn result_statuses(v: &Value) -> Vec<u64> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect()
}

/// After a participant outage many sagas are stuck: one request retries them all, and each saga
/// answers for itself (202, or the 404/409 its single action would have given).
async fn bulk_actions_answer_for_each_saga_in_order(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s2/action", Reply::code(422));
    p.default_reply("/s1/compensation", Reply::code(503));
    p.default_reply("/r2/action", Reply::slow(800));
    for id in ["b-1", "b-2", "b-3"] {
        let body =
            json!({"id": id, "name": "refund", "steps": [p.quick_step("s1"), p.quick_step("s2")]});
        app.post("/v1/sagas", &body).await;
    }
    let ok = json!({"id": "b-ok", "name": "fine", "steps": [p.quick_step("t1")]});
    app.post("/v1/sagas?wait_ms=5000", &ok).await;
    for id in ["b-1", "b-2", "b-3"] {
        app.wait_status(id, &["stuck"], 20).await;
    }

    // Bad requests do nothing and name each mistake.
    for (body, pointers) in [
        (json!({"ids": []}), vec!["/ids"]),
        (
            json!({"ids": ["b-1", "b-1", "x y"]}),
            vec!["/ids/1", "/ids/2"],
        ),
        (json!({"ids": ["b-1"], "status": "stuck"}), vec!["/status"]),
    ] {
        let (code, v) = app.post("/v1/bulk/retry", &body).await;
        assert_eq!(code, 400, "{v}");
        let got: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(got, pointers, "{v}");
    }
    app.wait_status("b-1", &["stuck"], 1).await;

    p.default_reply("/s1/compensation", Reply::ok());
    let (code, v) = app
        .post(
            "/v1/bulk/retry",
            &json!({"ids": ["b-1", "b-ok", "nope", "b-2"]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(result_statuses(&v), [202, 409, 404, 202], "{v}");
    assert_eq!(v["results"][0]["id"], "b-1");
    assert_after_undo_began(&v["results"][0]["saga_status"]);
    assert_eq!(v["accepted"], 2);
    assert_eq!(
        v["results"][1]["problem"]["detail"],
        "the saga is succeeded, only a stuck saga can be retried"
    );
    assert_eq!(v["results"][2]["problem"]["status"], 404);
    for id in ["b-1", "b-2"] {
        let v = app.wait_status(id, &["compensated"], 20).await;
        assert_eq!(v["steps"][0]["compensation_attempts"], 3, "{v}");
    }
    let (_, v) = app.get("/v1/sagas/b-1?include=attempts").await;
    assert_eq!(v["operator_actions"][0]["action"], "retry", "{v}");
    let (_, v) = app.get("/v1/sagas/b-3").await;
    assert_eq!(v["status"], "stuck", "a saga not named is left alone");

    // Abort two running sagas at once; the stuck one is past aborting.
    for id in ["r-1", "r-2"] {
        let body =
            json!({"id": id, "name": "slow", "steps": [p.quick_step("r1"), p.quick_step("r2")]});
        app.post("/v1/sagas", &body).await;
        crate::helpers::eventually(10, "r2 called", || p.calls_of(id).len() >= 2).await;
    }
    let (code, v) = app
        .post("/v1/bulk/abort", &json!({"ids": ["r-1", "b-3", "r-2"]}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(result_statuses(&v), [202, 409, 202], "{v}");
    for id in ["r-1", "r-2"] {
        let v = app.wait_status(id, &["compensated"], 20).await;
        assert_eq!(v["error"], "aborted by operator");
    }
    app.stop().await;
}

async fn abort_stops_a_running_saga_and_compensates(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s2/action", Reply::slow(600));
    let body = json!({"id": "ab-1", "name": "n", "steps": [p.quick_step("s1"), p.quick_step("s2"), p.quick_step("s3")]});
    app.post("/v1/sagas", &body).await;
    crate::helpers::eventually(10, "s2 called", || p.calls_of("ab-1").len() >= 2).await;
    let (code, v) = app.post("/v1/sagas/ab-1/abort", &json!({})).await;
    assert_eq!(code, 202, "{v}");
    assert_after_undo_began(&v["status"]);
    let v = app.wait_status("ab-1", &["compensated"], 20).await;
    assert_eq!(v["error"], "aborted by operator");
    let st = crate::helpers::step_statuses(&v);
    assert_eq!(
        st,
        vec!["compensated", "compensated", "skipped"],
        "the call in flight finished, then was undone"
    );
    let (code, _) = app.post("/v1/sagas/ab-1/abort", &json!({})).await;
    assert_eq!(code, 409);
    app.stop().await;
}

async fn service_endpoints_answer(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    let (code, doc) = app.get("/openapi.json").await;
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/sagas/{id}/retry"]["post"].is_object());
    // Generated from the handlers: every route of the service, with its answers and schemes.
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        [
            "/api/dtmsvr/abort",
            "/api/dtmsvr/all",
            "/api/dtmsvr/forceStop",
            "/api/dtmsvr/newGid",
            "/api/dtmsvr/prepare",
            "/api/dtmsvr/prepareWorkflow",
            "/api/dtmsvr/query",
            "/api/dtmsvr/registerBranch",
            "/api/dtmsvr/resetNextCronTime",
            "/api/dtmsvr/submit",
            "/api/dtmsvr/version",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/readyz",
            "/v1/bulk/abort",
            "/v1/bulk/pause",
            "/v1/bulk/resume",
            "/v1/bulk/retry",
            "/v1/bulk/wake",
            "/v1/counts",
            "/v1/definitions",
            "/v1/definitions/{name}",
            "/v1/definitions/{name}/versions/{version}",
            "/v1/definitions/{name}/versions/{version}/retire",
            "/v1/sagas",
            "/v1/sagas/{id}",
            "/v1/sagas/{id}/abort",
            "/v1/sagas/{id}/keep",
            "/v1/sagas/{id}/pause",
            "/v1/sagas/{id}/resume",
            "/v1/sagas/{id}/retry",
            "/v1/sagas/{id}/steps/{step}",
            "/v1/sagas/{id}/steps/{step}/skip",
            "/v1/sagas/{id}/unkeep",
            "/v1/sagas/{id}/wake",
            "/v1/services",
            "/v1/services/{service}",
            "/v1/services/{service}/pause",
            "/v1/services/{service}/resume",
            "/v1/whoami",
        ]
    );
    let start = &doc["paths"]["/v1/sagas"]["post"];
    assert_eq!(
        start["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/StartRequest"
    );
    for code in ["201", "400", "401", "403", "409", "503"] {
        assert!(start["responses"][code].is_object(), "{code}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["SagaStep"]["properties"]["name"]["pattern"],
        "^[A-Za-z0-9_.-]{1,64}$"
    );
    // The endpoints each mode requires, one schema per mode, as the validator enforces them;
    // or a start that names a stored definition.
    assert_eq!(
        schemas["StartRequest"]["oneOf"],
        json!([{"$ref": "#/components/schemas/SagaStart"}, {"$ref": "#/components/schemas/TccStart"},
               {"$ref": "#/components/schemas/DefinitionStart"}])
    );
    assert_eq!(
        schemas["DefinitionStart"]["required"],
        json!(["definition"])
    );
    assert!(
        schemas["SagaDefinitionRequest"]["properties"]["id"].is_null(),
        "a definition has no id"
    );
    assert_eq!(schemas["SagaStep"]["required"], json!(["name", "action"]));
    assert_eq!(
        schemas["TccStep"]["required"],
        json!(["name", "try", "confirm", "cancel"])
    );
    assert_eq!(
        schemas["TccStart"]["properties"]["mode"]["enum"],
        json!(["tcc"])
    );
    assert_eq!(schemas["SagaStart"]["properties"]["steps"]["maxItems"], 64);
    assert!(
        schemas["Endpoint"]["properties"]["delay_ms"].is_null(),
        "only an undo waits"
    );
    assert!(schemas["UndoEndpoint"]["properties"]["delay_ms"].is_object());
    // Repeated ids are refused, so the document says they must be distinct.
    assert_eq!(
        schemas["BulkRequest"]["properties"]["ids"]["uniqueItems"],
        true
    );
    assert_eq!(schemas["BulkRequest"]["properties"]["ids"]["maxItems"], 100);
    app.post(
        "/v1/sagas?wait_ms=10000",
        &json!({"id": "m-1", "name": "metered", "steps": [p.quick_step("s1")]}),
    )
    .await;
    let (code, m) = app.get_text("/metrics").await;
    assert_eq!(code, 200);
    assert!(m.contains("saga_started_total{name=\"metered\"} 1"), "{m}");
    assert!(m.contains("saga_finished_total{name=\"metered\",status=\"succeeded\"} 1"));
    assert!(m.contains("saga_step_calls_total{name=\"metered\",outcome=\"success\",phase=\"action\",step=\"s1\"} 1"));
    assert!(m.contains("process_resident_memory_bytes"));
    app.stop().await;
}
