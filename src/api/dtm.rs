//! DTM's HTTP protocol under `/api/dtmsvr` (docs/dtm.md): DTM's clients start, read and stop
//! transactions here unchanged. Each transaction is a saga of the native API (the gid is its
//! id); the rules of reading DTM's JSON live in `domain::dtm`, this module only translates
//! between DTM's wire shapes and the same calls the native handlers make.

use super::body::{json_body, query_map};
use super::operators::operate_one;
use super::problem::Problem;
use super::resource::rfc3339;
use super::sagas::{admit, caller, load, page, parse_cursor, start, timed, with_trace};
use super::schema::{DtmAllParams, DtmQueryParams};
use super::AppState;
use crate::actors::messages::{Op, Operation};
use crate::domain::dtm::DtmTrans;
use crate::domain::dtm::{
    self, parse_branch, parse_trans, statuses_of, trans_status, NotRegistered, Stage, TransType,
};
use crate::domain::limits::{self, SAGA_ID};
use crate::domain::{FieldError, Mode, SagaDefinition, SagaStatus};
use crate::store::{Growth, ListQuery, SagaRecord};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use utoipa::ToSchema;

/// An answer as DTM's server gives it: `{"dtm_result": "SUCCESS"}`, or on refusal
/// `{"dtm_result": "FAILURE", "message": …}` (which every DTM client reads as a failure).
#[derive(Debug, Serialize, ToSchema)]
pub struct DtmResult {
    /// SUCCESS or FAILURE.
    pub dtm_result: String,
    /// Why, on FAILURE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET newGid`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewGid {
    /// SUCCESS.
    pub dtm_result: String,
    /// A new gid, unique across instances (a UUID v7).
    pub gid: String,
}

/// `GET query`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryAnswer {
    /// The transaction as accepted (secret headers as `***`) with its status and times; null
    /// when there is none with this gid.
    #[schema(value_type = Option<Object>)]
    pub transaction: Option<Value>,
    /// Its branches in DTM's order (per step: the undo, then the forward call).
    pub branches: Vec<BranchView>,
}

/// One of DTM's branch rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct BranchView {
    /// The transaction's gid.
    pub gid: String,
    /// `01`, `02`, …
    pub branch_id: String,
    /// action, compensate, try, confirm or cancel.
    pub op: String,
    /// The URL called (DTM's query parameters included).
    pub url: String,
    /// The body sent, base64 (as DTM shows it).
    pub bin_data: String,
    /// prepared (not done), succeed, or failed (an action refused).
    pub status: String,
    /// When the saga was accepted.
    pub create_time: String,
    /// The step's last change.
    pub update_time: String,
}

/// `GET all`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllAnswer {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub transactions: Vec<Value>,
    /// Pass as `position` for the next page; "" at the end.
    pub next_position: String,
}

/// An error answer of the DTM surface: 4xx are `{"dtm_result": "FAILURE", "message": …}`, so
/// that a DTM client reads a failure; 5xx are `{"message": …}`, which it reads as "try again".
#[derive(Debug)]
pub struct DtmError {
    status: StatusCode,
    message: String,
}

impl std::fmt::Display for DtmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for DtmError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = if self.status.is_client_error() {
            json!({"dtm_result": "FAILURE", "message": self.message})
        } else {
            json!({"message": self.message})
        };
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.insert_header(("Retry-After", "1"));
        }
        r.json(body)
    }
}

impl From<Problem> for DtmError {
    fn from(p: Problem) -> Self {
        let mut message = p.detail;
        for e in p.errors {
            let at = e.pointer.or(e.parameter).unwrap_or_default();
            message.push_str(&format!("; {}: {}", at.trim_start_matches('/'), e.detail));
        }
        // A purged gid is an ended transaction to DTM's clients: 409 FAILURE, as DTM answers
        // an abort or submit of a transaction that ended.
        let status = match p.status {
            410 => StatusCode::CONFLICT,
            s => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        DtmError { status, message }
    }
}

impl From<crate::store::StoreError> for DtmError {
    fn from(e: crate::store::StoreError) -> Self {
        Problem::from(e).into()
    }
}

impl DtmError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DtmError {
            status,
            message: message.into(),
        }
    }

    /// 409 FAILURE: DTM's "no" to this transaction.
    fn failure(message: impl Into<String>) -> Self {
        DtmError::new(StatusCode::CONFLICT, message)
    }

    /// 400 FAILURE naming every refused field: nothing was recorded or called.
    fn refused(errors: Vec<FieldError>) -> Self {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.pointer.trim_start_matches('/'), e.detail))
            .collect::<Vec<_>>()
            .join("; ");
        DtmError::new(StatusCode::BAD_REQUEST, message)
    }
}

