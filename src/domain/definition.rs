//! What a saga is made of once its request has been validated: steps, endpoints, retry policies.

use super::limits::{MAX_ATTEMPTS, MAX_DURATION_MS, MULTIPLIER_RANGE};
use super::protocol::Protocol;
use super::retention::Retention;
use super::trace::TraceContext;
use serde::{Deserialize, Serialize};
use serde_json::Value;

wire_enum! {
/// Whether the saga runs compensations (saga) or try/confirm/cancel (tcc).
pub enum Mode {
    /// Actions with compensations.
    Saga,
    /// Try, then confirm all or cancel.
    Tcc,
}
}

/// A participant endpoint the orchestrator calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Absolute http(s) URL.
    pub url: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Request body; `None` sends the saga payload (stored once, not once per endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A body sent as these exact bytes instead (DTM's payloads, which are JSON documents
    /// encoded as strings and must reach the participant as they were given); empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// Durable wait before the call (compensation and cancel only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// Label for metrics and logs (host:port by default).
    pub service: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The service label of an endpoint that names none: `host:port` of its URL.
pub fn default_service(url: &url::Url) -> String {
    match url.port_or_known_default() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    }
}

fn is_native(p: &Protocol) -> bool {
    *p == Protocol::Native
}

/// What a call sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallBody<'a> {
    /// A JSON document, serialised.
    Json(&'a Value),
    /// These exact bytes (none when empty).
    Raw(&'a str),
}

/// Retry policy of one phase of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Calls allowed in the phase, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of any wait.
    pub max_backoff_ms: u64,
    /// Growth factor of the wait per retry.
    pub multiplier: f64,
}

impl RetryPolicy {
    /// Each field out of its range: its name, the range in words and the value, e.g.
    /// `("max_attempts", "from 1 to 1000", "0")`. A request's retry and the configured defaults
    /// are held to the same ranges.
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            let range = format!("from 1 to {MAX_ATTEMPTS}");
            out.push(("max_attempts", range, self.max_attempts.to_string()));
        }
        if self.initial_backoff_ms > MAX_DURATION_MS {
            let range = format!("from 0 to {MAX_DURATION_MS}");
            out.push((
                "initial_backoff_ms",
                range,
                self.initial_backoff_ms.to_string(),
            ));
        }
        let floor = self.initial_backoff_ms.min(MAX_DURATION_MS);
        if !(floor..=MAX_DURATION_MS).contains(&self.max_backoff_ms) {
            let range = format!("from initial_backoff_ms ({floor}) to {MAX_DURATION_MS}");
            out.push(("max_backoff_ms", range, self.max_backoff_ms.to_string()));
        }
        if !MULTIPLIER_RANGE.contains(&self.multiplier) {
            let (lo, hi) = (MULTIPLIER_RANGE.start(), MULTIPLIER_RANGE.end());
            let range = format!("from {lo:.1} to {hi:.1}");
            out.push(("multiplier", range, self.multiplier.to_string()));
        }
        out
    }

    /// The wait before call `calls_made + 1`, before jitter: `min(max, initial × multiplier^(n−1))`.
    pub fn backoff_ms(&self, calls_made: u32) -> u64 {
        let exp = calls_made.saturating_sub(1).min(1024) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exp);
        if !raw.is_finite() || raw >= self.max_backoff_ms as f64 {
            self.max_backoff_ms
        } else {
            raw as u64
        }
    }

    /// The wait scaled by a jitter factor, which is clamped into [0.5, 1.0].
    pub fn jittered_backoff_ms(&self, calls_made: u32, jitter: f64) -> u64 {
        let j = if jitter.is_finite() {
            jitter.clamp(0.5, 1.0)
        } else {
            1.0
        };
        (self.backoff_ms(calls_made) as f64 * j) as u64
    }
}

/// Defaults from configuration that a request may leave out.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Timeout of one participant call.
    pub call_timeout_ms: u64,
    /// Retry policy of every phase.
    pub retry: RetryPolicy,
    /// How long ended sagas stay in the log.
    pub retention: super::retention::RetentionRules,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            call_timeout_ms: 10_000,
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff_ms: 200,
                max_backoff_ms: 30_000,
                multiplier: 2.0,
            },
            retention: Default::default(),
        }
    }
}

