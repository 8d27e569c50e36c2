//! Service endpoints: liveness, readiness, metrics (the OpenAPI description is `openapi.rs`).

use super::problem::Problem;
use super::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::Duration;

/// `GET /healthz`: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "Serving", body = Object, example = json!({"status": "ok"}))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// How long a probe or a scrape may wait for the database: both answer within 1 s whatever
/// the database does (down, refusing, or silently partitioned).
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// True when the saga log answers within [`PROBE_TIMEOUT`].
async fn ready_in_time(state: &AppState) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, state.shared.reads.ready())
        .await
        .unwrap_or(false)
}

/// `GET /readyz`: 200 when the database answers and migrations are applied, else 503.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "Ready", body = Object),
        (status = 503, description = "The database does not answer, or shutting down", body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    if state.shared.is_stopping() {
        return Err(Problem::unavailable("shutting down"));
    }
    if ready_in_time(&state).await {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Err(Problem::unavailable(
            "the database does not answer or migrations are pending",
        ))
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "auth.metrics_scope is set and no token was given", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks auth.metrics_scope", body = Problem, content_type = "application/problem+json")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Open-saga gauges come from the log; if it cannot answer in time, the last values stand.
    let m = &state.shared.metrics;
    let counts = tokio::time::timeout(PROBE_TIMEOUT, state.shared.reads.open_counts());
    let (counts, ready) = futures::join!(counts, ready_in_time(&state));
    match counts {
        Ok(Ok(counts)) => m.set_open_counts(&counts),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot count open sagas for /metrics"),
        Err(_) => tracing::warn!("counting open sagas for /metrics timed out"),
    }
    m.ready.set(i64::from(ready));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.shared.metrics.render())
}
