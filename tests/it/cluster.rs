//! Several instances on one MariaDB or PostgreSQL database: one driver per saga (leases), a
//! killed, stopped or paused instance's sagas taken over, operator actions on any instance, and
//! SQLite refusing a second instance. Real binaries, so that SIGKILL and SIGSTOP are real.

use crate::helpers::{
    eventually, metric, sigterm_and_wait, start_binary_with, Api, Binary, Kind, Lines, TestDb,
};
use crate::participant::{Call, Participant, Reply};
use serde_json::json;
use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

/// Short leases and polls, so that takeovers happen within a test's patience.
const LEASE_MS: u64 = 2_000;

fn start(db: &TestDb, id: &str) -> (Binary, Api, Lines) {
    start_with_timeout(db, id, 1000)
}

/// [`start`] with participant calls timed out after `timeout_ms`.
fn start_with_timeout(db: &TestDb, id: &str, timeout_ms: u64) -> (Binary, Api, Lines) {
    start_with(db, id, timeout_ms, &[])
}

/// [`start_with_timeout`] with more settings.
fn start_with(
    db: &TestDb,
    id: &str,
    timeout_ms: u64,
    more: &[(&str, &str)],
) -> (Binary, Api, Lines) {
    let (lease, timeout) = (LEASE_MS.to_string(), timeout_ms.to_string());
    let mut env = vec![
        ("SAGA__CLUSTER__INSTANCE_ID", id),
        ("SAGA__CLUSTER__LEASE_MS", lease.as_str()),
        ("SAGA__CLUSTER__POLL_MS", "100"),
        ("SAGA__PARTICIPANT__CALL_TIMEOUT_MS", timeout.as_str()),
        // These tests watch leases while a saga keeps retrying against a failing participant;
        // a breaker would space its calls by its cool-down (tests/it/breakers.rs covers it).
        ("SAGA__PARTICIPANT__BREAKER__ENABLED", "false"),
    ];
    env.extend_from_slice(more);
    start_binary_with(db, &env)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// The instance id behind an `X-Saga-Instance` token (`{id}#{generation}`).
fn instance_of(c: &Call) -> &str {
    c.header("x-saga-instance")
        .split('#')
        .next()
        .unwrap_or_default()
}

/// No two calls of the same step and phase overlap: with every answer `slow(ms)`, the calls of
/// one idempotency key are at least `ms` apart.
fn no_overlapping_calls(calls: &[Call], answer_ms: u64) {
    let mut by_key: HashMap<&str, Vec<Instant>> = HashMap::new();
    for c in calls {
        by_key
            .entry(c.header("idempotency-key"))
            .or_default()
            .push(c.at);
    }
    for (key, mut at) in by_key {
        at.sort();
        for w in at.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(answer_ms),
                "{key}: two calls in flight at once ({gap:?} apart)"
            );
        }
    }
}

/// Starts saga `id` on `api`: step a succeeds, step b answers 503 and is retried every
/// `backoff_ms` (up to 1000 calls) until the test makes it succeed.
async fn retrying_saga(p: &Participant, api: &Api, id: &str, backoff_ms: u64) {
    p.default_reply("/a/action", Reply::ok());
    p.default_reply("/b/action", Reply::code(503));
    let mut step_b = p.step("b");
    step_b["retry"] = json!({"max_attempts": 1000, "initial_backoff_ms": backoff_ms, "max_backoff_ms": backoff_ms});
    let body = json!({"id": id, "name": "r", "steps": [p.step("a"), step_b]});
    assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
}

// SQLite too: its guard of new sagas is in their INSERT, the others' in SELECTs of their own.
crate::on_every_db!(no_saga_is_written_under_a_token_taken_over);

crate::on_shared_dbs!(
    dtm_transactions_go_across_instances,
    a_takeover_sends_each_call_with_its_whole_timeout,
    a_transaction_left_idle_past_the_lease_is_ended_by_the_server,
    a_killed_instance_is_taken_over_without_doubled_calls,
    a_stopped_instance_hands_over_at_once,
    a_paused_instance_calls_nothing_after_its_lease,
    operator_actions_work_on_any_instance,
    a_restart_takes_its_token_over_and_fences_a_process_still_running,
    a_saga_held_by_a_token_without_a_row_is_swept_up,
    a_delayed_compensation_and_a_deadline_fire_once_after_their_instance_died,
);

