//! DTM's HTTP protocol (docs/dtm.md), driven by DTM's own Python client (PyPI dtmcli 1.7.7.0,
//! pinned) against the real application and a real participant on loopback, on SQLite,
//! MariaDB and PostgreSQL: the calls a participant written for DTM sees, in DTM's order, and
//! each transaction the same saga the native API shows.

use crate::helpers::{sigterm_and_wait, spawn_app, spawn_app_with, test_settings, Api, TestDb};
use crate::participant::{Call, Participant, Reply};
use crate::security::token;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The client release the tests pin.
const DTMCLI: &str = "dtmcli==1.7.7.0";

/// The scenario runner (a few lines of Python around dtmcli).
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/dtm_client.py");

/// A Python with dtmcli: `$SAGA_TEST_DTMCLI_PYTHON` (`.ci/run` makes one), else a virtualenv
/// made once under the target directory. `None` (the test is skipped, said on stderr) when
/// neither can be had, except under `CI=true`, where that fails the test.
fn python() -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = PY.get_or_init(|| {
        if let Ok(p) = std::env::var("SAGA_TEST_DTMCLI_PYTHON") {
            return Ok(p.into());
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dtmcli-1.7.7.0");
        let (py, done) = (dir.join("bin/python"), dir.join("installed"));
        if done.exists() {
            return Ok(py);
        }
        let run = |c: &mut Command| {
            c.status()
                .map_err(|e| e.to_string())
                .and_then(|s| s.success().then_some(()).ok_or(s.to_string()))
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir))
            .and_then(|()| run(Command::new(&py).args(["-m", "pip", "install", "-q", DTMCLI])))
            .and_then(|()| std::fs::write(&done, DTMCLI).map_err(|e| e.to_string()))
            .map(|()| py)
    });
    match got {
        Ok(py) => Some(py.clone()),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("no Python with {DTMCLI} ({why}) and CI=true: the DTM tests must run")
        }
        Err(why) => {
            eprintln!("SKIPPED: no Python with {DTMCLI} ({why}); set SAGA_TEST_DTMCLI_PYTHON");
            None
        }
    }
}

/// Runs one scenario of `dtm_client.py`: `{"gid", "ok"[, "error"]}`.
async fn dtmcli(py: &PathBuf, spec: Value) -> Value {
    // Async: the application under test runs on this thread's actors.
    let out = tokio::process::Command::new(py)
        .arg(CLIENT)
        .arg(spec.to_string())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "dtm_client.py said {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A saga of DTM's client with one `[body, action, compensate]` per step on `p`.
fn saga(api: &Api, steps: &[(&str, &str)], p: &Participant) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(action, compensate)| json!([{"amount": 30}, p.url(action), p.url(compensate)]))
        .collect();
    json!({"kind": "saga", "dtm": format!("{}/api/dtmsvr", api.base), "steps": steps})
}

/// DTM's query parameters of a call.
fn params(c: &Call) -> HashMap<String, String> {
    url::form_urlencoded::parse(c.query.as_bytes())
        .into_owned()
        .collect()
}

/// `(path, branch_id, op)` of every call, in order.
fn branch_calls(p: &Participant) -> Vec<(String, String, String)> {
    p.calls()
        .iter()
        .map(|c| {
            let q = params(c);
            (c.path.clone(), q["branch_id"].clone(), q["op"].clone())
        })
        .collect()
}

fn call(path: &str, branch: &str, op: &str) -> (String, String, String) {
    (path.into(), branch.into(), op.into())
}

