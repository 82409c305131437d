//! Jobs over HTTP: submit, follow, download, compare with an independent computation; the
//! queue's promises (exactly once, fencing, rescue, retries, cancellation, idempotency).

use std::time::Duration;

use serde_json::{Value, json};
use squeeze::jobs::queue::{self, Lease};

use crate::common::{assert_int8_per_channel, bf16_bits, from_bf16, safetensors};
use crate::helpers::{Options, TestApp, is_problem, spawn_app, spawn_app_with};

/// A model with two BF16 matrices (one with an outlier) and an F32 norm, plus its values.
fn model(rows: usize, cols: usize) -> (Vec<u8>, Vec<(String, Vec<f32>)>) {
    let mut state = 7u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state % 20_001) as f32 / 10_000.0 - 1.0) * 0.05
    };
    let mut values = Vec::new();
    let mut tensors = Vec::new();
    for layer in 0..2 {
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|_| from_bf16(bf16_bits(next())))
            .collect();
        w[3 * cols + 5] = from_bf16(bf16_bits(1.5));
        let bytes: Vec<u8> = w.iter().flat_map(|v| bf16_bits(*v).to_le_bytes()).collect();
        values.push((format!("layers.{layer}.mlp.weight"), w));
        tensors.push((format!("layers.{layer}.mlp.weight"), bytes));
    }
    let norm: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 * 1e-3).collect();
    let norm_bytes: Vec<u8> = norm.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = [rows as u64, cols as u64];
    let file = safetensors(&[
        (&tensors[0].0, "BF16", &shape, tensors[0].1.clone()),
        (&tensors[1].0, "BF16", &shape, tensors[1].1.clone()),
        ("norm.weight", "F32", &[cols as u64], norm_bytes),
    ]);
    values.push(("norm.weight".into(), norm));
    (file, values)
}

