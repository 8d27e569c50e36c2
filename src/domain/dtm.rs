//! DTM's transaction JSON (the body DTM's clients post to `submit`), read into the saga it runs
//! as: each field with DTM's own meaning and default (docs/dtm.md has the mapping), and what
//! cannot be honoured refused with the field named, never dropped in silence. Pure: the HTTP
//! side is `api/dtm.rs`.

use super::definition::{Endpoint, Mode, RetryPolicy, SagaDefinition, StepDef};
use super::limits::{
    MAX_ATTEMPTS, MAX_DURATION_MS, MAX_HEADERS, MAX_HEADER_VALUE_LEN, MAX_STEPS, MAX_URL_LEN, NAME,
    SAGA_ID,
};
use super::machine::{SagaState, SagaStatus, StepStatus};
use super::protocol::Protocol;
use super::validation::FieldError;
use serde_json::{Map, Value};

/// DTM's default timeout of a branch call (its server's `RequestTimeout`).
pub const DEFAULT_REQUEST_TIMEOUT_S: u64 = 3;
/// DTM's default time a TCC or msg transaction may stay prepared (its server's
/// `TimeoutToFail`).
pub const DEFAULT_PREPARED_TIMEOUT_S: u64 = 35;
/// DTM's default retry interval (its server's `RetryInterval`).
pub const DEFAULT_RETRY_INTERVAL_S: u64 = 10;

wire_enum! {
/// DTM's kinds of transaction.
pub enum TransType {
    /// Actions with compensations, driven by the server.
    Saga,
    /// Try (by the client), then confirm or cancel (by the server).
    Tcc,
    /// Actions delivered after the client's local transaction committed.
    Msg,
}
}

impl TransType {
    /// The saga name its transactions carry (listings, counts, metrics): `dtm_saga`, ….
    pub fn saga_name(self) -> String {
        format!("dtm_{}", self.as_str())
    }

    /// The kind of a transaction named [`Self::saga_name`].
    pub fn of_saga_name(name: &str) -> Option<TransType> {
        name.strip_prefix("dtm_").and_then(TransType::parse)
    }
}

/// DTM's status of a saga (`query`, `all`): `submitted` while it goes forward, `aborting`
/// while it undoes, `succeed` and `failed` once ended.
pub fn trans_status(state: &SagaState) -> &'static str {
    match state.status {
        SagaStatus::Prepared => "prepared",
        SagaStatus::Running | SagaStatus::Confirming => "submitted",
        SagaStatus::Compensating => "aborting",
        SagaStatus::Succeeded => "succeed",
        SagaStatus::Compensated => "failed",
        // Stuck: the phase it is stuck in says which.
        SagaStatus::Stuck if state.steps.iter().any(|s| s.stuck && s.phase.is_undo()) => "aborting",
        SagaStatus::Stuck => "submitted",
    }
}

/// The saga statuses a DTM status may stand for (`all?status=`), or `None` for a name DTM
/// does not have; filter the sagas found with [`trans_status`].
pub fn statuses_of(dtm: &str) -> Option<Vec<SagaStatus>> {
    use SagaStatus::*;
    Some(match dtm {
        "prepared" => vec![Prepared],
        "submitted" => vec![Running, Confirming, Stuck],
        "aborting" => vec![Compensating, Stuck],
        "succeed" => vec![Succeeded],
        "failed" => vec![Compensated],
        _ => return None,
    })
}

/// One of DTM's branch rows: a call of a step in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch<'a> {
    /// The step's index.
    pub step: usize,
    /// `01`, `02`, …: the step's name.
    pub branch_id: &'a str,
    /// `action`, `compensate`, …
    pub op: &'static str,
    /// The URL called.
    pub url: &'a str,
    /// The body sent.
    pub data: &'a str,
    /// `prepared` (not done), `succeed`, or `failed` (an action refused).
    pub status: &'static str,
}

