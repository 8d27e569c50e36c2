//! Several instances on one database: sagas are held by lease, and work is found by query.
//!
//! `sagas.owner` and `sagas.lease_until` existed unread; from now on a saga with a driver has its
//! owner's token and lease there, and a saga that only waits (or has ended) has neither. Due
//! timers are found through the index on `next_wake_at`, expired leases through a new one on
//! `lease_until`. An unfinished saga with no timer was waiting for answers a restart lost: it
//! gets `next_wake_at` = its last change, i.e. "look at once". `saga_operator_requests` holds
//! the abort and retry asked of an instance that does not drive the saga, for its owner.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Adds the lease indexes and `saga_operator_requests`.
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
        // Due timers are read through idx_sagas_next_wake (from the first migration).
        m.create_index(
            Index::create()
                .name("idx_sagas_lease")
                .table(Sagas::Table)
                .col(Sagas::LeaseUntil)
                .if_not_exists()
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
            db.execute_unprepared(
                "ALTER TABLE `saga_operator_requests` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SagaOperatorRequests::Table).to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("idx_sagas_lease")
                .table(Sagas::Table)
                .to_owned(),
        )
        .await
    }
}