/// `GET /api/dtmsvr/query?gid=`.
async fn query(api: &Api, gid: &str) -> Value {
    let (code, v) = api.get(&format!("/api/dtmsvr/query?gid={gid}")).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// A 200 answer whose body says FAILURE: a DTM participant's "no".
fn failure_body() -> Reply {
    Reply::Status {
        code: 200,
        body: json!({"dtm_result": "FAILURE", "message": "insufficient balance"}),
        delay_ms: 0,
    }
}

async fn a_saga_runs_as_dtm_runs_it(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let spec = saga(
        &app,
        &[
            ("/TransOut", "/TransOutRevert"),
            ("/TransIn", "/TransInRevert"),
        ],
        &p,
    );
    let r = dtmcli(&py, spec).await;
    assert_eq!(r["ok"], true, "{r}");
    let gid = r["gid"].as_str().unwrap();
    // One world: the native API shows the same saga, its steps named by branch id.
    let v = app.wait_status(gid, &["succeeded"], 20).await;
    assert_eq!(v["name"], "dtm_saga");
    assert_eq!(v["steps"][0]["name"], "01");
    assert_eq!(
        branch_calls(&p),
        [
            call("/TransOut", "01", "action"),
            call("/TransIn", "02", "action")
        ]
    );
    for c in p.calls() {
        // As DTM calls: POST, the payload verbatim, its query parameters, JSON.
        assert_eq!(c.method, "POST");
        assert_eq!(c.body, json!({"amount": 30}));
        assert_eq!(params(&c)["gid"], gid);
        assert_eq!(params(&c)["trans_type"], "saga");
        assert!(c.header("content-type").starts_with("application/json"));
    }
    let q = query(&app, gid).await;
    assert_eq!(q["transaction"]["status"], "succeed", "{q}");
    assert_eq!(q["transaction"]["trans_type"], "saga");
    let rows: Vec<(&str, &str, &str)> = q["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or("");
            (s("branch_id"), s("op"), s("status"))
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("01", "compensate", "prepared"),
            ("01", "action", "succeed"),
            ("02", "compensate", "prepared"),
            ("02", "action", "succeed")
        ]
    );
    let (code, all) = app
        .get("/api/dtmsvr/all?transType=saga&status=succeed")
        .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["transactions"][0]["gid"], gid);
    assert_eq!(all["next_position"], "");
    // In the metrics like any saga, and the DTM surface by route and answer.
    let finished = "saga_finished_total{name=\"dtm_saga\",status=\"succeeded\"}";
    assert_eq!(app.metric(finished).await, 1.0);
    let submits = "saga_dtm_requests_total{result=\"success\",route=\"submit\"}";
    assert_eq!(app.metric(submits).await, 1.0);
    app.stop().await;
}

/// A step refused (409, or a 200 whose body says FAILURE) is compensated too, then every
/// step before it, in reverse order: the calls DTM makes.
async fn a_refusal_rolls_back_as_dtm_does(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    for (i, no) in [Reply::refuse(0), failure_body()].into_iter().enumerate() {
        let p = Participant::start().await;
        p.script("/TransIn", [no]);
        let spec = saga(
            &app,
            &[
                ("/TransOut", "/TransOutRevert"),
                ("/TransIn", "/TransInRevert"),
            ],
            &p,
        );
        let r = dtmcli(&py, spec).await;
        assert_eq!(r["ok"], true, "submit is accepted before it runs: {r}");
        let gid = r["gid"].as_str().unwrap();
        app.wait_status(gid, &["compensated"], 20).await;
        assert_eq!(
            branch_calls(&p),
            [
                call("/TransOut", "01", "action"),
                call("/TransIn", "02", "action"),
                call("/TransInRevert", "02", "compensate"),
                call("/TransOutRevert", "01", "compensate")
            ],
            "answer {i}"
        );
        let q = query(&app, gid).await;
        assert_eq!(q["transaction"]["status"], "failed", "{q}");
    }
    app.stop().await;
}

/// ONGOING (425, or a body saying so) is asked again after retry_interval with no attempt
/// spent; a 5xx is retried (one attempt spent).
async fn ongoing_and_errors_are_asked_again(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let ongoing = Reply::Status {
        code: 200,
        body: json!({"dtm_result": "ONGOING"}),
        delay_ms: 0,
    };
    p.script("/TransIn", [Reply::code(425), ongoing, Reply::code(500)]);
    let mut spec = saga(
        &app,
        &[
            ("/TransOut", "/TransOutRevert"),
            ("/TransIn", "/TransInRevert"),
        ],
        &p,
    );
    spec["options"] = json!({"retry_interval": 1});
    let r = dtmcli(&py, spec).await;
    let gid = r["gid"].as_str().unwrap().to_string();
    let v = app.wait_status(&gid, &["succeeded"], 30).await;
    assert_eq!(
        v["steps"][1]["attempts"], 2,
        "ongoing spends no attempt: {v}"
    );
    let ins: Vec<_> = p
        .calls()
        .into_iter()
        .filter(|c| c.path == "/TransIn")
        .collect();
    assert_eq!(ins.len(), 4);
    for w in ins.windows(2) {
        // retry_interval is 1 s: never asked sooner.
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(950),
            "{:?}",
            w[1].at - w[0].at
        );
    }
    assert!(
        !p.calls().iter().any(|c| c.path.ends_with("Revert")),
        "nothing compensated"
    );
    app.stop().await;
}

