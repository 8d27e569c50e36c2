//! The barrier's rules (docs/barrier.md) on real databases: SQLite, and MariaDB and PostgreSQL
//! when SAGA_TEST_MYSQL_URL / SAGA_TEST_POSTGRES_URL are set (required when CI=true). Each test
//! gets a fresh database and a one-account ledger whose balance shows every effect.

use http::HeaderMap;
use saga_participant::{Barrier, BarrierTx, Reply, SagaCall, StepError, StepFuture};
use serde_json::json;
use std::time::Duration;

/// Balance of the ledger's one account at the start.
const START: i64 = 1000;

/// The call the orchestrator would send.
fn call(saga: &str, phase: &str, body: serde_json::Value) -> SagaCall {
    call_at(saga, phase, body, chrono::Utc::now())
}

fn call_at(
    saga: &str,
    phase: &str,
    body: serde_json::Value,
    created: chrono::DateTime<chrono::Utc>,
) -> SagaCall {
    let mut h = HeaderMap::new();
    let created = created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (k, v) in [
        ("x-saga-id", saga),
        ("x-saga-step", "pay"),
        ("x-saga-phase", phase),
        ("x-saga-attempt", "1"),
        ("x-saga-created-at", &created),
        ("idempotency-key", &format!("{saga}/pay/{phase}")),
    ] {
        h.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    SagaCall::from_parts(&h, serde_json::to_vec(&body).unwrap()).expect("a valid call")
}

fn saga() -> String {
    format!("s-{}", uuid::Uuid::new_v4().simple())
}

/// One test database and a pool on it.
enum Db {
    Lite(sqlx::SqlitePool, tempdir::Dir),
    My(sqlx::MySqlPool, String),
    Pg(sqlx::PgPool, String),
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Sqlite,
    Mysql,
    Postgres,
}

impl Db {
    async fn new(kind: Kind) -> Option<Db> {
        let name = format!("saga_t_kit_{}", uuid::Uuid::new_v4().simple());
        let server = |var: &str| -> Option<url::Url> {
            match std::env::var(var) {
                Ok(u) => Some(url::Url::parse(&u).expect("a database URL")),
                Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("CI=true but {var} is not set")
                }
                Err(_) => {
                    eprintln!("skipped: {var} is not set");
                    None
                }
            }
        };
        let db = match kind {
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.join("p.db"))
                    .create_if_missing(true);
                // One writer at a time: SQLite's own rule, made explicit.
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .unwrap();
                Db::Lite(pool, tempdir::Dir(dir))
            }
            Kind::Mysql => {
                let mut u = server("SAGA_TEST_MYSQL_URL")?;
                let admin = sqlx::MySqlPool::connect(u.as_str()).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                u.set_path(&format!("/{name}"));
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(20)
                    .connect(u.as_str())
                    .await
                    .unwrap();
                Db::My(pool, name)
            }
            Kind::Postgres => {
                let mut u = server("SAGA_TEST_POSTGRES_URL")?;
                let admin = sqlx::PgPool::connect(u.as_str()).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                u.set_path(&format!("/{name}"));
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(20)
                    .connect(u.as_str())
                    .await
                    .unwrap();
                Db::Pg(pool, name)
            }
        };
        let setup = [
            "CREATE TABLE accounts (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL, held BIGINT NOT NULL)",
            "INSERT INTO accounts VALUES ('a', 1000, 0)",
        ];
        for s in setup {
            db.exec(s).await;
        }
        db.barrier_table(&Barrier::new()).await;
        Some(db)
    }

    async fn exec(&self, sql: &str) {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Db::Lite(p, _) => sqlx::query(q()).execute(p).await.map(|_| ()),
            Db::My(p, _) => sqlx::query(q()).execute(p).await.map(|_| ()),
            Db::Pg(p, _) => sqlx::query(q()).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&self, sql: &str) -> i64 {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Db::Lite(p, _) => sqlx::query_scalar::<_, i64>(q()).fetch_one(p).await,
            Db::My(p, _) => sqlx::query_scalar::<_, i64>(q()).fetch_one(p).await,
            Db::Pg(p, _) => sqlx::query_scalar::<_, i64>(q()).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn balance(&self) -> (i64, i64) {
        (
            self.count("SELECT balance FROM accounts WHERE id = 'a'")
                .await,
            self.count("SELECT held FROM accounts WHERE id = 'a'").await,
        )
    }

    async fn barrier_table(&self, b: &Barrier) {
        match self {
            Db::Lite(p, _) => b.create_table_on(p).await,
            Db::My(p, _) => b.create_table_on(p).await,
            Db::Pg(p, _) => b.create_table_on(p).await,
        }
        .expect("barrier table");
    }

    /// One call of the ledger step `phase`, through the barrier.
    async fn send(&self, b: &Barrier, c: &SagaCall) -> Reply {
        match self {
            Db::Lite(p, _) => b.run(p, c, ledger(c)).await,
            Db::My(p, _) => b.run(p, c, ledger(c)).await,
            Db::Pg(p, _) => b.run(p, c, ledger(c)).await,
        }
    }

    async fn cleanup(
        &self,
        b: &Barrier,
        older: Duration,
    ) -> Result<u64, saga_participant::DbError> {
        match self {
            Db::Lite(p, _) => b.cleanup(p, older).await,
            Db::My(p, _) => b.cleanup(p, older).await,
            Db::Pg(p, _) => b.cleanup(p, older).await,
        }
    }

    async fn drop_db(self) {
        let drop = |name: &str, force: &str| format!("DROP DATABASE {name}{force}");
        match self {
            Db::Lite(p, _dir) => p.close().await,
            Db::My(p, name) => {
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop(&name, "")))
                    .execute(&p)
                    .await;
                p.close().await;
            }
            Db::Pg(p, name) => {
                p.close().await;
                let admin =
                    sqlx::PgPool::connect(&std::env::var("SAGA_TEST_POSTGRES_URL").unwrap())
                        .await
                        .unwrap();
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop(&name, " WITH (FORCE)")))
                    .execute(&admin)
                    .await;
            }
        }
    }
}

