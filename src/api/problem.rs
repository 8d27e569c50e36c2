//! RFC 9457 problem documents: the one shape of every error answer.

use super::resource::rfc3339;
use crate::domain::FieldError;
use crate::store::Tombstone;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One invalid field (`pointer` into the body) or query parameter (`parameter`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// JSON Pointer into the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Query parameter name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// An error answer (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// This occurrence, for people.
    pub detail: String,
    /// Every invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// The saga this id named ended and was purged (410 on a read, 409 on a start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged: Option<Box<PurgedView>>,
}

/// What is known of a purged saga while its id stays reserved.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgedView {
    /// Its name.
    pub name: String,
    /// How it ended: succeeded or compensated.
    pub status: String,
    /// When it ended.
    pub finished_at: String,
    /// When it was purged.
    pub purged_at: String,
    /// The archive file holding it (under `retention.archive_dir`), if it was archived.
    pub archived_in: Option<String>,
    /// When the id is free again (404 from then on).
    pub reserved_until: String,
}

impl PurgedView {
    fn of(t: &Tombstone) -> Self {
        PurgedView {
            name: t.name.clone(),
            status: t.status.as_str().to_string(),
            finished_at: rfc3339(t.finished_at),
            purged_at: rfc3339(t.purged_at),
            archived_in: t.archived_in.clone(),
            reserved_until: rfc3339(t.expires_at),
        }
    }

    fn sentence(&self) -> String {
        let archived = match &self.archived_in {
            Some(f) => format!(", archived in {f}"),
            None => String::new(),
        };
        format!(
            "{} {} at {}, purged at {}{archived}; the id stays reserved until {}",
            self.name, self.status, self.finished_at, self.purged_at, self.reserved_until
        )
    }
}

impl Problem {
    /// A problem of `status` with a type slug and title.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:saga-orchestrator:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            purged: None,
        }
    }

    /// 410 for a read of a purged saga.
    pub fn saga_purged(t: &Tombstone) -> Self {
        let v = PurgedView::of(t);
        let mut p = Problem::new(
            StatusCode::GONE,
            "purged",
            "Purged",
            format!("saga {:?} ended and was purged: {}", t.id, v.sentence()),
        );
        p.purged = Some(Box::new(v));
        p
    }

    /// 409 for a start under the id of a purged saga.
    pub fn start_purged(t: &Tombstone, same_request: bool) -> Self {
        let v = PurgedView::of(t);
        let same = if same_request {
            "this request already ran under it"
        } else {
            "a different request ran under it"
        };
        let mut p = Problem::new(
            StatusCode::CONFLICT,
            "purged",
            "Id reserved by a purged saga",
            format!(
                "saga {:?} cannot be started: {same} ({}); a late retry never runs a saga twice",
                t.id,
                v.sentence()
            ),
        );
        p.purged = Some(Box::new(v));
        p
    }

    /// 400 listing every invalid part of the request.
    fn invalid(what: &str, errors: Vec<ProblemField>) -> Self {
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            format!("{} invalid {what}; see errors", errors.len()),
        );
        p.errors = errors;
        p
    }

    /// 400 listing invalid body fields.
    pub fn invalid_body(errors: Vec<FieldError>) -> Self {
        let fields = errors
            .into_iter()
            .map(|e| ProblemField {
                pointer: Some(e.pointer),
                parameter: None,
                detail: e.detail,
            })
            .collect();
        Problem::invalid("field(s)", fields)
    }

    /// 400 listing invalid query parameters.
    pub fn invalid_query(errors: Vec<(String, String)>) -> Self {
        let fields = errors
            .into_iter()
            .map(|(k, d)| ProblemField {
                pointer: None,
                parameter: Some(k),
                detail: d,
            })
            .collect();
        Problem::invalid("query parameter(s)", fields)
    }

    /// 404 for a saga id.
    pub fn saga_not_found(id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no saga with id {id:?}"),
        )
    }

    /// 503: the saga log or an actor cannot answer now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.content_type("application/problem+json");
        if self.status == 503 {
            r.insert_header(("Retry-After", "1"));
        }
        r.body(serde_json::to_string(self).unwrap_or_default())
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Unavailable(why) = e {
            // Back-pressure: counted and logged where it arises, not per request.
            return Problem::unavailable(format!("no new saga is taken now: {why}; try again"));
        }
        tracing::error!(error = %e, "saga log error");
        Problem::unavailable(format!("the saga log cannot answer now: {e}"))
    }
}

/// 404 for any path the API does not have.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no such resource: {}", req.path()),
    )
    .error_response()
}

/// 405 for a known path with another method, with the `Allow` header RFC 9110 requires.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Fn(actix_web::HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    move |req| {
        let mut resp = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!(
                "{} is not allowed on {} (only {allow})",
                req.method(),
                req.path()
            ),
        )
        .error_response();
        resp.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        std::future::ready(resp)
    }
}
