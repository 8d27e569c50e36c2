//! The HTTP API of `shared/API.md`: handlers only translate between JSON and actor messages
//! (writes) or store queries (reads).

pub mod access_log;
pub mod auth;
mod body;
pub mod openapi;
pub mod problem;
pub mod resource;
mod sagas;
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

/// Registers every route of the contract.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/sagas")
            .route(web::post().to(sagas::create))
            .route(web::get().to(sagas::list))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/v1/sagas/{id}")
            .route(web::get().to(sagas::get))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/v1/sagas/{id}/retry")
            .route(web::post().to(sagas::retry))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .service(
        web::resource("/v1/sagas/{id}/abort")
            .route(web::post().to(sagas::abort))
            .default_service(web::to(problem::method_not_allowed)),
    )
    .route("/healthz", web::get().to(service::healthz))
    .route("/readyz", web::get().to(service::readyz))
    .route("/metrics", web::get().to(service::metrics))
    .route("/openapi.json", web::get().to(service::openapi));
}