/// The ledger's business code, the same for every database: the body's `amount` moves per
/// phase; `{"refuse": true}` or too little money is a business "no"; `{"panic": true}` panics.
fn ledger<DB>(
    c: &SagaCall,
) -> impl for<'t> FnOnce(&'t mut sqlx::Transaction<'static, DB>) -> StepFuture<'t> + Send
where
    DB: sqlx::Database,
    sqlx::Transaction<'static, DB>: BarrierTx,
{
    let body: serde_json::Value = c.json().unwrap_or_default();
    let amount = body["amount"].as_i64().unwrap_or(10);
    let refuse = body["refuse"] == json!(true);
    let panic = body["panic"] == json!(true);
    let phase = c.phase;
    move |tx| {
        Box::pin(async move {
            use saga_participant::Phase::*;
            if panic {
                panic!("the business code panics");
            }
            if refuse {
                return Err(StepError::Reject("refused by the test".into()));
            }
            let sql = match phase {
                Action => format!("UPDATE accounts SET balance = balance - {amount} WHERE id = 'a'"),
                Compensation => format!("UPDATE accounts SET balance = balance + {amount} WHERE id = 'a'"),
                Try => format!("UPDATE accounts SET balance = balance - {amount}, held = held + {amount} WHERE id = 'a'"),
                Confirm => format!("UPDATE accounts SET held = held - {amount} WHERE id = 'a'"),
                Cancel => format!("UPDATE accounts SET balance = balance + {amount}, held = held - {amount} WHERE id = 'a'"),
            };
            tx.exec(&sql, &[])
                .await
                .map_err(|e| StepError::Fail(e.to_string()))?;
            Ok(json!({"moved": amount, "phase": phase.as_str()}))
        })
    }
}

macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    if let Some(db) = Db::new(Kind::Sqlite).await { super::$name(&db).await; db.drop_db().await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn mysql() {
                    if let Some(db) = Db::new(Kind::Mysql).await { super::$name(&db).await; db.drop_db().await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some(db) = Db::new(Kind::Postgres).await { super::$name(&db).await; db.drop_db().await }
                }
            }
        )*
    };
}

on_every_database!(
    a_duplicate_replays_the_answer_without_running_again,
    concurrent_duplicates_take_effect_once,
    a_null_compensation_succeeds_and_blocks_the_late_action,
    action_and_compensation_racing_end_applied_and_undone_or_untouched,
    a_refusal_is_repeated_and_its_compensation_does_nothing,
    a_refused_compensation_is_a_500_never_a_409,
    tcc_cancel_without_try_try_after_cancel_and_confirm_twice,
    a_key_reused_with_another_body_is_refused,
    a_saga_older_than_the_retention_window_is_refused,
    cleanup_deletes_only_rows_older_than_the_window_in_batches,
    a_panic_rolls_back_and_answers_503,
);

