//! The log writer's multi-row statements. A batch's rows travel as one JSON array in one
//! parameter, which the database unpacks into a relation (`jsonb_each` on SQLite, `JSON_TABLE`
//! on MariaDB/MySQL, `jsonb_array_elements` in PostgreSQL's `saga_log_write` function): whatever
//! the batch size, one statement with one parameter, prepared once per connection, instead of a
//! placeholder per value, a statement per power of two and a CASE per column comparing every
//! row with every branch (docs/benchmarks.md). On MariaDB/MySQL only the calls take the JSON
//! way: an UPDATE joined with a `JSON_TABLE` buffers the new LONGTEXT values in an on-disk
//! temporary table at each execution (slower than the CASEs, measured), and the new sagas keep
//! their multi-row INSERTs (not measured apart from it). On SQLite the three travel in one call
//! ([`batch_sql`]); on PostgreSQL in one call of the function `saga_log_write` (its migration,
//! `m20261207_000011`, unpacks the rows of [`SAGA`], [`TRANSITION`] and [`CALL`] by position).

use super::entities::saga;
use super::writer::{NewSaga, Write};
use super::LogRecord;
use sea_orm::sea_query::{CaseStatement, Condition, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    Statement,
};
use serde::ser::{Serialize, SerializeTuple, Serializer};
use std::sync::OnceLock;

/// The SQL type of a field of a bulk row.
#[derive(Clone, Copy)]
enum Ty {
    /// A key compared with an indexed column (`id`, `owner`).
    Key,
    Text,
    /// JSON text for a JSON column.
    Json,
    BigInt,
    Int,
    Bool,
}

/// The fields of a row, in the order of its JSON array.
type Fields = &'static [(&'static str, Ty)];

/// The relation `v` of `fields` unpacked from the statement's one parameter, with `n`: the
/// row's position in the array (MariaDB/MySQL, or else SQLite).
fn relation(backend: DbBackend, fields: Fields) -> String {
    let cols = fields.iter().enumerate();
    match backend {
        DbBackend::MySql => {
            let cols: Vec<String> = cols
                .map(|(i, (name, ty))| {
                    let ty = match ty {
                        // The table's collation: the join on `id` uses its primary key.
                        Ty::Key => "VARCHAR(128) COLLATE utf8mb4_bin",
                        Ty::Text | Ty::Json => "LONGTEXT COLLATE utf8mb4_bin",
                        Ty::BigInt => "BIGINT",
                        Ty::Int => "INT",
                        Ty::Bool => "BOOLEAN",
                    };
                    format!("{name} {ty} PATH '$[{i}]'")
                })
                .collect();
            format!(
                "JSON_TABLE(?, '$[*]' COLUMNS(n FOR ORDINALITY, {})) AS v",
                cols.join(", ")
            )
        }
        _ => {
            let cols: Vec<String> = cols
                .map(|(i, (name, _))| format!("json_extract(value, '$[{i}]') AS {name}"))
                .collect();
            format!(
                "(SELECT key AS n, {} FROM jsonb_each(?)) AS v",
                cols.join(", ")
            )
        }
    }
}

/// The fields of a transition's row ([`TransitionRow`] writes them in this order).
const TRANSITION: Fields = &[
    ("id", Ty::Key),
    ("version", Ty::BigInt),
    ("owner", Ty::Key),
    ("status", Ty::Text),
    ("steps", Ty::Text),
    ("error", Ty::Text),
    ("next_wake_at", Ty::BigInt),
    ("updated_at", Ty::BigInt),
    ("finished_at", Ty::BigInt),
    ("purge_at", Ty::BigInt),
    ("new_owner", Ty::Key),
    ("deadline_set", Ty::Bool),
    ("deadline_at", Ty::BigInt),
    ("paused_set", Ty::Bool),
    ("paused_at", Ty::BigInt),
    ("definition_set", Ty::Bool),
    ("definition", Ty::Text),
];

