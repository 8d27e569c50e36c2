//! The HTTP API of docs/api.md: handlers only translate between JSON and actor messages
//! (writes) or store queries (reads).

pub mod access_log;
pub mod auth;
mod body;
mod definitions;
mod dry_run;
pub mod dtm;
pub mod openapi;
mod operators;
mod probes;
pub mod problem;
pub mod resource;
mod sagas;
pub mod schema;
mod services;

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
    /// Keeps and unkeeps (retention's side of the log).
    pub purger: crate::store::Purger,
    /// `tracing.trace_url`: a saga's trace in the tracing UI, `{trace_id}` replaced.
    pub trace_url: String,
    /// Operators' pauses of participant services.
    pub service_log: crate::store::ServiceLog,
    /// Named definitions.
    pub definitions: crate::store::DefinitionLog,
}

/// Registers every route of the contract, each with the scope its caller's token needs (when
/// the service has tokens): `.wrap(from_fn(needs(…)))`; a route without one is open. Any other
/// method on a known path is a 405 with `Allow`, any unknown path a 404: both need a token that
/// may read, so that a stranger learns nothing.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::auth::{OPERATE, READ, START};
    use actix_web::middleware::from_fn;
    use auth::{needs, needs_metrics_scope};
    // A route that needs `$scope`.
    macro_rules! to {
        ($method:ident, $handler:expr, $scope:expr) => {
            web::$method().to($handler).wrap(from_fn(needs($scope)))
        };
    }
    // A path's resource: other methods answer 405 (to a reader).
    let resource = |path: &str, allow: &'static str| {
        let others = web::route()
            .to(problem::method_not_allowed(allow))
            .wrap(from_fn(needs(READ)));
        web::resource(path).default_service(others)
    };
    cfg.service(
        resource("/v1/sagas", "GET, POST")
            .route(to!(post, sagas::create, START))
            .route(to!(get, sagas::list, READ)),
    )
    .service(resource("/v1/sagas/{id}", "GET").route(to!(get, sagas::get, READ)))
    .configure(operator_routes)
    .service(resource("/v1/counts", "GET").route(to!(get, sagas::counts, READ)))
    .service(resource("/v1/definitions", "GET").route(to!(get, definitions::list, READ)))
    .service(
        resource("/v1/definitions/{name}", "GET, PUT")
            .route(to!(get, definitions::get, READ))
            .route(to!(put, definitions::put, OPERATE)),
    )
    .service(
        resource("/v1/definitions/{name}/versions/{version}", "GET").route(to!(
            get,
            definitions::version,
            READ
        )),
    )
    .service(
        resource("/v1/definitions/{name}/versions/{version}/retire", "POST").route(to!(
            post,
            definitions::retire,
            OPERATE
        )),
    )
    .service(resource("/v1/services", "GET").route(to!(get, services::list, READ)))
    .service(resource("/v1/services/{service}", "GET").route(to!(get, services::get, READ)))
    .service(resource("/v1/whoami", "GET").route(to!(get, auth::whoami, READ)))
    .configure(dtm_routes)
    // Open: probes, and the description of the API itself.
    .service(resource("/healthz", "GET").route(web::get().to(probes::healthz)))
    .service(resource("/readyz", "GET").route(web::get().to(probes::readyz)))
    .service(resource("/openapi.json", "GET").route(web::get().to(openapi::openapi)))
    .service(
        resource("/metrics", "GET").route(
            web::get()
                .to(probes::metrics)
                .wrap(from_fn(needs_metrics_scope())),
        ),
    );
}