async fn a_duplicate_replays_the_answer_without_running_again(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let first = db
        .send(&b, &call(&s, "action", json!({"amount": 30})))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = db
        .send(&b, &call(&s, "action", json!({"amount": 30})))
        .await;
    assert_eq!(again, first);
    assert_eq!(
        db.balance().await.0,
        START - 30,
        "the business code ran once"
    );
    let comp = db
        .send(&b, &call(&s, "compensation", json!({"amount": 30})))
        .await;
    let comp2 = db
        .send(&b, &call(&s, "compensation", json!({"amount": 30})))
        .await;
    assert_eq!((comp.status, &comp2), (200, &comp));
    assert_eq!(db.balance().await.0, START, "undone once");
    // Saga ids are case-sensitive: "…A" and "…a" are two sagas, not a duplicate.
    for id in [format!("{s}A"), format!("{s}a")] {
        assert_eq!(
            db.send(&b, &call(&id, "action", json!({"amount": 1})))
                .await
                .status,
            200
        );
    }
    assert_eq!(db.balance().await.0, START - 2, "two sagas, two effects");
}

async fn concurrent_duplicates_take_effect_once(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let c = call(&s, "action", json!({"amount": 7}));
    let answers = futures::future::join_all((0..16).map(|_| db.send(&b, &c))).await;
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(db.balance().await.0, START - 7, "one effect for 16 copies");
    let comps = futures::future::join_all((0..16).map(|_| async {
        db.send(&b, &call(&s, "compensation", json!({"amount": 7})))
            .await
    }))
    .await;
    assert!(
        comps.iter().all(|a| a.status == 200 && a == &comps[0]),
        "{comps:?}"
    );
    assert_eq!(db.balance().await.0, START);
}

async fn a_null_compensation_succeeds_and_blocks_the_late_action(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let comp = db.send(&b, &call(&s, "compensation", json!({}))).await;
    assert_eq!(comp.status, 200, "{comp:?}");
    assert_eq!(comp.body["null_compensation"], json!(true));
    assert_eq!(db.balance().await.0, START, "nothing refunded");
    let tombstones = db
        .count(&format!(
            "SELECT COUNT(*) FROM saga_barrier WHERE saga_id = '{s}' AND phase = 'action' AND state = 'tombstone'"
        ))
        .await;
    assert_eq!(tombstones, 1);
    let late = db.send(&b, &call(&s, "action", json!({}))).await;
    assert_eq!(late.status, 409, "{late:?}");
    assert_eq!(db.balance().await.0, START, "the late action did nothing");
    assert_eq!(
        db.send(&b, &call(&s, "action", json!({}))).await.status,
        409
    );
}

async fn action_and_compensation_racing_end_applied_and_undone_or_untouched(db: &Db) {
    let b = Barrier::new();
    let (mut applied, mut refused) = (0, 0);
    for _ in 0..15 {
        let s = saga();
        let (action, comp) = (
            call(&s, "action", json!({})),
            call(&s, "compensation", json!({})),
        );
        let (a, c) = tokio::join!(db.send(&b, &action), db.send(&b, &comp));
        assert_eq!(c.status, 200, "{c:?}");
        match a.status {
            200 => applied += 1,
            409 => refused += 1,
            other => panic!("action answered {other}: {a:?}"),
        }
        assert_eq!(
            db.balance().await.0,
            START,
            "the state is back after each race"
        );
    }
    assert_eq!(applied + refused, 15);
}

async fn a_refusal_is_repeated_and_its_compensation_does_nothing(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let no = db
        .send(&b, &call(&s, "action", json!({"refuse": true})))
        .await;
    assert_eq!(no.status, 409);
    assert_eq!(no.body["error"], json!("refused by the test"));
    // The retry carries the same body; the stored refusal answers it.
    let again = db
        .send(&b, &call(&s, "action", json!({"refuse": true})))
        .await;
    assert_eq!(again, no);
    let comp = db
        .send(&b, &call(&s, "compensation", json!({"refuse": true})))
        .await;
    assert_eq!(comp.status, 200, "{comp:?}");
    assert_eq!(db.balance().await.0, START);
}

async fn a_refused_compensation_is_a_500_never_a_409(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    assert_eq!(
        db.send(&b, &call(&s, "action", json!({}))).await.status,
        200
    );
    let comp = db
        .send(&b, &call(&s, "compensation", json!({"refuse": true})))
        .await;
    assert_eq!(comp.status, 500, "{comp:?}");
    assert_eq!(
        db.balance().await.0,
        START - 10,
        "nothing undone, nothing recorded"
    );
    // Not recorded: a fixed participant's retry (same key, same body) still has to undo.
    let rows = db
        .count(&format!(
            "SELECT COUNT(*) FROM saga_barrier WHERE saga_id = '{s}' AND phase = 'compensation'"
        ))
        .await;
    assert_eq!(rows, 0);
}

