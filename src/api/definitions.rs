//! Handlers of `/v1/definitions` (docs/api.md, "Definitions"): store a named definition's next
//! version, read them, retire a version. What a document may hold is `domain::catalog`'s rule.

use super::body::{json_body, optional_json_body};
use super::problem::Problem;
use super::resource::rfc3339;
use super::sagas::{admit_sample, caller, timed};
use super::schema::{DefinitionParam, VersionParams};
#[allow(unused_imports)] // named by the OpenAPI attributes
use super::schema::{DefinitionRequest, ReasonRequest};
use super::AppState;
use crate::domain::catalog::check_document;
use crate::domain::limits::NAME;
use crate::domain::parse_operator_body;
use crate::domain::SecretHeaders;
use crate::store::{Put, Retirement, StoredDefinition};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

type Result<T> = std::result::Result<T, Problem>;

/// A version's retirement.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetiredView {
    /// When.
    pub at: String,
    /// Who retired it.
    pub by: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One version of a named definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionView {
    /// The definition's name.
    pub name: String,
    /// This version, from 1.
    pub version: u32,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was stored.
    pub created_at: String,
    /// Who stored it (a token's name, the caller's address, or `file:NAME` from
    /// `definitions.dir`).
    pub created_by: String,
    /// Set once it takes no more starts (running sagas are not touched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<RetiredView>,
    /// The document, as given: a start request without id and payload, `$payload`
    /// references in endpoint bodies and header values.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Every version, newest first (`GET /v1/definitions/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionView>>,
}

/// One version in a definition's list of versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// The version.
    pub version: u32,
    /// When it was stored.
    pub created_at: String,
    /// Who stored it.
    pub created_by: String,
    /// When it was retired, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// A definition in the list of all.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionSummary {
    /// Its name.
    pub name: String,
    /// Its newest version.
    pub latest_version: u32,
    /// The version a start without one runs (the newest not retired); absent when every
    /// version is retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_version: Option<u32>,
    /// The newest version's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the newest version was stored.
    pub updated_at: String,
    /// Its mode (saga or tcc) and step names, newest version.
    pub mode: String,
    /// Its steps' names, newest version.
    pub steps: Vec<String>,
}

/// `GET /v1/definitions` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionsAnswer {
    /// Every definition, by name.
    pub items: Vec<DefinitionSummary>,
}

/// The view of one stored version: secret header values (`participant.secret_headers`) shown
/// as `***`, as in a saga's request; payload references are shown as they are.
pub fn view(d: StoredDefinition, secrets: &SecretHeaders) -> DefinitionView {
    DefinitionView {
        name: d.name,
        version: d.version,
        description: d.description,
        created_at: rfc3339(d.created_at),
        created_by: d.created_by,
        retired: d.retired.map(|r| RetiredView {
            at: rfc3339(r.at),
            by: r.who,
            reason: r.reason,
        }),
        definition: secrets.redact_request(&d.document),
        versions: None,
    }
}

fn not_found(name: &str, version: Option<u32>) -> Problem {
    let what = match version {
        Some(v) => format!("no version {v} of definition {name:?}"),
        None => format!("no definition named {name:?}"),
    };
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", what)
}

fn location(name: &str, version: u32) -> String {
    format!("/v1/definitions/{name}/versions/{version}")
}

/// `PUT /v1/definitions/{name}`
#[utoipa::path(put, path = "/v1/definitions/{name}", tag = "definitions", params(DefinitionParam),
    request_body(content = DefinitionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored as a new version", body = DefinitionView),
        (status = 200, description = "Identical to the latest version, which takes starts: no new version", body = DefinitionView),
        (status = 400, description = "Invalid definition (every mistake with its pointer), as a start would be refused; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a definition name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json")))]
pub async fn put(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let name = path.into_inner();
    if !NAME.is_valid(&name) {
        return Err(not_found(&name, None));
    }
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let checked = admit_sample(
        &state,
        check_document(&name, &body, &state.shared.defaults),
        |c| &c.sample,
    )
    .map_err(Problem::invalid_body)?;
    let at = state.shared.clock.now_ms();
    let put = timed(
        &state,
        state.definitions.put(
            &name,
            &checked.document,
            checked.description.as_deref(),
            at,
            &caller(&req),
        ),
    )
    .await?;
    let (code, d, action) = match put {
        Put::Created(d) => (StatusCode::CREATED, d, "created"),
        Put::Unchanged(d) => (StatusCode::OK, d, "unchanged"),
    };
    state
        .shared
        .metrics
        .definition_changes
        .with_label_values(&[action])
        .inc();
    tracing::info!(definition = %d.name, version = d.version, action, "definition");
    Ok(HttpResponse::build(code)
        .insert_header((header::LOCATION, location(&d.name, d.version)))
        .json(view(d, &state.secrets)))
}

