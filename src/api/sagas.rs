//! Handlers of `/v1/sagas`: start, read, list and count (operator actions: `operators.rs`).

use super::body::{json_body, query_map, wait_ms};
use super::problem::Problem;
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::resource::SagaView;
use super::resource::{full_view, saga_view, Counts, History, Page};
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::schema::StartAnswer;
use super::schema::{CountsParams, GetParams, IdParam, ListParams, StartRequest, WaitParams};
use super::AppState;
use crate::actors::messages::{StartOutcome, StartSaga};
use crate::domain::catalog;
use crate::domain::limits::{self, COUNT_CAP, DEFAULT_PAGE, NAME, SAGA_ID};
use crate::domain::{parse_request, FieldError, SagaDefinition, SagaStatus};
use crate::store::{ListQuery, SagaRecord};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::Value;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Problem>;

/// A read of the saga log behind the API, timed in `saga_store_read_duration_seconds`.
pub(super) async fn timed<T>(state: &AppState, read: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let r = read.await;
    state
        .shared
        .metrics
        .store_read
        .observe(t.elapsed().as_secs_f64());
    r
}

pub(super) async fn load(state: &AppState, id: &str) -> Result<SagaRecord> {
    if let Some(r) = timed(state, state.shared.reads.load(id)).await? {
        return Ok(r);
    }
    // Only a miss looks for a tombstone: a purged saga is gone (410), not unknown (404).
    match state.shared.reads.tombstone(id).await? {
        Some(t) => Err(Problem::saga_purged(&t)),
        None => Err(Problem::saga_not_found(id)),
    }
}

