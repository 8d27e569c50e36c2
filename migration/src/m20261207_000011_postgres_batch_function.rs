//! PostgreSQL: the log writer's batch as one function call (docs/saga-log.md, "Per batch").
//! SQLite and MariaDB/MySQL write their batches with plain statements: nothing to add there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Adds `saga_log_write(new_sagas, moves, calls)`: a batch's new sagas, transitions and calls in
/// one call, committed with it when sent outside a transaction. Its statements keep one plan
/// each for the session, where the single statement it replaces was planned again for every
/// batch (a custom plan: half of PostgreSQL's time in a batch, measured in docs/benchmarks.md).
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The function. Each argument is a JSON array of rows, each row an array in the order the
/// log writer serialises it (`src/store/bulk.rs`: `SAGA`, `TRANSITION`, `CALL`).
///
/// Plans: generic (made once per session), which is safe here because no statement joins two
/// relations: each reads one table by its key, so a plan made while a table is small cannot
/// turn into a scan of it once it is large (`enable_seqscan = off` rules that out too).
///
/// Errors, each rolling the whole call back: `SG001` a new saga's lease token has no row (its
/// lease ended and was taken over); `SG002` a new saga's id is reserved by a purged saga's
/// tombstone; `SG003` a transition's version or owner no longer matches its row; `23505` a new
/// saga's id exists.
pub const POSTGRES_BATCH_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION saga_log_write(new_sagas jsonb, moves jsonb, calls jsonb)
RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
DECLARE
  owners text[];
  ids text[];
  locked bigint;
  r jsonb;
BEGIN
  IF jsonb_array_length(new_sagas) > 0 THEN
    -- The lease tokens first, locked until the commit against a takeover's delete: a takeover
    -- locks its token, then the sagas it lets go (the other order could deadlock with it).
    owners := ARRAY(SELECT DISTINCT e->>15 FROM jsonb_array_elements(new_sagas) AS t(e)
                    WHERE e->>15 IS NOT NULL);
    PERFORM 1 FROM saga_instances WHERE owner = ANY(owners) FOR KEY SHARE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked <> cardinality(owners) THEN
      RAISE EXCEPTION 'a lease token of the batch has no row' USING ERRCODE = 'SG001';
    END IF;
    INSERT INTO sagas (id, name, mode, status, request, definition, step_names, steps, error,
                       deadline_at, next_wake_at, created_at, updated_at, finished_at, version,
                       owner, purge_at, kept, paused_at)
    SELECT e->>0, e->>1, e->>2, e->>3, (e->>4)::json, e->>5, e->>6, e->>7, e->>8,
           (e->>9)::bigint, (e->>10)::bigint, (e->>11)::bigint, (e->>12)::bigint,
           (e->>13)::bigint, (e->>14)::bigint, e->>15, (e->>16)::bigint, (e->>17)::boolean,
           (e->>18)::bigint
      FROM jsonb_array_elements(new_sagas) WITH ORDINALITY AS t(e, n) ORDER BY n;
  END IF;
  -- One UPDATE per transition, each fenced by its version and owner: a statement on one
  -- table by its key (see the plans above); a seldom-changing column keeps its value unless
  -- its flag is set.
  FOR r IN SELECT e FROM jsonb_array_elements(moves) AS t(e) LOOP
    UPDATE sagas
       SET status = r->>3, steps = r->>4, error = r->>5, next_wake_at = (r->>6)::bigint,
           updated_at = (r->>7)::bigint, finished_at = (r->>8)::bigint,
           purge_at = (r->>9)::bigint, owner = r->>10,
           deadline_at = CASE WHEN (r->>11)::boolean THEN (r->>12)::bigint ELSE deadline_at END,
           paused_at = CASE WHEN (r->>13)::boolean THEN (r->>14)::bigint ELSE paused_at END,
           definition = CASE WHEN (r->>15)::boolean THEN r->>16 ELSE definition END,
           version = version + 1
     WHERE id = r->>0 AND version = (r->>1)::bigint AND owner = r->>2;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'saga % is not at version % under this owner', r->>0, r->>1
        USING ERRCODE = 'SG003';
    END IF;
  END LOOP;
  INSERT INTO saga_calls (saga_id, step_idx, step, phase, attempt, started_at, finished_at,
                          http_status, outcome, error)
  SELECT e->>0, (e->>1)::int, e->>2, e->>3, (e->>4)::int, (e->>5)::bigint, (e->>6)::bigint,
         (e->>7)::int, e->>8, e->>9
    FROM jsonb_array_elements(calls) WITH ORDINALITY AS t(e, n) ORDER BY n;
  IF jsonb_array_length(new_sagas) > 0 THEN
    -- Read after the insert, in a snapshot of its own: a purge that deleted one of these ids
    -- committed before the insert went on (it waited on the purge's lock, or came later).
    ids := ARRAY(SELECT e->>0 FROM jsonb_array_elements(new_sagas) AS t(e));
    IF EXISTS (SELECT 1 FROM saga_tombstones WHERE id = ANY(ids)) THEN
      RAISE EXCEPTION 'an id of the batch is reserved by a purged saga' USING ERRCODE = 'SG002';
    END IF;
  END IF;
END
$fn$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(POSTGRES_BATCH_FUNCTION).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION IF EXISTS saga_log_write(jsonb, jsonb, jsonb)")
                .await?;
        }
        Ok(())
    }
}
