//! Work is found through one index on (owner, next_wake_at), which replaces the index on
//! `next_wake_at` alone: due timers are the range `owner IS NULL, next_wake_at <= now`, and the
//! sagas of a dead lease token are the range `owner = token`, which a new instance claims page by
//! page (one write per saga) instead of letting them all go first and claiming them afterwards
//! (two). A write maintains as many indexes as before.

use sea_orm_migration::prelude::*;

/// Replaces `idx_sagas_next_wake` with `idx_sagas_owner_wake`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Owner,
    NextWakeAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("idx_sagas_owner_wake")
                .table(Sagas::Table)
                .col(Sagas::Owner)
                .col(Sagas::NextWakeAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("idx_sagas_next_wake")
                .table(Sagas::Table)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("idx_sagas_next_wake")
                .table(Sagas::Table)
                .col(Sagas::NextWakeAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("idx_sagas_owner_wake")
                .table(Sagas::Table)
                .to_owned(),
        )
        .await
    }
}
