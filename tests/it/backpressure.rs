//! Back-pressure: beyond `runtime.max_live_sagas` a start gets 503 with `Retry-After` at once,
//! nothing of it is recorded, and starts are taken again once sagas end.

use crate::helpers::{metric, spawn_app_with, test_settings, until, TestDb};
use crate::on_every_db;
use crate::participant::{Participant, Reply};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

on_every_db!(starts_beyond_the_live_bound_get_503_at_once);

async fn starts_beyond_the_live_bound_get_503_at_once(db: TestDb) {
    let mut settings = test_settings(&db);
    settings.runtime.max_live_sagas = 2;
    let app = spawn_app_with(settings).await;
    let p = Participant::start().await;
    p.default_reply("/a/action", Reply::slow(1500));
    let saga = |id: &str| json!({"id": id, "name": "bp", "steps": [p.step("a")]});
    for id in ["bp-0", "bp-1"] {
        assert_eq!(app.post("/v1/sagas", &saga(id)).await.0, 201);
    }
    let t = Instant::now();
    let r = app
        .client
        .post(format!("{}/v1/sagas", app.base))
        .json(&saga("bp-2"))
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("runtime.max_live_sagas")),
        "{problem}"
    );
    assert_eq!(app.get("/v1/sagas/bp-2").await.0, 404, "nothing recorded");
    let (_, m) = app.get_text("/metrics").await;
    assert_eq!(metric(&m, "saga_start_unavailable_total"), Some(1.0), "{m}");

    // The two live sagas end and leave memory: the same start is taken.
    until(20, "the start to be taken again", || async {
        let (code, body) = app.post("/v1/sagas", &saga("bp-2")).await;
        assert!(matches!(code, 201 | 503), "{body}");
        (code == 201).then_some(()).ok_or(body.to_string())
    })
    .await;
    for id in ["bp-0", "bp-1", "bp-2"] {
        app.wait_status(id, &["succeeded"], 20).await;
    }
    app.stop().await;
}
