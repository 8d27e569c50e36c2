//! This instance's lease rows (`saga_instances`, one per lease token, renewed by its
//! instance): registered at start-up, taken over from an earlier run, renewed, ended. The
//! lease keeper reads and writes them through a [`LeaseLog`] of its own: a connection that no
//! saga work (claims, loads, the log writer) ever waits on or holds.

use super::connect::open;
use super::entities::saga_instance;
use super::StoreError;
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::time::Duration;

/// The lease rows, on a connection of their own.
#[derive(Clone)]
pub struct LeaseLog {
    db: DatabaseConnection,
}

impl LeaseLog {
    /// Opens one connection to the (migrated) saga log at `url`; on MariaDB and PostgreSQL a
    /// transaction of ours left idle longer than `idle_txn` is ended by the server.
    pub async fn connect(url: &str, idle_txn: Duration) -> Result<Self, DbErr> {
        Ok(LeaseLog {
            db: open(url, 1, idle_txn).await?,
        })
    }

    /// Records a new lease token `owner` of instance `instance_id`, held by process `holder`
    /// until `until`.
    pub async fn register(
        &self,
        owner: &str,
        instance_id: &str,
        holder: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        register(&self.db, owner, instance_id, holder, until).await
    }

    /// Takes over the newest token of the earlier runs of `earlier` (of every instance: None)
    /// for process `holder` of `instance_id` until `until` (a restart: its sagas stay as they
    /// are). Answers the token, if one was taken over.
    pub async fn adopt_earlier_run(
        &self,
        earlier: Option<&str>,
        instance_id: &str,
        holder: &str,
        until: i64,
    ) -> Result<Option<String>, StoreError> {
        adopt_earlier_run(&self.db, earlier, instance_id, holder, until).await
    }

    /// Ends the leases of earlier runs of `instance_id` (of every instance: None) but `except`
    /// (a restart). Answers how many.
    pub async fn end_earlier_runs(
        &self,
        instance_id: Option<&str>,
        except: &str,
    ) -> Result<u64, StoreError> {
        end_earlier_runs(&self.db, instance_id, except).await
    }

    /// Extends the lease of `owner` held by process `holder` to `until` (one row). Answers
    /// whether it is registered and still this process's.
    pub async fn renew(&self, owner: &str, holder: &str, until: i64) -> Result<bool, StoreError> {
        renew(&self.db, owner, holder, until).await
    }
}

/// Whether `owner`'s row is still in `saga_instances`, read with a shared lock held until the
/// end of `txn`. A new saga is inserted only under a token that has a row: a dead token's row is
/// deleted in the transaction that lets go of its sagas, so a saga inserted under it afterwards
/// would be held by nobody, forever. The lock makes that let-go wait for (or skip) this
/// transaction, which then lets go of the new sagas too.
pub(super) async fn token_exists<C: ConnectionTrait>(db: &C, owner: &str) -> Result<bool, DbErr> {
    let q = saga_instance::Entity::find_by_id(owner.to_string())
        .select_only()
        .column(saga_instance::Column::Owner);
    let q = match db.get_database_backend() {
        // KEY SHARE does not block the renewals (which change no key), only the delete.
        DbBackend::Postgres => q.lock(LockType::KeyShare),
        DbBackend::MySql => q.lock(LockType::Share),
        _ => q,
    };
    Ok(q.into_tuple::<String>().one(db).await?.is_some())
}

/// Deletes the row of `owner` (its sagas were let go in the same transaction).
pub(super) async fn delete<C: ConnectionTrait>(db: &C, owner: &str) -> Result<(), DbErr> {
    saga_instance::Entity::delete_by_id(owner.to_string())
        .exec(db)
        .await?;
    Ok(())
}

/// Records a new lease token of instance `instance_id`, held by process `holder` until `until`.
async fn register(
    db: &DatabaseConnection,
    owner: &str,
    instance_id: &str,
    holder: &str,
    until: i64,
) -> Result<(), StoreError> {
    saga_instance::Entity::insert(saga_instance::ActiveModel {
        owner: Set(owner.to_string()),
        instance_id: Set(instance_id.to_string()),
        lease_until: Set(until),
        holder: Set(Some(holder.to_string())),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Takes over the newest token of the earlier runs of `earlier` (of every instance when none:
/// SQLite) for process `holder` of instance `instance_id`, until `until`: its sagas are this
/// run's as they stand, with nothing rewritten. The token changes hands only as it was read, so
/// that a token let go meanwhile (or renewed by a process still running) is left alone.
/// Answers the token taken over.
async fn adopt_earlier_run(
    db: &DatabaseConnection,
    earlier: Option<&str>,
    instance_id: &str,
    holder: &str,
    until: i64,
) -> Result<Option<String>, StoreError> {
    let mut newest = saga_instance::Entity::find().order_by_desc(saga_instance::Column::LeaseUntil);
    if let Some(id) = earlier {
        newest = newest.filter(saga_instance::Column::InstanceId.eq(id));
    }
    let Some(row) = newest.one(db).await? else {
        return Ok(None);
    };
    let res = saga_instance::Entity::update_many()
        .col_expr(saga_instance::Column::LeaseUntil, Expr::value(until))
        .col_expr(saga_instance::Column::Holder, Expr::value(holder))
        .col_expr(saga_instance::Column::InstanceId, Expr::value(instance_id))
        .filter(saga_instance::Column::Owner.eq(row.owner.as_str()))
        .filter(saga_instance::Column::LeaseUntil.eq(row.lease_until))
        .exec(db)
        .await?;
    Ok((res.rows_affected == 1).then_some(row.owner))
}

/// Ends the leases of the earlier runs of `instance_id` (of every instance when none: SQLite,
/// where this process holds the only lock) (a restart: they are dead), so that
/// their sagas are taken over at once rather than after the lease.
async fn end_earlier_runs(
    db: &DatabaseConnection,
    instance_id: Option<&str>,
    except: &str,
) -> Result<u64, StoreError> {
    let mut q = saga_instance::Entity::update_many()
        .col_expr(saga_instance::Column::LeaseUntil, Expr::value(0i64))
        .filter(saga_instance::Column::Owner.ne(except))
        .filter(saga_instance::Column::LeaseUntil.gt(0i64));
    if let Some(id) = instance_id {
        q = q.filter(saga_instance::Column::InstanceId.eq(id));
    }
    let res = q.exec(db).await?;
    Ok(res.rows_affected)
}

/// Extends the lease of `owner` held by process `holder`: one row, whatever the number of sagas
/// it holds. Answers whether the token is still registered and this process's.
async fn renew(
    db: &DatabaseConnection,
    owner: &str,
    holder: &str,
    until: i64,
) -> Result<bool, StoreError> {
    let res = saga_instance::Entity::update_many()
        .col_expr(saga_instance::Column::LeaseUntil, Expr::value(until))
        .filter(saga_instance::Column::Owner.eq(owner))
        .filter(saga_instance::Column::Holder.eq(holder))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}
