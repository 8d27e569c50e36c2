//! Turns a start request (raw JSON) into a [`SagaDefinition`], and a bulk operator action's body
//! into its saga ids, or lists every invalid field.
//!
//! The request is walked as a `serde_json::Value` rather than deserialised into structs so that
//! one answer can name every problem with a JSON Pointer, as the contract asks.

use super::definition::{Defaults, Endpoint, Mode, RetryPolicy, SagaDefinition, StepDef};
use super::limits::{
    NameRule, MAX_BULK_IDS, MAX_DURATION_MS, MAX_HEADERS, MAX_HEADER_VALUE_LEN, MAX_JSON_DEPTH,
    MAX_REASON, MAX_STEPS, MAX_URL_LEN, METHODS, NAME, SAGA_ID, SERVICE,
};
use super::retention;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// One invalid field: where (RFC 6901 pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON Pointer into the request body.
    pub pointer: String,
    /// What is wrong, for a person.
    pub detail: String,
}

/// How deep arrays and objects nest in `v` (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_depth(v: &Value, at: &str, errs: &mut Errors) {
    if depth(v) > MAX_JSON_DEPTH {
        errs.push(
            at,
            format!("nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
        );
    }
}

const TOP_KEYS: &[&str] = &[
    "id",
    "name",
    "mode",
    "payload",
    "timeout_ms",
    "retention_ms",
    "steps",
];
const STEP_KEYS: &[&str] = &[
    "name",
    "action",
    "compensation",
    "try",
    "confirm",
    "cancel",
    "depends_on",
    "timeout_ms",
    "retry",
];
const ENDPOINT_KEYS: &[&str] = &["url", "method", "headers", "body", "delay_ms", "service"];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "initial_backoff_ms",
    "max_backoff_ms",
    "multiplier",
];

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        });
    }
}

/// Escapes one reference token of a JSON Pointer.
pub(super) fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// "must be" and the rule in words.
fn must_be(rule: &NameRule) -> String {
    format!("must be {}", rule.describe())
}

fn unknown_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str, errs: &mut Errors) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            errs.push(
                format!("{at}/{}", token(k)),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            );
        }
    }
}

fn duration(v: Option<&Value>, at: &str, min: u64, errs: &mut Errors) -> Option<u64> {
    let v = v?;
    match v.as_u64() {
        Some(n) if n >= min && n <= MAX_DURATION_MS => Some(n),
        _ => {
            errs.push(
                at,
                format!(
                    "must be an integer number of milliseconds from {min} to {MAX_DURATION_MS}"
                ),
            );
            None
        }
    }
}

/// An operator's `reason`: a non-blank string of at most [`MAX_REASON`] characters;
/// `required`: skip and edits must say why.
fn reason_field(obj: &Map<String, Value>, required: bool, errs: &mut Errors) -> Option<String> {
    match obj.get("reason") {
        None if required => {
            errs.push(
                "/reason",
                "required: why (kept in the saga's operator actions)",
            );
            None
        }
        None => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            errs.push("/reason", "must say why, or be left out");
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_REASON => {
            errs.push("/reason", format!("at most {MAX_REASON} characters"));
            None
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            errs.push("/reason", "must be a string");
            None
        }
    }
}

/// The body of an operator action on one saga: none, or `{"reason": "…"}`; `required`: the
/// action must say why (skip).
pub fn parse_operator_body(
    body: Option<&Value>,
    required: bool,
) -> Result<Option<String>, Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let empty = Map::new();
    let obj = match body {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => {
            errs.push("", "the request body must be a JSON object, or empty");
            return Err(errs.0);
        }
    };
    unknown_keys(obj, &["reason"], "", &mut errs);
    let reason = reason_field(obj, required, &mut errs);
    if errs.0.is_empty() {
        Ok(reason)
    } else {
        Err(errs.0)
    }
}

/// A step edited by an operator (`PATCH /v1/sagas/{id}/steps/{step}`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepEdit {
    /// Why (required).
    pub reason: String,
    /// The endpoint fields that change, as given (`{"action": {"url": …}}`), to carry to the
    /// instance that drives the saga.
    pub fields: Value,
    /// The definition with the step's endpoints changed.
    pub def: SagaDefinition,
    /// The phases whose endpoint changed, each with its endpoint before and after.
    pub changed: Vec<(super::Phase, Endpoint, Endpoint)>,
}

/// The fields of an endpoint an edit may change.
const EDIT_KEYS: &[&str] = &["url", "headers", "body"];