/// The setup of #29: two instances, 2 s leases, 40 three-step sagas whose step b takes 1.0 s at
/// the participant; the instance driving them is killed mid-flight and the other takes over.
/// Every call leaves with its configured timeout (5 s), so none is cut short by a renewal that
/// lags behind the takeover's burst of work, and the participant never holds two calls of one
/// step at once.
async fn a_takeover_sends_each_call_with_its_whole_timeout(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::ok());
    p.default_reply("/b/action", Reply::slow(1000));
    p.default_reply("/c/action", Reply::ok());
    // A small pool: saga work (claims, loads, the log writers) keeps its connections busy.
    // Two writers (the default is one): sagas sharded over writers stay covered.
    let pool = [
        ("SAGA__DATABASE__MAX_CONNECTIONS", "2"),
        ("SAGA__DATABASE__WRITERS", "2"),
    ];
    let (mut a, api_a, _) = start_with(&db, "a", 5000, &pool);
    let (_b, api_b, _) = start_with(&db, "b", 5000, &pool);
    let ids: Vec<String> = (0..40).map(|i| format!("t-{i}")).collect();
    let starts = ids.iter().map(|id| {
        let body = json!({"id": id, "name": "t", "steps": [p.step("a"), p.step("b"), p.step("c")]});
        let api = &api_a;
        async move { assert_eq!(api.post("/v1/sagas", &body).await.0, 201) }
    });
    futures::future::join_all(starts).await;
    // Killed mid-flight: some sagas wait for b's answer, the others have not called it yet.
    eventually(10, "a b in flight from a", || {
        p.calls()
            .iter()
            .any(|c| c.path == "/b/action" && instance_of(c) == "a")
    })
    .await;
    a.kill().unwrap();
    let _ = a.wait();
    for id in &ids {
        let v = api_b.wait_status(id, &["succeeded"], 60).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        // Nothing timed out: b's answer came back to the call that asked for it.
        let (_, v) = api_b.get(&format!("/v1/sagas/{id}?include=attempts")).await;
        for step in v["steps"].as_array().unwrap() {
            for c in step["history"].as_array().unwrap() {
                assert_eq!(c["outcome"], "success", "{id}: {c}");
            }
        }
    }
    for id in &ids {
        // The participant's view: a call of one key arrives only after the last one was over.
        no_overlapping_calls(&p.calls_of(id), 1000);
        for c in p.calls_of(id) {
            assert_eq!(c.header("x-saga-timeout-ms"), "5000", "{id}: {c:?}");
        }
    }
}

async fn a_killed_instance_is_taken_over_without_doubled_calls(db: TestDb) {
    let p = Participant::start().await;
    for s in ["a", "b", "c"] {
        p.default_reply(&format!("/{s}/action"), Reply::slow(300));
    }
    let (mut a, api_a, _) = start(&db, "a");
    let (mut b, api_b, lines_b) = start(&db, "b");
    let ids: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let body = json!({"id": id, "name": "k", "steps": [p.step("a"), p.step("b"), p.step("c")]});
        assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    }
    // Kill A while its sagas have calls in flight.
    eventually(10, "calls in flight from a", || {
        p.calls().iter().any(|c| instance_of(c) == "a")
    })
    .await;
    a.kill().unwrap();
    let _ = a.wait();
    let killed = Instant::now();
    for id in &ids {
        let s = api_b.wait_status(id, &["succeeded"], 30).await;
        assert_eq!(s["status"], "succeeded", "{s}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "takeover took {:?}",
        killed.elapsed()
    );
    for id in &ids {
        no_overlapping_calls(&p.calls_of(id), 300);
    }
    let (_, m) = api_b.get_text("/metrics").await;
    let taken = metric(&m, "saga_leases_total{event=\"taken_over\"}").unwrap_or(0.0);
    assert!(taken >= 1.0, "B took over A's sagas: {taken}");
    let lines = lines_b.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("took over the sagas")
            && l.contains("\"instance_id\":\"b\"")
            && l.contains("\"from\":\"a#")),
        "a takeover log line names both instances"
    );
    drop(lines);
    b.kill().ok();
    let _ = b.wait();
}

