//! Named, versioned saga definitions (docs/api.md, "Definitions"): what a stored definition may
//! hold, and how a start by definition becomes the full start request it stands for.
//!
//! A definition is the body of a full start without `id` and `payload`. Its endpoint bodies and
//! header values may take values from each start's payload by JSON Pointer: an object whose only
//! key is `"$payload"` (`{"$payload": "/order/id"}`) is replaced by the payload's value there.
//! Keys beginning with `$` are reserved inside those bodies; `$$` writes a literal `$`
//! (`{"$$payload": 1}` is sent as `{"$payload": 1}`).

use super::definition::{Defaults, SagaDefinition};
use super::limits::{MAX_REASON, NAME};
use super::secrets::ENDPOINTS;
use super::validation::{parse_request, token as escape, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key of a payload reference.
pub const REF: &str = "$payload";

/// Keys a definition document may not have, and why.
const NOT_IN_DEFINITION: [(&str, &str); 2] = [
    ("id", "a definition has no id: each start gives its own"),
    (
        "payload",
        "a definition has no payload: each start gives its own",
    ),
];

/// Keys of a start by definition.
const START_KEYS: [&str; 4] = ["definition", "version", "id", "payload"];

/// Which stored definition a saga was started from (shown by the resource and the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DefinitionRef {
    /// The definition's name.
    pub name: String,
    /// Its version.
    pub version: u32,
}

/// A definition document that passed every check of a start.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedDocument {
    /// The document as it is stored: the body given, `name` set to the definition's name.
    pub document: Value,
    /// Its optional description.
    pub description: Option<String>,
    /// The saga it describes with every reference left empty (for the outbound policy and the
    /// dry-run plan: references never reach a URL).
    pub sample: SagaDefinition,
}

/// Checks `body` as the document of definition `name`: every rule of a start, plus the
/// reference syntax. Every problem is named by its pointer into `body`.
pub fn check_document(
    name: &str,
    body: &Value,
    defaults: &Defaults,
) -> Result<CheckedDocument, Vec<FieldError>> {
    let mut errs = Vec::new();
    let err = |p: &str, d: &str| FieldError {
        pointer: p.into(),
        detail: d.into(),
    };
    if !NAME.is_valid(name) {
        return Err(vec![err(
            "",
            &format!("a definition's name must be {}", NAME.describe()),
        )]);
    }
    let Some(obj) = body.as_object() else {
        return Err(vec![err("", "a definition must be a JSON object")]);
    };
    let mut doc = obj.clone();
    for (key, why) in NOT_IN_DEFINITION {
        if doc.contains_key(key) {
            errs.push(err(&format!("/{key}"), why));
        }
    }
    match doc.get("name") {
        None => {
            doc.insert("name".into(), Value::String(name.into()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(_) => errs.push(err(
            "/name",
            &format!("must be {name:?}, the name in the path, or left out"),
        )),
    }
    let description = match doc.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_REASON => {
            Some(s.clone())
        }
        Some(_) => {
            errs.push(err(
                "/description",
                &format!("must be a non-blank string of at most {MAX_REASON} characters"),
            ));
            None
        }
    };
    // The start rules see the document with every reference stood in for by a value of its
    // kind, so that their pointers are the document's.
    let mut request = Value::Object(doc.clone());
    walk_endpoints(&mut request, &mut |v, at, header| {
        stand_in(v, at, header, &mut errs);
    });
    let request = match request {
        Value::Object(mut m) => {
            m.remove("description");
            for (key, _) in NOT_IN_DEFINITION {
                m.remove(key);
            }
            Value::Object(m)
        }
        v => v,
    };
    let parsed = parse_request(&request, defaults);
    match parsed {
        Ok(sample) if errs.is_empty() => Ok(CheckedDocument {
            document: Value::Object(doc),
            description,
            sample,
        }),
        Ok(_) => Err(errs),
        Err(more) => {
            errs.extend(more);
            Err(errs)
        }
    }
}

/// A start by definition, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct StartByDefinition {
    /// The definition's name.
    pub name: String,
    /// The version asked for; none: the latest that is not retired.
    pub version: Option<u32>,
}

/// Whether a start request names a definition instead of carrying its steps.
pub fn is_by_definition(body: &Value) -> bool {
    body.get("definition").is_some()
}

/// Parses the parts of a start by definition that choose the definition (`id` and `payload`
/// are checked as in a full start, when the definition is applied).
pub fn parse_start(body: &Value) -> Result<StartByDefinition, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut push = |p: String, d: String| {
        errs.push(FieldError {
            pointer: p,
            detail: d,
        })
    };
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError {
            pointer: String::new(),
            detail: "the request body must be a JSON object".into(),
        }]);
    };
    for k in obj.keys().filter(|k| !START_KEYS.contains(&k.as_str())) {
        push(
            format!("/{}", escape(k)),
            format!(
                "not allowed in a start by definition (the definition holds it); expected one \
                 of: {}",
                START_KEYS.join(", ")
            ),
        );
    }
    let name = match obj.get("definition") {
        Some(Value::String(s)) if NAME.is_valid(s) => s.clone(),
        _ => {
            push(
                "/definition".into(),
                format!("must be a definition's name: {}", NAME.describe()),
            );
            String::new()
        }
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => match v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
        {
            Some(n) => Some(n),
            None => {
                push(
                    "/version".into(),
                    "must be a version number (1 or more)".into(),
                );
                None
            }
        },
    };
    if errs.is_empty() {
        Ok(StartByDefinition { name, version })
    } else {
        Err(errs)
    }
}

