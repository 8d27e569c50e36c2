//! The chaos scenario: `--instances` services on one database (through a TCP proxy), a
//! participant that records every call in a ledger and misbehaves, and faults injected at
//! random but reproducibly from `--seed`: SIGKILL and restart of an instance, SIGSTOP past its
//! lease then SIGCONT, the database connection cut (refused, or silent) for `--cut-secs`. Then
//! it checks, from the ledger and the saga log, and prints: every saga terminal (or stuck with a
//! reason), none lost; no two calls of one step and phase in flight at once; no attempt number
//! beyond `max_attempts`; no compensation of a step whose action was never sent, and none before
//! its action ended; the outcome each saga's answers call for. Exits 1 on any violation.

use crate::proxy::{Mode, Proxy};
use crate::{try_start_service, Args, Service};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lease of the instances (ms): short, so that takeovers happen many times in a run.
const LEASE_MS: u64 = 3_000;
/// Timeout of one participant call (ms).
const CALL_TIMEOUT_MS: u64 = 1_000;
/// A killed instance is started again this long after the kill at the earliest (ms).
const RESTART_AFTER_MS: u64 = 200;
/// Calls per phase.
const MAX_ATTEMPTS: u32 = 8;
/// The steps of every saga; the last refuses (409) for the business failures.
const STEPS: [&str; 3] = ["s1", "s2", "s3"];

/// One call as the participant saw it.
#[derive(Clone, Debug)]
struct Call {
    saga: String,
    step: String,
    phase: String,
    key: String,
    attempt: u32,
    instance: String,
    start: Instant,
    /// `start` in milliseconds since the Unix epoch, to compare with leases.
    wall_ms: i64,
    /// The end of its sender's lease as last seen before the call: the sender cuts the call's
    /// timeout to it.
    lease_end: Option<Instant>,
    /// When the participant answered (never, for a call whose connection was dropped first).
    end: Option<Instant>,
    status: u16,
}

impl Call {
    /// The end of the call as its sender sees it: the answer, the call timeout, or the first
    /// cut-off of its connection (its instance killed, the participant's connections reset),
    /// whichever came first. The participant's handler may run on: it cannot see the sender go.
    fn over(&self, cutoffs: &[Cutoff]) -> Instant {
        let cap = self.start + Duration::from_millis(CALL_TIMEOUT_MS);
        let sender = self.instance.split('#').next().unwrap_or_default();
        // A call of a killed instance may still reach the participant (through the proxy) just
        // after the kill was noted: sent by the dead process, which the restart (same token)
        // cannot have sent before `RESTART_AFTER_MS`, it is over as it arrives.
        let cut = cutoffs
            .iter()
            .filter(|c| match c.instance.as_deref() {
                None => c.at >= self.start,
                Some(i) => {
                    i == sender && c.at + Duration::from_millis(RESTART_AFTER_MS) >= self.start
                }
            })
            .map(|c| c.at)
            .min();
        [Some(cap), self.end, cut, self.lease_end]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(cap)
    }
}

/// A moment that ended the connections of one instance (killed) or of all (reset).
#[derive(Clone, Debug)]
struct Cutoff {
    instance: Option<String>,
    at: Instant,
}

/// What the participant does, and what it saw.
struct Ledger {
    seed: u64,
    calls: Mutex<Vec<Call>>,
    cutoffs: Mutex<Vec<Cutoff>>,
}

impl Ledger {
    fn cut(&self, instance: Option<String>) {
        self.cutoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Cutoff {
                instance,
                at: Instant::now(),
            });
    }
}

impl Ledger {
    /// A number in [0, 1) fixed by the seed and the call: the same run makes the same faults.
    fn draw(&self, key: &str, attempt: u32) -> f64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, key, attempt).hash(&mut h);
        (h.finish() % 1_000_000) as f64 / 1_000_000.0
    }
}

/// Sagas whose index is a multiple of this fail at s3 (409: 10 % business failures).
const FAIL_EVERY: usize = 10;

/// Whether saga `i` comes through DTM's protocol: a quarter of them, some of which fail.
fn is_dtm(i: usize) -> bool {
    i % 4 == 2
}