/// The branch rows of a saga in DTM's order (per step: the undo, then the forward call).
pub fn branches<'a>(def: &'a SagaDefinition, state: &SagaState) -> Vec<Branch<'a>> {
    use StepStatus::*;
    let mut out = Vec::new();
    for (step, (d, s)) in def.steps.iter().zip(&state.steps).enumerate() {
        if def.is_check(step) {
            // Not a branch in DTM: its question to the client.
            continue;
        }
        let data = |e: &'a Endpoint| e.raw_body.as_deref().unwrap_or("");
        if let Some(undo) = &d.undo {
            let done = matches!(s.status, Compensated | Cancelled);
            out.push(Branch {
                step,
                branch_id: &d.name,
                op: if def.mode == Mode::Tcc {
                    "cancel"
                } else {
                    "compensate"
                },
                url: &undo.url,
                data: data(undo),
                status: if done { "succeed" } else { "prepared" },
            });
        }
        if def.mode == Mode::Tcc {
            // DTM's rows of a TCC branch are its cancel and its confirm (its client tries).
            if let Some(confirm) = &d.confirm {
                out.push(Branch {
                    step,
                    branch_id: &d.name,
                    op: "confirm",
                    url: &confirm.url,
                    data: data(confirm),
                    status: if s.status == Confirmed {
                        "succeed"
                    } else {
                        "prepared"
                    },
                });
            }
            continue;
        }
        let forward = match s.status {
            Pending | Running | RetryScheduled | Skipped => "prepared",
            Failed => "failed",
            _ => "succeed",
        };
        out.push(Branch {
            step,
            branch_id: &d.name,
            op: "action",
            url: &d.forward.url,
            data: data(&d.forward),
            status: forward,
        });
    }
    out
}

/// A submitted transaction, read.
#[derive(Debug, Clone, PartialEq)]
pub struct DtmTrans {
    /// The gid: the saga's id.
    pub gid: String,
    /// Its kind.
    pub trans_type: TransType,
    /// Answer the submit only once the transaction has ended (or `request_timeout`).
    pub wait_result: bool,
    /// How long a caller waits for an answer with `wait_result`, and each branch call's timeout.
    pub request_timeout_ms: u64,
    /// The saga it runs as.
    pub def: SagaDefinition,
}

/// Fields a client may send that the server sets itself: accepted and ignored, as DTM does.
const SERVER_SET: &[&str] = &[
    "id",
    "status",
    "create_time",
    "update_time",
    "finish_time",
    "rollback_time",
    "next_cron_interval",
    "next_cron_time",
    "retry_count",
    "options",
    "owner",
    "ext_data",
    "result",
    "rollback_reason",
];

/// Every field of the transaction JSON this service reads.
const FIELDS: &[&str] = &[
    "gid",
    "trans_type",
    "steps",
    "payloads",
    "bin_payloads",
    "custom_data",
    "concurrent",
    "wait_result",
    "timeout_to_fail",
    "request_timeout",
    "retry_interval",
    "retry_limit",
    "branch_headers",
    "passthrough_headers",
    "query_prepared",
    "protocol",
];

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, detail: impl Into<String>) {
        self.0.push(FieldError {
            pointer: format!("/{field}"),
            detail: detail.into(),
        });
    }
}

/// A field that DTM's clients send as `null` when they leave it unset: absent either way.
fn field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn seconds(o: &Map<String, Value>, key: &str, errs: &mut Errors) -> u64 {
    match field(o, key) {
        None => 0,
        Some(v) => match v.as_u64() {
            Some(n) if n.saturating_mul(1000) <= MAX_DURATION_MS => n,
            _ => {
                errs.push(key, "must be a whole number of seconds, 0 or more");
                0
            }
        },
    }
}

fn flag(o: &Map<String, Value>, key: &str, errs: &mut Errors) -> bool {
    match field(o, key) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.push(key, "must be true or false");
            false
        }
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str, errs: &mut Errors) -> &'a str {
    match field(o, key) {
        None => "",
        Some(Value::String(s)) => s,
        Some(_) => {
            errs.push(key, "must be a string");
            ""
        }
    }
}

/// The options of a transaction every branch call follows, as its client set them.
struct Options {
    wait_result: bool,
    timeout_to_fail: u64,
    request_timeout: u64,
    retry: RetryPolicy,
    headers: Vec<(String, String)>,
}