/// `wait_result`: the submit answers once the transaction has ended, SUCCESS or FAILURE.
async fn wait_result_answers_when_it_ended(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let mut spec = saga(&app, &[("/TransOut", "/TransOutRevert")], &p);
    spec["options"] = json!({"wait_result": true});
    let r = dtmcli(&py, spec.clone()).await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, v) = app
        .get(&format!("/v1/sagas/{}", r["gid"].as_str().unwrap()))
        .await;
    assert_eq!(v["status"], "succeeded", "ended before the answer: {v}");

    p.script("/TransOut", [Reply::refuse(0)]);
    let r = dtmcli(&py, spec).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().starts_with("DTMFailureError"),
        "{r}"
    );
    let (_, v) = app
        .get(&format!("/v1/sagas/{}", r["gid"].as_str().unwrap()))
        .await;
    assert_eq!(v["status"], "compensated", "ended before the answer: {v}");
    app.stop().await;
}

/// custom_data's `orders`: a step waits for the steps it names, and only for those.
async fn concurrent_orders_are_honoured(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/A", [Reply::slow(1_000)]);
    let mut spec = saga(&app, &[("/A", "/Ar"), ("/B", "/Br"), ("/C", "/Cr")], &p);
    spec["orders"] = json!({"2": [0, 1]});
    let r = dtmcli(&py, spec).await;
    let gid = r["gid"].as_str().unwrap();
    app.wait_status(gid, &["succeeded"], 20).await;
    let at = |path: &str| p.calls().iter().find(|c| c.path == path).unwrap().at;
    assert!(
        at("/B") < at("/A") + Duration::from_millis(1_000),
        "B waits for nobody"
    );
    assert!(
        at("/C") >= at("/A") + Duration::from_millis(1_000),
        "C waits for A"
    );
    app.stop().await;
}

/// The same gid and content again: SUCCESS, not a second run; another content: FAILURE.
async fn a_gid_is_one_transaction(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let (code, v) = app.get("/api/dtmsvr/newGid").await;
    assert_eq!((code, &v["dtm_result"]), (200, &json!("SUCCESS")), "{v}");
    let gid = v["gid"].as_str().unwrap();
    let mut spec = saga(&app, &[("/TransOut", "/TransOutRevert")], &p);
    spec["gid"] = json!(gid);
    assert_eq!(dtmcli(&py, spec.clone()).await["ok"], true);
    app.wait_status(gid, &["succeeded"], 20).await;
    assert_eq!(dtmcli(&py, spec.clone()).await["ok"], true);
    spec["steps"][0][0] = json!({"amount": 31});
    let r = dtmcli(&py, spec).await;
    assert_eq!(r["error"], "DTMFailureError: FAILURE", "{r}");
    assert_eq!(p.calls().len(), 1, "one run");
    app.stop().await;
}

/// What cannot be honoured is refused, the field named, nothing recorded or called.
async fn what_cannot_be_honoured_is_refused(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let base = saga(&app, &[("/TransOut", "/TransOutRevert")], &p);
    let cases = [
        ("protocol", json!({"options": {"protocol": "grpc"}})),
        ("trans_type", json!({"options": {"trans_type": "xa"}})),
        ("payloads", json!({"options": {"payloads": ["{}", "{}"]}})),
        ("steps", json!({"steps": [[{}, "topic://orders", ""]]})),
        ("gid", json!({"gid": "a b"})),
        ("retry_limit", json!({"options": {"retry_limit": -1}})),
    ];
    for (field, patch) in cases {
        let mut spec = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let r = dtmcli(&py, spec).await;
        assert_eq!(r["ok"], false, "{field}: {r}");
        if let Some(gid) = r["gid"].as_str().filter(|g| *g != "a b") {
            let q = query(&app, gid).await;
            assert!(q["transaction"].is_null(), "{field}: nothing recorded: {q}");
        }
    }
    // The answer itself, as a DTM client reads it: FAILURE, the field named.
    let body = json!({"gid": "g-x", "trans_type": "saga", "protocol": "grpc",
        "steps": [{"action": p.url("/a")}], "payloads": ["{}"]});
    let (code, v) = app.post("/api/dtmsvr/submit", &body).await;
    assert_eq!(code, 400);
    assert_eq!(v["dtm_result"], "FAILURE");
    assert!(
        v["message"].as_str().unwrap().starts_with("protocol:"),
        "{v}"
    );
    // The outbound policy applies as to a native start.
    let body = json!({"gid": "g-y", "trans_type": "saga",
        "steps": [{"action": "http://169.254.169.254/latest"}], "payloads": ["{}"]});
    let (code, v) = app.post("/api/dtmsvr/submit", &body).await;
    assert_eq!((code, &v["dtm_result"]), (400, &json!("FAILURE")), "{v}");
    assert!(p.calls().is_empty());
    let refused = "saga_dtm_requests_total{result=\"failure\",route=\"submit\"}";
    assert!(app.metric(refused).await >= 8.0);
    let (_, v) = app.get("/v1/counts").await;
    assert!(
        v["counts"].as_object().unwrap().values().all(|n| n == 0),
        "{v}"
    );
    app.stop().await;
}

