//! The saga log: every saga with its state and its call history. The actors use it through
//! the small [`SagaLog`] trait; the API reads it through [`Reads`].
//!
//! Layout (see `docs/saga-log.md`): one row per saga holding its status and the state of every
//! step (one UPDATE per transition), and an append-only history with one row per call, written
//! once, when its answer is accepted. Writes come from the actors only, through
//! [`SagaLog::create`] and [`SagaLog::save`], and go through the log writer
//! ([`writer`]), which commits the writes of many sagas together in a few multi-row statements.
//! Reads are plain queries ([`reads`]).

mod bulk;
mod claims;
mod connect;
mod definitions;
pub mod entities;
mod growth;
mod health;
mod instances;
mod operator_requests;
mod reads;
mod retention;
mod rows;
mod sealed;
mod services;
mod sql;
mod writer;

pub use connect::{connect, lock_single_instance};
pub use definitions::{DefinitionLog, Put, Retirement, StoredDefinition};
pub use instances::LeaseLog;
pub use reads::Reads;
pub use retention::{request_sha256, Purger, Tombstone};
pub use rows::unpack;
pub use sealed::Sealer;
pub use services::{ServiceAction, ServiceLog, ServicePause};
pub use sql::SqlStore;

use crate::domain::{
    CallOutcome, CallRecord, Mode, Op, Phase, SagaDefinition, SagaState, SagaStatus,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// Store failures, classified once here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the saga since it was read (optimistic concurrency).
    #[error("saga {0} was changed by another writer")]
    Conflict(String),
    /// The saga does not exist.
    #[error("saga {0} not found")]
    NotFound(String),
    /// A stored row could not be understood.
    #[error("corrupt saga log row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The log takes no new saga now (its database cannot be reached, or too many writes wait).
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// A statement given up after its time limit (a cut connection, say).
    pub fn timed_out() -> Self {
        StoreError::Db(sea_orm::DbErr::Custom("timed out".into()))
    }
}

/// Per-step facts that never change, stored beside the step states for listings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMeta {
    /// Step name.
    pub name: String,
    /// Service label of the forward endpoint.
    pub service: String,
}

impl StepMeta {
    /// The per-step facts of a definition, in step order.
    pub fn of(def: &SagaDefinition) -> Vec<StepMeta> {
        def.steps
            .iter()
            .map(|s| StepMeta {
                name: s.name.clone(),
                service: s.forward.service.clone(),
            })
            .collect()
    }
}

/// One saga as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    /// Saga id.
    pub id: String,
    /// Kind of saga.
    pub name: String,
    /// Saga or TCC.
    pub mode: Mode,
    /// The start request as received.
    pub request: Value,
    /// The resolved definition the saga runs with, or why it cannot be read back.
    pub definition: Result<Arc<SagaDefinition>, String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Optimistic concurrency counter.
    pub version: i64,
    /// The token of the instance that drives the saga; none while it only waits or has ended.
    pub owner: Option<String>,
    /// When it leaves the log (none: it has not ended, or stays forever).
    pub purge_at: Option<i64>,
    /// An operator pinned it: it never leaves while this holds.
    pub kept: bool,
    /// Step names and the like, in order.
    pub steps: Vec<StepMeta>,
    /// The state machine's state.
    pub state: SagaState,
}

/// A change to a saga's history (its calls and operator actions), written in the same
/// transaction as the state it explains.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// An operator acted on the saga.
    Operator {
        /// The action.
        action: Op,
        /// Who asked (the token's name, or the caller's address).
        who: String,
        /// When (ms).
        at: i64,
        /// Why, and the step it named.
        detail: OperatorDetail,
    },
    /// A call and its answer.
    Call {
        /// Step name (the history keeps it beside the index).
        step_name: String,
        /// The call, as the state machine accepted it.
        record: CallRecord,
    },
}

/// One recorded call, for `include=attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Step index.
    pub step: usize,
    /// Phase.
    pub phase: Phase,
    /// Attempt number.
    pub attempt: u32,
    /// Start (ms).
    pub started_at: i64,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// HTTP status.
    pub http_status: Option<u16>,
    /// Outcome (none while the call was in flight, in logs of the first layout).
    pub outcome: Option<CallOutcome>,
    /// Error text.
    pub error: Option<String>,
}