/// One step of a saga, resolved against the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Unique name within the saga.
    pub name: String,
    /// Saga action, or tcc try.
    pub forward: Endpoint,
    /// Saga compensation (optional), or tcc cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Endpoint>,
    /// Tcc confirm; `None` in saga mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Endpoint>,
    /// Indices of the steps that must succeed first.
    #[serde(default)]
    pub deps: Vec<usize>,
    /// Timeout of one call.
    pub timeout_ms: u64,
    /// Retry policy of every phase of this step.
    pub retry: RetryPolicy,
}

impl StepDef {
    /// The endpoint a call of `phase` goes to (none: an undo the step does not have).
    pub fn endpoint(&self, phase: crate::domain::Phase) -> Option<&Endpoint> {
        use crate::domain::Phase;
        match phase {
            Phase::Action | Phase::Try => Some(&self.forward),
            Phase::Compensation | Phase::Cancel => self.undo.as_ref(),
            Phase::Confirm => self.confirm.as_ref(),
        }
    }
}

/// A validated saga, every default resolved: the unit the state machine runs.
///
/// It is stored with the saga when the saga is accepted (see [`SagaDefinition::to_stored`]) and
/// loaded from there, so a saga runs with the settings it was accepted with, whatever the
/// configuration says later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDefinition {
    /// Client-chosen id, if any (not stored: the saga row has it).
    #[serde(skip)]
    pub id: Option<String>,
    /// Kind of saga, a metric label.
    pub name: String,
    /// Saga or tcc.
    pub mode: Mode,
    /// Default body of every call.
    pub payload: Value,
    /// Deadline of the forward phase, from creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The steps, in request order.
    pub steps: Vec<StepDef>,
    /// How its participants speak (native, or DTM's protocol): what an answer means, what is
    /// undone, how retries wait.
    #[serde(default, skip_serializing_if = "is_native")]
    pub protocol: Protocol,
    /// It starts prepared: its client registers branches (DTM's TCC) and submits or aborts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepared: bool,
    /// Its first step asks its client whether it committed (DTM's msg `query_prepared`): called
    /// only when the saga is still prepared at its deadline; a submit stands for its success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_first: bool,
    /// Every action must succeed in the end (DTM's msg): a refusal is retried like an error,
    /// without limit; nothing is undone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deliver: bool,
    /// How long it stays in the log once ended, resolved when it was accepted; sagas accepted
    /// before retention existed stay forever.
    #[serde(default = "forever", skip_serializing_if = "Retention::is_forever")]
    pub retention: Retention,
    /// The trace its calls belong to (W3C trace context), from its start's `traceparent` or
    /// new; none for sagas accepted before it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// The stored definition and version it was started from (docs/api.md, "Definitions");
    /// none for a full start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<super::catalog::DefinitionRef>,
    /// For each step, the steps that depend on it: computed on first use (every event needs
    /// it), never stored.
    #[serde(skip)]
    dependents: Derived<Vec<Vec<usize>>>,
}

/// A value derived from the rest of a struct, computed once on first use; it takes no part in
/// comparisons (two equal definitions are equal whether or not it was computed yet).
#[derive(Debug, Clone, Default)]
struct Derived<T>(std::sync::OnceLock<T>);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn forever() -> Retention {
    Retention::FOREVER
}

/// Version tag of the stored definition format, so that a later format can tell old rows apart:
/// 1 spelt every field out; 2 leaves out what can be told from the rest ([`stored`]).
const STORED_FORMAT: u32 = 2;

#[derive(Serialize)]
struct StoredRef<'a> {
    format: u32,
    #[serde(flatten)]
    def: &'a SagaDefinition,
}

impl SagaDefinition {
    /// A definition of these parts (validated by the caller).
    pub fn new(
        id: Option<String>,
        name: String,
        mode: Mode,
        payload: Value,
        timeout_ms: Option<u64>,
        steps: Vec<StepDef>,
    ) -> Self {
        SagaDefinition {
            id,
            name,
            mode,
            payload,
            timeout_ms,
            steps,
            protocol: Protocol::Native,
            prepared: false,
            check_first: false,
            deliver: false,
            retention: Retention::FOREVER,
            trace: None,
            origin: None,
            dependents: Derived::default(),
        }
    }

    /// Whether step `i` asks the client whether it committed (see [`Self::check_first`]).
    pub fn is_check(&self, i: usize) -> bool {
        self.check_first && i == 0
    }

    /// Whether step `i`'s action must succeed in the end (see [`Self::deliver`]).
    pub fn must_deliver(&self, i: usize) -> bool {
        self.deliver && !self.is_check(i)
    }

    /// This definition with one more step (a branch its client registered).
    pub fn with_step(&self, step: StepDef) -> SagaDefinition {
        let mut d = self.clone();
        d.steps.push(step);
        d.dependents = Derived::default();
        d
    }