/// `POST /v1/sagas`
#[utoipa::path(post, path = "/v1/sagas", tag = "sagas", params(WaitParams),
    request_body(content = StartRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; recorded before this answer", body = SagaView),
        (status = 200, description = "The saga with this id and an identical request; or, with dry_run=true, the plan (nothing recorded or called)", body = StartAnswer),
        (status = 400, description = "Invalid request (every mistake with its pointer), or an unknown definition or version; nothing recorded", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This id exists with another request, names a purged saga (`purged` says when), or the definition version is retired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    root: tracing_actix_web::RootSpan,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let q = query_map(&req)?;
    let wait = wait_ms(&q);
    let dry_run = super::dry_run::asked(&q);
    let (wait, dry_run) = match (wait, dry_run) {
        (Ok(w), Ok(d)) => (w, d),
        (w, d) => {
            return Err(Problem::invalid_query(
                w.err().into_iter().chain(d.err()).collect(),
            ))
        }
    };
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let def = if catalog::is_by_definition(&body) {
        by_definition(&state, &body).await
    } else {
        admit(&state, parse_request(&body, &state.shared.defaults)).map_err(Problem::invalid_body)
    };
    let def = def.inspect_err(|_| {
        if dry_run {
            let refused = state
                .shared
                .metrics
                .dry_runs
                .with_label_values(&["refused"]);
            refused.inc();
        }
    })?;
    if dry_run {
        return Ok(super::dry_run::answer(&state, def).await);
    }
    let def = with_trace(def, &req);
    let id = def
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    root.record("saga_id", id.as_str());
    let ended = (wait > 0).then(|| state.shared.finished.subscribe(&id));
    let origin = def.origin.clone();
    let (created, mut record) = start(&state, &id, body, def).await?;
    if let Some(o) = origin.filter(|_| created) {
        let version = o.version.to_string();
        let starts = &state.shared.metrics.definition_starts;
        starts.with_label_values(&[o.name.as_str(), &version]).inc();
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if let Some(ended) = ended.filter(|_| !record.state.status.is_terminal()) {
        ended.wait(Duration::from_millis(wait)).await;
        record = load(&state, &id).await?;
    }
    Ok(HttpResponse::build(code)
        .insert_header((header::LOCATION, format!("/v1/sagas/{id}")))
        .json(saga_view(&record, None)))
}

/// A parsed definition the outbound policy lets through; a refusal of either counts in
/// `saga_rejected_total`.
pub(super) fn admit(
    state: &AppState,
    parsed: std::result::Result<SagaDefinition, Vec<FieldError>>,
) -> std::result::Result<SagaDefinition, Vec<FieldError>> {
    admit_sample(state, parsed, |d| d)
}

/// [`admit`] for anything that holds a saga's definition (a stored definition's sample).
pub(super) fn admit_sample<T>(
    state: &AppState,
    parsed: std::result::Result<T, Vec<FieldError>>,
    def: impl Fn(&T) -> &SagaDefinition,
) -> std::result::Result<T, Vec<FieldError>> {
    parsed
        .and_then(|t| state.shared.outbound.admit(def(&t)).map(|()| t))
        .inspect_err(|_| state.shared.metrics.rejected.inc())
}

/// The saga a start by definition stands for (docs/api.md, "Definitions"): the stored
/// version it names (or the newest that is not retired) with the start's payload values, as
/// a full start with those steps would be checked. Errors inside the document say so.
async fn by_definition(state: &AppState, body: &Value) -> Result<SagaDefinition> {
    let refuse = |p: Problem| {
        state.shared.metrics.rejected.inc();
        p
    };
    let start = catalog::parse_start(body).map_err(|e| refuse(Problem::invalid_body(e)))?;
    let name = start.name.as_str();
    let unknown = |pointer: &str, detail: String| {
        refuse(Problem::invalid_body(vec![FieldError {
            pointer: pointer.into(),
            detail,
        }]))
    };
    let retired = |detail: String| {
        refuse(Problem::new(
            StatusCode::CONFLICT,
            "definition-retired",
            "Definition retired",
            detail,
        ))
    };
    let stored = match start.version {
        Some(v) => match timed(state, state.definitions.version(name, v)).await? {
            None => {
                return Err(unknown(
                    "/version",
                    format!("definition {name:?} has no version {v}"),
                ))
            }
            Some(d) if d.retired.is_some() => {
                return Err(retired(format!(
                    "version {v} of definition {name:?} is retired: it takes no new starts"
                )))
            }
            Some(d) => d,
        },
        None => match timed(state, state.definitions.live(name)).await? {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(unknown(
                    "/definition",
                    format!("no definition named {name:?}"),
                ))
            }
            Err(newest) => {
                return Err(retired(format!(
                    "every version of definition {name:?} is retired (the newest is {})",
                    newest.version
                )))
            }
        },
    };
    let within = |mut errs: Vec<FieldError>| {
        for e in &mut errs {
            if !(e.pointer.starts_with("/payload") || e.pointer == "/id") {
                e.detail = format!(
                    "{} (at {} of definition {name:?} version {})",
                    e.detail, e.pointer, stored.version
                );
                e.pointer = "/definition".into();
            }
        }
        Problem::invalid_body(errs)
    };
    let full = catalog::apply(&stored.document, body).map_err(|e| refuse(within(e)))?;
    let mut def = admit(state, parse_request(&full, &state.shared.defaults)).map_err(within)?;
    def.origin = Some(catalog::DefinitionRef {
        name: stored.name,
        version: stored.version,
    });
    Ok(def)
}

/// The definition with the trace its calls belong to: the start's `traceparent` and
/// `tracestate` (several `tracestate` fields joined), or a new trace when there is none or it
/// is malformed (never an error).
pub(super) fn with_trace(mut def: SagaDefinition, req: &HttpRequest) -> SagaDefinition {
    let trace = super::access_log::caller_trace(req.headers(), || {
        format!("{:032x}", rand::random::<u128>().max(1))
    });
    // The handler runs inside the request's span (the access log's root span).
    def.trace = Some(trace.under_request(crate::telemetry::ids(&tracing::Span::current())));
    def
}

/// Records a new saga, or finds the one with its id: the same request is the same saga
/// (`false` with its record), another request under that id a 409.
pub(super) async fn start(
    state: &AppState,
    id: &str,
    request: Value,
    def: SagaDefinition,
) -> Result<(bool, SagaRecord)> {
    let outcome = state
        .registry
        .send(StartSaga {
            id: id.to_string(),
            request: request.clone(),
            def,
        })
        .await
        .map_err(|_| Problem::unavailable("the registry is not running"))?
        .inspect_err(|e| {
            if matches!(e, crate::store::StoreError::Unavailable(_)) {
                state.shared.metrics.unavailable.inc();
            }
        })?;
    match outcome {
        StartOutcome::Created(r) => Ok((true, *r)),
        StartOutcome::Existing(r) if r.request == request => Ok((false, *r)),
        StartOutcome::Existing(_) => Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            format!("a saga with id {id:?} already exists with a different request"),
        )),
        StartOutcome::Purged(t) => Err(Problem::start_purged(
            &t,
            t.request_sha256 == crate::store::request_sha256(&request),
        )),
    }
}

