//! Retention scenarios (docs/saga-log.md, "Retention"):
//! - `retention`: sagas started as fast as `--concurrency` clients can for `--minutes`, with a
//!   one-minute retention and tombstones; once a minute, the rows and bytes of every table: flat
//!   once the first sagas leave;
//! - `sweep`: a backlog of `--sagas` ended sagas due for purging (use 1,000,000), then
//!   throughput for `--secs` with the sweep held off, while it deletes the backlog, and held
//!   off again: the ratio, how fast the backlog went under load, and with no load.

use crate::sagas::fast_participant;
use crate::{start_service, Args, Db};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The saga log's tables.
const TABLES: [&str; 5] = [
    "sagas",
    "saga_calls",
    "saga_operator_actions",
    "saga_tombstones",
    "saga_instances",
];

/// Rows, then bytes of table and indexes, of each table in [`TABLES`].
async fn sizes(conn: &DatabaseConnection, db: Db) -> Vec<(&'static str, i64, i64)> {
    let backend = conn.get_database_backend();
    let one = |sql: String| {
        let conn = conn.clone();
        async move {
            conn.query_one_raw(Statement::from_string(backend, sql))
                .await
                .ok()
                .flatten()
                .and_then(|r| r.try_get_by_index::<i64>(0).ok())
                .unwrap_or(-1)
        }
    };
    let mut out = Vec::new();
    for t in TABLES {
        let rows = one(format!("SELECT COUNT(*) FROM {t}")).await;
        let bytes = match db {
            // dbstat: the pages of the table and of each of its indexes.
            Db::Sqlite => {
                one(format!(
                    "SELECT CAST(SUM(pgsize) AS INTEGER) FROM dbstat WHERE name = '{t}' OR name IN \
                     (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{t}')"
                ))
                .await
            }
            Db::Mysql => {
                let _ = conn.execute_unprepared(&format!("ANALYZE TABLE {t}")).await;
                one(format!(
                    "SELECT CAST(data_length + index_length AS SIGNED) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = '{t}'"
                ))
                .await
            }
            Db::Postgres => one(format!("SELECT pg_total_relation_size('{t}')::bigint")).await,
        };
        out.push((t, rows, bytes));
    }
    out
}

fn print_sizes(label: &str, sizes: &[(&str, i64, i64)]) {
    let total: i64 = sizes.iter().map(|s| s.2.max(0)).sum();
    let cells: Vec<String> = sizes
        .iter()
        .map(|(t, rows, bytes)| format!("{t} {rows} rows {:.1} MB", *bytes as f64 / 1e6))
        .collect();
    println!(
        "  {label}: {} | total {:.1} MB",
        cells.join(", "),
        total as f64 / 1e6
    );
}

/// A saga of `steps` steps against the participant at `paddr`; every tenth fails at its last
/// step (and compensates the others).
fn saga(paddr: SocketAddr, id: &str, i: usize, steps: usize) -> Value {
    let step = |k: usize| {
        let n = format!("s{k}");
        let a = if k == steps && i % 10 == 9 {
            "fail"
        } else {
            n.as_str()
        };
        json!({"name": n, "action": {"url": format!("http://{paddr}/{a}/action")},
               "compensation": {"url": format!("http://{paddr}/{n}/compensation")}})
    };
    json!({"id": id, "name": "bench", "payload": {"i": i},
           "steps": (1..=steps).map(step).collect::<Vec<_>>()})
}

