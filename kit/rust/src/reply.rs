//! The answer a participant gives: a status and a JSON body, written by the barrier's rules
//! (docs/barrier.md) and turned into a response by the actix-web or axum glue.

use serde_json::{json, Value};

/// An HTTP answer to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// Send `Retry-After: 1` (lock conflicts and other passing failures).
    pub retry_after: bool,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Reply {
        Reply::new(200, body)
    }

    /// Any status with `body`.
    pub fn new(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            retry_after: false,
        }
    }

    /// 400: the call is not a well-formed saga call.
    pub fn bad_request(msg: impl Into<String>) -> Reply {
        Reply::new(400, json!({"error": msg.into()}))
    }

    /// 409: the business refuses; the orchestrator compensates and does not retry.
    pub fn refused(msg: impl Into<String>) -> Reply {
        Reply::new(409, json!({"error": msg.into()}))
    }

    /// 500: a bug or an impossible request; the orchestrator retries, then the saga is stuck.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::new(500, json!({"error": msg.into()}))
    }

    /// 503 with `Retry-After`: try again (lock conflict, database down).
    pub fn retry(msg: impl Into<String>) -> Reply {
        Reply {
            retry_after: true,
            ..Reply::new(503, json!({"error": msg.into()}))
        }
    }
}

#[cfg(feature = "actix")]
mod actix_glue {
    use super::Reply;
    use actix_web::http::StatusCode;
    use actix_web::{body::BoxBody, HttpRequest, HttpResponse, Responder};

    impl Reply {
        /// The reply as an actix-web response.
        pub fn to_actix(&self) -> HttpResponse {
            let status =
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = HttpResponse::build(status);
            if self.retry_after {
                r.insert_header(("retry-after", "1"));
            }
            r.content_type("application/json")
                .body(self.body.to_string())
        }
    }

    impl Responder for Reply {
        type Body = BoxBody;
        fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
            self.to_actix()
        }
    }

    impl std::fmt::Display for Reply {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} {}", self.status, self.body)
        }
    }

    impl actix_web::ResponseError for Reply {
        fn status_code(&self) -> StatusCode {
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        fn error_response(&self) -> HttpResponse {
            self.to_actix()
        }
    }
}

#[cfg(feature = "axum")]
mod axum_glue {
    use super::Reply;
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};

    impl IntoResponse for Reply {
        fn into_response(self) -> Response {
            let status =
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (status, self.body.to_string()).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if self.retry_after {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}
