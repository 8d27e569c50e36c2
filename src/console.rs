//! The web console at `/ui`: the files of `ui/`, embedded in the binary at build time, so that it
//! needs no network and no files at run time. It is a client of the `/v1` API like any other
//! (it sends the operator's token with each call); serving it needs no token.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const HTML: &str = "text/html; charset=utf-8";
const INDEX: &str = include_str!("../ui/index.html");

/// The console's pages: one document, whose script reads the path (`/ui/sagas/{id}`: a saga,
/// `/ui/services`: the participant services, `/ui/definitions[/{name}]`: named definitions).
const PAGES: [&str; 6] = [
    "/ui",
    "/ui/",
    "/ui/sagas/{id}",
    "/ui/services",
    "/ui/definitions",
    "/ui/definitions/{name}",
];

/// Its other files: path, content type, content.
const FILES: [(&str, &str, &str); 3] = [
    (
        "/ui/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/console.js"),
    ),
    (
        "/ui/console.css",
        "text/css; charset=utf-8",
        include_str!("../ui/console.css"),
    ),
    (
        "/ui/favicon.svg",
        "image/svg+xml",
        include_str!("../ui/favicon.svg"),
    ),
];

/// Only our own files and API; nothing inline, nothing from elsewhere, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Registers `/` (a redirect), the console's pages and its files.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| async {
            HttpResponse::Found()
                .insert_header((header::LOCATION, "/ui"))
                .finish()
        }),
    );
    for page in PAGES {
        cfg.route(page, web::get().to(|| file(HTML, INDEX)));
    }
    for (path, content_type, body) in FILES {
        cfg.route(path, web::get().to(move || file(content_type, body)));
    }
}

async fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Revalidated on each load: a new binary serves its own console at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}
