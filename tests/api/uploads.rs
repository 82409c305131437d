//! Uploads: raw and multipart round trips, sharded checkpoints, size caps, interruption,
//! deletion and pagination.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::common::{noise, safetensors, sha256_hex, small_model};
use crate::helpers::{Options, is_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_raw_upload_reports_the_digest_inventory_and_sizes_the_client_wrote() {
    let app = spawn_app().await;
    let file = safetensors(&[
        (
            "model.embed.weight",
            "F16",
            &[64, 48],
            noise(64 * 48 * 2, 1),
        ),
        (
            "model.layers.0.mlp.weight",
            "BF16",
            &[96, 64],
            noise(96 * 64 * 2, 2),
        ),
        ("model.norm.weight", "F32", &[64], noise(64 * 4, 3)),
        ("scalar", "I64", &[], noise(8, 4)),
    ]);
    let response = app.upload("tiny", file.clone()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["sha256"], sha256_hex(&file));
    assert_eq!(model["name"], "tiny");
    assert_eq!(model["bytes"], file.len() as u64);
    assert_eq!(model["tensor_count"], 4);
    assert_eq!(model["parameters"], 64 * 48 + 96 * 64 + 64 + 1);
    assert_eq!(
        model["tensor_bytes"],
        64 * 48 * 2 + 96 * 64 * 2 + 64 * 4 + 8
    );
    assert_eq!(model["dtypes"]["BF16"], 96 * 64);
    assert_eq!(
        location,
        format!("/api/v1/models/{}", model["id"].as_str().unwrap())
    );

    let tensors = app.json(&format!("{location}/tensors")).await;
    let items = tensors["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "model.embed.weight",
            "model.layers.0.mlp.weight",
            "model.norm.weight",
            "scalar"
        ]
    );
    assert_eq!(items[1]["dtype"], "BF16");
    assert_eq!(items[1]["shape"], serde_json::json!([96, 64]));
    assert_eq!(items[1]["bytes"], 96 * 64 * 2);
    // The offset points at the tensor's bytes in the stored file.
    let stored = std::fs::read(app.state.blobs.path(&sha256_hex(&file))).unwrap();
    assert_eq!(stored, file);
    let offset = items[1]["offset"].as_u64().unwrap() as usize;
    assert_eq!(
        stored[offset..offset + 96 * 64 * 2],
        noise(96 * 64 * 2, 2)[..]
    );

    let fetched = app.json(&location).await;
    assert_eq!(fetched["sha256"], model["sha256"]);
    assert_eq!(app.model_ids().await, vec![model["id"].as_str().unwrap()]);
    app.assert_no_temp_files().await;
}

#[tokio::test]
async fn a_multipart_upload_is_accepted_as_a_browser_sends_it() {
    let app = spawn_app().await;
    let file = small_model(7);
    let form = Form::new().part(
        "file",
        Part::bytes(file.clone()).file_name("browser.safetensors"),
    );
    let response = app.upload_multipart(form).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["name"], "browser");
    assert_eq!(model["sha256"], sha256_hex(&file));
    assert_eq!(model["files"][0]["name"], "browser.safetensors");
}

fn shard_index(map: &[(&str, &str)]) -> Vec<u8> {
    let weight_map: serde_json::Map<String, Value> = map
        .iter()
        .map(|(t, f)| ((*t).to_owned(), Value::from(*f)))
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map}),
    )
    .unwrap()
}

fn sharded_form(index: Vec<u8>) -> Form {
    let shard1 = safetensors(&[
        ("a.weight", "F32", &[8, 8], noise(256, 1)),
        ("b.weight", "F32", &[8], noise(32, 2)),
    ]);
    let shard2 = safetensors(&[("c.weight", "BF16", &[4, 8], noise(64, 3))]);
    let config =
        br#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}"#;
    Form::new()
        .text("name", "sharded-llama")
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
            Part::bytes(index).file_name("model.safetensors.index.json"),
        )
        .part(
            "file",
            Part::bytes(config.to_vec()).file_name("config.json"),
        )
        .part(
            "file",
            Part::bytes(b"{\"version\": \"1.0\"}".to_vec()).file_name("tokenizer.json"),
        )
}