/// An endpoint as a start request would give it, so that an edit is validated as a start is.
fn endpoint_json(e: &Endpoint, undo: bool) -> Value {
    let mut o = Map::new();
    o.insert("url".into(), Value::String(e.url.clone()));
    o.insert("method".into(), Value::String(e.method.clone()));
    let h: Map<String, Value> = e
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    o.insert("headers".into(), Value::Object(h));
    if let Some(b) = &e.body {
        o.insert("body".into(), b.clone());
    }
    if undo && e.delay_ms > 0 {
        o.insert("delay_ms".into(), e.delay_ms.into());
    }
    // A label the start named stays; a default one follows the URL.
    let default = url::Url::parse(&e.url)
        .map(|u| super::definition::default_service(&u))
        .unwrap_or_default();
    if e.service != default {
        o.insert("service".into(), Value::String(e.service.clone()));
    }
    Value::Object(o)
}

/// Parses an edit of step `step` of `def`: `{"reason": "…", "action": {"url": …, "headers":
/// {…}, "body": …}, …}` (the phases of the saga's mode; `url`, `headers` and `body` only, each
/// replacing the old value), validated as a start's endpoint is.
pub fn parse_step_edit(
    body: &Value,
    def: &SagaDefinition,
    step: usize,
) -> Result<StepEdit, Vec<FieldError>> {
    use super::Phase;
    let mut errs = Errors(Vec::new());
    let Some(obj) = body.as_object() else {
        errs.push("", "the request body must be a JSON object");
        return Err(errs.0);
    };
    let Some(s) = def.steps.get(step) else {
        errs.push("", "no such step");
        return Err(errs.0);
    };
    let phases: &[(&str, Phase)] = match def.mode {
        Mode::Saga => &[
            ("action", Phase::Action),
            ("compensation", Phase::Compensation),
        ],
        Mode::Tcc => &[
            ("try", Phase::Try),
            ("confirm", Phase::Confirm),
            ("cancel", Phase::Cancel),
        ],
    };
    let mut allowed: Vec<&str> = phases.iter().map(|p| p.0).collect();
    allowed.push("reason");
    unknown_keys(obj, &allowed, "", &mut errs);
    let reason = reason_field(obj, true, &mut errs);
    let mut new = def.clone();
    let mut changed = vec![];
    let mut fields = Map::new();
    for &(key, phase) in phases {
        let Some(given) = obj.get(key) else { continue };
        let at = format!("/{key}");
        let Some(g) = given.as_object().filter(|g| !g.is_empty()) else {
            errs.push(
                &at,
                "must be an object of the fields that change: url, headers, body",
            );
            continue;
        };
        unknown_keys(g, EDIT_KEYS, &at, &mut errs);
        let Some(old) = s.endpoint(phase) else {
            errs.push(&at, format!("step {:?} has no {key}", s.name));
            continue;
        };
        let undo = matches!(phase, Phase::Compensation | Phase::Cancel);
        let mut merged = endpoint_json(old, undo);
        for (k, v) in g.iter().filter(|(k, _)| EDIT_KEYS.contains(&k.as_str())) {
            merged[k.as_str()] = v.clone();
        }
        if let Some(mut e) = endpoint(Some(&merged), &at, undo, &mut errs) {
            if !g.contains_key("body") {
                // A body given as exact bytes (DTM's) stays as it was.
                e.raw_body = old.raw_body.clone();
            }
            let slot = match phase {
                Phase::Action | Phase::Try => Some(&mut new.steps[step].forward),
                Phase::Compensation | Phase::Cancel => new.steps[step].undo.as_mut(),
                Phase::Confirm => new.steps[step].confirm.as_mut(),
            };
            if let Some(slot) = slot {
                *slot = e.clone();
            }
            changed.push((phase, old.clone(), e));
            fields.insert(key.to_string(), given.clone());
        }
    }
    if changed.is_empty() && errs.0.is_empty() {
        errs.push(
            "",
            format!(
                "name the endpoints that change: {}",
                allowed[..allowed.len() - 1].join(", ")
            ),
        );
    }
    match (reason, errs.0.is_empty()) {
        (Some(reason), true) => Ok(StepEdit {
            reason,
            fields: Value::Object(fields),
            def: new,
            changed,
        }),
        _ => Err(errs.0),
    }
}

