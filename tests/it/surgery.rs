//! Saga surgery (docs/api.md, "Operator actions"): pause and resume (calls in flight finish,
//! nothing new is sent, the deadline and timers wait with the saga), wake, skipping a stuck step
//! with a reason, every refusal with its rule, the audit (who, when, why), bulk forms, and a
//! pause asked of an instance that does not drive the saga.

use crate::helpers::{spawn_app, until, Api, TestDb};
use crate::participant::{Participant, Reply};
use crate::{on_every_db, on_shared_dbs};
use serde_json::{json, Value};

on_every_db!(
    a_paused_saga_sends_nothing_new_until_it_is_resumed,
    a_paused_sagas_deadline_and_timers_wait_with_it,
    a_stuck_step_is_skipped_with_a_reason,
    bulk_pause_resume_and_wake_answer_for_each_saga,
    a_step_is_edited_with_a_reason_and_its_next_calls_go_there,
);
on_shared_dbs!(
    a_pause_asked_of_another_instance_holds_everywhere,
    an_edit_asked_of_another_instance_is_carried_out_by_the_one_that_drives_it,
);

async fn patch(api: &Api, path: &str, body: &Value) -> (u16, Value) {
    let r = api
        .client
        .patch(format!("{}{path}", api.base))
        .json(body)
        .send()
        .await
        .expect("patch");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A saga whose step b (on `old`) answers 503 and waits a long backoff, with a secret header.
async fn moving_saga(api: &Api, old: &Participant, id: &str) {
    old.default_reply("/b/action", Reply::code(503));
    let mut b = old.step("b");
    b["retry"] =
        json!({"max_attempts": 10, "initial_backoff_ms": 600_000, "max_backoff_ms": 600_000});
    b["action"]["headers"] = json!({"Authorization": "Bearer old-secret", "X-Shop": "1"});
    let body = json!({"id": id, "name": "n", "steps": [old.step("a"), b]});
    assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    until(20, "b waiting for its retry", || async {
        match saga(api, id).await["steps"][1]["status"].as_str() {
            Some("retry_scheduled") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Milliseconds since the epoch of an RFC 3339 time of the API.
fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .timestamp_millis()
}

async fn saga(api: &Api, id: &str) -> Value {
    let (code, v) = api.get(&format!("/v1/sagas/{id}?include=attempts")).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Waits until the saga has left memory: with nothing due, nothing more happens by itself.
async fn idle(api: &Api) {
    until(20, "no saga actor in memory", || async {
        let n = api.metric("saga_live_actors").await;
        if n == 0.0 {
            Ok(())
        } else {
            Err(format!("{n} live"))
        }
    })
    .await;
}

async fn a_paused_saga_sends_nothing_new_until_it_is_resumed(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::slow(500));
    let body = json!({"id": "p-1", "name": "n", "steps": [p.step("a"), p.step("b")]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    crate::helpers::eventually(10, "a called", || !p.calls_of("p-1").is_empty()).await;
    let (code, v) = app
        .post("/v1/sagas/p-1/pause", &json!({"reason": "deploying b"}))
        .await;
    assert_eq!(code, 202, "{v}");
    assert!(v["paused_at"].is_string(), "{v}");
    // The call in flight finishes and is recorded; b is not called.
    until(20, "a's answer recorded", || async {
        let v = saga(&app, "p-1").await;
        match v["steps"][0]["status"].as_str() {
            Some("succeeded") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    idle(&app).await;
    let v = saga(&app, "p-1").await;
    assert_eq!(
        (v["status"].as_str(), v["steps"][1]["status"].as_str()),
        (Some("running"), Some("pending"))
    );
    assert_eq!(p.paths_of("p-1"), ["/a/action"]);
    let actions: Vec<(&str, bool)> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap(),
                a["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("pause", false)) && actions.contains(&("resume", true)),
        "{actions:?}"
    );
    assert!(actions.contains(&("wake", false)), "{actions:?}");
    // Refusals, each with its rule.
    for (path, detail) in [
        ("pause", "the saga is paused already"),
        ("wake", "the saga is paused; resume it first"),
    ] {
        let (code, v) = app.post(&format!("/v1/sagas/p-1/{path}"), &json!({})).await;
        assert_eq!((code, v["detail"].as_str()), (409, Some(detail)), "{path}");
    }
    // A body that is no object, or a blank reason: 400 with the pointer, nothing done.
    let (code, v) = app
        .post("/v1/sagas/p-1/resume", &json!({"reason": " "}))
        .await;
    assert_eq!(
        (code, v["errors"][0]["pointer"].as_str()),
        (400, Some("/reason")),
        "{v}"
    );
    assert!(saga(&app, "p-1").await["paused_at"].is_string());
    // No body at all is fine.
    let r = app
        .client
        .post(format!("{}/v1/sagas/p-1/resume", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v = app.wait_status("p-1", &["succeeded"], 20).await;
    assert!(v["paused_at"].is_null(), "{v}");
    assert_eq!(p.paths_of("p-1"), ["/a/action", "/b/action"]);
    let ops = &saga(&app, "p-1").await["operator_actions"];
    assert_eq!(ops[0]["action"], "pause");
    assert_eq!(ops[0]["reason"], "deploying b");
    assert_eq!(ops[1]["action"], "resume");
    assert!(ops[1].get("reason").is_none(), "{ops}");
    // An ended saga cannot be paused.
    let (code, v) = app.post("/v1/sagas/p-1/pause", &json!({})).await;
    assert_eq!(code, 409, "{v}");
    app.stop().await;
}

async fn a_paused_sagas_deadline_and_timers_wait_with_it(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/a/action", [Reply::code(503)]);
    let mut a = p.step("a");
    a["retry"] =
        json!({"max_attempts": 3, "initial_backoff_ms": 600_000, "max_backoff_ms": 600_000});
    let body = json!({"id": "t-1", "name": "n", "timeout_ms": 3_600_000, "steps": [a]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    let before = until(20, "a's retry scheduled", || async {
        let v = saga(&app, "t-1").await;
        match v["steps"][0]["status"].as_str() {
            Some("retry_scheduled") => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (code, paused) = app.post("/v1/sagas/t-1/pause", &json!({})).await;
    assert_eq!(code, 202, "{paused}");
    let (code, resumed) = app.post("/v1/sagas/t-1/resume", &json!({})).await;
    assert_eq!(code, 202, "{resumed}");
    // Both moved by exactly the time it was paused (the resume's time is its updated_at).
    let held = ms(&resumed["updated_at"]) - ms(&paused["paused_at"]);
    assert!(held >= 0, "{paused} {resumed}");
    assert_eq!(
        ms(&resumed["deadline_at"]) - ms(&before["deadline_at"]),
        held
    );
    let next = |v: &Value| ms(&v["steps"][0]["next_attempt_at"]);
    assert_eq!(next(&resumed) - next(&before), held);
    // Wake: due now, and the second call succeeds.
    let (code, v) = app
        .post("/v1/sagas/t-1/wake", &json!({"reason": "b is back"}))
        .await;
    assert_eq!(code, 202, "{v}");
    app.wait_status("t-1", &["succeeded"], 20).await;
    assert_eq!(p.paths_of("t-1"), ["/a/action", "/a/action"]);
    let ops = &saga(&app, "t-1").await["operator_actions"];
    assert_eq!(ops[2]["action"], "wake");
    assert_eq!(ops[2]["reason"], "b is back");
    app.stop().await;
}

async fn a_stuck_step_is_skipped_with_a_reason(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/s2/action", Reply::code(422));
    p.default_reply("/s1/compensation", Reply::code(503));
    let body =
        json!({"id": "sk-1", "name": "refund", "steps": [p.quick_step("s1"), p.quick_step("s2")]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    let v = app.wait_status("sk-1", &["stuck"], 20).await;
    let skip = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "skip")
        .cloned();
    assert_eq!(
        skip,
        Some(
            json!({"action": "skip", "step": "s1", "allowed": true, "scope": "admin", "reason": null})
        )
    );
    // Refusals: no reason (400), an unknown step (404), a step that is not stuck (409), and a
    // stuck saga is not paused (409).
    let (code, v) = app.post("/v1/sagas/sk-1/steps/s1/skip", &json!({})).await;
    assert_eq!(
        (code, v["errors"][0]["pointer"].as_str()),
        (400, Some("/reason")),
        "{v}"
    );
    let (code, v) = app
        .post("/v1/sagas/sk-1/steps/nope/skip", &json!({"reason": "x"}))
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = app
        .post("/v1/sagas/sk-1/steps/s2/skip", &json!({"reason": "x"}))
        .await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (
            409,
            Some("the step is not stuck; only a stuck step can be skipped")
        )
    );
    let (code, _) = app.post("/v1/sagas/sk-1/pause", &json!({})).await;
    assert_eq!(code, 409);
    let calls = p.calls_of("sk-1").len();
    let (code, v) = app
        .post(
            "/v1/sagas/sk-1/steps/s1/skip",
            &json!({"reason": "refunded by hand, ticket 4411"}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let v = app.wait_status("sk-1", &["compensated"], 20).await;
    assert_eq!(v["steps"][0]["status"], "compensated");
    assert_eq!(
        p.calls_of("sk-1").len(),
        calls,
        "the skipped step is not called again"
    );
    let ops = &saga(&app, "sk-1").await["operator_actions"];
    assert_eq!(
        (
            ops[0]["action"].as_str(),
            ops[0]["step"].as_str(),
            ops[0]["reason"].as_str()
        ),
        (
            Some("skip"),
            Some("s1"),
            Some("refunded by hand, ticket 4411")
        )
    );
    app.stop().await;
}

async fn bulk_pause_resume_and_wake_answer_for_each_saga(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::code(503));
    let mut a = p.step("a");
    a["retry"] = json!({"max_attempts": 5, "initial_backoff_ms": 600_000});
    for id in ["bk-1", "bk-2"] {
        let body = json!({"id": id, "name": "n", "steps": [a.clone()]});
        assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    }
    let ok = json!({"id": "bk-done", "name": "n", "steps": [p.step("b")]});
    assert_eq!(app.post("/v1/sagas", &ok).await.0, 201);
    app.wait_status("bk-done", &["succeeded"], 20).await;
    for id in ["bk-1", "bk-2"] {
        until(20, "a retry scheduled", || async {
            match saga(&app, id).await["steps"][0]["status"].as_str() {
                Some("retry_scheduled") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    let ids = json!(["bk-1", "bk-2", "bk-done"]);
    let statuses = |v: &Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };
    let (code, v) = app
        .post("/v1/bulk/pause", &json!({"ids": ids, "reason": "outage"}))
        .await;
    assert_eq!((code, statuses(&v)), (200, vec![202, 202, 409]), "{v}");
    let (_, v) = app.post("/v1/bulk/wake", &json!({"ids": ids})).await;
    assert_eq!(statuses(&v), [409, 409, 409], "paused, paused, ended: {v}");
    let (_, v) = app
        .post("/v1/bulk/resume", &json!({"ids": ids, "reason": "over"}))
        .await;
    assert_eq!(statuses(&v), [202, 202, 409], "{v}");
    p.default_reply("/a/action", Reply::ok());
    let (_, v) = app.post("/v1/bulk/wake", &json!({"ids": ids})).await;
    assert_eq!(statuses(&v), [202, 202, 409], "{v}");
    for id in ["bk-1", "bk-2"] {
        app.wait_status(id, &["succeeded"], 20).await;
        let ops = &saga(&app, id).await["operator_actions"];
        let seen: Vec<(&str, Option<&str>)> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["action"].as_str().unwrap(), o["reason"].as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("pause", Some("outage")),
                ("resume", Some("over")),
                ("wake", None)
            ]
        );
    }
    let (code, v) = app
        .post("/v1/bulk/pause", &json!({"ids": ids, "reason": 7}))
        .await;
    assert_eq!(
        (code, v["errors"][0]["pointer"].as_str()),
        (400, Some("/reason"))
    );
    for (action, n) in [("pause", 2.0), ("resume", 2.0), ("wake", 2.0)] {
        let series = format!("saga_operator_actions_total{{action=\"{action}\"}}");
        assert_eq!(app.metric(&series).await, n, "{series}");
    }
    app.stop().await;
}

async fn a_step_is_edited_with_a_reason_and_its_next_calls_go_there(db: TestDb) {
    let app = spawn_app(&db).await;
    let (old, new) = (Participant::start().await, Participant::start().await);
    moving_saga(&app, &old, "ed-1").await;
    let path = "/v1/sagas/ed-1/steps/b";
    // Refusals: each names its field; nothing changes.
    let pointers = |v: &Value| -> Vec<String> {
        v["errors"].as_array().map_or(vec![], |e| {
            e.iter()
                .map(|x| x["pointer"].as_str().unwrap_or("").to_string())
                .collect()
        })
    };
    let url = new.url("/b/action");
    for (body, want) in [
        (json!({"action": {"url": url}}), vec!["/reason"]),
        (
            json!({"reason": "x", "action": {"url": "ftp://x"}}),
            vec!["/action/url"],
        ),
        (
            json!({"reason": "x", "action": {"method": "GET"}}),
            vec!["/action/method"],
        ),
        (json!({"reason": "x", "try": {"url": url}}), vec!["/try"]),
        (json!({"reason": "x"}), vec![""]),
        (
            json!({"reason": "x", "action": {"url": "http://169.254.169.254/b"}}),
            vec!["/action/url"],
        ),
    ] {
        let (code, v) = patch(&app, path, &body).await;
        assert_eq!(
            (code, pointers(&v)),
            (400, want.iter().map(|s| s.to_string()).collect()),
            "{body}: {v}"
        );
    }
    assert_eq!(
        patch(
            &app,
            "/v1/sagas/ed-1/steps/zz",
            &json!({"reason": "x", "action": {"url": url}})
        )
        .await
        .0,
        404
    );
    // The edit: the next call goes to the new place, with the new header.
    let edit = json!({"reason": "stock moved to a new host",
        "action": {"url": url, "headers": {"Authorization": "Bearer new-secret"}}});
    let (code, v) = patch(&app, path, &edit).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(app.post("/v1/sagas/ed-1/wake", &json!({})).await.0, 202);
    app.wait_status("ed-1", &["succeeded"], 20).await;
    let calls = new.calls_of("ed-1");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("authorization"), "Bearer new-secret");
    assert_eq!(
        calls[0].header("x-shop"),
        "",
        "headers are replaced as a whole"
    );
    // The audit keeps both, secrets masked.
    let ops = &saga(&app, "ed-1").await["operator_actions"];
    let e = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["action"] == "edit")
        .expect("edit");
    assert_eq!(
        (e["step"].as_str(), e["reason"].as_str()),
        (Some("b"), Some("stock moved to a new host"))
    );
    assert_eq!(e["old"]["action"]["url"], old.url("/b/action"));
    assert_eq!(e["old"]["action"]["headers"]["Authorization"], "***");
    assert_eq!(e["new"]["action"]["url"], url.as_str());
    assert_eq!(e["new"]["action"]["headers"]["Authorization"], "***");
    assert!(!e.to_string().contains("secret"), "{e}");
    // An ended saga is not edited; nor is a step with a call in flight, nor a paused saga.
    let (code, v) = patch(&app, path, &edit).await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (
            409,
            Some("the saga is succeeded, only a saga that has not ended can be edited")
        )
    );
    new.default_reply("/s/action", Reply::slow(2_000));
    let body = json!({"id": "ed-2", "name": "n", "steps": [new.step("s")]});
    assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
    crate::helpers::eventually(10, "s called", || !new.calls_of("ed-2").is_empty()).await;
    let (code, v) = patch(
        &app,
        "/v1/sagas/ed-2/steps/s",
        &json!({"reason": "x", "action": {"url": url}}),
    )
    .await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (
            409,
            Some("the step has a call in flight; edit it once that call has answered")
        )
    );
    app.stop().await;
}

async fn an_edit_asked_of_another_instance_is_carried_out_by_the_one_that_drives_it(db: TestDb) {
    let one = spawn_app(&db).await;
    let two = spawn_app(&db).await;
    let (old, new) = (Participant::start().await, Participant::start().await);
    // One drives the saga (a's slow call in flight); b, still pending, moves.
    old.default_reply("/a/action", Reply::slow(3_000));
    old.default_reply("/b/action", Reply::code(503));
    let mut a = old.step("a");
    a["timeout_ms"] = json!(10_000);
    let body = json!({"id": "ed-3", "name": "n", "steps": [a, old.step("b")]});
    assert_eq!(one.post("/v1/sagas", &body).await.0, 201);
    crate::helpers::eventually(10, "a called", || !old.calls_of("ed-3").is_empty()).await;
    let edit = json!({"reason": "moved", "action": {"url": new.url("/b/action")}});
    let (code, v) = patch(&two, "/v1/sagas/ed-3/steps/b", &edit).await;
    assert_eq!(code, 202, "{v}");
    one.wait_status("ed-3", &["succeeded"], 30).await;
    assert_eq!(new.calls_of("ed-3").len(), 1, "b went to its new place");
    assert_eq!(old.paths_of("ed-3"), ["/a/action"]);
    let ops = &saga(&one, "ed-3").await["operator_actions"];
    assert_eq!(ops[0]["action"], "edit", "{ops}");
    one.stop().await;
    two.stop().await;
}

async fn a_pause_asked_of_another_instance_holds_everywhere(db: TestDb) {
    let one = spawn_app(&db).await;
    let two = spawn_app(&db).await;
    let p = Participant::start().await;
    // Slow enough that the instance driving it polls the request while a is in flight.
    p.default_reply("/a/action", Reply::slow(4_000));
    let mut a = p.step("a");
    a["timeout_ms"] = json!(10_000);
    let body = json!({"id": "x-1", "name": "n", "steps": [a, p.step("b")]});
    assert_eq!(one.post("/v1/sagas", &body).await.0, 201);
    crate::helpers::eventually(10, "a called", || !p.calls_of("x-1").is_empty()).await;
    // Instance two does not drive it: the pause goes through the log to the one that does.
    let (code, v) = two
        .post("/v1/sagas/x-1/pause", &json!({"reason": "deploy"}))
        .await;
    assert_eq!(code, 202, "{v}");
    let v = until(20, "paused, with a's answer recorded", || async {
        let v = saga(&one, "x-1").await;
        if v["paused_at"].is_string() && v["steps"][0]["status"] == "succeeded" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(v["operator_actions"][0]["reason"], "deploy");
    idle(&one).await;
    idle(&two).await;
    assert_eq!(
        p.paths_of("x-1"),
        ["/a/action"],
        "nobody calls b while it is paused"
    );
    let (code, v) = two.post("/v1/sagas/x-1/resume", &json!({})).await;
    assert_eq!(code, 202, "{v}");
    one.wait_status("x-1", &["succeeded"], 30).await;
    assert_eq!(p.paths_of("x-1"), ["/a/action", "/b/action"]);
    one.stop().await;
    two.stop().await;
}
