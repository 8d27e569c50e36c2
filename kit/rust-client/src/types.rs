//! What the service answers (docs/api.md, "The saga resource", "Definitions", "Dry run").
//!
//! Every type reads any document a newer service sends: unknown fields are ignored, a missing
//! field takes its default, and an unknown status or mode is kept as `Other(text)`. Times are
//! the service's RFC 3339 UTC strings, as sent. Each type mirrors a component schema of the
//! service's `/openapi.json` (named in its doc comment); `tests/drift.rs` checks that they
//! still match, field for field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A string-valued enum that keeps values it does not know (a newer service's) as `Other`.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $variant,)+
            /// A value this client does not know, as sent.
            Other(String),
        }

        impl $name {
            /// The value as the service spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    v => v.as_str().to_string(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A saga's status.
    #[derive(Default)]
    SagaStatus {
        /// Going forward.
        #[default]
        Running = "running",
        /// Undoing its steps.
        Compensating = "compensating",
        /// TCC: confirming its steps.
        Confirming = "confirming",
        /// Ended: every step done (terminal).
        Succeeded = "succeeded",
        /// Ended: turned back and undone (terminal).
        Compensated = "compensated",
        /// An undo, confirm or cancel cannot succeed: waits for an operator (`retry`, a skip).
        Stuck = "stuck",
        /// A TCC transaction of DTM's protocol not yet submitted or aborted.
        Prepared = "prepared",
    }
}

impl SagaStatus {
    /// Succeeded or compensated: nothing more happens to the saga.
    pub fn is_terminal(&self) -> bool {
        matches!(self, SagaStatus::Succeeded | SagaStatus::Compensated)
    }

    /// Terminal, or stuck: only a person moves it on, so waiting for it is over.
    pub fn is_settled(&self) -> bool {
        self.is_terminal() || *self == SagaStatus::Stuck
    }
}

string_enum! {
    /// A saga's mode.
    #[derive(Default)]
    Mode {
        /// Steps with an action and an optional compensation.
        #[default]
        Saga = "saga",
        /// Steps with try, confirm and cancel.
        Tcc = "tcc",
    }
}

string_enum! {
    /// A step's status.
    #[derive(Default)]
    StepStatus {
        /// Not started.
        #[default]
        Pending = "pending",
        /// A call is in flight.
        Running = "running",
        /// Waits for its next forward call.
        RetryScheduled = "retry_scheduled",
        /// Its action succeeded.
        Succeeded = "succeeded",
        /// Its action failed.
        Failed = "failed",
        /// Waits for its compensation.
        CompensationScheduled = "compensation_scheduled",
        /// Its compensation is being called.
        Compensating = "compensating",
        /// Undone (or had nothing to undo).
        Compensated = "compensated",
        /// Skipped by an operator.
        Skipped = "skipped",
        /// TCC: its try succeeded.
        Tried = "tried",
        /// TCC: its confirm is being called.
        Confirming = "confirming",
        /// TCC: confirmed.
        Confirmed = "confirmed",
        /// TCC: its cancel is being called.
        Cancelling = "cancelling",
        /// TCC: cancelled.
        Cancelled = "cancelled",
    }
}

/// The saga resource (schema `SagaView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saga {
    /// Saga id.
    pub id: String,
    /// Saga kind.
    pub name: String,
    /// saga or tcc.
    pub mode: Mode,
    /// Its status.
    pub status: SagaStatus,
    /// When it was accepted.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Deadline of the forward phase.
    pub deadline_at: Option<String>,
    /// Why it compensates or is stuck.
    pub error: Option<String>,
    /// When retention purges it (none while it runs, or if it stays forever).
    pub purge_at: Option<String>,
    /// Paused by an operator since then.
    pub paused_at: Option<String>,
    /// Pinned against retention by an operator.
    pub kept: bool,
    /// The W3C trace its participant calls belong to (one saga's read, not listings).
    pub trace_id: Option<String>,
    /// That trace in the tracing UI, when the service is configured with one.
    pub trace_url: Option<String>,
    /// The definition and version it was started from (a start by definition).
    pub definition: Option<DefinitionRef>,
    /// What a call it decided waits for (a breaker, a paused service).
    pub waiting_on: Option<String>,
    /// Its steps, in definition order.
    pub steps: Vec<Step>,
    /// Operator actions taken on it (`GetOptions::attempts`).
    pub operator_actions: Option<Vec<OperatorAction>>,
    /// Each operator action and whether its status allows it now (one saga's read).
    pub actions: Option<Vec<Action>>,
    /// The request as accepted, secret header values `***` (`GetOptions::request`).
    pub request: Option<Value>,
}

