//! Evaluation through the service: datasets validated at upload (alone and against a model),
//! listed, scoped and deleted; jobs with an `eval` section reporting the original and the
//! compressed model side by side, the budget verdict, the original's figures reused, GGUF
//! blocks on native kernels, `/compare`, and the bundled demo.

use std::path::Path;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::artifacts::upload_tiny_llama;
use crate::common::safetensors;
use crate::helpers::{TestApp, spawn_app};
use crate::jobs::{follow_events, submit, wait_final};

fn demo_file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("static/demo")
            .join(name),
    )
    .unwrap()
}

async fn upload_digits(app: &TestApp) -> String {
    let mut form = Form::new().text("name", "digits");
    for name in ["model.safetensors", "config.json"] {
        form = form.part(
            "file",
            Part::bytes(demo_file(&format!("digits-mlp/{name}"))).file_name(name),
        );
    }
    let response = app.upload_multipart(form).await;
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    model["id"].as_str().unwrap().to_owned()
}

/// The demo's digits classifier and its test set, checked against it at upload.
async fn digits_with_test_set(app: &TestApp) -> (String, Value) {
    let digits = upload_digits(app).await;
    let set: Value = upload_set(
        app,
        "test",
        Some(&digits),
        demo_file("digits-test.safetensors"),
    )
    .await
    .json()
    .await
    .unwrap();
    (digits, set)
}

