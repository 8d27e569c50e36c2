//! The saga resource of API.md section 3, rendered from the saga log.

use crate::store::{CallRow, OperatorRow, SagaRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

/// The history shown with `include=attempts`: calls and operator actions.
pub struct History {
    /// Every call, in order.
    pub calls: Vec<CallRow>,
    /// Every operator action, in order.
    pub operator: Vec<OperatorRow>,
}

/// The JSON resource; `history` adds `steps[].history` and `operator_actions`.
pub fn saga_json(r: &SagaRecord, history: Option<&History>) -> Value {
    let steps: Vec<Value> = r
        .state
        .steps
        .iter()
        .zip(&r.steps)
        .enumerate()
        .map(|(i, (s, m))| {
            let mut v = json!({
                "name": m.name,
                "status": s.status.as_str(),
                "attempts": s.attempts,
                "compensation_attempts": s.compensation_attempts,
                "last_error": s.last_error,
                "next_attempt_at": opt_time(s.next_attempt_at),
                "updated_at": rfc3339(s.updated_at),
                "phase": s.phase.as_str(),
                "service": m.service,
                "stuck": s.stuck,
            });
            if r.mode == "tcc" {
                v["confirm_attempts"] = json!(s.confirm_attempts);
            }
            if let Some(h) = history {
                v["history"] = h
                    .calls
                    .iter()
                    .filter(|c| c.step == i)
                    .map(|c| {
                        json!({
                            "phase": c.phase,
                            "attempt": c.attempt,
                            "started_at": rfc3339(c.started_at),
                            "finished_at": opt_time(c.finished_at),
                            "http_status": c.http_status,
                            "outcome": c.outcome,
                            "error": c.error,
                        })
                    })
                    .collect();
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "mode": r.mode,
        "status": r.state.status.as_str(),
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "deadline_at": opt_time(r.state.deadline_at),
        "error": r.state.error,
        "steps": steps,
    });
    if let Some(h) = history {
        v["operator_actions"] = h
            .operator
            .iter()
            .map(|o| json!({"action": o.action, "by": o.who, "at": rfc3339(o.at)}))
            .collect();
    }
    v
}
