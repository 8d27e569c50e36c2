//! `saga_calls`: every participant call, in order.

use sea_orm::entity::prelude::*;

/// A row of `saga_calls`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "saga_calls")]
pub struct Model {
    /// Row id, increasing.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Saga id.
    pub saga_id: String,
    /// Step position.
    pub step_idx: i32,
    /// Step name.
    pub step: String,
    /// Phase wire name.
    pub phase: String,
    /// Attempt number within the phase.
    pub attempt: i32,
    /// When the call was decided (ms).
    pub started_at: i64,
    /// When its answer was recorded (ms).
    pub finished_at: Option<i64>,
    /// HTTP status, when there was an answer.
    pub http_status: Option<i32>,
    /// success, failure, unknown or ongoing.
    pub outcome: Option<String>,
    /// What went wrong.
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