/// `concurrency` clients start sagas of `steps` steps and wait for their end until `stop` (or
/// `limit` sagas); answers how many ended.
async fn load(
    base: &str,
    paddr: SocketAddr,
    concurrency: usize,
    prefix: &str,
    stop: Arc<AtomicBool>,
    (steps, limit): (usize, usize),
) -> usize {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, base, next, done, stop) = (
            client.clone(),
            base.to_string(),
            next.clone(),
            done.clone(),
            stop.clone(),
        );
        let prefix = prefix.to_string();
        workers.push(actix_web::rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let body = saga(paddr, &format!("{prefix}-{i}"), i, steps);
                let r = client
                    .post(format!("{base}/v1/sagas?wait_ms=60000"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = r {
                    let v: Value = r.json().await.unwrap_or_default();
                    if v["status"] == "succeeded" || v["status"] == "compensated" {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    done.load(Ordering::Relaxed)
}

/// The steady state: one-minute retention and tombstones, sizes once a minute.
pub async fn steady(args: &Args, url: &str) {
    let (paddr, _) = fast_participant();
    let env = [
        ("SAGA__RETENTION__SUCCEEDED_MS", "60000"),
        ("SAGA__RETENTION__COMPENSATED_MS", "60000"),
        ("SAGA__RETENTION__TOMBSTONE_MS", "60000"),
        ("SAGA__RETENTION__SWEEP_MS", "1000"),
    ];
    let (child, base) = start_service(url, &env);
    let conn = Database::connect(url).await.expect("database");
    println!(
        "saga-bench scenario=retention db={:?} minutes={} concurrency={} (retention and tombstones 1 min)",
        args.db, args.minutes, args.concurrency
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let worker = {
        let (base, stop) = (base.clone(), stop.clone());
        let c = args.concurrency;
        actix_web::rt::spawn(async move { load(&base, paddr, c, "r", stop, (3, usize::MAX)).await })
    };
    let client = reqwest::Client::new();
    let mut ended_before = 0.0;
    for minute in 1..=u64::from(args.minutes) {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let m = crate::scrape(&client, &base).await;
        let ended = crate::metric(
            &m,
            "saga_finished_total{name=\"bench\",status=\"succeeded\"}",
        ) + crate::metric(
            &m,
            "saga_finished_total{name=\"bench\",status=\"compensated\"}",
        );
        let purged = crate::metric(&m, "saga_purged_total{status=\"succeeded\"}").max(0.0)
            + crate::metric(&m, "saga_purged_total{status=\"compensated\"}").max(0.0);
        println!(
            "  minute {minute}: {:.0} sagas/s, {:.0} ended, {:.0} purged, purge lag {:.1} s",
            (ended - ended_before) / 60.0,
            ended,
            purged,
            crate::metric(&m, "saga_purge_lag_seconds")
        );
        ended_before = ended;
        print_sizes("           ", &sizes(&conn, args.db).await);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = worker.await;
    child.kill();
    let _ = conn.close().await;
}

/// A backlog of ended sagas due for purging, then throughput without and with the sweep.
pub async fn sweep(args: &Args, url: &str) {
    let n = args.sagas();
    let now = chrono::Utc::now().timestamp_millis();
    let filled = Instant::now();
    // Ended an hour ago over a day, each due now; every saga gets its three calls.
    crate::listing::fill(
        url,
        n,
        now - 86_400_000,
        (82_800_000 / n.max(1) as i64).max(1),
        Some(now),
    )
    .await;
    let conn = Database::connect(url).await.expect("database");
    for (k, step) in ["create", "stock", "pay"].iter().enumerate() {
        conn.execute_unprepared(&format!(
            "INSERT INTO saga_calls (saga_id, step_idx, step, phase, attempt, started_at, \
             finished_at, http_status, outcome) SELECT id, {k}, '{step}', 'action', 1, \
             created_at, created_at, 200, 'success' FROM sagas"
        ))
        .await
        .expect("calls of the backlog");
    }
    // A log that grew over months has its statistics (autovacuum, InnoDB's own): without
    // them PostgreSQL scans saga_calls whole for each batch's delete.
    let analyze = match args.db {
        Db::Postgres => Some("ANALYZE"),
        Db::Mysql => Some("ANALYZE TABLE sagas, saga_calls"),
        Db::Sqlite => None,
    };
    if let Some(sql) = analyze {
        conn.execute_unprepared(sql).await.expect("analyze");
    }
    // What is due is what the backlog holds; what left, its tombstones (sagas that end during
    // the run are due only in a week).
    let count = |c: DatabaseConnection, sql: &'static str| async move {
        c.query_one_raw(Statement::from_string(c.get_database_backend(), sql))
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(-1)
    };
    println!(
        "saga-bench scenario=sweep db={:?} backlog={} due (filled in {:.0} s) concurrency={} secs={}",
        args.db,
        count(conn.clone(), "SELECT COUNT(*) FROM sagas WHERE purge_at IS NOT NULL").await,
        filled.elapsed().as_secs_f64(),
        args.concurrency,
        args.secs
    );
    print_sizes("  before", &sizes(&conn, args.db).await);
    let (paddr, _) = fast_participant();
    // The sweep is held off by a turn nobody renews, until it is released below.
    let hold = "UPDATE saga_sweeps SET holder = 'saga-bench', held_until = 9000000000000";
    let release = "UPDATE saga_sweeps SET holder = NULL, held_until = 0";
    conn.execute_unprepared(hold).await.expect("hold the sweep");
    let (child, base) = start_service(url, &[("SAGA__RETENTION__SWEEP_MS", "1000")]);
    let run = |prefix: &'static str| {
        let base = base.clone();
        let (c, secs) = (args.concurrency, args.secs);
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let t = Instant::now();
            let w = actix_web::rt::spawn(async move {
                load(&base, paddr, c, prefix, s2, (3, usize::MAX)).await
            });
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, Ordering::Relaxed);
            let done = w.await.unwrap_or(0);
            done as f64 / t.elapsed().as_secs_f64()
        }
    };
    // Held off, while it sweeps, held off again: the ratio is to the mean of the two held
    // runs, so that a drift over the session (the log grows, the database's own background
    // work) is not taken for the sweep's cost.
    let _ = run("warm").await;
    let before_run = run("held").await;
    let gone = "SELECT COUNT(*) FROM saga_tombstones";
    let before = count(conn.clone(), gone).await;
    conn.execute_unprepared(release)
        .await
        .expect("release the sweep");
    let t = Instant::now();
    let with = run("swept").await;
    conn.execute_unprepared(hold).await.expect("hold the sweep");
    let purged = count(conn.clone(), gone).await - before;
    let purge_rate = purged as f64 / t.elapsed().as_secs_f64();
    let after_run = run("again").await;
    let without = (before_run + after_run) / 2.0;
    println!(
        "  throughput, sweep held off:     {without:.0} sagas/s (before {before_run:.0}, after {after_run:.0})"
    );
    println!(
        "  throughput, while it sweeps:    {with:.0} sagas/s ({:.0} % of the above)",
        with / without.max(1e-9) * 100.0
    );
    println!("  purged meanwhile: {purged} of the backlog ({purge_rate:.0} sagas/s)");
    // And with no load: the sweep runs flat out.
    let before = count(conn.clone(), gone).await;
    conn.execute_unprepared(release)
        .await
        .expect("release the sweep");
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet = count(conn.clone(), gone).await - before;
    println!(
        "  purged with no load: {quiet} in 10 s ({:.0} sagas/s)",
        quiet as f64 / t.elapsed().as_secs_f64()
    );
    print_sizes("  after", &sizes(&conn, args.db).await);
    child.kill();
    let _ = conn.close().await;
}

/// Bytes per finished saga: `--sagas` sagas of 3 and of 10 steps (a tenth compensated), run to
/// their end, the database settled, then each table's rows and bytes (table and indexes) per
/// saga.
pub async fn bytes(args: &Args, _url: &str) {
    // Each step count gets a fresh database of its own (the one made for the run is left empty).
    let n = args.sagas();
    let (paddr, _) = fast_participant();
    println!(
        "saga-bench scenario=bytes db={:?} sagas={n} (a tenth compensated)",
        args.db
    );
    for steps in [3usize, 10] {
        let dir = std::env::temp_dir().join(format!("bytes-{}-{steps}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = crate::fresh_db(args, &dir).await;
        let (child, base) = start_service(&url, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let ended = load(&base, paddr, args.concurrency, "b", stop, (steps, n)).await;
        child.kill();
        let conn = Database::connect(&url).await.expect("database");
        // Settled: what a long-running log would hold, not the slack of its last writes.
        let settle: &[&str] = match args.db {
            Db::Sqlite => &["PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM"],
            Db::Mysql => &["OPTIMIZE TABLE sagas, saga_calls, saga_tombstones"],
            Db::Postgres => &["VACUUM FULL ANALYZE"],
        };
        for sql in settle {
            let _ = conn.execute_unprepared(sql).await;
        }
        let sizes = sizes(&conn, args.db).await;
        let per = |t: &str| {
            sizes.iter().find(|s| s.0 == t).map_or(0, |s| s.2.max(0)) as f64 / ended.max(1) as f64
        };
        let total: f64 = TABLES.iter().map(|t| per(t)).sum();
        println!(
            "  {steps:>2} steps: {total:.0} B per saga ({ended} ended): sagas {:.0} B, saga_calls {:.0} B ({} rows)",
            per("sagas"),
            per("saga_calls"),
            sizes.iter().find(|s| s.0 == "saga_calls").map_or(0, |s| s.1)
        );
        let _ = conn.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
