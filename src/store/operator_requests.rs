//! Operator actions asked of another instance: left in `saga_operator_requests` for the
//! instance that drives the saga, which carries them out within a poll.

use super::entities::saga_operator_request;
use super::{OperatorRequest, StoreError};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder, QuerySelect};

/// Stores an operator action for the saga's owner.
pub(super) async fn request_operation(
    db: &DatabaseConnection,
    r: &OperatorRequest,
) -> Result<(), StoreError> {
    saga_operator_request::Entity::insert(saga_operator_request::ActiveModel {
        id: NotSet,
        saga_id: Set(r.saga_id.clone()),
        action: Set(r.action.as_str().to_string()),
        who: Set(r.who.chars().take(255).collect()),
        at: Set(r.at),
        detail: Set(r.detail.column()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The waiting operator actions, oldest first.
pub(super) async fn operation_requests(
    db: &DatabaseConnection,
    limit: u64,
) -> Result<Vec<OperatorRequest>, StoreError> {
    let rows = saga_operator_request::Entity::find()
        .order_by_asc(saga_operator_request::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for m in rows {
        match m.action.parse() {
            Ok(action) => out.push(OperatorRequest {
                request_id: m.id,
                saga_id: m.saga_id,
                action,
                who: m.who,
                at: m.at,
                detail: super::OperatorDetail::of_column(m.detail.as_deref()),
            }),
            Err(_) => {
                // Written by a newer version, say: nobody here can carry it out.
                tracing::warn!(saga_id = %m.saga_id, action = %m.action, "unknown operator request dropped");
                drop_operation_request(db, m.id).await?;
            }
        }
    }
    Ok(out)
}

/// Forgets a waiting operator action.
pub(super) async fn drop_operation_request(
    db: &DatabaseConnection,
    request_id: i64,
) -> Result<(), StoreError> {
    saga_operator_request::Entity::delete_by_id(request_id)
        .exec(db)
        .await?;
    Ok(())
}