/// The full start request that a start by definition stands for: the stored `document` with
/// every reference replaced by the start's payload value, and the start's `id` and `payload`.
/// A reference to a value the payload lacks (or, in a header, a value that is not a string,
/// number or boolean) is an error at its pointer into the payload.
pub fn apply(document: &Value, start: &Value) -> Result<Value, Vec<FieldError>> {
    let payload = start
        .get("payload")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut errs = Vec::new();
    let mut request = document.clone();
    walk_endpoints(&mut request, &mut |v, at, header| {
        substitute(v, at, header, &payload, &mut errs);
    });
    if !errs.is_empty() {
        return Err(errs);
    }
    if let Value::Object(m) = &mut request {
        m.remove("description");
        m.insert("payload".into(), payload);
        if let Some(id) = start.get("id") {
            m.insert("id".into(), id.clone());
        }
    }
    Ok(request)
}

/// Calls `f` on every endpoint body (`header: None`) and header value (`Some(name)`) of the
/// document's steps, with its pointer.
fn walk_endpoints(doc: &mut Value, f: &mut dyn FnMut(&mut Value, &str, Option<&str>)) {
    let Some(Value::Array(steps)) = doc.get_mut("steps") else {
        return;
    };
    for (i, step) in steps.iter_mut().enumerate() {
        for phase in ENDPOINTS {
            let Some(Value::Object(ep)) = step.get_mut(phase) else {
                continue;
            };
            let at = format!("/steps/{i}/{phase}");
            if let Some(body) = ep.get_mut("body") {
                f(body, &format!("{at}/body"), None);
            }
            if let Some(Value::Object(headers)) = ep.get_mut("headers") {
                for (name, value) in headers.iter_mut() {
                    let p = format!("{at}/headers/{}", escape(name));
                    f(value, &p, Some(name));
                }
            }
        }
    }
}

/// What `v` refers to, if it is a reference: `Ok(pointer)`, or why it is a malformed one.
fn reference(v: &Value) -> Option<Result<&str, String>> {
    let o = v.as_object()?;
    let p = o.get(REF)?;
    if o.len() != 1 {
        return Some(Err(format!(
            "a reference is an object with the one key {REF:?}; write \"$$\" for a literal \"$\""
        )));
    }
    match p.as_str() {
        Some(p) if is_pointer(p) => Some(Ok(p)),
        _ => Some(Err(
            "must be a JSON Pointer into the payload (\"\" or starting with \"/\")".into(),
        )),
    }
}