async fn tcc_cancel_without_try_try_after_cancel_and_confirm_twice(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let cancel = db.send(&b, &call(&s, "cancel", json!({}))).await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    let tr = db.send(&b, &call(&s, "try", json!({}))).await;
    assert_eq!(tr.status, 409, "a try after its cancel: {tr:?}");
    assert_eq!(db.balance().await, (START, 0));

    let s = saga();
    assert_eq!(db.send(&b, &call(&s, "try", json!({}))).await.status, 200);
    assert_eq!(db.balance().await, (START - 10, 10));
    let c1 = db.send(&b, &call(&s, "confirm", json!({}))).await;
    let c2 = db.send(&b, &call(&s, "confirm", json!({}))).await;
    assert_eq!((c1.status, &c2), (200, &c1));
    assert_eq!(db.balance().await, (START - 10, 0), "confirmed once");

    let s = saga();
    let lone = db.send(&b, &call(&s, "confirm", json!({}))).await;
    assert_eq!(lone.status, 500, "confirm without a try: {lone:?}");
}

async fn a_key_reused_with_another_body_is_refused(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    assert_eq!(
        db.send(&b, &call(&s, "action", json!({"amount": 5})))
            .await
            .status,
        200
    );
    let other = db
        .send(&b, &call(&s, "action", json!({"amount": 500})))
        .await;
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(
        db.send(&b, &call(&s, "compensation", json!({"amount": 5})))
            .await
            .status,
        200
    );
    let other = db
        .send(&b, &call(&s, "compensation", json!({"amount": 500})))
        .await;
    assert_eq!(other.status, 500, "never 409 for a compensation: {other:?}");
    assert_eq!(db.balance().await.0, START);
}

async fn a_saga_older_than_the_retention_window_is_refused(db: &Db) {
    let b = Barrier::new().retention(Duration::from_secs(7 * 86400));
    let old = chrono::Utc::now() - chrono::TimeDelta::days(7);
    let s = saga();
    let a = db.send(&b, &call_at(&s, "action", json!({}), old)).await;
    assert_eq!(a.status, 409, "{a:?}");
    let c = db
        .send(&b, &call_at(&s, "compensation", json!({}), old))
        .await;
    assert_eq!(
        c.status, 503,
        "an old compensation is not taken for a null one: {c:?}"
    );
    assert_eq!(db.balance().await.0, START);
    let recent = chrono::Utc::now() - chrono::TimeDelta::days(6);
    assert_eq!(
        db.send(&b, &call_at(&saga(), "action", json!({}), recent))
            .await
            .status,
        200
    );
}

async fn cleanup_deletes_only_rows_older_than_the_window_in_batches(db: &Db) {
    let b = Barrier::new();
    let keep = saga();
    assert_eq!(
        db.send(&b, &call(&keep, "action", json!({}))).await.status,
        200
    );
    // 2500 rows of sagas created 40 days ago: more than two batches.
    let old = (chrono::Utc::now() - chrono::TimeDelta::days(40))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    for chunk in 0..5 {
        let values: Vec<String> = (0..500)
            .map(|i| {
                format!(
                    "('old-{chunk}-{i}', 'pay', 'action', '', 'done', 200, '{{}}', '', '{old}')"
                )
            })
            .collect();
        db.exec(&format!(
            "INSERT INTO saga_barrier (saga_id, step, phase, part, state, http_status, response_body, request_sha256, saga_created_at) VALUES {}",
            values.join(", ")
        ))
        .await;
    }
    let refused = db.cleanup(&b, Duration::from_secs(86400)).await;
    assert!(
        refused.is_err(),
        "a window shorter than the retention is refused"
    );
    let deleted = db
        .cleanup(&b, Duration::from_secs(30 * 86400))
        .await
        .unwrap();
    assert_eq!(deleted, 2500);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM saga_barrier").await,
        1,
        "the recent row stays"
    );
    assert_eq!(
        db.send(&b, &call(&keep, "action", json!({}))).await.status,
        200
    );
}

async fn a_panic_rolls_back_and_answers_503(db: &Db) {
    let b = Barrier::new();
    let s = saga();
    let r = db
        .send(&b, &call(&s, "action", json!({"panic": true})))
        .await;
    assert_eq!((r.status, r.retry_after), (503, true), "{r:?}");
    let rows = db
        .count(&format!(
            "SELECT COUNT(*) FROM saga_barrier WHERE saga_id = '{s}'"
        ))
        .await;
    assert_eq!(rows, 0, "rolled back with the barrier row");
}