type Result<T> = std::result::Result<T, DtmError>;

/// Counts every answer of the DTM surface in `saga_dtm_requests_total{route,result}`.
pub async fn count(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> std::result::Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error>
{
    let route = req.match_pattern().unwrap_or_default();
    let route = route.trim_start_matches("/api/dtmsvr/").to_string();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.shared.clone());
    let res = next.call(req).await?;
    let result = match res.status() {
        s if s.is_success() => "success",
        s if s.is_client_error() => "failure",
        _ => "error",
    };
    if let Some(shared) = metrics {
        shared
            .metrics
            .dtm_requests
            .with_label_values(&[&route, result])
            .inc();
    }
    Ok(res)
}

fn success() -> HttpResponse {
    HttpResponse::Ok().json(DtmResult {
        dtm_result: "SUCCESS".into(),
        message: None,
    })
}

/// `GET /api/dtmsvr/newGid`
#[utoipa::path(get, path = "/api/dtmsvr/newGid", tag = "dtm",
    responses((status = 200, description = "A new gid", body = NewGid)))]
pub async fn new_gid() -> HttpResponse {
    HttpResponse::Ok().json(NewGid {
        dtm_result: "SUCCESS".into(),
        gid: uuid::Uuid::now_v7().to_string(),
    })
}

/// `GET /api/dtmsvr/version`
#[utoipa::path(get, path = "/api/dtmsvr/version", tag = "dtm",
    responses((status = 200, description = "This service's version", body = Object,
        example = json!({"version": "saga-orchestrator 0.1.0"}))))]
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": concat!("saga-orchestrator ", env!("CARGO_PKG_VERSION"))
    }))
}

/// The headers of a request, for `passthrough_headers`.
fn headers_of(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// A transaction JSON read as `submit` or `prepare` reads it, its definition let through
/// the outbound policy: the body as received, and the transaction.
async fn read(
    root: &tracing_actix_web::RootSpan,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    stage: Stage,
) -> Result<(Value, DtmTrans)> {
    let body = json_body(req, payload, state.max_body_bytes).await?;
    let mut trans = parse_trans(&body, &headers_of(req), stage)
        .inspect_err(|_| state.shared.metrics.rejected.inc())
        .map_err(DtmError::refused)?;
    root.record("saga_id", trans.gid.as_str());
    trans.def = with_trace(admit(state, Ok(trans.def)).map_err(DtmError::refused)?, req);
    // Kept as long as `[retention]` says for its name (dtm_saga, dtm_tcc, dtm_msg).
    trans.def.retention = state
        .shared
        .defaults
        .retention
        .resolve(&trans.def.name, None);
    Ok((body, trans))
}

/// Records the transaction (or finds the one with its gid and content).
async fn record(
    state: &AppState,
    gid: &str,
    body: Value,
    def: SagaDefinition,
) -> Result<SagaRecord> {
    let (_, r) = start(state, gid, body, def)
        .await
        .map_err(|p| match p.status {
            // A purged gid's problem says when it ended and was purged.
            409 if p.purged.is_some() => DtmError::failure(format!("{}; FAILURE", p.detail)),
            409 => DtmError::failure(format!(
                "the gid {gid:?} exists with another content; FAILURE"
            )),
            _ => p.into(),
        })?;
    Ok(r)
}

/// How long a `wait_result` submit waits: its `request_timeout`, less a margin so that the
/// answer reaches a client whose own timeout is that same `request_timeout`.
fn wait_for(request_timeout_ms: u64) -> Duration {
    Duration::from_millis(request_timeout_ms.saturating_sub(500).max(100))
}

/// `POST /api/dtmsvr/submit`: start a saga.
#[utoipa::path(post, path = "/api/dtmsvr/submit", tag = "dtm",
    request_body(content = Object, content_type = "application/json",
        description = "DTM's transaction JSON (docs/dtm.md has every field)"),
    responses(
        (status = 200, description = "Recorded (with wait_result: and succeeded)", body = DtmResult),
        (status = 400, description = "A field this service cannot honour, named; nothing recorded", body = DtmResult),
        (status = 409, description = "The gid exists with another content, or (wait_result) the transaction did not succeed in time", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult)))]
