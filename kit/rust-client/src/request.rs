//! What a start sends (docs/api.md, "Start a saga", "Start by definition"): a full saga, a
//! start of a stored definition, or any JSON document.

use crate::types::Mode;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The body of `POST /v1/sagas`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StartRequest {
    /// A full start: the saga's steps and endpoints.
    Saga(SagaStart),
    /// A start of a stored definition, with this start's id and payload.
    Definition(DefinitionStart),
    /// Any document, sent as it is: for a field this client does not model yet.
    Raw(Value),
}

impl StartRequest {
    /// A full start of a saga named `name` (see [`SagaStart`]'s methods for the rest).
    pub fn saga(name: impl Into<String>, steps: Vec<StepSpec>) -> SagaStart {
        SagaStart::new(name, steps)
    }

    /// A start of the stored definition `name` (see [`DefinitionStart`]'s methods).
    pub fn definition(name: impl Into<String>) -> DefinitionStart {
        DefinitionStart::new(name)
    }

    /// The saga id the request sets itself: only then is resending it after a lost answer
    /// safe (the service answers the repeat with the same saga).
    pub fn id(&self) -> Option<&str> {
        match self {
            StartRequest::Saga(s) => s.id.as_deref(),
            StartRequest::Definition(d) => d.id.as_deref(),
            StartRequest::Raw(v) => v.get("id").and_then(Value::as_str),
        }
    }
}

impl From<SagaStart> for StartRequest {
    fn from(s: SagaStart) -> Self {
        StartRequest::Saga(s)
    }
}

impl From<DefinitionStart> for StartRequest {
    fn from(d: DefinitionStart) -> Self {
        StartRequest::Definition(d)
    }
}

impl From<Value> for StartRequest {
    fn from(v: Value) -> Self {
        StartRequest::Raw(v)
    }
}

/// A full start (schemas `SagaStart` and `TccStart`). Fields left out take the service's
/// `[participant]` defaults when it accepts the saga.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SagaStart {
    /// Saga id (1–128 of `[A-Za-z0-9._:-]`); a UUID v7 when absent. Set it to make the
    /// start safe to repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Kind of saga, a metric label (1–64 of `[A-Za-z0-9_.-]`).
    pub name: String,
    /// saga (default) or tcc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The default body of every call (`{}` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Deadline of the forward phase from creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How long it stays in the log once ended (0 = forever, else ≥ 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// 1–64 steps with distinct names.
    pub steps: Vec<StepSpec>,
}

impl SagaStart {
    /// A saga named `name` with these steps, every other field left to the service.
    pub fn new(name: impl Into<String>, steps: Vec<StepSpec>) -> Self {
        SagaStart {
            name: name.into(),
            steps,
            ..Default::default()
        }
    }

    /// Sets the saga id (makes the start idempotent, and safe to resend).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the mode (tcc needs steps made with [`StepSpec::tcc`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Sets the forward phase's deadline, in ms.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets the retention once ended, in ms (0 = forever).
    pub fn retention_ms(mut self, ms: u64) -> Self {
        self.retention_ms = Some(ms);
        self
    }
}

/// A step of a full start (schemas `SagaStep` and `TccStep`): `action` and `compensation`
/// in saga mode, `try`, `confirm` and `cancel` in tcc mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepSpec {
    /// Unique in the saga (1–64 of `[A-Za-z0-9_.-]`).
    pub name: String,
    /// Saga mode: the forward call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Endpoint>,
    /// Saga mode: its undo (none: nothing to undo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Endpoint>,
    /// TCC: the reservation.
    #[serde(rename = "try", skip_serializing_if = "Option::is_none")]
    pub try_: Option<Endpoint>,
    /// TCC: its confirmation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Endpoint>,
    /// TCC: its cancellation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel: Option<Endpoint>,
    /// Steps that must succeed first; none = the previous step, empty = none (parallel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// Timeout of one call, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy; missing fields come from the service's `[participant]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl StepSpec {
    /// A saga step calling `action`.
    pub fn saga(name: impl Into<String>, action: Endpoint) -> Self {
        StepSpec {
            name: name.into(),
            action: Some(action),
            ..Default::default()
        }
    }

    /// A tcc step.
    pub fn tcc(
        name: impl Into<String>,
        try_: Endpoint,
        confirm: Endpoint,
        cancel: Endpoint,
    ) -> Self {
        StepSpec {
            name: name.into(),
            try_: Some(try_),
            confirm: Some(confirm),
            cancel: Some(cancel),
            ..Default::default()
        }
    }

    /// Sets the compensation.
    pub fn compensation(mut self, e: Endpoint) -> Self {
        self.compensation = Some(e);
        self
    }

    /// Sets the steps that must succeed first (`[]`: none, the step runs at once).
    pub fn depends_on<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the timeout of one call, in ms.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, r: Retry) -> Self {
        self.retry = Some(r);
        self
    }
}