/// Whether `p` is a JSON Pointer (RFC 6901): empty, or `/`-separated tokens whose `~` is
/// followed by 0 or 1.
fn is_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    p.starts_with('/') && {
        let b = p.as_bytes();
        b.iter()
            .enumerate()
            .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
    }
}

/// Replaces every reference under `v` with a stand-in of its kind and unescapes `$$` keys,
/// reporting malformed references and reserved keys.
fn stand_in(v: &mut Value, at: &str, header: Option<&str>, errs: &mut Vec<FieldError>) {
    rewrite(v, at, header, errs, &mut |_, _| {
        Ok(if header.is_some() {
            Value::String(String::new())
        } else {
            Value::Null
        })
    });
}

/// Replaces every reference under `v` with the payload's value, unescaping `$$` keys.
fn substitute(
    v: &mut Value,
    at: &str,
    header: Option<&str>,
    payload: &Value,
    errs: &mut Vec<FieldError>,
) {
    rewrite(v, at, header, errs, &mut |p, used_at| {
        let found = payload.pointer(p).ok_or_else(|| FieldError {
            pointer: format!("/payload{p}"),
            detail: format!("is required by the definition (at {used_at})"),
        })?;
        match (header, found) {
            (None, v) => Ok(v.clone()),
            (Some(_), Value::String(s)) => Ok(Value::String(s.clone())),
            (Some(_), v @ (Value::Number(_) | Value::Bool(_))) => Ok(Value::String(v.to_string())),
            (Some(h), _) => Err(FieldError {
                pointer: format!("/payload{p}"),
                detail: format!(
                    "must be a string, number or boolean: header {h:?} takes it (at {used_at})"
                ),
            }),
        }
    });
}