/// SQLite: one UPDATE of every transition, each row fenced by its version and owner.
fn update_sql() -> String {
    // Column = value of v; a seldom-changing column keeps its value unless its row sets it.
    let plain = [
        "status",
        "steps",
        "error",
        "next_wake_at",
        "updated_at",
        "finished_at",
        "purge_at",
    ];
    let mut set: Vec<String> = plain.iter().map(|c| format!("{c} = v.{c}")).collect();
    set.push("owner = v.new_owner".into());
    for (col, flag) in [
        ("deadline_at", "deadline_set"),
        ("paused_at", "paused_set"),
        ("definition", "definition_set"),
    ] {
        set.push(format!(
            "{col} = CASE WHEN v.{flag} THEN v.{col} ELSE s.{col} END"
        ));
    }
    set.push("version = s.version + 1".into());
    format!(
        "UPDATE sagas AS s SET {} FROM {} WHERE s.id = v.id AND s.version = v.version AND s.owner = v.owner",
        set.join(", "),
        relation(DbBackend::Sqlite, TRANSITION)
    )
}

/// The fields of a new saga's row ([`SagaRow`] writes them in this order).
const SAGA: Fields = &[
    ("id", Ty::Key),
    ("name", Ty::Text),
    ("mode", Ty::Text),
    ("status", Ty::Text),
    ("request", Ty::Json),
    ("definition", Ty::Text),
    ("step_names", Ty::Text),
    ("steps", Ty::Text),
    ("error", Ty::Text),
    ("deadline_at", Ty::BigInt),
    ("next_wake_at", Ty::BigInt),
    ("created_at", Ty::BigInt),
    ("updated_at", Ty::BigInt),
    ("finished_at", Ty::BigInt),
    ("version", Ty::BigInt),
    ("owner", Ty::Key),
    ("purge_at", Ty::BigInt),
    ("kept", Ty::Bool),
    ("paused_at", Ty::BigInt),
];

/// SQLite: one INSERT of every new saga, the batch's two guards folded into it (the write
/// lock is held from BEGIN, so nothing changes between them): a saga is left out when its lease
/// token is gone or its id is reserved by a tombstone, which [`write_sqlite`]'s count of changed
/// rows shows.
fn insert_sagas_sql() -> String {
    let insert = insert_sql(DbBackend::Sqlite, "sagas", SAGA);
    let order = " ORDER BY v.n";
    let head = insert
        .strip_suffix(order)
        .expect("insert_sql ends with its order");
    format!(
        "{head} WHERE (v.owner IS NULL OR EXISTS (SELECT 1 FROM saga_instances i WHERE i.owner = v.owner)) \
         AND NOT EXISTS (SELECT 1 FROM saga_tombstones t WHERE t.id = v.id){order}"
    )
}

/// The fields of a call's history row ([`CallRow`] writes them in this order).
const CALL: Fields = &[
    ("saga_id", Ty::Key),
    ("step_idx", Ty::Int),
    ("step", Ty::Text),
    ("phase", Ty::Text),
    ("attempt", Ty::Int),
    ("started_at", Ty::BigInt),
    ("finished_at", Ty::BigInt),
    ("http_status", Ty::Int),
    ("outcome", Ty::Text),
    ("error", Ty::Text),
];

/// One INSERT of every call, in the order they came.
fn insert_calls_sql(backend: DbBackend) -> String {
    insert_sql(backend, "saga_calls", CALL)
}

/// One INSERT into `table` of every row of the parameter, in their order.
fn insert_sql(backend: DbBackend, table: &str, fields: Fields) -> String {
    let cols: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let values: Vec<String> = cols.iter().map(|c| format!("v.{c}")).collect();
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {} ORDER BY v.n",
        cols.join(", "),
        values.join(", "),
        relation(backend, fields)
    )
}

static INSERT_CALLS: OnceLock<String> = OnceLock::new();

/// SQLite: a batch's new sagas, transitions and calls as the three statements in one text,
/// with a parameter each (an array, empty when the batch has none of that kind): sqlx runs them
/// in turn on one connection, binding the `?`s in order, and adds up their changes; one hop to
/// SQLite's thread instead of three. See [`write_sqlite`].
fn batch_sql() -> String {
    [
        insert_sagas_sql(),
        update_sql(),
        insert_calls_sql(DbBackend::Sqlite),
    ]
    .join("; ")
}