/// Secret branch headers are sent as given and shown as `***`.
async fn branch_headers_are_sent_and_secrets_masked(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let mut spec = saga(&app, &[("/TransOut", "/TransOutRevert")], &p);
    spec["options"] =
        json!({"branch_headers": {"Authorization": "Bearer s3cret", "X-Tenant": "t1"}});
    let r = dtmcli(&py, spec).await;
    let gid = r["gid"].as_str().unwrap();
    app.wait_status(gid, &["succeeded"], 20).await;
    let c = &p.calls()[0];
    assert_eq!(c.header("authorization"), "Bearer s3cret");
    assert_eq!(c.header("x-tenant"), "t1");
    let q = query(&app, gid).await;
    let h = &q["transaction"]["branch_headers"];
    assert_eq!(
        (&h["Authorization"], &h["X-Tenant"]),
        (&json!("***"), &json!("t1")),
        "{q}"
    );
    let (_, v) = app.get(&format!("/v1/sagas/{gid}?include=request")).await;
    assert!(!v.to_string().contains("s3cret"), "{v}");
    app.stop().await;
}

/// A TCC transaction of DTM's client with one `[body, try, confirm, cancel]` per branch on `p`.
fn tcc(api: &Api, branches: &[&str], p: &Participant) -> Value {
    let branches: Vec<Value> = branches
        .iter()
        .map(|b| json!([{"amount": 30}, p.url(&format!("/{b}/try")), p.url(&format!("/{b}/confirm")), p.url(&format!("/{b}/cancel"))]))
        .collect();
    json!({"kind": "tcc", "dtm": format!("{}/api/dtmsvr", api.base), "branches": branches})
}