/// The walk both passes share: a reference goes through `resolve` (pointer, where it is used);
/// `$$` keys lose one `$`; other `$` keys are refused. A header value must be a string or a
/// reference.
fn rewrite(
    v: &mut Value,
    at: &str,
    header: Option<&str>,
    errs: &mut Vec<FieldError>,
    resolve: &mut dyn FnMut(&str, &str) -> Result<Value, FieldError>,
) {
    match reference(v) {
        Some(Ok(p)) => {
            match resolve(p, at) {
                Ok(value) => *v = value,
                Err(e) => errs.push(e),
            }
            return;
        }
        Some(Err(why)) => {
            errs.push(FieldError {
                pointer: format!("{at}/{}", escape(REF)),
                detail: why,
            });
            return;
        }
        None => {}
    }
    if header.is_some() {
        // Anything else is the start rules' to judge (they want a string).
        return;
    }
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                rewrite(item, &format!("{at}/{i}"), None, errs, resolve);
            }
        }
        Value::Object(o) => {
            let old = std::mem::take(o);
            for (k, mut item) in old {
                let here = format!("{at}/{}", escape(&k));
                let key = match k.strip_prefix('$') {
                    Some(rest) if rest.starts_with('$') => rest.to_string(),
                    Some(_) => {
                        errs.push(FieldError {
                            pointer: here,
                            detail: format!(
                                "keys that begin with \"$\" are reserved in a definition: \
                                 {REF:?} (alone) takes a payload value, \"$$\" writes a \
                                 literal \"$\""
                            ),
                        });
                        continue;
                    }
                    None => k,
                };
                rewrite(&mut item, &here, None, errs, resolve);
                o.insert(key, item);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "description": "places an order",
            "steps": [
                {"name": "order",
                 "action": {"url": "http://orders.local/create",
                            "headers": {"x-user": {"$payload": "/user"}},
                            "body": {"id": {"$payload": "/order/id"}, "$$lit": {"$$payload": 1},
                                     "all": [{"$payload": ""}]}},
                 "compensation": {"url": "http://orders.local/cancel"}}
            ]
        })
    }

    #[test]
    fn a_document_is_checked_with_stand_ins_and_keeps_its_references() {
        let c = check_document("place_order", &doc(), &Defaults::default()).unwrap();
        assert_eq!(c.document["name"], "place_order");
        assert_eq!(c.description.as_deref(), Some("places an order"));
        assert_eq!(
            c.document["steps"][0]["action"]["body"]["id"],
            json!({"$payload": "/order/id"})
        );
        assert_eq!(c.sample.name, "place_order");
        assert_eq!(
            c.sample.steps[0].forward.body.as_ref().unwrap()["id"],
            Value::Null
        );
        assert_eq!(
            c.sample.steps[0].forward.body.as_ref().unwrap()["$lit"],
            json!({"$payload": 1})
        );
    }

    #[test]
    fn a_start_applies_the_payload_values() {
        let c = check_document("place_order", &doc(), &Defaults::default()).unwrap();
        let start = json!({"definition": "place_order", "id": "o-1",
                           "payload": {"user": 42, "order": {"id": "A7"}}});
        let req = apply(&c.document, &start).unwrap();
        let def = parse_request(&req, &Defaults::default()).unwrap();
        let body = def.steps[0].forward.body.clone().unwrap();
        assert_eq!(body["id"], "A7");
        assert_eq!(body["$lit"], json!({"$payload": 1}));
        assert_eq!(body["all"][0], json!({"user": 42, "order": {"id": "A7"}}));
        assert_eq!(
            def.steps[0].forward.headers,
            vec![("x-user".to_string(), "42".to_string())]
        );
        assert_eq!(def.id.as_deref(), Some("o-1"));
        assert_eq!(def.payload["user"], 42);
    }

    #[test]
    fn missing_and_unfit_payload_values_are_named_by_their_pointer() {
        let c = check_document("place_order", &doc(), &Defaults::default()).unwrap();
        let errs = apply(&c.document, &json!({"payload": {"user": {"a": 1}}})).unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/payload/order/id", "/payload/user"]);
        assert!(errs[0].detail.contains("/steps/0/action/body/id"));
        assert!(errs[1].detail.contains("header \"x-user\""));
    }

    #[test]
    fn reserved_keys_bad_references_and_start_fields_are_refused() {
        let bad = json!({"id": "x", "payload": {}, "name": "other",
            "steps": [{"name": "a", "action": {"url": "http://a.local/",
                "headers": {"h": {"$payload": "no-slash"}},
                "body": {"$set": 1, "r": {"$payload": "/a", "extra": 1}}}}]});
        let errs = check_document("place_order", &bad, &Defaults::default()).unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/id",
            "/payload",
            "/name",
            "/steps/0/action/headers/h/$payload",
            "/steps/0/action/body/$set",
            "/steps/0/action/body/r/$payload",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
    }

    #[test]
    fn start_rules_apply_to_documents_with_the_documents_pointers() {
        let bad = json!({"steps": [{"name": "a", "action": {"url": "ftp://x"}}]});
        let errs = check_document("d", &bad, &Defaults::default()).unwrap_err();
        assert_eq!(errs[0].pointer, "/steps/0/action/url");
        assert!(check_document("not a name!", &json!({}), &Defaults::default()).is_err());
    }

    #[test]
    fn a_start_by_definition_takes_only_its_own_fields() {
        assert_eq!(
            parse_start(&json!({"definition": "d", "version": 3})).unwrap(),
            StartByDefinition {
                name: "d".into(),
                version: Some(3)
            }
        );
        let errs = parse_start(&json!({"definition": "d", "version": 0, "steps": []})).unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/steps", "/version"]);
        assert!(parse_start(&json!({"definition": 7})).is_err());
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        for ok in ["", "/", "/a~0b/c~1d", "/0"] {
            assert!(is_pointer(ok), "{ok}");
        }
        for bad in ["a", "/a~2", "/a~"] {
            assert!(!is_pointer(bad), "{bad}");
        }
    }
}