static BATCH: OnceLock<String> = OnceLock::new();

/// A batch's rows as the three parameters of [`batch_sql`] and of `saga_log_write`, and how
/// many rows they carry.
fn batch_params(
    creates: &[&NewSaga],
    saves: &[&Write],
) -> Result<([sea_orm::Value; 3], u64), DbErr> {
    let sagas: Vec<SagaRow> = creates.iter().map(|c| SagaRow(&c.row)).collect();
    let moves: Vec<TransitionRow> = saves.iter().map(|t| TransitionRow(t)).collect();
    let calls = call_rows(saves);
    let rows = (sagas.len() + moves.len() + calls.len()) as u64;
    Ok(([param(&sagas)?, param(&moves)?, param(&calls)?], rows))
}

/// SQLite: writes a batch's new sagas, transitions and calls with [`batch_sql`]; answers
/// whether every row was written. When not, a guard of [`insert_sagas_sql`] left a new saga
/// out or a transition's fence did not match its row: the writer asks the guards which.
pub(super) async fn write_sqlite(
    txn: &DatabaseTransaction,
    creates: &[&NewSaga],
    saves: &[&Write],
) -> Result<bool, DbErr> {
    let (values, rows) = batch_params(creates, saves)?;
    let sql = BATCH.get_or_init(batch_sql).clone();
    let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
    Ok(txn.execute_raw(stmt).await?.rows_affected() == rows)
}

/// PostgreSQL: writes a batch's new sagas, transitions and calls in one call of
/// `saga_log_write` (on `conn`: the pool, where the call commits itself, or a transaction). Its
/// refusals are errors with their own SQLSTATE, the whole call rolled back: [`LEASE_LOST`],
/// [`PURGED`], [`MOVED`], or a unique violation (an id that exists).
pub(super) async fn write_postgres<C: ConnectionTrait>(
    conn: &C,
    creates: &[&NewSaga],
    saves: &[&Write],
) -> Result<(), DbErr> {
    let (values, _) = batch_params(creates, saves)?;
    let sql = "SELECT saga_log_write($1::jsonb, $2::jsonb, $3::jsonb)";
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// `saga_log_write`'s SQLSTATE when a new saga's lease token has no row.
pub(super) const LEASE_LOST: &str = "SG001";
/// `saga_log_write`'s SQLSTATE when a new saga's id is reserved by a tombstone.
pub(super) const PURGED: &str = "SG002";
/// `saga_log_write`'s SQLSTATE when a transition's version or owner no longer match its row.
pub(super) const MOVED: &str = "SG003";

/// A transition as the JSON array of [`TRANSITION`].
struct TransitionRow<'a>(&'a Write);

impl Serialize for TransitionRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut row = s.serialize_tuple(TRANSITION.len())?;
        row.serialize_element(&t.id)?;
        row.serialize_element(&t.version)?;
        row.serialize_element(&t.owner)?;
        row.serialize_element(t.status.as_str())?;
        row.serialize_element(&t.steps)?;
        row.serialize_element(&t.error)?;
        row.serialize_element(&t.next_wake_at)?;
        row.serialize_element(&t.now)?;
        row.serialize_element(&t.finished_at())?;
        row.serialize_element(&t.purge_at)?;
        row.serialize_element(&t.new_owner())?;
        row.serialize_element(&t.rare.deadline_at.is_some())?;
        row.serialize_element(&t.rare.deadline_at.flatten())?;
        row.serialize_element(&t.rare.paused_at.is_some())?;
        row.serialize_element(&t.rare.paused_at.flatten())?;
        row.serialize_element(&t.definition.is_some())?;
        row.serialize_element(&t.definition)?;
        row.end()
    }
}

/// A new saga's row as the JSON array of [`SAGA`]: the columns of [`rows::new_row`].
struct SagaRow<'a>(&'a saga::ActiveModel);