/// Tensors of a safetensors file as f32, read by a parser written here.
fn read_tensors(bytes: &[u8]) -> Vec<(String, Vec<f32>)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let (b, e) = (
            info["data_offsets"][0].as_u64().unwrap() as usize,
            info["data_offsets"][1].as_u64().unwrap() as usize,
        );
        let raw = &data[b..e];
        let values = match info["dtype"].as_str().unwrap() {
            "BF16" => raw
                .chunks_exact(2)
                .map(|c| from_bf16(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            other => panic!("unexpected dtype {other}"),
        };
        out.push((name, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub async fn upload_model(
    app: &TestApp,
    rows: usize,
    cols: usize,
) -> (String, Vec<(String, Vec<f32>)>) {
    let (file, values) = model(rows, cols);
    let response = app.upload("model", file).await;
    assert_eq!(response.status(), 201);
    let m: Value = response.json().await.unwrap();
    (m["id"].as_str().unwrap().to_owned(), values)
}

pub(crate) async fn submit(app: &TestApp, body: Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/jobs"))
        .header("authorization", app.bearer())
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Submits the int8 preset on a model; the job as the server returned it (202).
async fn submit_int8(app: &TestApp, model_id: &str) -> Value {
    let response = submit(app, json!({"model_id": model_id, "preset": "int8"}), None).await;
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

pub(crate) async fn wait_final(app: &TestApp, id: &str) -> Value {
    for _ in 0..600 {
        let job = app.json(&format!("/api/v1/jobs/{id}")).await;
        if ["succeeded", "failed", "canceled"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not finish");
}

/// Reads a job's event stream to its end: the last event's job, and the whole text.
pub async fn follow_events(app: &TestApp, id: &str) -> (Value, String) {
    let mut events = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}/events")))
        .header("authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Keep-alive comments arrive every 15 s, so the deadline is on the whole stream.
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(chunk) = tokio::time::timeout_at(deadline, events.chunk())
        .await
        .unwrap_or_else(|_| panic!("job {id} did not finish within 60 s: {text}"))
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last_data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .unwrap();
    (serde_json::from_str(last_data.trim()).unwrap(), text)
}

#[tokio::test]
async fn a_job_runs_end_to_end_and_its_artifact_matches_an_independent_int8_computation() {
    let app = spawn_app().await;
    let (model_id, values) = upload_model(&app, 64, 256).await;
    let recipe = json!({"stages": [{"quantize": {"scheme": "int", "bits": 8, "symmetric": true, "granularity": "channel"}}], "format": "safetensors"});
    let body = json!({"model_id": model_id, "recipe": recipe, "name": "int8"});
    let first = submit(&app, body.clone(), Some("k1")).await;
    assert_eq!(first.status(), 202);
    let job: Value = first.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let again: Value = submit(&app, body.clone(), Some("k1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], job["id"], "same key and body: same job");
    let other = submit(
        &app,
        json!({"model_id": model_id, "preset": "int8"}),
        Some("k1"),
    )
    .await;
    assert_eq!(other.status(), 422);
    assert!(is_problem(&other));

    let (last, text) = follow_events(&app, &id).await;
    assert_eq!(last["state"], "succeeded", "{text}");
    assert!(text.contains("event: state"));

    let job = app.json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["result"]["compressed_tensors"], 2);
    let response = app
        .get(&format!("/api/v1/jobs/{id}/files/model.safetensors"))
        .await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let artifact = response.bytes().await.unwrap();
    let got = read_tensors(&artifact);
    for ((name, original), (got_name, got_values)) in values.iter().zip(&got) {
        assert_eq!(name, got_name);
        if name == "norm.weight" {
            assert_eq!(original, got_values, "1-D tensors stay as they are");
            continue;
        }
        assert_int8_per_channel(name, original, got_values, 256);
    }

    let report = app.json(&format!("/api/v1/jobs/{id}/report")).await;
    let rows = report["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let row = rows
        .iter()
        .find(|r| r["name"] == "layers.0.mlp.weight")
        .unwrap();
    assert!(row["rel_error"].as_f64().unwrap() > 0.0 && row["rel_error"].as_f64().unwrap() < 0.02);
    assert!(row["sqnr_db"].as_f64().unwrap() > 30.0);
    let files = app.json(&format!("/api/v1/jobs/{id}/files")).await;
    let names = crate::common::item_strings(&files, "name");
    assert_eq!(names, ["model.safetensors", "recipe.json"]);

    // ETag and Range.
    let cached = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}/files/model.safetensors")))
        .header("authorization", app.bearer())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let part = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}/files/model.safetensors")))
        .header("authorization", app.bearer())
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap()[..], artifact[8..16]);
    app.assert_no_temp_files().await;
}

#[tokio::test]
async fn prune_then_quantize_keeps_the_zeros_and_reaches_the_sparsity() {
    let app = spawn_app().await;
    let (model_id, _) = upload_model(&app, 32, 128).await;
    let job: Value = submit(
        &app,
        // Dense output, to read the values back as they are.
        json!({"model_id": model_id, "recipe": {"stages": [
            {"prune": {"method": "magnitude", "sparsity": 0.5}},
            {"quantize": {"scheme": "int", "bits": 8}}], "format": "safetensors"}}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let job = wait_final(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let sparsity = job["result"]["sparsity"].as_f64().unwrap();
    assert!((sparsity - 0.5).abs() < 0.01, "{sparsity}");
    let artifact = app
        .get(&format!(
            "/api/v1/jobs/{}/files/model.safetensors",
            job["id"].as_str().unwrap()
        ))
        .await
        .bytes()
        .await
        .unwrap();
    for (name, values) in read_tensors(&artifact) {
        if name.ends_with("mlp.weight") {
            let zeros = values.iter().filter(|v| **v == 0.0).count();
            assert!(zeros >= values.len() / 2, "{name}: {zeros} zeros");
        }
    }
}

#[tokio::test]
async fn every_preset_and_method_runs_through_the_api() {
    let app = spawn_app().await;
    let (model_id, _) = upload_model(&app, 32, 256).await;
    let presets = app.json("/api/v1/presets").await;
    let mut bodies: Vec<Value> = crate::common::item_strings(&presets, "name")
        .into_iter()
        .map(|preset| json!({"model_id": model_id, "preset": preset}))
        .collect();
    for stage in [
        json!({"prune": {"method": "magnitude", "sparsity": 0.7, "scope": "global"}}),
        json!({"prune": {"method": "semi_structured", "pattern": "4:8"}}),
        json!({"prune": {"method": "channels", "sparsity": 0.25, "norm": "l1"}}),
        json!({"cluster": {"bits": 3, "granularity": "channel", "seed": 4}}),
        json!({"low_rank": {"rank": 8}}),
        json!({"quantize": {"scheme": "int", "bits": 3, "scale_dtype": "f16"}}),
    ] {
        // Written dense: f16 scales are not what compressed-tensors stores for this model.
        bodies.push(
            json!({"model_id": model_id, "recipe": {"stages": [stage], "format": "safetensors"}}),
        );
    }
    // And each method in the format its result is stored in.
    for stage in [
        json!({"prune": {"method": "semi_structured", "pattern": "2:4"}}),
        json!({"cluster": {"bits": 3, "granularity": "channel", "seed": 4}}),
        json!({"low_rank": {"rank": 8}}),
        json!({"quantize": {"scheme": "int", "bits": 3}}),
    ] {
        bodies.push(json!({"model_id": model_id, "recipe": {"stages": [stage]}}));
    }
    let mut ids = Vec::new();
    for body in &bodies {
        let response = submit(&app, body.clone(), None).await;
        assert_eq!(response.status(), 202, "{body}");
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (id, body) in ids.iter().zip(&bodies) {
        let job = wait_final(&app, id).await;
        assert_eq!(job["state"], "succeeded", "{body}: {job}");
        // The job keeps the recipe as it ran: an auto format is stored resolved.
        assert_ne!(job["recipe"]["format"], "auto", "{job}");
        let report = app.json(&format!("/api/v1/jobs/{id}/report")).await;
        let compressed: Vec<&Value> = report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["scheme"] != "unchanged")
            .collect();
        assert_eq!(compressed.len(), 2, "{body}: {report}");
        if body["recipe"]["stages"][0]["low_rank"].is_object() {
            let scheme = compressed[0]["scheme"].as_str().unwrap();
            assert!(scheme.contains("rank 8"), "{scheme}");
        }
    }
}

#[tokio::test]
async fn bad_recipes_are_refused_at_submission_naming_the_rule() {
    let app = spawn_app().await;
    let (model_id, _) = upload_model(&app, 16, 96).await;
    let cases = [
        (
            // Rows of 96: a group of 10 does not divide them and no smaller group is tried.
            json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 10}}]}}),
            "group_size_does_not_divide_row",
        ),
        (
            json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 12}}]}}),
            "bits_out_of_range",
        ),
        (
            json!({"model_id": model_id, "recipe": {"stages": [{"prune": {"method": "magnitude", "sparsity": 1.5}}]}}),
            "sparsity_out_of_range",
        ),
        (
            json!({"model_id": model_id, "recipe": {"stages": [{"teleport": {}}]}}),
            "bad_recipe",
        ),
        (
            json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["missing.weight"]}}),
            "target_matches_nothing",
        ),
        (
            json!({"model_id": model_id, "preset": "int1"}),
            "unknown_preset",
        ),
        (json!({"model_id": model_id}), "recipe_or_preset"),
        (
            json!({"model_id": model_id, "preset": "sparse50-wanda"}),
            "calibration_unavailable",
        ),
        (
            json!({"model_id": model_id, "recipe": {"stages": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}]}}),
            "calibration_unavailable",
        ),
    ];
    for (body, code) in cases {
        let response = submit(&app, body.clone(), None).await;
        assert_eq!(response.status(), 422, "{body}");
        assert!(is_problem(&response));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
    }
    let first: Value = submit(&app, json!({"model_id": model_id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 10}}]}}), None).await.json().await.unwrap();
    assert_eq!(first["tensor"], "layers.0.mlp.weight");
    assert_eq!(
        first["stage"], 1,
        "the stage is named for forms to point at"
    );
    let second_stage: Value = submit(&app, json!({"model_id": model_id, "recipe": {"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}, {"cluster": {"bits": 12}}]}}), None).await.json().await.unwrap();
    assert_eq!(
        (
            second_stage["code"].as_str(),
            second_stage["stage"].as_u64()
        ),
        (Some("bits_out_of_range"), Some(2)),
        "{second_stage}"
    );
    let missing = submit(
        &app,
        json!({"model_id": uuid::Uuid::now_v7(), "preset": "int8"}),
        None,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let listed = app.json("/api/v1/jobs").await;
    assert!(
        listed["items"].as_array().unwrap().is_empty(),
        "refused jobs are not queued"
    );
}

#[tokio::test]
async fn a_queued_job_canceled_never_starts_and_other_teams_cannot_see_jobs() {
    let app = spawn_queue_only().await;
    let (model_id, _) = upload_model(&app, 16, 64).await;
    let job: Value = submit_int8(&app, &model_id).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["state"], "queued");
    let other = app.token_of("team-b").await;
    assert_eq!(
        app.get_as(&other, &format!("/api/v1/jobs/{id}"))
            .await
            .status(),
        404
    );
    let canceled = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{id}/cancel")))
        .header("authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 202);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(canceled["state"], "canceled");
    assert!(
        queue::claim(&app.state.db, "test", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "a canceled job is never claimed"
    );
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/models/{model_id}")))
        .header("authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(
        deleted.status(),
        204,
        "no active job uses the model any more"
    );
}

#[tokio::test]
async fn a_stale_worker_is_fenced_and_an_expired_lease_is_rescued() {
    let app = spawn_queue_only().await;
    let db = &app.state.db;
    let (model_id, _) = upload_model(&app, 16, 64).await;
    let job: Value = submit_int8(&app, &model_id).await;
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let stale = queue::claim(db, "stale", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.attempt, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue::rescue_expired(db, 100).await.unwrap(), 1);
    let fresh = queue::claim(db, "fresh", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((fresh.id, fresh.attempt), (id, 2));
    // Everything the stale attempt tries is refused.
    assert_eq!(
        queue::heartbeat(db, id, 1, Duration::from_secs(30), None)
            .await
            .unwrap(),
        Lease::Lost
    );
    assert!(!queue::fail(db, id, 1, "stale", true).await.unwrap());
    assert!(!queue::mark_canceled(db, id, 1).await.unwrap());
    assert!(!queue::hand_back(db, id, 1).await.unwrap());
    let summary: squeeze::jobs::report::Summary = serde_json::from_value(json!({
        "format": "safetensors", "bytes_in": 1, "bytes_out": 1, "ratio": 1.0, "bits_per_weight": 16.0,
        "parameters": 1, "compressed_parameters": 1, "compressed_tensors": 1, "sparsity": 0.0,
        "mean_rel_error": 0.0, "worst_rel_error": 0.0, "worst_tensor": null, "wall_seconds": 0.0,
        "throughput_bytes_per_s": 0.0, "peak_rss_bytes": null, "squeeze_version": "test"
    }))
    .unwrap();
    assert!(
        !queue::complete(db, &app.state.blobs, id, 1, Vec::new(), &[], &summary)
            .await
            .unwrap()
    );
    // The current attempt still owns it.
    assert_eq!(
        queue::heartbeat(db, id, 2, Duration::from_secs(30), None)
            .await
            .unwrap(),
        Lease::Held
    );
    let job = app.json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "running");
    assert_eq!(job["attempt"], 2);
}

#[tokio::test]
async fn retries_back_off_stop_at_the_maximum_and_bad_input_fails_at_once() {
    let app = spawn_queue_only().await;
    let db = &app.state.db;
    let (model_id, _) = upload_model(&app, 16, 64).await;
    let job: Value = submit(
        &app,
        json!({"model_id": model_id, "preset": "int8", "max_attempts": 2}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let first = queue::claim(db, "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        queue::fail(db, id, first.attempt, "disk hiccup", true)
            .await
            .unwrap()
    );
    let job = app.json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "queued");
    assert_eq!(job["error"], "disk hiccup");
    let delay = chrono::DateTime::parse_from_rfc3339(job["run_at"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(job["updated_at"].as_str().unwrap()).unwrap();
    let delay = delay.num_milliseconds();
    assert!(
        (1700..=2300).contains(&delay),
        "first retry after 2 s ± 10 %, got {delay} ms"
    );
    assert!(
        queue::claim(db, "w", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "not before its time"
    );
    sqlx::query("update jobs set run_at = now() where id = $1")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    let second = queue::claim(db, "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert!(
        queue::fail(db, id, 2, "disk hiccup again", true)
            .await
            .unwrap()
    );
    assert_eq!(
        app.json(&format!("/api/v1/jobs/{id}")).await["state"],
        "failed",
        "attempts spent"
    );

    let job: Value = submit_int8(&app, &model_id).await;
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let claimed = queue::claim(db, "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        queue::fail(db, id, claimed.attempt, "the model file is invalid", false)
            .await
            .unwrap()
    );
    let job = app.json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(
        (
            job["state"].as_str().unwrap(),
            job["attempt"].as_i64().unwrap()
        ),
        ("failed", 1)
    );
    assert!(
        squeeze::jobs::queue::backoff(20).as_secs_f64() <= 330.0,
        "backoff is capped at 5 minutes + 10 %"
    );
}

#[tokio::test]
async fn four_workers_run_every_job_exactly_once() {
    let app = spawn_app_with(Options {
        workers: 4,
        ..Options::default()
    })
    .await;
    let (model_id, _) = upload_model(&app, 8, 32).await;
    let mut ids = Vec::new();
    for _ in 0..24 {
        let job: Value = submit_int8(&app, &model_id).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = wait_final(&app, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempt"], 1, "each job ran once");
    }
    let file_rows: i64 = sqlx::query_scalar("select count(*) from job_files")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    // compressed-tensors: the weights, config.json with the quantization_config, recipe.json.
    assert_eq!(file_rows, 24 * 3, "one artifact set per job");
    let models = app.json("/api/v1/jobs?state=succeeded&limit=100").await;
    assert_eq!(models["items"].as_array().unwrap().len(), 24);
    app.assert_no_temp_files().await;
}

#[tokio::test]
async fn presets_are_listed() {
    let app = spawn_app().await;
    let presets = app.json("/api/v1/presets").await;
    let names = crate::common::item_strings(&presets, "name");
    for preset in ["int8", "w4-g128", "prune-50"] {
        assert!(
            names.iter().any(|n| n == preset),
            "{preset} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn a_sharded_model_compresses_into_the_same_shards_with_its_index_and_config() {
    use reqwest::multipart::{Form, Part};
    let app = spawn_app().await;
    let shard1 = crate::common::bf16_model(2, 16, 64, 1);
    let shard2 = safetensors(&[(
        "head.weight",
        "F32",
        &[8, 64],
        crate::common::noise(8 * 64, 9)
            .iter()
            .map(|b| f32::from(*b) / 255.0 - 0.5)
            .flat_map(f32::to_le_bytes)
            .collect(),
    )]);
    let index = json!({"metadata": {"total_size": 0}, "weight_map": {
        "layers.0.weight": "model-00001-of-00002.safetensors",
        "layers.1.weight": "model-00001-of-00002.safetensors",
        "head.weight": "model-00002-of-00002.safetensors"}});
    let config = br#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#.to_vec();
    let form = Form::new()
        .part(
            "file",
            Part::bytes(shard1).file_name("model-00001-of-00002.safetensors"),
        )
        .part(
            "file",
            Part::bytes(shard2).file_name("model-00002-of-00002.safetensors"),
        )
        .part(
            "file",
            Part::bytes(serde_json::to_vec(&index).unwrap())
                .file_name("model.safetensors.index.json"),
        )
        .part("file", Part::bytes(config.clone()).file_name("config.json"));
    let response = app.upload_multipart(form).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    // Dense output: the config is copied as it is and the values read back directly.
    let job: Value = submit(
        &app,
        json!({"model_id": model["id"], "recipe": {
            "stages": [{"quantize": {"scheme": "int", "bits": 8}}], "format": "safetensors"}}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let job = wait_final(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["compressed_tensors"], 3);
    let id = job["id"].as_str().unwrap();
    let files = app.json(&format!("/api/v1/jobs/{id}/files")).await;
    let names = crate::common::item_strings(&files, "name");
    assert_eq!(
        names,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "recipe.json"
        ]
    );
    let copied = app
        .get(&format!("/api/v1/jobs/{id}/files/config.json"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(copied[..], config[..]);
    let second = app
        .get(&format!(
            "/api/v1/jobs/{id}/files/model-00002-of-00002.safetensors"
        ))
        .await
        .bytes()
        .await
        .unwrap();
    let tensors = read_tensors(&second);
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "head.weight");
    assert_eq!(tensors[0].1.len(), 8 * 64);
}

/// LISTEN connections of this test's database.
async fn listeners(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = current_database() and query ilike 'listen %'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap()
}

async fn wait_for_listeners(app: &TestApp, at_least: i64) {
    for _ in 0..300 {
        if listeners(app).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {at_least} LISTEN connections after 15 s");
}

#[tokio::test]
async fn jobs_start_and_events_flow_after_the_listen_connections_are_killed() {
    // Polling is effectively off: only a wake-up from the listener can start a job in time.
    let app = spawn_app_with(Options {
        poll_secs: 3600,
        ..Options::default()
    })
    .await;
    let (model_id, _) = upload_model(&app, 8, 32).await;
    // One LISTEN connection per process serves both the workers' wake-ups and the event streams.
    wait_for_listeners(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        listeners(&app).await,
        1,
        "one LISTEN connection per process"
    );
    let killed: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and query ilike 'listen %'",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert!(killed == [true], "{killed:?}");

    // Submitted at once, while the listeners are down or reconnecting.
    let job: Value = submit_int8(&app, &model_id).await;
    let id = job["id"].as_str().unwrap();
    let (last, text) = follow_events(&app, id).await;
    assert_eq!(last["state"], "succeeded", "{text}");

    // The listener comes back, and NOTIFY wakes the workers again.
    wait_for_listeners(&app, 1).await;
    let job: Value = submit_int8(&app, &model_id).await;
    let job = wait_final(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test]
async fn a_stored_recipe_that_no_longer_parses_fails_its_job_with_the_reason() {
    let app = spawn_queue_only().await;
    let (model_id, _) = upload_model(&app, 8, 32).await;
    let job = submit_int8(&app, &model_id).await;
    let id = job["id"].as_str().unwrap();
    // As a row another version wrote might hold it: valid JSON, no longer a recipe.
    sqlx::query("update jobs set recipe = '{\"stages\": \"all\"}' where id = $1::uuid")
        .bind(id)
        .execute(&app.state.db)
        .await
        .unwrap();
    // The claim itself must not fail on it, or the job would stay running until its lease ran
    // out, and be claimed again, forever.
    let workers = squeeze::worker::WorkerPool::start(
        app.state.db.clone(),
        app.state.blobs.clone(),
        squeeze::worker::WorkerConfig {
            count: 1,
            ..Default::default()
        },
        app.state.events.queued(),
    );
    let job = wait_final(&app, id).await;
    workers.shutdown().await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("the stored recipe is not valid"),
        "{error}"
    );
}

/// A server with no workers: submitted jobs stay queued until a test claims them.
async fn spawn_queue_only() -> TestApp {
    spawn_app_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await
}

/// Reads an event stream until an event of `kind` arrives; its data as JSON.
async fn next_event(stream: &mut reqwest::Response, kind: &str) -> Value {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(at) = text.find(&format!("event: {kind}\n")) {
            let rest = &text[at..];
            if let Some(end) = rest.find("\n\n") {
                let data = rest[..end]
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect::<String>();
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event within 20 s: {text}"))
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_job_list_filters_by_method_text_and_time_and_the_team_stream_sees_only_its_team() {
    let app = spawn_queue_only().await;
    let app = &app;
    let (model_id, _) = upload_model(app, 16, 128).await;
    let other = app.token_of("team-b").await;
    let open_stream = |token: String| {
        let request = app
            .client
            .get(app.url("/api/v1/events"))
            .header("authorization", format!("Bearer {token}"));
        async move { request.send().await.unwrap() }
    };
    let mut ours = open_stream(app.token.clone()).await;
    assert!(
        ours.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut theirs = open_stream(other.clone()).await;

    let mut ids = Vec::new();
    for (name, preset) in [
        ("alpha", "int8"),
        ("beta", "prune-50"),
        ("gamma", "w4-g128"),
    ] {
        let response = submit(
            app,
            json!({"model_id": model_id, "preset": preset, "name": name}),
            None,
        )
        .await;
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["model_name"], "model");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let first = next_event(&mut ours, "job").await;
    assert_eq!(
        first["id"],
        ids[0].as_str(),
        "the team's stream carries its first job"
    );

    let names = |query: &str| {
        let path = format!("/api/v1/jobs?{query}");
        async move {
            let page = app.json(&path).await;
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("method=prune").await, ["beta"]);
    assert_eq!(names("method=int").await, ["gamma", "alpha"]);
    assert_eq!(names("method=magnitude").await, ["beta"]);
    assert_eq!(names("q=ALP").await, ["alpha"]);
    assert_eq!(
        names("q=mod").await,
        ["gamma", "beta", "alpha"],
        "model names match"
    );
    assert_eq!(
        names(&format!("q={}", &ids[1][..13])).await,
        ["beta"],
        "ids match"
    );
    assert_eq!(
        names("q=%20&method=").await.len(),
        3,
        "blank filters are no filters"
    );
    assert!(names("created_after=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(
        names("created_before=2999-01-01T00:00:00Z&state=queued")
            .await
            .len(),
        3
    );
    let bad = app.get("/api/v1/jobs?created_after=yesterday").await;
    assert_eq!(bad.status(), 400);
    assert!(is_problem(&bad));

    // Team b's stream saw none of team a's jobs: the first event it gets is its own job.
    let their_model = app
        .upload_as(&other, "theirs", model(16, 64).0)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .header("authorization", format!("Bearer {other}"))
        .json(&json!({"model_id": their_model["id"], "preset": "int8"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let their_job: Value = response.json().await.unwrap();
    assert_eq!(next_event(&mut theirs, "job").await["id"], their_job["id"]);
}

/// A NaN found while the upload streamed refuses a job that selects its tensor at once,
/// instead of after the queue; a recipe that leaves it out runs.
#[tokio::test]
async fn weights_with_nan_or_infinity_are_found_at_upload_and_refused_at_submission() {
    let app = spawn_app().await;
    let finite: Vec<u8> = (0..64)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    let mut broken = finite.clone();
    broken[40..44].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let file = safetensors(&[
        ("a.weight", "F32", &[8, 8], finite),
        ("b.weight", "F32", &[8, 8], broken),
    ]);
    let response = app.upload("nan-model", file).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let id = model["id"].as_str().unwrap();
    let tensors = app.json(&format!("/api/v1/models/{id}/tensors")).await;
    let flags: Vec<(String, bool)> = tensors["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["non_finite"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("a.weight".to_owned(), false),
            ("b.weight".to_owned(), true)
        ]
    );
    let refused = submit(&app, json!({"model_id": id, "preset": "int8"}), None).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "non_finite_weights", "{problem}");
    assert_eq!(problem["tensor"], "b.weight");
    let kept = submit(
        &app,
        json!({"model_id": id, "recipe": {"stages": [{"quantize": {"scheme": "int", "bits": 8}}],
                                          "ignore": ["b.weight"]}}),
        None,
    )
    .await;
    assert_eq!(kept.status(), 202);
}
