//! Several instances on one database: sagas are held by lease, and work is found by query.
//!
//! `saga_instances` holds one row per running instance (per lease token) with the end of its
//! lease, which the instance renews: one row renewed, whatever the number of sagas it drives.
//! `sagas.owner` (which existed unread) now names the token of the instance driving the saga;
//! a saga that only waits, or has ended, has none. Due timers are found through the index on
//! `next_wake_at`; the sagas of a dead token are read by owner (no index: they are looked for
//! only until all are claimed, then the token's row is deleted). An unfinished saga
//! with no timer was waiting for answers a restart lost: it gets `next_wake_at` = its last
//! change, i.e. "look at once". `saga_operator_requests` holds the abort and retry asked of an
//! instance that does not drive the saga, for its owner.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Adds `saga_instances`, the owner index and `saga_operator_requests`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Status,
    Owner,
    LeaseUntil,
    NextWakeAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SagaInstances {
    Table,
    Owner,
    InstanceId,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum SagaOperatorRequests {
    Table,
    Id,
    SagaId,
    Action,
    Who,
    At,
}

/// Statuses of a saga that has not ended (the domain's `ACTIVE_STATUSES`, as stored).
const ACTIVE: [&str; 3] = ["running", "compensating", "confirming"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let clear = Query::update()
            .table(Sagas::Table)
            .value(Sagas::Owner, Option::<String>::None)
            .value(Sagas::LeaseUntil, Option::<i64>::None)
            .to_owned();
        db.execute(&clear).await?;
        let look_now = Query::update()
            .table(Sagas::Table)
            .value(Sagas::NextWakeAt, Expr::col(Sagas::UpdatedAt))
            .and_where(Expr::col(Sagas::Status).is_in(ACTIVE))
            .and_where(Expr::col(Sagas::NextWakeAt).is_null())
            .to_owned();
        db.execute(&look_now).await?;
        // Due timers are read through idx_sagas_next_wake (from the first migration). No index
        // on owner: every transition would maintain it (measured: PostgreSQL's CPU per saga
        // doubled); the sagas of a dead token are read only until they are all claimed.
        m.create_table(
            Table::create()
                .table(SagaInstances::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaInstances::Owner)
                        .string_len(160)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SagaInstances::InstanceId)
                        .string_len(128)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaInstances::LeaseUntil)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SagaOperatorRequests::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaOperatorRequests::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SagaOperatorRequests::SagaId)
                        .string_len(128)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorRequests::Action)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorRequests::Who)
                        .string_len(255)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorRequests::At)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::MySql {
            for t in ["saga_operator_requests", "saga_instances"] {
                db.execute_unprepared(&format!(
                    "ALTER TABLE `{t}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SagaOperatorRequests::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(SagaInstances::Table).to_owned())
            .await
    }
}