async fn answer(req: HttpRequest, _body: web::Bytes, ledger: web::Data<Ledger>) -> HttpResponse {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut parts = req.path().trim_start_matches('/').split('/');
    let (step, phase) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let (saga, key) = (h("x-saga-id"), h("idempotency-key"));
    let attempt: u32 = h("x-saga-attempt").parse().unwrap_or(0);
    let idx = {
        let mut calls = ledger.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.push(Call {
            saga: saga.clone(),
            step: step.clone(),
            phase: phase.clone(),
            key: key.clone(),
            attempt,
            instance: h("x-saga-instance"),
            start: Instant::now(),
            wall_ms: wall_ms(),
            lease_end: None,
            end: None,
            status: 0,
        });
        calls.len() - 1
    };
    let business_failure = step == "s3"
        && phase == "action"
        && saga
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % FAIL_EVERY == 0);
    let x = ledger.draw(&key, attempt);
    let (delay, status) = if business_failure {
        (5, 409)
    } else if x < 0.10 {
        (5, 503)
    } else if x < 0.13 {
        // Hangs past the call timeout, then answers: the sender has given up by then.
        (CALL_TIMEOUT_MS + 500, 200)
    } else {
        (5 + (x * 100.0) as u64 % 25, 200)
    };
    let mut ended = Ended {
        ledger: &ledger,
        idx,
        status,
        answered: false,
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    ended.answered = true;
    drop(ended);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .json(json!({"ok": status == 200}))
}

/// Marks a call ended when its handler ends, or is dropped because its sender went away
/// (status 0 then: the answer was never written).
struct Ended<'a> {
    ledger: &'a Ledger,
    idx: usize,
    status: u16,
    answered: bool,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut calls = self.ledger.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = calls.get_mut(self.idx) {
            c.end = Some(Instant::now());
            c.status = if self.answered { self.status } else { 0 };
        }
    }
}

/// One instance: its id, the running process (none while killed) and its API.
struct Instance {
    id: String,
    /// Its database URL (through its node's proxy).
    url: String,
    service: Option<Service>,
    base: String,
}

