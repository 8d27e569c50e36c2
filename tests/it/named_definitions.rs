//! Named, versioned definitions (docs/api.md, "Definitions", "Dry run"): versions, starts by
//! definition (latest and pinned) with payload references resolved, a later version leaving
//! running sagas alone, retirement, a restart keeping all of it, definition files and
//! `definitions check`, and dry runs that plan or refuse with nothing recorded or called.

use crate::helpers::{sigterm_and_wait, start_binary_with, until, Api, TestDb};
use crate::participant::{Participant, Reply};
use crate::{on_every_db, on_shared_dbs};
use serde_json::{json, Value};

on_every_db!(
    versions_starts_by_definition_and_retirement,
    a_later_version_leaves_running_sagas_alone_and_a_restart_keeps_everything,
    dry_runs_plan_or_refuse_and_record_nothing,
);
on_shared_dbs!(definitions_are_shared_by_every_instance);

async fn put(api: &Api, name: &str, body: &Value) -> (u16, Value) {
    let r = api
        .client
        .put(format!("{}/v1/definitions/{name}", api.base))
        .json(body)
        .send()
        .await
        .expect("put");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A two-step definition on `p`: the order's id goes in a's body and a header of b.
fn order_definition(p: &Participant) -> Value {
    let mut a = p.step("a");
    a["action"]["body"] = json!({"order": {"$payload": "/order/id"}, "$$kept": true});
    let mut b = p.step("b");
    b["action"]["headers"] = json!({"x-order": {"$payload": "/order/id"}});
    json!({"description": "an order", "steps": [a, b]})
}

async fn versions_starts_by_definition_and_retirement(db: TestDb) {
    let p = Participant::start().await;
    let app = crate::helpers::spawn_app(&db).await;
    let doc = order_definition(&p);

    let (code, v1) = put(&app, "place_order", &doc).await;
    assert_eq!(code, 201, "{v1}");
    assert_eq!(
        (v1["name"].as_str(), v1["version"].as_u64()),
        (Some("place_order"), Some(1))
    );
    assert_eq!(
        v1["definition"]["steps"][0]["action"]["body"]["order"]["$payload"],
        "/order/id"
    );
    let (code, same) = put(&app, "place_order", &doc).await;
    assert_eq!(
        (code, same["version"].as_u64()),
        (200, Some(1)),
        "identical: no new version"
    );
    let mut doc2 = doc.clone();
    doc2["steps"][1]["retry"] = json!({"max_attempts": 2});
    let (code, v2) = put(&app, "place_order", &doc2).await;
    assert_eq!((code, v2["version"].as_u64()), (201, Some(2)));

    // Invalid documents: every mistake with its pointer, nothing stored.
    let bad = json!({"id": "x", "steps": [{"name": "a", "action": {"url": "ftp://x",
        "body": {"$set": 1}}}]});
    let (code, e) = put(&app, "place_order", &bad).await;
    assert_eq!(code, 400, "{e}");
    let pointers: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["pointer"].as_str())
        .collect();
    for want in ["/id", "/steps/0/action/url", "/steps/0/action/body/$set"] {
        assert!(pointers.contains(&want), "{want} not in {pointers:?}");
    }
    let (code, e) = put(
        &app,
        "blocked",
        &json!({"steps": [{"name": "a",
        "action": {"url": "http://169.254.169.254/x"}}]}),
    )
    .await;
    assert_eq!(code, 400, "the outbound policy holds for definitions: {e}");

    let (code, list) = app.get("/v1/definitions").await;
    assert_eq!(code, 200);
    assert_eq!(list["items"][0]["name"], "place_order");
    assert_eq!(list["items"][0]["latest_version"], 2);
    assert_eq!(list["items"][0]["steps"], json!(["a", "b"]));
    let (_, latest) = app.get("/v1/definitions/place_order").await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["versions"].as_array().unwrap().len(), 2);
    let (code, _) = app.get("/v1/definitions/place_order/versions/3").await;
    assert_eq!(code, 404);
    let (code, _) = app.get("/v1/definitions/nothing").await;
    assert_eq!(code, 404);

    // Start by definition, latest: the payload's values reach the participant.
    let start = json!({"definition": "place_order", "id": "o-1",
                       "payload": {"order": {"id": "A7"}, "user": 3}});
    let (code, s) = app.post("/v1/sagas?wait_ms=10000", &start).await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(s["status"], "succeeded");
    let (_, full) = app.get("/v1/sagas/o-1?include=request").await;
    assert_eq!(
        full["definition"],
        json!({"name": "place_order", "version": 2})
    );
    assert_eq!(full["name"], "place_order");
    assert_eq!(
        full["request"]["definition"], "place_order",
        "the request as sent"
    );
    let calls = p.calls_of("o-1");
    assert_eq!(calls[0].body, json!({"order": "A7", "$kept": true}));
    assert_eq!(calls[1].header("x-order"), "A7");
    assert_eq!(
        calls[1].body,
        json!({"order": {"id": "A7"}, "user": 3}),
        "payload by default"
    );
    let (code, again) = app.post("/v1/sagas", &start).await;
    assert_eq!(
        (code, again["id"].as_str()),
        (200, Some("o-1")),
        "idempotent"
    );

    // Pinned.
    let (code, s) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "version": 1, "id": "o-2",
                                    "payload": {"order": {"id": 9}}}),
        )
        .await;
    assert_eq!(code, 201, "{s}");
    let (_, s) = app.get("/v1/sagas/o-2").await;
    assert_eq!(s["definition"]["version"], 1);

    // Refusals: a missing payload value, unknown names and versions, a full start's fields.
    let (code, e) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "payload": {}}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert_eq!(e["errors"][0]["pointer"], "/payload/order/id");
    assert!(e["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("/steps/0/action/body/order"));
    let (code, e) = app
        .post("/v1/sagas", &json!({"definition": "nothing"}))
        .await;
    assert_eq!(
        (code, e["errors"][0]["pointer"].as_str()),
        (400, Some("/definition"))
    );
    let (code, e) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "version": 9}),
        )
        .await;
    assert_eq!(
        (code, e["errors"][0]["pointer"].as_str()),
        (400, Some("/version"))
    );
    let (code, e) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "steps": []}),
        )
        .await;
    assert_eq!(
        (code, e["errors"][0]["pointer"].as_str()),
        (400, Some("/steps"))
    );

    // Retire version 2: starts without a version run 1; a start of 2 is refused.
    let (code, r) = app
        .post(
            "/v1/definitions/place_order/versions/2/retire",
            &json!({"reason": "bad retry"}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["retired"]["reason"], "bad retry");
    let (code, e) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "version": 2,
                                    "payload": {"order": {"id": 1}}}),
        )
        .await;
    assert_eq!(code, 409, "{e}");
    assert!(e["type"].as_str().unwrap().ends_with("definition-retired"));
    let (code, s) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "id": "o-3",
                                    "payload": {"order": {"id": 1}}}),
        )
        .await;
    assert_eq!(code, 201, "{s}");
    let (_, s) = app.get("/v1/sagas/o-3").await;
    assert_eq!(
        s["definition"]["version"], 1,
        "the newest that is not retired"
    );
    let (_, list) = app.get("/v1/definitions").await;
    assert_eq!(list["items"][0]["live_version"], 1);
    // Every version retired: refused.
    app.post("/v1/definitions/place_order/versions/1/retire", &json!({}))
        .await;
    let (code, _) = app
        .post(
            "/v1/sagas",
            &json!({"definition": "place_order", "payload": {"order": {"id": 1}}}),
        )
        .await;
    assert_eq!(code, 409);
    // A retired latest is no reason to refuse its body again: it becomes a new version.
    let (code, v3) = put(&app, "place_order", &doc2).await;
    assert_eq!((code, v3["version"].as_u64()), (201, Some(3)));
    assert_eq!(
        app.metric("saga_definition_starts_total{definition=\"place_order\",version=\"2\"}")
            .await,
        1.0,
        "sagas created (the idempotent repeat is the same saga)"
    );
    assert_eq!(
        app.metric("saga_definition_changes_total{action=\"unchanged\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn a_later_version_leaves_running_sagas_alone_and_a_restart_keeps_everything(db: TestDb) {
    let old = Participant::start().await;
    let new = Participant::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ship.toml");
    let toml = |p: &Participant| {
        format!(
            "description = \"ships an order\"\n[[steps]]\nname = \"ship\"\n\
             retry = {{ max_attempts = 1000, initial_backoff_ms = 50, max_backoff_ms = 50 }}\n\
             action = {{ url = \"{}\", body = {{ parcel = {{ \"$payload\" = \"/parcel\" }} }} }}\n",
            p.url("/ship/action")
        )
    };
    std::fs::write(&file, toml(&old)).unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    // Without breakers: the saga's retries against a failing participant are what it counts.
    let env = [
        ("SAGA__DEFINITIONS__DIR", dir_s.as_str()),
        ("SAGA__PARTICIPANT__BREAKER__ENABLED", "false"),
    ];
    let (mut bin, api, _) = start_binary_with(&db, &env);
    let (_, d) = api.get("/v1/definitions/ship").await;
    assert_eq!(
        (d["version"].as_u64(), d["created_by"].as_str()),
        (Some(1), Some("file:ship.toml"))
    );

    // A saga of version 1 retries against the old participant.
    old.default_reply("/ship/action", Reply::code(503));
    let (code, s) = api
        .post(
            "/v1/sagas",
            &json!({"definition": "ship", "id": "s-1", "payload": {"parcel": 5}}),
        )
        .await;
    assert_eq!(code, 201, "{s}");
    until(20, "s-1 retrying against the old participant", || async {
        let n = old.calls_of("s-1").len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    sigterm_and_wait(&mut bin).await;

    // Version 2 points at the new participant; the restart stores it from the file.
    std::fs::write(&file, toml(&new)).unwrap();
    let (bin, api, _) = start_binary_with(&db, &env);
    let (_, d) = api.get("/v1/definitions/ship").await;
    assert_eq!(d["version"], 2, "{d}");
    let (code, s) = api
        .post(
            "/v1/sagas?wait_ms=10000",
            &json!({"definition": "ship", "id": "s-2",
                                                 "payload": {"parcel": 6}}),
        )
        .await;
    assert_eq!(
        (code, s["status"].as_str()),
        (201, Some("succeeded")),
        "{s}"
    );
    assert_eq!(new.calls_of("s-2")[0].body, json!({"parcel": 6}));
    // s-1 still runs version 1 after the restart: the old participant gets its calls.
    let before = old.calls_of("s-1").len();
    until(20, "s-1 resumed against the old participant", || async {
        let n = old.calls_of("s-1").len();
        if n > before {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await;
    assert!(
        new.calls_of("s-1").is_empty(),
        "a running saga keeps its version"
    );
    old.default_reply("/ship/action", Reply::ok());
    let s = api.wait_status("s-1", &["succeeded"], 20).await;
    assert_eq!(s["definition"], json!({"name": "ship", "version": 1}));
    assert_eq!(
        old.calls_of("s-1").last().unwrap().body,
        json!({"parcel": 5})
    );

    drop(bin);
    // A file that does not validate stops the start, naming file and pointer.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"steps": [{"name": "x", "action": {"url": "nope"}}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
        .arg("serve")
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env("SAGA__DATABASE__URL", &db.url)
        .env("SAGA__DEFINITIONS__DIR", &dir_s)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("bad.json: /steps/0/action/url"), "{text}");
}

/// `definitions check DIR` needs no database or service.
#[test]
fn definitions_check_names_good_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.json"),
        r#"{"steps": [{"name": "a", "action": {"url": "http://orders.local/a"}}]}"#,
    )
    .unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
            .args(["definitions", "check"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok good ("), "{text}");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[steps]]\nname = \"a\"\naction = { url = \"http://x/\", body = { \"$oops\" = 1 } }\n",
    )
    .unwrap();
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL ") && text.contains("bad.toml: /steps/0/action/body/$oops"),
        "{text}"
    );
}

async fn dry_runs_plan_or_refuse_and_record_nothing(db: TestDb) {
    let p = Participant::start().await;
    let mut settings = crate::helpers::test_settings(&db);
    // Loopback plus the test's unresolvable name; 10.0.0.0/8 refused.
    settings.participant.deny = vec!["10.0.0.0/8".into()];
    let app = crate::helpers::spawn_app_with(settings).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut b = p.step("b");
    b["depends_on"] = json!([]);
    b["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 150});
    b["timeout_ms"] = json!(50);
    let mut c = p.step("c");
    c["depends_on"] = json!(["a", "b"]);
    c["compensation"]["url"] = json!(format!("http://127.0.0.1:{closed}/c/compensation"));
    let full = json!({"id": "dry-1", "name": "plan", "timeout_ms": 100,
                      "steps": [p.step("a"), b, c]});
    let (code, plan) = app.post("/v1/sagas?dry_run=true", &full).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["plan"]["levels"], json!([["a", "b"], ["c"]]));
    assert_eq!(plan["plan"]["undo_levels"], json!([["c"], ["a", "b"]]));
    let b_action = &plan["plan"]["steps"][1]["phases"][0];
    assert_eq!(b_action["backoffs_ms"], json!([100, 150]));
    assert_eq!(b_action["worst_case_ms"], 100 + 150 + 3 * 50);
    assert!(plan["plan"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("deadline"));
    let eps = plan["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 6);
    let closed_ep = eps
        .iter()
        .find(|e| e["step"] == "c" && e["phase"] == "compensation")
        .unwrap();
    assert_eq!(
        (
            closed_ep["resolves"].as_bool(),
            closed_ep["connects"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert!(eps
        .iter()
        .filter(|e| e["url"].as_str().unwrap().starts_with(&p.base))
        .all(|e| e["connects"] == true));
    assert_eq!(plan["ready"], false);
    assert!(p.calls().is_empty(), "a dry run calls nothing");
    let (code, _) = app.get("/v1/sagas/dry-1").await;
    assert_eq!(code, 404, "a dry run records nothing");

    // A name that does not resolve (no query leaves the machine: its label is too long).
    let host = format!("{}.invalid", "x".repeat(70));
    let (code, plan) = app
        .post(
            "/v1/sagas?dry_run=true",
            &json!({"name": "dns", "steps": [
            {"name": "a", "action": {"url": format!("http://{host}/a")}}]}),
        )
        .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["endpoints"][0]["resolves"], false);
    assert!(plan["endpoints"][0]["error"]
        .as_str()
        .unwrap()
        .contains("does not resolve"));

    // A request a start would refuse gets that 400: the policy, a bad field.
    let (code, e) = app
        .post(
            "/v1/sagas?dry_run=true",
            &json!({"name": "p", "steps": [
            {"name": "a", "action": {"url": "http://10.1.2.3/a"}}]}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("blocked by policy"));
    let (code, _) = app.post("/v1/sagas?dry_run=maybe", &full).await;
    assert_eq!(code, 400);

    // By definition: the plan of the version it would run, with a live participant ready.
    let (code, _) = put(&app, "order", &order_definition(&p)).await;
    assert_eq!(code, 201);
    let (code, plan) = app
        .post(
            "/v1/sagas?dry_run=true",
            &json!({"definition": "order",
                                                "payload": {"order": {"id": 1}}}),
        )
        .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["definition"], json!({"name": "order", "version": 1}));
    assert_eq!(plan["ready"], true);
    let (code, e) = app
        .post("/v1/sagas?dry_run=true", &json!({"definition": "order"}))
        .await;
    assert_eq!(
        (code, e["errors"][0]["pointer"].as_str()),
        (400, Some("/payload/order/id"))
    );
    assert!(p.calls().is_empty());
    let (_, page) = app.get("/v1/sagas").await;
    assert_eq!(page["items"], json!([]), "nothing recorded");
    // The policy's and the payload's refusals (a bad query is no dry run).
    assert_eq!(
        app.metric("saga_dry_runs_total{outcome=\"refused\"}").await,
        2.0
    );
    app.stop().await;
}

async fn definitions_are_shared_by_every_instance(db: TestDb) {
    let p = Participant::start().await;
    let a = crate::helpers::spawn_app(&db).await;
    let b = crate::helpers::spawn_app(&db).await;
    let doc = order_definition(&p);
    // The same document through both at once: one version.
    let (ra, rb) = futures::join!(put(&a, "shared", &doc), put(&b, "shared", &doc));
    let mut codes = [ra.0, rb.0];
    codes.sort();
    assert_eq!(codes, [200, 201], "{ra:?} {rb:?}");
    assert_eq!(
        (ra.1["version"].as_u64(), rb.1["version"].as_u64()),
        (Some(1), Some(1))
    );
    // Two different documents at once: two versions, numbered one after the other.
    let mut other = doc.clone();
    other["description"] = json!("another");
    let mut third = doc.clone();
    third["description"] = json!("a third");
    let (ra, rb) = futures::join!(put(&a, "shared", &other), put(&b, "shared", &third));
    let mut versions = [ra.1["version"].as_u64(), rb.1["version"].as_u64()];
    versions.sort();
    assert_eq!(
        (ra.0, rb.0, versions),
        (201, 201, [Some(2), Some(3)]),
        "{ra:?} {rb:?}"
    );
    // Stored through a, started through b; retired through a, refused by b.
    let (code, s) = b
        .post(
            "/v1/sagas?wait_ms=10000",
            &json!({"definition": "shared", "version": 1, "id": "x-1",
                                                 "payload": {"order": {"id": "Q"}}}),
        )
        .await;
    assert_eq!(
        (code, s["status"].as_str()),
        (201, Some("succeeded")),
        "{s}"
    );
    let (code, _) = a
        .post(
            "/v1/definitions/shared/versions/1/retire",
            &json!({"reason": "moved"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, e) = b
        .post(
            "/v1/sagas",
            &json!({"definition": "shared", "version": 1, "payload": {"order": {"id": 1}}}),
        )
        .await;
    assert_eq!(code, 409, "{e}");
    a.stop().await;
    b.stop().await;
}