/// The recorded name of a keep (`POST /v1/sagas/{id}/keep`).
pub const KEEP: &str = "keep";
/// The recorded name of an unkeep.
pub const UNKEEP: &str = "unkeep";

/// One recorded operator action.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorRow {
    /// An [`Op`]'s wire name, [`KEEP`] or [`UNKEEP`].
    pub action: String,
    /// Who asked.
    pub who: String,
    /// When (ms).
    pub at: i64,
    /// Why, and the step it named.
    pub detail: OperatorDetail,
}

/// A transition to record, fenced by owner and version.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// Saga id.
    pub id: &'a str,
    /// The writer's lease token: the write fails unless the saga is still held by it.
    pub owner: &'a str,
    /// The version the transition was computed from.
    pub version: i64,
    /// The new state.
    pub state: &'a SagaState,
    /// History rows written with it.
    pub history: &'a [LogRecord],
    /// When (ms).
    pub now: i64,
    /// Give up the saga with this write (it ended, or only waits for a while).
    pub release: bool,
    /// When it leaves the log, if this transition ends it (its retention's answer).
    pub purge_at: Option<i64>,
    /// An operator's edit: the definition the saga runs with from now on.
    pub definition: Option<&'a SagaDefinition>,
    /// What the transition changed of the columns that rarely change (written only then, so
    /// that the hot path's statement stays as it was).
    pub rare: Rare,
}

/// The new values of the saga columns a transition seldom changes; `None`: unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rare {
    /// `deadline_at` (a pause moved it, or a DTM transaction went on without one).
    pub deadline_at: Option<Option<i64>>,
    /// `paused_at` (paused, resumed, or ended while paused).
    pub paused_at: Option<Option<i64>>,
}

impl Rare {
    /// What changed from `old` to `new`.
    pub fn between(old: &SagaState, new: &SagaState) -> Rare {
        let changed = |a: Option<i64>, b: Option<i64>| (a != b).then_some(b);
        Rare {
            deadline_at: changed(old.deadline_at, new.deadline_at),
            paused_at: changed(old.paused_at, new.paused_at),
        }
    }
}

/// A prepared saga with one more branch, to record at the version it was read at.
#[derive(Debug, Clone, Copy)]
pub struct Growth<'a> {
    /// Saga id.
    pub id: &'a str,
    /// The version the new definition and state were computed from.
    pub version: i64,
    /// The definition with the branch.
    pub def: &'a SagaDefinition,
    /// The state with the branch.
    pub state: &'a SagaState,
    /// When (ms).
    pub now: i64,
}

/// What a claim writes: whose lease, and what counts as due.
#[derive(Debug, Clone)]
pub struct LeaseTerms {
    /// The claiming instance's lease token.
    pub owner: String,
    /// Now (ms): leases that ended before are expired.
    pub now: i64,
    /// Sagas due by then (ms) are claimed.
    pub horizon: i64,
    /// Also let go of unfinished sagas held by a token that has no row at all (a safety net:
    /// see `leases::let_go_orphans`).
    pub sweep_orphans: bool,
}

impl LeaseTerms {
    /// Claims by `owner` at `now` of sagas due within `ahead_ms`.
    pub fn new(owner: &str, now: i64, ahead_ms: i64) -> Self {
        LeaseTerms {
            owner: owner.to_string(),
            now,
            horizon: now + ahead_ms,
            sweep_orphans: false,
        }
    }
}

/// What a poll of the log claimed.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Sagas claimed, loaded.
    pub sagas: Vec<Claimed>,
    /// Dead tokens whose sagas were let go (to be claimed when due), with how many; an empty
    /// token stands for the sagas of tokens without a row (the orphan sweep).
    pub taken_over: Vec<(String, u64)>,
}

/// A saga claimed by this instance.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The saga as loaded after the claim.
    pub record: SagaRecord,
    /// The instance whose expired lease was taken over, if any.
    pub taken_from: Option<String>,
}

/// An operator action waiting for the instance that drives its saga.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorRequest {
    /// Row id (0 before it is stored).
    pub request_id: i64,
    /// Saga id.
    pub saga_id: String,
    /// The action.
    pub action: Op,
    /// Who asked.
    pub who: String,
    /// When (ms).
    pub at: i64,
    /// Why, and the step it named.
    pub detail: OperatorDetail,
}

