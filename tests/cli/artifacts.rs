//! Artifacts that other tools read: a tiny random Llama-style model (written by
//! tests/python/tiny_llama.py) compressed by `squeeze compress` into every output format, then
//! decoded by tests/python/check_artifacts.py, an implementation of the published layouts that
//! shares no code with squeeze: compressed-tensors decoded with numpy, GGUF opened and
//! dequantized by the `gguf` package's reader, compact safetensors rebuilt from their metadata;
//! every safetensors file opened by the `safetensors` package. Each decoded tensor must equal
//! the dense output of the same recipe, which holds the values squeeze measured.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::python;
use crate::{data_dir, squeeze};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run_python(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(script(args[0]))
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}: {}{}",
        args[0],
        args.get(1).unwrap_or(&""),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tiny Llama model folder.
pub fn tiny_llama(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    run_python(&["tiny_llama.py", model.to_str().unwrap()]);
    model
}

/// `squeeze compress --json` of `recipe` on `model` into `dir/label`, with `extra` arguments;
/// returns the summary.
fn compress(dir: &Path, model: &Path, label: &str, recipe: &Value, extra: &[&str]) -> Value {
    let recipe_path = dir.join(format!("{label}.json"));
    std::fs::write(&recipe_path, recipe.to_string()).unwrap();
    let out = dir.join(label);
    let mut args = vec![
        "compress",
        "--json",
        "--recipe",
        recipe_path.to_str().unwrap(),
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let (status, stdout, stderr) = squeeze(&args);
    assert!(status.success(), "{label}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{label}: {e}: {stdout}"))
}

/// Compresses with `recipe` in `format` and densely (same stages and selection), then runs the
/// independent checker; returns the artifact's summary and the checker's findings.
fn check(
    dir: &Path,
    model: &Path,
    label: &str,
    recipe: Value,
    dense_ignore: Option<Value>,
    kind: &str,
    expect: Value,
) -> (Value, Value) {
    check_with(dir, model, label, recipe, dense_ignore, kind, expect, &[])
}

/// [`check`] with `extra` arguments to both compressions.
#[allow(clippy::too_many_arguments)]
fn check_with(
    dir: &Path,
    model: &Path,
    label: &str,
    recipe: Value,
    dense_ignore: Option<Value>,
    kind: &str,
    expect: Value,
    extra: &[&str],
) -> (Value, Value) {
    let summary = compress(dir, model, label, &recipe, extra);
    let mut dense = recipe.clone();
    dense["format"] = json!("safetensors");
    if let Some(ignore) = dense_ignore {
        dense["ignore"] = ignore;
    }
    // The dense output keeps the scales the artifact stores (the weights' F16).
    for stage in dense["stages"].as_array_mut().unwrap() {
        if stage["quantize"]["scheme"] == "int" || stage["quantize"]["scheme"] == "fp8" {
            stage["quantize"]["scale_dtype"] = json!("f16");
        }
    }
    compress(dir, model, &format!("{label}-dense"), &dense, extra);
    // squeeze's own reader, checked against the same dense values.
    let artifact_file = ["model.safetensors", "model.gguf"]
        .iter()
        .map(|f| dir.join(label).join(f))
        .find(|p| p.exists())
        .unwrap();
    let decompressed = dir.join(format!("{label}-decompressed.safetensors"));
    let (status, _, stderr) = squeeze(&[
        "decompress",
        artifact_file.to_str().unwrap(),
        "-o",
        decompressed.to_str().unwrap(),
    ]);
    assert!(status.success(), "{label}: {stderr}");
    let (status, inspected, stderr) = squeeze(&["inspect", artifact_file.to_str().unwrap()]);
    assert!(status.success(), "{label}: {stderr}");
    assert!(inspected.lines().count() > 3, "{label}: {inspected}");
    let spec = json!({"kind": kind, "artifact": dir.join(label), "dense": dir.join(format!("{label}-dense")),
                      "original": model, "expect": expect, "decompressed": decompressed});
    let findings = run_python(&["check_artifacts.py", &spec.to_string()]);
    (summary, serde_json::from_str(&findings).unwrap())
}