impl Saga {
    /// Succeeded or compensated.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Terminal or stuck: what [`Client::wait`](crate::Client::wait) waits for.
    pub fn is_settled(&self) -> bool {
        self.status.is_settled()
    }

    /// The step of this name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// One step of a saga (schema `StepView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Step {
    /// Step name.
    pub name: String,
    /// Its status.
    pub status: StepStatus,
    /// Calls of the forward phase so far.
    pub attempts: u32,
    /// Calls of the compensation (or cancel) so far.
    pub compensation_attempts: u32,
    /// TCC: calls of the confirm so far.
    pub confirm_attempts: Option<u32>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the next call is due.
    pub next_attempt_at: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// Current phase: action, compensation, try, confirm or cancel.
    pub phase: String,
    /// host:port (or the endpoint's `service`) of the current phase.
    pub service: String,
    /// The step holds the saga stuck.
    pub stuck: bool,
    /// The steps it waits for, as resolved at acceptance (one saga's read).
    pub depends_on: Option<Vec<String>>,
    /// Every call in order (`GetOptions::attempts`).
    pub history: Option<Vec<Call>>,
}

/// One call of a step (schema `CallView`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Call {
    /// action, compensation, try, confirm or cancel.
    pub phase: String,
    /// Attempt number in the phase, from 1.
    pub attempt: u32,
    /// When it was sent.
    pub started_at: String,
    /// When its answer came (none while in flight).
    pub finished_at: Option<String>,
    /// The participant's status, if it answered.
    pub http_status: Option<u16>,
    /// success, failure, unknown or ongoing; none while in flight.
    pub outcome: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// An operator action taken on a saga (schema `OperatorActionView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorAction {
    /// retry, abort, pause, resume, wake, skip, keep, unkeep or edit.
    pub action: String,
    /// The token's name, or the caller's address without tokens.
    pub by: String,
    /// When.
    pub at: String,
    /// Why, as the operator said.
    pub reason: Option<String>,
    /// The step it named (skip, edit).
    pub step: Option<String>,
    /// An edit's endpoints before.
    pub old: Option<Value>,
    /// An edit's endpoints after.
    pub new: Option<Value>,
}

/// An operator action and whether the saga's status allows it now (schema `ActionView`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Action {
    /// retry, abort, pause, resume, wake, keep, unkeep, skip or edit.
    pub action: String,
    /// The step it names (skip, edit).
    pub step: Option<String>,
    /// The status allows it (the token's scopes aside).
    pub allowed: bool,
    /// The scope a token needs for it.
    pub scope: String,
    /// Why not, when not allowed.
    pub reason: Option<String>,
}

/// A page of a saga listing (schema `Page`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Page {
    /// Newest first.
    pub items: Vec<Saga>,
    /// Pass back as `ListOptions::cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

/// A stored definition's name and version (schema `DefinitionRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefinitionRef {
    /// The definition's name.
    pub name: String,
    /// Its version.
    pub version: u32,
}

/// One version of a named definition (schema `DefinitionView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Definition {
    /// The definition's name.
    pub name: String,
    /// This version, from 1.
    pub version: u32,
    /// What it does.
    pub description: Option<String>,
    /// When it was stored.
    pub created_at: String,
    /// Who stored it (a token's name, the caller's address, or `file:NAME`).
    pub created_by: String,
    /// Set once it takes no more starts.
    pub retired: Option<Retired>,
    /// The document as given.
    pub definition: Value,
    /// Every version, newest first ([`Client::definition`](crate::Client::definition) only).
    pub versions: Option<Vec<VersionInfo>>,
}

/// A version's retirement (schema `RetiredView`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retired {
    /// When.
    pub at: String,
    /// Who retired it.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}

