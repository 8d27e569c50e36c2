//! The shapes of requests and query strings as the OpenAPI description states them, built from
//! the domain's own limits, name rules and key lists (`domain::limits`), so that the document
//! says what `domain::validation` enforces: the steps each mode requires (one schema per mode),
//! every range and pattern, unique ids. Handlers read the JSON themselves, so that one answer
//! names every mistake with its pointer; schemathesis (`.ci/run`, every check) holds the two
//! together. What no schema can say (a `depends_on` naming another step of the same request,
//! no cycles, distinct step names, the outbound policy) is in the descriptions.

use crate::domain::limits::{
    NameRule, COUNT_CAP, DEFAULT_PAGE, MAX_ATTEMPTS, MAX_BULK_IDS, MAX_DURATION_MS, MAX_HEADERS,
    MAX_HEADER_VALUE_LEN, MAX_JSON_DEPTH, MAX_REASON, MAX_STEPS, MAX_URL_LEN, MAX_WAIT_MS, METHODS,
    MULTIPLIER_RANGE, NAME, PAGE_SIZES, SAGA_ID, SERVICE,
};
use crate::domain::retention::MIN_RETENTION_MS;
use crate::domain::SagaStatus;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A unit type standing for a schema built by `$build`, named after the type.
macro_rules! schema {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let s: Schema = $build;
                s.into()
            }
        }

        impl ToSchema for $name {}
    };
}

fn reference(name: &str) -> RefOr<Schema> {
    Ref::from_schema_name(name).into()
}

/// `t`, or `[t, "null"]` when the validator reads a JSON null as "absent".
fn typed(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::Type(t)
    }
}

fn integer(min: u64, max: u64, description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .into()
}

fn duration(min: u64, description: &str) -> Schema {
    integer(min, MAX_DURATION_MS, description)
}

fn named(rule: &NameRule, nullable: bool, description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(typed(Type::String, nullable))
        .pattern(Some(rule.pattern()))
        .description(Some(description))
        .into()
}

fn any_json(description: String) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(description))
        .into()
}

/// An object with exactly these properties (unknown keys are refused, as the validator does).
fn closed(description: &str, props: Vec<(&str, RefOr<Schema>)>, required: &[&str]) -> Schema {
    let mut o = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    for (k, v) in props {
        o = o.property(k, v);
    }
    for r in required {
        o = o.required(*r);
    }
    o.into()
}

/// The properties of an endpoint; an undo (compensation, cancel) may also wait.
fn endpoint(undo: bool) -> Schema {
    let url = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_URL_LEN))
        .description(Some(
            "Absolute http or https URL with a host, allowed by the outbound policy \
             (participant.allow/deny)",
        ));
    let method = ObjectBuilder::new()
        .schema_type(typed(Type::String, true))
        .enum_values(Some(METHODS.iter().map(|m| Some(*m)).chain([None])))
        .description(Some("Method (POST when absent)"));
    let headers = ObjectBuilder::new()
        .schema_type(typed(Type::Object, true))
        .max_properties(Some(MAX_HEADERS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")),
        ))
        .additional_properties(Some(RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_HEADER_VALUE_LEN))
                .pattern(Some("^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$"))
                .into(),
        )))
        .description(Some(
            "Extra headers; Authorization, Cookie and the like are shown as *** wherever the \
             service shows the request",
        ));
    let mut props = vec![
        ("url", RefOr::T(url.into())),
        ("method", RefOr::T(method.into())),
        ("headers", RefOr::T(headers.into())),
        (
            "body",
            RefOr::T(any_json(format!(
                "Body of the call (default: the saga payload); nested at most {MAX_JSON_DEPTH} deep"
            ))),
        ),
        (
            "service",
            RefOr::T(named(
                &SERVICE,
                true,
                "Name for metrics and logs (default host:port)",
            )),
        ),
    ];
    if undo {
        props.push((
            "delay_ms",
            RefOr::T(duration(0, "Wait this long before calling")),
        ));
    }
    let what = if undo {
        "A participant endpoint that undoes (compensation or cancel)"
    } else {
        "A participant endpoint"
    };
    closed(what, props, &["url"])
}

