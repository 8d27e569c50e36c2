//! A prepared saga grows as its client registers branches (DTM's TCC): its definition, step
//! names and state rewritten in one conditional UPDATE, at the version they were read at and
//! only while it is still prepared, so that a submit, an abort or another registration in
//! between makes it fail instead of being lost.

use super::entities::saga;
use super::{rows, StepMeta, StoreError};
use crate::domain::{SagaDefinition, SagaState, SagaStatus};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

/// Writes `def` (sealed already) and `state` over the saga `id` at `version`, if it is still
/// prepared there; answers whether it did.
pub(super) async fn grow(
    db: &DatabaseConnection,
    id: &str,
    version: i64,
    def: &SagaDefinition,
    state: &SagaState,
    now: i64,
) -> Result<bool, StoreError> {
    let names = serde_json::to_string(&StepMeta::of(def)).unwrap_or_default();
    let res = saga::Entity::update_many()
        .col_expr(
            saga::Column::Definition,
            Expr::value(rows::definition_column(def)),
        )
        .col_expr(saga::Column::StepNames, Expr::value(names))
        .col_expr(saga::Column::Steps, Expr::value(rows::steps_json(state)))
        .col_expr(saga::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            saga::Column::Version,
            Expr::col(saga::Column::Version).add(1),
        )
        .filter(saga::Column::Id.eq(id))
        .filter(saga::Column::Version.eq(version))
        .filter(saga::Column::Status.eq(SagaStatus::Prepared.as_str()))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}