/// One entry of a definition's list of versions (schema `VersionView`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionInfo {
    /// The version.
    pub version: u32,
    /// When it was stored.
    pub created_at: String,
    /// Who stored it.
    pub created_by: String,
    /// When it was retired, if it was.
    pub retired_at: Option<String>,
}

/// A definition in the list of all (schema `DefinitionSummary`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefinitionSummary {
    /// Its name.
    pub name: String,
    /// Its newest version.
    pub latest_version: u32,
    /// The version a start without one runs; none when every version is retired.
    pub live_version: Option<u32>,
    /// The newest version's description.
    pub description: Option<String>,
    /// When the newest version was stored.
    pub updated_at: String,
    /// The newest version's mode.
    pub mode: Mode,
    /// The newest version's step names.
    pub steps: Vec<String>,
}

/// The answer of `GET /v1/definitions` (schema `DefinitionsAnswer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefinitionList {
    /// Every definition, by name.
    pub items: Vec<DefinitionSummary>,
}

/// What a dry run found (schema `DryRunView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DryRun {
    /// Always true: nothing was recorded or called.
    pub dry_run: bool,
    /// Every endpoint resolved and accepted a connection.
    pub ready: bool,
    /// The saga's name.
    pub name: String,
    /// saga or tcc.
    pub mode: Mode,
    /// The definition and version a start by definition would run.
    pub definition: Option<DefinitionRef>,
    /// Order, undo order, retry schedules, deadline.
    pub plan: Plan,
    /// Each endpoint, in step and phase order.
    pub endpoints: Vec<EndpointCheck>,
}

/// One endpoint of a dry run and whether it can be reached (schema `EndpointCheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// The outbound policy allows its URL.
    pub allowed: bool,
    /// Its host resolved to an address the policy allows.
    pub resolves: bool,
    /// Those addresses.
    pub addresses: Vec<String>,
    /// One of them accepted a TCP connection (no request was sent).
    pub connects: bool,
    /// Why not, when it did not resolve or connect.
    pub error: Option<String>,
}

/// The plan of a saga (schema `Plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// Forward order: each level's steps start together once the level before succeeded.
    pub levels: Vec<Vec<String>>,
    /// Undo order should the saga turn back with every step done.
    pub undo_levels: Vec<Vec<String>>,
    /// Each step's phases.
    pub steps: Vec<StepPlan>,
    /// The forward phase's deadline from the start, if any.
    pub deadline_ms: Option<u64>,
    /// The longest the forward phase can take by timeouts and retries alone.
    pub worst_case_forward_ms: u64,
    /// What a person should look at.
    pub warnings: Vec<String>,
}

/// One step in a plan (schema `StepPlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepPlan {
    /// Its name.
    pub name: String,
    /// The steps it waits for.
    pub depends_on: Vec<String>,
    /// Timeout of one call.
    pub timeout_ms: u64,
    /// Its phases, forward first.
    pub phases: Vec<PhasePlan>,
}

/// One phase of a step in a plan (schema `PhasePlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhasePlan {
    /// action, compensation, try, confirm or cancel.
    pub phase: String,
    /// Method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Its service label.
    pub service: String,
    /// Durable wait before its first call.
    pub delay_ms: u64,
    /// Calls it may make.
    pub attempts: u32,
    /// The waits between them, before jitter.
    pub backoffs_ms: Vec<u64>,
    /// The longest the phase takes before it gives up.
    pub worst_case_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_values_and_fields_are_kept_or_ignored() {
        let s: Saga = serde_json::from_value(json!({
            "id": "a", "name": "n", "mode": "saga", "status": "hibernating", "brand_new": [1],
            "steps": [{"name": "x", "status": "compensated", "future": true}]}))
        .unwrap();
        assert_eq!(s.status, SagaStatus::Other("hibernating".into()));
        assert_eq!(s.steps[0].status, StepStatus::Compensated);
        assert_eq!(serde_json::to_value(&s.status).unwrap(), "hibernating");
        assert!(!s.is_settled());
        assert!(SagaStatus::Stuck.is_settled() && !SagaStatus::Stuck.is_terminal());
    }
}
