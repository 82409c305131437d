//! `squeeze demo`: the bundled digits classifier compressed six ways and evaluated, offline.

use super::*;

pub(super) fn demo(json: bool) -> anyhow::Result<()> {
    use crate::eval::{dataset, files};
    use crate::pipeline::{InputFile, InputKind};
    let root = std::env::temp_dir().join(format!("squeeze-demo-{}", uuid::Uuid::new_v4().simple()));
    let model_dir = root.join("model");
    std::fs::create_dir_all(&model_dir)?;
    let result = (|| -> anyhow::Result<Vec<serde_json::Value>> {
        std::fs::write(model_dir.join("model.safetensors"), crate::demo::MODEL)?;
        std::fs::write(model_dir.join("config.json"), crate::demo::CONFIG)?;
        let inputs = vec![
            InputFile {
                name: "model.safetensors".into(),
                kind: InputKind::Weights,
                path: model_dir.join("model.safetensors"),
            },
            InputFile {
                name: "config.json".into(),
                kind: InputKind::Other,
                path: model_dir.join("config.json"),
            },
        ];
        let config: serde_json::Value = serde_json::from_slice(crate::demo::CONFIG)?;
        let weight_files = vec![model_dir.join("model.safetensors")];
        let original = files::Original {
            config: Some(&config),
            weight_files: &weight_files,
        };
        let (set, _) = dataset::parse(crate::demo::TEST_SET)?;
        let sha = file_sha256(&model_dir.join("model.safetensors"))?;
        let cancel = crate::numeric::Cancel::new();
        let mut reuse = None;
        let mut rows = Vec::new();
        for (name, recipe) in crate::demo::variants() {
            let out = root.join(name.replace(' ', "-"));
            std::fs::create_dir_all(&out)?;
            let outcome = crate::worker::cpu_pool().install(|| {
                crate::pipeline::run(
                    &inputs,
                    &recipe,
                    sha.as_str(),
                    &OutputDir::plain(&out),
                    &cancel,
                    &mut |_| {},
                )
            })?;
            let spec = crate::eval::EvalSpec {
                dataset_id: uuid::Uuid::nil(),
                metric: None,
                max_drop: Some(0.01),
                architecture: None,
            };
            let report = crate::worker::cpu_pool().install(|| {
                files::evaluate_artifact(
                    &original,
                    &out,
                    &set,
                    &spec,
                    files::Earlier {
                        figures: reuse.clone(),
                        outputs: None,
                    },
                    &cancel,
                    &|_| {},
                )
            })?;
            reuse.get_or_insert_with(|| report.original.clone());
            rows.push(
                serde_json::json!({"variant": name, "summary": outcome.summary, "eval": report}),
            );
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&root);
    let rows = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let training: serde_json::Value = serde_json::from_str(crate::demo::TRAINING)?;
    println!(
        "demo: a {}-parameter digits classifier (scikit-learn's handwritten digits, BSD-3-Clause), {} held-out images; training reported {:.2} % accuracy",
        training["parameters"],
        training["test_rows"],
        training["test_accuracy"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "{:<12} {:>10} {:>7} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "variant",
        "weights",
        "ratio",
        "latency",
        "kernel",
        "accuracy",
        "σ=0.25",
        "σ=0.5",
        "σ=1",
        "accepted"
    );
    let first = &rows[0]["eval"]["original"]["metrics"];
    let pct = |m: &serde_json::Value, k: &str| {
        format!("{:.2}%", m[k].as_f64().unwrap_or(f64::NAN) * 100.0)
    };
    println!(
        "{:<12} {:>10} {:>7} {:>9.3} ms {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "original",
        format!(
            "{:.1} KiB",
            rows[0]["summary"]["bytes_in"].as_f64().unwrap_or(0.0) / 1024.0
        ),
        "1.00",
        first["latency_ms"].as_f64().unwrap_or(f64::NAN),
        "dense",
        pct(first, "accuracy"),
        pct(first, "accuracy_noise_0.25"),
        pct(first, "accuracy_noise_0.5"),
        pct(first, "accuracy_noise_1"),
        ""
    );
    for row in &rows {
        let m = &row["eval"]["compressed"]["metrics"];
        println!(
            "{:<12} {:>10} {:>7.2} {:>9.3} ms {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            row["variant"].as_str().unwrap_or(""),
            format!(
                "{:.1} KiB",
                row["summary"]["bytes_out"].as_f64().unwrap_or(0.0) / 1024.0
            ),
            row["summary"]["ratio"].as_f64().unwrap_or(f64::NAN),
            m["latency_ms"].as_f64().unwrap_or(f64::NAN),
            row["eval"]["compressed"]["kernel"].as_str().unwrap_or(""),
            pct(m, "accuracy"),
            pct(m, "accuracy_noise_0.25"),
            pct(m, "accuracy_noise_0.5"),
            pct(m, "accuracy_noise_1"),
            if row["eval"]["accepted"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!(
        "σ: Gaussian input noise in standard deviations of the inputs; accepted: accuracy within 1 point of the original; latency: median of one-image forwards on this CPU (kernel dense: f32 weights, dequantized; native: candle's quantized matmul on the GGUF blocks)"
    );
    Ok(())
}