/// Reads the options of the transaction JSON `o`.
fn options(o: &Map<String, Value>, incoming: &[(String, String)], errs: &mut Errors) -> Options {
    let wait_result = flag(o, "wait_result", errs);
    // Read for its type only: in DTM it concerns msg, and a saga takes concurrency from
    // custom_data.
    flag(o, "concurrent", errs);
    let timeout_to_fail = seconds(o, "timeout_to_fail", errs);
    let request_timeout = match seconds(o, "request_timeout", errs) {
        0 => DEFAULT_REQUEST_TIMEOUT_S,
        s => s,
    };
    let retry_interval = match seconds(o, "retry_interval", errs) {
        // As DTM's server picks it: a short timeout_to_fail, else its retry interval.
        0 if (1..DEFAULT_RETRY_INTERVAL_S).contains(&timeout_to_fail) => timeout_to_fail,
        0 => DEFAULT_RETRY_INTERVAL_S,
        s => s,
    };
    let retry_limit = match field(o, "retry_limit") {
        None => 0,
        Some(v) => match v.as_u64() {
            Some(n) if n < u64::from(MAX_ATTEMPTS) => n,
            _ => {
                errs.push(
                    "retry_limit",
                    format!(
                        "must be a whole number from 0 (no limit) to {}",
                        MAX_ATTEMPTS - 1
                    ),
                );
                0
            }
        },
    };
    let retry = RetryPolicy {
        // retry_limit retries after the first call; none means without limit (DTM).
        max_attempts: if retry_limit > 0 {
            retry_limit as u32 + 1
        } else {
            MAX_ATTEMPTS
        },
        initial_backoff_ms: retry_interval * 1000,
        max_backoff_ms: MAX_DURATION_MS,
        multiplier: 2.0,
    };
    Options {
        wait_result,
        timeout_to_fail,
        request_timeout,
        retry,
        headers: branch_headers(o, incoming, errs),
    }
}

/// Which call of its client a transaction JSON came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `prepare`: a TCC (or msg) transaction its client goes on with later.
    Prepare,
    /// `submit`: the transaction runs.
    Submit,
}

/// Reads the transaction JSON of a `submit`; `incoming` are the headers of that request (for
/// `passthrough_headers`).
pub fn parse_submit(
    body: &Value,
    incoming: &[(String, String)],
) -> Result<DtmTrans, Vec<FieldError>> {
    parse_trans(body, incoming, Stage::Submit)
}

/// Reads the transaction JSON of a `prepare`.
pub fn parse_prepare(
    body: &Value,
    incoming: &[(String, String)],
) -> Result<DtmTrans, Vec<FieldError>> {
    parse_trans(body, incoming, Stage::Prepare)
}

/// Reads the transaction JSON a client sent with `stage`.
pub fn parse_trans(
    body: &Value,
    incoming: &[(String, String)],
    stage: Stage,
) -> Result<DtmTrans, Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let Some(o) = body.as_object() else {
        return Err(vec![FieldError {
            pointer: String::new(),
            detail: "the transaction must be a JSON object".into(),
        }]);
    };
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) && !SERVER_SET.contains(&k.as_str()) {
            errs.push(
                k,
                "is not a field this service honours; nothing was recorded",
            );
        }
    }
    let gid = text(o, "gid", &mut errs);
    if !SAGA_ID.is_valid(gid) {
        errs.push(
            "gid",
            format!("must be {} (GET newGid makes one)", SAGA_ID.describe()),
        );
    }
    let trans_type = match text(o, "trans_type", &mut errs) {
        "saga" if stage == Stage::Prepare => {
            errs.push("trans_type", "a saga is submitted, not prepared");
            None
        }
        "saga" => Some(TransType::Saga),
        "tcc" => Some(TransType::Tcc),
        "msg" => Some(TransType::Msg),
        "xa" | "workflow" => {
            errs.push(
                "trans_type",
                "xa and workflow are not supported; saga, tcc and msg are",
            );
            None
        }
        other => {
            errs.push("trans_type", format!("unknown transaction type {other:?}"));
            None
        }
    };
    match text(o, "protocol", &mut errs) {
        "" | "http" => {}
        other => errs.push("protocol", format!("{other:?} is not supported: only http")),
    }
    if field(o, "bin_payloads").is_some() {
        errs.push(
            "bin_payloads",
            "binary payloads (gRPC) are not supported: use payloads",
        );
    }
    let query_prepared = text(o, "query_prepared", &mut errs);
    if !query_prepared.is_empty() && trans_type != Some(TransType::Msg) {
        errs.push(
            "query_prepared",
            "only a msg transaction is asked whether it was prepared",
        );
    }
    let opts = options(o, incoming, &mut errs);
    let (defs, mode, timeout_s) = match trans_type {
        Some(TransType::Tcc) => {
            for k in ["steps", "payloads", "custom_data"] {
                let empty = match field(o, k) {
                    None => true,
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(Value::String(s)) => s.is_empty(),
                    Some(_) => false,
                };
                if !empty {
                    errs.push(k, "a TCC transaction's branches come with registerBranch");
                }
            }
            // DTM cancels a TCC transaction left prepared this long (its TimeoutToFail).
            let timeout = match opts.timeout_to_fail {
                0 => DEFAULT_PREPARED_TIMEOUT_S,
                t => t,
            };
            (vec![], Mode::Tcc, timeout)
        }
        Some(TransType::Msg) => {
            let check = match stage {
                Stage::Prepare => query_prepared,
                // Submitted at once: nobody is asked anything.
                Stage::Submit => "",
            };
            let timeout = match (stage, opts.timeout_to_fail) {
                (Stage::Submit, _) => 0,
                (Stage::Prepare, 0) => DEFAULT_PREPARED_TIMEOUT_S,
                (Stage::Prepare, t) => t,
            };
            (
                msg_steps(o, gid, &opts, check, &mut errs),
                Mode::Saga,
                timeout,
            )
        }
        _ => (
            saga_steps(o, gid, &opts, &mut errs),
            Mode::Saga,
            opts.timeout_to_fail,
        ),
    };
    let (Some(trans_type), true) = (trans_type, errs.0.is_empty()) else {
        return Err(errs.0);
    };
    let timeout_ms = (timeout_s > 0).then_some(timeout_s * 1000);
    let mut def = SagaDefinition::new(
        Some(gid.to_string()),
        trans_type.saga_name(),
        mode,
        Value::Object(Map::new()),
        timeout_ms,
        defs,
    );
    def.protocol = Protocol::Dtm;
    def.prepared = stage == Stage::Prepare;
    if trans_type == TransType::Msg {
        def.deliver = true;
        def.check_first = def.steps.first().is_some_and(|s| s.name == CHECK_BRANCH);
    }
    Ok(DtmTrans {
        gid: gid.to_string(),
        trans_type,
        wait_result: opts.wait_result,
        request_timeout_ms: opts.request_timeout * 1000,
        def,
    })
}

