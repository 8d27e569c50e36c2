//! `sagas`: one row per saga: its request, its resolved definition, its status and the state of
//! every step.

use sea_orm::entity::prelude::*;

/// A row of `sagas`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sagas")]
pub struct Model {
    /// Saga id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Kind of saga.
    pub name: String,
    /// `saga` or `tcc`.
    pub mode: String,
    /// Saga status wire name.
    pub status: String,
    /// The start request as received (compared on an idempotent start).
    pub request: Json,
    /// The resolved definition the saga runs with (`SagaDefinition::to_stored`); NULL on rows
    /// written before definitions were stored.
    #[sea_orm(column_type = "Text", nullable)]
    pub definition: Option<String>,
    /// Names and service labels of the steps (JSON array of `StepMeta`), written once.
    #[sea_orm(column_type = "Text", nullable)]
    pub step_names: Option<String>,
    /// The state of every step (JSON array of `StepState`), rewritten by each transition.
    #[sea_orm(column_type = "Text", nullable)]
    pub steps: Option<String>,
    /// Why the saga stopped going forward, or is stuck.
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// End of the forward phase (ms).
    pub deadline_at: Option<i64>,
    /// Earliest timer of the saga (ms).
    pub next_wake_at: Option<i64>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// When it became terminal (ms).
    pub finished_at: Option<i64>,
    /// Optimistic concurrency counter.
    pub version: i64,
    /// Instance that owns the saga (for several instances).
    pub owner: Option<String>,
    /// Until when the owner's lease holds (ms).
    pub lease_until: Option<i64>,
    /// When it leaves the log (ms): set by the transition that ends it, from its retention.
    pub purge_at: Option<i64>,
    /// Pinned by an operator: never purged while set.
    pub kept: bool,
    /// Paused by an operator since then (ms): no new call until resumed.
    pub paused_at: Option<i64>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
