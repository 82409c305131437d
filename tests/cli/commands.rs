//! `token`, `migrate` and `inspect` from the command line.

use crate::common::{noise, safetensors};
use crate::{cluster_running, data_dir, squeeze};

#[test]
fn token_commands_create_list_and_revoke_and_leave_the_cluster_as_found() {
    let dir = data_dir();
    let d = dir.path().to_str().unwrap();
    let (status, stdout, stderr) = squeeze(&["migrate", "--data-dir", d]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("migrations applied"));
    assert!(
        !cluster_running(dir.path()),
        "a helper stops the cluster it started"
    );

    let (status, stdout, stderr) = squeeze(&[
        "token",
        "create",
        "--team",
        "ml-team",
        "--name",
        "ci",
        "--data-dir",
        d,
    ]);
    assert!(status.success(), "{stderr}");
    let token = stdout.trim();
    assert!(token.starts_with("sqz_") && token.len() == 47, "{stdout}");
    let id = stderr
        .split_whitespace()
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .expect("the id is printed")
        .to_owned();

    let (status, listing, _) = squeeze(&["token", "list", "--data-dir", d]);
    assert!(status.success());
    assert!(
        listing.contains(&id) && listing.contains("ml-team") && listing.contains("active"),
        "{listing}"
    );
    assert!(
        !listing.contains(&token[12..]),
        "list must never print secrets"
    );

    let (status, stdout, _) = squeeze(&["token", "revoke", &id, "--data-dir", d]);
    assert!(status.success());
    assert!(stdout.contains("revoked"));
    let (_, listing, _) = squeeze(&["token", "list", "--json", "--data-dir", d]);
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert!(rows[0]["revoked_at"].is_string());

    let (status, _, stderr) = squeeze(&["token", "revoke", &id, "--data-dir", d]);
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    let (status, _, stderr) = squeeze(&["token", "create", "--team", "Bad Name", "--data-dir", d]);
    assert!(!status.success());
    assert!(stderr.contains("team name"), "{stderr}");
    assert!(!cluster_running(dir.path()));
}

#[test]
fn inspect_lists_tensors_and_totals_and_refuses_bad_files_in_one_line() {
    let dir = data_dir();
    let path = dir.path().join("m.safetensors");
    std::fs::write(
        &path,
        safetensors(&[
            ("layers.0.weight", "BF16", &[32, 16], noise(1024, 1)),
            ("layers.0.bias", "F32", &[32], noise(128, 2)),
        ]),
    )
    .unwrap();
    let (status, stdout, stderr) = squeeze(&["inspect", path.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("layers.0.weight")
            && stdout.contains("BF16")
            && stdout.contains("[32, 16]")
    );
    assert!(
        stdout.contains("2 tensors, 544 parameters, 1152 bytes of tensor data"),
        "{stdout}"
    );

    let (status, stdout, _) = squeeze(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["tensors"][0]["shape"], serde_json::json!([32, 16]));

    let bad = dir.path().join("bad.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"extra");
    std::fs::write(&bad, bytes).unwrap();
    let (status, _, stderr) = squeeze(&["inspect", bad.to_str().unwrap()]);
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("trailing bytes"), "{stderr}");
    let (status, _, stderr) = squeeze(&["inspect", "/nonexistent.safetensors"]);
    assert!(!status.success());
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn compress_runs_offline_and_refuses_bad_input_in_one_line() {
    let dir = data_dir();
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, crate::common::bf16_model(2, 16, 64, 3)).unwrap();
    let out = dir.path().join("out");
    let (status, stdout, stderr) = squeeze(&[
        "compress",
        "--preset",
        "prune-50-int8",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("2 of 2 tensors compressed"), "{stdout}");
    assert!(stdout.contains("sparsity 50.0%"), "{stdout}");
    let (status, inspected, _) =
        squeeze(&["inspect", out.join("model.safetensors").to_str().unwrap()]);
    assert!(status.success());
    assert!(inspected.contains("layers.1.weight"));
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
    // The input's identity is its BLAKE3 (b3sum's digest); its sha256 only with --checksums.
    let model_bytes = std::fs::read(&model).unwrap();
    assert_eq!(
        provenance["model_blake3"],
        blake3::hash(&model_bytes).to_hex().as_str()
    );
    assert!(provenance.get("model_sha256").is_none(), "{provenance}");
    // The artifact's recipe.json, as downloaded, reproduces the job.
    let again = dir.path().join("again");
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--recipe",
        out.join("recipe.json").to_str().unwrap(),
        model.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(again.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
    // Output digests only when asked for, and then each file's own (here also synced, as the
    // service's are).
    assert!(!stdout.contains("sha256"), "{stdout}");
    let (status, stdout, stderr) = squeeze(&[
        "compress",
        "--preset",
        "prune-50-int8",
        "--checksums",
        "--sync",
        model.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    for name in ["model.safetensors", "recipe.json"] {
        let digest = crate::common::sha256_hex(&std::fs::read(again.join(name)).unwrap());
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {stdout}"));
        assert!(line.ends_with(&format!("sha256 {digest}")), "{line}");
    }
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(
        provenance["model_sha256"],
        crate::common::sha256_hex(&model_bytes)
    );
    assert_eq!(
        provenance["model_blake3"],
        blake3::hash(&model_bytes).to_hex().as_str()
    );

    // A folder: the digest of its files' listing, as `b3sum` prints it, in name order.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("config.json"), b"{\"model_type\": \"test\"}").unwrap();
    std::fs::copy(&model, folder.join("model.safetensors")).unwrap();
    let from_folder = dir.path().join("from-folder");
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--preset",
        "int8",
        folder.to_str().unwrap(),
        "-o",
        from_folder.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    let listing: String = ["config.json", "model.safetensors"]
        .iter()
        .map(|name| {
            let bytes = std::fs::read(folder.join(name)).unwrap();
            format!("{}  {name}\n", blake3::hash(&bytes).to_hex())
        })
        .collect();
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from_folder.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(
        provenance["model_blake3"],
        blake3::hash(listing.as_bytes()).to_hex().as_str()
    );

    let recipe = dir.path().join("bad.json");
    std::fs::write(&recipe, r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 10}}]}"#).unwrap();
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--recipe",
        recipe.to_str().unwrap(),
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("group_size 10 does not divide"), "{stderr}");
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--preset",
        "nope",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("unknown preset"), "{stderr}");
}