#[tokio::test]
async fn a_sharded_checkpoint_uploads_as_one_model_with_all_its_tensors() {
    let app = spawn_app().await;
    let index = shard_index(&[
        ("a.weight", "model-00001-of-00002.safetensors"),
        ("b.weight", "model-00001-of-00002.safetensors"),
        ("c.weight", "model-00002-of-00002.safetensors"),
    ]);
    let response = app.upload_multipart(sharded_form(index)).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["name"], "sharded-llama");
    assert_eq!(model["architecture"], "LlamaForCausalLM");
    assert_eq!(model["model_type"], "llama");
    assert_eq!(model["tensor_count"], 3);
    assert_eq!(model["files"].as_array().unwrap().len(), 5);
    let tensors = app
        .json(&format!(
            "/api/v1/models/{}/tensors",
            model["id"].as_str().unwrap()
        ))
        .await;
    let by_file: Vec<(String, String)> = tensors["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["file"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_file,
        [
            ("a.weight".into(), "model-00001-of-00002.safetensors".into()),
            ("b.weight".into(), "model-00001-of-00002.safetensors".into()),
            ("c.weight".into(), "model-00002-of-00002.safetensors".into()),
        ]
    );
}

#[tokio::test]
async fn an_index_that_disagrees_with_the_shards_is_refused_and_nothing_is_kept() {
    let app = spawn_app().await;
    let wrong = shard_index(&[
        ("a.weight", "model-00002-of-00002.safetensors"),
        ("b.weight", "model-00001-of-00002.safetensors"),
        ("c.weight", "model-00002-of-00002.safetensors"),
    ]);
    let missing_shard = shard_index(&[
        ("a.weight", "model-00001-of-00002.safetensors"),
        ("b.weight", "model-00001-of-00002.safetensors"),
        ("c.weight", "model-00003-of-00003.safetensors"),
    ]);
    for (index, code) in [(wrong, "index_mismatch"), (missing_shard, "missing_shard")] {
        let response = app.upload_multipart(sharded_form(index)).await;
        assert_eq!(response.status(), 422);
        assert!(is_problem(&response));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
    }
    // Two shards and no index at all.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(small_model(1)).file_name("a.safetensors"),
        )
        .part(
            "file",
            Part::bytes(small_model(2)).file_name("b.safetensors"),
        );
    let response = app.upload_multipart(form).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "missing_index");
    assert!(app.model_ids().await.is_empty());
    app.assert_no_temp_files().await;
}

