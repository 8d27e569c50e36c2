//! `saga_tombstones` (what is left of a purged saga while its id stays reserved) and
//! `saga_sweeps` (which instance sweeps, until when).

/// A row of `saga_tombstones`.
pub mod saga_tombstone {
    use sea_orm::entity::prelude::*;

    /// A purged saga's reserved id.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_tombstones")]
    pub struct Model {
        /// The purged saga's id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Its name.
        pub name: String,
        /// SHA-256 (hex) of its start request as received.
        pub request_sha256: String,
        /// How it ended.
        pub status: String,
        /// When it ended (ms).
        pub finished_at: i64,
        /// When it was purged (ms).
        pub purged_at: i64,
        /// The archive file holding it, if archived.
        #[sea_orm(column_type = "Text", nullable)]
        pub archived_in: Option<String>,
        /// When the id is free again (ms).
        pub expires_at: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A row of `saga_sweeps`.
pub mod saga_sweep {
    use sea_orm::entity::prelude::*;

    /// Who sweeps now.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_sweeps")]
    pub struct Model {
        /// Which sweep (`retention`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The process sweeping.
        pub holder: Option<String>,
        /// Until when its turn holds (ms).
        pub held_until: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
