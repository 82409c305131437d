//! `squeeze evaluate`: an artifact against its original on an evaluation set, offline, with
//! its progress on a terminal.

use super::*;

/// The model files of a local path: one .safetensors file (named model.safetensors in the
/// output, as an upload would be), or a folder in the Hugging Face layout.
/// One line on a terminal's stderr, rewritten as the evaluation advances.
fn show_evaluation_progress(step: &crate::eval::EvalProgress) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let left = step
        .seconds_left
        .map(|s| format!(", about {} left", human_duration(s)))
        .unwrap_or_default();
    eprint!(
        "\r\x1b[2K{} {}/{} {}{left}",
        step.stage, step.done, step.total, step.unit
    );
}

/// `42 s`, `3 min 5 s`, `1 h 2 min`.
fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

pub(super) fn evaluate(args: &crate::config::EvaluateArgs) -> anyhow::Result<()> {
    use crate::eval::{self, files};
    use crate::pipeline::InputKind;
    let inputs = local_inputs(&args.original)?;
    let weight_files: Vec<_> = inputs
        .iter()
        .filter(|f| f.kind == InputKind::Weights)
        .map(|f| f.path.clone())
        .collect();
    let config = match inputs.iter().find(|f| f.name == "config.json") {
        Some(f) => Some(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&f.path)?)
                .with_context(|| format!("{} is not JSON", f.path.display()))?,
        ),
        None => None,
    };
    let bytes = std::fs::read(&args.dataset)
        .with_context(|| format!("reading {}", args.dataset.display()))?;
    let (dataset, stats) = eval::dataset::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.dataset.display()))?;
    let original = files::Original {
        config: config.as_ref(),
        weight_files: &weight_files,
    };
    crate::worker::cpu_pool().install(|| -> anyhow::Result<()> {
        let (arch, config, original_weights) =
            files::load_original(&original, args.architecture.as_deref())?;
        eval::dataset::check_fits(&stats, &arch)?;
        if let Some(out) = &args.outputs {
            let compressed = match &args.artifact {
                Some(dir) => eval::weights::Weights::from_artifact(
                    &files::artifact_weight_files(dir)?,
                    &original_weights.names(),
                    config["model_type"]
                        .as_str()
                        .or(args.architecture.as_deref()),
                )?,
                None => eval::weights::Weights::from_safetensors(&weight_files)?,
            };
            let mut all = std::collections::HashMap::new();
            for (side, weights) in [("original", &original_weights), ("compressed", &compressed)] {
                for (name, t) in files::outputs(&arch, &config, weights, &dataset)? {
                    all.insert(format!("{side}.{name}"), t);
                }
            }
            candle_core::safetensors::save(&all, out)
                .with_context(|| format!("writing {}", out.display()))?;
            return Ok(());
        }
        let spec = eval::EvalSpec {
            dataset_id: uuid::Uuid::nil(),
            metric: args.metric.clone(),
            max_drop: args.max_drop,
            architecture: args.architecture.clone(),
        };
        if let Some(metric) = &spec.metric {
            let allowed = arch.metrics(stats.labelled > 0);
            anyhow::ensure!(
                allowed.contains(&metric.as_str()),
                "metric {metric:?} does not apply to a {} model; use one of {}",
                arch.name(),
                allowed.join(", ")
            );
        }
        let artifact = args
            .artifact
            .clone()
            .unwrap_or_else(|| args.original.clone());
        let artifact = if artifact.is_file() {
            artifact
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default()
        } else {
            artifact
        };
        // The weights' identity for a kept reference: their digests, so a changed file is a
        // miss (hashing reads the files once, seconds against the minutes the original's
        // forward passes take).
        let identity = match &args.reference {
            Some(_) => weight_files
                .iter()
                .map(|p| digests::file_digests(p, [digests::Algorithm::Blake3]).map(|[d]| d))
                .collect::<std::io::Result<Vec<_>>>()?
                .join(","),
            None => String::new(),
        };
        let reference = args.reference.as_ref().map(|path| eval::ReferenceCache {
            path,
            weights_identity: &identity,
        });
        let mut report = files::evaluate_artifact(
            &original,
            &artifact,
            &dataset,
            &spec,
            files::Earlier {
                figures: None,
                outputs: reference,
            },
            &crate::numeric::Cancel::new(),
            &show_evaluation_progress,
        )?;
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        report.dataset_id = None;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", eval::render_table(&report));
        }
        Ok(())
    })
}
