//! Service endpoints: liveness, readiness, metrics, the OpenAPI description.

use super::problem::Problem;
use super::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// `GET /healthz`: 200 while the process serves.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database answers and migrations are applied, else 503.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    if state.shared.is_stopping() {
        return Err(Problem::unavailable("shutting down"));
    }
    if state.shared.store.ready().await {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Err(Problem::unavailable(
            "the database does not answer or migrations are pending",
        ))
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Open-saga gauges come from the log; if it cannot answer, the last values stand.
    let m = &state.shared.metrics;
    match state.shared.store.open_counts().await {
        Ok(counts) => m.set_open_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot count open sagas for /metrics"),
    }
    m.ready.set(i64::from(state.shared.store.ready().await));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.shared.metrics.render())
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
}
