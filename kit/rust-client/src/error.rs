//! Errors: the service's problem documents (RFC 9457, docs/api.md "Errors"), transport
//! failures, and answers that do not decode.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a call of the client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service (or something in front of it) answered with an error status.
    #[error("{0}")]
    Problem(Problem),
    /// No answer: connecting, sending or reading failed (or the HTTP client's timeout hit).
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// A success answer whose body is not the JSON the client expects.
    #[error("decoding the {status} answer of {what}: {source}")]
    Decode {
        /// The request, as `METHOD /path`.
        what: String,
        /// The answer's HTTP status.
        status: u16,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// Something the client cannot send: a base URL that is not http(s), a token that cannot
    /// be a header, an id or name that cannot be a path segment (`.`, `..`, empty).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Error {
    /// The problem document, when the service answered with an error status.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP status of an error answer (none for transport, decode and invalid-argument errors).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem(p) => Some(p.status),
            Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 404: unknown saga, definition, version or path.
    pub fn is_not_found(&self) -> bool {
        self.problem().is_some_and(Problem::is_not_found)
    }

    /// A 409: another request under this id, a retired definition version, a saga whose state
    /// refuses the operator action.
    pub fn is_conflict(&self) -> bool {
        self.problem().is_some_and(Problem::is_conflict)
    }
}

/// Result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The type of a problem made from an answer that was not `application/problem+json`.
pub const ABOUT_BLANK: &str = "about:blank";

/// An error answer (RFC 9457), as the service sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Problem {
    /// Problem type URI, e.g. `urn:saga-orchestrator:problem:invalid-request`; `about:blank`
    /// for an answer that was not a problem document (a proxy's 502, say).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// This occurrence, for people.
    pub detail: String,
    /// Every invalid field (400): a JSON `pointer` into the body or a query `parameter`.
    pub errors: Vec<FieldError>,
    /// The saga this id named ended and was purged (410 on a read, 409 on a start).
    pub purged: Option<Box<Purged>>,
    /// The answer's `Retry-After` in seconds (not part of the document); a u32, not a
    /// Duration, keeps `Error` under clippy's 128-byte line for `Result`s.
    #[serde(skip)]
    retry_after_secs: Option<u32>,
}

impl Problem {
    /// The last part of a `urn:saga-orchestrator:problem:` type (`not-found`,
    /// `definition-retired`…), or the whole type for any other.
    pub fn slug(&self) -> &str {
        self.kind
            .strip_prefix("urn:saga-orchestrator:problem:")
            .unwrap_or(&self.kind)
    }

    /// The answer's `Retry-After` (the service sends one with a 503), when it was a number of
    /// seconds.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_secs.map(|s| Duration::from_secs(s.into()))
    }

    /// A 404.
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }

    /// A 409.
    pub fn is_conflict(&self) -> bool {
        self.status == 409
    }

    /// The invalid field at this JSON Pointer, if the problem names it.
    pub fn field(&self, pointer: &str) -> Option<&FieldError> {
        self.errors
            .iter()
            .find(|e| e.pointer.as_deref() == Some(pointer))
    }

    /// The problem of an answer with `status` and `body`: the document when it is one, else a
    /// problem of that status whose detail is (the start of) the body, so that every error
    /// answer reads the same way.
    pub(crate) fn of_answer(status: u16, body: &[u8], retry_after_secs: Option<u32>) -> Problem {
        let mut p = serde_json::from_slice::<Problem>(body)
            .ok()
            .filter(|p| !p.kind.is_empty() && !p.title.is_empty())
            .unwrap_or_else(|| Problem {
                kind: ABOUT_BLANK.into(),
                title: reason(status).into(),
                status,
                detail: snippet(body),
                ..Problem::default()
            });
        // The status line is the truth; a document that says otherwise is someone else's.
        p.status = status;
        p.retry_after_secs = retry_after_secs;
        p
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)?;
        for e in &self.errors {
            let at = e
                .pointer
                .as_deref()
                .or(e.parameter.as_deref())
                .unwrap_or("");
            write!(f, "; {at}: {}", e.detail)?;
        }
        Ok(())
    }
}

/// One invalid field of a request: `pointer` into the body, or query `parameter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldError {
    /// JSON Pointer into the request body (`/steps/1/action/url`).
    pub pointer: Option<String>,
    /// Query parameter name (`limit`).
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// What is known of a purged saga while its id stays reserved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Purged {
    /// Its name.
    pub name: String,
    /// How it ended: succeeded or compensated.
    pub status: String,
    /// When it ended.
    pub finished_at: String,
    /// When it was purged.
    pub purged_at: String,
    /// The archive file holding it, if it was archived.
    pub archived_in: Option<String>,
    /// When the id is free again.
    pub reserved_until: String,
}

/// The reason phrase of a status, for a problem made from a bare answer.
fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The body as text, cut to a length fit for an error message.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_stays_small() {
        // Results carry it by value: clippy's result_large_err draws the line at 128 bytes.
        assert!(
            std::mem::size_of::<Error>() < 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn a_problem_document_is_read_as_sent() {
        let body =
            br#"{"type":"urn:saga-orchestrator:problem:invalid-request","title":"Invalid request",
            "status":400,"detail":"1 invalid field(s); see errors","new_field":1,
            "errors":[{"pointer":"/name","detail":"is required"}]}"#;
        let p = Problem::of_answer(400, body, None);
        assert_eq!(p.slug(), "invalid-request");
        assert_eq!(p.field("/name").unwrap().detail, "is required");
        assert!(p.to_string().contains("/name: is required"));
    }

    #[test]
    fn any_other_error_answer_becomes_a_problem_of_its_status() {
        let p = Problem::of_answer(502, b"<html>bad gateway</html>", None);
        assert_eq!((p.kind.as_str(), p.status), (ABOUT_BLANK, 502));
        assert_eq!(p.title, "Bad Gateway");
        assert_eq!(p.detail, "<html>bad gateway</html>");
        let p = Problem::of_answer(500, &[b'x'; 2000], None);
        assert_eq!(p.detail.chars().count(), 513);
        // JSON that is not a problem document is not taken for one.
        let p = Problem::of_answer(503, br#"{"message":"try again"}"#, None);
        assert_eq!((p.kind.as_str(), p.status), (ABOUT_BLANK, 503));
    }
}
