//! A multi-gigabyte upload through the real server: the digest must match and the server's peak
//! memory must not grow with the file. Prints throughput and peak RSS for the record
//! (`cargo test --test cli -- --nocapture upload`); the size is `SQUEEZE_TEST_UPLOAD_GIB` (default 2).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{Server, data_dir};

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Streams a safetensors file of one U8 tensor of `len` bytes; returns (status, server sha256,
/// client sha256, seconds).
/// Prints the server's peak RSS against `warm` (KiB) and asserts it grew by less than
/// `slack_mib`.
fn assert_peak_within(server: &Server, warm: u64, slack_mib: u64, what: &str) {
    let peak = peak_rss_kib(server.pid());
    println!(
        "{what}: server peak RSS {:.1} MiB before, {:.1} MiB after",
        warm as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        peak < warm + slack_mib * 1024,
        "peak RSS grew from {warm} KiB to {peak} KiB"
    );
}

async fn stream_upload(base: &str, token: &str, len: u64) -> (u16, String, String, f64) {
    let header = format!(r#"{{"big":{{"dtype":"U8","shape":[{len}],"data_offsets":[0,{len}]}}}}"#);
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(header.as_bytes());
    let block = Bytes::from(crate::common::noise(1 << 20, 42));
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let full_blocks = len / block.len() as u64;
    let tail = (len % block.len() as u64) as usize;
    let chunks = std::iter::once(Bytes::from(head))
        .chain((0..full_blocks).map({
            let block = block.clone();
            move |_| block.clone()
        }))
        .chain((tail > 0).then(|| block.slice(..tail)));
    let stream = futures_util::stream::iter(chunks.map({
        let hasher = hasher.clone();
        move |chunk| {
            hasher.lock().unwrap().update(&chunk);
            Ok::<_, std::io::Error>(chunk)
        }
    }));
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/models?name=big"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let client = hex::encode(hasher.lock().unwrap().clone().finalize());
    (
        status,
        body["sha256"].as_str().unwrap_or_default().to_owned(),
        client,
        seconds,
    )
}

#[tokio::test]
async fn a_multi_gigabyte_upload_keeps_server_memory_flat() {
    let gib: u64 = std::env::var("SQUEEZE_TEST_UPLOAD_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = data_dir();
    let server = Server::start(dir.path(), &[]);
    let token = server.admin_token(dir.path());

    let (status, server_sha, client_sha, _) = stream_upload(&server.base, &token, 64 << 20).await;
    assert_eq!(status, 201);
    assert_eq!(server_sha, client_sha);
    let warm = peak_rss_kib(server.pid());

    let len = gib << 30;
    let (status, server_sha, client_sha, seconds) = stream_upload(&server.base, &token, len).await;
    assert_eq!(status, 201);
    assert_eq!(
        server_sha, client_sha,
        "the server's digest must equal the client's"
    );
    let mb_per_s = len as f64 / 1e6 / seconds;
    println!("upload of {gib} GiB: {mb_per_s:.0} MB/s on loopback");
    assert_peak_within(&server, warm, 64, &format!("an upload of {gib} GiB"));
    assert!(server.terminate().success());
}

/// Costly recipe patterns (the probe's 100 × `re:\w{100}` took 640 MB and 10 s) cost the
/// server no lasting memory: each recipe is refused by its limits before it is compiled whole.
#[tokio::test]
async fn costly_recipe_patterns_leave_server_memory_flat() {
    let dir = data_dir();
    let server = Server::start(dir.path(), &[]);
    let token = server.admin_token(dir.path());
    let client = reqwest::Client::new();
    let model = crate::common::bf16_model(2, 16, 64, 3);
    let uploaded: serde_json::Value = client
        .post(format!("{}/api/v1/models?name=patterns", server.base))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(model)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model_id = uploaded["id"].as_str().unwrap().to_owned();
    let submit = |targets: Vec<String>| {
        let client = client.clone();
        let url = format!("{}/api/v1/jobs", server.base);
        let token = token.clone();
        let model_id = model_id.clone();
        async move {
            let body = serde_json::json!({"model_id": model_id, "recipe": {
                "stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": targets}});
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    // Warm up the allocator and the paths a refusal takes.
    assert_eq!(submit(vec![r"re:\w{100}".into()]).await, 422);
    let warm = peak_rss_kib(server.pid());
    for round in 0..20 {
        let many: Vec<String> = (0..300)
            .map(|i| format!(r"re:\w{{100}}{round}{i}"))
            .collect();
        assert_eq!(submit(many).await, 422);
        let within: Vec<String> = (0..32)
            .map(|i| format!(r"re:\w{{100}}{round}{i}"))
            .collect();
        assert_eq!(submit(within).await, 422);
    }
    assert_peak_within(&server, warm, 32, "40 recipes of 300 or 32 costly patterns");
    assert_eq!(
        client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(server.terminate().success());
}