impl Serialize for SagaRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every column but `lease_until` (NULL for a new saga) is set by `new_row`.
        let m = self.0;
        let mut row = s.serialize_tuple(SAGA.len())?;
        row.serialize_element(m.id.as_ref())?;
        row.serialize_element(m.name.as_ref())?;
        row.serialize_element(m.mode.as_ref())?;
        row.serialize_element(m.status.as_ref())?;
        row.serialize_element(&m.request.as_ref().to_string())?;
        row.serialize_element(m.definition.as_ref())?;
        row.serialize_element(m.step_names.as_ref())?;
        row.serialize_element(m.steps.as_ref())?;
        row.serialize_element(m.error.as_ref())?;
        row.serialize_element(m.deadline_at.as_ref())?;
        row.serialize_element(m.next_wake_at.as_ref())?;
        row.serialize_element(m.created_at.as_ref())?;
        row.serialize_element(m.updated_at.as_ref())?;
        row.serialize_element(m.finished_at.as_ref())?;
        row.serialize_element(m.version.as_ref())?;
        row.serialize_element(m.owner.as_ref())?;
        row.serialize_element(m.purge_at.as_ref())?;
        row.serialize_element(m.kept.as_ref())?;
        row.serialize_element(m.paused_at.as_ref())?;
        row.end()
    }
}

/// MariaDB/MySQL: inserts every saga of `creates` in multi-row INSERTs of power-of-two sizes
/// (see the module's note; SQLite writes its with [`batch_sql`], PostgreSQL with
/// `saga_log_write`).
pub(super) async fn insert_sagas(
    txn: &DatabaseTransaction,
    creates: &[&NewSaga],
) -> Result<(), DbErr> {
    let models = creates.iter().map(|c| c.row.clone()).collect();
    super::writer::insert_chunked(txn, models).await
}

/// A call's history row as the JSON array of [`CALL`].
struct CallRow<'a>(&'a str, &'a str, &'a crate::domain::CallRecord);

impl Serialize for CallRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let CallRow(saga_id, step, r) = *self;
        let mut row = s.serialize_tuple(CALL.len())?;
        row.serialize_element(saga_id)?;
        row.serialize_element(&r.step)?;
        row.serialize_element(step)?;
        row.serialize_element(r.phase.as_str())?;
        row.serialize_element(&r.attempt)?;
        row.serialize_element(&r.started_at)?;
        row.serialize_element(&r.finished_at)?;
        row.serialize_element(&r.http_status)?;
        row.serialize_element(r.outcome.as_str())?;
        row.serialize_element(&r.error)?;
        row.end()
    }
}

/// `rows` as the statement's one parameter.
fn param<T: Serialize>(rows: &[T]) -> Result<sea_orm::Value, DbErr> {
    serde_json::to_string(rows)
        .map(Into::into)
        .map_err(|e| DbErr::Custom(format!("bulk rows: {e}")))
}

/// Most transitions in one CASE UPDATE (MariaDB/MySQL): its CASEs compare every row with every
/// branch, so a statement costs the square of its size (at 256, SQLite spent a fifth of its
/// time there).
const MAX_UPDATE: usize = 32;

/// MariaDB/MySQL: applies every transition in `saves` in CASE UPDATEs (see the module's note);
/// answers how many rows matched (fewer than `saves.len()`: one was fenced off).
pub(super) async fn update(txn: &DatabaseTransaction, saves: &[&Write]) -> Result<u64, DbErr> {
    let mut matched = 0;
    for part in saves.chunks(MAX_UPDATE) {
        matched += update_case(txn, part).await?;
    }
    Ok(matched)
}

/// The call rows of every transition in `saves`, in order.
fn call_rows<'a>(saves: &[&'a Write]) -> Vec<CallRow<'a>> {
    saves
        .iter()
        .flat_map(|t| {
            t.calls.iter().filter_map(|c| match c {
                LogRecord::Call { step_name, record } => Some(CallRow(&t.id, step_name, record)),
                LogRecord::Operator { .. } => None,
            })
        })
        .collect()
}

