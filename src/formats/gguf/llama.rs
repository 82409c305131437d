//! The Llama-family conventions of llama.cpp's converter: tensor names from Hugging Face names,
//! the architecture metadata from `config.json`, the tokenizer metadata from `tokenizer.json`,
//! and the row permutation of the query and key projections (HF's rotary layout to ggml's).

use super::Value;

/// The Llama-family architectures squeeze maps to llama.cpp's names, by `config.json`'s
/// `model_type`: (GGUF architecture, whether Q/K rows are permuted as llama.cpp's converter
/// does for rotary embeddings in HF's layout).
pub fn llama_family(model_type: &str) -> Option<(&'static str, bool)> {
    match model_type {
        "llama" | "mistral" => Some(("llama", true)),
        "qwen2" => Some(("qwen2", false)),
        _ => None,
    }
}

/// llama.cpp's name for a Hugging Face tensor name of a Llama-family model; None for tensors
/// the runtime does not load (rotary caches).
pub fn llama_tensor_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_owned());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    let mapped = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "self_attn.rotary_emb" => return None,
        _ => return Some(hf.to_owned()),
    };
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

/// The source row of each output row when llama.cpp's converter permutes a query or key
/// projection of `rows` rows for `heads` heads: within each head, HF keeps the two rotary
/// halves apart and ggml interleaves them.
pub fn rotary_permutation(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    (0..rows)
        .map(|r| {
            let (head, within) = (r / head_dim, r % head_dim);
            let (pair, side) = (within / 2, within % 2);
            head * head_dim + side * half + pair
        })
        .collect()
}

/// The `<arch>.*` metadata llama.cpp requires, from a Llama-family `config.json`.
pub fn llama_metadata(
    arch: &str,
    config: &serde_json::Value,
) -> Result<Vec<(String, Value)>, String> {
    let number = |key: &str| -> Result<u64, String> {
        config[key]
            .as_u64()
            .ok_or_else(|| format!("config.json has no integer {key:?}"))
    };
    let hidden = number("hidden_size")?;
    let heads = number("num_attention_heads")?;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(heads);
    if heads == 0 || hidden % heads != 0 {
        return Err(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        ));
    }
    let head_dim = config["head_dim"].as_u64().unwrap_or(hidden / heads);
    let u32_of = |v: u64, key: &str| -> Result<Value, String> {
        u32::try_from(v)
            .map(Value::U32)
            .map_err(|_| format!("config.json {key} {v} does not fit GGUF's u32"))
    };
    let key = |k: &str| format!("{arch}.{k}");
    let mut out = vec![
        (
            key("context_length"),
            u32_of(
                config["max_position_embeddings"].as_u64().unwrap_or(2048),
                "max_position_embeddings",
            )?,
        ),
        (key("embedding_length"), u32_of(hidden, "hidden_size")?),
        (
            key("block_count"),
            u32_of(number("num_hidden_layers")?, "num_hidden_layers")?,
        ),
        (
            key("feed_forward_length"),
            u32_of(number("intermediate_size")?, "intermediate_size")?,
        ),
        (
            key("attention.head_count"),
            u32_of(heads, "num_attention_heads")?,
        ),
        (
            key("attention.head_count_kv"),
            u32_of(kv_heads, "num_key_value_heads")?,
        ),
        (key("rope.dimension_count"), u32_of(head_dim, "head_dim")?),
        (
            key("rope.freq_base"),
            Value::F32(config["rope_theta"].as_f64().unwrap_or(10000.0) as f32),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(config["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32),
        ),
    ];
    if let Some(vocab) = config["vocab_size"].as_u64() {
        out.push((key("vocab_size"), u32_of(vocab, "vocab_size")?));
    }
    Ok(out)
}

/// The `tokenizer.ggml.*` metadata from a Hugging Face `tokenizer.json` whose model is a
/// byte-level BPE (GPT-2 style: vocabulary and merges as they are); `no_vocab` when there is
/// none or it is of another kind (the model then loads and runs on token ids).
pub fn tokenizer_metadata(
    tokenizer: Option<&serde_json::Value>,
    config: &serde_json::Value,
) -> Vec<(String, Value)> {
    let model = |name: &str| {
        vec![(
            "tokenizer.ggml.model".to_owned(),
            Value::String(name.into()),
        )]
    };
    let Some(tokenizer) = tokenizer else {
        return model("no_vocab");
    };
    let bpe = &tokenizer["model"];
    let (Some(vocab), Some(merges)) = (bpe["vocab"].as_object(), bpe["merges"].as_array()) else {
        return model("no_vocab");
    };
    if bpe["type"] != "BPE" || bpe["byte_fallback"] == true {
        return model("no_vocab");
    }
    let mut tokens: Vec<(u64, String, i32)> = vocab
        .iter()
        .filter_map(|(text, id)| Some((id.as_u64()?, text.clone(), 1)))
        .collect();
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) {
            let kind = if added["special"] == true { 3 } else { 4 };
            tokens.retain(|(i, _, _)| *i != id);
            tokens.push((id, text.to_owned(), kind));
        }
    }
    tokens.sort_by_key(|(id, _, _)| *id);
    // The ids must run 0..n without holes for llama.cpp's token table.
    if tokens
        .iter()
        .enumerate()
        .any(|(i, (id, _, _))| *id != i as u64)
    {
        return model("no_vocab");
    }
    let merges: Vec<Value> = merges
        .iter()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(pair) => Some(
                pair.iter()
                    .filter_map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let mut out = model("gpt2");
    out.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(
            tokens
                .iter()
                .map(|(_, t, _)| Value::String(t.clone()))
                .collect(),
        ),
    ));
    out.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(tokens.iter().map(|(_, _, k)| Value::I32(*k)).collect()),
    ));
    out.push(("tokenizer.ggml.merges".into(), Value::Array(merges)));
    for (key, config_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = config[config_key]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
        {
            out.push((key.into(), Value::U32(id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_permutation_interleaves_the_halves_of_each_head() {
        // numpy: np.arange(8).reshape(2, 2, 2).swapaxes(1, 2).reshape(8) for 2 heads of 4 rows.
        assert_eq!(rotary_permutation(8, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(rotary_permutation(6, 1), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn llama_names_follow_llama_cpp() {
        assert_eq!(
            llama_tensor_name("model.layers.12.self_attn.o_proj.weight").as_deref(),
            Some("blk.12.attn_output.weight")
        );
        assert_eq!(
            llama_tensor_name("model.layers.0.self_attn.q_proj.bias").as_deref(),
            Some("blk.0.attn_q.bias")
        );
        assert_eq!(
            llama_tensor_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(
            llama_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }
}
