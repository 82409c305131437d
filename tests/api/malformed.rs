//! The malformed-file corpus: every crafted file gets its documented status and code as
//! problem+json, and the server keeps nothing and stays healthy.

use serde_json::Value;

use crate::common::corpus::{corpus, raw};
use crate::common::small_model;
use crate::helpers::{is_problem, spawn_app};

#[tokio::test]
async fn every_crafted_file_is_refused_with_its_code_and_nothing_is_kept() {
    let app = spawn_app().await;
    let cases = corpus();
    assert!(cases.len() >= 22);
    for (case, name, body, status, code) in cases {
        let response = app.upload(name, body).await;
        assert_eq!(response.status().as_u16(), status, "{case}");
        assert!(is_problem(&response), "{case}: not problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{case}: {problem}");
        assert_eq!(problem["status"], status, "{case}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{case}");
    }
    assert!(
        app.model_ids().await.is_empty(),
        "a refused upload became visible"
    );
    app.assert_no_temp_files().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // The server still takes a good file afterwards.
    assert_eq!(app.upload("fine", small_model(2)).await.status(), 201);
}

#[tokio::test]
async fn a_refusal_names_the_tensor_at_fault() {
    let app = spawn_app().await;
    let body = raw(
        r#"{"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"bad.weight":{"dtype":"F32","shape":[3],"data_offsets":[4,12]}}"#,
        12,
    );
    let response = app.upload("x.safetensors", body).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "size_mismatch");
    assert_eq!(problem["tensor"], "bad.weight");
    assert!(problem["detail"].as_str().unwrap().contains("bad.weight"));
}

#[tokio::test]
async fn a_pickle_refusal_says_how_to_convert() {
    let app = spawn_app().await;
    let response = app
        .upload(
            "pytorch_model.bin",
            vec![0x80, 0x04, 0x95, 0, 0, 0, 0, 0, 0],
        )
        .await;
    assert_eq!(response.status(), 415);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("safetensors"),
        "{problem}"
    );
}

#[tokio::test]
async fn bad_side_files_in_a_multipart_upload_are_refused() {
    let app = spawn_app().await;
    for (file_name, body, status, code) in [
        ("config.json", b"{not json".to_vec(), 422, "bad_json"),
        (
            "../../etc/passwd.safetensors",
            small_model(1),
            400,
            "bad_file_name",
        ),
        ("weights.pkl", vec![0x80, 0x04], 415, "unsupported_format"),
        ("run.sh", b"#!/bin/sh".to_vec(), 415, "unsupported_format"),
    ] {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(small_model(1)).file_name("model.safetensors"),
            )
            .part(
                "file",
                reqwest::multipart::Part::bytes(body).file_name(file_name),
            );
        let response = app.upload_multipart(form).await;
        assert_eq!(response.status().as_u16(), status, "{file_name}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{file_name}: {problem}");
    }
    assert!(app.model_ids().await.is_empty());
    app.assert_no_temp_files().await;
}