async fn a_stopped_instance_hands_over_at_once(db: TestDb) {
    let p = Participant::start().await;
    let long = LEASE_MS * 10;
    let (mut a, api_a, _) = start_binary_with(
        &db,
        &[
            ("SAGA__CLUSTER__INSTANCE_ID", "a"),
            ("SAGA__CLUSTER__LEASE_MS", &long.to_string()),
            ("SAGA__CLUSTER__POLL_MS", "100"),
        ],
    );
    let (mut b, api_b, _) = start(&db, "b");
    // Step b fails for a while (unknown outcome), so A holds a saga that is retrying.
    retrying_saga(&p, &api_a, "h-1", 50).await;
    eventually(10, "b retried by a", || {
        p.calls_of("h-1")
            .iter()
            .filter(|c| c.path == "/b/action" && instance_of(c) == "a")
            .count()
            >= 2
    })
    .await;
    sigterm_and_wait(&mut a).await;
    let stopped = Instant::now();
    p.default_reply("/b/action", Reply::ok());
    let s = api_b.wait_status("h-1", &["succeeded"], 20).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert!(
        stopped.elapsed() < Duration::from_millis(long / 2),
        "B took over a released saga in {:?}, not after A's {long} ms lease",
        stopped.elapsed()
    );
    assert!(p
        .calls_of("h-1")
        .iter()
        .any(|c| c.path == "/b/action" && instance_of(c) == "b"));
    b.kill().ok();
    let _ = b.wait();
}

async fn a_paused_instance_calls_nothing_after_its_lease(db: TestDb) {
    let p = Participant::start().await;
    let (mut a, api_a, _) = start(&db, "a");
    let (mut b, api_b, _) = start(&db, "b");
    retrying_saga(&p, &api_a, "z-1", 20).await;
    let from = |who: &str| {
        p.calls_of("z-1")
            .into_iter()
            .filter(|c| c.path == "/b/action" && instance_of(c) == who)
            .collect::<Vec<_>>()
    };
    eventually(10, "a retrying b", || from("a").len() >= 2).await;
    signal(&a, libc::SIGSTOP);
    eventually(20, "b took the saga over", || !from("b").is_empty()).await;
    let first_b = from("b")[0].at;
    signal(&a, libc::SIGCONT);
    // A wakes with timers due and an expired lease: the moment it could (wrongly) act is until
    // it has counted the lease as lost (and dropped its sagas).
    metric_reaches(&api_a, "saga_leases_total{event=\"lost\"}", 1.0, 20).await;
    let late: Vec<_> = from("a").into_iter().filter(|c| c.at > first_b).collect();
    assert!(
        late.is_empty(),
        "A called after B took over: {:?}",
        late.iter()
            .map(|c| c.header("x-saga-attempt"))
            .collect::<Vec<_>>()
    );
    p.default_reply("/b/action", Reply::ok());
    let s = api_b.wait_status("z-1", &["succeeded"], 20).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let (_, m) = api_a.get_text("/metrics").await;
    assert!(
        metric(&m, "saga_leases_total{event=\"lost\"}").unwrap_or(0.0) >= 1.0,
        "A counts its lost leases: {m}"
    );
    for c in [&mut a, &mut b] {
        c.kill().ok();
        let _ = c.wait();
    }
}

/// Waits until `series` on `api` reaches `at_least`, failing after `secs`.
async fn metric_reaches(api: &Api, series: &str, at_least: f64, secs: u64) {
    crate::helpers::until(secs, series, || async {
        let v = api.metric(series).await;
        (v >= at_least).then_some(()).ok_or(format!("{v}"))
    })
    .await
}

