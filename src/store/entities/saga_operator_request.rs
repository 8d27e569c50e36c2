//! `saga_operator_requests`: an abort or retry asked of an instance that does not drive the saga, waiting for the instance that does.

use sea_orm::entity::prelude::*;

/// A row of `saga_operator_requests`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "saga_operator_requests")]
pub struct Model {
    /// Row id, increasing.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Saga id.
    pub saga_id: String,
    /// `abort` or `retry`.
    pub action: String,
    /// Who asked (the caller's address).
    pub who: String,
    /// When (ms).
    pub at: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
