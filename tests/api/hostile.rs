//! Hostile and unlucky inputs from one team: each reproduces a finding of the outside probe
//! (issue 23) and holds that the service keeps answering everyone, with problem+json for the
//! client's mistakes and never a 500 for stored data.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{safetensors, weight_like_bf16};
use crate::helpers::{TestApp, is_problem, spawn_app};
use crate::jobs::{submit, wait_final};

async fn upload_ok(app: &TestApp, name: &str, bytes: Vec<u8>) -> String {
    let response = app.upload(name, bytes).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A model with one ordinary BF16 matrix and one tensor of the given shape and dtype.
fn model_with(name: &str, dtype: &str, shape: &[u64], data: Vec<u8>) -> Vec<u8> {
    safetensors(&[
        (
            "layers.0.weight",
            "BF16",
            &[8, 64],
            weight_like_bf16(8 * 64, 3),
        ),
        (name, dtype, shape, data),
    ])
}

#[tokio::test]
async fn degenerate_tensors_never_take_the_process_down() {
    let app = spawn_app().await;
    let shapes: [&[u64]; 4] = [&[64, 0], &[0, 64], &[1, 1], &[1]];
    let recipes = [
        json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}], "format": "compressed-tensors"}),
        json!({"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "format": "compressed-tensors"}),
        json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 32}}], "format": "compressed-tensors"}),
        json!({"stages": [{"quantize": {"scheme": "fp8"}}], "format": "compressed-tensors"}),
        json!({"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}}], "format": "compressed-tensors"}),
        json!({"stages": [{"quantize": {"scheme": "gguf", "type": "q8_0"}}], "format": "gguf"}),
        json!({"stages": [{"cluster": {"bits": 4}}], "format": "compact"}),
        json!({"stages": [{"low_rank": {"energy": 0.9}}], "format": "compact"}),
        json!({"stages": [{"prune": {"method": "channels", "sparsity": 0.25}}]}),
        json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}}]}),
        json!({"stages": [{"quantize": {"scheme": "nf4"}}]}),
    ];
    for shape in shapes {
        let elements: u64 = shape.iter().product();
        let model = model_with(
            "layers.1.weight",
            "BF16",
            shape,
            weight_like_bf16(elements as usize, 9),
        );
        let model_id = upload_ok(&app, "degenerate", model).await;
        for recipe in &recipes {
            let body = json!({"model_id": model_id, "recipe": recipe, "max_attempts": 3});
            let response = submit(&app, body.clone(), None).await;
            let status = response.status();
            let submitted: Value = response.json().await.unwrap();
            if status == 422 {
                // Refused up front: acceptable, as long as it names why.
                assert!(
                    submitted["code"].is_string(),
                    "{shape:?} {recipe}: {submitted}"
                );
                continue;
            }
            assert_eq!(status, 202, "{shape:?} {recipe}: {submitted}");
            let job = wait_final(&app, submitted["id"].as_str().unwrap()).await;
            let state = job["state"].as_str().unwrap();
            if state == "failed" {
                let error = job["error"].as_str().unwrap();
                assert!(!error.is_empty(), "{job}");
                // A contained panic fails at once: retrying a deterministic defect cannot help.
                assert_eq!(job["attempt"], 1, "{shape:?} {recipe}: {job}");
            } else {
                assert_eq!(state, "succeeded", "{shape:?} {recipe}: {job}");
                let report = app
                    .get(&format!(
                        "/api/v1/jobs/{}/report",
                        job["id"].as_str().unwrap()
                    ))
                    .await;
                assert_eq!(report.status(), 200);
            }
            // The server still answers.
            assert_eq!(app.get("/healthz").await.status(), 200);
        }
    }
}

/// F32 and F16 weights at the edge of their range.
fn near_max_models() -> Vec<Vec<u8>> {
    let f32_max: Vec<u8> = (0..8 * 64)
        .flat_map(|i| {
            let v = if i % 3 == 0 {
                f32::MAX
            } else {
                -f32::MAX * 0.75
            };
            v.to_le_bytes()
        })
        .collect();
    let f16_max: Vec<u8> = (0..8 * 64)
        .flat_map(|i| {
            // 65504 and -49152 as F16 bits.
            let bits: u16 = if i % 2 == 0 { 0x7BFF } else { 0xFA00 };
            bits.to_le_bytes()
        })
        .collect();
    vec![
        safetensors(&[("layers.0.weight", "F32", &[8, 64], f32_max)]),
        safetensors(&[("layers.0.weight", "F16", &[8, 64], f16_max)]),
    ]
}

