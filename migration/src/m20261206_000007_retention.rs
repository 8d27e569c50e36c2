//! Retention (docs/saga-log.md, "Retention"): when an ended saga leaves the log, whether an
//! operator pinned it, the tombstones that keep purged ids reserved, and the row that lets one
//! instance at a time sweep.

use sea_orm_migration::prelude::*;

/// Adds `sagas.purge_at` and `sagas.kept` (indexed together), `saga_tombstones` and
/// `saga_sweeps`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    PurgeAt,
    Kept,
}

#[derive(DeriveIden)]
enum SagaTombstones {
    Table,
    Id,
    Name,
    RequestSha256,
    Status,
    FinishedAt,
    PurgedAt,
    ArchivedIn,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum SagaSweeps {
    Table,
    Name,
    Holder,
    HeldUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds one at a time.
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(ColumnDef::new(Sagas::PurgeAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(
                    ColumnDef::new(Sagas::Kept)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await?;
        // The sweep reads `kept = false AND purge_at <= now` in purge_at order: kept sagas are
        // out of its range, however long ago they were due.
        m.create_index(
            Index::create()
                .name("idx_sagas_purge")
                .table(Sagas::Table)
                .col(Sagas::Kept)
                .col(Sagas::PurgeAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SagaTombstones::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaTombstones::Id)
                        .string_len(128)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SagaTombstones::Name)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaTombstones::RequestSha256)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaTombstones::Status)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaTombstones::FinishedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaTombstones::PurgedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SagaTombstones::ArchivedIn).text().null())
                .col(
                    ColumnDef::new(SagaTombstones::ExpiresAt)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_saga_tombstones_expires")
                .table(SagaTombstones::Table)
                .col(SagaTombstones::ExpiresAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SagaSweeps::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaSweeps::Name)
                        .string_len(32)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(SagaSweeps::Holder).string_len(160).null())
                .col(
                    ColumnDef::new(SagaSweeps::HeldUntil)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table(SagaSweeps::Table)
                .columns([SagaSweeps::Name, SagaSweeps::HeldUntil])
                .values_panic(["retention".into(), 0i64.into()])
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SagaSweeps::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(SagaTombstones::Table).to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("idx_sagas_purge")
                .table(Sagas::Table)
                .to_owned(),
        )
        .await?;
        for col in [Sagas::Kept, Sagas::PurgeAt] {
            m.alter_table(
                Table::alter()
                    .table(Sagas::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
