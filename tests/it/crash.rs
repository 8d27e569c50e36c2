//! Crash safety: SIGKILL the real binary mid-flight, start it again on the same database, and
//! every saga finishes; nothing is lost and nothing is done twice beyond an idempotent resend.

use crate::helpers::{eventually, sigterm_and_wait, start_binary, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

on_every_db!(
    sigkill_mid_flight_then_restart_finishes_every_saga,
    a_restart_sends_a_lost_call_again_only_once_it_cannot_be_running
);

/// A call in flight when the process dies may still be running at the participant (its
/// connection closed, its handler not): the restart sends it again, same attempt and key, once
/// its timeout has run out since it was sent, not at once.
async fn a_restart_sends_a_lost_call_again_only_once_it_cannot_be_running(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/slow/action", Reply::slow(1500));
    let (mut child, api, _) = start_binary(&db);
    let step = json!({"name": "slow", "timeout_ms": 3000,
                      "action": {"url": p.url("/slow/action")}});
    let body = json!({"id": "lost-1", "name": "lost", "steps": [step]});
    assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    eventually(10, "the call in flight", || p.calls_of("lost-1").len() == 1).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (mut child, api, _) = start_binary(&db);
    let v = api.wait_status("lost-1", &["succeeded"], 30).await;
    child.kill().ok();
    let _ = child.wait();
    let calls = p.calls_of("lost-1");
    assert_eq!(calls.len(), 2, "{v}");
    assert_eq!(calls[1].header("x-saga-attempt"), "1", "the same attempt");
    // Measured from the first call's arrival, a few ms after it was sent (a restart at once
    // would resend it within about a second).
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(2900),
        "sent again {gap:?} after the first, within its 3 s timeout"
    );
}

async fn sigkill_mid_flight_then_restart_finishes_every_saga(db: TestDb) {
    let p = Participant::start().await;
    for s in ["s1", "s2", "s3", "no"] {
        p.default_reply(&format!("/{s}/action"), Reply::slow(150));
        p.default_reply(&format!("/{s}/compensation"), Reply::slow(50));
    }
    p.default_reply("/no/action", Reply::refuse(150));
    let (mut child, api, _) = start_binary(&db);
    let n = 12;
    for i in 0..n {
        let last = if i % 3 == 0 { "no" } else { "s3" };
        let steps: Vec<Value> = ["s1", "s2", last]
            .iter()
            .enumerate()
            .map(|(k, s)| json!({"name": format!("step{k}"), "action": {"url": p.url(&format!("/{s}/action"))},
                                 "compensation": {"url": p.url(&format!("/{s}/compensation"))}}))
            .collect();
        let body = json!({"id": format!("crash-{i}"), "name": "crash", "steps": steps});
        assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    }
    // Kill while calls are in flight: some sagas are halfway, some answers unrecorded.
    eventually(30, "some progress before the kill", || p.calls().len() >= n).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed_at = p.calls().len();
    assert!(
        killed_at < n * 3,
        "the kill came too late to test anything ({killed_at} calls)"
    );

    let (mut child, api, _) = start_binary(&db);
    let mut finals = HashMap::new();
    for i in 0..n {
        let id = format!("crash-{i}");
        let v = api
            .wait_status(&id, &["succeeded", "compensated"], 60)
            .await;
        finals.insert(id, v);
    }
    child.kill().ok();
    let _ = child.wait();

    for i in 0..n {
        let id = format!("crash-{i}");
        let v = &finals[&id];
        let calls = p.calls_of(&id);
        let keys: HashSet<&str> = calls.iter().map(|c| c.header("idempotency-key")).collect();
        if i % 3 == 0 {
            assert_eq!(v["status"], "compensated", "{v}");
            assert_eq!(v["steps"][0]["status"], "compensated");
            assert_eq!(v["steps"][1]["status"], "compensated");
        } else {
            assert_eq!(v["status"], "succeeded", "{v}");
            let want: HashSet<String> = (0..3).map(|k| format!("{id}/step{k}/action")).collect();
            assert_eq!(
                keys,
                want.iter().map(String::as_str).collect(),
                "only actions, each under its own key"
            );
        }
        // Every resend of a phase reused its key, and each phase was sent at most twice
        // (once before the kill, once after).
        let mut per_key: HashMap<&str, usize> = HashMap::new();
        for c in &calls {
            *per_key.entry(c.header("idempotency-key")).or_default() += 1;
        }
        assert!(per_key.values().all(|&k| k <= 2), "{id}: {per_key:?}");
    }
}

