//! The restart scenario: `--sagas` unfinished sagas (use 100,000) are in the log with their
//! calls in flight when the service is killed; it starts again while their participant is down
//! (every call answers 503, so every saga keeps retrying). Measures how long until every saga
//! was driven again (called at least once after the start; a call lost in flight waits until
//! its 30 s timeout has run out since it was sent), the service's peak RSS during the catch-up,
//! and how the HTTP API answered meanwhile.

use crate::{percentile, proc_usage, start_service, Args};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The participant: hangs (before the kill) or answers 503 (after), and notes who called.
#[derive(Default)]
struct Down {
    /// false: hang every call; true: answer 503 at once.
    refusing: AtomicBool,
    /// Sagas called since the participant started refusing, with when each was first called.
    seen: Mutex<HashMap<String, Instant>>,
}

/// Runs the scenario on the (empty) database at `url`.
pub async fn run(args: &Args, url: &str) {
    let n = args.sagas();
    let down = Arc::new(Down::default());
    let d2 = down.clone();
    let participant = HttpServer::new(move || {
        let d = d2.clone();
        // The body is read, as a real participant does: actix-web closes a connection whose
        // request body was left unread, and every call would then open a new one.
        App::new().default_service(web::to(move |req: HttpRequest, _body: web::Bytes| {
            let d = d.clone();
            async move {
                if !d.refusing.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                // Only the sagas of the log count, not the probes started during the catch-up.
                let id = req.headers().get("x-saga-id").and_then(|v| v.to_str().ok());
                if let Some(id) = id.filter(|id| id.starts_with("r-")) {
                    d.seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id.to_string())
                        .or_insert_with(Instant::now);
                }
                HttpResponse::ServiceUnavailable().json(json!({"error": "down"}))
            }
        }))
    })
    .workers(1)
    .max_connections(200_000)
    .bind("127.0.0.1:0")
    .expect("participant binds");
    let paddr = participant.addrs()[0];
    actix_web::rt::spawn(participant.run());

    // Calls hang for an hour, each timed out after 30 s: every saga has a call in flight (or
    // waiting for a slot, or for its retry). After the restart a call lost in flight goes again
    // once its 30 s have run out since it was sent (the participant may still be working on it):
    // "driven again" includes that wait.
    let slow = [
        ("SAGA__PARTICIPANT__CALL_TIMEOUT_MS", "30000"),
        ("SAGA__CLUSTER__INSTANCE_ID", "bench"),
    ];
    let (child, base) = start_service(url, &slow);
    let client = reqwest::Client::new();
    let created = Instant::now();
    let step = json!({"name": "pay", "action": {"url": format!("http://{paddr}/pay")},
                      "retry": {"max_attempts": 1000, "initial_backoff_ms": 500, "max_backoff_ms": 2000}});
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (client, base, step) = (client.clone(), base.clone(), step.clone());
            async move {
                let body = json!({"id": format!("r-{i}"), "name": "restart", "steps": [step]});
                let r = client
                    .post(format!("{base}/v1/sagas"))
                    .json(&body)
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().as_u16() == 201), "start r-{i}");
            }
        })
        .await;
    eprintln!(
        "  {n} sagas started in {:.0} s; killing the service",
        created.elapsed().as_secs_f64()
    );
    child.kill();

    down.refusing.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    // The same instance id: a restart, which resumes its earlier run's sagas at once.
    let (child, base) = start_service(url, &[("SAGA__CLUSTER__INSTANCE_ID", "bench")]);
    let pid = child.id();
    let up = t0.elapsed();
    let mut api: [(&str, Vec<f64>); 3] = [
        ("GET saga", vec![]),
        ("GET listing", vec![]),
        ("POST start", vec![]),
    ];
    let mut all_driven = None;
    let mut peak_rss = 0u64;
    let mut shown = 0;
    while t0.elapsed() < Duration::from_secs(120) {
        let seen = down.seen.lock().map(|s| s.len()).unwrap_or(0);
        peak_rss = peak_rss.max(proc_usage(pid).1);
        // Progress once a second: where a slow catch-up loses its time.
        if t0.elapsed().as_secs() > shown {
            shown = t0.elapsed().as_secs();
            eprintln!("  {shown:>3} s: {seen} driven again");
        }
        if seen >= n {
            // When the last saga was first called, not when this loop looked.
            let last = down
                .seen
                .lock()
                .ok()
                .and_then(|s| s.values().max().copied());
            all_driven = last.map(|at| at.duration_since(t0));
            break;
        }
        // The API during the catch-up: a saga, a listing and a new start, each timed.
        let i = api[0].1.len() % n;
        for (k, (method, url, body)) in [
            ("GET", format!("{base}/v1/sagas/r-{i}"), None),
            (
                "GET",
                format!("{base}/v1/sagas?status=running&limit=50"),
                None,
            ),
            (
                "POST",
                format!("{base}/v1/sagas"),
                Some(json!({"name": "probe", "steps": [step.clone()]})),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let t = Instant::now();
            let req = match body {
                Some(b) => client.post(&url).json(&b),
                None => client.request(method.parse().unwrap(), &url),
            };
            let ok = req.send().await.is_ok_and(|r| r.status().is_success());
            assert!(ok, "{method} {url} failed during the catch-up");
            api[k].1.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, hwm) = proc_usage(pid);
    child.kill();
    let seen = down.seen.lock().map(|s| s.len()).unwrap_or(0);
    println!("saga-bench scenario=restart db={:?} sagas={n}", args.db);
    println!("  service listening after:  {:.1} s", up.as_secs_f64());
    match all_driven {
        Some(t) => println!(
            "  every saga driven again:  {:.1} s after start-up",
            t.as_secs_f64()
        ),
        None => println!("  driven again within 120 s: {seen} of {n}"),
    }
    println!(
        "  service peak RSS:         {:.1} MiB (sampled {:.1} MiB)",
        hwm as f64 / 1048576.0,
        peak_rss as f64 / 1048576.0
    );
    for (kind, mut ms) in api {
        ms.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  API during the catch-up, {kind:<12} {} requests, p50 {:.1} ms, max {:.1} ms",
            ms.len(),
            percentile(&ms, 0.5),
            ms.last().copied().unwrap_or(0.0)
        );
    }
}
