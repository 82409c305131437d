//! Every output format through the service: a tiny random Llama-style model folder (config,
//! tokenizer, generation config, weights; written by tests/python/tiny_llama.py) uploaded,
//! compressed by a job per format, and downloaded; the downloaded folder is complete, its files
//! match the listing's sizes and digests, the summary's sizes are the files' real bytes, and an
//! independent decoder (tests/python/check_artifacts.py) finds the measured values in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{item_strings, python};
use crate::helpers::{TestApp, spawn_app};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run_python(script_name: &str, arg: &str) -> String {
    let out = Command::new(python())
        .arg(script(script_name))
        .arg(arg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script_name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Uploads the tiny Llama folder as one model; returns its id.
pub(crate) async fn upload_tiny_llama(app: &TestApp, dir: &Path) -> String {
    use reqwest::multipart::{Form, Part};
    run_python("tiny_llama.py", dir.to_str().unwrap());
    let mut form = Form::new();
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        form = form.part(
            "file",
            Part::bytes(std::fs::read(dir.join(name)).unwrap()).file_name(name),
        );
    }
    let response = app.upload_multipart(form).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    model["id"].as_str().unwrap().to_owned()
}

async fn submit(app: &TestApp, model_id: &str, recipe: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/jobs"))
        .header("authorization", app.bearer())
        .json(&json!({"model_id": model_id, "recipe": recipe}))
        .send()
        .await
        .unwrap()
}

/// Runs a job to success and downloads its files into `dir`; returns the job.
async fn run_and_download(app: &TestApp, model_id: &str, recipe: Value, dir: &Path) -> Value {
    let response = submit(app, model_id, &recipe).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let job = loop {
        let job = app.json(&format!("/api/v1/jobs/{id}")).await;
        if ["succeeded", "failed", "canceled"].contains(&job["state"].as_str().unwrap()) {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    std::fs::create_dir_all(dir).unwrap();
    let files = app.json(&format!("/api/v1/jobs/{id}/files")).await;
    for f in files["items"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let bytes = app
            .get(&format!("/api/v1/jobs/{id}/files/{name}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap(), "{name}");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), f["sha256"], "{name}");
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
    let mut job = job;
    job["files"] = json!(item_strings(&files, "name"));
    job
}

fn file_len(path: PathBuf) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn each_format_downloads_as_a_complete_folder_holding_the_measured_values() {
    let app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("model");
    let model_id = upload_tiny_llama(&app, &original).await;
    let folder = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "recipe.json",
        "tokenizer.json",
    ];
    let ignore = json!(["model.embed_tokens.weight", "lm_head.weight"]);
    let int4 = json!({"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 128}});
    let int4_f16 = json!({"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 128, "scale_dtype": "f16"}});
    let q4 = json!({"quantize": {"scheme": "gguf", "type": "Q4_0"}});
    let cluster = json!({"cluster": {"bits": 4}});
    let cases = [
        (
            "compressed-tensors",
            int4,
            int4_f16,
            folder.to_vec(),
            "compressed-tensors",
            json!({"format": "pack-quantized", "num_bits": 4}),
        ),
        (
            "gguf",
            q4.clone(),
            q4,
            vec!["model.gguf", "recipe.json"],
            "gguf",
            json!({"names": {"model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight"}, "heads": [4, 2], "metadata": {"general.architecture": "llama", "llama.block_count": 2}}),
        ),
        (
            "compact-safetensors",
            cluster.clone(),
            cluster,
            folder.to_vec(),
            "compact",
            json!({}),
        ),
    ];
    for (format, stage, dense_stage, expected_files, kind, expect) in cases {
        let artifact_dir = work.path().join(format);
        let dense_dir = work.path().join(format!("{format}-dense"));
        let job = run_and_download(
            &app,
            &model_id,
            json!({"stages": [stage], "format": format, "ignore": ignore}),
            &artifact_dir,
        )
        .await;
        assert_eq!(job["files"], json!(expected_files), "{format}");
        let dense = run_and_download(
            &app,
            &model_id,
            json!({"stages": [dense_stage], "ignore": ignore, "format": "safetensors"}),
            &dense_dir,
        )
        .await;
        assert_eq!(dense["files"], json!(folder), "safetensors");
        // Honest sizes: the summary's figures are the downloaded files' bytes.
        let summary = &job["result"];
        let weights_file = artifact_dir.join(if format == "gguf" {
            "model.gguf"
        } else {
            "model.safetensors"
        });
        assert_eq!(
            summary["weight_files_bytes"],
            file_len(weights_file),
            "{format}"
        );
        let all: u64 = expected_files
            .iter()
            .filter(|f| **f != "recipe.json")
            .map(|f| file_len(artifact_dir.join(f)))
            .sum();
        assert_eq!(summary["bytes_out"], all, "{format}");
        let bits = summary["bits_per_weight"].as_f64().unwrap();
        let theoretical = summary["theoretical_bits_per_weight"].as_f64().unwrap();
        assert!(
            bits >= theoretical && theoretical > 3.0,
            "{format}: {bits} vs {theoretical}"
        );
        assert!(
            bits < 9.0,
            "{format}: {bits} bits per weight is no compression"
        );
        let report = app
            .json(&format!(
                "/api/v1/jobs/{}/report",
                job["id"].as_str().unwrap()
            ))
            .await;
        let out_bytes: i64 = report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["bytes_out"].as_i64().unwrap())
            .sum();
        assert!(
            out_bytes as u64 <= summary["weight_files_bytes"].as_u64().unwrap(),
            "{format}: per-tensor bytes exceed the file"
        );
        let mut expect = expect;
        if kind == "gguf" {
            // Only the named tensors are compared here; the CLI test checks every one.
            let file = std::fs::File::open(artifact_dir.join("model.gguf")).unwrap();
            let parsed = squeeze::formats::gguf::read(std::io::BufReader::new(file)).unwrap();
            assert_eq!(parsed.tensors.len(), 21);
            expect["names"] = json!({"model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight",
                                     "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight"});
            expect["subset"] = json!(true);
        }
        let spec = json!({"kind": kind, "artifact": artifact_dir, "dense": dense_dir,
                          "original": original, "expect": expect});
        run_python("check_artifacts.py", &spec.to_string());
    }
}

#[tokio::test]
async fn recipes_a_format_cannot_store_are_refused_naming_the_stage_or_tensor() {
    let app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let model_id = upload_tiny_llama(&app, &work.path().join("model")).await;
    let cases = [
        (
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "format": "gguf"}),
            "stage 1: format gguf cannot store int8",
        ),
        (
            json!({"stages": [{"quantize": {"scheme": "gguf", "type": "Q8_0"}}], "format": "compressed-tensors"}),
            "format compressed-tensors cannot store gguf Q8_0",
        ),
        (
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "scale_dtype": "f32"}}], "format": "compressed-tensors"}),
            "scale_dtype must be left out or match it",
        ),
        (
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 8}}, {"prune": {"method": "magnitude", "sparsity": 0.5}}], "format": "compressed-tensors"}),
            "quantize must be the last stage",
        ),
        (
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 4}}], "format": "compressed-tensors",
                   "targets": ["model.norm.weight"]}),
            "compressed-tensors compresses the 2-D weights",
        ),
        (
            json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}], "format": "compact-safetensors"}),
            "end the recipe with a cluster or low_rank stage",
        ),
    ];
    for (recipe, message) in cases {
        let response = submit(&app, &model_id, &recipe).await;
        assert_eq!(response.status(), 422, "{recipe}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "format_mismatch", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(message),
            "{problem}"
        );
    }
}