/// The steps of a saga transaction.
fn saga_steps(
    o: &Map<String, Value>,
    gid: &str,
    opts: &Options,
    errs: &mut Errors,
) -> Vec<StepDef> {
    let orders = concurrency(o, errs);
    let steps = steps(o, errs);
    if let Some(orders) = &orders {
        for (&k, deps) in orders {
            if k >= steps.len() || deps.iter().any(|&d| d >= steps.len() || d == k) {
                errs.push(
                    "custom_data",
                    format!("orders name a step that is not there: {k}"),
                );
            }
        }
    }
    let mut defs = Vec::new();
    for (i, (action, compensate, payload)) in steps.iter().enumerate() {
        let branch = format!("{:02}", i + 1);
        let at = Call {
            gid,
            trans_type: TransType::Saga,
            branch: &branch,
            payload,
            headers: &opts.headers,
        };
        let forward = at.endpoint(action, "action", "steps", errs);
        let undo = (!compensate.is_empty())
            .then(|| at.endpoint(compensate, "compensate", "steps", errs))
            .flatten();
        let deps = match &orders {
            // Concurrent: each step waits only for the steps its orders name.
            Some(orders) => orders.get(&i).cloned().unwrap_or_default(),
            // One after the other.
            None => i.checked_sub(1).into_iter().collect(),
        };
        if let Some(forward) = forward {
            defs.push(StepDef {
                name: branch,
                forward,
                undo,
                confirm: None,
                deps,
                timeout_ms: opts.request_timeout * 1000,
                retry: opts.retry,
            });
        }
    }
    if steps.is_empty() {
        errs.push("steps", "a saga needs at least one step");
    } else if steps.len() > MAX_STEPS {
        errs.push("steps", format!("at most {MAX_STEPS} steps"));
    } else if defs.len() == steps.len() {
        if let Some(i) = super::validation::find_cycle(&defs) {
            errs.push(
                "custom_data",
                format!("orders form a cycle through step {i}"),
            );
        }
    }
    defs
}

/// The branch id (and step name) of a msg transaction's question to its client.
const CHECK_BRANCH: &str = "00";

