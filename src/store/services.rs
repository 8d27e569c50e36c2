//! The participant services an operator paused (`service_pauses`) and the audit of every pause
//! and resume (`service_actions`): in the log, so that a pause holds on every instance.

use super::connect::begin;
use super::entities::{service_action, service_pause};
use super::StoreError;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

/// An operator's pause of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePause {
    /// The service label.
    pub service: String,
    /// Since when (ms).
    pub at: i64,
    /// Who paused it.
    pub who: String,
    /// Why.
    pub reason: Option<String>,
}

/// One pause or resume of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAction {
    /// `pause` or `resume`.
    pub action: String,
    /// Who.
    pub who: String,
    /// When (ms).
    pub at: i64,
    /// Why.
    pub reason: Option<String>,
}

/// The services' side of the log.
#[derive(Clone)]
pub struct ServiceLog {
    db: DatabaseConnection,
}

impl ServiceLog {
    /// Over `db`.
    pub(super) fn new(db: DatabaseConnection) -> Self {
        ServiceLog { db }
    }

    /// The services paused now.
    pub async fn pauses(&self) -> Result<Vec<ServicePause>, StoreError> {
        Ok(service_pause::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| ServicePause {
                service: m.service,
                at: m.paused_at,
                who: m.who,
                reason: m.reason,
            })
            .collect())
    }

    /// Pauses `p.service`, with its audit row; `false` when it was paused already.
    pub async fn pause(&self, p: &ServicePause) -> Result<bool, StoreError> {
        let txn = begin(&self.db).await?;
        if service_pause::Entity::find_by_id(p.service.clone())
            .one(&txn)
            .await?
            .is_some()
        {
            txn.commit().await?;
            return Ok(false);
        }
        service_pause::ActiveModel {
            service: Set(p.service.clone()),
            paused_at: Set(p.at),
            who: Set(p.who.chars().take(255).collect()),
            reason: Set(p.reason.clone()),
        }
        .insert(&txn)
        .await?;
        audit(&txn, &p.service, "pause", &p.who, p.at, p.reason.as_deref()).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Lifts the pause of `service`, with its audit row; `false` when it was not paused.
    pub async fn resume(
        &self,
        service: &str,
        who: &str,
        at: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let txn = begin(&self.db).await?;
        let gone = service_pause::Entity::delete_by_id(service.to_string())
            .exec(&txn)
            .await?
            .rows_affected;
        if gone == 0 {
            txn.commit().await?;
            return Ok(false);
        }
        audit(&txn, service, "resume", who, at, reason).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// The latest `limit` pauses and resumes of `service`, newest first.
    pub async fn actions(
        &self,
        service: &str,
        limit: u64,
    ) -> Result<Vec<ServiceAction>, StoreError> {
        Ok(service_action::Entity::find()
            .filter(service_action::Column::Service.eq(service))
            .order_by_desc(service_action::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| ServiceAction {
                action: m.action,
                who: m.who,
                at: m.at,
                reason: m.reason,
            })
            .collect())
    }
}

async fn audit<C: sea_orm::ConnectionTrait>(
    db: &C,
    service: &str,
    action: &str,
    who: &str,
    at: i64,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    service_action::ActiveModel {
        id: NotSet,
        service: Set(service.to_string()),
        action: Set(action.to_string()),
        who: Set(who.chars().take(255).collect()),
        at: Set(at),
        reason: Set(reason.map(String::from)),
    }
    .insert(db)
    .await?;
    Ok(())
}