pub async fn submit(
    root: tracing_actix_web::RootSpan,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (body, trans) = read(&root, &req, payload, &state, Stage::Submit).await?;
    let gid = trans.gid;
    let ended = trans
        .wait_result
        .then(|| state.shared.finished.subscribe(&gid));
    let prepared = match trans.trans_type {
        // The submit of what its client prepared, with the prepare's content.
        TransType::Tcc | TransType::Msg => timed(&state, state.shared.reads.load(&gid)).await?,
        TransType::Saga => None,
    };
    let mut record = match prepared {
        Some(r) if r.request != body => {
            return Err(DtmError::failure(format!(
                "the gid {gid:?} exists with another content; FAILURE"
            )))
        }
        Some(r) => submit_prepared(&req, &state, r).await?,
        None => record(&state, &gid, body, trans.def).await?,
    };
    let Some(ended) = ended else {
        return Ok(success());
    };
    if !record.state.status.is_terminal() {
        ended.wait(wait_for(trans.request_timeout_ms)).await;
        record = load(&state, &gid).await?;
    }
    match record.state.status {
        SagaStatus::Succeeded => Ok(success()),
        _ => Err(DtmError::failure(match &record.state.error {
            Some(why) => format!("{} ({why}); FAILURE", trans_status(&record.state)),
            None => format!(
                "not succeeded within request_timeout: {}; FAILURE",
                trans_status(&record.state)
            ),
        })),
    }
}

/// The submit of a transaction its client prepared: it goes on (once; a second submit finds
/// it going on or ended).
async fn submit_prepared(req: &HttpRequest, state: &AppState, r: SagaRecord) -> Result<SagaRecord> {
    let status = trans_status(&r.state);
    if !matches!(
        TransType::of_saga_name(&r.name),
        Some(TransType::Tcc | TransType::Msg)
    ) {
        return Err(DtmError::failure(format!(
            "the gid {:?} is a {} transaction, not one its client prepares; FAILURE",
            r.id,
            trans_type_of(&r)
        )));
    }
    match status {
        "prepared" => operate_one(state, &r.id, Operation::new(Op::Submit), caller(req))
            .await
            .map_err(|p| match p.status {
                409 => DtmError::failure(format!("{}; FAILURE", p.detail)),
                _ => p.into(),
            }),
        "submitted" | "succeed" => Ok(r),
        _ => Err(DtmError::failure(format!(
            "current status '{status}', cannot submit; FAILURE"
        ))),
    }
}

/// `POST /api/dtmsvr/prepare`: a TCC transaction whose client registers branches, tries them
/// and then submits or aborts; or a msg whose client commits its own transaction, then submits
/// (or aborts, or is asked at `query_prepared` when it stays prepared too long).
#[utoipa::path(post, path = "/api/dtmsvr/prepare", tag = "dtm",
    request_body(content = Object, content_type = "application/json",
        description = "DTM's transaction JSON: gid, trans_type tcc, and its options"),
    responses(
        (status = 200, description = "Prepared (or was already, with this content)", body = DtmResult),
        (status = 400, description = "A field this service cannot honour, named; nothing recorded", body = DtmResult),
        (status = 409, description = "The gid exists with another content, or is no longer prepared", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult)))]
pub async fn prepare(
    root: tracing_actix_web::RootSpan,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (body, trans) = read(&root, &req, payload, &state, Stage::Prepare).await?;
    let record = record(&state, &trans.gid, body, trans.def).await?;
    match trans_status(&record.state) {
        "prepared" => Ok(success()),
        status => Err(DtmError::failure(format!(
            "current status '{status}', cannot prepare; FAILURE"
        ))),
    }
}

/// How many times a registration is tried again when another one got in first.
const REGISTER_TRIES: usize = 5;

/// Page size of `all` when it names none (DTM's).
const DTM_PAGE: u64 = 100;

