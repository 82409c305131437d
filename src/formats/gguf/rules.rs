//! Which GGUF type each tensor gets, by llama-quantize's rules: a user who asks for "Q4_0"
//! expects the file `llama-quantize … Q4_0` writes, not every tensor at Q4_0. The rules
//! (llama.cpp's `src/llama-quant.cpp`, `llama_tensor_get_type`) keep the output projection,
//! or the token embedding when it doubles as the output, at Q6_K (Q8_0 when its rows do not
//! fit Q6_K's super-blocks); the `_M` mixes give Q6_K to the attention V and FFN down
//! projections of the first and last eighth of the layers and of every third layer between;
//! Q4_K_S gives Q5_K to the first four attention V projections and the FFN down projections
//! of the first eighth of the layers; and a tensor whose rows are not whole blocks of its type
//! falls back to the nearest legacy type that fits (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0),
//! or stays unquantized when none does. `pure`
//! (llama-quantize's `--pure`) gives every tensor the base type, with the same fallbacks.
//!
//! Tensors are recognised by their llama.cpp names (Hugging Face names of Llama-family
//! models are mapped first), as llama.cpp does. The rules for mixture-of-experts, Falcon and
//! 70B models, and those that need an importance matrix, are not applied.

use serde::{Deserialize, Serialize};

use crate::compress::blocks::BlockType;
use crate::formats::gguf;

/// A llama-quantize file type: the base block type and the per-tensor rules that go with it.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum FileType {
    #[serde(rename = "Q8_0")]
    Q8_0,
    #[serde(rename = "Q4_0")]
    Q4_0,
    #[serde(rename = "Q4_1")]
    Q4_1,
    #[serde(rename = "Q5_0")]
    Q5_0,
    #[serde(rename = "Q5_1")]
    Q5_1,
    /// Q4_K with Q5_K for the first four attention V projections and the first eighth of
    /// the FFN down projections.
    #[serde(rename = "Q4_K_S")]
    Q4_K_S,
    /// Q4_K with Q6_K for half the attention V and FFN down projections; llama-quantize's
    /// `Q4_K` is the same file type.
    #[serde(rename = "Q4_K_M", alias = "Q4_K")]
    Q4_K_M,
    /// Q5_K throughout; llama-quantize's `Q5_K` is `Q5_K_M`, not this.
    #[serde(rename = "Q5_K_S")]
    Q5_K_S,
    /// Q5_K with Q6_K for half the attention V and FFN down projections; llama-quantize's
    /// `Q5_K` is the same file type.
    #[serde(rename = "Q5_K_M", alias = "Q5_K")]
    Q5_K_M,
    #[serde(rename = "Q6_K")]
    Q6_K,
}

impl FileType {
    /// Every file type, in the order presets list them.
    pub const ALL: [FileType; 10] = [
        FileType::Q8_0,
        FileType::Q6_K,
        FileType::Q5_K_M,
        FileType::Q5_K_S,
        FileType::Q5_1,
        FileType::Q5_0,
        FileType::Q4_K_M,
        FileType::Q4_K_S,
        FileType::Q4_1,
        FileType::Q4_0,
    ];

    /// The type most tensors get.
    pub fn base(self) -> BlockType {
        match self {
            FileType::Q8_0 => BlockType::Q8_0,
            FileType::Q4_0 => BlockType::Q4_0,
            FileType::Q4_1 => BlockType::Q4_1,
            FileType::Q5_0 => BlockType::Q5_0,
            FileType::Q5_1 => BlockType::Q5_1,
            FileType::Q4_K_S | FileType::Q4_K_M => BlockType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => BlockType::Q5_K,
            FileType::Q6_K => BlockType::Q6_K,
        }
    }