async fn a_restart_takes_its_token_over_and_fences_a_process_still_running(db: TestDb) {
    let p = Participant::start().await;
    let (mut a1, api1, lines1) = start(&db, "a");
    retrying_saga(&p, &api1, "t-1", 50).await;
    let b_calls = || {
        p.calls_of("t-1")
            .iter()
            .filter(|c| c.path == "/b/action")
            .count()
    };
    eventually(10, "a retrying b", || b_calls() >= 2).await;

    // A second process given the same id while the first still runs: it takes the token over
    // and resumes the saga; the first finds its lease gone at its next renewal.
    let (mut a2, api2, lines2) = start(&db, "a");
    eventually(10, "the first process gives its sagas up", || {
        lines1
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("taken over by another process"))
    })
    .await;
    assert!(lines2
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("took over the lease token of the earlier run")));
    metric_reaches(&api1, "saga_leases_total{event=\"lost\"}", 1.0, 10).await;
    metric_reaches(&api2, "saga_leases_total{event=\"resumed\"}", 1.0, 10).await;
    a1.kill().ok();
    let _ = a1.wait();
    // Renewals of the second after the first is gone: its token is the newest of id "a".
    let renewed = api2.metric("saga_leases_total{event=\"renewed\"}").await;
    metric_reaches(
        &api2,
        "saga_leases_total{event=\"renewed\"}",
        renewed + 2.0,
        10,
    )
    .await;
    let before = b_calls();
    eventually(10, "the second retrying b", || b_calls() >= before + 2).await;

    // A crash and a restart: the saga is resumed under the same token at once (no claim, no
    // waiting for the lease to end), and finishes.
    a2.kill().ok();
    let _ = a2.wait();
    let (mut a3, api3, _) = start(&db, "a");
    metric_reaches(&api3, "saga_leases_total{event=\"resumed\"}", 1.0, 10).await;
    let before = b_calls();
    eventually(10, "the third retrying b", || b_calls() > before).await;
    assert_eq!(
        api3.metric("saga_leases_total{event=\"taken_over\"}").await
            + api3.metric("saga_leases_total{event=\"claimed\"}").await,
        0.0,
        "resumed as its own, not claimed again"
    );
    p.default_reply("/b/action", Reply::ok());
    let s = api3.wait_status("t-1", &["succeeded"], 20).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    a3.kill().ok();
    let _ = a3.wait();
}

/// DTM's protocol on two instances: a TCC transaction prepared on one, its branches registered
/// on both, submitted on the other, is confirmed once per branch in DTM's order; a msg left
/// prepared is asked about once, by whichever instance finds it due.
async fn dtm_transactions_go_across_instances(db: TestDb) {
    let p = Participant::start().await;
    let (mut a, api_a, _) = start(&db, "a");
    let (mut b, api_b, _) = start(&db, "b");
    let ok = |(code, v): (u16, serde_json::Value)| {
        assert_eq!((code, &v["dtm_result"]), (200, &json!("SUCCESS")), "{v}")
    };
    let tcc = json!({"gid": "x-tcc", "trans_type": "tcc"});
    ok(api_a.post("/api/dtmsvr/prepare", &tcc).await);
    for (i, api) in [(1, &api_b), (2, &api_a), (3, &api_b)] {
        let branch = json!({"gid": "x-tcc", "trans_type": "tcc", "branch_id": format!("0{i}"),
            "data": "{}", "confirm": p.url(&format!("/c{i}")), "cancel": p.url(&format!("/x{i}"))});
        ok(api.post("/api/dtmsvr/registerBranch", &branch).await);
    }
    ok(api_b.post("/api/dtmsvr/submit", &tcc).await);
    api_a.wait_status("x-tcc", &["succeeded"], 20).await;
    let paths: Vec<String> = p.calls_of("x-tcc").into_iter().map(|c| c.path).collect();
    assert_eq!(paths, ["/c3", "/c2", "/c1"]);
    let m = json!({"gid": "x-msg", "trans_type": "msg", "steps": [{"action": p.url("/deliver")}],
        "payloads": ["{}"], "query_prepared": p.url("/qp"), "timeout_to_fail": 1});
    ok(api_b.post("/api/dtmsvr/prepare", &m).await);
    api_a.wait_status("x-msg", &["succeeded"], 20).await;
    let paths: Vec<String> = p.calls_of("x-msg").into_iter().map(|c| c.path).collect();
    assert_eq!(paths, ["/qp", "/deliver"], "asked once, delivered once");
    for c in [&mut a, &mut b] {
        c.kill().ok();
        let _ = c.wait();
    }
}

