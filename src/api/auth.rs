//! The bearer-token check in front of every route (the rules are in `crate::auth`): a 401 or 403
//! problem, or the caller's token name for `who` and the access log.

use super::problem::Problem;
use super::resource::Whoami;
use crate::auth::{Denied, Scope, Tokens};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

/// The caller a token named, in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Lets a request through when its token has the scope its route needs.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let tokens = req.app_data::<web::Data<Tokens>>().cloned();
    let needs = tokens
        .as_ref()
        .filter(|t| !t.is_open())
        .and_then(|t| t.needs(req.method().as_str(), req.path()).map(|n| (t, n)));
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
