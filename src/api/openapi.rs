//! The OpenAPI 3.1 document of the whole HTTP surface and its reference page.
//!
//! The document is generated from the code: every route is registered through
//! `utoipa_axum::routes!`, which reads the `#[utoipa::path]` attribute on its handler, so a route
//! cannot exist without its entry. What the attributes leave implicit is filled in here, once,
//! for every operation: the bearer security scheme, the problem+json body of every error
//! response, the 401 of every authenticated operation and a `default` response for server
//! faults. `/api/openapi.json` serves it; `/api/docs` is a self-contained page (no CDN) that
//! renders it.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::json;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::error::{PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "squeeze",
        description = "Compression as a service for ML models: upload safetensors models, run pruning and quantization recipes as durable jobs, evaluate the original and the compressed model side by side on your evaluation sets, download the artifacts and compare their size, latency and accuracy.\n\nAuthenticate with `Authorization: Bearer sqz_...`. Every error is an RFC 9457 problem object (`application/problem+json`) with a stable `code`.\n\n**Limits** (defaults; the server's flags change the first five): uploads 64 GiB (`--max-upload`, 413); evaluation sets 256 MiB (`--max-dataset`, 413); an upload stalled 60 s (`--upload-idle-secs`, 408); 4096 connections (`--max-connections`, 503 `too_many_connections`); a request head or idle keep-alive of 15 s (`--header-timeout-secs`, connection closed); other request bodies 256 KiB (413); 100 headers and 64 KiB of them (431 `headers_too_large`); path and query 8 KiB (414 `uri_too_long`); safetensors headers of 100 MB, 262,144 tensors, 16 dimensions, names of 1,024 bytes (422); `config.json` 1 MiB, shard index 16 MiB, other side files 64 MiB (413); recipes with 1,024 `targets` + `ignore` patterns, 32 of them `re:`, 1,024 bytes each, each compiling to at most 256 KiB (422 `too_many_patterns`, `bad_pattern`); text holding U+0000 (422 `nul_character`); 10 sign-in attempts a minute per address (429 `too_many_attempts`). Figures that are not finite numbers are the strings `\"NaN\"`, `\"Infinity\"` and `\"-Infinity\"`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(Problem)),
    tags(
        (name = "models", description = "Uploaded models and their tensors"),
        (name = "jobs", description = "Compression jobs, their progress, reports and artifacts"),
        (name = "datasets", description = "Evaluation sets for latency and accuracy"),
        (name = "session", description = "Identity and browser sign-in"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
struct ApiDoc;

/// Raw bytes in a request or response body (a file).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// Name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// The routes of this module: the document and its page.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_script))
}

/// The base document the router's paths are added to.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The finished document for the whole router.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = crate::api::routes().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(
            BEARER.to_owned(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`sqz_` + 43 characters) from `squeeze token create` or the dashboard sign-in",
                    ))
                    .build(),
            )),
        );
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete_responses(operation);
        }
    }
    doc
}

/// Adds what every operation shares: problem bodies, 401, and the `default` response.
fn complete_responses(operation: &mut Operation) {
    let public = operation
        .security
        .as_ref()
        .is_some_and(|s| serde_json::to_value(s).ok() == Some(json!([{}])));
    let responses = &mut operation.responses.responses;
    if !public {
        responses
            .entry("401".to_owned())
            .or_insert_with(|| RefOr::T(Response::new("No valid bearer token")));
    }
    responses.entry("default".to_owned()).or_insert_with(|| {
        RefOr::T(Response::new(
            "Any other failure: 500 (a server fault, logged with the request id) or 503 (the database is unavailable)",
        ))
    });
    for (status, response) in responses.iter_mut() {
        let is_error = status == "default" || status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
            && status != "304"
        {
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
            );
        }
    }
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// The OpenAPI document
///
/// This API described as OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// API reference page
///
/// A page that renders the OpenAPI document for people: every operation with its parameters,
/// bodies, responses and schemas, and a curl line to start from.
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "operations",
    security(()),
    responses((status = 200, description = "HTML", body = String, content_type = "text/html"))
)]
async fn docs_page() -> Html<&'static str> {
    Html(include_str!("openapi_page.html"))
}

/// API reference page's script
///
/// The reference page's script: a file of its own, so the page runs under the same content
/// security policy as the dashboard (no inline scripts).
#[utoipa::path(
    get,
    path = "/api/docs.js",
    tag = "operations",
    security(()),
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript"))
)]
async fn docs_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("openapi_page.js"),
    )
}