fn weight_file_bits(summary: &Value) -> (f64, f64) {
    let s = &summary["summary"];
    (
        s["bits_per_weight"].as_f64().unwrap(),
        s["theoretical_bits_per_weight"].as_f64().unwrap(),
    )
}

const CT_DEFAULT_IGNORE: &str = "[\"model.embed_tokens.weight\", \"lm_head.weight\"]";

#[test]
fn compressed_tensors_artifacts_decode_to_the_measured_values() {
    let dir = data_dir();
    let model = tiny_llama(dir.path());
    let ignore: Value = serde_json::from_str(CT_DEFAULT_IGNORE).unwrap();
    let cases = [
        (
            "w4-g64",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 64}}]}),
            json!({"format": "pack-quantized", "num_bits": 4, "symmetric": true, "strategy": "group", "group_size": 64}),
        ),
        (
            "w4-g128-asym",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "symmetric": false, "granularity": "group", "group_size": 128}}]}),
            json!({"format": "pack-quantized", "symmetric": false, "group_size": 128}),
        ),
        (
            "w3-channel-asym",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 3, "symmetric": false}}]}),
            json!({"format": "pack-quantized", "num_bits": 3, "strategy": "channel"}),
        ),
        (
            "w2-tensor-asym",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 2, "symmetric": false, "granularity": "tensor"}}]}),
            json!({"format": "pack-quantized", "num_bits": 2, "strategy": "tensor"}),
        ),
        (
            "w8-channel",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 8}}]}),
            json!({"format": "naive-quantized", "num_bits": 8, "strategy": "channel"}),
        ),
        (
            "fp8-channel",
            json!({"stages": [{"quantize": {"scheme": "fp8"}}]}),
            json!({"format": "float-quantized", "type": "float", "strategy": "channel"}),
        ),
        (
            "fp8-tensor",
            json!({"stages": [{"quantize": {"scheme": "fp8", "granularity": "tensor"}}]}),
            json!({"format": "float-quantized", "strategy": "tensor"}),
        ),
        // Pruned weights stored whole, with a sparsity_config (what transformers loads today).
        (
            "prune-50-dense",
            json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}),
            json!({"format": "dense", "sparse": "dense"}),
        ),
        (
            "2of4-fp8-dense",
            json!({"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}},
                              {"quantize": {"scheme": "fp8"}}]}),
            json!({"format": "float-quantized", "sparse": "dense"}),
        ),
        // The zeros left out, asked for by sparse_layout (compressed-tensors 0.14 and earlier).
        (
            "prune-50",
            json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}],
                   "sparse_layout": "bitmask"}),
            json!({"format": "dense", "sparse": "sparse-bitmask"}),
        ),
        (
            "sparse-2of4",
            json!({"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}}],
                   "sparse_layout": "bitmask"}),
            json!({"format": "dense", "sparse": "sparse-24-bitmask"}),
        ),
        (
            "prune-50-int8",
            json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}},
                              {"quantize": {"scheme": "int", "bits": 8}}],
                   "sparse_layout": "bitmask"}),
            json!({"format": "naive-quantized", "sparse": "sparse-bitmask"}),
        ),
        (
            "2of4-fp8",
            json!({"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}},
                              {"quantize": {"scheme": "fp8"}}],
                   "sparse_layout": "bitmask"}),
            json!({"format": "float-quantized", "sparse": "sparse-24-bitmask"}),
        ),
        (
            "prune-50-w4",
            json!({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}},
                              {"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 128}}]}),
            json!({"format": "pack-quantized"}),
        ),
    ];
    let mut sizes = Vec::new();
    for (label, mut recipe, expect) in cases {
        recipe["format"] = json!("compressed-tensors");
        let (summary, findings) = check(
            dir.path(),
            &model,
            label,
            recipe,
            Some(ignore.clone()),
            "compressed-tensors",
            expect,
        );
        assert_eq!(findings["modules"], 14, "{label}: {findings}");
        assert_eq!(
            findings["ignore"],
            json!(["lm_head", "model.embed_tokens"]),
            "{label}"
        );
        let (real, theoretical) = weight_file_bits(&summary);
        // Layout costs bits (headers, row offsets, packing pads), never saves them; the
        // theory of a sparse layout counts non-zeros and one mask bit per value.
        assert!(real >= theoretical, "{label}: {real} < {theoretical}");
        assert!(
            real < theoretical * 1.05 + 0.1,
            "{label}: {real} vs {theoretical}"
        );
        sizes.push((label, real, theoretical));
    }
    let bits = |name: &str| sizes.iter().find(|s| s.0 == name).unwrap().1;
    assert!(bits("w4-g64") < 6.0, "{sizes:?}");
    assert!(bits("w8-channel") < bits("fp8-channel") + 0.01, "{sizes:?}");
    // Pruning really saves bytes where the values are stored one per element.
    assert!(bits("prune-50") < 13.0, "{sizes:?}");
    assert!(
        bits("prune-50-int8") < bits("w8-channel") - 1.5,
        "{sizes:?}"
    );
    assert!(bits("2of4-fp8") < bits("fp8-channel") - 2.0, "{sizes:?}");
}