/// The saga ids of a bulk operator action, `{"ids": [...], "reason": "…"}`: 1 to
/// [`MAX_BULK_IDS`] distinct valid ids, in the order given, and the optional reason.
pub fn parse_bulk(body: &Value) -> Result<(Vec<String>, Option<String>), Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let Some(obj) = body.as_object() else {
        errs.push("", "the request body must be a JSON object");
        return Err(errs.0);
    };
    unknown_keys(obj, &["ids", "reason"], "", &mut errs);
    let reason = reason_field(obj, false, &mut errs);
    let mut ids: Vec<String> = vec![];
    match obj.get("ids").map(|v| v.as_array()) {
        None => errs.push("/ids", "required: the ids of the sagas to act on"),
        Some(None) => errs.push("/ids", "must be an array of saga ids"),
        Some(Some(a)) if a.is_empty() || a.len() > MAX_BULK_IDS => errs.push(
            "/ids",
            format!("must name 1 to {MAX_BULK_IDS} sagas, not {}", a.len()),
        ),
        Some(Some(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v.as_str() {
                    Some(id) if !SAGA_ID.is_valid(id) => errs.push(
                        format!("/ids/{i}"),
                        format!("not a saga id: {}", SAGA_ID.describe()),
                    ),
                    Some(id) if ids.iter().any(|x| x == id) => {
                        errs.push(format!("/ids/{i}"), format!("{id:?} is named twice"))
                    }
                    Some(id) => ids.push(id.to_string()),
                    None => errs.push(format!("/ids/{i}"), "must be a string"),
                }
            }
        }
    }
    if errs.0.is_empty() {
        Ok((ids, reason))
    } else {
        Err(errs.0)
    }
}

/// Parses and validates a start request against the configured defaults.
pub fn parse_request(body: &Value, defaults: &Defaults) -> Result<SagaDefinition, Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError {
            pointer: String::new(),
            detail: "the request body must be a JSON object".into(),
        }]);
    };
    unknown_keys(obj, TOP_KEYS, "", &mut errs);

    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if SAGA_ID.is_valid(s) => Some(s.clone()),
        Some(_) => {
            errs.push("/id", must_be(&SAGA_ID));
            None
        }
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) if NAME.is_valid(s) => s.clone(),
        None => {
            errs.push("/name", "is required");
            String::new()
        }
        Some(_) => {
            errs.push("/name", must_be(&NAME));
            String::new()
        }
    };
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => Mode::Saga,
        Some(Value::String(s)) if s == "saga" => Mode::Saga,
        Some(Value::String(s)) if s == "tcc" => Mode::Tcc,
        Some(_) => {
            errs.push("/mode", "must be \"saga\" or \"tcc\"");
            Mode::Saga
        }
    };
    let payload = match obj.get("payload") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v) => {
            check_depth(v, "/payload", &mut errs);
            v.clone()
        }
    };
    let timeout_ms = duration(obj.get("timeout_ms"), "/timeout_ms", 1, &mut errs);
    let retention_ms = match obj.get("retention_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|&ms| retention::is_valid_ms(ms)) {
            Some(ms) => Some(ms),
            None => {
                errs.push(
                    "/retention_ms",
                    format!(
                        "must be 0 (keep forever) or an integer number of milliseconds from {} \
                         to {MAX_DURATION_MS}",
                        retention::MIN_RETENTION_MS
                    ),
                );
                None
            }
        },
    };

    let mut steps = Vec::new();
    match obj.get("steps") {
        None => errs.push("/steps", "is required"),
        Some(Value::Array(arr)) if arr.is_empty() || arr.len() > MAX_STEPS => {
            errs.push("/steps", format!("must hold 1 to {MAX_STEPS} steps"))
        }
        Some(Value::Array(arr)) => {
            steps = parse_steps(arr, mode, defaults, &mut errs);
        }
        Some(_) => errs.push("/steps", "must be an array of steps"),
    }

    if errs.0.is_empty() {
        let retention = defaults.retention.resolve(&name, retention_ms);
        let mut def = SagaDefinition::new(id, name, mode, payload, timeout_ms, steps);
        def.retention = retention;
        Ok(def)
    } else {
        Err(errs.0)
    }
}

