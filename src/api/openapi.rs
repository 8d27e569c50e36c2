//! The OpenAPI 3.1 description served at `/openapi.json`, generated from the handlers' own
//! attributes and types (`#[utoipa::path]` on each handler, the resource and problem types, the
//! request shapes of `schema.rs`), so that it cannot drift from the code.

use super::definitions::{
    DefinitionSummary, DefinitionView, DefinitionsAnswer, RetiredView, VersionView,
};
use super::dry_run::{DryRunView, EndpointCheck};
use super::dtm::{AllAnswer, BranchView, DtmResult, NewGid, QueryAnswer};
use super::problem::{Problem, ProblemField, PurgedView};
use super::resource::{
    ActionView, BulkAnswer, BulkResult, CallView, Counts, OperatorActionView, Page, SagaView,
    StepView, Whoami,
};
use super::schema::{
    BulkRequest, DefinitionRequest, DefinitionStart, Endpoint, ReasonRequest, Retry,
    SagaDefinitionRequest, SagaId, SagaStart, SagaStep, StartAnswer, StartRequest, StepEditRequest,
    TccDefinitionRequest, TccStart, TccStep, UndoEndpoint,
};
use super::services::{ServiceActionView, ServicePauseView, ServiceView, ServicesAnswer};
use super::{auth, definitions, dtm, operators, probes, sagas, services};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "saga-orchestrator",
        description = "Durable sagas and TCC across microservices. See docs/api.md."
    ),
    paths(
        sagas::create,
        sagas::list,
        sagas::get,
        operators::retry,
        operators::abort,
        operators::pause,
        operators::resume,
        operators::wake,
        operators::skip,
        operators::edit,
        operators::keep,
        operators::unkeep,
        operators::bulk_retry,
        operators::bulk_abort,
        operators::bulk_pause,
        operators::bulk_resume,
        operators::bulk_wake,
        sagas::counts,
        definitions::put,
        definitions::list,
        definitions::get,
        definitions::version,
        definitions::retire,
        auth::whoami,
        services::list,
        services::get,
        services::pause,
        services::resume,
        probes::healthz,
        probes::readyz,
        probes::metrics,
        openapi,
        dtm::new_gid,
        dtm::version,
        dtm::submit,
        dtm::prepare,
        dtm::register_branch,
        dtm::not_served,
        dtm::abort,
        dtm::force_stop,
        dtm::reset_next_cron_time,
        dtm::query,
        dtm::all
    ),
    components(schemas(
        StartRequest, SagaStart, TccStart, SagaStep, TccStep, Endpoint, UndoEndpoint, Retry,
        SagaView, StepView, CallView, OperatorActionView, ActionView, Page, Counts, Whoami,
        Problem, ProblemField, PurgedView, BulkRequest, ReasonRequest, StepEditRequest, SagaId, BulkAnswer, BulkResult,
        DtmResult, NewGid, QueryAnswer, BranchView, AllAnswer, ServicesAnswer, ServiceView,
        ServicePauseView, ServiceActionView, DefinitionStart, DefinitionRequest,
        SagaDefinitionRequest, TccDefinitionRequest, DefinitionView, DefinitionSummary,
        DefinitionsAnswer, RetiredView, VersionView, DryRunView, EndpointCheck, StartAnswer,
        crate::domain::plan::Plan, crate::domain::plan::StepPlan, crate::domain::plan::PhasePlan,
        crate::domain::catalog::DefinitionRef
    )),
    modifiers(&Common),
    // Tokens are optional: a service without [auth] tokens is open (on loopback).
    security((), ("bearer" = []))
)]
struct ApiDoc;

/// What every `/v1` operation shares: the bearer scheme and the answers any of them may give.
struct Common;

impl utoipa::Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of [[auth.tokens]]: read for GET, write to start, admin to retry or abort",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, with the answers every `/v1` and `/api/dtmsvr` operation may give added to
/// each.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let problem = json!({"description": "", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}});
    let common = [
        ("401", "No token, or one that is not configured"),
        ("403", "The token lacks the scope"),
        (
            "503",
            "The saga log or the actors cannot answer now (Retry-After)",
        ),
    ];
    // DTM's clients read `{"message"}` for "try again".
    let dtm_unavailable = json!({"description": "The saga log or the actors cannot answer now; try again",
        "content": {"application/json": {"schema": {"type": "object",
            "properties": {"message": {"type": "string"}}, "required": ["message"]}}}});
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let dtm = path.starts_with("/api/dtmsvr/");
            if !dtm && !path.starts_with("/v1/") {
                continue;
            }
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                for (code, why) in common {
                    let mut r = problem.clone();
                    r["description"] = json!(why);
                    op["responses"][code] = r;
                }
                if dtm {
                    op["responses"]["503"] = dtm_unavailable.clone();
                }
            }
        }
    }
    doc
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "This description (OpenAPI 3.1)", body = Object)))]
pub async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(document())
}