/// The steps of a msg transaction: its actions, delivered in order (all at once with
/// `concurrent`), after its check step `00` when it asks `check` (its `query_prepared`).
fn msg_steps(
    o: &Map<String, Value>,
    gid: &str,
    opts: &Options,
    check: &str,
    errs: &mut Errors,
) -> Vec<StepDef> {
    if !text(o, "custom_data", errs).is_empty() {
        errs.push("custom_data", "a delayed msg is not supported yet");
    }
    if field(o, "retry_limit").is_some_and(|v| v.as_u64() != Some(0)) {
        errs.push("retry_limit", "a msg is delivered without limit, as in DTM");
    }
    let concurrent = matches!(field(o, "concurrent"), Some(Value::Bool(true)));
    let steps = steps(o, errs);
    let step = |name: String, forward: Endpoint, deps: Vec<usize>| StepDef {
        name,
        forward,
        undo: None,
        confirm: None,
        deps,
        timeout_ms: opts.request_timeout * 1000,
        retry: opts.retry,
    };
    let mut defs = Vec::new();
    if !check.is_empty() {
        let at = Call {
            gid,
            trans_type: TransType::Msg,
            branch: CHECK_BRANCH,
            payload: "",
            headers: &opts.headers,
        };
        if let Some(ep) = at.endpoint(check, "msg", "query_prepared", errs) {
            defs.push(step(CHECK_BRANCH.into(), ep, vec![]));
        }
    }
    let first = defs.len();
    for (i, (action, compensate, payload)) in steps.iter().enumerate() {
        let branch = format!("{:02}", i + 1);
        if !compensate.is_empty() {
            errs.push(
                "steps",
                format!("branch {branch}: a msg step has only an action"),
            );
        }
        let at = Call {
            gid,
            trans_type: TransType::Msg,
            branch: &branch,
            payload,
            headers: &opts.headers,
        };
        // After the check (if any) and, unless concurrent, after the action before.
        let before = first + i;
        let deps = match (concurrent, before.checked_sub(1)) {
            (_, None) => vec![],
            (true, Some(_)) if first == 0 => vec![],
            (true, Some(_)) => vec![0],
            (false, Some(d)) => vec![d],
        };
        if let Some(ep) = at.endpoint(action, "action", "steps", errs) {
            defs.push(step(branch, ep, deps));
        }
    }
    if steps.is_empty() {
        errs.push("steps", "a msg needs at least one step");
    } else if defs.len() > MAX_STEPS {
        errs.push("steps", format!("at most {MAX_STEPS} steps"));
    }
    defs
}

/// A branch a TCC transaction's client registers (`registerBranch`): the step it adds.
pub struct TccBranch {
    /// The transaction's gid.
    pub gid: String,
    /// The step: tried by the client, confirmed or cancelled by this service.
    pub step: StepDef,
}

/// Reads a `registerBranch` body (a flat object of strings); the options of the branch calls
/// are those the transaction was prepared with (`prepared`, its JSON as accepted).
pub fn parse_branch(body: &Value, prepared: &Value) -> Result<TccBranch, Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let (Some(o), Some(p)) = (body.as_object(), prepared.as_object()) else {
        return Err(vec![FieldError {
            pointer: String::new(),
            detail: "the branch must be a JSON object".into(),
        }]);
    };
    for (k, v) in o {
        let known = [
            "gid",
            "trans_type",
            "branch_id",
            "data",
            "confirm",
            "cancel",
            "status",
        ];
        if !known.contains(&k.as_str()) {
            errs.push(k, "is not a field of a TCC branch; nothing was recorded");
        } else if !v.is_string() && !v.is_null() {
            errs.push(k, "must be a string");
        }
    }
    let gid = text(o, "gid", &mut errs);
    match text(o, "trans_type", &mut errs) {
        "tcc" => {}
        "xa" => errs.push("trans_type", "xa is not supported; tcc is"),
        other => errs.push("trans_type", format!("a tcc branch, not {other:?}")),
    }
    let branch = text(o, "branch_id", &mut errs);
    if !NAME.is_valid(branch) {
        errs.push("branch_id", format!("must be {}", NAME.describe()));
    }
    let data = text(o, "data", &mut errs);
    let opts = options(p, &[], &mut errs);
    let at = Call {
        gid,
        trans_type: TransType::Tcc,
        branch,
        payload: data,
        headers: &opts.headers,
    };
    let confirm = at.endpoint(
        text(o, "confirm", &mut errs),
        "confirm",
        "confirm",
        &mut errs,
    );
    let cancel = at.endpoint(text(o, "cancel", &mut errs), "cancel", "cancel", &mut errs);
    let (Some(confirm), Some(cancel), true) = (confirm, cancel, errs.0.is_empty()) else {
        return Err(errs.0);
    };
    Ok(TccBranch {
        gid: gid.to_string(),
        step: StepDef {
            name: branch.to_string(),
            // The client calls try itself: never called from here, shown with the confirm's
            // service.
            forward: confirm.clone(),
            undo: Some(cancel),
            confirm: Some(confirm),
            deps: vec![],
            timeout_ms: opts.request_timeout * 1000,
            retry: opts.retry,
        },
    })
}