fn parse_steps(arr: &[Value], mode: Mode, defaults: &Defaults, errs: &mut Errors) -> Vec<StepDef> {
    // Names first, so that depends_on can refer to later steps too.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in arr.iter().enumerate() {
        if let Some(Value::String(n)) = s.get("name") {
            if NAME.is_valid(n) {
                if index.contains_key(n.as_str()) {
                    errs.push(
                        format!("/steps/{i}/name"),
                        format!("duplicate step name {n:?}"),
                    );
                } else {
                    index.insert(n, i);
                }
            }
        }
    }
    let mut steps = Vec::new();
    for (i, s) in arr.iter().enumerate() {
        let at = format!("/steps/{i}");
        let Some(o) = s.as_object() else {
            errs.push(at, "must be an object");
            continue;
        };
        unknown_keys(o, STEP_KEYS, &at, errs);
        let name = match o.get("name") {
            Some(Value::String(n)) if NAME.is_valid(n) => n.clone(),
            None => {
                errs.push(format!("{at}/name"), "is required");
                String::new()
            }
            Some(_) => {
                errs.push(format!("{at}/name"), must_be(&NAME));
                String::new()
            }
        };
        let (fwd_key, undo_key) = match mode {
            Mode::Saga => ("action", "compensation"),
            Mode::Tcc => ("try", "cancel"),
        };
        let wrong: &[&str] = match mode {
            Mode::Saga => &["try", "confirm", "cancel"],
            Mode::Tcc => &["action", "compensation"],
        };
        for w in wrong {
            if o.contains_key(*w) {
                errs.push(
                    format!("{at}/{w}"),
                    format!("is not allowed in {} mode", mode.as_str()),
                );
            }
        }
        let forward = endpoint(o.get(fwd_key), &format!("{at}/{fwd_key}"), false, errs);
        if o.get(fwd_key).is_none() {
            errs.push(format!("{at}/{fwd_key}"), "is required");
        }
        let undo = endpoint(o.get(undo_key), &format!("{at}/{undo_key}"), true, errs);
        let confirm = match mode {
            Mode::Saga => None,
            Mode::Tcc => {
                if o.get("cancel").is_none() {
                    errs.push(format!("{at}/cancel"), "is required");
                }
                if o.get("confirm").is_none() {
                    errs.push(format!("{at}/confirm"), "is required");
                }
                endpoint(o.get("confirm"), &format!("{at}/confirm"), false, errs)
            }
        };
        let deps = match o.get("depends_on") {
            None | Some(Value::Null) => {
                if i == 0 {
                    vec![]
                } else {
                    vec![i - 1]
                }
            }
            Some(Value::Array(names)) => {
                let mut deps = Vec::new();
                for (j, n) in names.iter().enumerate() {
                    let p = format!("{at}/depends_on/{j}");
                    match n.as_str().and_then(|n| index.get(n).map(|&k| (n, k))) {
                        Some((_, k)) if k == i => errs.push(p, "a step cannot depend on itself"),
                        Some((n, k)) if deps.contains(&k) => {
                            errs.push(p, format!("{n:?} is listed twice"))
                        }
                        Some((_, k)) => deps.push(k),
                        None => errs.push(p, "must name another step of this saga"),
                    }
                }
                deps
            }
            Some(_) => {
                errs.push(format!("{at}/depends_on"), "must be an array of step names");
                vec![]
            }
        };
        let timeout_ms = duration(o.get("timeout_ms"), &format!("{at}/timeout_ms"), 1, errs)
            .unwrap_or(defaults.call_timeout_ms);
        let retry = retry(o.get("retry"), &format!("{at}/retry"), defaults.retry, errs);
        if let Some(forward) = forward {
            steps.push(StepDef {
                name,
                forward,
                undo,
                confirm,
                deps,
                timeout_ms,
                retry,
            });
        }
    }
    if steps.len() == arr.len() {
        if let Some(i) = find_cycle(&steps) {
            errs.push(
                format!("/steps/{i}/depends_on"),
                "the dependencies form a cycle through this step",
            );
        }
    }
    steps
}

/// Returns a step on a dependency cycle, if there is one.
pub(super) fn find_cycle(steps: &[StepDef]) -> Option<usize> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(i: usize, steps: &[StepDef], mark: &mut [u8]) -> Option<usize> {
        match mark[i] {
            1 => return Some(i),
            2 => return None,
            _ => {}
        }
        mark[i] = 1;
        for &d in &steps[i].deps {
            if let Some(c) = visit(d, steps, mark) {
                return Some(c);
            }
        }
        mark[i] = 2;
        None
    }
    let mut mark = vec![0u8; steps.len()];
    (0..steps.len()).find_map(|i| visit(i, steps, &mut mark))
}