#[test]
fn the_pipeline_benchmark_reports_throughput_against_memcpy() {
    let dir = data_dir();
    let (status, stdout, stderr) = squeeze(&[
        "bench",
        "pipeline",
        "--size",
        "32MiB",
        "--work-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("GB/s of input")
            && stdout.contains("memcpy")
            && stdout.contains("peak RSS"),
        "{stdout}"
    );
}

#[test]
fn the_queue_benchmark_reports_throughput_and_latency_and_cleans_up() {
    let dir = data_dir();
    let (status, stdout, stderr) = squeeze(&[
        "bench",
        "queue",
        "--jobs",
        "100",
        "--latency-samples",
        "10",
        "--work-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    for expected in [
        "round trips/s",
        "jobs/s",
        "p50",
        "p99",
        "each ran exactly once",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in {stdout}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "the benchmark left {left:?}");
}

/// A model whose shapes exercise every remainder path: rows of odd length, a single row, a
/// single column, and a 3-D tensor.
fn awkward_model() -> Vec<u8> {
    use crate::common::{safetensors, weight_like_bf16};
    safetensors(&[
        (
            "a.weight",
            "BF16",
            &[37, 1027],
            weight_like_bf16(37 * 1027, 11),
        ),
        ("b.weight", "BF16", &[1, 4099], weight_like_bf16(4099, 12)),
        ("c.weight", "BF16", &[515, 1], weight_like_bf16(515, 13)),
        (
            "d.weight",
            "BF16",
            &[3, 5, 256],
            weight_like_bf16(3 * 5 * 256, 14),
        ),
    ])
}

#[test]
fn the_simd_and_baseline_kernels_write_identical_bytes() {
    let dir = data_dir();
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, awkward_model()).unwrap();
    let recipes = [
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "format": "safetensors"}"#,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "symmetric": false, "granularity": "tensor"}}], "format": "safetensors"}"#,
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.3}}, {"quantize": {"scheme": "int", "bits": 3, "symmetric": false}}], "format": "safetensors"}"#,
        r#"{"stages": [{"prune": {"method": "channels", "sparsity": 0.4}}, {"quantize": {"scheme": "nf4"}}], "format": "safetensors"}"#,
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}}, {"quantize": {"scheme": "fp8"}}], "format": "safetensors"}"#,
    ];
    for (n, recipe) in recipes.iter().enumerate() {
        let recipe_file = dir.path().join(format!("r{n}.json"));
        std::fs::write(&recipe_file, recipe).unwrap();
        let mut digests = Vec::new();
        for simd in ["baseline", "avx2", "best"] {
            let out = dir.path().join(format!("out-{n}-{simd}"));
            let output = std::process::Command::new(crate::common::squeeze_bin())
                .args(["compress", "--recipe"])
                .arg(&recipe_file)
                .arg(&model)
                .arg("-o")
                .arg(&out)
                .env("SQUEEZE_SIMD", simd)
                .env("SQUEEZE_LOG", "warn")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            digests.push(crate::common::sha256_hex(
                &std::fs::read(out.join("model.safetensors")).unwrap(),
            ));
        }
        assert_eq!(digests[0], digests[1], "baseline vs avx2, recipe {recipe}");
        assert_eq!(digests[0], digests[2], "baseline vs best, recipe {recipe}");
    }
}

#[test]
fn nan_or_infinite_weights_are_refused_in_one_line() {
    use crate::common::safetensors;
    let dir = data_dir();
    let mut values: Vec<u8> = [0.5f32, -0.25, 1.0, 2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    values[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    let model = dir.path().join("nan.safetensors");
    std::fs::write(&model, safetensors(&[("w.weight", "F32", &[2, 2], values)])).unwrap();
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--preset",
        "int8",
        model.to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NaN or infinite") && stderr.contains("\"w.weight\""),
        "{stderr}"
    );
}

#[test]
fn the_kernel_benchmark_prints_a_table_against_memcpy() {
    let (status, stdout, stderr) = squeeze(&[
        "bench",
        "kernels",
        "--rows",
        "64",
        "--cols",
        "1024",
        "--repeats",
        "1",
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("memcpy") && stdout.contains("threads"),
        "{stdout}"
    );
    for kernel in [
        "int8 per channel",
        "int4 group 128 asym",
        "magnitude prune 50%",
    ] {
        for dtype in ["BF16", "F32"] {
            assert!(
                stdout.contains(&format!("| {kernel} | {dtype} |")),
                "no {kernel} {dtype} row in {stdout}"
            );
        }
    }
}

#[test]
fn the_event_benchmark_reads_each_change_once_whatever_the_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = squeeze(&[
        "bench",
        "events",
        "--subscribers",
        "20",
        "--rounds",
        "5",
        "--work-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("baseline: 1 subscriber"), "{stdout}");
    assert!(
        stdout.contains("fan-out: 20 subscribers")
            && stdout.contains("1.0 database reads per change"),
        "{stdout}"
    );
}
