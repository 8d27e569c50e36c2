//! One participant call as the orchestrator sends it: the saga headers, parsed and checked.

use crate::reply::Reply;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The phase of a call (`X-Saga-Phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A saga step's forward call.
    Action,
    /// Its undo.
    Compensation,
    /// TCC: reserve.
    Try,
    /// TCC: make the reservation final.
    Confirm,
    /// TCC: release the reservation.
    Cancel,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
            Phase::Try => "try",
            Phase::Confirm => "confirm",
            Phase::Cancel => "cancel",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Action,
            Phase::Compensation,
            Phase::Try,
            Phase::Confirm,
            Phase::Cancel,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// A forward call (action or try): the only phases that may answer 409.
    pub fn is_forward(self) -> bool {
        matches!(self, Phase::Action | Phase::Try)
    }

    /// The call whose row this one locks first: a compensation's action, a cancel's or
    /// confirm's try.
    pub fn origin(self) -> Phase {
        match self {
            Phase::Compensation => Phase::Action,
            Phase::Confirm | Phase::Cancel => Phase::Try,
            p => p,
        }
    }
}

/// Longest saga id, step name and part the barrier table holds (docs/barrier.md).
pub const MAX_SAGA_ID: usize = 128;
/// Longest step name.
pub const MAX_STEP: usize = 64;
/// Longest part name.
pub const MAX_PART: usize = 32;

/// One call: who it is for and what it carries.
#[derive(Debug, Clone)]
pub struct SagaCall {
    /// `X-Saga-Id`.
    pub saga_id: String,
    /// `X-Saga-Step`.
    pub step: String,
    /// `X-Saga-Phase`.
    pub phase: Phase,
    /// `X-Saga-Attempt` (1 when absent).
    pub attempt: u32,
    /// `X-Saga-Created-At`: when the orchestrator accepted the saga.
    pub created_at: DateTime<Utc>,
    /// The request body.
    pub body: Vec<u8>,
    /// Which barrier of the handler this is (one per database it changes); "" for one.
    pub part: String,
}

impl SagaCall {
    /// Parses the saga headers; a missing or inconsistent one is a 400 reply.
    pub fn from_parts(headers: &HeaderMap, body: Vec<u8>) -> Result<SagaCall, Reply> {
        let get = |name: &str| -> Result<String, Reply> {
            match headers.get(name).map(|v| v.to_str()) {
                Some(Ok(v)) if !v.is_empty() => Ok(v.to_string()),
                Some(_) => Err(Reply::bad_request(format!("header {name} is not valid"))),
                None => Err(Reply::bad_request(format!("header {name} is missing"))),
            }
        };
        let saga_id = get("x-saga-id")?;
        let step = get("x-saga-step")?;
        let phase_text = get("x-saga-phase")?;
        let phase = Phase::parse(&phase_text).ok_or_else(|| {
            Reply::bad_request(format!("X-Saga-Phase {phase_text:?} is not a phase"))
        })?;
        // The orchestrator's own id rules; they also keep `/` out of the Idempotency-Key.
        let id_like = |s: &str, max: usize| {
            s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        };
        if !id_like(&saga_id, MAX_SAGA_ID) || !id_like(&step, MAX_STEP) {
            return Err(Reply::bad_request(format!(
                "X-Saga-Id (at most {MAX_SAGA_ID}) and X-Saga-Step (at most {MAX_STEP}) are \
                 made of [A-Za-z0-9._:-]"
            )));
        }
        let created = get("x-saga-created-at")?;
        let created_at = DateTime::parse_from_rfc3339(&created)
            .map_err(|e| {
                Reply::bad_request(format!(
                    "X-Saga-Created-At {created:?} is not RFC 3339: {e}"
                ))
            })?
            .with_timezone(&Utc);
        if created_at > Utc::now() + chrono::TimeDelta::hours(1) {
            // Such rows would never age out, and the retention refusal would never apply.
            return Err(Reply::bad_request(format!(
                "X-Saga-Created-At {created:?} is more than an hour in the future"
            )));
        }
        let key = get("idempotency-key")?;
        let want = format!("{saga_id}/{step}/{}", phase.as_str());
        if key != want {
            return Err(Reply::bad_request(format!(
                "Idempotency-Key {key:?} is not {want:?} (saga id/step/phase)"
            )));
        }
        let attempt = match headers.get("x-saga-attempt").map(|v| v.to_str()) {
            None => 1,
            Some(Ok(a)) => a
                .parse()
                .map_err(|_| Reply::bad_request(format!("X-Saga-Attempt {a:?} is not a number")))?,
            Some(Err(_)) => return Err(Reply::bad_request("X-Saga-Attempt is not valid")),
        };
        Ok(SagaCall {
            saga_id,
            step,
            phase,
            attempt,
            created_at,
            body,
            part: String::new(),
        })
    }

    /// The same call guarding another database of the same handler (see docs/barrier.md).
    pub fn part(&self, part: &str) -> Result<SagaCall, Reply> {
        if part.len() > MAX_PART {
            return Err(Reply::bad_request(format!(
                "a part is at most {MAX_PART} bytes"
            )));
        }
        Ok(SagaCall {
            part: part.to_string(),
            ..self.clone()
        })
    }

    /// The body as JSON of type `T`; a body that does not fit is a 400 reply.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Reply> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Reply::bad_request(format!("the body is not what this step takes: {e}")))
    }

    /// SHA-256 of the body, hex: a key reused for another request is caught by it.
    pub fn body_sha256(&self) -> String {
        Sha256::digest(&self.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