schema!(
    /// An endpoint of a forward call, a confirm.
    Endpoint => endpoint(false)
);

/// The fields of an endpoint an operator's edit changes: those of [`endpoint`] it may name.
fn edited_endpoint() -> RefOr<Schema> {
    let Schema::Object(full) = endpoint(false) else {
        unreachable!("an endpoint is an object")
    };
    let props = ["url", "headers", "body"]
        .into_iter()
        .filter_map(|k| full.properties.get(k).map(|v| (k, v.clone())))
        .collect();
    let mut s = closed(
        "The fields that change, each replacing the old value",
        props,
        &[],
    );
    if let Schema::Object(o) = &mut s {
        o.min_properties = Some(1);
    }
    RefOr::T(s)
}

schema!(
    /// `PATCH /v1/sagas/{id}/steps/{step}` body (docs/api.md, "Operator actions").
    StepEditRequest => closed(
        "Why, and the step's endpoints that change (those of the saga's mode: action and \
         compensation, or try, confirm and cancel)",
        vec![
            ("reason", reason()),
            ("action", edited_endpoint()),
            ("compensation", edited_endpoint()),
            ("try", edited_endpoint()),
            ("confirm", edited_endpoint()),
            ("cancel", edited_endpoint()),
        ],
        &["reason"],
    )
);
schema!(
    /// An endpoint of a compensation or a cancel.
    UndoEndpoint => endpoint(true)
);

schema!(
    /// Retry policy of a step; missing fields come from `[participant]`.
    Retry => closed(
        "Retry policy of a step; missing fields come from [participant]",
        vec![
            ("max_attempts", RefOr::T(integer(1, MAX_ATTEMPTS.into(), "Calls per phase, the first included"))),
            ("initial_backoff_ms", RefOr::T(duration(0, "Wait before the second call"))),
            ("max_backoff_ms", RefOr::T(duration(0, "Longest wait between calls; not less than initial_backoff_ms"))),
            ("multiplier", RefOr::T(ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(*MULTIPLIER_RANGE.start()))
                .maximum(Some(*MULTIPLIER_RANGE.end()))
                .description(Some("Growth of the wait"))
                .into())),
        ],
        &[],
    )
);