on_every_db!(sigterm_finishes_calls_in_flight_and_exits);

async fn sigterm_finishes_calls_in_flight_and_exits(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/slow/action", Reply::slow(1500));
    let (mut child, api, _) = start_binary(&db);
    let body = json!({"id": "term-1", "name": "term", "steps": [
        {"name": "slow", "action": {"url": p.url("/slow/action")}, "compensation": {"url": p.url("/slow/compensation")}},
        {"name": "next", "action": {"url": p.url("/next/action")}, "compensation": {"url": p.url("/next/compensation")}}
    ]});
    assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    eventually(10, "the slow call in flight", || {
        !p.calls_of("term-1").is_empty()
    })
    .await;
    sigterm_and_wait(&mut child).await;
    assert!(
        api.client
            .get(format!("{}/healthz", api.base))
            .send()
            .await
            .is_err(),
        "no longer serving"
    );
    let before = p.calls_of("term-1");
    assert_eq!(
        before.len(),
        1,
        "no new call once stopping: {:?}",
        before.iter().map(|c| &c.path).collect::<Vec<_>>()
    );

    let (mut child, api, _) = start_binary(&db);
    let (_, v) = api
        .get("/v1/sagas/term-1?wait_ms=20000&include=attempts")
        .await;
    child.kill().ok();
    let _ = child.wait();
    assert_eq!(v["status"], "succeeded", "{v}");
    let slow = &v["steps"][0]["history"];
    assert_eq!(
        slow.as_array().unwrap().len(),
        1,
        "the answer in flight was recorded, not resent: {v}"
    );
    assert_eq!(slow[0]["outcome"], "success");
    let paths: Vec<String> = p.calls_of("term-1").into_iter().map(|c| c.path).collect();
    assert_eq!(paths, ["/slow/action", "/next/action"]);
}

on_every_db!(a_graceful_stop_does_not_invent_attempts);

