//! The listing scenario: a saga log of `--sagas` sagas (use 1,000,000) written through the
//! store's own log writer, then `GET /v1/sagas` through the real service: the first page and a
//! page half-way down the log, for several filters, with p50 and p99 of each.

use crate::{percentile, start_service, Args};
use futures::StreamExt;
use saga_orchestrator::domain::{parse_request, Defaults, SagaState, SagaStatus, StepStatus};
use saga_orchestrator::store::{self, SagaLog, SagaRecord, SqlStore, StepMeta};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Saga kinds of the log, in turn.
const KINDS: [&str; 5] = ["order", "refund", "transfer", "signup", "ship"];
/// Requests per filter and page (after a few unmeasured ones).
const SAMPLES: usize = 200;
const WARM_UP: usize = 5;

/// Status of saga `i`: 1 % stuck, 2 % running, 7 % compensated, the rest succeeded.
fn status_of(i: usize) -> SagaStatus {
    match i % 100 {
        0 => SagaStatus::Stuck,
        1 | 2 => SagaStatus::Running,
        3..=9 => SagaStatus::Compensated,
        _ => SagaStatus::Succeeded,
    }
}

/// Runs the scenario on the (empty) database at `url`.
pub async fn run(args: &Args, url: &str) {
    let n = args.sagas();
    let t0 = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    // One saga every 2.5 s over the last 30 days (for 1,000,000 sagas).
    let spacing = (30 * 86_400_000 / n.max(1) as i64).max(1);
    let filled = Instant::now();
    fill(url, n, t0, spacing, None).await;
    let fill_s = filled.elapsed().as_secs_f64();
    let (child, base) = start_service(url, &[]);
    let client = reqwest::Client::new();
    let mid = n / 2;
    let deep = format!("{}_list-{mid:07}", t0 + mid as i64 * spacing);
    println!(
        "saga-bench scenario=listing db={:?} sagas={n} (filled in {fill_s:.0} s, {:.0} sagas/s)",
        args.db,
        n as f64 / fill_s
    );
    println!(
        "  {:<44} {:>9} {:>9} {:>9} {:>9}",
        "GET /v1/sagas?…&limit=50", "first p50", "first p99", "deep p50", "deep p99"
    );
    for filter in [
        "",
        "status=stuck",
        "status=running,stuck",
        "name=order",
        "name=order&status=compensated",
        "name=refund&status=succeeded,compensated",
    ] {
        let first = timings(&client, &format!("{base}/v1/sagas?{filter}&limit=50")).await;
        let deep_url = format!("{base}/v1/sagas?{filter}&limit=50&cursor={deep}");
        let deep = timings(&client, &deep_url).await;
        println!(
            "  {:<44} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            if filter.is_empty() {
                "(no filter)"
            } else {
                filter
            },
            percentile(&first, 0.5),
            percentile(&first, 0.99),
            percentile(&deep, 0.5),
            percentile(&deep, 0.99)
        );
    }
    child.kill();
}

/// Latencies (ms, sorted) of `SAMPLES` GETs of `url`, each checked to answer a full page.
async fn timings(client: &reqwest::Client, url: &str) -> Vec<f64> {
    let mut out = Vec::with_capacity(SAMPLES);
    for k in 0..SAMPLES + WARM_UP {
        let t = Instant::now();
        let r = client.get(url).send().await.expect("listing answers");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if k >= WARM_UP {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        assert!(status.is_success(), "{url}: {status} {v}");
        let items = v["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!(items > 0, "{url}: an empty page");
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// Writes `n` sagas of three steps through the store's log writer, many at a time; with
/// `due`, the ended ones are due for purging then.
pub async fn fill(url: &str, n: usize, t0: i64, spacing: i64, due: Option<i64>) {
    let db = store::connect(url, 8, std::time::Duration::from_secs(60))
        .await
        .expect("database");
    let store: Arc<dyn SagaLog> = Arc::new(SqlStore::new(
        db,
        2,
        100_000,
        std::time::Duration::from_secs(60),
        saga_orchestrator::store::Sealer::none(),
    ));
    let request = json!({"name": "order", "payload": {"order": 1}, "steps": [
        {"name": "create", "action": {"url": "http://127.0.0.1:9/o"}, "compensation": {"url": "http://127.0.0.1:9/oc"}},
        {"name": "stock", "action": {"url": "http://127.0.0.1:9/s"}, "compensation": {"url": "http://127.0.0.1:9/sc"}},
        {"name": "pay", "action": {"url": "http://127.0.0.1:9/p"}, "compensation": {"url": "http://127.0.0.1:9/pc"}}]});
    let def = Arc::new(parse_request(&request, &Defaults::default()).expect("valid"));
    let metas = StepMeta::of(&def);
    let mut done = futures::stream::iter(0..n)
        .map(|i| {
            let (store, def, metas, request) =
                (store.clone(), def.clone(), metas.clone(), request.clone());
            async move {
                let created = t0 + i as i64 * spacing;
                let mut state = SagaState::new(&def, created);
                state.status = status_of(i);
                let step = match state.status {
                    SagaStatus::Succeeded => StepStatus::Succeeded,
                    SagaStatus::Compensated => StepStatus::Compensated,
                    _ => StepStatus::Pending,
                };
                for s in &mut state.steps {
                    s.status = step;
                }
                if state.status == SagaStatus::Running {
                    // Waiting on a retry a day away: the log is read, not driven, meanwhile.
                    let later = chrono::Utc::now().timestamp_millis() + 86_400_000;
                    state.steps[0].status = StepStatus::RetryScheduled;
                    state.steps[0].next_attempt_at = Some(later);
                    state.wake_at = Some(later);
                }
                let r = SagaRecord {
                    id: format!("list-{i:07}"),
                    name: KINDS[i % KINDS.len()].into(),
                    mode: saga_orchestrator::domain::Mode::Saga,
                    request,
                    definition: Ok(def),
                    created_at: created,
                    updated_at: created,
                    version: 0,
                    owner: None,
                    purge_at: due.filter(|_| state.status.is_terminal()),
                    kept: false,
                    steps: metas,
                    state,
                };
                store.create(&r).await.expect("create");
            }
        })
        .buffer_unordered(4096)
        .enumerate();
    while let Some((k, ())) = done.next().await {
        if k % 100_000 == 99_999 {
            eprintln!("  filled {} sagas", k + 1);
        }
    }
}