#[tokio::test]
async fn uploads_over_the_cap_get_413_whether_declared_or_streamed() {
    let app = spawn_app_with(Options {
        max_upload: 64 * 1024,
        ..Options::default()
    })
    .await;
    let big = safetensors(&[("w", "U8", &[100_000], noise(100_000, 5))]);
    // Declared by Content-Length: refused before the body is read.
    let response = app.upload("big", big.clone()).await;
    assert_eq!(response.status(), 413);
    assert!(is_problem(&response));
    // Streamed without a length (chunked): refused when the count crosses the cap.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let response = app
        .client
        .post(app.url("/api/v1/models?name=big"))
        .header(AUTHORIZATION, app.bearer())
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match response {
        Ok(response) => {
            assert_eq!(response.status(), 413);
            assert!(is_problem(&response));
        }
        // The server may close the connection before the client finished sending.
        Err(err) => assert!(err.is_request() || err.is_body(), "{err}"),
    }
    assert!(app.model_ids().await.is_empty());
    app.assert_no_temp_files().await;
    // A file under the cap still goes through.
    assert_eq!(app.upload("small", small_model(3)).await.status(), 201);
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_row_and_no_temp_file() {
    let app = spawn_app().await;
    let file = safetensors(&[("w", "U8", &[4 << 20], noise(4 << 20, 9))]);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/models?name=cut HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        app.bearer(),
        file.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&file[..file.len() / 2]).await.unwrap();
    socket.flush().await.unwrap();
    // Let the server start writing the temp file, then vanish mid-body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(socket);
    app.assert_no_temp_files().await;
    assert!(app.model_ids().await.is_empty());
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn deleting_a_model_keeps_blobs_other_models_share_and_removes_the_rest() {
    let app = spawn_app().await;
    let file = small_model(11);
    let digest = sha256_hex(&file);
    let first: Value = app.upload("one", file.clone()).await.json().await.unwrap();
    let second: Value = app.upload("two", file.clone()).await.json().await.unwrap();
    let blob = app.state.blobs.path(&digest);
    assert!(blob.is_file());

    let delete = |id: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&format!("/api/v1/models/{id}")))
                .header(AUTHORIZATION, app.bearer())
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(first["id"].as_str().unwrap().to_owned()).await, 204);
    assert!(blob.is_file(), "the second model still uses the file");
    assert_eq!(
        app.get(&format!("/api/v1/models/{}", first["id"].as_str().unwrap()))
            .await
            .status(),
        404
    );
    assert_eq!(delete(second["id"].as_str().unwrap().to_owned()).await, 204);
    assert!(!blob.exists(), "no model uses the file any more");
    assert_eq!(delete(second["id"].as_str().unwrap().to_owned()).await, 404);
    // The same bytes can be uploaded again after their blob was removed.
    assert_eq!(app.upload("three", file).await.status(), 201);
    assert!(blob.is_file());
}

#[tokio::test]
async fn model_lists_page_with_a_cursor_newest_first() {
    let app = spawn_app().await;
    for seed in 0..5 {
        assert_eq!(
            app.upload(&format!("m{seed}"), small_model(seed))
                .await
                .status(),
            201
        );
    }
    let first = app.json("/api/v1/models?limit=2").await;
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&first), ["m4", "m3"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .json(&format!("/api/v1/models?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(names(&second), ["m2", "m1"]);
    let third = app
        .json(&format!(
            "/api/v1/models?limit=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(names(&third), ["m0"]);
    assert!(third["next_cursor"].is_null());
    let response = app.get("/api/v1/models?limit=1000").await;
    assert_eq!(response.status(), 400);
    assert!(is_problem(&response));
}

/// README's first example: `curl -T model.safetensors '…/models?name=…'` sends a PUT.
#[tokio::test]
async fn a_put_upload_as_curl_t_sends_it_is_the_same_upload() {
    let app = spawn_app().await;
    let file = small_model(8);
    let response = app
        .client
        .put(app.url("/api/v1/models"))
        .query(&[("name", "put-model")])
        .header(AUTHORIZATION, app.bearer())
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    assert_eq!(model["name"], "put-model");
    assert_eq!(model["sha256"], sha256_hex(&file));
    let pickle = app
        .client
        .put(app.url("/api/v1/models"))
        .header(AUTHORIZATION, app.bearer())
        .body(b"\x80\x02}q\x00.".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(pickle.status(), 415);
    assert!(is_problem(&pickle));
}

/// A Hugging Face folder's files are all called "model": the config names the model, and an
/// identical second upload says which model it repeats.
#[tokio::test]
async fn a_folder_upload_is_named_from_its_config_and_an_identical_one_is_flagged() {
    let app = spawn_app().await;
    let weights = small_model(3);
    let config = br#"{"_name_or_path": "HuggingFaceTB/SmolLM2-135M", "model_type": "llama"}"#;
    let upload = || {
        Form::new()
            .part(
                "file",
                Part::bytes(weights.clone()).file_name("model.safetensors"),
            )
            .part(
                "file",
                Part::bytes(config.to_vec()).file_name("config.json"),
            )
    };
    let first: Value = app.upload_multipart(upload()).await.json().await.unwrap();
    assert_eq!(first["name"], "SmolLM2-135M");
    assert_eq!(first["duplicate_of"], Value::Null);
    let second: Value = app.upload_multipart(upload()).await.json().await.unwrap();
    assert_eq!(second["duplicate_of"], first["id"]);
}
