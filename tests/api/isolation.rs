//! Tenant isolation, generated from the OpenAPI document: every operation that needs a token is
//! called on team A's real objects with team B's token, with no token, with a malformed one and
//! with a revoked one of team A. Only 401 and 404 may come back (team B may still act on its
//! own: list its empty collections, upload its own model), and no answer may carry team A's
//! ids or names. Team A's objects are all still there afterwards.

use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::common::{bf16_model, small_model};
use crate::helpers::{TestApp, spawn_app};
use crate::jobs::{submit, wait_final};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Team A's objects.
struct Owned {
    model: String,
    job: String,
    dataset: String,
}

async fn team_a_objects(app: &TestApp) -> Owned {
    let response = app
        .upload("secret-model-a", bf16_model(2, 16, 64, 41))
        .await;
    assert_eq!(response.status(), 201);
    let model = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"model_id": model, "preset": "int8", "name": "secret-job-a"});
    let response = submit(app, body, None).await;
    assert_eq!(response.status(), 202);
    let job = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_final(app, &job).await["state"], "succeeded");
    let response = app
        .client
        .post(app.url("/api/v1/datasets?name=secret-set-a"))
        .header(AUTHORIZATION, app.bearer())
        .header("content-type", "application/octet-stream")
        .body(b"{\"tokens\": [1, 2, 3]}\n{\"tokens\": [4, 5]}\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let dataset = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Owned {
        model,
        job,
        dataset,
    }
}

/// `method path` aimed at team A's objects, with `authorization` (or none).
fn request(
    app: &TestApp,
    owned: &Owned,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::RequestBuilder {
    let id = if path.starts_with("/api/v1/models") {
        &owned.model
    } else if path.starts_with("/api/v1/datasets") {
        &owned.dataset
    } else {
        &owned.job
    };
    let concrete = path
        .replace("{id}", id)
        .replace("{name}", "model.safetensors");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = app.client.request(method.clone(), app.url(&concrete));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    match (method, path) {
        (Method::GET, "/api/v1/compare") => request.query(&[("jobs", owned.job.as_str())]),
        (Method::GET, "/api/v1/jobs") => request.query(&[("model_id", owned.model.as_str())]),
        (Method::POST, "/api/v1/jobs") => {
            request.json(&json!({"model_id": owned.model, "preset": "int8"}))
        }
        (Method::POST, "/api/v1/models") => request
            .query(&[("name", "b-own-model")])
            .header("content-type", "application/octet-stream")
            .body(small_model(42)),
        (Method::POST, "/api/v1/datasets") => request
            .query(&[("name", "b-own-set"), ("model_id", owned.model.as_str())])
            .header("content-type", "application/octet-stream")
            .body(b"{\"tokens\": [1]}\n".to_vec()),
        _ => request,
    }
}

#[tokio::test]
async fn no_operation_reaches_another_teams_data_or_answers_without_a_valid_token() {
    let app = spawn_app().await;
    let owned = team_a_objects(&app).await;
    let team_b = app.token_of("team-b").await;
    let revoked = squeeze::auth::tokens::create(&app.state.db, "default", "revoked", true)
        .await
        .unwrap();
    assert!(
        squeeze::auth::tokens::revoke(&app.state.db, revoked.id)
            .await
            .unwrap()
    );
    let secrets = [
        owned.model.as_str(),
        owned.job.as_str(),
        owned.dataset.as_str(),
        "secret-model-a",
        "secret-job-a",
        "secret-set-a",
    ];
    let doc: Value = app.json_unauthenticated("/api/openapi.json").await;
    let mut calls = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let public = operation["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            });
            if public || path == "/api/v1/events" {
                continue;
            }
            let b = format!("Bearer {team_b}");
            let gone = format!("Bearer {}", revoked.token);
            for (who, authorization) in [
                ("team B", Some(b.as_str())),
                ("no token", None),
                ("malformed token", Some("Bearer not-a-token")),
                ("garbage scheme", Some("Basic dXNlcjpwYXNz")),
                ("revoked token", Some(gone.as_str())),
            ] {
                calls += 1;
                let response = request(&app, &owned, method, path, authorization)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let streaming = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                let text = if streaming {
                    String::new()
                } else {
                    response.text().await.unwrap()
                };
                // A 404 may repeat the id the caller sent in its `detail` (as it does for an id
                // that exists nowhere); nothing else of team A's may appear.
                let shown = if status == 404 {
                    let mut problem: Value = serde_json::from_str(&text).unwrap();
                    let detail = problem["detail"].take();
                    for name in &secrets[3..] {
                        assert!(
                            !detail.to_string().contains(name),
                            "{who}: {method} {path}: {text}"
                        );
                    }
                    problem.to_string()
                } else {
                    text.clone()
                };
                for secret in secrets {
                    assert!(
                        !shown.contains(secret),
                        "{who}: {method} {path} answered {status} with team A's {secret}: {text}"
                    );
                }
                if who == "team B" {
                    let own_action = (200..300).contains(&status)
                        && matches!(
                            (method, path.as_str()),
                            (
                                "get",
                                "/api/v1/models" | "/api/v1/jobs" | "/api/v1/datasets"
                            ) | (
                                "get",
                                "/api/v1/me" | "/api/v1/presets" | "/api/v1/evaluation/figures"
                            ) | ("get", "/api/v1/compare")
                                | ("post", "/api/v1/models" | "/api/v1/demo")
                        );
                    assert!(
                        own_action || status == 404 || status == 422,
                        "team B: {method} {path} answered {status}: {text}"
                    );
                } else {
                    assert_eq!(status, 401, "{who}: {method} {path}: {text}");
                }
            }
        }
    }
    assert!(calls >= 100, "only {calls} calls");
    // Team A's objects are untouched.
    for path in [
        format!("/api/v1/models/{}", owned.model),
        format!("/api/v1/jobs/{}", owned.job),
        format!("/api/v1/datasets/{}", owned.dataset),
    ] {
        assert_eq!(app.get(&path).await.status(), 200, "{path}");
    }
}