/// Starts instance `id`, again until it comes up (it exits when the database is cut off as it
/// starts); off the runtime's thread, which the proxies and the participant need meanwhile.
async fn start_instance(id: &str, url: &str) -> (Service, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match try_start_instance(id, url).await {
            Ok(started) => return started,
            Err(e) if Instant::now() < deadline => {
                eprintln!("  {id} did not start ({e}); again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("{id} never started: {e}"),
        }
    }
}

async fn try_start_instance(id: &str, url: &str) -> Result<(Service, String), String> {
    let (id, url) = (id.to_string(), url.to_string());
    tokio::task::spawn_blocking(move || {
        let lease = LEASE_MS.to_string();
        let timeout = CALL_TIMEOUT_MS.to_string();
        try_start_service(
            &url,
            &[
                ("SAGA__CLUSTER__INSTANCE_ID", &id),
                ("SAGA__CLUSTER__LEASE_MS", &lease),
                ("SAGA__CLUSTER__POLL_MS", "200"),
                ("SAGA__PARTICIPANT__CALL_TIMEOUT_MS", &timeout),
                ("SAGA__DATABASE__WRITE_TIMEOUT_MS", "2000"),
            ],
        )
    })
    .await
    .map_err(|e| e.to_string())?
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// Faults injected so far, by kind.
type Injected = Arc<Mutex<BTreeMap<&'static str, u32>>>;

/// What the fault injector works on.
struct Chaos {
    instances: Vec<Arc<Mutex<Instance>>>,
    /// Between the instances and the database, one per database node (none on SQLite).
    db_proxies: Vec<Arc<Proxy>>,
    /// Between the instances and the participant.
    participant_proxy: Arc<Proxy>,
    ledger: web::Data<Ledger>,
    cut: Duration,
    /// A shell command that restarts the database server (none: that fault is left out).
    db_restart: Option<String>,
}

impl Chaos {
    /// Injects one fault chosen by `rng`; answers what it did.
    async fn inject(&self, rng: &mut StdRng) -> &'static str {
        let k = rng.random_range(0..self.instances.len());
        let kinds = match (self.db_proxies.is_empty(), &self.db_restart) {
            (true, _) => 3,
            (false, None) => 5,
            (false, Some(_)) => 6,
        };
        match rng.random_range(0..kinds) {
            0 => {
                let (id, url, old) = {
                    let mut i = self.instances[k].lock().unwrap_or_else(|e| e.into_inner());
                    (i.id.clone(), i.url.clone(), i.service.take())
                };
                if let Some(s) = old {
                    s.kill();
                    self.ledger.cut(Some(id.clone()));
                }
                tokio::time::sleep(Duration::from_millis(
                    rng.random_range(RESTART_AFTER_MS..1500),
                ))
                .await;
                let (s, base) = start_instance(&id, &url).await;
                let mut i = self.instances[k].lock().unwrap_or_else(|e| e.into_inner());
                i.service = Some(s);
                i.base = base;
                "SIGKILL and restart of an instance"
            }
            1 => {
                let pid = self.instances[k]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .service
                    .as_ref()
                    .map(Service::id);
                if let Some(pid) = pid {
                    signal(pid, "-STOP");
                    tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_000)).await;
                    signal(pid, "-CONT");
                }
                "SIGSTOP past the lease, then SIGCONT"
            }
            2 => {
                // Every call in flight loses its connection (the sender sees a reset).
                self.participant_proxy.set(Mode::Refuse);
                self.ledger.cut(None);
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.participant_proxy.set(Mode::Up);
                "participant connections reset"
            }
            3 | 4 => {
                let (mode, what) = if rng.random_bool(0.5) {
                    (Mode::Refuse, "database connections refused")
                } else {
                    (Mode::Partition, "database connections silent (partition)")
                };
                for p in &self.db_proxies {
                    p.set(mode);
                }
                tokio::time::sleep(self.cut).await;
                for p in &self.db_proxies {
                    p.set(Mode::Up);
                }
                what
            }
            _ => {
                let cmd = self.db_restart.clone().unwrap_or_default();
                let ok = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh")
                        .args(["-c", &cmd])
                        .status()
                        .is_ok_and(|s| s.success())
                })
                .await
                .unwrap_or(false);
                if ok {
                    "database server restarted"
                } else {
                    "database server restart FAILED"
                }
            }
        }
    }
}

/// Every `saga_instances` row seen by sampling the database (directly, not through the proxy):
/// when, which lease token, and until when it held its lease.
type LeaseSamples = Arc<Mutex<Vec<(Instant, String, i64)>>>;

