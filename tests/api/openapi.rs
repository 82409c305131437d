//! The OpenAPI document: valid OpenAPI 3.1 (checked by the independent `openapi-spec-validator`
//! from PyPI), and in step with the router: every documented operation is served and answers
//! with a documented status, every other method on a documented path is a 405, and no route
//! is registered outside the OpenAPI-aware router.

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::Value;

use crate::common::python;
use crate::helpers::spawn_app;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A request that reaches the handler of `method path` with placeholder ids.
fn probe(app: &crate::helpers::TestApp, method: &str, path: &str) -> reqwest::RequestBuilder {
    let concrete = path
        .replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{name}", "model.safetensors");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let request = app
        .client
        .request(method.clone(), app.url(&concrete))
        .header(AUTHORIZATION, app.bearer());
    match (method, path) {
        (Method::POST, "/api/v1/jobs") => request.json(&serde_json::json!({})),
        (Method::POST, "/api/v1/login") => request.json(&serde_json::json!({"code": "sqzl_x"})),
        (Method::POST, "/api/v1/models") => request
            .header("content-type", "application/octet-stream")
            .body(vec![0u8; 4]),
        _ => request,
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_matches_what_the_router_serves() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let validation = Command::new(python())
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.validation import OpenAPIV31SpecValidator\nvalidate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        validation.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&validation.stderr)
    );

    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in METHODS {
            let response = probe(&app, method, path).send().await.unwrap();
            let status = response.status().as_u16();
            // A team's event stream never ends on its own: its headers are the answer.
            let streaming = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body: Value = if streaming {
                Value::Null
            } else {
                response.json().await.unwrap_or(Value::Null)
            };
            let Some(operation) = item.get(method) else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is not documented but answered"
                );
                continue;
            };
            operations += 1;
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                body["code"], "unknown_endpoint",
                "{method} {path} is documented but not routed"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.contains_key(&status.to_string()),
                "{method} {path} answered {status}, which its entry does not list: {body}"
            );
            if status >= 400 {
                assert_eq!(body["status"], status, "{method} {path}: {body}");
            }
            assert!(
                operation["summary"].is_string() && operation["tags"].is_array(),
                "{method} {path} lacks a summary or tag"
            );
        }
    }
    assert!(operations >= 20, "only {operations} operations documented");
    // An operation of every resource is in the document.
    for expected in [
        "/api/v1/models",
        "/api/v1/jobs/{id}/events",
        "/api/v1/events",
        "/api/v1/jobs/{id}/files/{name}",
        "/healthz",
        "/metrics",
        "/api/openapi.json",
        "/api/docs",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    let unknown = app.get("/api/v1/no-such-thing").await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["code"], "unknown_endpoint");
}

#[tokio::test]
async fn the_reference_page_is_served_without_outside_resources() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("/api/openapi.json"));
    // Everything it loads comes from this server.
    for outside in ["http://", "https://", "//cdn"] {
        assert!(!html.contains(outside), "the page refers to {outside}");
    }
}

/// Routes registered on a plain axum router would escape the document; only the dashboard's
/// static files are served that way.
#[test]
fn no_route_is_registered_outside_the_documented_router() {
    fn scan(dir: &Path, offenders: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, offenders);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in [
                    ".route(",
                    ".route_service(",
                    ".nest_service(",
                    "Router::new(",
                ] {
                    for (n, line) in text.lines().enumerate() {
                        if line.contains(needle) && !line.contains("OpenApiRouter::new(") {
                            offenders.push(format!(
                                "{}:{}: {}",
                                path.display(),
                                n + 1,
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut offenders = Vec::new();
    scan(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut offenders,
    );
    assert!(
        offenders.is_empty(),
        "routes outside utoipa_axum::routes!: {offenders:#?}"
    );
}
