//! The throughput and waiting scenarios: N three-step sagas through the real service, with C
//! concurrent clients, against a fast loopback participant.

use crate::{metric, percentile, proc_usage, start_service, Args, Scenario};
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A participant on loopback that answers at once, counting its calls; `/fail/action` refuses.
pub fn fast_participant() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    // It reads the body, as a real participant does (actix-web closes a connection whose
    // request body was left unread).
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let participant = HttpServer::new(move || {
        let c = c2.clone();
        App::new().default_service(web::to(
            move |req: actix_web::HttpRequest, _body: web::Bytes| {
                c.fetch_add(1, Ordering::Relaxed);
                let refuse = req.path() == "/fail/action";
                async move {
                    if refuse {
                        HttpResponse::Conflict().json(json!({"error": "no"}))
                    } else {
                        HttpResponse::Ok().json(json!({"ok": true}))
                    }
                }
            },
        ))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("participant binds");
    let paddr = participant.addrs()[0];
    actix_web::rt::spawn(participant.run());
    (paddr, calls)
}

/// Runs the scenario on the database at `url` and prints its figures.
pub async fn run(args: &Args, url: &str, dir: &std::path::Path) {
    let (paddr, calls) = fast_participant();

    let (child, base) = start_service(url, &[]);
    let pid = child.id();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");
    let waiting = args.scenario == Scenario::Waiting;
    let step = |n: &str, fail: bool| {
        let a = if fail {
            "fail".to_string()
        } else {
            n.to_string()
        };
        let delay = if waiting { 3_600_000 } else { 0 };
        json!({"name": n, "action": {"url": format!("http://{paddr}/{a}/action")},
               "compensation": {"url": format!("http://{paddr}/{n}/compensation"), "delay_ms": delay}})
    };
    let (cpu0, _) = proc_usage(pid);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.sagas())));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let fail_every = if waiting {
        1
    } else if args.fail_ratio > 0.0 {
        (1.0 / args.fail_ratio).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, lat, next, failures) = (
            client.clone(),
            base.clone(),
            latencies.clone(),
            next.clone(),
            failures.clone(),
        );
        let bodies: Vec<Value> = vec![step("s1", false), step("s2", false)];
        let (s3, s3f) = (step("s3", false), step("s3", true));
        let n = args.sagas();
        workers.push(actix_web::rt::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let mut steps = bodies.clone();
                steps.push(if i % fail_every == fail_every - 1 { s3f.clone() } else { s3.clone() });
                let body = json!({"id": format!("bench-{i}"), "name": "bench", "payload": {"i": i}, "steps": steps});
                let t = Instant::now();
                let wait = if waiting { 0 } else { 60_000 };
                let ok = match client.post(format!("{base}/v1/sagas?wait_ms={wait}")).json(&body).send().await {
                    Ok(r) => r.json::<Value>().await.map(|v| waiting || v["status"] == "succeeded" || v["status"] == "compensated").unwrap_or(false),
                    Err(_) => false,
                };
                if ok {
                    lat.lock().unwrap_or_else(|e| e.into_inner()).push(t.elapsed().as_secs_f64());
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if waiting {
        report_waiting(&client, &base, pid, args.sagas()).await;
        child.kill();
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let (cpu1, peak) = proc_usage(pid);
    child.kill();
    let _ = std::fs::remove_dir_all(dir);
    let mut lat = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let done = lat.len();
    println!(
        "saga-bench db={:?} sagas={} concurrency={} fail_ratio={}",
        args.db,
        args.sagas(),
        args.concurrency,
        args.fail_ratio
    );
    println!(
        "  finished:          {done} ({} not terminal or failed requests)",
        failures.load(Ordering::Relaxed)
    );
    println!("  participant calls: {}", calls.load(Ordering::Relaxed));
    println!("  throughput:        {:.0} sagas/s", done as f64 / elapsed);
    println!(
        "  latency p50:       {:.1} ms",
        percentile(&lat, 0.50) * 1000.0
    );
    println!(
        "  latency p99:       {:.1} ms",
        percentile(&lat, 0.99) * 1000.0
    );
    println!(
        "  service CPU:       {:.2} s per 1000 sagas",
        (cpu1 - cpu0) / done.max(1) as f64 * 1000.0
    );
    println!("  service peak RSS:  {:.1} MiB", peak as f64 / 1048576.0);
}

/// Waits until every saga waits on its timer with no actor in memory, then prints memory.
async fn report_waiting(client: &reqwest::Client, base: &str, pid: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let m = crate::scrape(client, base).await;
        let waiting = metric(&m, "sagas_active{name=\"bench\",status=\"compensating\"}");
        let actors = metric(&m, "saga_live_actors");
        if waiting as usize >= n && actors == 0.0 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = |k: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(k))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            println!("saga-bench scenario=waiting sagas={n}");
            println!("  sagas waiting on timers: {waiting}, live saga actors: {actors}, timers pending: {}", metric(&m, "saga_timers_pending"));
            println!("  service RSS now:  {:.1} MiB", kib("VmRSS:") / 1024.0);
            println!("  service peak RSS: {:.1} MiB", kib("VmHWM:") / 1024.0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sagas did not settle: {waiting} waiting, {actors} actors"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