/// MariaDB/MySQL: inserts the call rows of every transition in `saves` in one INSERT (none if
/// none).
pub(super) async fn insert_calls(txn: &DatabaseTransaction, saves: &[&Write]) -> Result<(), DbErr> {
    let rows = call_rows(saves);
    if !rows.is_empty() {
        let sql = INSERT_CALLS
            .get_or_init(|| insert_calls_sql(DbBackend::MySql))
            .clone();
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            sql,
            [param(&rows)?],
        ))
        .await?;
    }
    Ok(())
}

/// A seldom-changing column's new value in a write, if it changes.
type RareValue = fn(&Write) -> Option<sea_orm::Value>;

/// MariaDB/MySQL: one UPDATE for up to [`MAX_UPDATE`] transitions: each column is a CASE on the saga id, and each row is
/// fenced by its version and owner. Answers how many rows it matched. The list is padded to a power of
/// two with its last transition (a fixed statement shape; a repeated `(id, version)` matches
/// its row once).
async fn update_case(txn: &DatabaseTransaction, part: &[&Write]) -> Result<u64, DbErr> {
    let padded = super::writer::padded(part);
    let saves = &padded[..];
    let case = |col: saga::Column, value: &dyn Fn(&Write) -> sea_orm::Value| -> Expr {
        let mut it = saves.iter();
        let first = it.next().expect("at least one transition");
        let mut c = CaseStatement::new().case(saga::Column::Id.eq(first.id.as_str()), value(first));
        for t in it {
            c = c.case(saga::Column::Id.eq(t.id.as_str()), value(t));
        }
        c.finally(Expr::col(col)).into()
    };
    let fence = saves.iter().fold(Condition::any(), |any, t| {
        any.add(
            Condition::all()
                .add(saga::Column::Id.eq(t.id.as_str()))
                .add(saga::Column::Version.eq(t.version))
                .add(saga::Column::Owner.eq(t.owner.as_str())),
        )
    });
    let mut update = saga::Entity::update_many();
    // A column that seldom changes is in the statement only when one of its rows changes it;
    // the others keep theirs.
    let rare: [(saga::Column, RareValue); 3] = [
        (saga::Column::DeadlineAt, |t| {
            t.rare.deadline_at.map(Into::into)
        }),
        (saga::Column::PausedAt, |t| t.rare.paused_at.map(Into::into)),
        (saga::Column::Definition, |t| {
            t.definition.clone().map(Into::into)
        }),
    ];
    for (col, new) in rare {
        if saves.iter().any(|t| new(t).is_some()) {
            let mut c = CaseStatement::new();
            for t in saves {
                if let Some(v) = new(t) {
                    c = c.case(saga::Column::Id.eq(t.id.as_str()), v);
                }
            }
            update = update.col_expr(col, c.finally(Expr::col(col)).into());
        }
    }
    let res = update
        .col_expr(
            saga::Column::Status,
            case(saga::Column::Status, &|t| t.status.as_str().into()),
        )
        .col_expr(
            saga::Column::Steps,
            case(saga::Column::Steps, &|t| t.steps.clone().into()),
        )
        .col_expr(
            saga::Column::Error,
            case(saga::Column::Error, &|t| t.error.clone().into()),
        )
        .col_expr(
            saga::Column::NextWakeAt,
            case(saga::Column::NextWakeAt, &|t| t.next_wake_at.into()),
        )
        .col_expr(
            saga::Column::UpdatedAt,
            case(saga::Column::UpdatedAt, &|t| t.now.into()),
        )
        .col_expr(
            saga::Column::FinishedAt,
            case(saga::Column::FinishedAt, &|t| t.finished_at().into()),
        )
        .col_expr(
            saga::Column::PurgeAt,
            case(saga::Column::PurgeAt, &|t| t.purge_at.into()),
        )
        .col_expr(
            saga::Column::Owner,
            case(saga::Column::Owner, &|t| {
                t.new_owner().map(str::to_string).into()
            }),
        )
        .col_expr(
            saga::Column::Version,
            Expr::col(saga::Column::Version).add(1),
        )
        .filter(fence)
        .exec(txn)
        .await?;
    Ok(res.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_takes_one_parameter_and_every_field() {
        let statements = [
            (DbBackend::Sqlite, update_sql(), TRANSITION),
            (DbBackend::Sqlite, insert_sagas_sql(), SAGA),
            (DbBackend::Sqlite, insert_calls_sql(DbBackend::Sqlite), CALL),
            (DbBackend::MySql, insert_calls_sql(DbBackend::MySql), CALL),
        ];
        for (backend, sql, fields) in statements {
            assert_eq!(sql.matches('?').count(), 1, "{backend:?}: {sql}");
            let unpacked = match backend {
                DbBackend::MySql => sql.matches(" PATH '$[").count(),
                _ => sql.matches("json_extract(value, '$[").count(),
            };
            assert_eq!(unpacked, fields.len(), "{backend:?}: {sql}");
        }
    }

    #[test]
    fn sqlite_batch_is_the_three_statements_in_order_with_a_parameter_each() {
        let sql = batch_sql();
        let parts: Vec<&str> = sql.split("; ").collect();
        assert_eq!(
            parts,
            [
                insert_sagas_sql(),
                update_sql(),
                insert_calls_sql(DbBackend::Sqlite)
            ],
            "{sql}"
        );
        for part in parts {
            assert_eq!(part.matches('?').count(), 1, "{part}");
        }
    }

    /// The columns an INSERT of `routine` names after `head`, in order.
    fn inserted_columns(routine: &str, head: &str) -> Vec<String> {
        let from = routine.find(head).expect(head) + head.len();
        let to = from + routine[from..].find(')').unwrap();
        routine[from..to]
            .split(',')
            .map(|c| c.trim().to_string())
            .collect()
    }

    #[test]
    fn postgres_function_reads_every_field_where_the_writer_puts_it() {
        let pg = migration::POSTGRES_BATCH_FUNCTION;
        // The new sagas and the calls: INSERTs naming the columns in the order of the arrays,
        // reading `e->>0`, `e->>1`, … in that order.
        for (head, fields) in [
            ("INSERT INTO sagas (", SAGA),
            ("INSERT INTO saga_calls (", CALL),
        ] {
            let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            assert_eq!(inserted_columns(pg, head), names, "{head}");
            let from = pg.find(head).unwrap();
            let select = &pg[from..from + pg[from..].find("FROM jsonb_array_elements").unwrap()];
            let mut at = 0;
            for i in 0..fields.len() {
                let next = select[at..].find(&format!("e->>{i}")).map(|p| at + p);
                at = next.unwrap_or_else(|| panic!("{head}: field {i} not read in order"));
            }
        }
        // A transition: each field where its column is fenced or set.
        let at = |field: &str| TRANSITION.iter().position(|(n, _)| *n == field).unwrap();
        let mut expected: Vec<String> = ["id", "owner", "status", "steps", "error"]
            .iter()
            .map(|c| format!("{c} = r->>{}", at(c)))
            .collect();
        for c in [
            "version",
            "next_wake_at",
            "updated_at",
            "finished_at",
            "purge_at",
        ] {
            expected.push(format!("{c} = (r->>{})::bigint", at(c)));
        }
        expected.push(format!("owner = r->>{},", at("new_owner")));
        for (col, flag) in [
            ("deadline_at", "deadline_set"),
            ("paused_at", "paused_set"),
            ("definition", "definition_set"),
        ] {
            let value = if col == "definition" {
                format!("r->>{}", at(col))
            } else {
                format!("(r->>{})::bigint", at(col))
            };
            expected.push(format!(
                "{col} = CASE WHEN (r->>{})::boolean THEN {value} ELSE {col} END",
                at(flag)
            ));
        }
        for e in expected {
            assert!(pg.contains(&e), "PostgreSQL's function lacks `{e}`");
        }
    }
}