/// `GET /v1/sagas/{id}`
#[utoipa::path(get, path = "/v1/sagas/{id}", tag = "sagas", params(IdParam, GetParams),
    responses(
        (status = 200, description = "The saga", body = SagaView),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "It ended and was purged by retention (`purged` says when, and where it was archived)", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let id = path.into_inner();
    let q = query_map(&req)?;
    let mut errs = vec![];
    let wait = wait_ms(&q).unwrap_or_else(|e| {
        errs.push(e);
        0
    });
    let include: Vec<&str> = q
        .get("include")
        .map(|v| v.split(',').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    if include
        .iter()
        .any(|x| !matches!(*x, "attempts" | "request"))
    {
        errs.push((
            "include".into(),
            "a comma-separated list of \"attempts\" and \"request\"".into(),
        ));
    }
    let attempts = include.contains(&"attempts");
    let request = include.contains(&"request");
    if !errs.is_empty() {
        return Err(Problem::invalid_query(errs));
    }
    if !SAGA_ID.is_valid(&id) {
        return Err(Problem::saga_not_found(&id));
    }
    let ended = (wait > 0).then(|| state.shared.finished.subscribe(&id));
    let mut record = load(&state, &id).await?;
    if let Some(ended) = ended.filter(|_| !record.state.status.is_terminal()) {
        ended.wait(Duration::from_millis(wait)).await;
        record = load(&state, &id).await?;
    }
    let history = if attempts {
        Some(History {
            calls: state.shared.reads.calls(&id).await?,
            operator: state.shared.reads.operator_actions(&id).await?,
        })
    } else {
        None
    };
    // The request as accepted, with credentials masked: the console shows it.
    let mut v = full_view(&record, history.as_ref(), request.then_some(&state.secrets));
    // A call decided but not sent: its service's gate holds it (this instance's view).
    v.waiting_on = record
        .state
        .steps
        .iter()
        .zip(&v.steps)
        .filter(|(s, _)| s.in_flight)
        .find_map(|(_, view)| {
            state
                .shared
                .services
                .waiting_on(&view.service, super::resource::rfc3339)
        });
    if !state.trace_url.is_empty() {
        v.trace_url = (v.trace_id.as_deref()).map(|t| state.trace_url.replace("{trace_id}", t));
    }
    Ok(HttpResponse::Ok().json(v))
}

/// `GET /v1/sagas?status=&name=&limit=&cursor=`
#[utoipa::path(get, path = "/v1/sagas", tag = "sagas", params(ListParams),
    responses(
        (status = 200, description = "A page, newest first", body = Page),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json")))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let q = query_map(&req)?;
    let mut errs: Vec<(String, String)> = vec![];
    let mut statuses = vec![];
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        for part in s.split(',') {
            match SagaStatus::parse(part.trim()) {
                Some(st) => statuses.push(st),
                None => errs.push(("status".into(), format!("unknown status {part:?}"))),
            }
        }
    }
    let name = name_param(&q, &mut errs);
    let limit =
        limits::page_size(q.get("limit").map(String::as_str), DEFAULT_PAGE).unwrap_or_else(|e| {
            errs.push(("limit".into(), e));
            DEFAULT_PAGE
        });
    let after = match q.get("cursor").filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => match parse_cursor(c) {
            Some(x) => Some(x),
            None => {
                errs.push((
                    "cursor".into(),
                    "is not a cursor this service returned".into(),
                ));
                None
            }
        },
    };
    if !errs.is_empty() {
        return Err(Problem::invalid_query(errs));
    }
    let (rows, next) = page(
        &state,
        ListQuery {
            statuses,
            name,
            limit,
            after,
        },
    )
    .await?;
    let items = rows.iter().map(|r| saga_view(r, None)).collect();
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: next,
    }))
}