    /// Every endpoint of every step.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.steps.iter().flat_map(|s| {
            std::iter::once(&s.forward)
                .chain(s.undo.as_ref())
                .chain(s.confirm.as_ref())
        })
    }

    /// Every endpoint of every step, to rewrite (say, to seal header values for storage).
    pub fn endpoints_mut(&mut self) -> impl Iterator<Item = &mut Endpoint> {
        self.steps.iter_mut().flat_map(|s| {
            std::iter::once(&mut s.forward)
                .chain(s.undo.as_mut())
                .chain(s.confirm.as_mut())
        })
    }

    /// The stored form: JSON of the resolved definition, tagged with its format version.
    pub fn to_stored(&self) -> String {
        let stored = StoredRef {
            format: STORED_FORMAT,
            def: self,
        };
        // Serialising plain data cannot fail.
        let mut v = serde_json::to_value(&stored).unwrap_or_default();
        stored::compact(&mut v);
        v.to_string()
    }

    /// Reads the stored form back (format 1 or 2); the error says why it cannot be used.
    pub fn from_stored(s: &str) -> Result<SagaDefinition, String> {
        let unreadable = |e: serde_json::Error| format!("stored definition unreadable: {e}");
        let mut v: Value = serde_json::from_str(s).map_err(unreadable)?;
        match v.get("format").and_then(Value::as_u64) {
            Some(1) => {}
            Some(2) => stored::expand(&mut v),
            other => {
                return Err(format!(
                    "stored definition has format {}, this version reads 1 and {STORED_FORMAT}",
                    other.map_or("none".into(), |f| f.to_string())
                ))
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("format");
        }
        let def: SagaDefinition = serde_json::from_value(v).map_err(unreadable)?;
        let n = def.steps.len();
        // Only a prepared saga may have no steps yet (its client registers them).
        if (n == 0 && !def.prepared) || def.steps.iter().flat_map(|s| &s.deps).any(|&d| d >= n) {
            return Err("stored definition has no steps or a dependency out of range".into());
        }
        Ok(def)
    }

    /// The body a call to `endpoint` sends: its own, or the saga payload.
    pub fn body_of<'a>(&'a self, endpoint: &'a Endpoint) -> &'a Value {
        endpoint.body.as_ref().unwrap_or(&self.payload)
    }

    /// What a call to `endpoint` sends: its exact bytes if it has them, else [`Self::body_of`].
    pub fn call_body<'a>(&'a self, endpoint: &'a Endpoint) -> CallBody<'a> {
        match &endpoint.raw_body {
            Some(raw) => CallBody::Raw(raw),
            None => CallBody::Json(self.body_of(endpoint)),
        }
    }

    /// For each step, the indices of the steps that depend on it (computed once: change no
    /// step's `deps` after the first call).
    pub fn dependents(&self) -> &[Vec<usize>] {
        self.dependents.0.get_or_init(|| {
            let mut out = vec![Vec::new(); self.steps.len()];
            for (i, s) in self.steps.iter().enumerate() {
                for &d in &s.deps {
                    out[d].push(i);
                }
            }
            out
        })
    }
}

/// Format 2 of the stored definition: what every saga of a kind repeats is left out of each
/// step (docs/saga-log.md, "Where the bytes go"), and put back on reading.
///
/// Left out: a step's `timeout_ms` and `retry` when they are the saga's most common pair (stored
/// once, as `step`); `deps` when they are the default (the step before); an endpoint's `method`
/// when POST and its `service` when the URL's `host:port`.
mod stored {
    use serde_json::{json, Map, Value};

    const ENDPOINTS: [&str; 3] = ["forward", "undo", "confirm"];

    fn default_deps(i: usize) -> Value {
        if i == 0 {
            json!([])
        } else {
            json!([i - 1])
        }
    }

    fn policy(step: &Map<String, Value>) -> Value {
        json!([step.get("timeout_ms"), step.get("retry")])
    }

