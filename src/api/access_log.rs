//! HTTP access logs (tracing-actix-web) whose request span also carries `saga_id`, so that every
//! log line about a saga, access lines included, can be found by that one field; and `who`, the
//! name of the caller's token (recorded by `api::auth`).

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
        match saga_id_in_path(request.path()) {
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
        }
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
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
