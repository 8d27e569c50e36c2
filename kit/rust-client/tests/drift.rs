//! The drift guard: the client's types against the component schemas of the running
//! service's `/openapi.json`, field for field, both ways. A field added to either side without
//! the other fails here.
//!
//! Response types: their fields are read from a `Default` instance serialized by serde (every
//! field serializes, `None` as null), so a new field of the struct is seen without a list to
//! keep. Request types skip absent fields, so they are written out in full below with struct
//! literals without `..Default::default()`: a new field does not compile until it is added.

mod common;

use saga_client::*;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The JSON keys serde writes for `v`.
fn keys<T: Serialize>(v: &T) -> BTreeSet<String> {
    match serde_json::to_value(v).unwrap() {
        Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// The fields of response type `T`.
fn fields<T: Serialize + Default>() -> BTreeSet<String> {
    keys(&T::default())
}

/// A component schema's properties and required properties.
fn schema(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = &doc["components"]["schemas"][name];
    let props = s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has no properties: {s}"))
        .keys()
        .cloned()
        .collect();
    let required = s["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    (props, required)
}

/// Every mismatch between a client type's fields and a schema, as lines of a report.
fn compare(
    doc: &Value,
    ty: &str,
    name: &str,
    client: &BTreeSet<String>,
    both_ways: bool,
) -> Vec<String> {
    let (props, required) = schema(doc, name);
    let mut out = vec![];
    for f in client.difference(&props) {
        out.push(format!("{ty}.{f}: not a property of the service's {name}"));
    }
    for f in required.difference(client) {
        out.push(format!(
            "{name}.{f} is required by the service but {ty} has no such field"
        ));
    }
    if both_ways {
        for f in props.difference(client).filter(|f| !required.contains(*f)) {
            out.push(format!("{name}.{f}: the service has it, {ty} does not"));
        }
    }
    out
}

fn full_endpoint() -> Endpoint {
    Endpoint {
        url: "http://h/a".into(),
        method: Some("POST".into()),
        headers: Some([("x".to_string(), json!("y"))].into()),
        body: Some(json!({})),
        delay_ms: Some(1),
        service: Some("s".into()),
    }
}

fn full_step() -> StepSpec {
    StepSpec {
        name: "a".into(),
        action: Some(full_endpoint()),
        compensation: Some(full_endpoint()),
        try_: Some(full_endpoint()),
        confirm: Some(full_endpoint()),
        cancel: Some(full_endpoint()),
        depends_on: Some(vec![]),
        timeout_ms: Some(1),
        retry: Some(full_retry()),
    }
}

fn full_retry() -> Retry {
    Retry {
        max_attempts: Some(1),
        initial_backoff_ms: Some(1),
        max_backoff_ms: Some(1),
        multiplier: Some(1.0),
    }
}

fn full_start() -> SagaStart {
    SagaStart {
        id: Some("i".into()),
        name: "n".into(),
        mode: Some(Mode::Saga),
        payload: Some(json!({})),
        timeout_ms: Some(1),
        retention_ms: Some(0),
        steps: vec![full_step()],
    }
}

fn full_definition_start() -> DefinitionStart {
    DefinitionStart {
        definition: "d".into(),
        version: Some(1),
        id: Some("i".into()),
        payload: Some(json!({})),
    }
}

fn union(a: BTreeSet<String>, b: BTreeSet<String>) -> BTreeSet<String> {
    a.union(&b).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_types_match_the_service_openapi() {
    let Some(svc) = common::service() else { return };
    let doc: Value = reqwest::get(format!("{}/openapi.json", svc.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let mut report = vec![];
    let mut extra = vec![];
    let mut check = |ty: &str, name: &str, client: BTreeSet<String>, both_ways: bool| {
        report.extend(compare(&doc, ty, name, &client, both_ways));
    };
    // Responses: what the client reads must be there, what the service sends must be read.
    check("Saga", "SagaView", fields::<Saga>(), true);
    check("Step", "StepView", fields::<Step>(), true);
    check("Call", "CallView", fields::<Call>(), true);
    check(
        "OperatorAction",
        "OperatorActionView",
        fields::<OperatorAction>(),
        true,
    );
    check("Action", "ActionView", fields::<Action>(), true);
    check("Page", "Page", fields::<Page>(), true);
    check(
        "DefinitionRef",
        "DefinitionRef",
        fields::<DefinitionRef>(),
        true,
    );
    check("Definition", "DefinitionView", fields::<Definition>(), true);
    check("Retired", "RetiredView", fields::<Retired>(), true);
    check("VersionInfo", "VersionView", fields::<VersionInfo>(), true);
    check(
        "DefinitionSummary",
        "DefinitionSummary",
        fields::<DefinitionSummary>(),
        true,
    );
    check(
        "DefinitionList",
        "DefinitionsAnswer",
        fields::<DefinitionList>(),
        true,
    );
    check("DryRun", "DryRunView", fields::<DryRun>(), true);
    check(
        "EndpointCheck",
        "EndpointCheck",
        fields::<EndpointCheck>(),
        true,
    );
    check("Plan", "Plan", fields::<Plan>(), true);
    check("StepPlan", "StepPlan", fields::<StepPlan>(), true);
    check("PhasePlan", "PhasePlan", fields::<PhasePlan>(), true);
    check("Problem", "Problem", fields::<Problem>(), true);
    check("FieldError", "ProblemField", fields::<FieldError>(), true);
    check("Purged", "PurgedView", fields::<Purged>(), true);

    // Requests: the service refuses unknown fields, and a field it adds should be offered.
    let saga_start = keys(&full_start());
    check("SagaStart", "SagaStart", saga_start.clone(), true);
    check("SagaStart", "TccStart", saga_start, true);
    // One step type for both modes: each mode's schema has part of its fields.
    let step = keys(&full_step());
    let (saga_step, saga_required) = schema(&doc, "SagaStep");
    let (tcc_step, tcc_required) = schema(&doc, "TccStep");
    for f in union(saga_required, tcc_required).difference(&step) {
        extra.push(format!(
            "SagaStep/TccStep.{f} is required by the service but StepSpec has no such field"
        ));
    }
    let both = union(saga_step, tcc_step);
    for f in step.symmetric_difference(&both) {
        extra.push(format!(
            "StepSpec.{f} / SagaStep+TccStep.{f}: on one side only"
        ));
    }
    // One endpoint type for calls and undos: `delay_ms` is an undo's only.
    let endpoint = keys(&full_endpoint());
    check("Endpoint", "UndoEndpoint", endpoint.clone(), true);
    let (action, _) = schema(&doc, "Endpoint");
    let mut forward = endpoint.clone();
    forward.remove("delay_ms");
    for f in forward.symmetric_difference(&action) {
        extra.push(format!(
            "Endpoint.{f} / schema Endpoint.{f}: on one side only"
        ));
    }
    check("Retry", "Retry", keys(&full_retry()), true);
    check(
        "DefinitionStart",
        "DefinitionStart",
        keys(&full_definition_start()),
        true,
    );
    report.extend(extra);

    assert!(
        report.is_empty(),
        "the client's types drifted from the service's /openapi.json:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn the_guard_sees_a_field_on_either_side() {
    let doc = json!({"components": {"schemas": {"DefinitionRef": {
        "properties": {"name": {}, "version": {}, "since": {}}, "required": ["name", "version"]}}}});
    let client = fields::<DefinitionRef>();
    let report = compare(&doc, "DefinitionRef", "DefinitionRef", &client, true);
    assert_eq!(
        report,
        ["DefinitionRef.since: the service has it, DefinitionRef does not"]
    );
    let mut more = client.clone();
    more.insert("colour".into());
    let report = compare(&doc, "DefinitionRef", "DefinitionRef", &more, false);
    assert_eq!(
        report,
        ["DefinitionRef.colour: not a property of the service's DefinitionRef"]
    );
    let doc = json!({"components": {"schemas": {"DefinitionRef": {
        "properties": {"name": {}}, "required": ["name", "kind"]}}}});
    let report = compare(&doc, "DefinitionRef", "DefinitionRef", &client, false);
    assert!(report.contains(
        &"DefinitionRef.version: not a property of the service's DefinitionRef".to_string()
    ));
    assert!(report.contains(
        &"DefinitionRef.kind is required by the service but DefinitionRef has no such field"
            .to_string()
    ));
}