    /// Format 1's JSON (every field) into format 2's.
    pub(super) fn compact(v: &mut Value) {
        let Some(steps) = v.get_mut("steps").and_then(Value::as_array_mut) else {
            return;
        };
        let mut counts: Vec<(Value, usize)> = Vec::new();
        for s in steps.iter().filter_map(Value::as_object) {
            let p = policy(s);
            match counts.iter_mut().find(|(k, _)| *k == p) {
                Some(c) => c.1 += 1,
                None => counts.push((p, 1)),
            }
        }
        let common = counts.into_iter().max_by_key(|c| c.1).map(|c| c.0);
        for (i, s) in steps.iter_mut().enumerate() {
            let Some(o) = s.as_object_mut() else { continue };
            if common.as_ref() == Some(&policy(o)) {
                o.remove("timeout_ms");
                o.remove("retry");
            }
            if o.get("deps") == Some(&default_deps(i)) {
                o.remove("deps");
            }
            for e in ENDPOINTS {
                if let Some(ep) = o.get_mut(e).and_then(Value::as_object_mut) {
                    if ep.get("method").and_then(Value::as_str) == Some("POST") {
                        ep.remove("method");
                    }
                    let implied = ep
                        .get("url")
                        .and_then(Value::as_str)
                        .and_then(|u| url::Url::parse(u).ok())
                        .map(|u| super::default_service(&u));
                    if implied.is_some()
                        && ep.get("service").and_then(Value::as_str) == implied.as_deref()
                    {
                        ep.remove("service");
                    }
                }
            }
        }
        if let Some(c) = common {
            v["step"] = json!({"timeout_ms": c[0], "retry": c[1]});
        }
    }

    /// Format 2's JSON back into format 1's.
    pub(super) fn expand(v: &mut Value) {
        let common = v.as_object_mut().and_then(|o| o.remove("step"));
        let Some(steps) = v.get_mut("steps").and_then(Value::as_array_mut) else {
            return;
        };
        for (i, s) in steps.iter_mut().enumerate() {
            let Some(o) = s.as_object_mut() else { continue };
            if let Some(c) = &common {
                for k in ["timeout_ms", "retry"] {
                    if !o.contains_key(k) {
                        o.insert(k.into(), c[k].clone());
                    }
                }
            }
            o.entry("deps").or_insert_with(|| default_deps(i));
            for e in ENDPOINTS {
                if let Some(ep) = o.get_mut(e).and_then(Value::as_object_mut) {
                    ep.entry("method").or_insert_with(|| json!("POST"));
                    if !ep.contains_key("service") {
                        let implied = ep
                            .get("url")
                            .and_then(Value::as_str)
                            .and_then(|u| url::Url::parse(u).ok())
                            .map(|u| super::default_service(&u))
                            .unwrap_or_default();
                        ep.insert("service".into(), json!(implied));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::parse_request;
    use serde_json::json;

    fn def(steps: Value) -> SagaDefinition {
        parse_request(&json!({"name": "n", "steps": steps}), &Defaults::default()).expect("valid")
    }

    #[test]
    fn the_stored_form_leaves_out_what_the_rest_tells_and_reads_back_whole() {
        let d = def(json!([
            {"name": "a", "action": {"url": "http://127.0.0.1:9/a"}, "compensation": {"url": "https://pay.example/c"}},
            {"name": "b", "action": {"url": "http://127.0.0.1:9/b", "method": "PUT", "service": "stock"}, "timeout_ms": 5},
            {"name": "c", "action": {"url": "http://127.0.0.1:9/c"}, "depends_on": []},
            {"name": "d", "action": {"url": "http://127.0.0.1:9/d"}, "depends_on": ["a", "c"],
             "retry": {"max_attempts": 2}}
        ]));
        let s = d.to_stored();
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["format"], 2);
        assert_eq!(v["step"]["timeout_ms"], 10_000, "{s}");
        let a = &v["steps"][0];
        assert!(
            a.get("timeout_ms").is_none() && a.get("deps").is_none(),
            "{s}"
        );
        assert!(a["forward"].get("method").is_none() && a["forward"].get("service").is_none());
        assert_eq!(v["steps"][1]["forward"]["method"], "PUT");
        assert_eq!(v["steps"][1]["forward"]["service"], "stock");
        assert_eq!(v["steps"][1]["timeout_ms"], 5);
        assert_eq!(v["steps"][2]["deps"], json!([]));
        assert_eq!(v["steps"][3]["retry"]["max_attempts"], 2);
        assert_eq!(SagaDefinition::from_stored(&s).unwrap(), d);
    }

    #[test]
    fn format_1_rows_still_read() {
        let d = def(json!([{"name": "a", "action": {"url": "http://127.0.0.1:9/a"}}]));
        let one = serde_json::to_string(&StoredRef { format: 1, def: &d }).unwrap();
        assert_eq!(SagaDefinition::from_stored(&one).unwrap(), d);
        assert!(
            SagaDefinition::from_stored(&one.replace("\"format\":1", "\"format\":3"))
                .unwrap_err()
                .contains("format 3")
        );
    }
}
