//! HTTP access logs (tracing-actix-web) whose request span also carries `saga_id`, so that every
//! log line about a saga, access lines included, can be found by that one field; and `who`, the
//! name of the caller's token (recorded by `api::auth`).

use crate::domain::TraceContext;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// The saga id in a `/v1/sagas/{id}[/…]` path.
pub fn saga_id_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/sagas/")?;
    let id = rest.split('/').next().unwrap_or_default();
    (!id.is_empty()).then_some(id)
}

/// Root span of every request: the default fields plus `saga_id` (from the path, or recorded by
/// the start handler once the body is read).
pub struct SagaRootSpan;

impl RootSpanBuilder for SagaRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // The id must be in the span from its creation: the START line is written then.
        let span = match saga_id_in_path(request.path()) {
            Some(id) => tracing_actix_web::root_span!(
                request,
                saga_id = %id,
                who = tracing::field::Empty
            ),
            None => tracing_actix_web::root_span!(
                request,
                saga_id = tracing::field::Empty,
                who = tracing::field::Empty
            ),
        };
        exported_under_caller(request, &span);
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The trace context of a request's `traceparent` and `tracestate` headers (several
/// `tracestate` fields joined), or a new trace with `new_trace_id` when there is none or it is
/// malformed.
pub fn caller_trace(
    headers: &actix_web::http::header::HeaderMap,
    new_trace_id: impl FnOnce() -> String,
) -> TraceContext {
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let state: Vec<&str> = headers
        .get_all("tracestate")
        .filter_map(|v| v.to_str().ok())
        .collect();
    TraceContext::from_headers(parent, &state, new_trace_id)
}

/// When exporting: an API request's span is the child of the caller's `traceparent` (parsed by
/// the one strict rule, `domain::trace`); scrapes, health checks and the console's files are
/// never exported.
fn exported_under_caller(request: &ServiceRequest, span: &Span) {
    if !crate::telemetry::exporting() {
        return;
    }
    let path = request.path();
    if !(path.starts_with("/v1/") || path == "/v1" || path.starts_with("/api/")) {
        return crate::telemetry::unsampled(span);
    }
    let caller = caller_trace(request.headers(), String::new);
    if caller.parent_id.is_some() {
        crate::telemetry::set_parent(span, &caller);
    }
}

#[cfg(test)]
mod tests {
    use super::saga_id_in_path;

    #[test]
    fn saga_ids_are_read_from_paths() {
        assert_eq!(saga_id_in_path("/v1/sagas/order-1"), Some("order-1"));
        assert_eq!(saga_id_in_path("/v1/sagas/order-1/retry"), Some("order-1"));
        assert_eq!(saga_id_in_path("/v1/sagas"), None);
        assert_eq!(saga_id_in_path("/v1/sagas/"), None);
        assert_eq!(saga_id_in_path("/healthz"), None);
    }
}