#[tokio::test]
async fn weights_near_the_float_maximum_leave_every_read_answering() {
    let app = spawn_app().await;
    let recipes = [
        json!({"stages": [{"quantize": {"scheme": "int", "bits": 8}}]}),
        json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 32}}], "format": "compressed-tensors"}),
        json!({"stages": [{"quantize": {"scheme": "fp8"}}]}),
        json!({"stages": [{"quantize": {"scheme": "nf4"}}]}),
        json!({"stages": [{"quantize": {"scheme": "gguf", "type": "q4_0"}}], "format": "gguf"}),
        json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}),
        json!({"stages": [{"cluster": {"bits": 4}}]}),
        json!({"stages": [{"low_rank": {"rank": 2}}]}),
    ];
    let mut model_ids = Vec::new();
    for model in near_max_models() {
        let model_id = upload_ok(&app, "near-max", model).await;
        for recipe in &recipes {
            let body = json!({"model_id": model_id, "recipe": recipe});
            let response = submit(&app, body, None).await;
            let submitted: Value = response.json().await.unwrap();
            let Some(id) = submitted["id"].as_str() else {
                assert!(submitted["code"].is_string(), "{recipe}: {submitted}");
                continue;
            };
            let job = wait_final(&app, id).await;
            assert_ne!(job["state"], "canceled", "{job}");
            for path in [
                format!("/api/v1/jobs/{id}"),
                format!("/api/v1/jobs/{id}/report"),
            ] {
                let response = app.get(&path).await;
                assert_eq!(response.status(), 200, "{path}: {recipe}");
                let body: Value = response.json().await.unwrap();
                assert_metrics_finite_or_named(&body, &path);
            }
        }
        model_ids.push(model_id);
    }
    for path in [
        "/api/v1/jobs".to_owned(),
        "/api/v1/jobs?limit=1".to_owned(),
        format!("/api/v1/compare?model_id={}", model_ids[0]),
        format!("/api/v1/compare?model_id={}", model_ids[1]),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_metrics_finite_or_named(&body, &path);
    }
}

/// Every number is finite JSON; a metric that could not be computed is a string naming why
/// (`"inf"`, `"-inf"`, `"nan"`), never a silent null in a numeric field.
fn assert_metrics_finite_or_named(value: &Value, path: &str) {
    match value {
        Value::Number(n) => assert!(n.as_f64().unwrap().is_finite(), "{path}: {value}"),
        Value::Array(items) => items
            .iter()
            .for_each(|v| assert_metrics_finite_or_named(v, path)),
        Value::Object(map) => map
            .values()
            .for_each(|v| assert_metrics_finite_or_named(v, path)),
        _ => {}
    }
}

#[tokio::test]
async fn nul_characters_are_refused_with_422_never_500() {
    let app = spawn_app().await;
    let with_nul = model_with("layers.1\u{0}weight", "F32", &[2], vec![0; 8]);
    let response = app.upload("nul", with_nul).await;
    assert_eq!(response.status(), 422);
    assert!(is_problem(&response));
    let response = app
        .upload("a\u{0}name", crate::common::small_model(1))
        .await;
    assert_eq!(response.status(), 422, "a model name with NUL");
    for path in [
        "/api/v1/jobs?q=%00",
        "/api/v1/jobs?method=%00",
        "/api/v1/jobs?q=a%00b",
        "/api/v1/models?cursor=%00",
        "/api/v1/jobs?cursor=%00",
        "/api/v1/datasets?cursor=%00",
    ] {
        let response = app.get(path).await;
        assert!(
            response.status() == 422 || response.status() == 400,
            "{path}: {}",
            response.status()
        );
        assert!(is_problem(&response), "{path}");
    }
    let model_id = upload_ok(&app, "plain", crate::common::small_model(2)).await;
    let response = app
        .get(&format!("/api/v1/models/{model_id}/tensors?cursor=%00"))
        .await;
    assert!(
        response.status() == 422 || response.status() == 400,
        "{}",
        response.status()
    );
    let body = json!({"model_id": model_id, "preset": "int8", "name": "x\u{0}y"});
    let response = submit(&app, body, None).await;
    assert_eq!(response.status(), 422);
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["layers\u{0}"]}});
    let response = submit(&app, body, None).await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn a_header_with_an_enormous_shape_is_a_422() {
    let app = spawn_app().await;
    // 5 M dimensions of 1: a valid element count, an absurd rank.
    let mut shape = String::from("[");
    for i in 0..5_000_000 {
        if i > 0 {
            shape.push(',');
        }
        shape.push('1');
    }
    shape.push(']');
    let header = format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":[0,4]}}}}"#);
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[0; 4]);
    let response = app.upload("rank", file).await;
    assert_eq!(response.status(), 422);
    assert!(is_problem(&response));
}