#[test]
fn gguf_artifacts_open_in_the_gguf_package_with_llama_metadata() {
    let dir = data_dir();
    let model = tiny_llama(dir.path());
    let config: Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    let mut names = serde_json::Map::new();
    for (hf, gg) in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ] {
        names.insert(hf.into(), gg.into());
    }
    for i in 0..layers {
        for (hf, gg) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ] {
            names.insert(
                format!("model.layers.{i}.{hf}.weight"),
                format!("blk.{i}.{gg}.weight").into(),
            );
        }
    }
    let metadata = json!({
        "general.architecture": "llama", "llama.block_count": layers,
        "llama.embedding_length": 256, "llama.feed_forward_length": 512,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 64, "llama.context_length": 512,
        "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
        "general.quantization_version": 2, "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": 128, "tokenizer.ggml.bos_token_id": 1,
    });
    let mut sizes = Vec::new();
    for kind in [
        "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q4_K_S", "Q5_K", "Q6_K",
    ] {
        let recipe = json!({"stages": [{"quantize": {"scheme": "gguf", "type": kind}}],
                            "ignore": ["model.embed_tokens.weight"], "format": "gguf"});
        // llama-quantize's rules: the output projection at Q6_K (Q8_0 stays Q8_0); Q4_K
        // (= Q4_K_M) and Q5_K (= Q5_K_M) give the last layer's FFN down projection Q6_K;
        // Q4_K_S gives its first four attention V projections Q5_K.
        let output = if kind == "Q8_0" { "Q8_0" } else { "Q6_K" };
        let base = kind.trim_end_matches("_S");
        let down = if kind == "Q4_K" || kind == "Q5_K" {
            "Q6_K"
        } else {
            base
        };
        let value = if kind == "Q4_K_S" { "Q5_K" } else { base };
        let expect = json!({"names": names, "metadata": metadata, "heads": [4, 2],
                            "types": {"blk.0.attn_q.weight": base, "blk.1.ffn_down.weight": down,
                                      "blk.0.attn_v.weight": value,
                                      "output.weight": output, "token_embd.weight": "F16",
                                      "output_norm.weight": "F16"}});
        let (summary, findings) = check(
            dir.path(),
            &model,
            &kind.to_lowercase(),
            recipe,
            None,
            "gguf",
            expect,
        );
        assert_eq!(findings["tensors"], names.len(), "{kind}: {findings}");
        let (real, theoretical) = weight_file_bits(&summary);
        assert!(real >= theoretical, "{kind}: {real} < {theoretical}");
        sizes.push((kind, real));
    }
    // Fewer bits per block type, a smaller file: Q8_0 8.5, Q6_K 6.56, Q5_1 6, Q5_0 5.5,
    // Q4_1 5, Q4_K 4.5, Q4_0 4.5 bits per quantized weight.
    let bits = |k: &str| sizes.iter().find(|s| s.0 == k).unwrap().1;
    for (bigger, smaller) in [
        ("Q8_0", "Q6_K"),
        ("Q6_K", "Q5_1"),
        ("Q5_1", "Q5_0"),
        ("Q5_0", "Q4_1"),
        ("Q4_1", "Q4_0"),
    ] {
        assert!(bits(bigger) > bits(smaller), "{sizes:?}");
    }
    // A model of another family: a generic GGUF with its own names and general.* metadata.
    let generic = dir.path().join("generic-model");
    std::fs::create_dir(&generic).unwrap();
    std::fs::copy(
        model.join("model.safetensors"),
        generic.join("model.safetensors"),
    )
    .unwrap();
    let recipe =
        json!({"stages": [{"quantize": {"scheme": "gguf", "type": "Q8_0"}}], "format": "gguf"});
    let identity: serde_json::Map<String, Value> = names
        .keys()
        .map(|k| (k.clone(), Value::String(k.clone())))
        .collect();
    let (_, findings) = check(
        dir.path(),
        &generic,
        "generic",
        recipe,
        None,
        "gguf",
        json!({"names": identity, "metadata": {"general.architecture": "unknown"}}),
    );
    assert_eq!(findings["tensors"], names.len());
}

