//! Reading request bodies and query strings into values, with contract-shaped errors.

use super::problem::Problem;
use crate::domain::limits::MAX_WAIT_MS;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;

/// Reads a JSON body of at most `limit` bytes: 415 without a JSON content type, 413 when too
/// large, 400 when malformed.
pub async fn json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Value, Problem> {
    json_type(req)?;
    let buf = read_limited(req, payload, limit).await?;
    parse_json(&buf)
}

/// Like [`json_body`], but an empty body is none, and the content type is not checked:
/// operator actions took no body before they took a reason, and `curl -d '{}'` (a form's
/// content type) must keep working.
pub async fn optional_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Option<Value>, Problem> {
    let buf = read_limited(req, payload, limit).await?;
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&buf).map(Some)
}

/// 415 unless the content type is JSON.
fn json_type(req: &HttpRequest) -> Result<(), Problem> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json"
        && !(essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("Content-Type must be application/json, not {:?}", ct),
        ));
    }
    Ok(())
}

/// The body's bytes: 413 over `limit`.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body exceeds server.max_body_bytes ({limit} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Malformed body",
                format!("cannot read the body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// 400 with the line and column when `buf` is not JSON.
fn parse_json(buf: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(buf).map_err(|e| {
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("the body is not valid JSON: {e}"),
        );
        // The whole document is at fault: pointer "" names it, for clients that read `errors`.
        p.errors = vec![super::problem::ProblemField {
            pointer: Some(String::new()),
            parameter: None,
            detail: format!("line {}, column {}: {e}", e.line(), e.column()),
        }];
        p
    })
}

/// The query string as a map; 400 if it cannot be decoded.
pub fn query_map(req: &HttpRequest) -> Result<HashMap<String, String>, Problem> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| {
            Problem::invalid_query(vec![(
                "".into(),
                format!("cannot decode the query string: {e}"),
            )])
        })
}

/// Parses `wait_ms` (0 when absent).
pub fn wait_ms(q: &HashMap<String, String>) -> Result<u64, (String, String)> {
    match q.get("wait_ms") {
        None => Ok(0),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_MS => Ok(n),
            _ => Err((
                "wait_ms".into(),
                format!("must be an integer from 0 to {MAX_WAIT_MS}"),
            )),
        },
    }
}
