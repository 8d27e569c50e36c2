//! The outage scenario: `--sagas` sagas (use 1,000) are in flight against a participant that
//! goes down (every call answers 503 at once) for `--secs` (use 60) and comes back. Run with
//! breakers on and with breakers off (a fresh database each): calls the participant got while
//! down, sagas that gave up because of the outage (compensated or stuck: a saga with the
//! service's breaker must not), the time from the recovery until every saga ended, and the peak
//! request rate on the recovered service (calls per second).

use crate::{start_service, Args};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The participant: slow while up (so that sagas are in flight), 503 while down; it counts.
#[derive(Default)]
struct Flaky {
    down: AtomicBool,
    /// Calls answered 503 while down.
    while_down: AtomicU64,
    /// Calls per second since the recovery: (second, calls).
    after: Mutex<Vec<u64>>,
    recovered: Mutex<Option<Instant>>,
}

/// Runs the scenario twice, breakers on and off, each on a fresh database.
pub async fn run(args: &Args, dir: &std::path::Path) {
    let mut rows = vec![];
    for (label, enabled) in [("breaker on", "true"), ("breaker off", "false")] {
        let d = dir.join(enabled);
        std::fs::create_dir_all(&d).expect("dir");
        let url = crate::fresh_db(args, &d).await;
        rows.push((label, once(args, &url, enabled).await));
    }
    println!();
    println!("| {} sagas, outage {} s | calls while down | gave up | recovery to all ended | peak calls/s after |", args.sagas(), args.secs);
    println!("|---|---|---|---|---|");
    for (label, r) in rows {
        println!("| {label} | {} | {} | {:.1} s | {} |", r.0, r.1, r.2, r.3);
    }
}

/// One run: (calls while down, sagas that gave up, seconds from recovery to all ended, peak
/// calls per second after the recovery).
async fn once(args: &Args, url: &str, breaker: &str) -> (u64, u64, f64, u64) {
    let n = args.sagas();
    let flaky = Arc::new(Flaky::default());
    let f2 = flaky.clone();
    let participant = HttpServer::new(move || {
        let f = f2.clone();
        App::new().default_service(web::to(move |_req: HttpRequest, _body: web::Bytes| {
            let f = f.clone();
            async move {
                if f.down.load(Ordering::SeqCst) {
                    f.while_down.fetch_add(1, Ordering::Relaxed);
                    return HttpResponse::ServiceUnavailable().json(json!({"error": "down"}));
                }
                let recovered = *f.recovered.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = recovered {
                    let s = t.elapsed().as_secs() as usize;
                    let mut a = f.after.lock().unwrap_or_else(|e| e.into_inner());
                    if a.len() <= s {
                        a.resize(s + 1, 0);
                    }
                    a[s] += 1;
                } else {
                    // Up before the outage: slow, so that every saga has a call in flight.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                HttpResponse::Ok().json(json!({"ok": true}))
            }
        }))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .expect("participant binds");
    let paddr = participant.addrs()[0];
    let server = participant.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let (service, base) = start_service(url, &[("SAGA__PARTICIPANT__BREAKER__ENABLED", breaker)]);
    let client = reqwest::Client::new();
    // Two steps on the one service; the usual retry policy: 5 calls, 1 s growing to 30 s
    // (about 8-15 s of retries before a step gives up).
    let step = |name: &str| {
        json!({"name": name, "action": {"url": format!("http://{paddr}/{name}")},
               "compensation": {"url": format!("http://{paddr}/{name}/undo")},
               "retry": {"max_attempts": 5, "initial_backoff_ms": 1000, "max_backoff_ms": 30000}})
    };
    let steps = json!([step("reserve"), step("charge")]);
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (client, base, steps) = (client.clone(), base.clone(), steps.clone());
            async move {
                let body = json!({"id": format!("o-{i}"), "name": "outage", "steps": steps});
                let r = client
                    .post(format!("{base}/v1/sagas"))
                    .json(&body)
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().as_u16() == 201), "start o-{i}");
            }
        })
        .await;
    eprintln!(
        "  {breaker}: {n} sagas in flight; the participant goes down for {} s",
        args.secs
    );
    flaky.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    *flaky.recovered.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    flaky.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    eprintln!(
        "  back up; {} calls while down",
        flaky.while_down.load(Ordering::Relaxed)
    );
    let ended = loop {
        let counts: Value = client
            .get(format!("{base}/v1/counts?name=outage"))
            .send()
            .await
            .expect("counts")
            .json()
            .await
            .unwrap_or_default();
        let c = |s: &str| counts["counts"][s].as_u64().unwrap_or(0);
        let done = c("succeeded") + c("compensated") + c("stuck");
        if done >= n as u64 {
            break back.elapsed().as_secs_f64();
        }
        if back.elapsed() > Duration::from_secs(600) {
            eprintln!("  not all ended in 10 min: {counts}");
            break f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: Value = client
        .get(format!("{base}/v1/counts?name=outage"))
        .send()
        .await
        .expect("counts")
        .json()
        .await
        .unwrap_or_default();
    let gave_up = counts["counts"]["compensated"].as_u64().unwrap_or(0)
        + counts["counts"]["stuck"].as_u64().unwrap_or(0);
    let peak = flaky
        .after
        .lock()
        .map(|a| a.iter().copied().max().unwrap_or(0))
        .unwrap_or(0);
    eprintln!("  {breaker}: {counts}");
    drop(service);
    handle.stop(true).await;
    (
        flaky.while_down.load(Ordering::Relaxed),
        gave_up,
        ended,
        peak,
    )
}