#[test]
fn compact_safetensors_store_codebooks_and_factors_and_rebuild_the_dense_values() {
    let dir = data_dir();
    let model = tiny_llama(dir.path());
    for (label, stage) in [
        (
            "cluster-16",
            json!({"cluster": {"bits": 4, "granularity": "tensor"}}),
        ),
        (
            "cluster-4-rows",
            json!({"cluster": {"bits": 2, "granularity": "channel"}}),
        ),
        ("low-rank-32", json!({"low_rank": {"rank": 32}})),
    ] {
        let recipe = json!({"stages": [stage], "format": "compact-safetensors"});
        let (summary, findings) = check(
            dir.path(),
            &model,
            label,
            recipe,
            None,
            "compact",
            json!({}),
        );
        assert_eq!(findings["substituted"], 16, "{label}: {findings}");
        let (real, theoretical) = weight_file_bits(&summary);
        assert!(
            real >= theoretical && real < 16.0,
            "{label}: {real} vs {theoretical}"
        );
    }
}

/// The calibrated methods' artifacts decode, by the independent reader, to the values squeeze
/// measured: GPTQ's codes and scales stored as `pack-quantized`, SparseGPT's updated weights
/// stored whole with their 2:4 sparsity_config. The dense twin runs the same calibration (the
/// pre-pass is deterministic for a set and thread count).
#[test]
fn calibrated_artifacts_decode_to_the_measured_values() {
    let dir = data_dir();
    let model = tiny_llama(dir.path());
    let calibration = dir.path().join("calibration.jsonl");
    crate::evaluate::token_set(&calibration, 6, 40, 128);
    let ignore: Value = serde_json::from_str(CT_DEFAULT_IGNORE).unwrap();
    let extra = ["--calibration", calibration.to_str().unwrap()];
    let cases = [
        (
            "w4-g64-gptq",
            json!({"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 64, "method": "gptq"}}]}),
            json!({"format": "pack-quantized", "num_bits": 4, "group_size": 64}),
        ),
        (
            "2of4-sparsegpt",
            json!({"stages": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}]}),
            json!({"format": "dense", "sparse": "dense"}),
        ),
    ];
    for (label, mut recipe, expect) in cases {
        recipe["format"] = json!("compressed-tensors");
        let (_, findings) = check_with(
            dir.path(),
            &model,
            label,
            recipe,
            Some(ignore.clone()),
            "compressed-tensors",
            expect,
            &extra,
        );
        assert_eq!(findings["modules"], 14, "{label}: {findings}");
    }
}
