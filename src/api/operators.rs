//! Handlers of the operator actions (docs/api.md, "Operator actions"): on one saga (retry,
//! abort, pause, resume, wake, skip or edit a step, keep, unkeep) and in bulk. Each takes an optional
//! `{"reason": "…"}` (required to skip), kept with who and when in the saga's operator actions;
//! whether the saga's state allows it is the state machine's rule (a 409 names it).

use super::body::{json_body, optional_json_body};
use super::problem::Problem;
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::resource::SagaView;
use super::resource::{saga_view, BulkAnswer, BulkResult};
use super::sagas::{caller, load};
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::schema::StepEditRequest;
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::schema::{BulkRequest, ReasonRequest};
use super::schema::{IdParam, StepParam};
use super::AppState;
use crate::actors::messages::{Op, OpError, Operation, OperatorAction};
use crate::domain::limits::{NAME, SAGA_ID};
use crate::domain::{parse_bulk, parse_operator_body, parse_step_edit};
use crate::store::SagaRecord;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;

type Result<T> = std::result::Result<T, Problem>;

/// Carries out one operator action and reads the saga back.
pub(super) async fn operate_one(
    state: &AppState,
    id: &str,
    op: Operation,
    who: String,
) -> Result<SagaRecord> {
    if !SAGA_ID.is_valid(id) {
        return Err(Problem::saga_not_found(id));
    }
    load(state, id).await?;
    let res = state
        .registry
        .send(OperatorAction {
            id: id.to_string(),
            op,
            who,
            here_only: false,
        })
        .await
        .map_err(|_| Problem::unavailable("the registry is not running"))?;
    match res {
        Ok(()) => load(state, id).await,
        Err(OpError::Rejected(r)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            r.to_string(),
        )),
        Err(e @ (OpError::Unavailable | OpError::Released)) => {
            Err(Problem::unavailable(e.to_string()))
        }
        Err(OpError::Unloadable(why)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            why,
        )),
    }
}

/// The reason of an operator action's body (none, or `{"reason": "…"}`).
async fn reason(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    required: bool,
) -> Result<Option<String>> {
    let body = optional_json_body(req, payload, state.max_body_bytes).await?;
    parse_operator_body(body.as_ref(), required).map_err(Problem::invalid_body)
}

async fn operate(
    req: HttpRequest,
    payload: web::Payload,
    id: String,
    op: Op,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let reason = reason(&req, payload, &state, false).await?;
    let op = Operation {
        op,
        step: None,
        reason,
        edit: None,
    };
    let record = operate_one(&state, &id, op, caller(&req)).await?;
    Ok(HttpResponse::Accepted().json(saga_view(&record, None)))
}

/// Sagas of one bulk action carried out at once (each is a log write or two).
const BULK_CONCURRENCY: usize = 8;

/// One operator action on each saga of `{"ids": [...], "reason": "…"}`; every saga answers
/// for itself.
async fn bulk(
    req: HttpRequest,
    payload: web::Payload,
    op: Op,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let (ids, reason) = parse_bulk(&body).map_err(Problem::invalid_body)?;
    let who = caller(&req);
    let state = &state;
    let results: Vec<BulkResult> = futures::stream::iter(ids)
        .map(|id| {
            let (who, reason) = (who.clone(), reason.clone());
            async move {
                let op = Operation {
                    op,
                    step: None,
                    reason,
                    edit: None,
                };
                match operate_one(state, &id, op, who).await {
                    Ok(r) => BulkResult {
                        id,
                        status: StatusCode::ACCEPTED.as_u16(),
                        saga_status: Some(r.state.status.as_str().to_string()),
                        problem: None,
                    },
                    Err(p) => BulkResult {
                        id,
                        status: p.status,
                        saga_status: None,
                        problem: Some(p),
                    },
                }
            }
        })
        .buffered(BULK_CONCURRENCY)
        .collect()
        .await;
    let accepted = results.iter().filter(|r| r.problem.is_none()).count();
    Ok(HttpResponse::Ok().json(BulkAnswer { results, accepted }))
}