async fn operator_actions_work_on_any_instance(db: TestDb) {
    let p = Participant::start().await;
    let (mut a, api_a, _) = start(&db, "a");
    let (mut b, api_b, _) = start(&db, "b");
    retrying_saga(&p, &api_a, "o-1", 20).await;
    eventually(10, "a retrying b", || {
        p.calls_of("o-1")
            .iter()
            .filter(|c| c.path == "/b/action")
            .count()
            >= 2
    })
    .await;
    // Abort through B, which does not drive the saga: A carries it out.
    let (code, _) = api_b.post("/v1/sagas/o-1/abort", &json!({})).await;
    assert_eq!(code, 202);
    let s = api_b.wait_status("o-1", &["compensated"], 20).await;
    assert_eq!(s["status"], "compensated", "{s}");
    let (_, full) = api_a.get("/v1/sagas/o-1?include=attempts").await;
    assert_eq!(full["operator_actions"][0]["action"], "abort", "{full}");
    // A second abort is refused on either instance: the rule is the state machine's.
    assert_eq!(api_b.post("/v1/sagas/o-1/abort", &json!({})).await.0, 409);
    assert_eq!(api_a.post("/v1/sagas/o-1/abort", &json!({})).await.0, 409);
    for c in [&mut a, &mut b] {
        c.kill().ok();
        let _ = c.wait();
    }
}

#[actix_web::test]
async fn sqlite_refuses_a_second_instance() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let (mut first, api, _) = start(&db, "one");
    assert_eq!(api.get("/healthz").await.0, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"))
        .arg("serve")
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env("SAGA__DATABASE__URL", &db.url)
        .env_remove("RUST_LOG")
        .output()
        .expect("second instance runs");
    assert!(!out.status.success(), "a second instance must not start");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("in use by another saga-orchestrator process"),
        "{text}"
    );
    assert_eq!(api.get("/healthz").await.0, 200, "the first one goes on");
    first.kill().ok();
    let _ = first.wait();
}

/// A start taken just after another instance let go of this instance's token (and deleted its
/// row) must not land under that token: nobody would ever let go of it again. It is refused
/// (503: the client starts it again) or written under the instance's next token.
async fn no_saga_is_written_under_a_token_taken_over(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::slow(500));
    let (mut a, api, _) = start(&db, "a");
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    // What a live instance does to a token whose lease it found ended (its sagas: none here).
    conn.execute_unprepared("DELETE FROM saga_instances")
        .await
        .expect("delete");
    let body = json!({"id": "late", "name": "l", "steps": [p.step("a")]});
    let (code, _) = api.post("/v1/sagas", &body).await;
    assert!(code == 201 || code == 503, "answered {code}");
    if code == 201 {
        let orphans = conn
            .query_all_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT id FROM sagas WHERE owner IS NOT NULL \
                 AND owner NOT IN (SELECT owner FROM saga_instances)",
            ))
            .await
            .expect("query");
        assert!(
            orphans.is_empty(),
            "a saga was written under a deleted token"
        );
    }
    // Started again until taken, it runs to its end.
    crate::helpers::until(20, "the start to be taken", || async {
        let (code, v) = api.post("/v1/sagas", &body).await;
        matches!(code, 200 | 201).then_some(()).ok_or(v.to_string())
    })
    .await;
    let s = api.wait_status("late", &["succeeded"], 20).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    a.kill().ok();
    let _ = a.wait();
}

/// The net under the row check: a saga whose owner names a token that has no row (no let-go
/// will ever find it) is let go by the orphan sweep and finished by a live instance.
async fn a_saga_held_by_a_token_without_a_row_is_swept_up(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::slow(600));
    let (mut a, api_a, _) = start(&db, "a");
    let body = json!({"id": "ghosted", "name": "g", "steps": [p.step("a")]});
    assert_eq!(api_a.post("/v1/sagas", &body).await.0, 201);
    // Its call is in flight (no timer in the log) when its owner becomes a token nobody has.
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    conn.execute_unprepared("UPDATE sagas SET owner = 'ghost#0.0' WHERE id = 'ghosted'")
        .await
        .expect("update");
    a.kill().ok();
    let _ = a.wait();
    let (mut b, api_b, lines_b) = start(&db, "b");
    let s = api_b.wait_status("ghosted", &["succeeded"], 30).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert!(
        lines_b
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("lease token that no longer exists")),
        "the sweep says what it did"
    );
    b.kill().ok();
    let _ = b.wait();
}

