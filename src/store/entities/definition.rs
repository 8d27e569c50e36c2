//! `saga_definitions`: every version of every named definition.

/// A row of `saga_definitions`.
pub mod saga_definition {
    use sea_orm::entity::prelude::*;

    /// One version of a definition.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_definitions")]
    pub struct Model {
        /// The definition's name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// Its version, from 1.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        /// The document (JSON) as it was checked.
        #[sea_orm(column_type = "Text")]
        pub document: String,
        /// SHA-256 of the document's canonical JSON: an identical body is no new version.
        pub digest: String,
        /// Its description.
        #[sea_orm(column_type = "Text", nullable)]
        pub description: Option<String>,
        /// When (ms).
        pub created_at: i64,
        /// Who stored it (a token's name, or `file:NAME` when loaded from `definitions.dir`).
        pub created_by: String,
        /// When it was retired (ms); none while it takes starts.
        pub retired_at: Option<i64>,
        /// Who retired it.
        pub retired_by: Option<String>,
        /// Why.
        #[sea_orm(column_type = "Text", nullable)]
        pub retire_reason: Option<String>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