/// What steps of both modes share: name, dependencies, timeout, retry.
fn step(description: &str, endpoints: &[(&'static str, &str)], required: &[&str]) -> Schema {
    let mut props: Vec<(&str, RefOr<Schema>)> =
        vec![("name", RefOr::T(named(&NAME, false, "Unique in the saga")))];
    for (key, schema) in endpoints {
        props.push((key, reference(schema)));
    }
    let deps = ArrayBuilder::new()
        .schema_type(typed(Type::Array, true))
        .items(RefOr::T(named(&NAME, false, "A step name")))
        .max_items(Some(MAX_STEPS - 1))
        .unique_items(true)
        .description(Some(
            "Steps that must succeed first, each another step of this saga, without cycles; \
             absent = the previous step, [] = none",
        ));
    props.push(("depends_on", RefOr::T(deps.into())));
    props.push(("timeout_ms", RefOr::T(duration(1, "Timeout of one call"))));
    props.push(("retry", reference("Retry")));
    closed(description, props, required)
}

schema!(
    /// A step of a saga: an action and its compensation.
    SagaStep => step(
        "A step of a saga: an action and, optionally, its compensation",
        &[("action", "Endpoint"), ("compensation", "UndoEndpoint")],
        &["name", "action"],
    )
);
schema!(
    /// A step of a TCC saga: try, confirm and cancel.
    TccStep => step(
        "A step of a TCC saga: try, confirm and cancel",
        &[("try", "Endpoint"), ("confirm", "Endpoint"), ("cancel", "UndoEndpoint")],
        &["name", "try", "confirm", "cancel"],
    )
);

/// A start request of one mode.
fn start(mode: &str, step: &str, nullable_mode: bool) -> Schema {
    start_or_definition(mode, step, nullable_mode, false)
}

/// A start request of one mode, or (`definition`) a stored definition's document of that mode:
/// no id or payload (each start gives its own), a description, and `name` optional.
fn start_or_definition(mode: &str, step: &str, nullable_mode: bool, definition: bool) -> Schema {
    let mut modes: Vec<Option<&str>> = vec![Some(mode)];
    if nullable_mode {
        modes.push(None);
    }
    let mode_schema = ObjectBuilder::new()
        .schema_type(typed(Type::String, nullable_mode))
        .enum_values(Some(modes))
        .description(Some(if nullable_mode {
            "saga (the default when absent)"
        } else {
            "tcc"
        }));
    let steps = ArrayBuilder::new()
        .items(reference(step))
        .min_items(Some(1))
        .max_items(Some(MAX_STEPS))
        .description(Some("The steps, with distinct names"));
    let mut required = vec!["name", "steps"];
    if definition {
        required.retain(|k| *k != "name");
    }
    if !nullable_mode {
        required.push("mode");
    }
    let mut props =
        vec![
        (
            "id",
            RefOr::T(named(
                &SAGA_ID,
                true,
                "Saga id; a UUID v7 when absent. The same id with the same request is idempotent",
            )),
        ),
        ("name", RefOr::T(named(&NAME, false, "Kind of saga (a metric label)"))),
        ("mode", RefOr::T(mode_schema.into())),
        (
            "payload",
            RefOr::T(any_json(format!(
                "Default body of every call; nested at most {MAX_JSON_DEPTH} deep"
            ))),
        ),
    ];
    let title = if definition {
        props.retain(|(k, _)| !matches!(*k, "id" | "payload"));
        props[0].1 = RefOr::T(named(&NAME, false, "The name in the path, if given"));
        props.push((
            "description",
            RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_REASON))
                    .pattern(Some(r"\S"))
                    .description(Some("What it does, for a person"))
                    .into(),
            ),
        ));
        format!(
            "PUT /v1/definitions/{{name}} body of a {mode}: a start without id and payload; endpoint \
             bodies and header values may hold {{\"$payload\": \"/pointer\"}} (docs/api.md)"
        )
    } else {
        format!("POST /v1/sagas body of a {mode} (docs/api.md)")
    };
    closed(
        &title,
        props
            .into_iter()
            .chain([
            ("timeout_ms", RefOr::T(duration(1, "Deadline of the forward phase from creation"))),
            (
                "retention_ms",
                RefOr::T(
                    OneOfBuilder::new()
                        .item(integer(0, 0, "Kept forever"))
                        .item(duration(MIN_RETENTION_MS, "Purged this long after it ended"))
                        .description(Some(
                            "How long it stays in the log once it succeeded or was compensated; \
                             overrides [retention] (docs/saga-log.md)",
                        ))
                        .into(),
                ),
            ),
            ("steps", RefOr::T(steps.into())),
            ])
            .collect(),
        &required,
    )
}

