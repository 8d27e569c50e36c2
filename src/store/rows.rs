//! Row mapping: a saga (state, step names, definition) to and from a `sagas` row, and history
//! records to `saga_calls` / `saga_operator_actions` rows.

use super::entities::{saga, saga_call, saga_operator_action};
use super::{CallRow, LogRecord, OperatorRow, SagaRecord, StepMeta, StoreError};
use crate::domain::{CallOutcome, Phase, SagaDefinition, SagaState, SagaStatus, StepState};
use sea_orm::ActiveValue::{NotSet, Set};
use std::sync::Arc;

/// Prefix of a packed column value: `z1:` and the base64 of the zlib-compressed JSON text.
const PACKED: &str = "z1:";

/// Below this many bytes a column stays plain JSON without trying: zlib's header and checksum
/// and base64's third leave nothing to gain (a start by definition's request, a name and a
/// payload, is usually this short).
const PACK_MIN: usize = 256;

thread_local! {
    /// One compressor per thread, reset between columns: a new one allocates about 230 KB of
    /// state, made twice per new saga when made per column.
    static COMPRESSOR: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), true));
}

/// `bytes` zlib-compressed (header and checksum included) by this thread's compressor.
fn zlib(bytes: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
    COMPRESSOR.with(|z| {
        let mut z = z.borrow_mut();
        z.reset();
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        loop {
            let read = z.total_in() as usize;
            let status = z.compress_vec(&bytes[read..], &mut out, flate2::FlushCompress::Finish)?;
            if status == flate2::Status::StreamEnd {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    })
}

/// `json` packed when that is shorter: the request and the definition are written once and
/// read rarely, and repeat the same URLs and policies (docs/saga-log.md, "Where the bytes go").
fn pack(json: String) -> String {
    use base64::Engine;
    if json.len() < PACK_MIN {
        return json;
    }
    match zlib(json.as_bytes()) {
        Ok(b) if (b.len() * 4).div_ceil(3) + PACKED.len() < json.len() => format!(
            "{PACKED}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
        ),
        _ => json,
    }
}

/// A column value as written by [`pack`] (or as plain JSON text, as older rows hold it).
pub fn unpack(text: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    use base64::Engine;
    use std::io::Read;
    let Some(b64) = text.strip_prefix(PACKED) else {
        return Ok(std::borrow::Cow::Borrowed(text));
    };
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .map_err(|e| format!("packed column: {e}"))?;
    let mut out = String::new();
    flate2::read::ZlibDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .map_err(|e| format!("packed column: {e}"))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// The `definition` column of a definition.
pub(super) fn definition_column(def: &SagaDefinition) -> String {
    pack(def.to_stored())
}

/// The `request` column (a JSON column): the request, or a JSON string holding it packed.
fn request_column(request: &serde_json::Value) -> serde_json::Value {
    let text = request.to_string();
    let packed = pack(text);
    if packed.starts_with(PACKED) {
        serde_json::Value::String(packed)
    } else {
        request.clone()
    }
}

/// A request read back from its column. A request is always an object: a string is packed.
pub(super) fn request_of(column: serde_json::Value) -> Result<serde_json::Value, String> {
    match column {
        serde_json::Value::String(s) if s.starts_with(PACKED) => {
            serde_json::from_str(&unpack(&s)?).map_err(|e| format!("packed request: {e}"))
        }
        other => Ok(other),
    }
}

/// The `steps` column: every step's state, as JSON.
pub(super) fn steps_json(state: &SagaState) -> String {
    // Plain data into a String: cannot fail.
    serde_json::to_string(&state.steps).unwrap_or_default()
}

/// The `sagas` row of a new saga.
pub(super) fn new_row(r: &SagaRecord) -> saga::ActiveModel {
    let st = &r.state;
    saga::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        mode: Set(r.mode.as_str().to_string()),
        status: Set(st.status.as_str().to_string()),
        request: Set(request_column(&r.request)),
        definition: Set(r.definition.as_ref().ok().map(|d| definition_column(d))),
        step_names: Set(Some(serde_json::to_string(&r.steps).unwrap_or_default())),
        steps: Set(Some(steps_json(st))),
        error: Set(st.error.clone()),
        deadline_at: Set(st.deadline_at),
        next_wake_at: Set(st.next_wake()),
        created_at: Set(r.created_at),
        updated_at: Set(r.updated_at),
        finished_at: Set(st.status.is_terminal().then_some(r.updated_at)),
        version: Set(r.version),
        owner: Set(r.owner.clone()),
        lease_until: Set(None),
        purge_at: Set(r.purge_at),
        kept: Set(r.kept),
        paused_at: Set(st.paused_at),
    }
}

/// The columns a listing reads: everything but the request and the definition, which can be
/// large and are not shown.
#[derive(Debug, sea_orm::FromQueryResult)]
pub(super) struct Listed {
    pub id: String,
    pub name: String,
    pub mode: String,
    pub status: String,
    pub step_names: Option<String>,
    pub steps: Option<String>,
    pub error: Option<String>,
    pub deadline_at: Option<i64>,
    pub next_wake_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub owner: Option<String>,
    pub purge_at: Option<i64>,
    pub kept: bool,
    pub paused_at: Option<i64>,
}

/// The columns of [`Listed`], for `select_only`.
pub(super) const LISTED: [saga::Column; 16] = [
    saga::Column::Id,
    saga::Column::Name,
    saga::Column::Mode,
    saga::Column::Status,
    saga::Column::StepNames,
    saga::Column::Steps,
    saga::Column::Error,
    saga::Column::DeadlineAt,
    saga::Column::NextWakeAt,
    saga::Column::CreatedAt,
    saga::Column::UpdatedAt,
    saga::Column::Version,
    saga::Column::Owner,
    saga::Column::PurgeAt,
    saga::Column::Kept,
    saga::Column::PausedAt,
];

/// Reads a whole `sagas` row back.
pub(super) fn record(m: saga::Model) -> Result<SagaRecord, StoreError> {
    let definition = match &m.definition {
        Some(d) => unpack(d)
            .and_then(|d| SagaDefinition::from_stored(&d))
            .map(Arc::new),
        None => Err("no stored definition (written before definitions were stored)".into()),
    };
    let request =
        request_of(m.request).map_err(|e| StoreError::Corrupt(format!("saga {}: {e}", m.id)))?;
    let listed = Listed {
        id: m.id,
        name: m.name,
        mode: m.mode,
        status: m.status,
        step_names: m.step_names,
        steps: m.steps,
        error: m.error,
        deadline_at: m.deadline_at,
        next_wake_at: m.next_wake_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
        version: m.version,
        owner: m.owner,
        purge_at: m.purge_at,
        kept: m.kept,
        paused_at: m.paused_at,
    };
    let mut r = listed_record(listed)?;
    r.request = request;
    r.definition = definition;
    Ok(r)
}

/// Reads a listed row back: request and definition are not loaded.
pub(super) fn listed_record(m: Listed) -> Result<SagaRecord, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("saga {}: {what}", m.id));
    let status = SagaStatus::parse(&m.status).ok_or_else(|| bad("status"))?;
    let mode = m.mode.parse().map_err(|_| bad("mode"))?;
    let steps: Vec<StepState> = serde_json::from_str(m.steps.as_deref().unwrap_or("[]"))
        .map_err(|e| bad(&format!("steps: {e}")))?;
    let metas: Vec<StepMeta> = serde_json::from_str(m.step_names.as_deref().unwrap_or("[]"))
        .map_err(|e| bad(&format!("step_names: {e}")))?;
    if metas.len() != steps.len() {
        return Err(bad("step names and states differ in number"));
    }
    Ok(SagaRecord {
        id: m.id,
        name: m.name,
        mode,
        request: serde_json::Value::Null,
        definition: Err("not loaded by a listing".into()),
        created_at: m.created_at,
        updated_at: m.updated_at,
        version: m.version,
        owner: m.owner,
        purge_at: m.purge_at,
        kept: m.kept,
        steps: metas,
        state: SagaState {
            status,
            error: m.error,
            deadline_at: m.deadline_at,
            steps,
            wake_at: m.next_wake_at,
            paused_at: m.paused_at,
        },
    })
}

