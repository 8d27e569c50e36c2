//! The bearer-token check each route declares (`api::routes`; the rules are in `crate::auth`):
//! a 401 or 403 problem, or the caller's token name for `who` and the access log.

use super::problem::Problem;
use super::resource::Whoami;
use crate::auth::{Denied, Scope, Tokens};
use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures::future::LocalBoxFuture;

/// The caller a token named, in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// The response of a route's scope check: the route's own, or a 401/403 problem.
type Checked = Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error>;

/// A route's check, declared where the route is (`api::routes`): with tokens configured, the
/// caller's token must have `scope`; its name becomes `who`.
pub fn needs(
    scope: Scope,
) -> impl Fn(ServiceRequest, Next<BoxBody>) -> LocalBoxFuture<'static, Checked> {
    move |req, next| Box::pin(guard(req, next, Some(scope)))
}

/// The listener on which `/api/dtmsvr` needs no token (`dtm.allow_anonymous`), in app data.
#[derive(Debug, Clone, Copy)]
pub struct AnonymousDtm(pub std::net::SocketAddr);

impl AnonymousDtm {
    /// Whether a connection to `local` came in on this listener.
    fn serves(&self, local: std::net::SocketAddr) -> bool {
        local.port() == self.0.port() && (self.0.ip().is_unspecified() || self.0.ip() == local.ip())
    }
}

/// A DTM route's check: as [`needs`], except on the `dtm.bind` listener when
/// `dtm.allow_anonymous` is set.
pub fn needs_dtm(
    scope: Scope,
) -> impl Fn(ServiceRequest, Next<BoxBody>) -> LocalBoxFuture<'static, Checked> {
    move |req, next| {
        let anonymous = req
            .app_data::<web::Data<AnonymousDtm>>()
            .is_some_and(|a| a.serves(req.app_config().local_addr()));
        Box::pin(async move {
            if anonymous {
                next.call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body)
            } else {
                guard(req, next, Some(scope)).await
            }
        })
    }
}

/// `/metrics`'s check: open, unless `auth.metrics_scope` names a scope.
pub fn needs_metrics_scope(
) -> impl Fn(ServiceRequest, Next<BoxBody>) -> LocalBoxFuture<'static, Checked> {
    move |req, next| Box::pin(guard(req, next, None))
}

/// Lets a request through when its token has `scope` (none: `auth.metrics_scope`).
async fn guard(req: ServiceRequest, next: Next<BoxBody>, scope: Option<Scope>) -> Checked {
    let tokens = req.app_data::<web::Data<Tokens>>().cloned();
    let needs = tokens
        .as_ref()
        .filter(|t| !t.is_open())
        .and_then(|t| scope.or(t.metrics_scope).map(|n| (t, n)));
    let Some((tokens, needs)) = needs else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let denied = match tokens.check(presented, needs) {
        Ok(name) => {
            record_who(&req, name);
            req.extensions_mut().insert(Caller(name.to_string()));
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Err(d) => d,
    };
    let mut resp = match denied {
        Denied::Unauthenticated(why) => {
            let mut r = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                why,
            )
            .error_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"saga-orchestrator\""),
            );
            r
        }
        Denied::Forbidden { name, needs } => {
            record_who(&req, &name);
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("the token {name:?} lacks the {} scope", needs.as_str()),
            )
            .error_response()
        }
    };
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(req.into_response(resp).map_into_right_body())
}

/// `GET /v1/whoami`: the caller's token name and scopes, so that the console offers only what
/// the token allows (and says why the rest is disabled).
#[utoipa::path(get, path = "/v1/whoami", tag = "service",
    responses((status = 200, description = "The caller", body = Whoami)))]
pub async fn whoami(req: HttpRequest, tokens: web::Data<Tokens>) -> HttpResponse {
    let name = req.extensions().get::<Caller>().map(|c| c.0.clone());
    let scopes = match &name {
        Some(n) => tokens.scopes_of(n),
        None => Scope::ALL.to_vec(), // no tokens: open
    };
    HttpResponse::Ok().json(Whoami {
        name,
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        tokens_required: !tokens.is_open(),
    })
}

/// Puts the token's name (never the token) on the request's access-log lines.
fn record_who(req: &ServiceRequest, name: &str) {
    if let Some(span) = req.extensions().get::<tracing_actix_web::RootSpan>() {
        span.record("who", name);
    }
}