fn endpoint(v: Option<&Value>, at: &str, may_delay: bool, errs: &mut Errors) -> Option<Endpoint> {
    let v = v?;
    let Some(o) = v.as_object() else {
        errs.push(at, "must be an endpoint object with at least \"url\"");
        return None;
    };
    unknown_keys(o, ENDPOINT_KEYS, at, errs);
    let before = errs.0.len();
    let mut service = String::new();
    let url = match o.get("url") {
        Some(Value::String(u)) if u.len() > MAX_URL_LEN => {
            errs.push(
                format!("{at}/url"),
                format!("must be at most {MAX_URL_LEN} bytes"),
            );
            String::new()
        }
        Some(Value::String(u)) => match url::Url::parse(u) {
            Ok(p) if (p.scheme() == "http" || p.scheme() == "https") && p.host_str().is_some() => {
                service = super::definition::default_service(&p);
                u.clone()
            }
            _ => {
                errs.push(format!("{at}/url"), "must be an absolute http or https URL");
                String::new()
            }
        },
        None => {
            errs.push(format!("{at}/url"), "is required");
            String::new()
        }
        Some(_) => {
            errs.push(format!("{at}/url"), "must be a string");
            String::new()
        }
    };
    let method = match o.get("method") {
        None | Some(Value::Null) => "POST".to_string(),
        Some(Value::String(m)) if METHODS.contains(&m.to_ascii_uppercase().as_str()) => {
            m.to_ascii_uppercase()
        }
        Some(_) => {
            errs.push(
                format!("{at}/method"),
                format!("must be one of {}", METHODS.join(", ")),
            );
            String::new()
        }
    };
    let mut headers = Vec::new();
    match o.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) if h.len() > MAX_HEADERS => errs.push(
            format!("{at}/headers"),
            format!("must hold at most {MAX_HEADERS} headers"),
        ),
        Some(Value::Object(h)) => {
            for (k, val) in h {
                let p = format!("{at}/headers/{}", token(k));
                let name_ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
                match val.as_str() {
                    Some(s) if s.len() > MAX_HEADER_VALUE_LEN => {
                        errs.push(p, format!("must be at most {MAX_HEADER_VALUE_LEN} bytes"))
                    }
                    Some(s) if name_ok && http::HeaderValue::from_str(s).is_ok() => {
                        headers.push((k.clone(), s.to_string()))
                    }
                    _ => errs.push(p, "must be a valid header name with a string value"),
                }
            }
        }
        Some(_) => errs.push(
            format!("{at}/headers"),
            "must be an object of header names to strings",
        ),
    }
    let body = o.get("body").cloned();
    if let Some(b) = &body {
        check_depth(b, &format!("{at}/body"), errs);
    }
    let delay_ms = if may_delay {
        duration(o.get("delay_ms"), &format!("{at}/delay_ms"), 0, errs).unwrap_or(0)
    } else {
        if o.contains_key("delay_ms") {
            errs.push(
                format!("{at}/delay_ms"),
                "only a compensation or cancel may be delayed",
            );
        }
        0
    };
    match o.get("service") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if SERVICE.is_valid(s) => service = s.clone(),
        Some(_) => errs.push(format!("{at}/service"), must_be(&SERVICE)),
    }
    (errs.0.len() == before).then_some(Endpoint {
        url,
        method,
        headers,
        body,
        raw_body: None,
        delay_ms,
        service,
    })
}

