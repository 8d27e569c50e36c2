//! The takeover scenario: two instances on MariaDB or PostgreSQL with 2 s leases; `--sagas`
//! three-step sagas (use 10,000) are started on the first, whose step b takes 1 s at the
//! participant; the first is killed once they are all under way, and the second takes them
//! over. Prints how late the survivor's lease renewals were during the takeover's burst of
//! claims, loads and writes (they run on their own connection and thread), how many calls
//! waited for a renewal or were cut by a lost lease, the shortest timeout a call left with,
//! how many calls of one step the participant held at once (must be 0), and how long the
//! takeover took.

use crate::{metric, start_service, Args, Db};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per idempotency key, the calls the participant held: (arrived, answered).
#[derive(Default)]
struct Seen {
    calls: Mutex<HashMap<String, Vec<(Instant, Instant)>>>,
    /// The shortest `X-Saga-Timeout-Ms` a call carried.
    min_timeout: Mutex<Option<u64>>,
}

/// Runs the scenario on the (empty) database at `url`.
pub async fn run(args: &Args, url: &str) {
    if matches!(args.db, Db::Sqlite) {
        eprintln!("the takeover scenario needs MariaDB or PostgreSQL (SQLite serves one instance)");
        std::process::exit(2);
    }
    let n = args.sagas();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let participant = HttpServer::new(move || {
        let seen = s2.clone();
        App::new().default_service(web::to(move |req: HttpRequest, _body: web::Bytes| {
            let seen = seen.clone();
            async move {
                let arrived = Instant::now();
                if req.path() == "/b" {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                let h = |k: &str| {
                    req.headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                if let Ok(t) = h("x-saga-timeout-ms").parse::<u64>() {
                    let mut m = seen.min_timeout.lock().unwrap_or_else(|e| e.into_inner());
                    *m = Some(m.map_or(t, |x| x.min(t)));
                }
                seen.calls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(h("idempotency-key"))
                    .or_default()
                    .push((arrived, Instant::now()));
                HttpResponse::Ok().json(json!({"ok": true}))
            }
        }))
    })
    .workers(2)
    .max_connections(100_000)
    .bind("127.0.0.1:0")
    .expect("participant binds");
    let paddr = participant.addrs()[0];
    actix_web::rt::spawn(participant.run());

    let env = |id: &'static str| {
        [
            ("SAGA__CLUSTER__INSTANCE_ID", id),
            ("SAGA__CLUSTER__LEASE_MS", "2000"),
            ("SAGA__CLUSTER__POLL_MS", "100"),
            ("SAGA__PARTICIPANT__CALL_TIMEOUT_MS", "5000"),
        ]
    };
    let (a, base_a) = start_service(url, &env("a"));
    let (b, base_b) = start_service(url, &env("b"));
    let client = reqwest::Client::new();
    let t = Instant::now();
    let step = |s: &str| json!({"name": s, "action": {"url": format!("http://{paddr}/{s}")}});
    let steps = json!([step("a"), step("b"), step("c")]);
    futures::stream::iter(0..n)
        .for_each_concurrent(args.concurrency, |i| {
            let (client, base, steps) = (client.clone(), base_a.clone(), steps.clone());
            async move {
                let body = json!({"id": format!("t-{i}"), "name": "takeover", "steps": steps});
                let r = client
                    .post(format!("{base}/v1/sagas"))
                    .json(&body)
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().as_u16() == 201), "start t-{i}");
            }
        })
        .await;
    eprintln!(
        "  {n} sagas started on a in {:.1} s; killing a",
        t.elapsed().as_secs_f64()
    );
    a.kill();
    let killed = Instant::now();
    let mut done = None;
    while killed.elapsed() < Duration::from_secs(600) {
        let counts = client.get(format!("{base_b}/v1/counts")).send().await.ok();
        let ended = match counts {
            Some(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["counts"]
                ["succeeded"]
                .as_u64()
                .unwrap_or(0),
            None => 0,
        };
        if ended as usize >= n.min(10_000) {
            done = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = crate::scrape(&client, &base_b).await;
    b.kill();
    let renewals = metric(&m, "saga_lease_renewal_seconds_count");
    // The slowest renewal, to the bucket: the first bucket that holds every renewal.
    let slowest = m
        .lines()
        .filter(|l| l.starts_with("saga_lease_renewal_seconds_bucket"))
        .find(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(renewals))
        .and_then(|l| l.split("le=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .unwrap_or("?")
        .to_string();
    let event = |e: &str| metric(&m, &format!("saga_leases_total{{event=\"{e}\"}}")).max(0.0);
    let calls = seen.calls.lock().unwrap_or_else(|e| e.into_inner());
    let overlaps: usize = calls
        .values()
        .map(|v| {
            let mut v = v.clone();
            v.sort();
            v.windows(2).filter(|w| w[1].0 < w[0].1).count()
        })
        .sum();
    println!("saga-bench scenario=takeover db={:?} sagas={n}", args.db);
    match done {
        Some(d) => println!(
            "  every saga ended on b:          {:.1} s after a was killed",
            d.as_secs_f64()
        ),
        None => println!("  not every saga ended within 600 s"),
    }
    println!(
        "  b's lease renewals:             {renewals} (mean {:.1} ms, slowest at most {slowest} s)",
        metric(&m, "saga_lease_renewal_seconds_sum") / renewals.max(1.0) * 1000.0
    );
    println!(
        "  b's leases lost / calls that waited for a renewal / calls cut: {} / {} / {}",
        event("lost"),
        event("renewal_awaited"),
        event("call_cut")
    );
    println!(
        "  shortest call timeout sent:     {} ms (configured 5000)",
        seen.min_timeout
            .lock()
            .map(|m| m.map_or("-".into(), |t| t.to_string()))
            .unwrap_or_default()
    );
    println!("  calls of one step held at once by the participant: {overlaps}");
}