/// A participant endpoint (schemas `Endpoint` and `UndoEndpoint`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Endpoint {
    /// Absolute http(s) URL.
    pub url: String,
    /// GET, POST (default), PUT, PATCH or DELETE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Extra headers. Values are strings in a start; a definition's may be `{"$payload": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Value>>,
    /// Body of the call (default: the payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Compensation or cancel only: durable wait before calling, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Label for metrics and logs (default host:port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Endpoint {
    /// A POST to `url`, with the payload as its body.
    pub fn new(url: impl Into<String>) -> Self {
        Endpoint {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Sets the method.
    pub fn method(mut self, m: impl Into<String>) -> Self {
        self.method = Some(m.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(name.into(), value.into());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets the delay before an undo call, in ms.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    /// Sets the service label.
    pub fn service(mut self, s: impl Into<String>) -> Self {
        self.service = Some(s.into());
        self
    }
}

/// A step's retry policy (schema `Retry`); each field left out comes from `[participant]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retry {
    /// Calls per phase, the first included (1–1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wait before the second call, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between calls, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Growth of the wait (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
}

/// A start of a stored definition (schema `DefinitionStart`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DefinitionStart {
    /// The definition's name.
    pub definition: String,
    /// The version to run; none: the newest that is not retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Saga id; set it to make the start safe to resend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The payload: default body of every call, and the values of `$payload` references.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl DefinitionStart {
    /// A start of the newest live version of `name`.
    pub fn new(name: impl Into<String>) -> Self {
        DefinitionStart {
            definition: name.into(),
            ..Default::default()
        }
    }

    /// Pins a version.
    pub fn version(mut self, v: u32) -> Self {
        self.version = Some(v);
        self
    }

    /// Sets the saga id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_serialize_as_the_api_reads_them() {
        let r: StartRequest = StartRequest::saga(
            "place_order",
            vec![
                StepSpec::saga("a", Endpoint::new("http://h/a").header("x-t", "1"))
                    .compensation(Endpoint::new("http://h/ua").delay_ms(5))
                    .depends_on(Vec::<String>::new()),
                StepSpec::tcc(
                    "b",
                    Endpoint::new("http://h/t"),
                    Endpoint::new("http://h/c"),
                    Endpoint::new("http://h/x"),
                ),
            ],
        )
        .id("o-1")
        .into();
        assert_eq!(r.id(), Some("o-1"));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"id": "o-1", "name": "place_order", "steps": [
                {"name": "a", "action": {"url": "http://h/a", "headers": {"x-t": "1"}},
                 "compensation": {"url": "http://h/ua", "delay_ms": 5}, "depends_on": []},
                {"name": "b", "try": {"url": "http://h/t"}, "confirm": {"url": "http://h/c"},
                 "cancel": {"url": "http://h/x"}}]})
        );
        let d: StartRequest = StartRequest::definition("p").version(2).into();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"definition": "p", "version": 2})
        );
        assert_eq!(d.id(), None);
        let raw = StartRequest::from(json!({"id": "x", "definition": "p"}));
        assert_eq!(raw.id(), Some("x"));
    }
}