/// `GET /v1/definitions`
#[utoipa::path(get, path = "/v1/definitions", tag = "definitions",
    responses((status = 200, description = "Every definition, by name", body = DefinitionsAnswer)))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse> {
    let all = timed(&state, state.definitions.list()).await?;
    let items = all
        .into_iter()
        .map(|(d, live)| DefinitionSummary {
            mode: d
                .document
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("saga")
                .to_string(),
            steps: d
                .document
                .get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("name").and_then(Value::as_str).map(String::from))
                .collect(),
            name: d.name,
            latest_version: d.version,
            live_version: (live > 0).then_some(live),
            description: d.description,
            updated_at: rfc3339(d.created_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DefinitionsAnswer { items }))
}

/// `GET /v1/definitions/{name}`
#[utoipa::path(get, path = "/v1/definitions/{name}", tag = "definitions", params(DefinitionParam),
    responses(
        (status = 200, description = "Its newest version, with the list of every version", body = DefinitionView),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json")))]
pub async fn get(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse> {
    let name = path.into_inner();
    if !NAME.is_valid(&name) {
        return Err(not_found(&name, None));
    }
    let versions = timed(&state, state.definitions.versions(&name)).await?;
    let list = versions
        .iter()
        .map(|d| VersionView {
            version: d.version,
            created_at: rfc3339(d.created_at),
            created_by: d.created_by.clone(),
            retired_at: d.retired.as_ref().map(|r| rfc3339(r.at)),
        })
        .collect();
    let newest = versions
        .into_iter()
        .next()
        .ok_or_else(|| not_found(&name, None))?;
    let mut v = view(newest, &state.secrets);
    v.versions = Some(list);
    Ok(HttpResponse::Ok().json(v))
}

/// The version in a path, or a 404 for one that cannot be.
fn version_in(path: (String, String)) -> Result<(String, u32)> {
    let (name, version) = path;
    match version.parse::<u32>() {
        Ok(v) if v >= 1 && NAME.is_valid(&name) => Ok((name, v)),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no version {version:?} of definition {name:?}"),
        )),
    }
}

/// `GET /v1/definitions/{name}/versions/{version}`
#[utoipa::path(get, path = "/v1/definitions/{name}/versions/{version}", tag = "definitions", params(VersionParams),
    responses(
        (status = 200, description = "That version", body = DefinitionView),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json")))]
pub async fn version(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (name, v) = version_in(path.into_inner())?;
    let d = timed(&state, state.definitions.version(&name, v))
        .await?
        .ok_or_else(|| not_found(&name, Some(v)))?;
    Ok(HttpResponse::Ok().json(view(d, &state.secrets)))
}

/// `POST /v1/definitions/{name}/versions/{version}/retire`
#[utoipa::path(post, path = "/v1/definitions/{name}/versions/{version}/retire", tag = "definitions", params(VersionParams),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Retired (or it was already: kept as it was); running sagas are not touched", body = DefinitionView),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over server.max_body_bytes", body = Problem, content_type = "application/problem+json")))]
pub async fn retire(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (name, v) = version_in(path.into_inner())?;
    let body = optional_json_body(&req, payload, state.max_body_bytes).await?;
    let reason = parse_operator_body(body.as_ref(), false).map_err(Problem::invalid_body)?;
    let r = Retirement {
        at: state.shared.clock.now_ms(),
        who: caller(&req),
        reason,
    };
    let (d, changed) = timed(&state, state.definitions.retire(&name, v, &r))
        .await?
        .ok_or_else(|| not_found(&name, Some(v)))?;
    if changed {
        state
            .shared
            .metrics
            .definition_changes
            .with_label_values(&["retired"])
            .inc();
        tracing::info!(definition = %name, version = v, "definition retired");
    }
    Ok(HttpResponse::Ok().json(view(d, &state.secrets)))
}
