//! `POST /v1/sagas?dry_run=true` (docs/api.md, "Dry run"): a start that records and calls
//! nothing and answers with the plan (`domain::plan`) and what each endpoint's host answered
//! (`crate::reachability`).

use super::AppState;
use crate::domain::catalog::DefinitionRef;
use crate::domain::plan::{plan, Plan};
use crate::domain::SagaDefinition;
use crate::reachability::{authority, probe_all};
use actix_web::HttpResponse;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// `?dry_run=`: `true` or `false` (absent: false).
pub fn asked(q: &HashMap<String, String>) -> Result<bool, (String, String)> {
    match q.get("dry_run").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(("dry_run".into(), "must be true or false".into())),
    }
}

/// One endpoint of a dry run: where it is, and whether it can be reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointCheck {
    /// The step.
    pub step: String,
    /// action, compensation, try, confirm or cancel.
    pub phase: String,
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Its service label.
    pub service: String,
    /// The outbound policy allows its URL (a start it refuses is a 400, never a plan).
    pub allowed: bool,
    /// Its host resolved to an address the policy allows.
    pub resolves: bool,
    /// Those addresses.
    pub addresses: Vec<String>,
    /// One of them accepted a TCP connection (closed at once; no request sent).
    pub connects: bool,
    /// Why not, when it did not resolve or connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of a dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    /// Always true: nothing was recorded or called.
    pub dry_run: bool,
    /// Every endpoint resolved and accepted a connection.
    pub ready: bool,
    /// The saga's name.
    pub name: String,
    /// saga or tcc.
    pub mode: String,
    /// The stored definition and version a start by definition would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<DefinitionRef>,
    /// The plan: order, undo order, retry schedules, deadline.
    pub plan: Plan,
    /// Each endpoint, in step and phase order.
    pub endpoints: Vec<EndpointCheck>,
}

/// Plans `def` and probes its hosts.
pub async fn answer(state: &AppState, def: SagaDefinition) -> HttpResponse {
    let plan = plan(&def);
    let reach = probe_all(
        &state.shared.outbound,
        def.endpoints().map(|e| e.url.as_str()),
    )
    .await;
    // The plan names each step's phases of the saga's mode, in order, with their endpoints.
    let endpoints: Vec<EndpointCheck> = plan
        .steps
        .iter()
        .flat_map(|s| s.phases.iter().map(move |p| (s, p)))
        .map(|(s, p)| {
            let r = authority(&p.url).and_then(|a| reach.get(&a));
            EndpointCheck {
                step: s.name.clone(),
                phase: p.phase.into(),
                method: p.method.clone(),
                url: p.url.clone(),
                service: p.service.clone(),
                allowed: true,
                resolves: r.is_some_and(|r| r.resolves),
                addresses: r.map(|r| r.addresses.clone()).unwrap_or_default(),
                connects: r.is_some_and(|r| r.connects),
                error: r.and_then(|r| r.error.clone()),
            }
        })
        .collect();
    let ready = endpoints.iter().all(|e| e.connects);
    state
        .shared
        .metrics
        .dry_runs
        .with_label_values(&[if ready { "planned" } else { "unreachable" }])
        .inc();
    HttpResponse::Ok().json(DryRunView {
        dry_run: true,
        ready,
        name: def.name.clone(),
        mode: def.mode.as_str().into(),
        definition: def.origin.clone(),
        plan,
        endpoints,
    })
}