    /// llama-quantize's name.
    pub fn name(self) -> &'static str {
        match self {
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_K_M => "Q5_K_M",
            other => other.base().name(),
        }
    }

    /// The file type with this name (llama-quantize's `Q4_K` is `Q4_K_M`, `Q5_K` `Q5_K_M`).
    pub fn parse(name: &str) -> Option<FileType> {
        match name {
            "Q4_K" => Some(FileType::Q4_K_M),
            "Q5_K" => Some(FileType::Q5_K_M),
            _ => FileType::ALL.into_iter().find(|t| t.name() == name),
        }
    }
}

/// The GGUF type chosen for one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The block type; None: the tensor stays unquantized (no block type fits its rows).
    pub kind: Option<BlockType>,
    /// Why it differs from the file type's base type, for the job's report.
    pub reason: Option<String>,
}

/// One tensor as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct TensorShape<'a> {
    /// Its name in the model (Hugging Face or llama.cpp).
    pub name: &'a str,
    /// Values per row (the innermost dimension).
    pub row: u64,
}

/// What llama.cpp's rules look at in a tensor's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbedding,
    Output,
    /// Attention V, or a fused QKV or KV projection (llama.cpp's `category_is_attn_v`).
    AttentionV,
    FfnDown,
    Other,
}

fn llama_name(name: &str) -> String {
    gguf::llama_tensor_name(name).unwrap_or_else(|| name.to_owned())
}

fn category(llama: &str) -> Category {
    match llama {
        "output.weight" | "lm_head.weight" => Category::Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => Category::TokenEmbedding,
        _ if llama.ends_with("embed_tokens.weight")
            || llama.ends_with("word_embeddings.weight") =>
        {
            Category::TokenEmbedding
        }
        _ if ["attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"]
            .iter()
            .any(|p| llama.contains(p)) =>
        {
            Category::AttentionV
        }
        _ if llama.contains("ffn_down") => Category::FfnDown,
        _ => Category::Other,
    }
}