async fn upload_set(
    app: &TestApp,
    name: &str,
    model_id: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut query = vec![("name", name.to_owned())];
    if let Some(id) = model_id {
        query.push(("model_id", id.to_owned()));
    }
    app.client
        .post(app.url("/api/v1/datasets"))
        .query(&query)
        .header("authorization", app.bearer())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn refused(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    problem
}

/// A classifier set of `rows` rows of `features` F32 inputs and U8 labels.
fn tensor_set(rows: usize, features: usize, label: u8) -> Vec<u8> {
    let inputs: Vec<u8> = (0..rows * features)
        .flat_map(|i| ((i % 7) as f32 / 7.0).to_le_bytes())
        .collect();
    safetensors(&[
        ("inputs", "F32", &[rows as u64, features as u64], inputs),
        ("labels", "U8", &[rows as u64], vec![label; rows]),
    ])
}

#[tokio::test]
async fn bad_datasets_are_refused_at_upload_and_good_ones_are_listed_scoped_and_deleted() {
    let app = spawn_app().await;
    let digits = upload_digits(&app).await;
    refused(
        upload_set(&app, "empty", None, Vec::new()).await,
        422,
        "empty_dataset",
    )
    .await;
    let p = refused(
        upload_set(
            &app,
            "bad",
            None,
            b"{\"tokens\": [1, 2]}\n{\"tokens\": [1, \"x\"]}\n".to_vec(),
        )
        .await,
        422,
        "invalid_dataset",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().starts_with("line 2:"), "{p}");
    refused(
        upload_set(&app, "neg", None, b"[3, -1]\n".to_vec()).await,
        422,
        "invalid_dataset",
    )
    .await;
    refused(
        upload_set(
            &app,
            "shapes",
            None,
            safetensors(&[
                ("inputs", "F32", &[2, 3], vec![0; 24]),
                ("labels", "U8", &[3], vec![0; 3]),
            ]),
        )
        .await,
        422,
        "invalid_dataset",
    )
    .await;
    refused(
        upload_set(&app, "width", Some(&digits), tensor_set(4, 63, 1)).await,
        422,
        "dataset_mismatch",
    )
    .await;
    let p = refused(
        upload_set(&app, "labels", Some(&digits), tensor_set(4, 64, 12)).await,
        422,
        "dataset_mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("label 12"), "{p}");
    refused(
        upload_set(&app, "kind", Some(&digits), b"[1, 2, 3]\n".to_vec()).await,
        422,
        "dataset_mismatch",
    )
    .await;
    refused(
        upload_set(&app, "huge", None, vec![b' '; (1 << 20) + 1]).await,
        413,
        "payload_too_large",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let llama = upload_tiny_llama(&app, dir.path()).await;
    let p = refused(
        upload_set(&app, "vocab", Some(&llama), b"[1, 2, 500]\n".to_vec()).await,
        422,
        "dataset_mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("500"), "{p}");
    app.assert_no_temp_files().await;

    let response = upload_set(
        &app,
        "digits test",
        Some(&digits),
        demo_file("digits-test.safetensors"),
    )
    .await;
    assert_eq!(response.status(), 201);
    let set: Value = response.json().await.unwrap();
    assert_eq!(set["kind"], "tensors");
    assert_eq!(set["stats"]["rows"], 539);
    assert_eq!(set["stats"]["features"], 64);
    assert_eq!(set["stats"]["max_label"], 9);
    let id = set["id"].as_str().unwrap();
    let listed = app.json("/api/v1/datasets").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.json(&format!("/api/v1/datasets/{id}")).await["name"],
        "digits test"
    );
    let other = app.token_of("other-team").await;
    assert_eq!(
        app.get_as(&other, &format!("/api/v1/datasets/{id}"))
            .await
            .status(),
        404
    );
    let deleted = app.delete(&format!("/api/v1/datasets/{id}")).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        app.get(&format!("/api/v1/datasets/{id}")).await.status(),
        404
    );
}

async fn run_job(app: &TestApp, body: Value) -> Value {
    let response = submit(app, body, None).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let done = wait_final(app, job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

/// Both models timed in the same rounds: as many samples each, a speed-up per measurement with
/// its spread around the median, the headline speed-up being the first's median.
fn assert_interleaved_latency(eval: &Value, expected: bool) {
    let speedups = eval["speedups"].as_array().expect("speedups");
    assert_eq!(speedups.len(), 2, "{eval}");
    for (i, s) in speedups.iter().enumerate() {
        let (low, median, high) = (
            s["p10"].as_f64().unwrap(),
            s["median"].as_f64().unwrap(),
            s["p90"].as_f64().unwrap(),
        );
        assert!(0.0 < low && low <= median && median <= high, "{s}");
        let rounds = s["rounds"].as_u64().unwrap();
        assert!(rounds >= 5, "{s}");
        for side in ["original", "compressed"] {
            assert_eq!(eval[side]["latency"][i]["repeats"].as_u64(), Some(rounds));
        }
    }
    assert_eq!(eval["speedup"], speedups[0]["median"]);
    assert_eq!(eval["speedup_expected"], expected, "{eval}");
}

fn figure(eval: &Value, side: &str, name: &str) -> f64 {
    eval[side]["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{side} {name}: {eval}"))
}

#[tokio::test]
async fn evaluated_jobs_report_both_models_the_budget_verdict_and_compare_rows() {
    let app = spawn_app().await;
    let (digits, set) = digits_with_test_set(&app).await;
    let dataset = set["id"].as_str().unwrap();
    for (eval, code) in [
        (
            json!({"dataset_id": "0190f6a0-0000-7000-8000-000000000000"}),
            "dataset_not_found",
        ),
        (
            json!({"dataset_id": dataset, "metric": "perplexity"}),
            "bad_metric",
        ),
        (
            json!({"dataset_id": dataset, "max_drop": -1}),
            "bad_max_drop",
        ),
    ] {
        let response = submit(
            &app,
            json!({"model_id": digits, "preset": "int8", "eval": eval}),
            None,
        )
        .await;
        refused(response, 422, code).await;
    }
    let int8 = run_job(
        &app,
        json!({"model_id": digits, "preset": "int8", "eval": {"dataset_id": dataset, "max_drop": 0.01}}),
    )
    .await;
    assert_eq!(int8["eval"]["dataset_id"], dataset);
    let eval = &int8["result"]["eval"];
    assert_eq!(eval["architecture"], "mlp");
    assert_eq!(eval["metric"], "accuracy");
    assert_eq!(eval["evaluated"], 539);
    assert_eq!(eval["accepted"], true, "{eval}");
    assert_eq!(eval["original_reused"], false);
    let original = figure(eval, "original", "accuracy");
    assert!(original > 0.95 && (original - figure(eval, "compressed", "accuracy")).abs() <= 0.01);
    for side in ["original", "compressed"] {
        assert!(figure(eval, side, "latency_ms") > 0.0);
        assert_eq!(eval[side]["latency"].as_array().unwrap().len(), 2);
        assert!(figure(eval, side, "accuracy_noise_1") < figure(eval, side, "accuracy"));
    }
    assert!(eval["runtime"]["threads"].as_u64().unwrap() >= 1);
    assert!(!eval["runtime"]["cpu"].as_str().unwrap().is_empty());
    assert_interleaved_latency(eval, false);

    let pruned = run_job(
        &app,
        json!({"model_id": digits, "eval": {"dataset_id": dataset, "max_drop": 0.01},
               "recipe": {"stages": [{"prune": {"method": "magnitude", "sparsity": 0.9}}]}}),
    )
    .await;
    let eval = &pruned["result"]["eval"];
    assert_eq!(
        eval["accepted"], false,
        "a failed budget is a result: {eval}"
    );
    assert_eq!(eval["original_reused"], true);
    assert_eq!(figure(eval, "original", "accuracy"), original);
    // Accuracy figures are reused; latency never is: both models are timed in this job.
    assert_interleaved_latency(eval, false);
    assert!(eval["drop"].as_f64().unwrap() > 0.2);
    let loose = run_job(
        &app,
        json!({"model_id": digits, "eval": {"dataset_id": dataset, "max_drop": 0.9},
               "recipe": {"stages": [{"prune": {"method": "magnitude", "sparsity": 0.9}}]}}),
    )
    .await;
    assert_eq!(loose["result"]["eval"]["accepted"], true);

    let rows = app
        .json(&format!("/api/v1/compare?model_id={digits}"))
        .await;
    let rows = rows["items"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["eval"]["compressed"]["metrics"]["accuracy"].is_number())
    );
    let ids = format!(
        "{},{}",
        int8["id"].as_str().unwrap(),
        pruned["id"].as_str().unwrap()
    );
    let two = app.json(&format!("/api/v1/compare?jobs={ids}")).await;
    assert_eq!(two["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.get("/api/v1/compare").await.status(), 400);
    let report = app
        .json(&format!(
            "/api/v1/jobs/{}/report",
            int8["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(report["summary"]["eval"]["accepted"], true);
}

#[tokio::test]
async fn a_decoder_job_on_gguf_blocks_reports_native_kernels_and_its_budget() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let llama = upload_tiny_llama(&app, dir.path()).await;
    let lines: String = (0..4)
        .map(|s| {
            format!(
                "{{\"tokens\": [{}]}}\n",
                (0..32)
                    .map(|i| ((i * 7 + s * 13) % 128).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let set: Value = upload_set(&app, "tokens", Some(&llama), lines.into_bytes())
        .await
        .json()
        .await
        .unwrap();
    let dataset = set["id"].as_str().unwrap();
    // Raw text, tokenized with the model's own tokenizer.json.
    let text = app
        .client
        .post(app.url("/api/v1/datasets"))
        .query(&[
            ("name", "text"),
            ("model_id", llama.as_str()),
            ("format", "text"),
            ("window", "6"),
        ])
        .header("authorization", app.bearer())
        .body("thequickbrownfoxjumpsoverthelazydog")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 201);
    let text: Value = text.json().await.unwrap();
    assert_eq!(text["kind"], "tokens");
    assert!(text["stats"]["rows"].as_u64().unwrap() >= 2, "{text}");
    assert!(text["stats"]["max_length"].as_u64().unwrap() <= 6);
    let no_model = app
        .client
        .post(app.url("/api/v1/datasets"))
        .query(&[("name", "text"), ("format", "text")])
        .header("authorization", app.bearer())
        .body("abc")
        .send()
        .await
        .unwrap();
    refused(no_model, 422, "model_required").await;
    let recipe =
        json!({"stages": [{"quantize": {"scheme": "gguf", "type": "Q4_0"}}], "format": "gguf"});
    let mut verdicts = Vec::new();
    let mut kl_means = Vec::new();
    let kept = app
        ._data_dir
        .path()
        .join(format!("blobs/derived/{llama}.{dataset}.ref"));
    let mut first_kept = None;
    for (i, max_drop) in [10.0, 0.000001].into_iter().enumerate() {
        let job = run_job(
            &app,
            json!({"model_id": llama, "recipe": recipe, "eval": {"dataset_id": dataset, "max_drop": max_drop}}),
        )
        .await;
        let eval = &job["result"]["eval"];
        // The first job runs the original and keeps its outputs; the second reads them back
        // and runs the compressed model alone, to the same figures.
        assert_eq!(eval["original_reused"], i == 1, "{eval}");
        assert!(kept.exists(), "{} was not kept", kept.display());
        // The file itself proves the reuse: a job that ran the original again would have
        // written it anew.
        let stamp = (
            std::fs::metadata(&kept).unwrap().modified().unwrap(),
            std::fs::read(&kept).unwrap(),
        );
        match &first_kept {
            None => first_kept = Some(stamp),
            Some(first) => assert!(
                *first == stamp,
                "the second job wrote the kept outputs again"
            ),
        }
        assert!(eval["accuracy_seconds"].as_f64().unwrap() > 0.0);
        kl_means.push(figure(eval, "compressed", "kl_mean"));
        assert!(job["result"]["eval_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(eval["compressed"]["kernel"], "native", "{eval}");
        // llama-quantize's rules: the tied embedding, which is also the output, at Q6_K.
        assert_eq!(eval["compressed"]["kernel_types"], json!(["Q4_0", "Q6_K"]));
        assert_eq!(eval["original"]["kernel"], "dense");
        assert_eq!(eval["metric"], "perplexity");
        assert!(figure(eval, "compressed", "kl_mean") > 0.0);
        assert!(figure(eval, "compressed", "prompt_tokens_per_s") > 0.0);
        assert!(eval["speedup"].as_f64().unwrap() > 0.0);
        // GGUF blocks are multiplied natively, so a speed-up can be expected.
        assert_interleaved_latency(eval, true);
        assert_eq!(eval["speedups"][0]["name"], "decode_token");
        assert_eq!(eval["speedups"][1]["name"], "prompt");
        verdicts.push(eval["accepted"].as_bool().unwrap());
    }
    assert_eq!(
        verdicts,
        [true, false],
        "tightening max_drop flips the verdict"
    );
    assert_eq!(kl_means[0], kl_means[1]);
    let deleted = app.delete(&format!("/api/v1/datasets/{dataset}")).await;
    assert_eq!(deleted.status(), 204);
    assert!(!kept.exists(), "the set's kept outputs outlived it");
}

#[tokio::test]
async fn the_demo_installs_a_model_a_set_and_evaluated_jobs() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/demo"))
        .header("authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let installed: Value = response.json().await.unwrap();
    let jobs = installed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 6);
    let mut accepted = Vec::new();
    for job in jobs {
        let done = wait_final(&app, job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert!(done["result"]["ratio"].as_f64().unwrap() > 1.5);
        accepted.push((
            done["name"].as_str().unwrap().to_owned(),
            done["result"]["eval"]["accepted"].as_bool().unwrap(),
        ));
    }
    assert!(
        accepted.contains(&("demo int8".into(), true)),
        "{accepted:?}"
    );
    assert!(
        accepted.contains(&("demo prune-90".into(), false)),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn evaluation_progress_streams_over_sse_while_a_job_evaluates() {
    let app = spawn_app().await;
    let (digits, set) = digits_with_test_set(&app).await;
    let response = submit(
        &app,
        json!({"model_id": digits, "preset": "int8", "eval": {"dataset_id": set["id"]}}),
        None,
    )
    .await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let (last, text) = follow_events(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(last["state"], "succeeded", "{last}");
    // A new phase and each evaluation stage are published at once (not only every 250 ms), so
    // the stream carries the evaluation's steps even when the evaluation is this short.
    let steps: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
        .filter(|j| j["progress"]["phase"] == "evaluating")
        .filter_map(|j| j["progress"].get("evaluation").cloned())
        .collect();
    assert!(!steps.is_empty(), "no evaluation progress in {text}");
    // While it evaluates, the artifact's size is already in the progress.
    let sizes: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
        .filter(|j| j["progress"]["phase"] == "evaluating")
        .map(|j| j["progress"]["compressed"]["ratio"].as_f64().unwrap())
        .collect();
    assert!(
        !sizes.is_empty() && sizes.iter().all(|r| *r > 1.0),
        "{sizes:?}"
    );
    for step in &steps {
        assert!(["accuracy", "latency"].contains(&step["stage"].as_str().unwrap()));
        assert!(step["done"].as_u64().unwrap() <= step["total"].as_u64().unwrap());
    }
    assert!(
        steps
            .iter()
            .any(|s| s["stage"] == "latency" && s["seconds_left"].as_f64().is_some()),
        "{steps:?}"
    );
}

#[tokio::test]
async fn a_model_says_what_it_can_evaluate_and_which_sets_fit_it() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let llama = upload_tiny_llama(&app, dir.path()).await;
    let digits = upload_digits(&app).await;
    let tokens: Value = upload_set(
        &app,
        "tokens",
        None,
        b"{\"tokens\": [1, 2, 3, 4]}\n".to_vec(),
    )
    .await
    .json()
    .await
    .unwrap();
    let images: Value = upload_set(&app, "digits", None, demo_file("digits-test.safetensors"))
        .await
        .json()
        .await
        .unwrap();

    let options = app
        .json(&format!("/api/v1/models/{llama}/evaluation"))
        .await;
    assert_eq!(options["architecture"], "llama");
    assert_eq!(options["dataset_kind"], "tokens");
    assert_eq!(options["takes_text"], true);
    let metrics: Vec<&str> = options["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        ["perplexity", "kl_mean", "kl_p99", "top1_agreement"]
    );
    assert_eq!(options["metrics"][0]["lower_is_better"], true);
    assert_eq!(options["metrics"][0]["budget"], "relative increase");
    assert_eq!(options["metrics"][3]["lower_is_better"], false);
    let fit = |options: &Value, id: &Value| {
        options["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == *id)
            .cloned()
            .unwrap()
    };
    assert_eq!(fit(&options, &tokens["id"])["fits"], true);
    let wrong = fit(&options, &images["id"]);
    assert_eq!(wrong["fits"], false);
    assert!(
        wrong["reason"].as_str().unwrap().contains("token"),
        "{wrong}"
    );
    assert_eq!(
        options["datasets"][0]["id"], tokens["id"],
        "sets that fit come first"
    );

    let options = app
        .json(&format!("/api/v1/models/{digits}/evaluation"))
        .await;
    assert_eq!(options["architecture"], "mlp");
    assert_eq!(options["takes_text"], false);
    assert_eq!(fit(&options, &images["id"])["fits"], true);
    assert_eq!(fit(&options, &tokens["id"])["fits"], false);

    let catalogue = app.json("/api/v1/evaluation/figures").await;
    let info = |name: &str| {
        catalogue
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {catalogue}"))
    };
    assert_eq!(info("kl_mean")["lower_is_better"], true);
    assert_eq!(info("prompt_tokens_per_s")["lower_is_better"], false);
    assert!(info("speedup").get("budget").is_none());
    assert_eq!(info("accuracy")["unit"], "rate");

    let config = app.json(&format!("/api/v1/models/{llama}/config")).await;
    assert_eq!(config["model_type"], "llama");
    let bare = crate::jobs::upload_model(&app, 4, 32).await.0;
    let missing = app.get(&format!("/api/v1/models/{bare}/config")).await;
    refused(missing, 404, "no_config").await;
    let other = app.token_of("elsewhere").await;
    for path in [
        format!("/api/v1/models/{llama}/config"),
        format!("/api/v1/models/{llama}/evaluation"),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .header("authorization", format!("Bearer {other}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