/// Why a branch was not registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotRegistered {
    /// The transaction is no longer prepared.
    #[error(transparent)]
    Rejected(#[from] super::machine::Rejected),
    /// The branch id is registered with other URLs or data.
    #[error("branch {0} is registered already, with other URLs or data")]
    Conflict(String),
    /// The transaction has as many branches as a saga may have steps.
    #[error("at most {MAX_STEPS} branches")]
    TooMany,
}

/// A prepared transaction with `branch` registered, last: confirmed first, cancelled first.
/// The same branch again changes nothing (`None`).
pub fn register(
    def: &SagaDefinition,
    state: &SagaState,
    mut step: StepDef,
    now_ms: i64,
) -> Result<Option<(SagaDefinition, SagaState)>, NotRegistered> {
    state.status.may_submit()?;
    if let Some(i) = def.steps.iter().position(|s| s.name == step.name) {
        step.deps = def.steps[i].deps.clone();
        return match def.steps[i] == step {
            true => Ok(None),
            false => Err(NotRegistered::Conflict(step.name)),
        };
    }
    if def.steps.len() >= MAX_STEPS {
        return Err(NotRegistered::TooMany);
    }
    // After the one registered before it: its confirm waits for this one's, and so does its
    // cancel (DTM's order, the reverse of registration).
    step.deps = def.steps.len().checked_sub(1).into_iter().collect();
    let mut next = state.clone();
    next.register(now_ms)?;
    Ok(Some((def.with_step(step), next)))
}

/// `(action, compensate, payload)` of each step: the payload from `payloads`, else the step's
/// legacy `data`, else dtmrs's per-step `payload`.
fn steps(o: &Map<String, Value>, errs: &mut Errors) -> Vec<(String, String, String)> {
    let steps = match field(o, "steps") {
        None => return vec![],
        Some(Value::Array(a)) => a,
        Some(_) => {
            errs.push("steps", "must be an array of {action, compensate}");
            return vec![];
        }
    };
    let payloads: Vec<Option<&str>> = match field(o, "payloads") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                let s = p.as_str();
                if s.is_none() {
                    errs.push(
                        "payloads",
                        "each payload must be a string (a JSON document)",
                    );
                }
                s
            })
            .collect(),
        Some(_) => {
            errs.push("payloads", "must be an array of strings");
            vec![]
        }
    };
    if !payloads.is_empty() && payloads.len() != steps.len() {
        errs.push(
            "payloads",
            format!(
                "{} payloads for {} steps: one per step",
                payloads.len(),
                steps.len()
            ),
        );
    }
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let Some(s) = s.as_object() else {
            errs.push("steps", format!("step {i} must be an object"));
            continue;
        };
        let mut get = |k: &str| match s.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(_) => {
                errs.push("steps", format!("step {i}: {k} must be a string"));
                None
            }
        };
        let (action, compensate) = (get("action"), get("compensate"));
        let (data, payload) = (get("data"), get("payload"));
        for k in s.keys() {
            if !["action", "compensate", "data", "payload"].contains(&k.as_str()) {
                errs.push("steps", format!("step {i}: {k:?} is not a step field"));
            }
        }
        let body = match payloads.get(i) {
            Some(p) => p.map(str::to_string),
            None => data.or(payload),
        };
        let Some(body) = body else {
            if payloads.is_empty() {
                errs.push("payloads", format!("step {i} has no payload"));
            } // else the count mismatch is already said
            continue;
        };
        match action {
            Some(a) if !a.is_empty() => out.push((a, compensate.unwrap_or_default(), body)),
            _ => errs.push("steps", format!("step {i} needs an action URL")),
        }
    }
    out
}