/// `POST /api/dtmsvr/registerBranch` (and `registerTccBranch`): a TCC branch its client is
/// about to try; confirmed on submit, cancelled on abort, the last registered first.
#[utoipa::path(post, path = "/api/dtmsvr/registerBranch", tag = "dtm",
    request_body(content = Object, content_type = "application/json",
        description = "gid, trans_type tcc, branch_id, data (the body of confirm and cancel), confirm, cancel: all strings"),
    responses(
        (status = 200, description = "Registered (or was already, the same)", body = DtmResult),
        (status = 400, description = "A field this service cannot honour, named; nothing recorded", body = DtmResult),
        (status = 409, description = "No prepared transaction with this gid, or the branch is registered with other URLs or data", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult)))]
pub async fn register_branch(
    root: tracing_actix_web::RootSpan,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let gid = body.get("gid").and_then(Value::as_str).unwrap_or_default();
    root.record("saga_id", gid);
    let not_prepared = || {
        DtmError::failure(format!(
            "no trans with gid: {gid} status: prepared found; FAILURE"
        ))
    };
    for _ in 0..REGISTER_TRIES {
        let record = match SAGA_ID.is_valid(gid) {
            true => timed(&state, state.shared.reads.load(gid)).await?,
            false => None,
        };
        let Some(record) = record else {
            return Err(not_prepared());
        };
        let branch = parse_branch(&body, &record.request).map_err(DtmError::refused)?;
        let blocked: Vec<FieldError> = [
            ("confirm", &branch.step.confirm),
            ("cancel", &branch.step.undo),
        ]
        .into_iter()
        .filter_map(|(field, ep)| {
            let host = url::Url::parse(&ep.as_ref()?.url)
                .ok()?
                .host_str()?
                .to_string();
            let why = state.shared.outbound.check_host(&host).err()?;
            Some(FieldError {
                pointer: format!("/{field}"),
                detail: why,
            })
        })
        .collect();
        if !blocked.is_empty() {
            state.shared.metrics.rejected.inc();
            return Err(DtmError::refused(blocked));
        }
        let def = record.definition.as_ref().map_err(|why| {
            DtmError::failure(format!("the transaction cannot be read: {why}; FAILURE"))
        })?;
        let now = state.shared.clock.now_ms();
        let grown = match dtm::register(def, &record.state, branch.step, now) {
            Ok(None) => return Ok(success()),
            Ok(Some(grown)) => grown,
            Err(NotRegistered::TooMany) => {
                return Err(DtmError::new(
                    StatusCode::BAD_REQUEST,
                    NotRegistered::TooMany.to_string(),
                ))
            }
            Err(NotRegistered::Rejected(_)) => return Err(not_prepared()),
            Err(e) => return Err(DtmError::failure(format!("{e}; FAILURE"))),
        };
        let written = state
            .shared
            .store
            .grow(Growth {
                id: gid,
                version: record.version,
                def: &grown.0,
                state: &grown.1,
                now,
            })
            .await?;
        if written {
            return Ok(success());
        }
        // Another registration, a submit or an abort got in first: look again.
    }
    Err(DtmError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the transaction keeps changing; try again",
    ))
}

/// `POST /api/dtmsvr/registerXaBranch`, `prepareWorkflow`: not served; refused, nothing
/// recorded.
#[utoipa::path(post, path = "/api/dtmsvr/prepareWorkflow", tag = "dtm",
    request_body(content = Object, content_type = "application/json"),
    responses((status = 409, description = "Not served: saga and tcc transactions are", body = DtmResult)))]
pub async fn not_served() -> Result<HttpResponse> {
    Err(DtmError::failure(
        "trans_type: xa and workflow are not supported (saga and tcc are); nothing was \
         recorded; FAILURE",
    ))
}

