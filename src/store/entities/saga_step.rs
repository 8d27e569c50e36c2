//! `saga_steps`: the state of each step of a saga.

use sea_orm::entity::prelude::*;

/// A row of `saga_steps`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "saga_steps")]
pub struct Model {
    /// Saga id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub saga_id: String,
    /// Position of the step in the request.
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i32,
    /// Step name.
    pub name: String,
    /// Service label of the forward endpoint.
    pub service_name: String,
    /// Current phase.
    pub operation: String,
    /// Body of the forward call.
    pub payload: Json,
    /// Step status wire name.
    pub status: String,
    /// Forward calls started.
    pub attempts: i32,
    /// Compensation or cancel calls started.
    pub compensation_attempts: i32,
    /// Confirm calls started.
    pub confirm_attempts: i32,
    /// Calls of the current phase before the last operator retry.
    pub budget_base: i32,
    /// Forward call succeeded or had an unknown outcome.
    pub may_have_effect: bool,
    /// A call's answer is not recorded yet.
    pub in_flight: bool,
    /// Waiting for an operator.
    pub stuck: bool,
    /// Last error.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Due time of the next call (ms).
    pub next_attempt_at: Option<i64>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