/// One page of `q` (at most `q.limit` sagas, newest first) and the cursor of the next page,
/// if there are more.
pub(super) async fn page(
    state: &AppState,
    mut q: ListQuery,
) -> Result<(Vec<SagaRecord>, Option<String>)> {
    let limit = q.limit;
    // One more than asked: whether another page follows.
    q.limit += 1;
    let mut rows = timed(state, state.shared.reads.list(&q)).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = rows.last().filter(|_| more).map(cursor_of);
    Ok((rows, next))
}

/// The `name` filter of a listing or a count, if given.
fn name_param(
    q: &std::collections::HashMap<String, String>,
    errs: &mut Vec<(String, String)>,
) -> Option<String> {
    let name = q.get("name").filter(|s| !s.is_empty()).cloned();
    if name.as_deref().is_some_and(|n| !NAME.is_valid(n)) {
        errs.push(("name".into(), format!("must be {}", NAME.describe())));
    }
    name
}

/// `GET /v1/counts?name=`
#[utoipa::path(get, path = "/v1/counts", tag = "sagas", params(CountsParams),
    responses(
        (status = 200, description = "Sagas per status", body = Counts),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json")))]
pub async fn counts(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let q = query_map(&req)?;
    let mut errs = vec![];
    let name = name_param(&q, &mut errs);
    if !errs.is_empty() {
        return Err(Problem::invalid_query(errs));
    }
    let counts = timed(
        &state,
        state.shared.reads.status_counts(name.as_deref(), COUNT_CAP),
    )
    .await?;
    Ok(HttpResponse::Ok().json(Counts {
        counts: counts
            .into_iter()
            .map(|(st, n)| (st.as_str().to_string(), n))
            .collect(),
        capped_at: COUNT_CAP,
    }))
}

/// The cursor of the page that follows `last`.
pub(super) fn cursor_of(last: &SagaRecord) -> String {
    format!("{}_{}", last.created_at, last.id)
}

/// Cursors are `{created_at}_{id}`: the time has no `_`, so the first one separates them.
pub(super) fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ms, id) = c.split_once('_')?;
    let ms = ms.parse().ok()?;
    SAGA_ID.is_valid(id).then(|| (ms, id.to_string()))
}

/// Who acts: the token's name when the service has tokens; else where the request came from.
pub(super) fn caller(req: &HttpRequest) -> String {
    match req.extensions().get::<super::auth::Caller>() {
        Some(c) => c.0.clone(),
        None => req
            .connection_info()
            .peer_addr()
            .unwrap_or("unknown")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(
            parse_cursor("1700000000000_order-1:a.b"),
            Some((1_700_000_000_000, "order-1:a.b".into()))
        );
        assert_eq!(parse_cursor("x_y"), None);
        assert_eq!(parse_cursor("12"), None);
        assert_eq!(parse_cursor("12_bad id"), None);
    }
}