/// The `{gid}` of an operator-like request.
async fn gid_of(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<String> {
    let body = json_body(req, payload, state.max_body_bytes).await?;
    match body.get("gid").and_then(Value::as_str) {
        Some(g) if SAGA_ID.is_valid(g) => Ok(g.to_string()),
        _ => Err(DtmError::refused(vec![FieldError {
            pointer: "/gid".into(),
            detail: format!("must be {}", SAGA_ID.describe()),
        }])),
    }
}

/// One operator action on a DTM transaction, answered as DTM answers.
async fn act(req: &HttpRequest, state: &AppState, gid: &str, op: Op) -> Result<HttpResponse> {
    operate_one(state, gid, Operation::new(op), caller(req))
        .await
        .map_err(|p| match p.status {
            409 => DtmError::failure(format!("{}; FAILURE", p.detail)),
            _ => p.into(),
        })?;
    Ok(success())
}

/// `POST /api/dtmsvr/abort`: the client of a prepared transaction gives up: every registered
/// TCC branch is cancelled, the last registered first; a msg ends with nothing sent. DTM aborts
/// only TCC and msg: a saga is refused.
#[utoipa::path(post, path = "/api/dtmsvr/abort", tag = "dtm",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 400, description = "No valid gid", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult),
        (status = 404, description = "No such transaction", body = DtmResult),
        (status = 200, description = "Cancelling (TCC) or ended (msg)", body = DtmResult),
        (status = 409, description = "Not a prepared (or aborting) TCC or msg transaction; a saga cannot be aborted by its client (as in DTM)", body = DtmResult)))]
pub async fn abort(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let gid = gid_of(&req, payload, &state).await?;
    let record = load(&state, &gid).await?;
    // What its client prepares, its client may give up.
    let prepares = matches!(
        TransType::of_saga_name(&record.name),
        Some(TransType::Tcc | TransType::Msg)
    );
    match trans_status(&record.state) {
        "prepared" if prepares => act(&req, &state, &gid, Op::Abort).await,
        "aborting" if prepares => Ok(success()),
        status => Err(DtmError::failure(format!(
            "trans type: '{}' current status '{status}', cannot abort; FAILURE",
            trans_type_of(&record),
        ))),
    }
}

/// `POST /api/dtmsvr/forceStop`: stop going forward and compensate what ran (DTM would
/// leave it uncompensated; docs/dtm.md says why not).
#[utoipa::path(post, path = "/api/dtmsvr/forceStop", tag = "dtm",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Compensating", body = DtmResult),
        (status = 400, description = "No valid gid", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult),
        (status = 404, description = "No such transaction", body = DtmResult),
        (status = 409, description = "It has ended", body = DtmResult)))]
pub async fn force_stop(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let gid = gid_of(&req, payload, &state).await?;
    act(&req, &state, &gid, Op::Abort).await
}

/// `POST /api/dtmsvr/resetNextCronTime`: call now what waits for its time (a stuck saga is
/// resumed, as `POST /v1/sagas/{id}/retry`).
#[utoipa::path(post, path = "/api/dtmsvr/resetNextCronTime", tag = "dtm",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Due now", body = DtmResult),
        (status = 400, description = "No valid gid", body = DtmResult),
        (status = 413, description = "Body over server.max_body_bytes", body = DtmResult),
        (status = 415, description = "Not JSON", body = DtmResult),
        (status = 404, description = "No such transaction", body = DtmResult),
        (status = 409, description = "It has ended", body = DtmResult)))]
pub async fn reset_next_cron_time(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let gid = gid_of(&req, payload, &state).await?;
    let record = load(&state, &gid).await?;
    let op = if record.state.status == SagaStatus::Stuck {
        Op::Retry
    } else {
        Op::Wake
    };
    act(&req, &state, &gid, op).await
}

/// DTM's transaction type of a saga: as submitted through this surface, else its mode.
fn trans_type_of(r: &SagaRecord) -> &'static str {
    match TransType::of_saga_name(&r.name) {
        Some(t) => t.as_str(),
        None => match r.mode {
            Mode::Saga => "saga",
            Mode::Tcc => "tcc",
        },
    }
}

/// A saga as DTM's transaction JSON: what was accepted (secret headers masked), with the
/// server's fields.
fn transaction(state: &AppState, r: &SagaRecord) -> Value {
    let mut t = match state.secrets.redact_request(&r.request) {
        Value::Object(o) if TransType::of_saga_name(&r.name).is_some() => o,
        _ => Map::new(),
    };
    let status = trans_status(&r.state);
    t.insert("gid".into(), json!(r.id));
    t.insert("trans_type".into(), json!(trans_type_of(r)));
    t.insert("status".into(), json!(status));
    t.insert("protocol".into(), json!("http"));
    t.insert("create_time".into(), json!(rfc3339(r.created_at)));
    t.insert("update_time".into(), json!(rfc3339(r.updated_at)));
    match status {
        "succeed" => {
            t.insert("finish_time".into(), json!(rfc3339(r.updated_at)));
        }
        "failed" => {
            t.insert("rollback_time".into(), json!(rfc3339(r.updated_at)));
        }
        _ => {}
    }
    if let Some(why) = &r.state.error {
        t.insert("rollback_reason".into(), json!(why));
    }
    if let Some(at) = r.state.next_wake() {
        t.insert("next_cron_time".into(), json!(rfc3339(at)));
    }
    Value::Object(t)
}

