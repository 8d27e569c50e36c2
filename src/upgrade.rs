//! One-off upgrades of the saga log that need the domain (the schema's own are migrations):
//! run at start-up, before any saga is driven.

use crate::domain::{parse_request, Defaults};
use crate::store::{Reads, StoreError};

/// Unfinished sagas recorded before definitions were stored get theirs once, resolved with
/// today's defaults (the only ones known); from then on they keep it. A request that no longer
/// validates is left to its actor, which makes the saga stuck with an alert.
pub async fn resolve_legacy_definitions(
    store: &Reads,
    defaults: &Defaults,
) -> Result<(), StoreError> {
    for (id, request) in store.without_definition().await? {
        match parse_request(&request, defaults) {
            Ok(def) => {
                store.set_definition(&id, &def).await?;
                tracing::info!(saga_id = %id, "stored the resolved definition of a saga from an older version");
            }
            Err(errors) => {
                tracing::warn!(saga_id = %id, errors = ?errors, "stored request no longer validates");
            }
        }
    }
    Ok(())
}
