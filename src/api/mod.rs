//! The HTTP API of `shared/API.md`: handlers only translate between JSON and actor messages
//! (writes) or store queries (reads).

pub mod access_log;
pub mod auth;
mod body;
pub mod openapi;
pub mod problem;
pub mod resource;
mod sagas;
pub mod schema;
mod service;

use crate::actors::registry::Registry;
use crate::actors::Shared;
use actix::Addr;
use actix_web::web;
use std::sync::Arc;

/// What every handler can reach.
pub struct AppState {
    /// Starts sagas and routes operator actions.
    pub registry: Addr<Registry>,
    /// Store, metrics, finish notifications.
    pub shared: Arc<Shared>,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Headers shown as `***`.
    pub secrets: crate::domain::SecretHeaders,
}

/// Registers every route of the contract; any other method on a known path is a 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use problem::method_not_allowed as only;
    cfg.service(
        web::resource("/v1/sagas")
            .route(web::post().to(sagas::create))
            .route(web::get().to(sagas::list))
            .default_service(web::to(only("GET, POST"))),
    )
    .service(
        web::resource("/v1/sagas/{id}")
            .route(web::get().to(sagas::get))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/v1/sagas/{id}/retry")
            .route(web::post().to(sagas::retry))
            .default_service(web::to(only("POST"))),
    )
    .service(
        web::resource("/v1/sagas/{id}/abort")
            .route(web::post().to(sagas::abort))
            .default_service(web::to(only("POST"))),
    )
    .service(
        web::resource("/v1/bulk/retry")
            .route(web::post().to(sagas::bulk_retry))
            .default_service(web::to(only("POST"))),
    )
    .service(
        web::resource("/v1/bulk/abort")
            .route(web::post().to(sagas::bulk_abort))
            .default_service(web::to(only("POST"))),
    )
    .service(
        web::resource("/v1/counts")
            .route(web::get().to(sagas::counts))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/v1/whoami")
            .route(web::get().to(auth::whoami))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(service::healthz))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(service::readyz))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(service::metrics))
            .default_service(web::to(only("GET"))),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi::openapi))
            .default_service(web::to(only("GET"))),
    );
}