/// Timers are found in the log, not in memory: a delayed compensation and a deadline set on an
/// instance that was then killed fire on another, once each.
async fn a_delayed_compensation_and_a_deadline_fire_once_after_their_instance_died(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::ok());
    p.default_reply("/b/action", Reply::code(409));
    p.default_reply("/c/action", Reply::code(503));
    let (mut a, api_a, _) = start(&db, "a");
    let (mut b, api_b, _) = start(&db, "b");
    // "delayed": b refuses, so a is compensated 3 s later.
    let mut step_a = p.step("a");
    step_a["compensation"]["delay_ms"] = json!(3_000);
    let delayed = json!({"id": "delayed", "name": "d", "steps": [step_a, p.step("b")]});
    // "deadline": c keeps answering 503 with a long backoff; the 3 s deadline ends it.
    let mut step_c = p.step("c");
    step_c["retry"] =
        json!({"max_attempts": 100, "initial_backoff_ms": 60_000, "max_backoff_ms": 60_000});
    let deadline = json!({"id": "deadline", "name": "d", "timeout_ms": 3_000, "steps": [step_c]});
    assert_eq!(api_a.post("/v1/sagas", &delayed).await.0, 201);
    assert_eq!(api_a.post("/v1/sagas", &deadline).await.0, 201);
    eventually(10, "both sagas waiting on their timers", || {
        p.paths_of("delayed").contains(&"/b/action".to_string())
            && p.paths_of("deadline").contains(&"/c/action".to_string())
    })
    .await;
    a.kill().unwrap();
    let _ = a.wait();
    for id in ["delayed", "deadline"] {
        let s = api_b.wait_status(id, &["compensated"], 30).await;
        assert_eq!(s["status"], "compensated", "{s}");
    }
    let s = api_b.get("/v1/sagas/deadline").await.1;
    assert_eq!(s["error"], "deadline exceeded", "{s}");
    let count = |id: &str, path: &str| p.paths_of(id).iter().filter(|x| *x == path).count();
    assert_eq!(
        count("delayed", "/a/compensation"),
        1,
        "{:?}",
        p.paths_of("delayed")
    );
    assert_eq!(
        count("deadline", "/c/compensation"),
        1,
        "{:?}",
        p.paths_of("deadline")
    );
    assert!(
        p.calls_of("delayed")
            .iter()
            .all(|c| c.path != "/a/compensation" || instance_of(c) == "b"),
        "the delayed compensation came from the live instance"
    );
    b.kill().ok();
    let _ = b.wait();
}

/// An instance paused mid-transaction must not hold its row locks for ever: the server ends a
/// transaction of ours idle past the lease, and another connection gets the lock.
async fn a_transaction_left_idle_past_the_lease_is_ended_by_the_server(db: TestDb) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let lease = Duration::from_millis(1_000);
    let paused = saga_orchestrator::store::connect(&db.url, 1, lease)
        .await
        .unwrap();
    let other = saga_orchestrator::store::connect(&db.url, 1, lease)
        .await
        .unwrap();
    other
        .execute_unprepared("CREATE TABLE t_lock (id INT PRIMARY KEY)")
        .await
        .unwrap();
    other
        .execute_unprepared("INSERT INTO t_lock VALUES (1)")
        .await
        .unwrap();
    let tx = paused.begin().await.unwrap();
    tx.execute_unprepared("UPDATE t_lock SET id = 1 WHERE id = 1")
        .await
        .unwrap();
    // Idle, as a SIGSTOPped process would be, until the server's timeout has passed.
    let t = Instant::now();
    while t.elapsed() < lease * 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = tx.execute_unprepared("SELECT 1").await;
    assert!(
        after.is_err(),
        "the idle transaction was ended by the server"
    );
    // Nothing of it holds a lock any more.
    let t2 = other.begin().await.unwrap();
    t2.execute_unprepared("UPDATE t_lock SET id = 1 WHERE id = 1")
        .await
        .unwrap();
    t2.commit().await.unwrap();
}
