//! The saga resource of docs/api.md, rendered from the saga log.

use super::problem::Problem;
use crate::domain::Mode;
use crate::store::{CallRow, OperatorRow, SagaRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The history shown with `include=attempts`: calls and operator actions.
pub struct History {
    /// Every call, in order.
    pub calls: Vec<CallRow>,
    /// Every operator action, in order.
    pub operator: Vec<OperatorRow>,
}

/// One call of a step (`include=attempts`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    /// action, compensation, try, confirm or cancel.
    pub phase: String,
    /// Attempt number in the phase (1 for the first call).
    pub attempt: u32,
    /// When it was sent.
    pub started_at: String,
    /// When its answer came (null while in flight).
    pub finished_at: Option<String>,
    /// The participant's status, if it answered.
    pub http_status: Option<u16>,
    /// success, failure, unknown, or ongoing (DTM: asked again, no attempt spent); null while in flight.
    pub outcome: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// One step of a saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// Step name.
    pub name: String,
    /// Step status (pending, running, retry_scheduled, succeeded, failed, compensation_scheduled,
    /// compensating, compensated, skipped, tried, confirming, confirmed, cancelling, cancelled).
    pub status: String,
    /// Calls of the forward phase so far.
    pub attempts: u32,
    /// Calls of the compensation (or cancel) so far.
    pub compensation_attempts: u32,
    /// TCC: calls of the confirm so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_attempts: Option<u32>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the next call is due.
    pub next_attempt_at: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// Current phase.
    pub phase: String,
    /// host:port (or the endpoint's `service`) of the current phase.
    pub service: String,
    /// The step holds the saga stuck.
    pub stuck: bool,
    /// The steps that must succeed first, as resolved at acceptance (single-saga reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Every call in order (`include=attempts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<CallView>>,
}

/// An operator action (`include=attempts`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorActionView {
    /// retry, abort, pause, resume, wake, skip, keep or unkeep.
    pub action: String,
    /// Who: the token's name, or the caller's address when the service has no tokens.
    pub by: String,
    /// When.
    pub at: String,
    /// Why, as the operator said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step it named (skip, edit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// An edit: the endpoints it changed, before (secret header values as `***`) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub old: Option<serde_json::Value>,
    /// ... and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub new: Option<serde_json::Value>,
}

/// An operator action and whether the saga's status allows it now (`GET /v1/sagas/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    /// retry, abort, pause, resume, wake, keep, unkeep; skip (once per stuck step); edit (once
    /// per step, until the saga ends: `PATCH /v1/sagas/{id}/steps/{step}`).
    pub action: String,
    /// The step it names (skip).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The status allows it (the token's scopes aside).
    pub allowed: bool,
    /// The scope a token needs for it.
    pub scope: String,
    /// Why not, when not allowed.
    pub reason: Option<String>,
}

/// The saga resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaView {
    /// Saga id.
    pub id: String,
    /// Saga kind.
    pub name: String,
    /// saga or tcc.
    pub mode: String,
    /// running, compensating, confirming, succeeded, compensated or stuck.
    pub status: String,
    /// When it was accepted.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Deadline of the forward phase.
    pub deadline_at: Option<String>,
    /// Why it compensates or is stuck.
    pub error: Option<String>,
    /// When retention purges it (null while it has not ended, or if it stays forever).
    pub purge_at: Option<String>,
    /// Paused by an operator since then: no new call until resumed (null when not paused).
    pub paused_at: Option<String>,
    /// An operator pinned it (`POST …/keep`): it is not purged while this holds.
    pub kept: bool,
    /// The W3C trace its participant calls belong to (32 hex; the saga resource only, not
    /// listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// That trace in the tracing UI, when `tracing.trace_url` is set (`GET` of one saga).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// The stored definition and version it was started from (absent for a full start; the
    /// saga resource only, not listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::domain::catalog::DefinitionRef>,
    /// What a call it decided waits for, on the instance that answers (`GET` of one saga):
    /// "breaker open: stock:9002 since …", "service paused: …".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<String>,
    /// Its steps, in definition order.
    pub steps: Vec<StepView>,
    /// Operator actions (`include=attempts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_actions: Option<Vec<OperatorActionView>>,
    /// The operator actions and whether each is allowed now (single-saga reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<ActionView>>,
    /// The request as accepted, secret header values shown as `***` (`include=request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub request: Option<Value>,
}

/// A page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    /// Newest first.
    pub items: Vec<SagaView>,
    /// Pass back as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// How many sagas are in each status (`GET /v1/counts`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    /// Every status, with its count; a count equal to `capped_at` means "at least that many".
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Where counting stops.
    pub capped_at: u64,
}

/// What one saga of a bulk operator action answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// Saga id.
    pub id: String,
    /// 202 when accepted, else the status the single action would have answered.
    pub status: u16,
    /// The saga's status after the action (when accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saga_status: Option<String>,
    /// Why not (when not accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// The answer of a bulk operator action (`POST /v1/bulk/{retry,abort}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkAnswer {
    /// One per id, in the order asked.
    pub results: Vec<BulkResult>,
    /// How many were accepted (202).
    pub accepted: usize,
}

/// Who the caller is (`GET /v1/whoami`): what the console may offer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The token's name; null when the service has no tokens.
    pub name: Option<String>,
    /// What the caller may do: read, write, admin.
    pub scopes: Vec<String>,
    /// The service asks for a token.
    pub tokens_required: bool,
}

fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// The resource; `history` adds `steps[].history` and `operator_actions`.
pub fn saga_view(r: &SagaRecord, history: Option<&History>) -> SagaView {
    let steps = r
        .state
        .steps
        .iter()
        .zip(&r.steps)
        .enumerate()
        .map(|(i, (s, m))| StepView {
            name: m.name.clone(),
            status: s.status.as_str().to_string(),
            attempts: s.attempts,
            compensation_attempts: s.compensation_attempts,
            confirm_attempts: (r.mode == Mode::Tcc).then_some(s.confirm_attempts),
            last_error: s.last_error.clone(),
            // A lost call waiting to go again shows when it goes.
            next_attempt_at: opt_time(s.next_attempt_at.or(s.resend_at)),
            updated_at: rfc3339(s.updated_at),
            phase: s.phase.as_str().to_string(),
            service: m.service.clone(),
            stuck: s.stuck,
            depends_on: None,
            history: history.map(|h| {
                h.calls
                    .iter()
                    .filter(|c| c.step == i)
                    .map(|c| CallView {
                        phase: c.phase.as_str().to_string(),
                        attempt: c.attempt,
                        started_at: rfc3339(c.started_at),
                        finished_at: opt_time(c.finished_at),
                        http_status: c.http_status,
                        outcome: c.outcome.map(|o| o.as_str().to_string()),
                        error: c.error.clone(),
                    })
                    .collect()
            }),
        })
        .collect();
    SagaView {
        id: r.id.clone(),
        name: r.name.clone(),
        mode: r.mode.as_str().to_string(),
        status: r.state.status.as_str().to_string(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        deadline_at: opt_time(r.state.deadline_at),
        error: r.state.error.clone(),
        purge_at: opt_time(r.purge_at),
        paused_at: opt_time(r.state.paused_at),
        kept: r.kept,
        trace_id: r
            .definition
            .as_ref()
            .ok()
            .map(|d| crate::domain::TraceContext::of_saga(d.trace.as_ref(), &r.id).trace_id),
        trace_url: None,
        definition: r.definition.as_ref().ok().and_then(|d| d.origin.clone()),
        waiting_on: None,
        steps,
        operator_actions: history.map(|h| {
            h.operator
                .iter()
                .map(|o| OperatorActionView {
                    action: o.action.clone(),
                    by: o.who.clone(),
                    at: rfc3339(o.at),
                    reason: o.detail.reason.clone(),
                    step: o.detail.step.clone(),
                    old: o.detail.old.clone(),
                    new: o.detail.new.clone(),
                })
                .collect()
        }),
        actions: None,
        request: None,
    }
}

/// The resource as a single-saga read shows it: its actions and dependencies, the history if
/// given, the request (secret header values `***`) if asked for. The archive keeps this too.
pub fn full_view(
    r: &SagaRecord,
    history: Option<&History>,
    request: Option<&crate::domain::SecretHeaders>,
) -> SagaView {
    let mut v = saga_view(r, history);
    v.actions = Some(actions_view(r));
    add_dependencies(&mut v, r);
    v.request = request.map(|secrets| secrets.redact_request(&r.request));
    v
}

/// Adds each step's `depends_on` from the stored definition (single-saga reads).
pub fn add_dependencies(v: &mut SagaView, r: &SagaRecord) {
    let Ok(d) = &r.definition else { return };
    for (step, def) in v.steps.iter_mut().zip(&d.steps) {
        let names = def.deps.iter().filter_map(|&j| d.steps.get(j));
        step.depends_on = Some(names.map(|s| s.name.clone()).collect());
    }
}

/// What an operator may do with the saga now, by the domain's rules, and the scope each needs.
pub fn actions_view(r: &SagaRecord) -> Vec<ActionView> {
    let status = r.state.status;
    let op = |action: &str, rule: Result<(), crate::domain::Rejected>| ActionView {
        action: action.into(),
        step: None,
        allowed: rule.is_ok(),
        scope: crate::auth::OPERATE.as_str().into(),
        reason: rule.err().map(|e| e.to_string()),
    };
    // Pinning against retention works in any status; only one of the two changes anything.
    let pin = |action: &str, allowed: bool, why: &str| ActionView {
        action: action.into(),
        step: None,
        allowed,
        scope: crate::auth::OPERATE.as_str().into(),
        reason: (!allowed).then(|| why.to_string()),
    };
    let st = &r.state;
    let mut actions = vec![
        op("retry", status.may_retry()),
        op("abort", status.may_abort()),
        op("pause", st.may_pause()),
        op("resume", st.may_resume()),
        op("wake", st.may_wake()),
        pin("keep", !r.kept, "the saga is kept already"),
        pin("unkeep", r.kept, "the saga is not kept"),
    ];
    let named = |mut a: ActionView, i: usize| {
        a.step = r.steps.get(i).map(|m| m.name.clone());
        a
    };
    // Skip is offered for the stuck steps only (any other step is refused, and says why).
    for (i, _) in st.steps.iter().enumerate().filter(|(_, s)| s.stuck) {
        actions.push(named(op("skip", st.may_skip(i)), i));
    }
    // Edit, for each step of a saga that has not ended.
    if !status.is_terminal() {
        for i in 0..st.steps.len() {
            actions.push(named(op("edit", st.may_edit(i)), i));
        }
    }
    actions
}
