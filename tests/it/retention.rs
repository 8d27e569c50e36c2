//! Retention: ended sagas leave on time by outcome and name, stuck and kept ones stay, a purged
//! id answers 410 and refuses a start while its tombstone lasts (then 404, and the id is free),
//! the archive holds each purged saga as its resource, a sweep killed midway leaves no
//! partial saga and loses no archive line, and two instances sweep one at a time.

use crate::helpers::{spawn_app_with, start_binary_with, test_settings, until, Api, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use flate2::read::MultiGzDecoder;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

on_every_db!(
    sagas_leave_by_outcome_and_name_and_kept_ones_stay,
    a_sweep_killed_midway_leaves_no_partial_saga_and_loses_no_line,
);

// SQLite serves one instance.
crate::on_shared_dbs!(two_instances_sweep_in_turn_and_a_stopping_one_hands_over);

/// Every line of every archive file under `dir`, with its file's name.
fn archive_lines(dir: &Path) -> Vec<(String, Value)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl.gz") {
                let bytes = std::fs::read(&p).unwrap();
                let mut text = String::new();
                MultiGzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
                let file = p.file_name().unwrap().to_string_lossy().to_string();
                for line in text.lines() {
                    out.push((file.clone(), serde_json::from_str(line).unwrap()));
                }
            }
        }
    }
    out
}