/// One action on one saga, as documented for each below.
macro_rules! one {
    ($(#[$doc:meta])* $name:ident, $op:expr, $path:literal, $ok:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "operators", params(IdParam),
            request_body(content = Option<ReasonRequest>, content_type = "application/json"),
            responses(
                (status = 202, description = $ok, body = SagaView),
                (status = 400, description = "Invalid body (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "Not in a state that allows it (the detail names the rule)", body = Problem, content_type = "application/problem+json"),
                (status = 410, description = "Purged already", body = Problem, content_type = "application/problem+json"),
                (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
                (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            path: web::Path<String>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse> {
            operate(req, payload, path.into_inner(), $op, state).await
        }
    };
}

one!(
    /// `POST /v1/sagas/{id}/retry`: resume a stuck saga.
    retry, Op::Retry, "/v1/sagas/{id}/retry", "Resumed"
);
one!(
    /// `POST /v1/sagas/{id}/abort`: stop a running saga and compensate.
    abort, Op::Abort, "/v1/sagas/{id}/abort", "Compensating"
);
one!(
    /// `POST /v1/sagas/{id}/pause`: no new call until resumed (calls in flight finish); its
    /// deadline and what waits for its time wait with it.
    pause, Op::Pause, "/v1/sagas/{id}/pause", "Paused (`paused_at` says since when)"
);
one!(
    /// `POST /v1/sagas/{id}/resume`: a paused saga goes on; its deadline and waits move by the
    /// time it was paused.
    resume, Op::Resume, "/v1/sagas/{id}/resume", "Going on"
);
one!(
    /// `POST /v1/sagas/{id}/wake`: what waits for its time (a backoff, a delay) is called now.
    wake, Op::Wake, "/v1/sagas/{id}/wake", "Due now"
);

/// `POST /v1/sagas/{id}/steps/{step}/skip`: a stuck step, set right by hand, counts as done and
/// the saga goes on. The reason is required.
#[utoipa::path(post, path = "/v1/sagas/{id}/steps/{step}/skip", tag = "operators", params(IdParam, StepParam),
    request_body(content = ReasonRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The step counts as done; the saga goes on", body = SagaView),
        (status = 400, description = "Invalid body, or no reason (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga, or no such step in it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The step is not stuck, or the saga is paused", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Purged already", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
pub async fn skip(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (id, step) = path.into_inner();
    let reason = reason(&req, payload, &state, true).await?;
    if !SAGA_ID.is_valid(&id) {
        return Err(Problem::saga_not_found(&id));
    }
    let record = load(&state, &id).await?;
    if !NAME.is_valid(&step) || !record.steps.iter().any(|s| s.name == step) {
        return Err(step_not_found(&id, &step));
    }
    let op = Operation {
        op: Op::Skip,
        step: Some(step),
        reason,
        edit: None,
    };
    let record = operate_one(&state, &id, op, caller(&req)).await?;
    Ok(HttpResponse::Accepted().json(saga_view(&record, None)))
}

/// `PATCH /v1/sagas/{id}/steps/{step}`: new endpoint fields (`url`, `headers`, `body`) for a
/// step with no call in flight (a service moved), with a reason; validated, and checked against
/// the outbound policy, as at a start; the old and new endpoints are kept in the audit.
#[utoipa::path(patch, path = "/v1/sagas/{id}/steps/{step}", tag = "operators", params(IdParam, StepParam),
    request_body(content = StepEditRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The step's endpoints changed; its next calls go there", body = SagaView),
        (status = 400, description = "Invalid edit, no reason, or an endpoint the outbound policy refuses (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga, or no such step in it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga has ended or is paused, or the step has a call in flight", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Purged already", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
pub async fn edit(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (id, step) = path.into_inner();
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    if !SAGA_ID.is_valid(&id) {
        return Err(Problem::saga_not_found(&id));
    }
    let record = load(&state, &id).await?;
    let Some(i) = record.steps.iter().position(|s| s.name == step) else {
        return Err(step_not_found(&id, &step));
    };
    let def = record
        .definition
        .as_ref()
        .map_err(|why| Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", why.clone()))?;
    let edit = parse_step_edit(&body, def, i).map_err(Problem::invalid_body)?;
    // The outbound policy, as at a start: its pointers name this body's fields.
    let prefix = format!("/steps/{i}/");
    let blocked: Vec<_> = state
        .shared
        .outbound
        .check_definition(&edit.def)
        .into_iter()
        .filter_map(|mut e| {
            let rest = e.pointer.strip_prefix(&prefix)?.to_string();
            let phase = rest.split('/').next().unwrap_or_default();
            edit.fields.get(phase)?;
            e.pointer = format!("/{rest}");
            Some(e)
        })
        .collect();
    if !blocked.is_empty() {
        return Err(Problem::invalid_body(blocked));
    }
    let op = Operation {
        op: Op::Edit,
        step: Some(step),
        reason: Some(edit.reason),
        edit: Some(edit.fields),
    };
    let record = operate_one(&state, &id, op, caller(&req)).await?;
    Ok(HttpResponse::Accepted().json(saga_view(&record, None)))
}

fn step_not_found(id: &str, step: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "step-not-found",
        "Step not found",
        format!("saga {id:?} has no step {step:?}"),
    )
}

/// Keep or unkeep, as documented for each below.
macro_rules! pin {
    ($(#[$doc:meta])* $name:ident, $kept:literal, $path:literal, $ok:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "operators", params(IdParam),
            request_body(content = Option<ReasonRequest>, content_type = "application/json"),
            responses(
                (status = 200, description = $ok, body = SagaView),
                (status = 400, description = "Invalid body (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
                (status = 410, description = "Purged already", body = Problem, content_type = "application/problem+json"),
                (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
                (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            path: web::Path<String>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse> {
            pin(req, payload, path.into_inner(), $kept, state).await
        }
    };
}

pin!(
    /// `POST /v1/sagas/{id}/keep`: pin a saga, so that retention never purges it.
    keep, true, "/v1/sagas/{id}/keep", "Kept (recorded in its operator actions)"
);
pin!(
    /// `POST /v1/sagas/{id}/unkeep`: let retention purge the saga again when it is due.
    unkeep, false, "/v1/sagas/{id}/unkeep",
    "No longer kept (recorded in its operator actions); purged at its purge_at, or at the next sweep if that has passed"
);

async fn pin(
    req: HttpRequest,
    payload: web::Payload,
    id: String,
    kept: bool,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let reason = reason(&req, payload, &state, false).await?;
    if !SAGA_ID.is_valid(&id) {
        return Err(Problem::saga_not_found(&id));
    }
    let now = state.shared.clock.now_ms();
    let who = caller(&req);
    if !state
        .purger
        .set_kept(&id, kept, &who, now, reason.as_deref())
        .await?
    {
        // Gone (410) or unknown (404).
        load(&state, &id).await?;
    }
    tracing::info!(saga_id = %id, kept, who = %who, reason, "saga retention pinned or unpinned");
    let record = load(&state, &id).await?;
    Ok(HttpResponse::Ok().json(saga_view(&record, None)))
}

/// One action on each saga named, as documented for each below.
macro_rules! many {
    ($(#[$doc:meta])* $name:ident, $op:expr, $path:literal, $what:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "operators",
            request_body(content = BulkRequest, content_type = "application/json"),
            responses(
                (status = 200, description = concat!("Each saga's answer: 202, or the problem the single ", $what, " would have answered"), body = BulkAnswer),
                (status = 400, description = "Invalid request (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
                (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
                (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse> {
            bulk(req, payload, $op, state).await
        }
    };
}

many!(
    /// `POST /v1/bulk/retry`: resume each of the stuck sagas named.
    bulk_retry, Op::Retry, "/v1/bulk/retry", "retry"
);
many!(
    /// `POST /v1/bulk/abort`: stop each of the running sagas named and compensate.
    bulk_abort, Op::Abort, "/v1/bulk/abort", "abort"
);
many!(
    /// `POST /v1/bulk/pause`: pause each of the sagas named.
    bulk_pause, Op::Pause, "/v1/bulk/pause", "pause"
);
many!(
    /// `POST /v1/bulk/resume`: resume each of the paused sagas named.
    bulk_resume, Op::Resume, "/v1/bulk/resume", "resume"
);
many!(
    /// `POST /v1/bulk/wake`: call now what each of the sagas named waits for.
    bulk_wake, Op::Wake, "/v1/bulk/wake", "wake"
);