schema!(
    /// A saga's start request.
    SagaStart => start("saga", "SagaStep", true)
);
schema!(
    /// A TCC saga's start request.
    TccStart => start("tcc", "TccStep", false)
);
schema!(
    /// `POST /v1/sagas` body: a saga or a TCC saga (docs/api.md), or a start by definition.
    StartRequest => OneOfBuilder::new()
        .item(reference("SagaStart"))
        .item(reference("TccStart"))
        .item(reference("DefinitionStart"))
        .description(Some("A saga (steps with action and compensation), a TCC saga (mode tcc; steps with try, confirm and cancel), or a start of a stored definition"))
        .into()
);
schema!(
    /// `POST /v1/sagas` answer 200: the saga (an identical request again) or a dry run's plan.
    StartAnswer => OneOfBuilder::new()
        .item(reference("SagaView"))
        .item(reference("DryRunView"))
        .description(Some("The saga with this id and an identical request, or (dry_run=true) the plan"))
        .into()
);
schema!(
    /// A start of a stored definition (docs/api.md, "Definitions").
    DefinitionStart => closed(
        "POST /v1/sagas body that names a stored definition instead of carrying its steps",
        vec![
            ("definition", RefOr::T(named(&NAME, false, "The definition's name"))),
            ("version", RefOr::T(integer(1, u32::MAX.into(), "Its version; absent: the newest that is not retired"))),
            (
                "id",
                RefOr::T(named(
                    &SAGA_ID,
                    true,
                    "Saga id; a UUID v7 when absent. The same id with the same request is idempotent",
                )),
            ),
            (
                "payload",
                RefOr::T(any_json(format!(
                    "Default body of every call, and the values the definition's references take; nested at most {MAX_JSON_DEPTH} deep"
                ))),
            ),
        ],
        &["definition"],
    )
);
schema!(
    /// `PUT /v1/definitions/{name}` body of a saga.
    SagaDefinitionRequest => start_or_definition("saga", "SagaStep", true, true)
);
schema!(
    /// `PUT /v1/definitions/{name}` body of a TCC saga.
    TccDefinitionRequest => start_or_definition("tcc", "TccStep", false, true)
);
schema!(
    /// `PUT /v1/definitions/{name}` body: a saga or a TCC saga without id and payload.
    DefinitionRequest => OneOfBuilder::new()
        .item(reference("SagaDefinitionRequest"))
        .item(reference("TccDefinitionRequest"))
        .description(Some("A saga's definition: a start request without id and payload"))
        .into()
);

/// A definition's name in a path.
pub struct DefinitionParam;

impl IntoParams for DefinitionParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path(
            "name",
            "The definition's name",
            named(&NAME, false, "Definition name"),
        )]
    }
}

/// A definition's name and version in a path.
pub struct VersionParams;

impl IntoParams for VersionParams {
    fn into_params(f: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut v = DefinitionParam::into_params(f);
        v.push(path(
            "version",
            "Its version, from 1",
            integer(1, u32::MAX.into(), "Version"),
        ));
        v
    }
}
schema!(
    /// A saga id.
    SagaId => named(&SAGA_ID, false, "Saga id")
);
/// An operator's reason (docs/api.md, "Operator actions").
fn reason() -> RefOr<Schema> {
    RefOr::T(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_REASON))
            .pattern(Some(r"\S"))
            .description(Some(
                "Why, kept with who and when in the saga's operator actions",
            ))
            .into(),
    )
}

schema!(
    /// `POST /v1/bulk/{action}` body (docs/api.md).
    BulkRequest => closed(
        "The sagas to act on, answered in this order, and why",
        vec![
            (
                "ids",
                RefOr::T(
                    ArrayBuilder::new()
                        .items(reference("SagaId"))
                        .min_items(Some(1))
                        .max_items(Some(MAX_BULK_IDS))
                        .unique_items(true)
                        .description(Some("Distinct saga ids"))
                        .into(),
                ),
            ),
            ("reason", reason()),
        ],
        &["ids"],
    )
);
schema!(
    /// The body of an operator action on one saga (docs/api.md, "Operator actions").
    ReasonRequest => closed(
        "Why (required to skip a step; optional, or no body at all, otherwise)",
        vec![("reason", reason())],
        &[],
    )
);

/// One path parameter.
fn path(name: &str, description: &str, schema: Schema) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// One optional query parameter.
fn query(name: &str, description: &str, schema: Schema) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A query value: a pattern (an empty value means "not given").
fn pattern(p: String) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(p))
        .into()
}

/// A comma-separated list of `words`, possibly empty.
fn words(words: &[&str]) -> String {
    let one = words.join("|");
    format!("^(({one})(,({one}))*)?$")
}