/// Every line of every archive file under `dir`, by saga id (a saga archived twice, by a sweep
/// that was killed after archiving it, has two equal lines).
fn archived(dir: &Path) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for (_, v) in archive_lines(dir) {
        out.entry(v["id"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    out
}

/// Waits until `GET /v1/sagas/{id}` answers `code`; answers the body.
async fn until_code(api: &Api, id: &str, code: u16, secs: u64) -> Value {
    until(secs, &format!("{id} answering {code}"), || async {
        let (c, v) = api.get(&format!("/v1/sagas/{id}")).await;
        if c == code {
            Ok(v)
        } else {
            Err(format!("{c} {v}"))
        }
    })
    .await
}

async fn sagas_leave_by_outcome_and_name_and_kept_ones_stay(db: TestDb) {
    let archive = tempfile::tempdir().unwrap();
    let mut s = test_settings(&db);
    s.retention.succeeded_ms = 1_000;
    s.retention.compensated_ms = 6_000;
    s.retention.sweep_ms = 100;
    s.retention.tombstone_ms = 3_000;
    s.retention.archive_dir = archive.path().display().to_string();
    s.retention.names.insert(
        "forever".into(),
        saga_orchestrator::domain::RetentionOverride {
            succeeded_ms: Some(0),
            compensated_ms: None,
        },
    );
    let app = spawn_app_with(s).await;
    let p = Participant::start().await;
    p.default_reply("/no/action", Reply::refuse(0));
    p.default_reply("/never/compensation", Reply::code(500));
    let start = |id: &str, name: &str, steps: Vec<Value>, extra: Value| {
        let mut body = json!({"id": id, "name": name, "steps": steps});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let ok = start("ok-1", "short", vec![p.step("a")], json!({}));
    let (code, _) = app.post("/v1/sagas", &ok).await;
    assert_eq!(code, 201);
    let comp = start(
        "comp-1",
        "short",
        vec![p.step("a"), p.step("no")],
        json!({}),
    );
    app.post("/v1/sagas", &comp).await;
    let forever = start("forever-1", "forever", vec![p.step("a")], json!({}));
    app.post("/v1/sagas", &forever).await;
    let asked = start(
        "asked-1",
        "forever",
        vec![p.step("a")],
        json!({"retention_ms": 1000}),
    );
    app.post("/v1/sagas", &asked).await;
    let stuck = start(
        "stuck-1",
        "short",
        vec![p.quick_step("never"), p.quick_step("no")],
        json!({}),
    );
    app.post("/v1/sagas", &stuck).await;
    // Pinned before it ends: it never leaves until unpinned.
    let pinned = start("kept-1", "short", vec![p.step("a")], json!({}));
    app.post("/v1/sagas", &pinned).await;
    let (code, v) = app.post("/v1/sagas/kept-1/keep", &json!({})).await;
    assert_eq!((code, v["kept"].as_bool()), (200, Some(true)), "{v}");

    let before = app.wait_status("ok-1", &["succeeded"], 10).await;
    assert!(before["purge_at"].is_string(), "{before}");
    let (_, full) = app.get("/v1/sagas/ok-1?include=attempts,request").await;
    app.wait_status("comp-1", &["compensated"], 10).await;
    app.wait_status("stuck-1", &["stuck"], 10).await;
    let v = app.wait_status("forever-1", &["succeeded"], 10).await;
    assert!(v["purge_at"].is_null(), "kept forever by its name: {v}");
    app.wait_status("kept-1", &["succeeded"], 10).await;

    // Succeeded after 1 s; the request's retention_ms beats its name's "forever".
    let gone = until_code(&app, "ok-1", 410, 10).await;
    assert_eq!(gone["purged"]["status"], "succeeded", "{gone}");
    assert!(gone["purged"]["archived_in"]
        .as_str()
        .is_some_and(|f| f.ends_with(".jsonl.gz")));
    until_code(&app, "asked-1", 410, 10).await;
    // Compensated sagas stay 6 s; stuck, kept and "forever" ones stay.
    for id in ["comp-1", "stuck-1", "kept-1", "forever-1"] {
        let (code, v) = app.get(&format!("/v1/sagas/{id}")).await;
        assert_eq!(code, 200, "{id}: {v}");
    }
    // A client's late retry of the purged saga is refused, never run again.
    let (code, v) = app.post("/v1/sagas", &ok).await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["purged"]["status"], "succeeded");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("this request already ran"),
        "{v}"
    );
    let (code, list) = app.get("/v1/sagas?limit=100").await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        !listed.contains(&"ok-1") && listed.contains(&"kept-1"),
        "{listed:?}"
    );

    // The archive line is the resource as it was read with include=attempts,request.
    let lines = archived(archive.path());
    assert_eq!(lines["ok-1"], vec![full.clone()], "archived as read");
    assert!(!full["steps"][0]["history"].as_array().unwrap().is_empty());

    // Unpinned: it leaves at the next sweep (it was due long ago).
    let (code, _) = app.post("/v1/sagas/kept-1/unkeep", &json!({})).await;
    assert_eq!(code, 200);
    until_code(&app, "kept-1", 410, 10).await;
    let kept_line = &archived(archive.path())["kept-1"][0];
    let audited: Vec<&str> = kept_line["operator_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(audited, ["keep", "unkeep"], "{kept_line}");
    until_code(&app, "comp-1", 410, 15).await;

    // After the tombstone: 404, and the id is free again.
    until_code(&app, "ok-1", 404, 15).await;
    let (code, v) = app.post("/v1/sagas", &ok).await;
    assert_eq!(code, 201, "{v}");
    let (code, _) = app.get("/v1/sagas/stuck-1").await;
    assert_eq!(code, 200, "a stuck saga is never purged");
    let metrics = app.get_text("/metrics").await.1;
    let purged = crate::helpers::metric(&metrics, "saga_purged_total{status=\"succeeded\"}");
    assert!(purged.is_some_and(|n| n >= 3.0), "{purged:?}");
    assert!(crate::helpers::metric(&metrics, "saga_archived_bytes_total").is_some_and(|n| n > 0.0));
    app.stop().await;
}

/// How many rows `sql` counts.
async fn count(conn: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn a_sweep_killed_midway_leaves_no_partial_saga_and_loses_no_line(db: TestDb) {
    const N: usize = 400;
    let archive = tempfile::tempdir().unwrap();
    let dir = archive.path().display().to_string();
    let env = [
        ("SAGA__RETENTION__SUCCEEDED_MS", "1000"),
        ("SAGA__RETENTION__SWEEP_MS", "100"),
        ("SAGA__RETENTION__ARCHIVE_DIR", dir.as_str()),
        ("SAGA__CLUSTER__INSTANCE_ID", "sweeper"),
    ];
    let p = Participant::start().await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let (mut child, api, _) = start_binary_with(&db, &env);
    // A paused sweep: every saga ends first, then all are due together.
    conn.execute_unprepared(
        "UPDATE saga_sweeps SET holder = 'someone else', held_until = 9999999999999",
    )
    .await
    .unwrap();
    let steps = vec![p.step("a"), p.step("b"), p.step("c")];
    for i in 0..N {
        let (code, v) = api
            .post(
                "/v1/sagas",
                &json!({"id": format!("k-{i}"), "name": "k", "steps": steps}),
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    until(60, "every saga succeeded", || async {
        let n = count(
            &conn,
            "SELECT COUNT(*) FROM sagas WHERE status = 'succeeded'",
        )
        .await;
        if n == N as i64 {
            Ok(())
        } else {
            Err(format!("{n} succeeded"))
        }
    })
    .await;
    conn.execute_unprepared("UPDATE saga_sweeps SET holder = NULL, held_until = 0")
        .await
        .unwrap();
    until(30, "the sweep under way", || async {
        let n = count(&conn, "SELECT COUNT(*) FROM saga_tombstones").await;
        if n > 0 {
            Ok(())
        } else {
            Err(format!("{n} purged"))
        }
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let check = |stage: &'static str| {
        let conn = &conn;
        let dir = archive.path();
        async move {
            let lines = archived(dir);
            let mut purged = 0;
            for i in 0..N {
                let id = format!("k-{i}");
                let saga = count(
                    conn,
                    &format!("SELECT COUNT(*) FROM sagas WHERE id = '{id}'"),
                )
                .await;
                let calls = count(
                    conn,
                    &format!("SELECT COUNT(*) FROM saga_calls WHERE saga_id = '{id}'"),
                )
                .await;
                let stone = count(
                    conn,
                    &format!("SELECT COUNT(*) FROM saga_tombstones WHERE id = '{id}'"),
                )
                .await;
                match (saga, calls, stone) {
                    (1, 3, 0) => {}
                    (0, 0, 1) => {
                        purged += 1;
                        let got = lines
                            .get(&id)
                            .unwrap_or_else(|| panic!("{stage}: {id} purged, not archived"));
                        assert!(
                            got.iter().all(|l| l["status"] == "succeeded"
                                && l["steps"][2]["history"].as_array().unwrap().len() == 1),
                            "{stage}: {id}: {got:?}"
                        );
                    }
                    other => {
                        panic!("{stage}: {id} half purged: (saga, calls, tombstone) = {other:?}")
                    }
                }
            }
            purged
        }
    };
    let purged = check("after SIGKILL").await;
    assert!(purged > 0);
    // The next run goes on where the killed one stopped.
    let (mut child, _api, _) = start_binary_with(&db, &env);
    until(60, "every saga purged", || async {
        let n = count(&conn, "SELECT COUNT(*) FROM saga_tombstones").await;
        if n == N as i64 {
            Ok(())
        } else {
            Err(format!("{n} purged"))
        }
    })
    .await;
    assert_eq!(check("after the restart").await, N);
    crate::helpers::sigterm_and_wait(&mut child).await;
    let _ = conn.close().await;
}

/// Two instances over one log sweep one at a time (no saga archived twice, which two sweeps
/// of the same batch would do); the one whose turn it is gives it up when it stops, and the
/// other sweeps on.
async fn two_instances_sweep_in_turn_and_a_stopping_one_hands_over(db: TestDb) {
    const N: usize = 200;
    let archive = tempfile::tempdir().unwrap();
    let dir = archive.path().display().to_string();
    let alpha = [
        ("SAGA__RETENTION__SUCCEEDED_MS", "1000"),
        ("SAGA__RETENTION__SWEEP_MS", "100"),
        ("SAGA__RETENTION__ARCHIVE_DIR", dir.as_str()),
        ("SAGA__CLUSTER__INSTANCE_ID", "alpha"),
    ];
    let mut beta = alpha;
    beta[3].1 = "beta";
    let p = Participant::start().await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let (mut a, api_a, _) = start_binary_with(&db, &alpha);
    let (mut b, api_b, _) = start_binary_with(&db, &beta);
    conn.execute_unprepared(
        "UPDATE saga_sweeps SET holder = 'someone else', held_until = 9999999999999",
    )
    .await
    .unwrap();
    let steps = vec![p.step("a"), p.step("b")];
    for i in 0..N {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        start_turns_saga(api, i, &steps).await;
    }
    until(60, "every saga succeeded", || async {
        let n = count(
            &conn,
            "SELECT COUNT(*) FROM sagas WHERE status = 'succeeded'",
        )
        .await;
        if n == N as i64 {
            Ok(())
        } else {
            Err(format!("{n} succeeded"))
        }
    })
    .await;
    conn.execute_unprepared("UPDATE saga_sweeps SET holder = NULL, held_until = 0")
        .await
        .unwrap();
    let purged = |want: usize| {
        let conn = &conn;
        async move {
            let n = count(conn, "SELECT COUNT(*) FROM saga_tombstones").await;
            if n == want as i64 {
                Ok(())
            } else {
                Err(format!("{n} purged"))
            }
        }
    };
    until(60, "every saga purged", || purged(N)).await;
    let lines = archived(archive.path());
    assert_eq!(lines.len(), N, "every saga archived");
    for (id, l) in &lines {
        assert_eq!(l.len(), 1, "{id} archived {} times: swept twice", l.len());
    }
    // The instance whose turn it is stops, and gives the turn up; the other purges the rest.
    let holder = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT holder FROM saga_sweeps WHERE name = 'retention'",
        ))
        .await
        .unwrap()
        .and_then(|r| r.try_get_by_index::<Option<String>>(0).ok())
        .flatten()
        .expect("a holder");
    let (stopping, api, other) = if holder.starts_with("alpha") {
        (&mut a, &api_b, "beta")
    } else {
        assert!(holder.starts_with("beta"), "{holder}");
        (&mut b, &api_a, "alpha")
    };
    crate::helpers::sigterm_and_wait(stopping).await;
    for i in N..N + 20 {
        start_turns_saga(api, i, &steps).await;
    }
    until(60, "the later sagas purged by the other instance", || {
        purged(N + 20)
    })
    .await;
    for (file, v) in archive_lines(archive.path()) {
        let id = v["id"].as_str().unwrap();
        if id.trim_start_matches("t-").parse::<usize>().unwrap() >= N {
            assert!(
                file.ends_with(&format!("-{other}.jsonl.gz")),
                "{id} in {file}"
            );
        }
    }
    drop((a, b));
    let _ = conn.close().await;
}

/// Starts saga `t-{i}` of `steps` through `api`.
async fn start_turns_saga(api: &Api, i: usize, steps: &[Value]) {
    let body = json!({"id": format!("t-{i}"), "name": "turns", "steps": steps});
    let (code, v) = api.post("/v1/sagas", &body).await;
    assert_eq!(code, 201, "{v}");
}
