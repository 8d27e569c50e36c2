//! The client against the real service binary: starts, reads, waits, listings, problems,
//! definitions, dry runs.

mod common;

use common::{closed_port, service, Participant};
use saga_client::{
    Client, Endpoint, Error, GetOptions, ListOptions, Mode, SagaStatus, StartOptions, StartRequest,
    StepSpec,
};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A two-step saga against participant `p`, with id `id` when given.
fn order(p: &Participant, name: &str, id: Option<&str>) -> StartRequest {
    let mut s = StartRequest::saga(
        name,
        vec![
            StepSpec::saga("create", Endpoint::new(p.url("/create")))
                .compensation(Endpoint::new(p.url("/cancel"))),
            StepSpec::saga(
                "charge",
                Endpoint::new(p.url("/charge")).body(json!({"amount": 5})),
            )
            .compensation(Endpoint::new(p.url("/refund")))
            .timeout_ms(2_000),
        ],
    )
    .payload(json!({"order": 1}));
    if let Some(id) = id {
        s = s.id(id);
    }
    s.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_start_is_created_once_and_waits_to_succeed() {
    let Some(svc) = service() else { return };
    let p = Participant::start().await;
    let c = Client::new(&svc.base).unwrap();

    let req = order(&p, "place_order", Some("order-1"));
    let first = c.start(&req, StartOptions::default()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.saga.id, "order-1");
    assert_eq!(first.saga.mode, Mode::Saga);
    assert_eq!(first.saga.steps.len(), 2);
    // The same id and request: the same saga, not a second one.
    let again = c.start(&req, StartOptions::default()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.saga.id, "order-1");
    assert_eq!(again.saga.created_at, first.saga.created_at);

    // A start that waits answers once the saga succeeded.
    let req = order(&p, "place_order", None);
    let waited = c
        .start(&req, StartOptions { wait: Some(WAIT) })
        .await
        .unwrap();
    assert!(waited.created);
    assert_eq!(
        waited.saga.status,
        SagaStatus::Succeeded,
        "{:?}",
        waited.saga
    );
    assert!(waited.saga.is_terminal());

    // What the participant got: the payload as the default body, the saga's headers.
    let done = c.wait("order-1", WAIT).await.unwrap();
    assert_eq!(done.status, SagaStatus::Succeeded);
    let create = p.on("/create");
    let mine = create
        .iter()
        .find(|r| r.headers.get("x-saga-id").map(String::as_str) == Some("order-1"))
        .expect("the create call of order-1");
    assert_eq!(mine.json(), json!({"order": 1}));
    assert_eq!(mine.method, "POST");
    assert_eq!(p.on("/charge")[0].json(), json!({"amount": 5}));

    // One saga's read: history, actions, dependencies, the request as accepted.
    let full = c
        .get(
            "order-1",
            GetOptions {
                attempts: true,
                request: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let charge = full.step("charge").unwrap();
    assert_eq!(
        charge.depends_on.as_deref(),
        Some(&["create".to_string()][..])
    );
    let history = charge.history.as_ref().unwrap();
    assert_eq!(
        (history[0].phase.as_str(), history[0].http_status),
        ("action", Some(200))
    );
    assert_eq!(full.request.as_ref().unwrap()["id"], "order-1");
    assert!(full
        .actions
        .as_ref()
        .unwrap()
        .iter()
        .any(|a| a.action == "retry" && !a.allowed));
    assert!(full.trace_id.as_ref().is_some_and(|t| t.len() == 32));

    // Operator actions the state refuses are 409 problems.
    let e = c.abort("order-1", Some("too late")).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let e = c.retry("order-1", None).await.unwrap_err();
    assert_eq!(e.status(), Some(409));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_with_a_cursor() {
    let Some(svc) = service() else { return };
    let p = Participant::start().await;
    let c = Client::new(&svc.base).unwrap();
    for i in 0..3 {
        let req = order(&p, "listed", Some(&format!("l-{i}")));
        c.start(&req, StartOptions::default()).await.unwrap();
    }
    c.start(&order(&p, "other", None), StartOptions::default())
        .await
        .unwrap();

    let only = |cursor: Option<String>| ListOptions {
        name: Some("listed".into()),
        limit: Some(1),
        cursor,
        ..Default::default()
    };
    let first = c.list(&only(None)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].id, "l-2", "newest first");
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = c.list(&only(Some(cursor))).await.unwrap();
    assert_eq!(second.items[0].id, "l-1");

    let all = c.list_all(only(None)).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["l-2", "l-1", "l-0"]);

    // The walk, one page at a time, and a status filter.
    let mut it = c.sagas(ListOptions {
        status: vec![
            SagaStatus::Succeeded,
            SagaStatus::Running,
            SagaStatus::Compensating,
        ],
        limit: Some(2),
        ..Default::default()
    });
    let mut n = 0;
    while let Some(s) = it.next().await.unwrap() {
        assert!(!s.id.is_empty());
        n += 1;
    }
    assert_eq!(n, 4);
    assert!(it.cursor().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_problems() {
    let Some(svc) = service() else { return };
    let c = Client::new(&svc.base).unwrap();

    let bad: StartRequest = StartRequest::saga(
        "bad",
        vec![StepSpec::saga("a", Endpoint::new("ftp://nowhere/a"))],
    )
    .into();
    let e = c.start(&bad, StartOptions::default()).await.unwrap_err();
    let Error::Problem(p) = &e else {
        panic!("not a problem: {e:?}")
    };
    assert_eq!((p.status, p.slug()), (400, "invalid-request"));
    let f = p.field("/steps/0/action/url").expect("the url's pointer");
    assert!(f.detail.contains("http"), "{}", f.detail);
    // The escape hatch: any document, sent as it is; every mistake with its pointer.
    let raw = StartRequest::from(json!({"steps": [], "colour": "red"}));
    let e = c.start(&raw, StartOptions::default()).await.unwrap_err();
    let p = e.problem().unwrap();
    assert!(p.field("/name").is_some(), "{p}");

    // A query parameter's mistake carries `parameter`.
    let e = c
        .list(&ListOptions {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let p = e.problem().unwrap();
    assert_eq!(p.errors[0].parameter.as_deref(), Some("limit"));
    assert!(p.errors[0].pointer.is_none());

    let e = c
        .get("no-such-saga", GetOptions::default())
        .await
        .unwrap_err();
    assert!(e.is_not_found() && !e.is_conflict());
    assert_eq!(e.problem().unwrap().slug(), "not-found");
    assert!(c
        .abort("no-such-saga", None)
        .await
        .unwrap_err()
        .is_not_found());
    // An id that is not one segment still is one, escaped.
    let e = c.get("a/b c", GetOptions::default()).await.unwrap_err();
    assert!(e.is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_versioned_started_by_name_and_retired() {
    let Some(svc) = service() else { return };
    let p = Participant::start().await;
    let c = Client::new(&svc.base).unwrap();
    let doc = |path: &str| {
        json!({"description": "an order", "steps": [{
            "name": "reserve",
            "action": {"url": p.url(path),
                       "headers": {"x-tenant": {"$payload": "/tenant"}},
                       "body": {"sku": {"$payload": "/sku"}, "qty": 1, "$$lit": true}},
            "compensation": {"url": p.url("/release")}}]})
    };

    let (v1, created) = c.put_definition("reserve", &doc("/v1")).await.unwrap();
    assert!(created);
    assert_eq!((v1.name.as_str(), v1.version), ("reserve", 1));
    let (same, created) = c.put_definition("reserve", &doc("/v1")).await.unwrap();
    assert!(!created, "an identical document is no new version");
    assert_eq!(same.version, 1);
    let (v2, created) = c.put_definition("reserve", &doc("/v2")).await.unwrap();
    assert!(created);
    assert_eq!(v2.version, 2);

    let list = c.definitions().await.unwrap();
    let entry = list.iter().find(|d| d.name == "reserve").unwrap();
    assert_eq!((entry.latest_version, entry.live_version), (2, Some(2)));
    assert_eq!(entry.steps, ["reserve"]);
    let latest = c.definition("reserve").await.unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.versions.as_ref().unwrap().len(), 2);
    let first = c.definition_version("reserve", 1).await.unwrap();
    assert_eq!(first.definition["steps"][0]["action"]["url"], p.url("/v1"));
    assert!(c.definition("nothing").await.unwrap_err().is_not_found());
    assert!(c
        .definition_version("reserve", 9)
        .await
        .unwrap_err()
        .is_not_found());

    // By name, latest: the payload's values reach the participant where the references were.
    let payload = json!({"tenant": "acme", "sku": "A1"});
    let latest: StartRequest = StartRequest::definition("reserve")
        .id("r-latest")
        .payload(payload.clone())
        .into();
    let s = c
        .start(&latest, StartOptions { wait: Some(WAIT) })
        .await
        .unwrap();
    assert_eq!(s.saga.status, SagaStatus::Succeeded);
    assert_eq!(s.saga.definition.as_ref().map(|d| d.version), Some(2));
    let got = &p.on("/v2")[0];
    assert_eq!(got.json(), json!({"sku": "A1", "qty": 1, "$lit": true}));
    assert_eq!(got.headers["x-tenant"], "acme");

    // Pinned to version 1.
    let pinned: StartRequest = StartRequest::definition("reserve")
        .version(1)
        .payload(json!({"tenant": "t2", "sku": "B2"}))
        .into();
    let s = c
        .start(&pinned, StartOptions { wait: Some(WAIT) })
        .await
        .unwrap();
    assert_eq!(s.saga.definition.as_ref().map(|d| d.version), Some(1));
    assert_eq!(s.saga.status, SagaStatus::Succeeded);
    assert_eq!(p.on("/v1")[0].json()["sku"], "B2");

    // A missing reference's value is a 400 at its payload pointer.
    let missing: StartRequest = StartRequest::definition("reserve")
        .payload(json!({"tenant": "acme"}))
        .into();
    let e = c
        .start(&missing, StartOptions::default())
        .await
        .unwrap_err();
    assert!(e.problem().unwrap().field("/payload/sku").is_some(), "{e}");

    // Retired: no new start of that version, a 409 problem.
    let r = c
        .retire_definition("reserve", 1, Some("moved to v2"))
        .await
        .unwrap();
    let retired = r.retired.expect("retired");
    assert_eq!(retired.reason.as_deref(), Some("moved to v2"));
    let e = c.start(&pinned, StartOptions::default()).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert_eq!(e.problem().unwrap().slug(), "definition-retired");
    // The started saga is the same saga on a repeat, whatever happened since.
    let again = c.start(&latest, StartOptions::default()).await.unwrap();
    assert!(!again.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_and_probes_without_starting() {
    let Some(svc) = service() else { return };
    let p = Participant::start().await;
    let c = Client::new(&svc.base).unwrap();

    let live = order(&p, "dry", Some("dry-1"));
    let d = c.dry_run(&live).await.unwrap();
    assert!(d.dry_run && d.ready, "{d:?}");
    assert_eq!(d.name, "dry");
    assert_eq!(d.plan.levels, [vec!["create"], vec!["charge"]]);
    assert_eq!(d.plan.undo_levels, [vec!["charge"], vec!["create"]]);
    assert_eq!(d.plan.steps[1].timeout_ms, 2_000);
    assert_eq!(d.endpoints.len(), 4);
    assert!(d.endpoints.iter().all(|e| e.allowed && e.connects));
    // Nothing was recorded or called.
    assert!(c
        .get("dry-1", GetOptions::default())
        .await
        .unwrap_err()
        .is_not_found());
    assert!(p.seen.lock().unwrap().is_empty());

    let closed = format!("http://127.0.0.1:{}/x", closed_port());
    let dead: StartRequest = StartRequest::saga(
        "dry",
        vec![StepSpec::saga("a", Endpoint::new(closed)).depends_on(Vec::<String>::new())],
    )
    .into();
    let d = c.dry_run(&dead).await.unwrap();
    assert!(!d.ready);
    assert!(!d.endpoints[0].connects && d.endpoints[0].error.is_some());
    assert!(d
        .plan
        .warnings
        .iter()
        .any(|w| w.contains("no compensation")));

    let bad = StartRequest::from(json!({"name": "dry", "steps": []}));
    let e = c.dry_run(&bad).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_the_saga_as_last_seen_when_the_timeout_passes_first() {
    let Some(svc) = service() else { return };
    // A participant that never answers in time: the saga keeps retrying its action.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", silent.local_addr().unwrap());
    let c = Client::new(&svc.base).unwrap();
    let req: StartRequest = StartRequest::saga(
        "slow",
        vec![StepSpec::saga("a", Endpoint::new(url)).timeout_ms(60_000)],
    )
    .id("slow-1")
    .into();
    let started = std::time::Instant::now();
    let s = c
        .start(
            &req,
            StartOptions {
                wait: Some(Duration::from_millis(300)),
            },
        )
        .await
        .unwrap();
    assert!(s.created);
    assert_eq!(s.saga.status, SagaStatus::Running);
    let s = c.wait("slow-1", Duration::from_millis(300)).await.unwrap();
    assert!(!s.is_settled());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Abort moves it on: it compensates (nothing to undo) and the wait sees it end.
    let aborted = c.abort("slow-1", Some("test")).await.unwrap();
    assert_eq!(aborted.id, "slow-1");
    drop(silent); // the call in flight fails now, and the saga can end
    let s = c.wait("slow-1", WAIT).await.unwrap();
    assert_eq!(s.status, SagaStatus::Compensated, "{s:?}");
}
