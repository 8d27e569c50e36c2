//! The named definitions' side of the log (`saga_definitions`): every version of every
//! definition, written once and never changed but for its retirement. Which document is valid
//! is the domain's rule (`domain::catalog`); this only keeps them.

use super::connect::begin;
use super::entities::saga_definition as row;
use super::StoreError;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// When, by whom and why a version was retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// When (ms).
    pub at: i64,
    /// Who.
    pub who: String,
    /// Why.
    pub reason: Option<String>,
}

/// One version of a definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition {
    /// The definition's name.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// The document, as checked.
    pub document: Value,
    /// Its description.
    pub description: Option<String>,
    /// When it was stored (ms).
    pub created_at: i64,
    /// Who stored it.
    pub created_by: String,
    /// Its retirement, if it takes no more starts.
    pub retired: Option<Retirement>,
}

/// What a new document did.
#[derive(Debug, Clone, PartialEq)]
pub enum Put {
    /// It is a new version.
    Created(StoredDefinition),
    /// It is the latest version already (identical, not retired).
    Unchanged(StoredDefinition),
}

/// The definitions' side of the log. Header values are sealed at rest as a saga's are
/// (`secrets.key_file`): a document is stored sealed and opened when read.
#[derive(Clone)]
pub struct DefinitionLog {
    db: DatabaseConnection,
    sealer: super::Sealer,
}

fn digest(document: &Value) -> String {
    // serde_json's maps are ordered by key: one document, one serialisation.
    let h = Sha256::digest(document.to_string().as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unpack(m: row::Model, sealer: &super::Sealer) -> Result<StoredDefinition, StoreError> {
    let mut document = serde_json::from_str(&m.document)
        .map_err(|e| StoreError::Corrupt(format!("definition {} v{}: {e}", m.name, m.version)))?;
    sealer.open_request(&mut document);
    Ok(StoredDefinition {
        version: u32::try_from(m.version).unwrap_or_default(),
        name: m.name,
        document,
        description: m.description,
        created_at: m.created_at,
        created_by: m.created_by,
        retired: m.retired_at.map(|at| Retirement {
            at,
            who: m.retired_by.unwrap_or_default(),
            reason: m.retire_reason,
        }),
    })
}

impl DefinitionLog {
    /// Over `db`.
    pub(super) fn new(db: DatabaseConnection, sealer: super::Sealer) -> Self {
        DefinitionLog { db, sealer }
    }

    fn unpack(&self, m: row::Model) -> Result<StoredDefinition, StoreError> {
        unpack(m, &self.sealer)
    }

    /// Stores `document` as the next version of `name`, unless the latest version is this very
    /// document and takes starts. Two writers of one name at once: one gets the next number,
    /// the other tries again on top of it.
    pub async fn put(
        &self,
        name: &str,
        document: &Value,
        description: Option<&str>,
        at: i64,
        who: &str,
    ) -> Result<Put, StoreError> {
        // The digest is the plain document's (sealing draws a fresh nonce each time).
        let digest = digest(document);
        let mut sealed = document.clone();
        self.sealer.seal_request(&mut sealed);
        let mut tries = 0;
        loop {
            tries += 1;
            let txn = begin(&self.db).await?;
            let latest = row::Entity::find()
                .filter(row::Column::Name.eq(name))
                .order_by_desc(row::Column::Version)
                .limit(1)
                .one(&txn)
                .await?;
            if let Some(l) = latest
                .as_ref()
                .filter(|l| l.digest == digest && l.retired_at.is_none())
            {
                let found = self.unpack(l.clone())?;
                txn.commit().await?;
                return Ok(Put::Unchanged(found));
            }
            let version = latest.map_or(1, |l| l.version + 1);
            let inserted = row::ActiveModel {
                name: Set(name.to_string()),
                version: Set(version),
                document: Set(sealed.to_string()),
                digest: Set(digest.clone()),
                description: Set(description.map(String::from)),
                created_at: Set(at),
                created_by: Set(who.chars().take(255).collect()),
                retired_at: Set(None),
                retired_by: Set(None),
                retire_reason: Set(None),
            }
            .insert(&txn)
            .await;
            match inserted {
                Ok(m) => {
                    txn.commit().await?;
                    return Ok(Put::Created(self.unpack(m)?));
                }
                // Another writer took this number first.
                Err(_) if tries < 5 => {
                    let _ = txn.rollback().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Version `version` of `name`.
    pub async fn version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredDefinition>, StoreError> {
        row::Entity::find_by_id((name.to_string(), version as i32))
            .one(&self.db)
            .await?
            .map(|m| self.unpack(m))
            .transpose()
    }

    /// Every version of `name`, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<StoredDefinition>, StoreError> {
        row::Entity::find()
            .filter(row::Column::Name.eq(name))
            .order_by_desc(row::Column::Version)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| self.unpack(m))
            .collect()
    }

    /// The version a start without one runs: the newest that is not retired. `Err(newest)`
    /// when every version is retired, `Ok(None)` when there is none.
    pub async fn live(
        &self,
        name: &str,
    ) -> Result<Result<Option<StoredDefinition>, StoredDefinition>, StoreError> {
        let live = row::Entity::find()
            .filter(row::Column::Name.eq(name))
            .filter(row::Column::RetiredAt.is_null())
            .order_by_desc(row::Column::Version)
            .limit(1)
            .one(&self.db)
            .await?;
        if let Some(m) = live {
            return Ok(Ok(Some(self.unpack(m)?)));
        }
        Ok(match self.versions(name).await?.into_iter().next() {
            Some(newest) => Err(newest),
            None => Ok(None),
        })
    }

    /// The newest version of every definition, by name.
    pub async fn list(&self) -> Result<Vec<(StoredDefinition, u32)>, StoreError> {
        // Few rows (a team's sagas, a handful of versions each): one scan, grouped here.
        let rows = row::Entity::find()
            .order_by_asc(row::Column::Name)
            .order_by_desc(row::Column::Version)
            .all(&self.db)
            .await?;
        let mut out: Vec<(StoredDefinition, u32)> = Vec::new();
        for m in rows {
            let live = m.retired_at.is_none();
            match out.last_mut() {
                Some((newest, n_live)) if newest.name == m.name => {
                    if live && *n_live == 0 {
                        *n_live = u32::try_from(m.version).unwrap_or_default();
                    }
                }
                _ => {
                    let v = u32::try_from(m.version).unwrap_or_default();
                    out.push((self.unpack(m)?, if live { v } else { 0 }));
                }
            }
        }
        Ok(out)
    }

    /// Retires version `version` of `name`; `None` when there is no such version, `false`
    /// when it was retired already (kept as it was).
    pub async fn retire(
        &self,
        name: &str,
        version: u32,
        r: &Retirement,
    ) -> Result<Option<(StoredDefinition, bool)>, StoreError> {
        let txn = begin(&self.db).await?;
        let Some(m) = row::Entity::find_by_id((name.to_string(), version as i32))
            .one(&txn)
            .await?
        else {
            txn.commit().await?;
            return Ok(None);
        };
        if m.retired_at.is_some() {
            txn.commit().await?;
            return Ok(Some((self.unpack(m)?, false)));
        }
        let mut a: row::ActiveModel = m.into();
        a.retired_at = Set(Some(r.at));
        a.retired_by = Set(Some(r.who.chars().take(255).collect()));
        a.retire_reason = Set(r.reason.clone());
        let m = a.update(&txn).await?;
        txn.commit().await?;
        Ok(Some((self.unpack(m)?, true)))
    }
}