/// The row of an operator action (none for a call).
pub(super) fn operator_row(
    saga_id: &str,
    r: &LogRecord,
) -> Option<saga_operator_action::ActiveModel> {
    let LogRecord::Operator {
        action,
        who,
        at,
        detail,
    } = r
    else {
        return None;
    };
    Some(saga_operator_action::ActiveModel {
        id: NotSet,
        saga_id: Set(saga_id.to_string()),
        action: Set(action.as_str().to_string()),
        who: Set(who.chars().take(255).collect()),
        at: Set(*at),
        detail: Set(detail.column()),
    })
}

/// A history row for the API.
pub(super) fn call_from_row(r: saga_call::Model) -> Result<CallRow, StoreError> {
    let bad =
        |what: &str| StoreError::Corrupt(format!("call {} of saga {}: {what}", r.id, r.saga_id));
    let phase = Phase::parse(&r.phase).ok_or_else(|| bad("phase"))?;
    let outcome = match &r.outcome {
        Some(o) => Some(CallOutcome::parse(o).ok_or_else(|| bad("outcome"))?),
        None => None,
    };
    Ok(CallRow {
        step: r.step_idx.max(0) as usize,
        phase,
        attempt: r.attempt.max(0) as u32,
        started_at: r.started_at,
        finished_at: r.finished_at,
        http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
        outcome,
        error: r.error,
    })
}

