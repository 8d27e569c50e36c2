//! Handlers of `/v1/services` (docs/api.md, "Participant services"): each participant service
//! this instance has seen, with its breaker and figures, and an operator's pause and resume of
//! a service (admin, audited, held on every instance).

use super::body::optional_json_body;
use super::problem::Problem;
use super::resource::rfc3339;
use super::sagas::caller;
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::schema::ReasonRequest;
use super::schema::ServiceParam;
use super::AppState;
use crate::domain::limits::SERVICE;
use crate::domain::parse_operator_body;
use crate::services::ServiceFigures;
use crate::store::ServicePause;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

type Result<T> = std::result::Result<T, Problem>;

/// Pauses and resumes shown with one service.
const ACTIONS_SHOWN: u64 = 20;

/// An operator's pause of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServicePauseView {
    /// Since when.
    pub at: String,
    /// Who paused it.
    pub by: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One pause or resume of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceActionView {
    /// pause or resume.
    pub action: String,
    /// Who.
    pub by: String,
    /// When.
    pub at: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A participant service as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    /// The endpoints' `service` label (host:port by default).
    pub service: String,
    /// closed, open or half_open (this instance's breaker).
    pub breaker: String,
    /// Since when the breaker is in that state.
    pub breaker_since: String,
    /// An operator's pause (held on every instance), or null.
    pub paused: Option<ServicePauseView>,
    /// Answers over the last 5 minutes.
    pub calls: u64,
    /// The share of those that were unknown outcomes (timeouts, refused connections, 5xx).
    pub unknown_rate: f64,
    /// Their 99th percentile duration (ms), null without answers.
    pub p99_ms: Option<u64>,
    /// Calls waiting at its gate now (breaker open, or paused).
    pub waiting: usize,
    /// Its latest pauses and resumes, newest first (`GET /v1/services/{service}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ServiceActionView>>,
}

/// `GET /v1/services` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServicesAnswer {
    /// Every service seen since this instance started, or paused, by name.
    pub services: Vec<ServiceView>,
}

fn view(f: ServiceFigures) -> ServiceView {
    ServiceView {
        breaker: f.breaker.0.as_str().to_string(),
        breaker_since: rfc3339(f.breaker.1),
        paused: f.paused.map(|p| ServicePauseView {
            at: rfc3339(p.at),
            by: p.who,
            reason: p.reason,
        }),
        calls: f.calls,
        unknown_rate: if f.calls == 0 {
            0.0
        } else {
            f.unknown as f64 / f.calls as f64
        },
        p99_ms: f.p99_ms,
        waiting: f.waiting,
        actions: None,
        service: f.service,
    }
}

/// `GET /v1/services`
#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, description = "Every participant service seen, with its breaker and figures", body = ServicesAnswer)))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse> {
    let services = state
        .shared
        .services
        .figures()
        .into_iter()
        .map(view)
        .collect();
    Ok(HttpResponse::Ok().json(ServicesAnswer { services }))
}

fn service_not_found(service: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "service-not-found",
        "Service not found",
        format!("no participant service {service:?} was seen or paused"),
    )
}

/// One service, seen or paused (404 otherwise), with its latest pauses and resumes.
async fn one(state: &AppState, service: &str) -> Result<ServiceView> {
    let f = state
        .shared
        .services
        .figures()
        .into_iter()
        .find(|f| f.service == service);
    let actions = state.service_log.actions(service, ACTIONS_SHOWN).await?;
    let mut v = match f {
        Some(f) => view(f),
        None if !actions.is_empty() => view(ServiceFigures {
            service: service.to_string(),
            breaker: (
                crate::domain::breaker::BreakerState::Closed,
                state.shared.clock.now_ms(),
            ),
            paused: None,
            calls: 0,
            unknown: 0,
            p99_ms: None,
            waiting: 0,
        }),
        None => return Err(service_not_found(service)),
    };
    v.actions = Some(
        actions
            .into_iter()
            .map(|a| ServiceActionView {
                action: a.action,
                by: a.who,
                at: rfc3339(a.at),
                reason: a.reason,
            })
            .collect(),
    );
    Ok(v)
}

/// `GET /v1/services/{service}`
#[utoipa::path(get, path = "/v1/services/{service}", tag = "services", params(ServiceParam),
    responses(
        (status = 200, description = "The service, with its latest pauses and resumes", body = ServiceView),
        (status = 404, description = "Never seen nor paused", body = Problem, content_type = "application/problem+json")))]
pub async fn get(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse> {
    let service = path.into_inner();
    if !SERVICE.is_valid(&service) {
        return Err(service_not_found(&service));
    }
    Ok(HttpResponse::Ok().json(one(&state, &service).await?))
}

/// Pause or resume, as documented for each below.
macro_rules! act {
    ($(#[$doc:meta])* $name:ident, $pause:literal, $path:literal, $ok:literal, $conflict:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "services", params(ServiceParam),
            request_body(content = Option<ReasonRequest>, content_type = "application/json"),
            responses(
                (status = 200, description = $ok, body = ServiceView),
                (status = 400, description = "Invalid body (every mistake with its pointer); nothing done", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "Not a service label", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = Problem, content_type = "application/problem+json"),
                (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json")))]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            path: web::Path<String>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse> {
            pause_or_resume(req, payload, path.into_inner(), $pause, state).await
        }
    };
}

act!(
    /// `POST /v1/services/{service}/pause`: every call to the service waits (a planned deploy),
    /// on every instance, until it is resumed; calls in flight finish.
    pause, true, "/v1/services/{service}/pause", "Paused on every instance (within a poll)",
    "Paused already"
);
act!(
    /// `POST /v1/services/{service}/resume`: the calls that waited go (through its breaker).
    resume, false, "/v1/services/{service}/resume", "Calls go again", "Not paused"
);

async fn pause_or_resume(
    req: HttpRequest,
    payload: web::Payload,
    service: String,
    pause: bool,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let body = optional_json_body(&req, payload, state.max_body_bytes).await?;
    let reason = parse_operator_body(body.as_ref(), false).map_err(Problem::invalid_body)?;
    if !SERVICE.is_valid(&service) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "service-not-found",
            "Service not found",
            format!("{service:?} is not a service label: {}", SERVICE.describe()),
        ));
    }
    let (who, at) = (caller(&req), state.shared.clock.now_ms());
    let log = &state.service_log;
    let done = if pause {
        let p = ServicePause {
            service: service.clone(),
            at,
            who: who.clone(),
            reason: reason.clone(),
        };
        log.pause(&p).await?
    } else {
        log.resume(&service, &who, at, reason.as_deref()).await?
    };
    if !done {
        let why = if pause {
            "the service is paused already"
        } else {
            "the service is not paused"
        };
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            why,
        ));
    }
    // Here at once; the other instances within a poll.
    state.shared.services.set_pauses(log.pauses().await?);
    let action = if pause { "pause" } else { "resume" };
    state
        .shared
        .metrics
        .operator_actions
        .with_label_values(&[if pause {
            "service_pause"
        } else {
            "service_resume"
        }])
        .inc();
    tracing::info!(service = %service, who = %who, reason, action, "participant service paused or resumed");
    Ok(HttpResponse::Ok().json(one(&state, &service).await?))
}