/// The steps each step waits for when custom_data says the saga is concurrent (none: one after
/// the other).
fn concurrency(
    o: &Map<String, Value>,
    errs: &mut Errors,
) -> Option<std::collections::HashMap<usize, Vec<usize>>> {
    let raw = text(o, "custom_data", errs);
    if raw.is_empty() {
        return None;
    }
    let Ok(Value::Object(c)) = serde_json::from_str::<Value>(raw) else {
        errs.push("custom_data", "must be a JSON object encoded as a string");
        return None;
    };
    for k in c.keys() {
        if !["concurrent", "orders"].contains(&k.as_str()) {
            errs.push("custom_data", format!("{k:?} is not honoured for a saga"));
        }
    }
    if c.get("concurrent").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let mut orders = std::collections::HashMap::new();
    match c.get("orders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let step = k.parse::<usize>().ok();
                let deps: Option<Vec<usize>> = v
                    .as_array()
                    .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
                match (step, deps) {
                    (Some(s), Some(d)) => {
                        orders.insert(s, d);
                    }
                    _ => errs.push(
                        "custom_data",
                        "orders must map a step index to the indexes it waits for",
                    ),
                }
            }
        }
        Some(_) => errs.push("custom_data", "orders must be an object"),
    }
    Some(orders)
}

/// The headers every branch call carries: `branch_headers`, and the headers of the submit
/// request named by `passthrough_headers`.
fn branch_headers(
    o: &Map<String, Value>,
    incoming: &[(String, String)],
    errs: &mut Errors,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match field(o, "branch_headers") {
        None => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                match v.as_str() {
                    Some(v) => out.push((k.clone(), v.to_string())),
                    None => errs.push("branch_headers", format!("{k}: must be a string")),
                }
            }
        }
        Some(_) => errs.push(
            "branch_headers",
            "must be an object of header names to strings",
        ),
    }
    match field(o, "passthrough_headers") {
        None => {}
        Some(Value::Array(names)) => {
            for n in names {
                let Some(n) = n.as_str() else {
                    errs.push("passthrough_headers", "must be an array of header names");
                    continue;
                };
                out.extend(
                    incoming
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                        .cloned(),
                );
            }
        }
        Some(_) => errs.push("passthrough_headers", "must be an array of header names"),
    }
    if out.len() > MAX_HEADERS {
        errs.push("branch_headers", format!("at most {MAX_HEADERS} headers"));
    }
    for (k, v) in &out {
        let ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok()
            && http::HeaderValue::from_str(v).is_ok()
            && v.len() <= MAX_HEADER_VALUE_LEN;
        if !ok {
            errs.push("branch_headers", format!("{k}: not a valid header"));
        }
    }
    out
}

/// Where a branch's calls go: its transaction, branch id and payload.
struct Call<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch: &'a str,
    payload: &'a str,
    headers: &'a [(String, String)],
}