#[test]
fn calls_without_proper_headers_are_400() {
    let good = call("s1", "action", json!({}));
    assert_eq!(good.phase, saga_participant::Phase::Action);
    let mut h = HeaderMap::new();
    assert_eq!(SagaCall::from_parts(&h, vec![]).unwrap_err().status, 400);
    for (k, v) in [
        ("x-saga-id", "s1"),
        ("x-saga-step", "pay"),
        ("x-saga-phase", "action"),
        ("x-saga-created-at", "2026-01-01T10:00:00.000Z"),
        ("idempotency-key", "s1/other/action"),
    ] {
        h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
    }
    let wrong = SagaCall::from_parts(&h, vec![]).unwrap_err();
    assert_eq!(wrong.status, 400);
    assert!(wrong.body["error"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    h.insert("idempotency-key", "s1/pay/action".parse().unwrap());
    h.insert("x-saga-phase", "undo".parse().unwrap());
    assert_eq!(SagaCall::from_parts(&h, vec![]).unwrap_err().status, 400);
    h.insert("x-saga-phase", "action".parse().unwrap());
    h.insert("x-saga-id", "x".repeat(129).parse().unwrap());
    assert_eq!(SagaCall::from_parts(&h, vec![]).unwrap_err().status, 400);
    h.insert("x-saga-id", "s/1".parse().unwrap());
    h.insert("idempotency-key", "s/1/pay/action".parse().unwrap());
    assert_eq!(
        SagaCall::from_parts(&h, vec![]).unwrap_err().status,
        400,
        "a / in the id"
    );
    h.insert("x-saga-id", "s1".parse().unwrap());
    h.insert("idempotency-key", "s1/pay/action".parse().unwrap());
    assert!(SagaCall::from_parts(&h, vec![]).is_ok());
    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339();
    h.insert("x-saga-created-at", future.parse().unwrap());
    assert_eq!(
        SagaCall::from_parts(&h, vec![]).unwrap_err().status,
        400,
        "created in the future"
    );
}

/// The barrier on a sea-orm transaction the caller owns: enter, change, done, commit.
async fn sea_orm_call(url: &str, b: &Barrier, c: &SagaCall) -> Reply {
    use saga_participant::Entry;
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = sea_orm::Database::connect(url).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let reply = match b.enter(&mut tx, c).await {
        Err(r) => return r,
        Ok(Entry::Answered(r)) => r,
        Ok(Entry::Run(guard)) => {
            let sign = if c.phase == saga_participant::Phase::Action {
                "-"
            } else {
                "+"
            };
            tx.execute_unprepared(&format!(
                "UPDATE accounts SET balance = balance {sign} 10 WHERE id = 'a'"
            ))
            .await
            .unwrap();
            guard.done(&mut tx, json!({"sea_orm": true})).await.unwrap()
        }
    };
    tx.commit().await.unwrap();
    let _ = db.close().await;
    reply
}

on_every_database!(the_barrier_runs_on_a_sea_orm_transaction);

async fn the_barrier_runs_on_a_sea_orm_transaction(db: &Db) {
    let url = match db {
        Db::Lite(_, dir) => format!("sqlite://{}/p.db", dir.0.display()),
        Db::My(_, name) => {
            let mut u = url::Url::parse(&std::env::var("SAGA_TEST_MYSQL_URL").unwrap()).unwrap();
            u.set_path(&format!("/{name}"));
            u.to_string()
        }
        Db::Pg(_, name) => {
            let mut u = url::Url::parse(&std::env::var("SAGA_TEST_POSTGRES_URL").unwrap()).unwrap();
            u.set_path(&format!("/{name}"));
            u.to_string()
        }
    };
    let b = Barrier::new();
    let s = saga();
    let first = sea_orm_call(&url, &b, &call(&s, "action", json!({}))).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        sea_orm_call(&url, &b, &call(&s, "action", json!({}))).await,
        first
    );
    assert_eq!(db.balance().await.0, START - 10, "one effect");
    let s2 = saga();
    let null = sea_orm_call(&url, &b, &call(&s2, "compensation", json!({}))).await;
    assert_eq!(null.body["null_compensation"], json!(true), "{null:?}");
    assert_eq!(
        sea_orm_call(&url, &b, &call(&s2, "action", json!({})))
            .await
            .status,
        409
    );
    assert_eq!(db.balance().await.0, START - 10);
}
