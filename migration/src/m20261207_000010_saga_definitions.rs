//! Named, versioned saga definitions (docs/api.md, "Definitions"): a start may name one
//! instead of carrying its steps.

use sea_orm_migration::prelude::*;

/// Adds `saga_definitions`: one row per version of a definition, never changed but for its
/// retirement.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SagaDefinitions {
    Table,
    Name,
    Version,
    Document,
    Digest,
    Description,
    CreatedAt,
    CreatedBy,
    RetiredAt,
    RetiredBy,
    RetireReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SagaDefinitions::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaDefinitions::Name)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaDefinitions::Version)
                        .integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SagaDefinitions::Document).text().not_null())
                .col(
                    ColumnDef::new(SagaDefinitions::Digest)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(SagaDefinitions::Description).text().null())
                .col(
                    ColumnDef::new(SagaDefinitions::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaDefinitions::CreatedBy)
                        .string_len(255)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaDefinitions::RetiredAt)
                        .big_integer()
                        .null(),
                )
                .col(
                    ColumnDef::new(SagaDefinitions::RetiredBy)
                        .string_len(255)
                        .null(),
                )
                .col(ColumnDef::new(SagaDefinitions::RetireReason).text().null())
                .primary_key(
                    Index::create()
                        .col(SagaDefinitions::Name)
                        .col(SagaDefinitions::Version),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SagaDefinitions::Table).to_owned())
            .await
    }
}