/// A saga's branch rows.
fn branch_views(r: &SagaRecord) -> Vec<BranchView> {
    let Ok(def) = &r.definition else {
        return vec![];
    };
    dtm::branches(def, &r.state)
        .into_iter()
        .map(|b| {
            let updated = r
                .state
                .steps
                .get(b.step)
                .map_or(r.updated_at, |s| s.updated_at);
            BranchView {
                gid: r.id.clone(),
                branch_id: b.branch_id.to_string(),
                op: b.op.to_string(),
                url: b.url.to_string(),
                bin_data: base64::engine::general_purpose::STANDARD.encode(b.data),
                status: b.status.to_string(),
                create_time: rfc3339(r.created_at),
                update_time: rfc3339(updated),
            }
        })
        .collect()
}

/// `GET /api/dtmsvr/query?gid=`
#[utoipa::path(get, path = "/api/dtmsvr/query", tag = "dtm",
    params(DtmQueryParams),
    responses(
        (status = 200, description = "The transaction (null when there is none) and its branches", body = QueryAnswer),
        (status = 400, description = "No gid", body = DtmResult)))]
pub async fn query(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let q = query_map(&req)?;
    let Some(gid) = q.get("gid").filter(|g| !g.is_empty()) else {
        return Err(DtmError::new(StatusCode::BAD_REQUEST, "no gid specified"));
    };
    let record = if SAGA_ID.is_valid(gid) {
        timed(&state, state.shared.reads.load(gid)).await?
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(QueryAnswer {
        transaction: record.as_ref().map(|r| transaction(&state, r)),
        branches: record.as_ref().map(branch_views).unwrap_or_default(),
    }))
}

/// `GET /api/dtmsvr/all?position=&limit=&status=&transType=`
#[utoipa::path(get, path = "/api/dtmsvr/all", tag = "dtm",
    params(DtmAllParams),
    responses(
        (status = 200, description = "A page, newest first", body = AllAnswer),
        (status = 400, description = "Invalid query", body = DtmResult)))]
pub async fn all(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let q = query_map(&req)?;
    let param = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let position = param("position").unwrap_or("").to_string();
    let mut errs = vec![];
    // An empty limit is no integer (as on the native listing).
    let limit =
        limits::page_size(q.get("limit").map(String::as_str), DTM_PAGE).unwrap_or_else(|e| {
            errs.push(format!("limit: {e}"));
            DTM_PAGE
        });
    let status = param("status");
    let statuses = match status.map(statuses_of) {
        None => vec![],
        Some(Some(s)) => s,
        Some(None) => {
            errs.push("status: one of prepared, submitted, aborting, succeed, failed".into());
            vec![]
        }
    };
    let name = match param("transType").map(TransType::parse) {
        None => None,
        Some(Some(t)) => Some(t.saga_name()),
        Some(None) => {
            errs.push("transType: saga, tcc or msg".into());
            None
        }
    };
    let after = match parse_cursor(&position) {
        _ if position.is_empty() => None,
        Some(after) => Some(after),
        None => {
            errs.push("position: is not a position this service returned".into());
            None
        }
    };
    if !errs.is_empty() {
        return Err(DtmError::new(StatusCode::BAD_REQUEST, errs.join("; ")));
    }
    if let Some(gid) = param("gid") {
        let record = if SAGA_ID.is_valid(gid) {
            timed(&state, state.shared.reads.load(gid)).await?
        } else {
            None
        };
        return Ok(HttpResponse::Ok().json(AllAnswer {
            transactions: record.iter().map(|r| transaction(&state, r)).collect(),
            next_position: position,
        }));
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
    let next_position = next.unwrap_or_default();
    // A stuck saga stands for submitted or aborting: keep those the status asked for.
    let transactions = rows
        .iter()
        .filter(|r| status.is_none_or(|s| trans_status(&r.state) == s))
        .map(|r| transaction(&state, r))
        .collect();
    Ok(HttpResponse::Ok().json(AllAnswer {
        transactions,
        next_position,
    }))
}