#[tokio::test]
async fn a_fixed_rank_that_cannot_shrink_a_tensor_is_refused_at_submission() {
    let app = spawn_app().await;
    let model_id = upload_ok(&app, "rank", crate::common::small_model(3)).await;
    // layers.0.weight is 16 x 32: rank 11 needs 11 * 48 = 528 >= 512 values.
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"low_rank": {"rank": 11}}]}});
    let response = submit(&app, body, None).await;
    let status = response.status();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "rank_grows_tensor");
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"low_rank": {"rank": 1_000_000_000_000u64}}]}});
    let response = submit(&app, body, None).await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn an_idempotency_key_with_control_characters_is_refused() {
    let app = spawn_app().await;
    let model_id = upload_ok(&app, "key", crate::common::small_model(4)).await;
    let body = json!({"model_id": model_id, "preset": "int8"});
    let response = submit(&app, body, Some("a\tb")).await;
    assert_eq!(response.status(), 400);
    assert!(is_problem(&response));
}

#[tokio::test]
async fn costly_target_patterns_are_refused_quickly() {
    let app = spawn_app().await;
    let model_id = upload_ok(&app, "patterns", crate::common::small_model(5)).await;
    let patterns: Vec<String> = (0..300).map(|i| format!("re:\\w{{100}}{i}")).collect();
    let started = Instant::now();
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": patterns}});
    let response = submit(&app, body, None).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_patterns", "{problem}");
    // One costly pattern alone is refused by its compiled size.
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["re:\\w{100}"]}});
    let response = submit(&app, body, None).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "bad_pattern", "{problem}");
    let huge = "re:".to_owned() + &"(a|b)".repeat(2000);
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": [huge]}});
    let response = submit(&app, body, None).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 422, "{problem}");
    let one = "re:\\w{1000}{1000}".to_owned();
    let body = json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": [one]}});
    let response = submit(&app, body, None).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 422, "{problem}");
    assert_eq!(problem["code"], "bad_pattern", "{problem}");
    // Not a timing assertion: a guard against the minutes the probe saw.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/index.html",
        "/app.js",
        "/api/docs",
        "/api/v1/models",
        "/healthz",
        "/nope",
    ] {
        let response = app.get(path).await;
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(
            !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{path}: {csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    // The reference page runs no inline script, so the policy does not break it.
    let page = app.get("/api/docs").await.text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains("<script type=\"module\">"));
    let script = app.get("/api/docs.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn oversized_or_deep_json_side_files_are_refused_without_building_them() {
    let app = spawn_app().await;
    // A model and one JSON side file, as a browser uploads them.
    let upload_with = |side: &'static str, json: String, seed: u64| {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(crate::common::small_model(seed))
                    .file_name("model.safetensors"),
            )
            .part(
                "file",
                reqwest::multipart::Part::bytes(json.into_bytes()).file_name(side),
            );
        app.upload_multipart(form)
    };
    // A 2 MiB config.json: refused by size, before parsing.
    let config = format!("{{\"a\": [{}0]}}", "0,".repeat(1 << 20));
    let response = upload_with("config.json", config, 6).await;
    assert_eq!(response.status(), 413);
    assert!(is_problem(&response));
    // A well-formed 4 MiB tokenizer.json is only checked, never built into a document.
    let tokenizer = format!("{{\"a\": [{}0]}}", "0,".repeat(2 << 20));
    let response = upload_with("tokenizer.json", tokenizer, 7).await;
    assert_eq!(response.status(), 201);
    // __metadata__ holding an array: refused as metadata_not_string.
    let header =
        r#"{"__metadata__":{"a":[1,2,3]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[0; 4]);
    let response = app.upload("meta", file).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "metadata_not_string", "{problem}");
}

