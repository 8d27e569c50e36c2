//! The process holding a lease token: `saga_instances.holder`.
//!
//! A restart of a configured instance takes over its earlier run's token as it is (the sagas
//! keep their owner: nothing is rewritten) and writes its own process into `holder`. A renewal
//! checks `holder`, so that the earlier process, should it still run (two processes given one
//! instance id), finds its lease gone instead of renewing it. Rows of older versions have none.

use sea_orm_migration::prelude::*;

/// Adds `saga_instances.holder`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SagaInstances {
    Table,
    Holder,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(SagaInstances::Table)
                .add_column(ColumnDef::new(SagaInstances::Holder).string_len(160).null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(SagaInstances::Table)
                .drop_column(SagaInstances::Holder)
                .to_owned(),
        )
        .await
    }
}
