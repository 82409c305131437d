//! One error shape everywhere: problem+json for our errors and the framework's rejections.

use serde_json::Value;

use crate::helpers::{is_problem, spawn_app};

#[tokio::test]
async fn framework_rejections_are_problem_json_too() {
    let app = spawn_app().await;
    let cases = [
        (app.get("/api/v1/nothing-here").await, 404),
        (app.get("/api/v1/models/not-a-uuid").await, 400),
        (app.get("/api/v1/models?limit=abc").await, 400),
        (
            app.client
                .patch(app.url("/api/v1/models"))
                .header("authorization", app.bearer())
                .send()
                .await
                .unwrap(),
            405,
        ),
        (
            app.client
                .post(app.url("/api/v1/login"))
                .header("content-type", "application/json")
                .body("{broken")
                .send()
                .await
                .unwrap(),
            400,
        ),
        (
            app.client
                .post(app.url("/api/v1/models"))
                .header("authorization", app.bearer())
                .header("content-type", "text/plain")
                .body("hello")
                .send()
                .await
                .unwrap(),
            415,
        ),
        (
            app.client
                .post(app.url("/api/v1/login"))
                .header("content-type", "application/json")
                .body(vec![b' '; 3 << 20])
                .send()
                .await
                .unwrap(),
            413,
        ),
    ];
    for (response, status) in cases {
        let url = response.url().to_string();
        assert_eq!(response.status().as_u16(), status, "{url}");
        assert!(is_problem(&response), "{url}");
        assert!(response.headers().contains_key("x-request-id"), "{url}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{url}");
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:squeeze:problem:")
        );
    }
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let health: Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn the_dashboard_is_served_at_the_root() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("squeeze"));
}

#[tokio::test]
async fn metrics_are_exposed_for_prometheus() {
    let app = spawn_app().await;
    assert_eq!(
        app.upload("m", crate::common::small_model(1))
            .await
            .status(),
        201
    );
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "squeeze_jobs{state=\"queued\"}",
        "squeeze_queue_depth",
        "squeeze_job_duration_seconds_count",
        "squeeze_upload_bytes_total",
        "squeeze_workers 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let uploaded: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("squeeze_upload_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(uploaded >= crate::common::small_model(1).len() as f64);
}
