//! A saga log written by the first layout (a row per step, a call row inserted when the call
//! started) keeps working after the upgrade: states are moved into the saga row, a call that was
//! in flight keeps its start time (so it goes again at once, its timeout long run out), and the
//! saga resumes and finishes.

use crate::helpers::{spawn_app, TestDb};
use crate::on_every_db;
use crate::participant::Participant;
use sea_orm::ConnectionTrait;
use serde_json::json;

on_every_db!(a_saga_of_the_old_layout_is_moved_and_finishes);

async fn a_saga_of_the_old_layout_is_moved_and_finishes(db: TestDb) {
    use migration::{Migrator, MigratorTrait};
    let p = Participant::start().await;
    let request = json!({"id": "old-1", "name": "old", "steps": [p.step("a"), p.step("b")]});
    // A long call timeout: a lost call goes again once it has run out since the call was sent,
    // which for the old row's start (2023) is at once; were the start lost, it would be a minute.
    let defaults = saga_orchestrator::domain::Defaults {
        call_timeout_ms: 60_000,
        ..Default::default()
    };
    let def = saga_orchestrator::domain::parse_request(&request, &defaults).unwrap();
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    Migrator::up(&conn, Some(3)).await.unwrap();
    let q = |s: &str| s.replace('\'', "''");
    let (svc, t0) = (
        p.base.trim_start_matches("http://").to_string(),
        1_700_000_000_000i64,
    );
    for sql in [
        format!(
            "INSERT INTO sagas (id, name, mode, status, request, definition, created_at, updated_at, version) \
             VALUES ('old-1', 'old', 'saga', 'running', '{}', '{}', {t0}, {t0}, 3)",
            q(&request.to_string()),
            q(&def.to_stored())
        ),
        // Step a succeeded; step b's call was in flight when the old version stopped.
        format!(
            "INSERT INTO saga_steps (saga_id, idx, name, service_name, operation, payload, status, attempts, \
             compensation_attempts, confirm_attempts, budget_base, may_have_effect, in_flight, stuck, last_error, \
             next_attempt_at, created_at, updated_at) VALUES \
             ('old-1', 0, 'a', '{svc}', 'action', 'null', 'succeeded', 1, 0, 0, 0, TRUE, FALSE, FALSE, NULL, NULL, {t0}, {t0}), \
             ('old-1', 1, 'b', '{svc}', 'action', 'null', 'running', 1, 0, 0, 0, FALSE, TRUE, FALSE, NULL, NULL, {t0}, {t0})"
        ),
        format!(
            "INSERT INTO saga_calls (saga_id, step_idx, step, phase, attempt, started_at, finished_at, http_status, outcome, error) VALUES \
             ('old-1', 0, 'a', 'action', 1, {t0}, {}, 200, 'success', NULL), \
             ('old-1', 1, 'b', 'action', 1, {}, NULL, NULL, NULL, NULL)",
            t0 + 5,
            t0 + 6
        ),
    ] {
        conn.execute_unprepared(&sql).await.unwrap();
    }
    let _ = conn.close().await;

    let app = spawn_app(&db).await;
    let v = app.wait_status("old-1", &["succeeded"], 20).await;
    assert_eq!(v["steps"][0]["name"], "a");
    assert_eq!(
        v["steps"][1]["attempts"], 1,
        "the lost call is sent again as the same attempt: {v}"
    );
    assert_eq!(p.paths_of("old-1"), ["/b/action"], "a is not sent again");
    assert_eq!(p.calls_of("old-1")[0].header("x-saga-attempt"), "1");
    let (_, h) = app.get("/v1/sagas/old-1?include=attempts").await;
    let a = h["steps"][0]["history"].as_array().unwrap();
    assert_eq!(a.len(), 1, "{h}");
    assert_eq!(a[0]["outcome"], "success");
    let b = h["steps"][1]["history"].as_array().unwrap();
    assert_eq!(b.len(), 1, "{h}");
    assert_eq!(b[0]["outcome"], "success");
    // The call in flight kept its start time through the upgrade (else it would still wait),
    // and its record starts when it was sent again.
    assert!(
        b[0]["started_at"].as_str().unwrap()
            > saga_orchestrator::api::resource::rfc3339(t0 + 6).as_str(),
        "{h}"
    );
    app.stop().await;
}