fn retry(v: Option<&Value>, at: &str, d: RetryPolicy, errs: &mut Errors) -> RetryPolicy {
    let Some(v) = v else { return d };
    let Some(o) = v.as_object() else {
        errs.push(at, "must be an object");
        return d;
    };
    unknown_keys(o, RETRY_KEYS, at, errs);
    // Types here; ranges are the policy's own rule (the configured defaults obey it too).
    let mut typed = true;
    let mut int = |key: &str| match o.get(key) {
        None => None,
        Some(v) => {
            if v.as_u64().is_none() {
                typed = false;
                errs.push(format!("{at}/{key}"), "must be a non-negative integer");
            }
            v.as_u64()
        }
    };
    let max_attempts = int("max_attempts").map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let initial = int("initial_backoff_ms");
    let max = int("max_backoff_ms");
    let multiplier = match o.get("multiplier") {
        None => None,
        Some(v) => {
            if v.as_f64().is_none() {
                typed = false;
                errs.push(format!("{at}/multiplier"), "must be a number");
            }
            v.as_f64()
        }
    };
    let initial_backoff_ms = initial.unwrap_or(d.initial_backoff_ms);
    let policy = RetryPolicy {
        max_attempts: max_attempts.unwrap_or(d.max_attempts),
        initial_backoff_ms,
        // A larger initial backoff than the default maximum raises the maximum with it.
        max_backoff_ms: max.unwrap_or(d.max_backoff_ms.max(initial_backoff_ms)),
        multiplier: multiplier.unwrap_or(d.multiplier),
    };
    if typed {
        for (field, range, _) in policy.problems() {
            errs.push(format!("{at}/{field}"), format!("must be {range}"));
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> SagaDefinition {
        parse_request(&v, &Defaults::default()).expect("valid")
    }

    fn pointers(v: Value) -> Vec<String> {
        parse_request(&v, &Defaults::default())
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    fn step(name: &str) -> Value {
        json!({"name": name, "action": {"url": "http://127.0.0.1:9/a"},
               "compensation": {"url": "http://127.0.0.1:9/c"}})
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let d = ok(json!({"name": "n", "steps": [step("a"), step("b")]}));
        assert_eq!(d.mode, Mode::Saga);
        assert_eq!(d.payload, json!({}));
        assert_eq!(d.steps[0].deps, Vec::<usize>::new());
        assert_eq!(d.steps[1].deps, vec![0]);
        assert_eq!(d.steps[0].forward.method, "POST");
        assert_eq!(d.steps[0].forward.service, "127.0.0.1:9");
        assert_eq!(d.steps[0].retry, Defaults::default().retry);
        assert_eq!(d.steps[0].timeout_ms, Defaults::default().call_timeout_ms);
    }

    #[test]
    fn body_defaults_to_payload_and_explicit_body_wins() {
        let d = ok(json!({"name": "n", "payload": {"x": 1}, "steps": [
            {"name": "a", "action": {"url": "http://h:1/a"}, "compensation": {"url": "http://h:1/c", "body": [1]}}
        ]}));
        assert_eq!(d.body_of(&d.steps[0].forward), &json!({"x": 1}));
        assert_eq!(d.steps[0].forward.body, None, "the payload is not copied");
        let undo = d.steps[0].undo.as_ref().unwrap();
        assert_eq!(d.body_of(undo), &json!([1]));
    }

    #[test]
    fn a_retry_policy_is_held_to_the_ranges_of_the_configured_defaults() {
        let errs = parse_request(
            &json!({"name": "n", "steps": [{"name": "a", "action": {"url": "http://h/a"},
                "retry": {"max_attempts": 0, "initial_backoff_ms": 500, "max_backoff_ms": 100,
                          "multiplier": 0.5}}]}),
            &Defaults::default(),
        )
        .expect_err("invalid");
        let got: Vec<(String, String)> = errs.into_iter().map(|e| (e.pointer, e.detail)).collect();
        let bad = RetryPolicy {
            max_attempts: 0,
            initial_backoff_ms: 500,
            max_backoff_ms: 100,
            multiplier: 0.5,
        };
        // The same rule, the same words, as `participant.*` in the settings.
        let want: Vec<(String, String)> = bad
            .problems()
            .into_iter()
            .map(|(f, range, _)| (format!("/steps/0/retry/{f}"), format!("must be {range}")))
            .collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), 3, "{want:?}");
        let typed = pointers(json!({"name": "n", "steps": [{"name": "a",
            "action": {"url": "http://h/a"}, "retry": {"max_attempts": "3", "multiplier": [2]}}]}));
        assert_eq!(
            typed,
            ["/steps/0/retry/max_attempts", "/steps/0/retry/multiplier"]
        );
    }

    #[test]
    fn every_invalid_field_is_reported_with_a_pointer() {
        let p = pointers(json!({
            "id": "bad id!", "mode": "x", "timeout_ms": -1, "extra": 1,
            "steps": [
                {"name": "a", "action": {"url": "ftp://x"}, "retry": {"max_attempts": 0, "multiplier": 0.5}},
                {"name": "a", "action": {"url": "http://h/a", "method": "BREW", "delay_ms": 5}, "depends_on": ["zz"]},
                {"action": 3}
            ]
        }));
        for want in [
            "/id",
            "/name",
            "/mode",
            "/timeout_ms",
            "/extra",
            "/steps/0/action/url",
            "/steps/0/retry/max_attempts",
            "/steps/0/retry/multiplier",
            "/steps/1/name",
            "/steps/1/action/method",
            "/steps/1/action/delay_ms",
            "/steps/1/depends_on/0",
            "/steps/2/name",
            "/steps/2/action",
        ] {
            assert!(p.contains(&want.to_string()), "missing {want} in {p:?}");
        }
    }

    #[test]
    fn steps_must_be_a_nonempty_bounded_array() {
        assert_eq!(pointers(json!({"name": "n", "steps": []})), vec!["/steps"]);
        assert_eq!(pointers(json!({"name": "n"})), vec!["/steps"]);
        let many: Vec<Value> = (0..65).map(|i| step(&format!("s{i}"))).collect();
        assert_eq!(
            pointers(json!({"name": "n", "steps": many})),
            vec!["/steps"]
        );
        assert_eq!(pointers(json!([1])), vec![""]);
    }

    #[test]
    fn cycles_and_self_dependencies_are_rejected() {
        let mut a = step("a");
        a["depends_on"] = json!(["b"]);
        let mut b = step("b");
        b["depends_on"] = json!(["a"]);
        assert_eq!(pointers(json!({"name": "n", "steps": [a, b]})).len(), 1);
        let mut s = step("s");
        s["depends_on"] = json!(["s"]);
        assert_eq!(
            pointers(json!({"name": "n", "steps": [s]})),
            vec!["/steps/0/depends_on/0"]
        );
    }

    #[test]
    fn empty_depends_on_means_parallel() {
        let mut b = step("b");
        b["depends_on"] = json!([]);
        let d = ok(json!({"name": "n", "steps": [step("a"), b]}));
        assert!(d.steps[1].deps.is_empty());
    }

    #[test]
    fn tcc_needs_three_endpoints_and_rejects_saga_fields() {
        let p = pointers(json!({"name": "n", "mode": "tcc", "steps": [
            {"name": "a", "try": {"url": "http://h/t"}, "action": {"url": "http://h/a"}}
        ]}));
        assert_eq!(p.len(), 3, "{p:?}");
        let d = ok(json!({"name": "n", "mode": "tcc", "steps": [
            {"name": "a", "try": {"url": "http://h/t"}, "confirm": {"url": "http://h/c"}, "cancel": {"url": "http://h/x"}}
        ]}));
        assert!(d.steps[0].confirm.is_some() && d.steps[0].undo.is_some());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            multiplier: 3.0,
        };
        assert_eq!(r.backoff_ms(1), 100);
        assert_eq!(r.backoff_ms(2), 300);
        assert_eq!(r.backoff_ms(3), 900);
        assert_eq!(r.backoff_ms(4), 1000);
        assert_eq!(r.jittered_backoff_ms(2, 0.5), 150);
        assert_eq!(r.jittered_backoff_ms(2, 7.0), 300);
    }

    /// Any JSON value, nested a few levels, with the request's own keys likely to appear.
    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("name".to_string()),
            Just("steps".to_string()),
            Just("action".to_string()),
            Just("compensation".to_string()),
            Just("url".to_string()),
            Just("headers".to_string()),
            Just("retry".to_string()),
            Just("depends_on".to_string()),
            Just("mode".to_string()),
            Just("try".to_string()),
            Just("payload".to_string()),
            Just("delay_ms".to_string()),
            "[a-z_/~]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            Just(json!("http://127.0.0.1:9/a")),
            Just(json!("tcc")),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A pointer names the bad value, or the object where a required one is missing.
    fn points_into(doc: &Value, pointer: &str) -> bool {
        if pointer.is_empty() || doc.pointer(pointer).is_some() {
            return true;
        }
        pointer
            .rsplit_once('/')
            .is_some_and(|(parent, _)| parent.is_empty() || doc.pointer(parent).is_some())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        #[test]
        fn any_json_is_answered_without_panic_and_errors_point_into_it(doc in arbitrary_json()) {
            match parse_request(&doc, &Defaults::default()) {
                Ok(def) => {
                    proptest::prop_assert!((1..=MAX_STEPS).contains(&def.steps.len()));
                }
                Err(errs) => {
                    proptest::prop_assert!(!errs.is_empty());
                    for e in &errs {
                        proptest::prop_assert!(points_into(&doc, &e.pointer), "{} not in {}", e.pointer, doc);
                        proptest::prop_assert!(!e.detail.is_empty());
                    }
                }
            }
        }

        #[test]
        fn a_valid_request_with_one_part_replaced_is_answered(junk in arbitrary_json(), at in 0usize..8) {
            let mut doc = json!({"name": "n", "payload": {"a": 1}, "steps": [
                {"name": "a", "action": {"url": "http://h/a", "headers": {"X-A": "1"}}, "compensation": {"url": "http://h/c"}},
                {"name": "b", "depends_on": ["a"], "action": {"url": "http://h/b"}, "retry": {"max_attempts": 3}}
            ]});
            let spots = ["/name", "/payload", "/steps/0", "/steps/0/action", "/steps/0/action/url",
                         "/steps/0/action/headers", "/steps/1/depends_on", "/steps/1/retry"];
            *doc.pointer_mut(spots[at]).unwrap() = junk;
            match parse_request(&doc, &Defaults::default()) {
                Err(errs) => {
                    for e in &errs {
                        proptest::prop_assert!(points_into(&doc, &e.pointer), "{} not in {}", e.pointer, doc);
                    }
                }
                // What is accepted is stored (format 2, compacted) and read back the same.
                Ok(def) => {
                    let back = crate::domain::SagaDefinition::from_stored(&def.to_stored());
                    proptest::prop_assert_eq!(back, Ok(def));
                }
            }
        }
    }

    #[test]
    fn documented_limits_are_enforced() {
        let deep = (0..=MAX_JSON_DEPTH).fold(json!(1), |v, _| json!([v]));
        let many: serde_json::Map<String, Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), json!("v")))
            .collect();
        let long_url = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        let p = pointers(json!({"name": "n", "payload": deep.clone(), "steps": [
            {"name": "a", "action": {"url": long_url, "headers": many}},
            {"name": "b", "action": {"url": "http://h/b", "body": deep, "headers": {"X-Big": "v".repeat(MAX_HEADER_VALUE_LEN + 1)}}}
        ]}));
        assert_eq!(
            p,
            [
                "/payload",
                "/steps/0/action/url",
                "/steps/0/action/headers",
                "/steps/1/action/headers/X-Big",
                "/steps/1/action/body"
            ],
        );
    }

    fn bulk_pointers(body: Value) -> Vec<String> {
        parse_bulk(&body)
            .expect_err("should be refused")
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn bulk_ids_keep_their_order() {
        let (ids, reason) = parse_bulk(&json!({"ids": ["b", "a:1", "c.2"]})).unwrap();
        assert_eq!(ids, ["b", "a:1", "c.2"]);
        assert_eq!(reason, None);
        let (_, reason) = parse_bulk(&json!({"ids": ["a"], "reason": " deploy "})).unwrap();
        assert_eq!(reason.as_deref(), Some("deploy"));
    }

    #[test]
    fn an_operators_reason_is_a_short_non_blank_string() {
        let p = |b: Option<Value>, required| {
            parse_operator_body(b.as_ref(), required)
                .map_err(|e| e.into_iter().map(|e| e.pointer).collect::<Vec<_>>())
        };
        assert_eq!(p(None, false), Ok(None));
        assert_eq!(p(Some(json!({})), false), Ok(None));
        assert_eq!(
            p(Some(json!({"reason": "fixed by hand"})), true),
            Ok(Some("fixed by hand".into()))
        );
        assert_eq!(p(None, true), Err(vec!["/reason".to_string()]));
        assert_eq!(
            p(Some(json!({"reason": "  "})), false),
            Err(vec!["/reason".to_string()])
        );
        assert_eq!(
            p(Some(json!({"reason": 7})), false),
            Err(vec!["/reason".to_string()])
        );
        let long = "x".repeat(MAX_REASON + 1);
        assert_eq!(
            p(Some(json!({ "reason": long })), false),
            Err(vec!["/reason".to_string()])
        );
        assert_eq!(
            p(Some(json!({"why": "x"})), false),
            Err(vec!["/why".to_string()])
        );
        assert_eq!(p(Some(json!([])), false), Err(vec![String::new()]));
    }

    #[test]
    fn bulk_ids_name_every_mistake() {
        assert_eq!(bulk_pointers(json!([])), [""]);
        assert_eq!(bulk_pointers(json!({})), ["/ids"]);
        assert_eq!(bulk_pointers(json!({"ids": "a"})), ["/ids"]);
        assert_eq!(bulk_pointers(json!({"ids": []})), ["/ids"]);
        assert_eq!(bulk_pointers(json!({"ids": ["a"], "all": true})), ["/all"]);
        assert_eq!(
            bulk_pointers(json!({"ids": ["a", "b/c", 7, "a", ""]})),
            ["/ids/1", "/ids/2", "/ids/3", "/ids/4"]
        );
        let many: Vec<String> = (0..=MAX_BULK_IDS).map(|i| format!("s{i}")).collect();
        assert_eq!(bulk_pointers(json!({ "ids": many })), ["/ids"]);
        let most: Vec<String> = (0..MAX_BULK_IDS).map(|i| format!("s{i}")).collect();
        assert_eq!(
            parse_bulk(&json!({ "ids": most })).unwrap().0.len(),
            MAX_BULK_IDS
        );
    }
}