/// The operator actions (`operators.rs`, and a service's pause: `services.rs`): each needs the
/// admin scope.
fn operator_routes(cfg: &mut web::ServiceConfig) {
    use crate::auth::{OPERATE, READ};
    use actix_web::middleware::from_fn;
    use auth::needs;
    let post = |path: &str, handler| {
        let others = web::route()
            .to(problem::method_not_allowed("POST"))
            .wrap(from_fn(needs(READ)));
        web::resource(path).default_service(others).route(handler)
    };
    macro_rules! op {
        ($path:literal, $handler:expr) => {
            cfg.service(post(
                $path,
                web::post().to($handler).wrap(from_fn(needs(OPERATE))),
            ));
        };
    }
    op!("/v1/sagas/{id}/retry", operators::retry);
    op!("/v1/sagas/{id}/abort", operators::abort);
    op!("/v1/sagas/{id}/pause", operators::pause);
    op!("/v1/sagas/{id}/resume", operators::resume);
    op!("/v1/sagas/{id}/wake", operators::wake);
    op!("/v1/sagas/{id}/steps/{step}/skip", operators::skip);
    cfg.service(
        web::resource("/v1/sagas/{id}/steps/{step}")
            .default_service(
                web::route()
                    .to(problem::method_not_allowed("PATCH"))
                    .wrap(from_fn(needs(READ))),
            )
            .route(
                web::patch()
                    .to(operators::edit)
                    .wrap(from_fn(needs(OPERATE))),
            ),
    );
    op!("/v1/sagas/{id}/keep", operators::keep);
    op!("/v1/sagas/{id}/unkeep", operators::unkeep);
    op!("/v1/bulk/retry", operators::bulk_retry);
    op!("/v1/bulk/abort", operators::bulk_abort);
    op!("/v1/bulk/pause", operators::bulk_pause);
    op!("/v1/bulk/resume", operators::bulk_resume);
    op!("/v1/bulk/wake", operators::bulk_wake);
    op!("/v1/services/{service}/pause", services::pause);
    op!("/v1/services/{service}/resume", services::resume);
}

/// DTM's protocol under `/api/dtmsvr` (docs/dtm.md): starting and its client's own abort need
/// the write scope, reads the read scope, forceStop and resetNextCronTime the admin scope; on
/// the `dtm.bind` listener none when `dtm.allow_anonymous` is set.
fn dtm_routes(cfg: &mut web::ServiceConfig) {
    use crate::auth::{OPERATE, READ, START};
    use actix_web::middleware::from_fn;
    use auth::needs_dtm;
    macro_rules! to {
        ($method:ident, $handler:expr, $scope:expr) => {
            web::$method().to($handler).wrap(from_fn(needs_dtm($scope)))
        };
    }
    let resource = |path: &str, allow: &'static str| {
        let others = web::route()
            .to(problem::method_not_allowed(allow))
            .wrap(from_fn(needs_dtm(READ)));
        web::resource(format!("/api/dtmsvr/{path}"))
            .default_service(others)
            .wrap(from_fn(dtm::count))
    };
    cfg.service(resource("newGid", "GET").route(to!(get, dtm::new_gid, READ)))
        .service(resource("version", "GET").route(to!(get, dtm::version, READ)))
        .service(resource("query", "GET").route(to!(get, dtm::query, READ)))
        .service(resource("all", "GET").route(to!(get, dtm::all, READ)))
        .service(resource("submit", "POST").route(to!(post, dtm::submit, START)))
        .service(resource("abort", "POST").route(to!(post, dtm::abort, START)))
        .service(resource("forceStop", "POST").route(to!(post, dtm::force_stop, OPERATE)))
        .service(resource("resetNextCronTime", "POST").route(to!(
            post,
            dtm::reset_next_cron_time,
            OPERATE
        )));
    cfg.service(resource("prepare", "POST").route(to!(post, dtm::prepare, START)));
    // registerTccBranch: the name older clients use.
    for path in ["registerBranch", "registerTccBranch"] {
        cfg.service(resource(path, "POST").route(to!(post, dtm::register_branch, START)));
    }
    for path in ["registerXaBranch", "prepareWorkflow"] {
        cfg.service(resource(path, "POST").route(to!(post, dtm::not_served, START)));
    }
}

/// What answers a path no route knows: a 404 problem, to a caller that may read.
pub fn unknown_path() -> actix_web::Route {
    use actix_web::middleware::from_fn;
    web::route()
        .to(problem::not_found)
        .wrap(from_fn(auth::needs(crate::auth::READ)))
}