#[tokio::test]
async fn idle_connections_do_not_lock_out_a_normal_client() {
    let app = spawn_app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let response = app.get("/api/v1/models").await;
    assert_eq!(response.status(), 200);
    drop(idle);
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_cut_and_the_cap_refuses_cleanly() {
    use tokio::io::AsyncWriteExt;
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        max_connections: 6,
        header_timeout_secs: 1,
        upload_idle: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // Idle from the start, and a head that never ends: both closed after the header timeout.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut slow_head = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut silent, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        read_to_close(&mut slow_head, Duration::from_secs(10))
            .await
            .is_some()
    );
    // A body that stops arriving is cut.
    let mut slow_body = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /api/v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model",
                app.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut slow_body, Duration::from_secs(15)).await;
    let answer = answer.expect("the stalled body was not cut");
    assert!(!answer.contains(" 202 "), "{answer}");
    // Past the cap: a 503 problem, at once.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&address).await.unwrap();
    let answer = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Once the held ones time out, clients are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn sign_in_codes_are_short_lived_void_after_a_restart_and_rate_limited() {
    let app = spawn_app().await;
    let login = |code: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/login"))
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap()
        }
    };
    // Nothing is issued unless asked for.
    let issued: i64 = sqlx::query_scalar("select count(*) from login_codes")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(issued, 0);
    let code = squeeze::auth::tokens::create_login_code(
        &app.state.db,
        "default",
        squeeze::auth::LOGIN_CODE_TTL,
    )
    .await
    .unwrap();
    let lifetime: f64 = sqlx::query_scalar(
        "select extract(epoch from max(expires_at) - now())::float8 from login_codes",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert!(lifetime <= 600.0, "{lifetime}");
    // A restart (the bootstrap every start runs) voids it.
    let dir = tempfile::tempdir().unwrap();
    let boot = squeeze::auth::bootstrap(&app.state.db, dir.path(), None, false)
        .await
        .unwrap();
    assert!(boot.login_code.is_none());
    assert_eq!(login(code).await.status(), 401);
    // Ten attempts a minute from one address (the void code's was the first); the eleventh
    // waits.
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(login("sqzl_guess".into()).await.status().as_u16());
    }
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    let throttled = login("sqzl_guess".into()).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(is_problem(&throttled));
}

#[tokio::test]
async fn a_full_database_disk_answers_507_and_makes_the_service_not_ready() {
    let app = spawn_app().await;
    // Finite weights: random bytes may hold NaN, which refuses the job before the insert.
    let model_id = upload_ok(&app, "full", crate::common::bf16_model(1, 16, 32, 8)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // PostgreSQL's own refusal for lack of space (SQLSTATE 53100), raised where a full disk
    // would raise it: on the job's insert.
    for statement in [
        "create function refuse_for_space() returns trigger language plpgsql as
         $$ begin raise exception 'could not extend file' using errcode = 'disk_full'; end $$",
        "create trigger disk_full before insert on jobs
         for each row execute function refuse_for_space()",
    ] {
        sqlx::query(statement).execute(&app.state.db).await.unwrap();
    }
    let response = submit(&app, json!({"model_id": model_id, "preset": "int8"}), None).await;
    assert_eq!(response.status(), 507);
    assert!(is_problem(&response));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "no_space");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert!(is_problem(&ready));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn an_enormous_dataset_line_is_refused_at_its_limit() {
    let app = spawn_app().await;
    let mut line = String::from("[");
    for i in 0..400_000 {
        if i > 0 {
            line.push(',');
        }
        line.push('1');
    }
    line.push_str("]\n");
    let response = app
        .client
        .post(app.url("/api/v1/datasets?name=huge"))
        .header("authorization", app.bearer())
        .header("content-type", "application/octet-stream")
        .body(line.into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("at most 8192 per sequence"),
        "{problem}"
    );
}

#[tokio::test]
async fn oversized_request_heads_get_problem_json() {
    let app = spawn_app().await;
    let mut many = app.client.get(app.url("/api/v1/models"));
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let long = app
        .client
        .get(app.url("/api/v1/models"))
        .header("x-filler", "a".repeat(100 << 10));
    let uri = app
        .client
        .get(app.url(&format!("/api/v1/models?q={}", "a".repeat(10 << 10))));
    for (request, status) in [(many, 431), (long, 431), (uri, 414)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        assert!(is_problem(&response));
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}
