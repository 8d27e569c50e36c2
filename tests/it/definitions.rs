//! A saga runs with the definition it was accepted with: restarting with other `[participant]`
//! defaults changes new sagas only, and a saga that cannot be loaded becomes stuck with an
//! alert instead of staying silently unfinished.

use crate::helpers::{eventually, sigterm_and_wait, start_binary_with, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::json;

on_every_db!(new_defaults_change_only_new_sagas_and_unloadable_sagas_get_stuck);

async fn new_defaults_change_only_new_sagas_and_unloadable_sagas_get_stuck(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let p = Participant::start().await;
    p.default_reply("/flaky/action", Reply::code(503));
    let body = |id: &str| json!({"id": id, "name": "defs", "steps": [p.step("flaky")]});
    let old = [
        ("SAGA__PARTICIPANT__MAX_ATTEMPTS", "4"),
        ("SAGA__PARTICIPANT__INITIAL_BACKOFF_MS", "300"),
        ("SAGA__PARTICIPANT__MAX_BACKOFF_MS", "400"),
    ];
    let (mut child, api, _) = start_binary_with(&db, &old);
    for id in ["def-1", "def-3", "def-4", "def-5"] {
        assert_eq!(api.post("/v1/sagas", &body(id)).await.0, 201);
    }
    eventually(10, "each saga called once", || {
        ["def-1", "def-3", "def-4", "def-5"]
            .iter()
            .all(|id| !p.calls_of(id).is_empty())
    })
    .await;
    sigterm_and_wait(&mut child).await;

    // While stopped: def-3's stored definition becomes unreadable, def-4 and def-5 look like
    // rows from before definitions were stored (def-5's request no longer validates).
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    for sql in [
        r#"UPDATE sagas SET definition = '{"format": 99}' WHERE id = 'def-3'"#,
        "UPDATE sagas SET definition = NULL WHERE id IN ('def-4', 'def-5')",
        r#"UPDATE sagas SET request = '{"name": 1}' WHERE id = 'def-5'"#,
    ] {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let _ = conn.close().await;

    let new = [
        ("SAGA__PARTICIPANT__MAX_ATTEMPTS", "1"),
        ("SAGA__PARTICIPANT__CALL_TIMEOUT_MS", "50"),
    ];
    let (mut child, api, lines) = start_binary_with(&db, &new);
    assert_eq!(api.post("/v1/sagas", &body("def-2")).await.0, 201);
    let ended = ["compensated", "stuck", "succeeded"];
    let def1 = api.wait_status("def-1", &ended, 20).await;
    let def2 = api.wait_status("def-2", &ended, 20).await;
    let def4 = api.wait_status("def-4", &ended, 20).await;
    let def3 = api.wait_status("def-3", &ended, 20).await;
    let def5 = api.wait_status("def-5", &ended, 20).await;
    child.kill().ok();
    let _ = child.wait();

    let actions = |id: &str| {
        p.calls_of(id)
            .iter()
            .filter(|c| c.path == "/flaky/action")
            .count()
    };
    assert_eq!(def1["status"], "compensated", "{def1}");
    assert_eq!(
        actions("def-1"),
        4,
        "def-1 keeps the max_attempts it was accepted with"
    );
    assert_eq!(def2["status"], "compensated", "{def2}");
    assert_eq!(actions("def-2"), 1, "a new saga takes the new default");
    assert_eq!(
        def4["status"], "compensated",
        "a legacy row is resolved once: {def4}"
    );
    for v in [&def3, &def5] {
        assert_eq!(v["status"], "stuck", "{v}");
        let err = v["error"].as_str().unwrap_or_default();
        assert!(err.contains("cannot be loaded"), "{v}");
    }
    let lines = lines.lock().unwrap();
    for id in ["def-3", "def-5"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"saga_id\":\"{id}\""))
                    && l.contains("\"alert\":true")),
            "an alert line for {id}"
        );
    }
}