/// What an operator action says besides what it is: why, and the step it names (the `detail`
/// column, JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorDetail {
    /// Why, in the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step it named (skip, edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// An edit asked of the instance that drives the saga: the fields that change (their
    /// header values sealed at rest like a request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<serde_json::Value>,
    /// An edit carried out: the endpoints before (secret header values masked) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    /// ... and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

impl OperatorDetail {
    /// The column's value: none when there is nothing to say.
    pub fn column(&self) -> Option<String> {
        (*self != OperatorDetail::default())
            .then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Read back from the column (a value it cannot read says nothing).
    pub fn of_column(c: Option<&str>) -> OperatorDetail {
        c.and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default()
    }
}

/// Result of [`SagaStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The saga was recorded now.
    New,
    /// A saga with that id already exists.
    Existing(Box<SagaRecord>),
    /// A saga with that id ran, ended and was purged; the id stays reserved while its
    /// tombstone lasts.
    Purged(Box<Tombstone>),
}

/// Filter and page of a listing, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Keep only these statuses; empty = all.
    pub statuses: Vec<SagaStatus>,
    /// Keep only this saga name.
    pub name: Option<String>,
    /// Page size.
    pub limit: u64,
    /// Continue after this `(created_at, id)`.
    pub after: Option<(i64, String)>,
}

/// Where a walk through the sagas a token holds goes on: an index into the active statuses
/// and the last `(created_at, id)` read in that status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedCursor {
    status: usize,
    after: Option<(i64, String)>,
}

/// What the actors need of the saga log: writes (through the log writer), claims and releases
/// under this instance's lease, the loads that go with them, and the operator requests left for
/// this instance. The API reads through [`Reads`].
#[async_trait]
pub trait SagaLog: Send + Sync + 'static {
    /// Records a new saga with its initial state, unless the id exists. Refused at once with
    /// `Unavailable` while the database cannot be reached or too many writes wait.
    async fn create(&self, record: &SagaRecord) -> Result<Created, StoreError>;
    /// Records a transition with its history; fails with `Conflict` unless the stored saga is
    /// still at `t.version` and held by `t.owner` (the fence). Returns the new version.
    async fn save(&self, t: Transition<'_>) -> Result<i64, StoreError>;
    /// Records a branch registered by a prepared saga's client, unless the saga changed since
    /// `g.version` or is no longer prepared; answers whether it did.
    async fn grow(&self, g: Growth<'_>) -> Result<bool, StoreError>;
    /// Loads one saga.
    async fn load(&self, id: &str) -> Result<Option<SagaRecord>, StoreError>;
    /// Loads several sagas with one query; ids not found (or unreadable) are left out.
    async fn load_many(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError>;
    /// Makes a saga that cannot be run (its definition or state cannot be read) `stuck` with
    /// `reason`, unless it already ended. Answers whether it changed.
    async fn mark_stuck(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError>;
    /// Lets go of the sagas of tokens whose lease ended before `lease.now` (their instance died
    /// or stalled), then claims for `lease.owner` at most `limit` unfinished sagas nobody holds
    /// that are due by `lease.horizon`. Answers them loaded.
    async fn claim_due(&self, lease: &LeaseTerms, limit: u64) -> Result<Claims, StoreError>;
    /// Claims these sagas, unless another instance holds a live lease on them (a wake, an
    /// operator action). Answers those claimed, loaded.
    async fn claim(&self, ids: &[String], lease: &LeaseTerms) -> Result<Vec<Claimed>, StoreError>;
    /// A page of the ids of the unfinished sagas `owner` holds, from `from` on; answers them
    /// and where the next page starts (none after the last).
    async fn owned_page(
        &self,
        owner: &str,
        from: &OwnedCursor,
        limit: u64,
    ) -> Result<(Vec<String>, Option<OwnedCursor>), StoreError>;
    /// Gives up the lease of `owner` on one saga, if it still has it.
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// Gives up every lease of `owner` (a graceful stop): another instance takes over at once.
    async fn release_all(&self, owner: &str) -> Result<u64, StoreError>;
    /// Records an operator action for the instance that drives the saga.
    async fn request_operation(&self, req: &OperatorRequest) -> Result<(), StoreError>;
    /// The operator actions waiting for their saga's driver, oldest first.
    async fn operation_requests(&self, limit: u64) -> Result<Vec<OperatorRequest>, StoreError>;
    /// Forgets a waiting operator action (it was carried out or refused).
    async fn drop_operation_request(&self, request_id: i64) -> Result<(), StoreError>;
}