/// An operator action row for the API.
pub(super) fn operator_from_row(r: saga_operator_action::Model) -> Result<OperatorRow, StoreError> {
    let known = crate::domain::Op::parse(&r.action).is_some()
        || [super::KEEP, super::UNKEEP].contains(&r.action.as_str());
    if !known {
        return Err(StoreError::Corrupt(format!(
            "operator action {} of saga {}: {}",
            r.id, r.saga_id, r.action
        )));
    }
    Ok(OperatorRow {
        detail: super::OperatorDetail::of_column(r.detail.as_deref()),
        action: r.action,
        who: r.who,
        at: r.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_packed_when_shorter_and_read_back_either_way() {
        let request = json!({"name": "order", "steps": (0..3).map(|i| json!({"name": format!("s{i}"),
            "action": {"url": "http://orders.internal:9001/orders/create"},
            "compensation": {"url": "http://orders.internal:9001/orders/cancel"}})).collect::<Vec<_>>()});
        let column = request_column(&request);
        let packed = column.as_str().expect("packed into a JSON string");
        assert!(packed.starts_with(PACKED) && packed.len() < request.to_string().len() / 2);
        assert_eq!(request_of(column.clone()).unwrap(), request);
        // Small or older rows: plain JSON, read as it is.
        let small = json!({"a": 1});
        assert_eq!(request_column(&small), small);
        // Under PACK_MIN bytes nothing is tried, however well it would compress.
        let repetitive = json!({"a": "x".repeat(PACK_MIN - 20)});
        assert_eq!(request_column(&repetitive), repetitive);
        let longer = json!({"a": "x".repeat(PACK_MIN)});
        assert!(
            request_column(&longer).is_string(),
            "packed from PACK_MIN bytes on"
        );
        assert_eq!(request_of(small.clone()).unwrap(), small);
        assert_eq!(unpack("{\"a\":1}").unwrap(), "{\"a\":1}");
        assert!(unpack("z1:!!!").is_err());
    }

    #[test]
    fn one_thread_packs_column_after_column_each_read_back_whole() {
        // The thread's compressor is reused: each column must start a fresh stream, whatever
        // the one before it was (short, long, incompressible).
        let mut seed = 7u64;
        for i in 0..200 {
            let len = [PACK_MIN, 300, 5_000, 70_000][i % 4];
            let text: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Half the columns repeat few letters (packed), half are noise (kept).
                    let span = if i % 2 == 0 { 4 } else { 90 };
                    char::from(b' ' + ((seed >> 33) % span) as u8 + 1)
                })
                .collect();
            let json = serde_json::to_string(&text).unwrap();
            let column = pack(json.clone());
            assert_eq!(
                unpack(&column).unwrap(),
                json,
                "column {i} ({len} characters)"
            );
            assert_eq!(column.starts_with(PACKED), i % 2 == 0, "column {i}");
        }
    }
}
