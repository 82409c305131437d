//! The recipe's output format, as a writer: picks the format's [`ArtifactWriter`] (they live
//! with their readers in `formats`) and tells it what only the recipe knows (how pruned
//! weights are laid out, each tensor's GGUF block type) and what the model's side files say.

use std::collections::HashMap;

use crate::compress::step::Step;
use crate::formats::compact::CompactWriter;
use crate::formats::compressed_tensors::write::{CompressedTensorsWriter, SparsityLayout};
use crate::formats::compressed_tensors::{SparseFormat, StoredForm};
use crate::formats::gguf::write::{GgufModel, GgufWriter};
use crate::formats::safetensors::Header;
use crate::formats::safetensors::write::DenseWriter;
use crate::formats::writer::{ArtifactWriter, OutputDir};
use crate::jobs::recipe::{OutputFormat, Plan, Prune, Recipe, SparseLayout, Stage};
use crate::pipeline::files::{InputFile, PipelineError};

/// The writer for a planned recipe's format.
pub fn writer_for(
    plan: &Plan,
    out_dir: &OutputDir,
    inputs: &[InputFile],
    headers: &[Header],
) -> Result<Box<dyn ArtifactWriter + Send>, PipelineError> {
    let recipe = &plan.recipe;
    Ok(match recipe.format {
        OutputFormat::Auto => {
            return Err(PipelineError::Internal(
                "the recipe's format was not resolved before writing".into(),
            ));
        }
        OutputFormat::Safetensors => Box::new(DenseWriter::new(out_dir)),
        OutputFormat::CompressedTensors => {
            // What each weight's last step stores, as the pipeline will encode it.
            let forms: HashMap<String, StoredForm> = headers
                .iter()
                .flat_map(|h| &h.tensors)
                .filter_map(|t| {
                    let steps = &plan.tensor(&t.name)?.steps;
                    let form = match steps.last()? {
                        Step::Int(scheme) => StoredForm::Int(*scheme),
                        Step::Fp8 { per_channel, .. } => StoredForm::Fp8 {
                            per_channel: *per_channel,
                        },
                        _ => StoredForm::Dense,
                    };
                    Some((t.name.clone(), form))
                })
                .collect();
            Box::new(CompressedTensorsWriter::new(
                out_dir,
                sparsity_layout(recipe),
                Some(Box::new(move |name: &str| forms.get(name).copied())),
            ))
        }
        OutputFormat::CompactSafetensors => Box::new(CompactWriter::new(out_dir)),
        OutputFormat::Gguf => {
            let config = read_json(inputs, "config.json")?;
            let tokenizer = read_json(inputs, "tokenizer.json")?;
            let model = GgufModel {
                config: config.as_ref(),
                tokenizer: tokenizer.as_ref(),
                headers,
            };
            // Each selected tensor's block type, as the plan chose it (None: stored dense).
            let block_of = |name: &str| {
                plan.tensor(name).and_then(|t| {
                    t.steps.iter().rev().find_map(|s| match s {
                        Step::Gguf(kind) => Some(*kind),
                        _ => None,
                    })
                })
            };
            Box::new(GgufWriter::new(out_dir, model, block_of)?)
        }
    })
}

/// Whether the format's writer reads a tensor's dense values when the tensor's last step is
/// `last`: compressed-tensors stores integer and FP8 weights as their codes alone (unless it
/// counts their zeros for a sparsity description), GGUF its block-quantized weights as blocks.
pub fn reads_dense(recipe: &Recipe, last: Option<&Step>) -> bool {
    match (recipe.format, last) {
        (OutputFormat::Gguf, Some(Step::Gguf(_))) => false,
        (OutputFormat::CompressedTensors, Some(Step::Int(_) | Step::Fp8 { .. })) => {
            sparsity_layout(recipe).format.is_some()
        }
        _ => true,
    }
}

/// How compressed-tensors describes the recipe's pruning.
fn sparsity_layout(recipe: &Recipe) -> SparsityLayout {
    let format = recipe.stages.iter().find_map(|s| match s {
        Stage::Prune(prune) if prune.nm_pattern().is_some_and(|p| p.n == 2 && p.m == 4) => {
            Some(SparseFormat::TwoFour)
        }
        Stage::Prune(Prune::MlpChannels { .. }) => None,
        Stage::Prune(_) => Some(SparseFormat::Bitmask),
        _ => None,
    });
    SparsityLayout {
        format,
        leave_zeros_out: recipe.sparse_layout == Some(SparseLayout::Bitmask),
    }
}

/// The model's side file `name` parsed as JSON, if the model has it.
fn read_json(inputs: &[InputFile], name: &str) -> Result<Option<serde_json::Value>, PipelineError> {
    match inputs.iter().find(|i| i.name == name) {
        None => Ok(None),
        Some(i) => serde_json::from_slice(&std::fs::read(&i.path)?)
            .map(Some)
            .map_err(|e| PipelineError::Input(format!("{name} is not JSON: {e}"))),
    }
}
