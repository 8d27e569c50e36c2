//! The database goes away under a running service (connections dropped and refused, then a
//! silent partition): `/readyz` and `/metrics` still answer within 1 s, and once the database is
//! back every saga finishes, none is lost, and no step is called more often than its retry
//! policy allows. SQLite has no network, so these run on MariaDB and PostgreSQL.

use crate::helpers::{metric, spawn_app_with, test_settings, Kind, TestApp, TestDb};
use crate::participant::{Participant, Reply};
use crate::proxy::{Mode, Proxy};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[actix_web::test]
async fn mysql() {
    if let Some(db) = TestDb::new(Kind::Mysql).await {
        database_outages_are_survived(db).await
    }
}

#[actix_web::test]
async fn postgres() {
    if let Some(db) = TestDb::new(Kind::Postgres).await {
        database_outages_are_survived(db).await
    }
}

/// Max attempts of every phase in these sagas (the test settings' default).
const MAX_ATTEMPTS: usize = 5;

async fn database_outages_are_survived(db: TestDb) {
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = format!("127.0.0.1:{}", url.port_or_known_default().unwrap());
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.port)).unwrap();
    let mut settings = test_settings(&db);
    settings.database.url = url.to_string();
    // A silent partition is noticed by the writer when a batch takes this long.
    settings.database.write_timeout_ms = 1_000;
    let app = spawn_app_with(settings).await;
    let p = Participant::start().await;
    for s in ["a", "b", "c", "no"] {
        p.default_reply(&format!("/{s}/action"), Reply::slow(150));
    }
    p.default_reply("/no/action", Reply::refuse(150));

    for (round, cut) in [Mode::Refuse, Mode::Partition].into_iter().enumerate() {
        let ids: Vec<String> = (0..12).map(|i| format!("cut-{round}-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let last = if i % 4 == 0 { "no" } else { "c" };
            let body = json!({"id": id, "name": "cut",
                              "steps": [p.step("a"), p.step("b"), p.step(last)]});
            assert_eq!(app.post("/v1/sagas", &body).await.0, 201);
        }
        // A scrape before the cut, as Prometheus makes them, sets the log-counted gauges.
        let (_, before) = app.get_text("/metrics").await;
        let gauges: Vec<&str> = before
            .lines()
            .filter(|l| l.starts_with("sagas_active{"))
            .collect();
        assert!(!gauges.is_empty(), "{before}");
        // Cut while calls and their log writes are in flight.
        proxy.set(cut);
        probes_answer_in_time_while_cut(&app, cut, &gauges).await;
        let start_id = format!("cut-start-{round}");
        starts_are_refused_at_once(&app, &p, &start_id).await;
        proxy.set(Mode::Up);
        starts_are_taken_again(&app, &p, &start_id, cut).await;

        for (i, id) in ids.iter().enumerate() {
            let want = if i % 4 == 0 {
                "compensated"
            } else {
                "succeeded"
            };
            app.wait_status(id, &[want], 60).await;
            let mut per_phase: HashMap<String, usize> = HashMap::new();
            for c in p.calls_of(id) {
                *per_phase
                    .entry(c.header("idempotency-key").to_string())
                    .or_default() += 1;
                let attempt: usize = c.header("x-saga-attempt").parse().unwrap();
                assert!(attempt <= MAX_ATTEMPTS, "{id}: attempt {attempt}");
            }
            assert!(
                per_phase.values().all(|&n| n <= MAX_ATTEMPTS),
                "{id} after {cut:?}: {per_phase:?}"
            );
        }
        // Taken after the cut, it runs to its end (it once stayed unowned: written under a
        // lease token already let go, before creates checked the token's row).
        app.wait_status(&start_id, &["succeeded"], 60).await;
        let (code, _) = app.get("/readyz").await;
        assert_eq!(code, 200, "ready again after {cut:?}");
    }
    app.stop().await;
}

/// While the database is cut (refusing, or silent), once the log writer has seen it, a start
/// gets 503 with `Retry-After` within 1 s, and nothing of it is recorded.
async fn starts_are_refused_at_once(app: &TestApp, p: &Participant, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = json!({"id": id, "name": "cut", "steps": [p.step("a")]});
    loop {
        let t = Instant::now();
        let r = app
            .client
            .post(format!("{}/v1/sagas", app.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(
            r.status().as_u16(),
            503,
            "a start while the database is cut"
        );
        assert_eq!(r.headers()["retry-after"], "1");
        let problem: Value = r.json().await.unwrap();
        if problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cannot be reached"))
        {
            assert!(took < Duration::from_secs(1), "refused after {took:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "starts never refused at once: {problem}"
        );
    }
}

/// Once the database is back, starts are taken again; after a refused connection, a 201 (not
/// 200) shows that nothing of the start refused during the cut was recorded. (In a silent
/// partition the first try's batch timed out: its outcome is unknown, as with any commit
/// whose answer was lost, and a 200 for the same request is as right.)
async fn starts_are_taken_again(app: &TestApp, p: &Participant, id: &str, cut: Mode) {
    let body = json!({"id": id, "name": "cut", "steps": [p.step("a")]});
    crate::helpers::until(30, "starts to be taken again", || async {
        let (code, problem) = app.post("/v1/sagas", &body).await;
        assert!(matches!(code, 200 | 201 | 503), "{problem}");
        let taken = code == 201 || (code == 200 && cut == Mode::Partition);
        taken.then_some(()).ok_or(problem.to_string())
    })
    .await;
}

/// For 5 s of cut: every `/readyz` is a 503 and every `/metrics` a 200 with `saga_ready 0` and
/// the last counted gauges, each within 1 s.
async fn probes_answer_in_time_while_cut(app: &TestApp, cut: Mode, gauges: &[&str]) {
    let until = Instant::now() + Duration::from_secs(5);
    let mut probes = 0;
    while Instant::now() < until {
        let t = Instant::now();
        let (code, body) = app.get("/readyz").await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/readyz took {:?} ({cut:?})",
            t.elapsed()
        );
        assert_eq!(code, 503, "{body}");
        let t = Instant::now();
        let (code, m) = app.get_text("/metrics").await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/metrics took {:?} ({cut:?})",
            t.elapsed()
        );
        assert_eq!(code, 200);
        assert_eq!(metric(&m, "saga_ready"), Some(0.0), "{cut:?}");
        for g in gauges {
            assert!(
                m.contains(g),
                "the last counted {g} stays during the cut: {m}"
            );
        }
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probes >= 3);
}