impl Call<'_> {
    /// The endpoint of `op` at `url`: DTM's query parameters on the URL, POST with the payload
    /// as it was given, or GET without a body when the payload is empty. A refusal names
    /// `field`.
    fn endpoint(&self, url: &str, op: &str, field: &str, errs: &mut Errors) -> Option<Endpoint> {
        let at = format!("branch {}: {op}", self.branch);
        if url.starts_with("topic://") {
            errs.push(field, format!("{at}: topics are not supported: {url}"));
            return None;
        }
        if url.len() > MAX_URL_LEN {
            errs.push(field, format!("{at}: URL longer than {MAX_URL_LEN} bytes"));
            return None;
        }
        let mut u = match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                errs.push(field, format!("{at}: must be an absolute http(s) URL"));
                return None;
            }
        };
        let service = super::definition::default_service(&u);
        u.query_pairs_mut()
            .append_pair("gid", self.gid)
            .append_pair("trans_type", self.trans_type.as_str())
            .append_pair("branch_id", self.branch)
            .append_pair("op", op);
        Some(Endpoint {
            url: u.to_string(),
            method: if self.payload.is_empty() {
                "GET"
            } else {
                "POST"
            }
            .into(),
            headers: self.headers.to_vec(),
            body: None,
            raw_body: Some(self.payload.to_string()),
            delay_ms: 0,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A saga as DTM's Python client (dtmcli 1.7.7.0) posts it.
    fn python_saga() -> Value {
        json!({"gid": "g-1", "trans_type": "saga", "custom_data": null,
            "steps": [{"action": "http://h:1/out", "compensate": "http://h:1/out-revert"},
                      {"action": "http://h:1/in", "compensate": "http://h:1/in-revert"}],
            "payloads": ["{\"amount\": 30}", "{\"amount\": 30}"], "query_prepared": null,
            "protocol": null, "wait_result": false, "timeout_to_fail": 0, "request_timeout": 8,
            "retry_interval": 0, "passthrough_headers": [], "branch_headers": {}, "concurrent": false})
    }

    #[test]
    fn a_python_client_saga_runs_as_dtm_would_run_it() {
        let t = parse_submit(&python_saga(), &[]).expect("valid");
        assert_eq!((t.gid.as_str(), t.trans_type), ("g-1", TransType::Saga));
        let d = &t.def;
        assert_eq!(d.protocol, Protocol::Dtm);
        assert_eq!(d.steps.len(), 2);
        let s = &d.steps[0];
        assert_eq!(s.name, "01");
        assert_eq!(
            s.forward.url,
            "http://h:1/out?gid=g-1&trans_type=saga&branch_id=01&op=action"
        );
        assert_eq!(s.forward.method, "POST");
        assert_eq!(
            s.forward.raw_body.as_deref(),
            Some("{\"amount\": 30}"),
            "verbatim"
        );
        let undo = s.undo.as_ref().unwrap();
        assert!(
            undo.url.ends_with("branch_id=01&op=compensate"),
            "{}",
            undo.url
        );
        assert_eq!(d.steps[1].deps, vec![0], "one after the other");
        assert_eq!(s.timeout_ms, 8000);
        assert_eq!(s.retry.initial_backoff_ms, 10_000, "DTM's default interval");
        assert_eq!(
            s.retry.max_attempts, MAX_ATTEMPTS,
            "no retry_limit: no limit"
        );
        assert_eq!(
            d.timeout_ms, None,
            "a saga without timeout_to_fail has no deadline"
        );
    }

    #[test]
    fn options_and_concurrency_follow_dtm() {
        let mut b = python_saga();
        b["custom_data"] = json!("{\"orders\": {\"1\": [0]}, \"concurrent\": true}");
        b["steps"]
            .as_array_mut()
            .unwrap()
            .push(json!({"action": "http://h:1/x", "compensate": ""}));
        b["payloads"].as_array_mut().unwrap().push(json!(""));
        b["retry_limit"] = json!(2);
        b["timeout_to_fail"] = json!(5);
        b["branch_headers"] = json!({"X-T": "1"});
        b["passthrough_headers"] = json!(["X-Request-Id"]);
        let incoming = [("x-request-id".to_string(), "r-7".to_string())];
        let d = parse_submit(&b, &incoming).unwrap().def;
        assert_eq!(d.steps[1].deps, vec![0]);
        assert_eq!(
            d.steps[2].deps,
            Vec::<usize>::new(),
            "not in orders: no wait"
        );
        assert_eq!(
            d.steps[2].forward.method, "GET",
            "an empty payload: GET, no body"
        );
        assert!(d.steps[2].undo.is_none(), "no compensate: nothing to undo");
        assert_eq!(d.steps[0].retry.max_attempts, 3);
        assert_eq!(
            d.steps[0].retry.initial_backoff_ms, 5_000,
            "a short timeout_to_fail"
        );
        assert_eq!(d.timeout_ms, Some(5_000));
        assert_eq!(
            d.steps[0].forward.headers,
            [
                ("X-T".to_string(), "1".to_string()),
                ("x-request-id".into(), "r-7".into())
            ]
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_field() {
        let refused = |patch: Value| {
            let mut b = python_saga();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse_submit(&b, &[])
                .expect_err("refused")
                .into_iter()
                .map(|e| e.pointer)
                .collect::<Vec<_>>()
        };
        assert_eq!(refused(json!({"protocol": "grpc"})), ["/protocol"]);
        assert_eq!(refused(json!({"trans_type": "xa"})), ["/trans_type"]);
        assert_eq!(refused(json!({"gid": "a b"})), ["/gid"]);
        assert_eq!(refused(json!({"payloads": ["{}"]})), ["/payloads"]);
        assert_eq!(
            refused(json!({"bin_payloads": ["AA=="]})),
            ["/bin_payloads"]
        );
        assert_eq!(refused(json!({"frobnicate": 1})), ["/frobnicate"]);
        assert_eq!(
            refused(json!({"steps": [{"action": "topic://orders"}, {"action": "http://h/x"}]})),
            ["/steps"]
        );
        assert_eq!(
            refused(json!({"custom_data": "{\"delay\": 3}"})),
            ["/custom_data"]
        );
        assert!(
            parse_submit(
                &json!({"gid": "g", "trans_type": "saga", "status": "x",
            "steps": [{"action": "http://h/a", "data": "{}"}]}),
                &[]
            )
            .is_ok(),
            "server-set fields are ignored; legacy data is the payload"
        );
    }
}
