//! Byte-exact identity columns everywhere, and the resolved definition stored with each saga.
//!
//! MariaDB/MySQL compare `utf8mb4_general_ci` strings without case, so `Order-1` and `order-1`
//! were one saga there and two on SQLite and PostgreSQL. Converting every table of the saga log
//! to `utf8mb4_bin` makes ids, names and every other compared column byte-exact, also in tables
//! created before this migration. SQLite (BINARY) and PostgreSQL (deterministic collations)
//! already compare bytes.
//!
//! `sagas.definition` holds the definition the saga was accepted with, every default resolved,
//! so that a restart with other defaults changes only new sagas. Rows from before this
//! migration have NULL; the service resolves those once at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Converts the saga log tables to a binary collation and adds `sagas.definition`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Definition,
}

/// Every table of the saga log.
const TABLES: [&str; 4] = ["sagas", "saga_steps", "saga_calls", "saga_operator_actions"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        if backend == DbBackend::MySql {
            let db = m.get_connection();
            for t in TABLES {
                db.execute_unprepared(&format!(
                    "ALTER TABLE `{t}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                ))
                .await?;
            }
            // Tables created later inherit the database default: make it binary too. Best effort
            // (it needs ALTER on the database); later migrations also name the collation.
            let _ = db
                .execute_unprepared("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                .await;
        }
        let mut col = ColumnDef::new(Sagas::Definition);
        match backend {
            // TEXT holds 64 KiB on MySQL; a definition carries the payload (up to the body limit).
            DbBackend::MySql => col.custom(Alias::new("LONGTEXT")),
            _ => col.text(),
        };
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(col.null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .drop_column(Sagas::Definition)
                .to_owned(),
        )
        .await
    }
}