/// Samples the lease table every 100 ms until `stop`.
async fn sample_leases(url: String, galera: bool, samples: LeaseSamples, stop: Arc<AtomicBool>) {
    let mut conn = None;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = sea_orm::Database::connect(&url).await.ok();
        }
        if let Some(c) = &conn {
            let at = Instant::now();
            let sql = "SELECT owner, lease_until FROM saga_instances";
            let read = async {
                let txn = c.begin().await?;
                if galera {
                    // Read what the cluster committed, not what this node has applied so far.
                    txn.execute_unprepared("SET SESSION wsrep_sync_wait = 1")
                        .await?;
                }
                let rows = txn
                    .query_all_raw(Statement::from_string(c.get_database_backend(), sql))
                    .await?;
                txn.commit().await?;
                Ok::<_, sea_orm::DbErr>(rows)
            };
            match read.await {
                Ok(rows) => {
                    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
                    for r in rows {
                        if let (Ok(o), Ok(u)) = (
                            r.try_get::<String>("", "owner"),
                            r.try_get::<i64>("", "lease_until"),
                        ) {
                            s.push((at, o, u));
                        }
                    }
                }
                // The server restarting: connect again.
                Err(_) => conn = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the scenario on the (empty) database at `url`.
pub async fn run(args: &Args, url: &str) {
    let n = args.sagas();
    let ledger = web::Data::new(Ledger {
        seed: args.seed,
        calls: Mutex::new(Vec::new()),
        cutoffs: Mutex::new(Vec::new()),
    });
    let l2 = ledger.clone();
    let participant = HttpServer::new(move || {
        App::new()
            .app_data(l2.clone())
            .default_service(web::to(answer))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .expect("participant binds");
    let participant_proxy = Arc::new(Proxy::start(participant.addrs()[0].to_string()).await);
    let paddr = format!("127.0.0.1:{}", participant_proxy.port);
    actix_web::rt::spawn(participant.run());

    // The instances reach the database through proxies, which the faults cut: one per node
    // (`--db-nodes`, instance k on node k mod n), else one.
    let (mut proxied, mut db_proxies) = (vec![], vec![]);
    if url.starts_with("sqlite:") {
        proxied.push(url.to_string());
    } else {
        let mut u = url::Url::parse(url).expect("url");
        let ports = match &args.db_nodes {
            Some(list) => list
                .split(',')
                .map(|p| p.trim().parse::<u16>().expect("--db-nodes: ports"))
                .collect(),
            None => vec![u.port_or_known_default().expect("port")],
        };
        for port in ports {
            let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
            u.set_port(Some(proxy.port)).expect("port");
            proxied.push(u.to_string());
            db_proxies.push(Arc::new(proxy));
        }
    }
    let count = if db_proxies.is_empty() {
        1
    } else {
        args.instances
    };
    let mut instances: Vec<Arc<Mutex<Instance>>> = vec![];
    for k in 0..count {
        let (id, url) = (format!("chaos-{k}"), proxied[k % proxied.len()].clone());
        let (service, base) = start_instance(&id, &url).await;
        instances.push(Arc::new(Mutex::new(Instance {
            id,
            url,
            service: Some(service),
            base,
        })));
    }
    let samples: LeaseSamples = Default::default();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = actix_web::rt::spawn(sample_leases(
        url.to_string(),
        args.db_nodes.is_some(),
        samples.clone(),
        stop_sampling.clone(),
    ));
    let injected: Injected = Default::default();
    let t0 = Instant::now();
    let started = Arc::new(AtomicBool::new(false));

    // Faults, one every 2-4 s, until every saga was started and `--faults` were injected.
    let chaos = {
        let (injected, started) = (injected.clone(), started.clone());
        let (seed, faults) = (args.seed, args.faults);
        let chaos = Chaos {
            instances: instances.clone(),
            db_proxies: db_proxies.clone(),
            participant_proxy: participant_proxy.clone(),
            ledger: ledger.clone(),
            cut: Duration::from_secs(args.cut_secs),
            db_restart: args.db_restart.clone().filter(|_| !db_proxies.is_empty()),
        };
        actix_web::rt::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for done in 0.. {
                if done >= faults && started.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
                let what = chaos.inject(&mut rng).await;
                *injected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(what)
                    .or_default() += 1;
            }
        })
    };

    // Starts, each on a random live instance, again on another until one takes it.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let step = |name: &str| {
        let retry = json!({"max_attempts": MAX_ATTEMPTS, "initial_backoff_ms": 100, "max_backoff_ms": 1000});
        json!({"name": name,
               "action": {"url": format!("http://{paddr}/{name}/action")},
               "compensation": {"url": format!("http://{paddr}/{name}/compensation")},
               "retry": retry})
    };
    let steps: Vec<Value> = STEPS.iter().map(|s| step(s)).collect();
    // A quarter of the sagas come through DTM's protocol (docs/dtm.md): the same steps as DTM
    // branches, its retry interval (1 s, doubling) and a retry limit giving the same attempts.
    let dtm_steps: Vec<Value> = STEPS
        .iter()
        .map(|s| {
            json!({"action": format!("http://{paddr}/{s}/action"),
                        "compensate": format!("http://{paddr}/{s}/compensation")})
        })
        .collect();
    let bases = |instances: &[Arc<Mutex<Instance>>]| -> Vec<String> {
        instances
            .iter()
            .map(|i| i.lock().unwrap_or_else(|e| e.into_inner()).base.clone())
            .collect()
    };
    use futures::StreamExt;
    let rate = args.rate.max(0.1);
    futures::stream::iter(0..n)
        .for_each_concurrent(args.concurrency, |i| {
            let (client, steps, instances) = (client.clone(), steps.clone(), instances.clone());
            let dtm_steps = dtm_steps.clone();
            async move {
                // Spread over the run, so that every fault finds sagas in every phase.
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
                let dtm = is_dtm(i);
                let (path, body) = if dtm {
                    let payloads = vec![json!("{}"); dtm_steps.len()];
                    (
                        "/api/dtmsvr/submit",
                        json!({"gid": format!("c-{i}"), "trans_type": "saga",
                        "steps": dtm_steps, "payloads": payloads, "retry_interval": 1,
                        "retry_limit": MAX_ATTEMPTS - 1, "request_timeout": 1}),
                    )
                } else {
                    (
                        "/v1/sagas",
                        json!({"id": format!("c-{i}"), "name": "chaos", "steps": steps}),
                    )
                };
                let deadline = Instant::now() + Duration::from_secs(300);
                for k in i.. {
                    let all = bases(&instances);
                    let base = &all[k % all.len()];
                    let r = client
                        .post(format!("{base}{path}"))
                        .json(&body)
                        .send()
                        .await;
                    if r.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 201)) {
                        return;
                    }
                    assert!(Instant::now() < deadline, "saga c-{i} never taken");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
    let all_started = t0.elapsed();
    eprintln!("  {n} sagas started in {:.0} s", all_started.as_secs_f64());
    started.store(true, Ordering::SeqCst);
    let _ = chaos.await;

    // Every saga ends (or is stuck) within a bound, looked at through any instance.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut finals: HashMap<String, Value> = HashMap::new();
    while finals.len() < n && Instant::now() < deadline {
        let all = bases(&instances);
        for i in 0..n {
            let id = format!("c-{i}");
            if finals.contains_key(&id) {
                continue;
            }
            let base = &all[i % all.len()];
            let Ok(r) = client.get(format!("{base}/v1/sagas/{id}")).send().await else {
                continue;
            };
            if r.status().as_u16() == 404 {
                finals.insert(id, json!({"status": "lost"}));
                continue;
            }
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            if matches!(
                v["status"].as_str(),
                Some("succeeded" | "compensated" | "failed" | "stuck")
            ) {
                finals.insert(id, v);
            }
        }
        if finals.len() < n {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let ended = t0.elapsed();
    for i in &instances {
        if let Some(s) = i.lock().unwrap_or_else(|e| e.into_inner()).service.take() {
            s.kill();
        }
    }
    stop_sampling.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let calls = ledger
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let cutoffs = ledger
        .cutoffs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let violations = check(n, &finals, &calls, &cutoffs, &samples);

    println!(
        "saga-bench scenario=chaos db={:?} sagas={n} instances={count} seed={}",
        args.db, args.seed
    );
    println!(
        "  started in {:.0} s, all ended {:.0} s after the first start; {} calls, {} cut off by their sender",
        all_started.as_secs_f64(),
        ended.as_secs_f64(),
        calls.len(),
        calls.iter().filter(|c| c.end.is_some() && c.status == 0).count()
    );
    for (what, k) in injected.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  injected: {what} × {k}");
    }
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for v in finals.values() {
        *by_status
            .entry(v["status"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let unended = n - finals.len();
    println!("  outcomes: {by_status:?}, not ended: {unended}");
    let dtm = (0..n).filter(|&i| is_dtm(i)).count();
    println!("  through DTM's protocol (/api/dtmsvr): {dtm} of {n}");
    for (rule, found) in &violations {
        println!(
            "  {rule}: {}",
            if found.is_empty() {
                "ok".to_string()
            } else {
                format!("VIOLATED × {}, e.g. {}", found.len(), found[0])
            }
        );
    }
    if violations.iter().any(|(_, f)| !f.is_empty()) {
        std::process::exit(1);
    }
}

/// The rules, each with what breaks it.
fn check(
    n: usize,
    finals: &HashMap<String, Value>,
    calls: &[Call],
    cutoffs: &[Cutoff],
    samples: &[(Instant, String, i64)],
) -> Vec<(&'static str, Vec<String>)> {
    // A call must start under its token's lease: the latest lease the table showed for that
    // token (up to a sample after the call, for a renewal the sampling had not seen yet) must
    // reach past the call's start.
    let mut leases: HashMap<&str, Vec<(Instant, i64)>> = HashMap::new();
    for (at, token, until) in samples {
        leases
            .entry(token.as_str())
            .or_default()
            .push((*at, *until));
    }
    let lease_end = |c: &Call| {
        let until = leases
            .get(c.instance.as_str())?
            .iter()
            .filter(|(at, _)| *at <= c.start)
            .map(|(_, until)| *until)
            .max()?;
        // The sender trusts its lease a margin (lease_ms / 5) short of the end it wrote.
        let end = until - LEASE_MS as i64 / 5;
        Some(c.start + Duration::from_millis(end.saturating_sub(c.wall_ms).max(0) as u64))
    };
    let calls: &[Call] = &calls
        .iter()
        .map(|c| Call {
            lease_end: lease_end(c),
            ..c.clone()
        })
        .collect::<Vec<_>>();
    let mut ended = vec![];
    for i in 0..n {
        let id = format!("c-{i}");
        match finals.get(&id) {
            None => ended.push(format!("{id} did not end")),
            Some(v) if v["status"] == "lost" => ended.push(format!("{id} lost")),
            Some(v) if v["status"] == "stuck" && v["error"].as_str().unwrap_or("").is_empty() => {
                ended.push(format!("{id} stuck without a reason"))
            }
            Some(v) if v["status"] == "failed" => ended.push(format!("{id} failed: {v}")),
            _ => {}
        }
    }
    let mut by_key: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in calls {
        by_key.entry(c.key.as_str()).or_default().push(c);
    }
    let (mut overlap, mut attempts) = (vec![], vec![]);
    for (key, cs) in &mut by_key {
        cs.sort_by_key(|c| c.start);
        for w in cs.windows(2) {
            if w[1].start < w[0].over(cutoffs) {
                overlap.push(format!(
                    "{key}: attempt {} by {} began {} ms after attempt {} by {}, which answered {} after {} ms",
                    w[1].attempt,
                    w[1].instance,
                    (w[1].start - w[0].start).as_millis(),
                    w[0].attempt,
                    w[0].instance,
                    w[0].status,
                    w[0].end.map_or(-1, |e| (e - w[0].start).as_millis() as i64),
                ));
            }
        }
        if let Some(c) = cs
            .iter()
            .find(|c| c.attempt > MAX_ATTEMPTS || c.attempt == 0)
        {
            attempts.push(format!("{key}: attempt {}", c.attempt));
        }
    }
    let (mut order, mut outcome) = (vec![], vec![]);
    let mut by_saga: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in calls {
        by_saga.entry(c.saga.as_str()).or_default().push(c);
    }
    for (saga, cs) in &by_saga {
        for step in STEPS {
            let of = |phase: &str| -> Vec<&&Call> {
                cs.iter()
                    .filter(|c| c.step == step && c.phase == phase)
                    .collect()
            };
            let (actions, comps) = (of("action"), of("compensation"));
            if let Some(first) = comps.iter().map(|c| c.start).min() {
                match actions.iter().map(|c| c.over(cutoffs)).max() {
                    None => order.push(format!("{saga}/{step}: compensated, action never sent")),
                    Some(last) if first < last => order.push(format!(
                        "{saga}/{step}: compensation before its action ended"
                    )),
                    _ => {}
                }
            }
            let Some(v) = finals.get(*saga) else { continue };
            // In time for its sender: before the timeout and the sender's end (the lease end
            // is left out here: sampled, on a multi-primary cluster it may lag behind).
            let answered_ok = |cs: &[&&Call]| {
                cs.iter().any(|c| {
                    let lenient = Call {
                        lease_end: None,
                        ..(**c).clone()
                    };
                    c.status == 200 && c.end.is_some_and(|e| e <= lenient.over(cutoffs))
                })
            };
            match v["status"].as_str() {
                Some("succeeded") if !comps.is_empty() => {
                    outcome.push(format!("{saga}/{step}: succeeded, yet compensated"))
                }
                Some("succeeded") if !answered_ok(&actions) => outcome.push(format!(
                    "{saga}/{step}: succeeded without a 200 in time: {:?}",
                    actions
                        .iter()
                        .map(|c| (
                            c.attempt,
                            c.status,
                            c.end.map(|e| (e - c.start).as_millis())
                        ))
                        .collect::<Vec<_>>()
                )),
                Some("compensated") if !comps.is_empty() && !answered_ok(&comps) => {
                    outcome.push(format!("{saga}/{step}: compensated without a timely 200"))
                }
                _ => {}
            }
        }
    }
    let mut unleased = vec![];
    for c in calls {
        let seen = leases.get(c.instance.as_str()).and_then(|ls| {
            ls.iter()
                .filter(|(at, _)| *at <= c.start + Duration::from_millis(500))
                .map(|(_, until)| *until)
                .max()
        });
        if let Some(until) = seen.filter(|u| c.wall_ms > *u) {
            unleased.push(format!(
                "{} {} {} attempt {} by {}: {} ms after its lease ended",
                c.saga,
                c.step,
                c.phase,
                c.attempt,
                c.instance,
                c.wall_ms - until
            ));
        }
    }
    vec![
        (
            "every saga ended (terminal, or stuck with a reason), none lost",
            ended,
        ),
        ("no call by an instance after its lease ended", unleased),
        (
            "no two calls of one step and phase in flight at once",
            overlap,
        ),
        ("no attempt beyond max_attempts", attempts),
        (
            "no compensation without its action, or before it ended",
            order,
        ),
        ("outcomes agree with the participant's answers", outcome),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempt 1 of c-0/s1/action by chaos-1's token, arriving `at` and answering 1.5 s later.
    fn hung(at: Instant) -> Call {
        Call {
            saga: "c-0".into(),
            step: "s1".into(),
            phase: "action".into(),
            key: "c-0/s1/action".into(),
            attempt: 1,
            instance: "chaos-1#r.1".into(),
            start: at,
            wall_ms: 0,
            lease_end: None,
            end: Some(at + Duration::from_millis(1_500)),
            status: 200,
        }
    }

    fn overlaps(calls: &[Call], cutoffs: &[Cutoff]) -> Vec<String> {
        check(0, &HashMap::new(), calls, cutoffs, &[])
            .into_iter()
            .find(|(rule, _)| rule.starts_with("no two calls"))
            .map(|(_, found)| found)
            .unwrap_or_default()
    }

    fn killed(at: Instant) -> Vec<Cutoff> {
        vec![Cutoff {
            instance: Some("chaos-1".into()),
            at,
        }]
    }

    #[test]
    fn a_resend_while_the_first_call_is_in_flight_is_an_overlap() {
        let t = Instant::now();
        let calls = [hung(t), hung(t + Duration::from_millis(786))];
        assert_eq!(overlaps(&calls, &[]).len(), 1);
    }

    #[test]
    fn a_call_the_killed_process_sent_is_over_when_it_arrives_after_the_kill() {
        // The restart (same token) resends it; the first was on its way when the kill was noted.
        let t = Instant::now();
        let calls = [
            hung(t + Duration::from_millis(5)),
            hung(t + Duration::from_millis(791)),
        ];
        assert_eq!(overlaps(&calls, &killed(t)), Vec::<String>::new());
    }

    #[test]
    fn a_kill_does_not_end_the_calls_of_the_restarted_process() {
        let t = Instant::now();
        let after = t + Duration::from_millis(RESTART_AFTER_MS + 100);
        let calls = [hung(after), hung(after + Duration::from_millis(500))];
        assert_eq!(overlaps(&calls, &killed(t)).len(), 1);
    }

    #[test]
    fn a_kill_of_another_instance_ends_nothing_here() {
        let t = Instant::now();
        let mut other = killed(t);
        other[0].instance = Some("chaos-2".into());
        let calls = [
            hung(t + Duration::from_millis(5)),
            hung(t + Duration::from_millis(791)),
        ];
        assert_eq!(overlaps(&calls, &other).len(), 1);
    }
}