/// A rule's pattern that also accepts the empty value (absent).
fn optional(rule: &NameRule) -> String {
    format!("^({})?$", rule.repeat())
}

fn wait() -> Parameter {
    query(
        "wait_ms",
        "Hold the answer until the saga is terminal or this many ms pass",
        integer(0, MAX_WAIT_MS, "ms"),
    )
}

/// `?wait_ms=` and `?dry_run=` of a start.
pub struct WaitParams;

impl IntoParams for WaitParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            wait(),
            query(
                "dry_run",
                "true: record and call nothing; answer 200 with the plan (docs/api.md, \"Dry run\")",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["true", "false"]))
                    .into(),
            ),
        ]
    }
}

/// Query of `GET /v1/sagas/{id}`.
pub struct GetParams;

impl IntoParams for GetParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            wait(),
            query(
                "include",
                "attempts: every call and operator action; request: the request as accepted, \
                 secrets masked",
                pattern(words(&["attempts", "request"])),
            ),
        ]
    }
}

/// Query of `GET /v1/sagas`.
pub struct ListParams;

impl IntoParams for ListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let statuses: Vec<&str> = SagaStatus::all().map(SagaStatus::as_str).collect();
        vec![
            query(
                "status",
                "Comma-separated statuses",
                pattern(words(&statuses)),
            ),
            query("name", "Saga kind", pattern(optional(&NAME))),
            query(
                "limit",
                &format!("Page size (default {DEFAULT_PAGE})"),
                integer(*PAGE_SIZES.start(), *PAGE_SIZES.end(), "sagas"),
            ),
            query(
                "cursor",
                "next_cursor of the previous page",
                pattern(format!("^([0-9]{{1,15}}_{})?$", SAGA_ID.repeat())),
            ),
        ]
    }
}

/// Query of `GET /v1/counts`.
pub struct CountsParams;

impl IntoParams for CountsParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query(
            "name",
            &format!("Count only sagas of this kind (each count stops at {COUNT_CAP})"),
            pattern(optional(&NAME)),
        )]
    }
}

/// The saga id in a path.
pub struct IdParam;

impl IntoParams for IdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path("id", "Saga id", named(&SAGA_ID, false, "Saga id"))]
    }
}

/// The service label in a path.
pub struct ServiceParam;

impl IntoParams for ServiceParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path(
            "service",
            "An endpoint's service label (host:port by default)",
            named(&SERVICE, false, "Service label"),
        )]
    }
}

/// The step name in a path.
pub struct StepParam;

impl IntoParams for StepParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path("step", "Step name", named(&NAME, false, "Step name"))]
    }
}

/// Query of `GET /api/dtmsvr/query`.
pub struct DtmQueryParams;

impl IntoParams for DtmQueryParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let gid: Schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some(
                "Any gid: one that is not there answers a null transaction",
            ))
            .into();
        vec![ParameterBuilder::new()
            .name("gid")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .description(Some("The transaction's gid"))
            .schema(Some(gid))
            .build()]
    }
}

/// Query of `GET /api/dtmsvr/all` (DTM's paging).
pub struct DtmAllParams;

impl IntoParams for DtmAllParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let statuses = ["prepared", "submitted", "aborting", "succeed", "failed"];
        vec![
            query(
                "position",
                "next_position of the previous page",
                pattern(format!("^([0-9]{{1,15}}_{})?$", SAGA_ID.repeat())),
            ),
            query(
                "limit",
                "Page size (default 100)",
                integer(*PAGE_SIZES.start(), *PAGE_SIZES.end(), "transactions"),
            ),
            query(
                "status",
                "DTM's status",
                pattern(format!("^({})?$", statuses.join("|"))),
            ),
            query(
                "transType",
                "Only transactions submitted through /api/dtmsvr, of this type",
                pattern("^(saga|tcc|msg)?$".into()),
            ),
            query(
                "gid",
                "Only this transaction",
                ObjectBuilder::new().schema_type(Type::String).into(),
            ),
        ]
    }
}
