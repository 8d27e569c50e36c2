//! The start retry rule against a scripted fake service: only what cannot start a saga twice
//! is sent again.

mod common;

use common::{saga_json, Fake, Script};
use saga_client::{Client, Endpoint, Error, StartOptions, StartRequest, StepSpec, ABOUT_BLANK};
use serde_json::json;
use std::time::{Duration, Instant};

fn request(id: Option<&str>) -> StartRequest {
    let mut s = StartRequest::saga(
        "fake",
        vec![StepSpec::saga("a", Endpoint::new("http://127.0.0.1:1/a"))],
    );
    if let Some(id) = id {
        s = s.id(id);
    }
    s.into()
}

fn client(base: &str) -> Client {
    Client::builder(base)
        .start_retries(3)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap()
}

fn unavailable(retry_after: &'static str) -> Script {
    let body = json!({"type": "urn:saga-orchestrator:problem:unavailable",
        "title": "Service unavailable", "status": 503, "detail": "no new saga is taken now"});
    Script::Answer(
        503,
        vec![
            ("Content-Type", "application/problem+json"),
            ("Retry-After", retry_after),
        ],
        body.to_string(),
    )
}

fn created(id: &str) -> Script {
    Script::Answer(
        201,
        vec![("Content-Type", "application/json")],
        saga_json(id),
    )
}

#[tokio::test]
async fn a_503_is_retried_after_its_retry_after_even_without_an_id() {
    let fake = Fake::start(vec![unavailable("1"), created("s-1")]).await;
    let began = Instant::now();
    let s = client(&fake.base)
        .start(&request(None), StartOptions::default())
        .await
        .unwrap();
    assert!(s.created);
    assert_eq!(s.saga.id, "s-1");
    assert_eq!(fake.count(), 2, "one retry");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 honoured"
    );
    // The repeat is the same request.
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[1].headers["content-type"], "application/json");
}

#[tokio::test]
async fn retries_are_bounded() {
    let fake = Fake::start(vec![unavailable("0")]).await;
    let e = client(&fake.base)
        .start(&request(Some("x")), StartOptions::default())
        .await
        .unwrap_err();
    let p = e.problem().unwrap();
    assert_eq!(p.status, 503);
    assert_eq!(p.retry_after(), Some(Duration::ZERO));
    assert_eq!(fake.count(), 4, "the first attempt and 3 retries");

    let fake = Fake::start(vec![unavailable("0")]).await;
    let none = Client::builder(&fake.base)
        .start_retries(0)
        .build()
        .unwrap();
    assert!(none
        .start(&request(None), StartOptions::default())
        .await
        .is_err());
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_lost_answer_is_retried_only_when_the_request_has_an_id() {
    // Without an id a repeat could start a second saga: the error is returned.
    let fake = Fake::start(vec![Script::Drop, created("never")]).await;
    let e = client(&fake.base)
        .start(&request(None), StartOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert_eq!(fake.count(), 1);

    // With one, the service answers the repeat 200 with the saga the lost attempt created.
    let ok = Script::Answer(
        200,
        vec![("Content-Type", "application/json")],
        saga_json("o-1"),
    );
    let fake = Fake::start(vec![Script::Drop, ok]).await;
    let s = client(&fake.base)
        .start(&request(Some("o-1")), StartOptions::default())
        .await
        .unwrap();
    assert!(!s.created);
    assert_eq!(s.saga.id, "o-1");
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn other_errors_are_not_retried_and_any_answer_is_a_problem() {
    let fake = Fake::start(vec![Script::Answer(
        502,
        vec![("Content-Type", "text/html")],
        "<h1>bad gateway</h1>".into(),
    )])
    .await;
    let e = client(&fake.base)
        .start(&request(Some("x")), StartOptions::default())
        .await
        .unwrap_err();
    let p = e.problem().unwrap();
    assert_eq!((p.kind.as_str(), p.status), (ABOUT_BLANK, 502));
    assert_eq!(p.detail, "<h1>bad gateway</h1>");
    assert_eq!(fake.count(), 1);

    // A 2xx that is not a saga is a decode error naming the request.
    let fake = Fake::start(vec![Script::Answer(201, vec![], "not json".into())]).await;
    let e = client(&fake.base)
        .start(&request(None), StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Decode { status: 201, what, .. } if what == "POST /v1/sagas"),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_token_goes_as_a_bearer_header() {
    let fake = Fake::start(vec![created("t-1")]).await;
    let c = Client::builder(&fake.base)
        .token("sgo_abc")
        .build()
        .unwrap();
    c.start(&request(None), StartOptions::default())
        .await
        .unwrap();
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen[0].headers["authorization"], "Bearer sgo_abc");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v1/sagas")
    );
}