/// TCC: the client prepares, registers and tries each branch, submits; the service confirms
/// every branch, the last registered first, with the branch's data as body.
async fn tcc_confirms_what_its_client_tried(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let r = dtmcli(&py, tcc(&app, &["a", "b"], &p)).await;
    assert_eq!(
        (&r["ok"], &r["submitted"]),
        (&json!(true), &json!(true)),
        "{r}"
    );
    let gid = r["gid"].as_str().unwrap();
    let v = app.wait_status(gid, &["succeeded"], 20).await;
    assert_eq!(v["name"], "dtm_tcc");
    assert_eq!(
        branch_calls(&p),
        [
            call("/a/try", "01", "try"),
            call("/b/try", "02", "try"),
            call("/b/confirm", "02", "confirm"),
            call("/a/confirm", "01", "confirm")
        ]
    );
    for c in p.calls().iter().filter(|c| c.path.ends_with("/confirm")) {
        assert_eq!(
            (c.method.as_str(), &c.body),
            ("POST", &json!({"amount": 30}))
        );
        assert_eq!(params(c)["trans_type"], "tcc");
    }
    let q = query(&app, gid).await;
    assert_eq!(q["transaction"]["status"], "succeed", "{q}");
    let ops: Vec<&str> = q["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["cancel", "confirm", "cancel", "confirm"]);
    app.stop().await;
}

/// TCC: a try refused, the client aborts; every registered branch is cancelled, the refused
/// one included, the last registered first.
async fn tcc_abort_cancels_every_registered_branch(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/b/try", [Reply::refuse(0)]);
    let r = dtmcli(&py, tcc(&app, &["a", "b"], &p)).await;
    assert_eq!(
        (&r["ok"], &r["submitted"]),
        (&json!(true), &json!(false)),
        "{r}"
    );
    let gid = r["gid"].as_str().unwrap();
    app.wait_status(gid, &["compensated"], 20).await;
    assert_eq!(
        branch_calls(&p),
        [
            call("/a/try", "01", "try"),
            call("/b/try", "02", "try"),
            call("/b/cancel", "02", "cancel"),
            call("/a/cancel", "01", "cancel")
        ]
    );
    assert_eq!(query(&app, gid).await["transaction"]["status"], "failed");
    app.stop().await;
}

/// A TCC transaction left prepared past its timeout_to_fail is cancelled; what its client
/// asks afterwards is refused as DTM refuses it.
async fn tcc_left_prepared_is_cancelled(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let gid = "tcc-left-1";
    let prepare = json!({"gid": gid, "trans_type": "tcc", "timeout_to_fail": 1});
    let (code, v) = app.post("/api/dtmsvr/prepare", &prepare).await;
    assert_eq!((code, &v["dtm_result"]), (200, &json!("SUCCESS")), "{v}");
    let branch = json!({"gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{\"n\": 1}",
        "confirm": p.url("/confirm"), "cancel": p.url("/cancel")});
    let (code, v) = app.post("/api/dtmsvr/registerBranch", &branch).await;
    assert_eq!(code, 200, "{v}");
    let (code, _) = app.post("/api/dtmsvr/registerTccBranch", &branch).await;
    assert_eq!(code, 200, "the same branch again: the same");
    let mut other = branch.clone();
    other["confirm"] = json!(p.url("/elsewhere"));
    let (code, v) = app.post("/api/dtmsvr/registerBranch", &other).await;
    assert_eq!((code, &v["dtm_result"]), (409, &json!("FAILURE")), "{v}");
    let mut blocked = branch.clone();
    blocked["branch_id"] = json!("02");
    blocked["cancel"] = json!("http://169.254.169.254/x");
    let (code, v) = app.post("/api/dtmsvr/registerBranch", &blocked).await;
    assert_eq!(code, 400, "the outbound policy: {v}");
    assert!(v["message"].as_str().unwrap().starts_with("cancel:"), "{v}");
    let v = app.wait_status(gid, &["compensated"], 20).await;
    assert_eq!(v["steps"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(p.paths_of(gid), ["/cancel"]);
    assert_eq!(p.calls()[0].body, json!({"n": 1}), "the branch's data");
    let mut late = branch.clone();
    late["branch_id"] = json!("02");
    let (code, v) = app.post("/api/dtmsvr/registerBranch", &late).await;
    assert_eq!(
        (code, &v["dtm_result"]),
        (409, &json!("FAILURE")),
        "no longer prepared: {v}"
    );
    let (code, v) = app
        .post(
            "/api/dtmsvr/submit",
            &json!({"gid": gid, "trans_type": "tcc"}),
        )
        .await;
    assert_eq!((code, &v["dtm_result"]), (409, &json!("FAILURE")), "{v}");
    let (code, _) = app
        .post(
            "/api/dtmsvr/registerBranch",
            &json!({"gid": "nobody", "trans_type": "tcc",
        "branch_id": "01", "data": "", "confirm": p.url("/c"), "cancel": p.url("/x")}),
        )
        .await;
    assert_eq!(code, 409, "no such prepared transaction");
    app.stop().await;
}

/// A msg of DTM's client: `how` (submit, prepare, rolled_back), one action per path on `p`.
fn msg(api: &Api, actions: &[&str], how: &str, p: &Participant) -> Value {
    let steps: Vec<Value> = actions
        .iter()
        .map(|a| json!([{"amount": 30}, p.url(a)]))
        .collect();
    json!({"kind": "msg", "dtm": format!("{}/api/dtmsvr", api.base), "steps": steps, "how": how,
        "query_prepared": p.url("/QueryPrepared")})
}

/// msg: prepare sends nothing; submit delivers every action in order, a refusal asked again
/// until it succeeds.
async fn msg_submitted_is_delivered(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/TransIn", [failure_body()]);
    let mut spec = msg(&app, &["/TransOut", "/TransIn"], "submit", &p);
    spec["options"] = json!({"retry_interval": 1});
    let r = dtmcli(&py, spec).await;
    assert_eq!(r["ok"], true, "{r}");
    let gid = r["gid"].as_str().unwrap();
    let v = app.wait_status(gid, &["succeeded"], 20).await;
    assert_eq!(v["name"], "dtm_msg");
    assert_eq!(
        branch_calls(&p),
        [
            call("/TransOut", "01", "action"),
            call("/TransIn", "02", "action"),
            call("/TransIn", "02", "action")
        ],
        "never asked: it was submitted"
    );
    assert_eq!(params(&p.calls()[0])["trans_type"], "msg");
    let q = query(&app, gid).await;
    assert_eq!(q["transaction"]["status"], "succeed", "{q}");
    assert_eq!(
        q["branches"].as_array().unwrap().len(),
        2,
        "the actions: {q}"
    );
    app.stop().await;
}

/// msg: the client's local transaction rolled back, it aborts: nothing is sent.
async fn msg_aborted_sends_nothing(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    let r = dtmcli(&py, msg(&app, &["/TransOut"], "rolled_back", &p)).await;
    assert_eq!(
        r["error"], "DTMFailureError: the local transaction rolled back",
        "{r}"
    );
    let gid = r["gid"].as_str().unwrap();
    let v = app.wait_status(gid, &["compensated"], 20).await;
    assert_eq!(
        query(&app, gid).await["transaction"]["status"],
        "failed",
        "{v}"
    );
    assert!(p.calls().is_empty(), "{:?}", branch_calls(&p));
    app.stop().await;
}

/// msg left prepared past timeout_to_fail: its client is asked (GET query_prepared, op=msg,
/// branch 00); a commit is delivered, a rollback sends nothing.
async fn msg_left_prepared_asks_query_prepared(db: TestDb) {
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let (yes, no) = (Participant::start().await, Participant::start().await);
    no.script("/QueryPrepared", [Reply::refuse(0)]);
    let mut gids = vec![];
    for p in [&yes, &no] {
        let mut spec = msg(&app, &["/TransOut"], "prepare", p);
        spec["options"] = json!({"timeout_to_fail": 1});
        let r = dtmcli(&py, spec).await;
        assert_eq!(r["ok"], true, "{r}");
        gids.push(r["gid"].as_str().unwrap().to_string());
    }
    let (_, v) = app.get(&format!("/v1/sagas/{}", gids[0])).await;
    assert_eq!(v["status"], "prepared", "{v}");
    app.wait_status(&gids[0], &["succeeded"], 20).await;
    app.wait_status(&gids[1], &["compensated"], 20).await;
    let asked = &yes.calls()[0];
    assert_eq!(
        (asked.path.as_str(), asked.method.as_str()),
        ("/QueryPrepared", "GET")
    );
    assert_eq!(params(asked)["op"], "msg");
    assert_eq!(params(asked)["branch_id"], "00");
    assert_eq!(branch_calls(&yes)[1..], [call("/TransOut", "01", "action")]);
    assert_eq!(
        branch_calls(&no),
        [call("/QueryPrepared", "00", "msg")],
        "rolled back: nothing delivered"
    );
    app.stop().await;
}

/// The real binary SIGKILLed between two branches of a DTM saga, started again on the same
/// database: the branch whose answer was recorded is not sent again; the one in flight is,
/// with the same Idempotency-Key, once it cannot still be running; the saga ends.
async fn a_sigkill_between_branches_sends_no_recorded_branch_again(db: TestDb) {
    let Some(py) = python() else { return };
    let p = Participant::start().await;
    p.default_reply("/b2", Reply::slow(1_500));
    let (mut child, api, _) = crate::helpers::start_binary(&db);
    let mut spec = saga(&api, &[("/b1", "/r1"), ("/b2", "/r2"), ("/b3", "/r3")], &p);
    spec["options"] = json!({"request_timeout": 2});
    let r = dtmcli(&py, spec).await;
    let gid = r["gid"].as_str().unwrap().to_string();
    crate::helpers::eventually(20, "branch 02 in flight", || {
        p.calls().iter().any(|c| c.path == "/b2")
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (mut child, api, _) = crate::helpers::start_binary(&db);
    api.wait_status(&gid, &["succeeded"], 30).await;
    child.kill().ok();
    let _ = child.wait();
    let paths: Vec<String> = p.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        ["/b1", "/b2", "/b2", "/b3"],
        "b1 was recorded: never again"
    );
    let b2: Vec<Call> = p.calls().into_iter().filter(|c| c.path == "/b2").collect();
    assert_eq!(
        b2[0].header("idempotency-key"),
        b2[1].header("idempotency-key")
    );
    assert!(
        b2[1].at - b2[0].at >= Duration::from_millis(1_900),
        "not while it may run"
    );
}

/// resetNextCronTime calls now what waits for its time; forceStop stops going forward and
/// compensates (the native operator actions, through DTM's routes).
async fn reset_next_cron_time_and_force_stop_act_at_once(db: TestDb) {
    let app = spawn_app(&db).await;
    let p = Participant::start().await;
    p.default_reply("/b2", Reply::code(503));
    let body = json!({"gid": "ops-1", "trans_type": "saga", "retry_interval": 600,
        "steps": [{"action": p.url("/b1"), "compensate": p.url("/r1")},
                  {"action": p.url("/b2"), "compensate": p.url("/r2")}],
        "payloads": ["{}", "{}"]});
    let (code, v) = app.post("/api/dtmsvr/submit", &body).await;
    assert_eq!(code, 200, "{v}");
    crate::helpers::eventually(10, "b2 failed once", || p.paths_of("ops-1").len() == 2).await;
    // Its retry waits 10 minutes; resetNextCronTime makes it due now.
    let (code, v) = app
        .post("/api/dtmsvr/resetNextCronTime", &json!({"gid": "ops-1"}))
        .await;
    assert_eq!((code, &v["dtm_result"]), (200, &json!("SUCCESS")), "{v}");
    crate::helpers::eventually(10, "b2 called again", || p.paths_of("ops-1").len() == 3).await;
    let (code, v) = app
        .post("/api/dtmsvr/forceStop", &json!({"gid": "ops-1"}))
        .await;
    assert_eq!((code, &v["dtm_result"]), (200, &json!("SUCCESS")), "{v}");
    app.wait_status("ops-1", &["compensated"], 20).await;
    assert_eq!(
        p.paths_of("ops-1")[3..],
        ["/r2", "/r1"],
        "both undone, DTM's order"
    );
    let (_, full) = app.get("/v1/sagas/ops-1?include=attempts").await;
    let ops: Vec<&str> = full["operator_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["action"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["wake", "abort"], "{full}");
    let (code, v) = app
        .post("/api/dtmsvr/forceStop", &json!({"gid": "ops-1"}))
        .await;
    assert_eq!(
        (code, &v["dtm_result"]),
        (409, &json!("FAILURE")),
        "ended: {v}"
    );
    let (code, _) = app
        .post("/api/dtmsvr/forceStop", &json!({"gid": "nobody"}))
        .await;
    assert_eq!(code, 404);
    app.stop().await;
}

/// A prepared msg has its client's deadline; a submit clears it (the transaction runs to its
/// end). That clearing is in the log: after a restart past the old deadline a message still
/// being delivered is not turned back for "deadline exceeded".
async fn a_submitted_msg_keeps_no_deadline_across_a_restart(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/deliver", Reply::code(503));
    let env = [("SAGA__PARTICIPANT__BREAKER__ENABLED", "false")];
    let (mut child, api, _) = crate::helpers::start_binary_with(&db, &env);
    let body = json!({"gid": "msg-deadline", "trans_type": "msg", "timeout_to_fail": 1,
        "retry_interval": 1, "steps": [{"action": p.url("/deliver")}], "payloads": ["{}"],
        "query_prepared": p.url("/QueryPrepared")});
    let (code, v) = api.post("/api/dtmsvr/prepare", &body).await;
    assert_eq!(code, 200, "{v}");
    let (_, s) = api.get("/v1/sagas/msg-deadline").await;
    assert!(
        s["deadline_at"].is_string(),
        "prepared: its client's deadline: {s}"
    );
    let (code, v) = api.post("/api/dtmsvr/submit", &body).await;
    assert_eq!(code, 200, "{v}");
    let deliveries = || p.calls().iter().filter(|c| c.path == "/deliver").count();
    crate::helpers::eventually(20, "a delivery refused", || deliveries() > 0).await;
    let (_, s) = api.get("/v1/sagas/msg-deadline").await;
    assert!(s["deadline_at"].is_null(), "submitted: no deadline: {s}");
    sigterm_and_wait(&mut child).await;
    // Past the old deadline, a new process loads the saga from the log.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (_child, api, _) = crate::helpers::start_binary_with(&db, &env);
    let before = deliveries();
    crate::helpers::eventually(20, "delivery going on after the restart", || {
        deliveries() > before
    })
    .await;
    let (_, s) = api.get("/v1/sagas/msg-deadline").await;
    assert_eq!(s["status"], "running", "{s}");
    assert!(s["deadline_at"].is_null(), "{s}");
    p.default_reply("/deliver", Reply::ok());
    let s = api
        .wait_status("msg-deadline", &["succeeded", "compensated", "stuck"], 20)
        .await;
    assert_eq!(
        s["status"], "succeeded",
        "delivered, never turned back: {s}"
    );
}

crate::on_every_db!(
    a_submitted_msg_keeps_no_deadline_across_a_restart,
    reset_next_cron_time_and_force_stop_act_at_once,
    a_sigkill_between_branches_sends_no_recorded_branch_again,
    msg_submitted_is_delivered,
    msg_aborted_sends_nothing,
    msg_left_prepared_asks_query_prepared,
);

crate::on_every_db!(
    tcc_confirms_what_its_client_tried,
    tcc_abort_cancels_every_registered_branch,
    tcc_left_prepared_is_cancelled,
);

crate::on_every_db!(
    a_saga_runs_as_dtm_runs_it,
    a_refusal_rolls_back_as_dtm_does,
    ongoing_and_errors_are_asked_again,
    wait_result_answers_when_it_ended,
    concurrent_orders_are_honoured,
    a_gid_is_one_transaction,
    what_cannot_be_honoured_is_refused,
    branch_headers_are_sent_and_secrets_masked,
);

/// A participant written for DTM, with DTM's own barrier (dtmcli's BranchBarrier) on MariaDB:
/// a call sent again after a lost answer takes effect once, and the refused step's
/// compensation (which DTM, and so this service, sends) is a null compensation.
#[actix_web::test]
async fn a_dtm_barrier_participant_sees_each_effect_once() {
    let Some(db) = TestDb::new(crate::helpers::Kind::Mysql).await else {
        return;
    };
    let Some(py) = python() else { return };
    let app = spawn_app(&db).await;
    let u = url::Url::parse(&db.url).unwrap();
    let business = format!("{}_p", u.path().trim_start_matches('/'));
    let mut child = tokio::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/dtm_barrier_participant.py"
        ))
        .args([
            u.host_str().unwrap(),
            &u.port().unwrap_or(3306).to_string(),
            u.username(),
            &business,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the participant starts");
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncBufReadExt;
        while !line.starts_with("listening on ") {
            line.clear();
            assert!(
                err.read_line(&mut line).await.unwrap() > 0,
                "the participant ended"
            );
        }
    })
    .await
    .expect("the participant listens");
    let base = format!("http://{}", line.trim().trim_start_matches("listening on "));
    let participant = Api::new(base.clone());
    let run = |steps: Value| {
        json!({"kind": "saga", "dtm": format!("{}/api/dtmsvr", app.base), "steps": steps,
            "options": {"retry_interval": 1}})
    };
    let (out, into) = (json!({"delta": -30}), json!({"delta": 30}));
    // A lost answer: the action goes again, the barrier skips it.
    let r = dtmcli(
        &py,
        run(json!([
            [
                out,
                format!("{base}/a/action/lose"),
                format!("{base}/a/compensate")
            ],
            [
                into,
                format!("{base}/b/action"),
                format!("{base}/b/compensate")
            ]
        ])),
    )
    .await;
    app.wait_status(r["gid"].as_str().unwrap(), &["succeeded"], 30)
        .await;
    let (_, b) = participant.get("/balances").await;
    assert_eq!(b, json!({"a": 970, "b": 1030}), "each effect once");
    // Then a refusal: the refused step's compensation is a null one, the lost answer's is
    // undone once.
    let r = dtmcli(
        &py,
        run(json!([
            [
                out,
                format!("{base}/a/action/lose"),
                format!("{base}/a/compensate/lose")
            ],
            [
                into,
                format!("{base}/b/action/refuse"),
                format!("{base}/b/compensate")
            ]
        ])),
    )
    .await;
    app.wait_status(r["gid"].as_str().unwrap(), &["compensated"], 30)
        .await;
    let (_, b) = participant.get("/balances").await;
    assert_eq!(
        b,
        json!({"a": 970, "b": 1030}),
        "nothing of the second saga stays"
    );
    let _ = child.kill().await;
    app.stop().await;
}

/// With tokens, the DTM surface needs one too; on the `dtm.bind` listener with
/// `dtm.allow_anonymous`, it does not (and the rest of the API still does).
#[actix_web::test]
async fn tokens_guard_the_dtm_surface_unless_its_listener_is_anonymous() {
    let Some(db) = TestDb::new(crate::helpers::Kind::Sqlite).await else {
        return;
    };
    let mut s = test_settings(&db);
    s.auth.tokens = vec![token("client", "t0ken-client", &["read", "write"])];
    s.dtm.bind = "127.0.0.1:0".into();
    s.dtm.allow_anonymous = true;
    let app = spawn_app_with(s).await;
    let dtm_port = app.dtm_port.expect("dtm.bind listens");
    let other = Api::new(format!("http://127.0.0.1:{dtm_port}"));
    let (code, _) = app.get("/api/dtmsvr/newGid").await;
    assert_eq!(code, 401, "the service's own listener needs a token");
    let r = app
        .client
        .get(format!("{}/api/dtmsvr/newGid", app.base))
        .bearer_auth("t0ken-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, v) = other.get("/api/dtmsvr/newGid").await;
    assert_eq!(code, 200, "anonymous on dtm.bind: {v}");
    let (code, _) = other.get("/v1/sagas").await;
    assert_eq!(code, 401, "only the DTM surface is anonymous there");
    app.stop().await;
}
