//! The built-in presets: each writes the format that stores its result, and says which runtimes
//! load it.

use super::*;

/// A named, built-in recipe.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preset {
    /// Name to pass as `preset`.
    pub name: String,
    /// What it does, what it writes and which runtimes load it.
    pub description: String,
    /// The recipe.
    pub recipe: Recipe,
}

fn int(
    bits: u8,
    symmetric: bool,
    granularity: GranularityName,
    group_size: Option<usize>,
) -> Stage {
    Stage::Quantize(Quantize::Int {
        bits,
        symmetric,
        granularity,
        group_size,
        scale_dtype: None,
        method: IntMethod::Rtn,
    })
}

fn recipe(format: OutputFormat, stages: Vec<Stage>) -> Recipe {
    Recipe {
        stages,
        targets: default_targets(),
        ignore: Vec::new(),
        format,
        sparse_layout: None,
        calibration: None,
    }
}

const CT: OutputFormat = OutputFormat::CompressedTensors;

/// The runtimes that load each format, for the presets' descriptions.
const CT_LOADERS: &str = "compressed-tensors safetensors: transformers (with the compressed-tensors package) and vLLM load it";
const GGUF_LOADERS: &str = "GGUF for llama.cpp and everything built on it";

/// The built-in presets: each writes the format that stores its result, so the file is as
/// small as the method makes it.
pub fn presets() -> Vec<Preset> {
    let prune50 = Stage::Prune(Prune::Magnitude {
        sparsity: 0.5,
        scope: PruneScope::Tensor,
    });
    let mut all = vec![
        Preset {
            name: "int8".into(),
            description: (format!(
                "8-bit integer weights, symmetric, one scale per output channel (W8A16); writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(8, true, GranularityName::Channel, None)]),
        },
        Preset {
            name: "int8-tensor".into(),
            description: (format!(
                "8-bit integer weights, symmetric, one scale per tensor; writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(8, true, GranularityName::Tensor, None)]),
        },
        Preset {
            name: "w4-g128".into(),
            description: (format!(
                "4-bit integer weights, symmetric, one scale per 128 values of a row (the largest group that divides every row when 128 does not; W4A16); writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(4, true, GranularityName::Group, Some(128))]),
        },
        Preset {
            name: "w4-g128-asym".into(),
            description: "4-bit integer weights with zero-points, one scale per 128 values (or the largest group that fits); writes compressed-tensors pack-quantized as llm-compressor does: vLLM and transformers with compressed-tensors 0.19 load it; transformers 5.25 with compressed-tensors 0.20.1 refuses every asymmetric packed file (its loader expects the zero-points unpacked, its decompressor packed)".into(),
            recipe: recipe(CT, vec![int(4, false, GranularityName::Group, Some(128))]),
        },
        Preset {
            name: "fp8".into(),
            description: (format!(
                "FP8 E4M3 weights, one scale per output channel (absmax / 448); writes {CT_LOADERS}"
            )),
            recipe: recipe(
                CT,
                vec![Stage::Quantize(Quantize::Fp8 {
                    granularity: GranularityName::Channel,
                    scale_dtype: None,
                })],
            ),
        },
        Preset {
            name: "fp8-tensor".into(),
            description: (format!("FP8 E4M3 weights, one scale per tensor; writes {CT_LOADERS}")),
            recipe: recipe(
                CT,
                vec![Stage::Quantize(Quantize::Fp8 {
                    granularity: GranularityName::Tensor,
                    scale_dtype: None,
                })],
            ),
        },
    ];
    for kind in FileType::ALL {
        let what = match kind {
            FileType::Q8_0 => "8-bit codes, one f16 scale per 32 values",
            FileType::Q6_K => "6-bit codes in 256-value super-blocks with 8-bit sub-block scales",
            FileType::Q5_1 => "5-bit codes with an f16 scale and minimum per 32 values",
            FileType::Q5_0 => "5-bit codes with an f16 scale per 32 values",
            FileType::Q5_K_M => {
                "5-bit K-quant super-blocks, with Q6_K for half the attention V and FFN down projections"
            }
            FileType::Q5_K_S => "5-bit K-quant super-blocks with 6-bit sub-block scales and mins",
            FileType::Q4_K_M => {
                "4-bit K-quant super-blocks, with Q6_K for half the attention V and FFN down projections"
            }
            FileType::Q4_K_S => {
                "4-bit K-quant super-blocks, with Q5_K for the first four attention V and the first eighth of the FFN down projections"
            }
            FileType::Q4_1 => "4-bit codes with an f16 scale and minimum per 32 values",
            FileType::Q4_0 => "4-bit codes with an f16 scale per 32 values",
        };
        all.push(Preset {
            name: kind.name().to_lowercase(),
            description: (format!(
                "llama.cpp {}: {what}; each tensor's type by llama-quantize's rules (the output projection or tied embedding at Q6_K or Q8_0; rows that are not whole blocks fall back to a type that fits); writes {GGUF_LOADERS}",
                kind.name()
            )),
            recipe: recipe(OutputFormat::Gguf, vec![Stage::Quantize(Quantize::Gguf { kind, pure: false })]),
        });
    }
    all.extend([
        Preset {
            name: "sparse-2of4".into(),
            description: (format!("2:4 semi-structured sparsity: the 2 largest of every 4 weights kept, every value stored with a sparsity_config (no smaller on disk; faster only where a 2:4 kernel runs it, as vLLM's); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![Stage::Prune(Prune::SemiStructured {
                pattern: NmPattern { n: 2, m: 4 },
            })]),
        },
        Preset {
            name: "cluster-16".into(),
            description: "weight clustering: 16 k-means centroids per tensor, stored as a codebook and 4-bit indices in compact safetensors (squeeze decompress rebuilds a dense checkpoint for any loader)".into(),
            recipe: recipe(OutputFormat::CompactSafetensors, vec![Stage::Cluster(Cluster {
                bits: 4,
                granularity: GranularityName::Tensor,
                seed: 0,
            })]),
        },
        Preset {
            name: "prune-50".into(),
            description: (format!("zero the 50% smallest-magnitude weights of each tensor, every value stored with a sparsity_config (no smaller on disk; set sparse_layout bitmask to leave the zeros out for compressed-tensors 0.14 and earlier); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![prune50.clone()]),
        },
        Preset {
            name: "prune-50-int8".into(),
            description: (format!("magnitude pruning to 50%, then int8 per channel (the zeros stay exact); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![prune50, int(8, true, GranularityName::Channel, None)]),
        },
    ]);
    all.push(Preset {
        name: "w4-g128-gptq".into(),
        description: format!(
            "4-bit integer weights, symmetric, one scale per 128 values (W4A16), the codes chosen by GPTQ from a calibration set: each column's rounding error moved onto the columns not yet rounded; the linear projections of a Llama-family decoder; writes {CT_LOADERS}"
        ),
        recipe: recipe(
            CT,
            vec![Stage::Quantize(Quantize::Int {
                bits: 4,
                symmetric: true,
                granularity: GranularityName::Group,
                group_size: Some(128),
                scale_dtype: None,
                method: IntMethod::Gptq,
            })],
        ),
    });
    type Method = fn(CalibratedAmount) -> Prune;
    let calibrated_pruning: [(&str, Method, &str); 2] = [
        (
            "wanda",
            Prune::Wanda,
            "by Wanda: in each output row, the weights of least |w| times the norm of their input over the calibration set",
        ),
        (
            "sparsegpt",
            Prune::SparseGpt,
            "by SparseGPT: column by column against the inputs' covariance over the calibration set, the kept weights updated to make up for the removed ones",
        ),
    ];
    for (method, prune, how) in calibrated_pruning {
        let half = CalibratedAmount {
            sparsity: Some(0.5),
            pattern: None,
        };
        let two_of_four = CalibratedAmount {
            sparsity: None,
            pattern: Some(NmPattern { n: 2, m: 4 }),
        };
        all.push(Preset {
            name: format!("sparse50-{method}"),
            description: format!(
                "50% of each linear projection of a Llama-family decoder zeroed {how}; needs a calibration set; every value stored with a sparsity_config; writes {CT_LOADERS}"
            ),
            recipe: recipe(CT, vec![Stage::Prune(prune(half))]),
        });
        all.push(Preset {
            name: format!("2of4-{method}"),
            description: format!(
                "2:4 semi-structured sparsity of each linear projection of a Llama-family decoder, the 2 of every 4 weights zeroed chosen {how}; needs a calibration set; writes {CT_LOADERS}"
            ),
            recipe: recipe(CT, vec![Stage::Prune(prune(two_of_four))]),
        });
    }
    all
}

/// The preset with this name.
pub fn preset(name: &str) -> Result<Recipe, RecipeError> {
    // Earlier names of presets that were renamed.
    let name = match name {
        "q4_k" => "q4_k_m",
        other => other,
    };
    presets()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.recipe)
        .ok_or_else(|| RecipeError::UnknownPreset(name.to_owned()))
}
