//! Tokens and team isolation.

use serde_json::Value;

use crate::common::small_model;
use crate::helpers::{is_problem, spawn_app};

#[tokio::test]
async fn missing_wrong_and_revoked_tokens_get_401() {
    let app = spawn_app().await;
    let no_token = app
        .client
        .get(app.url("/api/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(is_problem(&no_token));
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");

    for bad in [
        "nope",
        "sqz_0000000000000000000000000000000000000000000",
        &"x".repeat(5000),
    ] {
        assert_eq!(
            app.get_as(bad, "/api/v1/models").await.status(),
            401,
            "{bad}"
        );
    }
    let basic = app
        .client
        .get(app.url("/api/v1/models"))
        .header("authorization", format!("Basic {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    let issued = squeeze::auth::tokens::create(&app.state.db, "default", "temp", false)
        .await
        .unwrap();
    assert_eq!(
        app.get_as(&issued.token, "/api/v1/models").await.status(),
        200
    );
    assert!(
        squeeze::auth::tokens::revoke(&app.state.db, issued.id)
            .await
            .unwrap()
    );
    assert_eq!(
        app.get_as(&issued.token, "/api/v1/models").await.status(),
        401
    );
    // Revoking twice reports that nothing was live.
    assert!(
        !squeeze::auth::tokens::revoke(&app.state.db, issued.id)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let issued = squeeze::auth::tokens::create(&app.state.db, "hashes", "t", false)
        .await
        .unwrap();
    let dump: Vec<String> = sqlx::query_scalar("select row_to_json(t)::text from tokens t")
        .fetch_all(&app.state.db)
        .await
        .unwrap();
    let all = dump.concat();
    assert!(!all.contains(&issued.token));
    assert!(
        !all.contains(&issued.token[12..]),
        "the secret part must not be stored"
    );
    assert!(!all.contains(&app.token[12..]));
}

#[tokio::test]
async fn another_teams_model_is_indistinguishable_from_a_missing_one() {
    let app = spawn_app().await;
    let model: Value = app
        .upload("private", small_model(1))
        .await
        .json()
        .await
        .unwrap();
    let id = model["id"].as_str().unwrap();
    let other = app.token_of("team-b").await;

    let theirs = app.get_as(&other, &format!("/api/v1/models/{id}")).await;
    assert_eq!(theirs.status(), 404);
    let theirs_headers = theirs.headers().clone();
    let theirs: Value = theirs.json().await.unwrap();
    let missing_id = uuid::Uuid::now_v7().to_string();
    let missing: Value = app
        .get_as(&other, &format!("/api/v1/models/{missing_id}"))
        .await
        .json()
        .await
        .unwrap();
    let normalise = |v: &Value, id: &str| v.to_string().replace(id, "ID");
    assert_eq!(normalise(&theirs, id), normalise(&missing, &missing_id));
    assert_eq!(theirs_headers["content-type"], "application/problem+json");

    assert_eq!(
        app.get_as(&other, &format!("/api/v1/models/{id}/tensors"))
            .await
            .status(),
        404
    );
    let listed: Value = app
        .get_as(&other, "/api/v1/models")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    let delete = app
        .client
        .delete(app.url(&format!("/api/v1/models/{id}")))
        .header("authorization", format!("Bearer {other}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    // Still there for its own team.
    assert_eq!(app.get(&format!("/api/v1/models/{id}")).await.status(), 200);
}

#[tokio::test]
async fn a_login_code_signs_in_once() {
    let app = spawn_app().await;
    let code = squeeze::auth::tokens::create_login_code(
        &app.state.db,
        "default",
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    let login = |code: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/login"))
                .json(&serde_json::json!({"code": code}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = login(code.clone()).await;
    assert_eq!(first.status(), 200);
    let issued: Value = first.json().await.unwrap();
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("sqz_"));
    let me: Value = app.get_as(token, "/api/v1/me").await.json().await.unwrap();
    assert_eq!(me["team"], "default");
    let again = login(code).await;
    assert_eq!(again.status(), 401);
    assert!(is_problem(&again));
}