/// SIGTERM while step 1 is in flight: its answer is recorded, step 2 is neither sent nor
/// recorded as sent, and after the restart step 2 (max_attempts 1) is called once, attempt 1.
async fn a_graceful_stop_does_not_invent_attempts(db: TestDb) {
    let p = Participant::start().await;
    p.default_reply("/slow/action", Reply::slow(1500));
    let (mut child, api, _) = start_binary(&db);
    let mut next = p.step("next");
    next["retry"] = json!({"max_attempts": 1});
    let body = json!({"id": "stop-1", "name": "stop", "steps": [p.step("slow"), next]});
    assert_eq!(api.post("/v1/sagas", &body).await.0, 201);
    eventually(10, "step 1 in flight", || !p.calls_of("stop-1").is_empty()).await;
    sigterm_and_wait(&mut child).await;
    assert_eq!(
        p.paths_of("stop-1"),
        ["/slow/action"],
        "nothing sent after the stop"
    );

    let (mut child, api, _) = start_binary(&db);
    let (_, v) = api
        .get("/v1/sagas/stop-1?wait_ms=20000&include=attempts")
        .await;
    child.kill().ok();
    let _ = child.wait();
    assert_eq!(v["status"], "succeeded", "{v}");
    let next_calls: Vec<_> = p
        .calls_of("stop-1")
        .into_iter()
        .filter(|c| c.path == "/next/action")
        .collect();
    assert_eq!(next_calls.len(), 1, "step 2 called once");
    assert_eq!(next_calls[0].header("x-saga-attempt"), "1");
    let history = v["steps"][1]["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "no invented failure in the history: {v}");
    assert_eq!(history[0]["outcome"], "success");
    assert_eq!(v["steps"][1]["attempts"], 1);
}

on_every_db!(another_writer_makes_the_actor_step_aside_and_reload);

/// Another writer (say a second instance) changes a saga while its call is in flight: the
/// actor's write conflicts, it steps aside, and the saga is reloaded and finished from the log.
async fn another_writer_makes_the_actor_step_aside_and_reload(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let app = crate::helpers::spawn_app(&db).await;
    let p = Participant::start().await;
    p.script("/a/action", [Reply::slow(800)]);
    app.post(
        "/v1/sagas",
        &json!({"id": "cw-1", "name": "cw", "steps": [p.step("a"), p.step("b")]}),
    )
    .await;
    eventually(10, "a in flight", || !p.calls_of("cw-1").is_empty()).await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared("UPDATE sagas SET version = version + 100 WHERE id = 'cw-1'")
        .await
        .unwrap();
    let v = app.wait_status("cw-1", &["succeeded"], 20).await;
    let a: Vec<_> = p
        .calls_of("cw-1")
        .into_iter()
        .filter(|c| c.path == "/a/action")
        .collect();
    assert_eq!(a.len(), 2, "the answer lost to the conflict is asked again");
    assert!(a
        .iter()
        .all(|c| c.header("idempotency-key") == "cw-1/a/action"));
    assert!(a.iter().all(|c| c.header("x-saga-attempt") == "1"));
    assert_eq!(
        v["steps"][0]["attempts"], 1,
        "sent again as the same attempt"
    );
    let _ = conn.close().await;
    app.stop().await;
}

on_every_db!(failed_log_writes_restart_the_actor_from_the_log);

/// A failing log write stops the saga actor; its supervisor restarts it, it reloads from the
/// log and finishes once the database accepts writes again.
async fn failed_log_writes_restart_the_actor_from_the_log(db: TestDb) {
    use crate::helpers::Kind;
    use sea_orm::ConnectionTrait;
    let app = crate::helpers::spawn_app(&db).await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared("CREATE TABLE fail_writes (x INTEGER)")
        .await
        .unwrap();
    conn.execute_unprepared("INSERT INTO fail_writes VALUES (1)")
        .await
        .unwrap();
    // A trigger refuses every write of saga sup-1 while fail_writes has a row.
    let trigger: &[&str] = match db.kind {
        Kind::Sqlite => &["CREATE TRIGGER fail_saga_writes BEFORE UPDATE ON sagas \
             WHEN NEW.id = 'sup-1' AND (SELECT count(*) FROM fail_writes) > 0 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"],
        Kind::Mysql => &["CREATE TRIGGER fail_saga_writes BEFORE UPDATE ON sagas FOR EACH ROW BEGIN \
             IF NEW.id = 'sup-1' AND (SELECT COUNT(*) FROM fail_writes) > 0 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF; END"],
        Kind::Postgres => &[
            "CREATE FUNCTION fail_saga_writes() RETURNS trigger AS $$ BEGIN \
             IF NEW.id = 'sup-1' AND (SELECT count(*) FROM fail_writes) > 0 THEN \
             RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER fail_saga_writes BEFORE UPDATE ON sagas FOR EACH ROW EXECUTE FUNCTION fail_saga_writes()",
        ],
    };
    for sql in trigger {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let p = Participant::start().await;
    let (code, _) = app
        .post(
            "/v1/sagas",
            &json!({"id": "sup-1", "name": "sup", "steps": [p.step("a"), p.step("b")]}),
        )
        .await;
    assert_eq!(code, 201);
    crate::helpers::until(20, "a supervised restart after a failed write", || async {
        let restarts = app.metric("saga_actor_restarts_total").await;
        (restarts >= 1.0)
            .then_some(())
            .ok_or(format!("{restarts} restarts"))
    })
    .await;
    let (_, v) = app.get("/v1/sagas/sup-1").await;
    assert_eq!(
        v["status"], "running",
        "nothing past the failed write is recorded: {v}"
    );
    // Other sagas share the log writer (and its batches) with the failing one: they finish.
    for i in 0..10 {
        let body =
            json!({"id": format!("other-{i}"), "name": "sup", "steps": [p.step("a"), p.step("b")]});
        app.post("/v1/sagas", &body).await;
    }
    for i in 0..10 {
        app.wait_status(&format!("other-{i}"), &["succeeded"], 20)
            .await;
    }
    let (_, v) = app.get("/v1/sagas/sup-1").await;
    assert_eq!(v["status"], "running", "still failing: {v}");
    conn.execute_unprepared("DELETE FROM fail_writes")
        .await
        .unwrap();
    let v = app.wait_status("sup-1", &["succeeded"], 20).await;
    assert_eq!(v["steps"][1]["status"], "succeeded");
    let _ = conn.close().await;
    app.stop().await;
}