/// The layer of a llama.cpp name `blk.N.…`.
fn layer(llama: &str) -> Option<usize> {
    llama.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third layer
/// between.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    let (i, n) = (layer as i64, layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The nearest type whose blocks fit rows of `row` values, as llama-quantize falls back.
fn fallback(kind: BlockType, row: u64) -> Option<BlockType> {
    if row.is_multiple_of(kind.block_len() as u64) {
        return Some(kind);
    }
    let legacy = match kind {
        BlockType::Q4_K => BlockType::Q5_0,
        BlockType::Q5_K => BlockType::Q5_1,
        BlockType::Q6_K => BlockType::Q8_0,
        other => other,
    };
    row.is_multiple_of(legacy.block_len() as u64)
        .then_some(legacy)
}

/// The type of each of `selected` (tensors to quantize) under `file_type`; `model` is every
/// tensor name of the model (whether it has its own output projection decides whether the
/// token embedding is treated as the output).
pub fn choose(
    file_type: FileType,
    pure: bool,
    selected: &[TensorShape],
    model: &[&str],
) -> Vec<Choice> {
    let names: Vec<String> = model.iter().map(|n| llama_name(n)).collect();
    let tied = !names.iter().any(|n| category(n) == Category::Output);
    let layers = names
        .iter()
        .filter_map(|n| layer(n))
        .max()
        .map_or(0, |l| l + 1);
    let v_projections = names
        .iter()
        .filter(|n| category(n) == Category::AttentionV)
        .count();
    let base = file_type.base();
    selected
        .iter()
        .map(|t| {
            let llama = llama_name(t.name);
            let mut wanted = base;
            let mut why = None;
            if !pure {
                let role = category(&llama);
                let index = layer(&llama);
                match role {
                    Category::Output | Category::TokenEmbedding
                        if role == Category::Output || tied =>
                    {
                        let what = if role == Category::Output {
                            "the output projection"
                        } else {
                            "the token embedding, which is also the output projection,"
                        };
                        if t.row % base.block_len() as u64 != 0 {
                            wanted = BlockType::Q8_0;
                        } else if base != BlockType::Q8_0 {
                            wanted = BlockType::Q6_K;
                        }
                        why = Some(format!("{what} keeps more bits, as llama-quantize does"));
                    }
                    Category::AttentionV | Category::FfnDown => {
                        let (i, n) = match role {
                            Category::AttentionV => (index.unwrap_or(0), v_projections),
                            _ => (index.unwrap_or(0), layers),
                        };
                        let more = match file_type {
                            FileType::Q4_K_M | FileType::Q5_K_M if use_more_bits(i, n) => {
                                Some(BlockType::Q6_K)
                            }
                            FileType::Q4_K_S if role == Category::AttentionV && i < 4 => {
                                Some(BlockType::Q5_K)
                            }
                            FileType::Q4_K_S if role == Category::FfnDown && i < n / 8 => {
                                Some(BlockType::Q5_K)
                            }
                            _ => None,
                        };
                        if let Some(more) = more {
                            wanted = more;
                            why = Some(format!(
                                "{} gives layer {i}'s {} {}",
                                file_type.name(),
                                if role == Category::AttentionV {
                                    "attention V"
                                } else {
                                    "FFN down projection"
                                },
                                more.name()
                            ));
                        }
                    }

                    _ => {}
                }
            }
            let kind = fallback(wanted, t.row);
            let reason = match kind {
                Some(k) if k == wanted => why,
                Some(k) => Some(format!(
                    "{}rows of {} values are not whole {} blocks of {}: {} instead",
                    why.map_or(String::new(), |w| format!("{w}; ")),
                    t.row,
                    wanted.name(),
                    wanted.block_len(),
                    k.name()
                )),
                None => Some(format!(
                    "rows of {} values fit no block type of {}: left unquantized",
                    t.row,
                    wanted.name()
                )),
            };
            Choice { kind, reason }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's weights: 30 layers, hidden 576, FFN 1536, tied embeddings.
    fn smollm2() -> Vec<(String, u64)> {
        let mut t = vec![("model.embed_tokens.weight".to_owned(), 576)];
        for l in 0..30 {
            for (m, row) in [
                ("self_attn.q_proj", 576),
                ("self_attn.k_proj", 576),
                ("self_attn.v_proj", 576),
                ("self_attn.o_proj", 576),
                ("mlp.gate_proj", 576),
                ("mlp.up_proj", 576),
                ("mlp.down_proj", 1536),
            ] {
                t.push((format!("model.layers.{l}.{m}.weight"), row));
            }
        }
        t
    }

    fn types(file_type: FileType, pure: bool, model: &[(String, u64)]) -> Vec<(String, String)> {
        let shapes: Vec<TensorShape> = model
            .iter()
            .map(|(name, row)| TensorShape { name, row: *row })
            .collect();
        let names: Vec<&str> = model.iter().map(|(n, _)| n.as_str()).collect();
        choose(file_type, pure, &shapes, &names)
            .into_iter()
            .zip(model)
            .map(|(c, (n, _))| (n.clone(), c.kind.map_or("dense", |k| k.name()).to_owned()))
            .collect()
    }

    fn type_of<'a>(types: &'a [(String, String)], name: &str) -> &'a str {
        &types.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn tied_embeddings_keep_q8_0_when_rows_do_not_fit_q6_k() {
        let model = smollm2();
        for file_type in [
            FileType::Q4_0,
            FileType::Q4_1,
            FileType::Q5_0,
            FileType::Q8_0,
        ] {
            let t = types(file_type, false, &model);
            assert_eq!(
                type_of(&t, "model.embed_tokens.weight"),
                "Q8_0",
                "{file_type:?}"
            );
            assert_eq!(
                type_of(&t, "model.layers.3.self_attn.q_proj.weight"),
                file_type.base().name()
            );
        }
        let pure = types(FileType::Q4_0, true, &model);
        assert_eq!(type_of(&pure, "model.embed_tokens.weight"), "Q4_0");
    }

    #[test]
    fn an_untied_output_gets_q6_k_and_the_embedding_the_base_type() {
        let model = vec![
            ("model.embed_tokens.weight".to_owned(), 4096),
            ("lm_head.weight".to_owned(), 4096),
            ("model.layers.0.self_attn.q_proj.weight".to_owned(), 4096),
        ];
        let t = types(FileType::Q4_0, false, &model);
        assert_eq!(type_of(&t, "lm_head.weight"), "Q6_K");
        assert_eq!(type_of(&t, "model.embed_tokens.weight"), "Q4_0");
    }

    #[test]
    fn k_quants_fall_back_per_tensor_and_q4_k_m_gives_more_bits_where_llama_cpp_does() {
        let t = types(FileType::Q4_K_M, false, &smollm2());
        // 576-wide rows: Q4_K falls back to Q5_0, Q6_K to Q8_0; 1536-wide rows fit.
        assert_eq!(
            type_of(&t, "model.layers.5.self_attn.q_proj.weight"),
            "Q5_0"
        );
        // use_more_bits(i, 30): i < 3, i >= 26, or (i - 3) % 3 == 2.
        for (layer, more) in [
            (0, true),
            (2, true),
            (3, false),
            (5, true),
            (6, false),
            (26, true),
        ] {
            let down =
                type_of(&t, &format!("model.layers.{layer}.mlp.down_proj.weight")).to_owned();
            let v =
                type_of(&t, &format!("model.layers.{layer}.self_attn.v_proj.weight")).to_owned();
            assert_eq!(down, if more { "Q6_K" } else { "Q4_K" }, "layer {layer}");
            assert_eq!(v, if more { "Q8_0" } else { "Q5_0" }, "layer {layer}");
        }
        let q6 = types(FileType::Q6_K, false, &smollm2());
        assert_eq!(type_of(&q6, "model.layers.0.mlp.down_proj.weight"), "Q6_K");
        assert_eq!(type_of(&q6, "model.layers.0.mlp.up_proj.weight"), "Q8_0");
    }

    #[test]
    fn q4_k_s_and_q5_k_mixes_follow_llama_quantize() {
        let model = smollm2();
        let s = types(FileType::Q4_K_S, false, &model);
        for layer in [0, 3, 4, 29] {
            let v = type_of(&s, &format!("model.layers.{layer}.self_attn.v_proj.weight"));
            // The first four V projections get Q5_K, which 576-wide rows take as Q5_1.
            assert_eq!(v, if layer < 4 { "Q5_1" } else { "Q5_0" }, "layer {layer}");
            // FFN down of the first eighth (30 / 8 = 3 layers) at Q5_K: 1536 fits.
            let down = type_of(&s, &format!("model.layers.{layer}.mlp.down_proj.weight"));
            assert_eq!(
                down,
                if layer < 3 { "Q5_K" } else { "Q4_K" },
                "layer {layer}"
            );
        }
        let m = types(FileType::Q5_K_M, false, &model);
        assert_eq!(type_of(&m, "model.layers.0.mlp.down_proj.weight"), "Q6_K");
        assert_eq!(type_of(&m, "model.layers.3.mlp.down_proj.weight"), "Q5_K");
        assert_eq!(type_of(&m, "model.layers.3.mlp.up_proj.weight"), "Q5_1");
        assert_eq!(type_of(&m, "model.embed_tokens.weight"), "Q8_0");
        let plain = types(FileType::Q5_K_S, false, &model);
        assert_eq!(
            type_of(&plain, "model.layers.0.mlp.down_proj.weight"),
            "Q5_K"
        );
        assert_eq!(FileType::parse("Q5_K"), Some(FileType::Q5_K_M));
        assert_eq!(FileType::parse("Q4_K_S"), Some(FileType::Q4_K_S));
    }

    #[test]
    fn rows_that_fit_no_block_stay_unquantized() {
        let model = vec![("w.weight".to_owned(), 33)];
        assert_eq!(types(FileType::Q4_0, false, &model)[0].1, "dense");
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(
            FileType::parse("Q4_K_M").map(FileType::base),
            Some(BlockType::Q4_K)
        );
    }
}
