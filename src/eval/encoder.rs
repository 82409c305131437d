//! BERT-family encoders: our own forward on candle tensors (post-LayerNorm blocks, exact erf
//! GELU, absolute positions), mean-pooled sentence embeddings over the real tokens
//! (sentence-transformers' pooling), and the sequence-classification head
//! (`pooler.dense` → tanh → `classifier`) when the checkpoint has one. Written here rather than
//! taken from candle-transformers so that its linear layers are the same as the decoder's
//! (transposed dense weights, or GGUF blocks) and the build stays lean.

use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use super::EvalError;
use super::weights::{Linear, Weights, runtime as rt};

/// The `config.json` fields the forward reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_positions() -> usize {
    512
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// Parses and checks a BERT `config.json`.
pub fn parse_config(config: &serde_json::Value) -> Result<BertConfig, EvalError> {
    let parsed: BertConfig = serde_json::from_value(config.clone())
        .map_err(|e| EvalError::Model(format!("config.json is not a BERT config: {e}")))?;
    if parsed.num_attention_heads == 0
        || !parsed
            .hidden_size
            .is_multiple_of(parsed.num_attention_heads)
    {
        return Err(EvalError::Model(
            "config.json's hidden_size is not a multiple of num_attention_heads".into(),
        ));
    }
    if !matches!(parsed.hidden_act.as_str(), "gelu" | "gelu_new" | "relu") {
        return Err(EvalError::Model(format!(
            "hidden_act {:?} is not supported by the evaluation runtime (gelu, gelu_new, relu)",
            parsed.hidden_act
        )));
    }
    Ok(parsed)
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(weights: &Weights, prefix: &str) -> Result<LayerNorm, EvalError> {
        Ok(LayerNorm {
            weight: weights.tensor(&format!("{prefix}.weight"))?,
            bias: weights.tensor(&format!("{prefix}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// An encoder ready to run.
pub struct Encoder {
    config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    head: Option<(Linear, Linear)>,
}

impl Encoder {
    pub fn load(config: &serde_json::Value, weights: &Weights) -> Result<Encoder, EvalError> {
        let config = parse_config(config)?;
        // sentence-transformers checkpoints drop the `bert.` prefix; classification ones keep it.
        let root = if weights.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let table = |name: &str| -> Result<Tensor, EvalError> {
            weights
                .tensor(&format!("{root}embeddings.{name}.weight"))?
                .contiguous()
                .map_err(rt)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("{root}encoder.layer.{i}");
                Ok(EncoderLayer {
                    query: weights.linear(&format!("{p}.attention.self.query"), true)?,
                    key: weights.linear(&format!("{p}.attention.self.key"), true)?,
                    value: weights.linear(&format!("{p}.attention.self.value"), true)?,
                    attention_out: weights.linear(&format!("{p}.attention.output.dense"), true)?,
                    attention_norm: LayerNorm::load(
                        weights,
                        &format!("{p}.attention.output.LayerNorm"),
                    )?,
                    intermediate: weights.linear(&format!("{p}.intermediate.dense"), true)?,
                    output: weights.linear(&format!("{p}.output.dense"), true)?,
                    output_norm: LayerNorm::load(weights, &format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        let head = if weights.contains("classifier.weight") {
            let pooler = format!("{root}pooler.dense");
            if !weights.contains(&format!("{pooler}.weight")) {
                return Err(EvalError::Model("a classifier head needs a pooler".into()));
            }
            Some((
                weights.linear(&pooler, true)?,
                weights.linear("classifier", true)?,
            ))
        } else {
            None
        };
        Ok(Encoder {
            word: table("word_embeddings")?,
            position: table("position_embeddings")?,
            token_type: table("token_type_embeddings")?,
            embedding_norm: LayerNorm::load(weights, &format!("{root}embeddings.LayerNorm"))?,
            layers,
            head,
            config,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Classes of the classification head, if any.
    pub fn labels(&self) -> Option<usize> {
        self.head.as_ref().map(|(_, c)| c.out_features())
    }

    /// Hidden states `[batch, tokens, hidden]` of a batch of equal-length sequences, and the
    /// mask of their real (non-padding) tokens `[batch, tokens]`.
    pub fn hidden(&self, batch: &[&[u32]]) -> Result<(Tensor, Tensor), EvalError> {
        self.hidden_inner(batch).map_err(rt)
    }

    fn hidden_inner(&self, batch: &[&[u32]]) -> candle_core::Result<(Tensor, Tensor)> {
        let c = &self.config;
        let (b, t) = (batch.len(), batch.first().map_or(0, |s| s.len()));
        let flat: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let mask: Vec<f32> = flat
            .iter()
            .map(|&id| if id == c.pad_token_id { 0.0 } else { 1.0 })
            .collect();
        let ids = Tensor::from_vec(flat, b * t, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu)?;
        let x = self
            .word
            .index_select(&ids, 0)?
            .reshape((b, t, c.hidden_size))?;
        let x = x
            .broadcast_add(&self.position.narrow(0, 0, t)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?;
        let eps = c.layer_norm_eps;
        let mut x = self.embedding_norm.forward(&x, eps)?;
        // Padding keys get -10000 added to their scores, as BERT's extended mask does.
        let bias = ((mask.clone() - 1.0)? * 10_000.0)?.reshape((b, 1, 1, t))?;
        let (heads, hd) = (c.num_attention_heads, c.hidden_size / c.num_attention_heads);
        for layer in &self.layers {
            let split = |y: Tensor| -> candle_core::Result<Tensor> {
                y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&bias)?;
            let context = candle_nn::ops::softmax_last_dim(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, c.hidden_size))?;
            x = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&context)? + &x)?, eps)?;
            let inner = layer.intermediate.forward(&x)?;
            let inner = match c.hidden_act.as_str() {
                "relu" => inner.relu()?,
                "gelu_new" => inner.gelu()?,
                _ => inner.gelu_erf()?,
            };
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &x)?, eps)?;
        }
        Ok((x, mask))
    }

    /// Embeddings `[batch, hidden]` mean-pooled over the real tokens and, with a head, class
    /// logits.
    #[allow(clippy::type_complexity)]
    pub fn embed(
        &self,
        batch: &[&[u32]],
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>), EvalError> {
        let (hidden, mask) = self.hidden(batch)?;
        let pooled = (|| {
            let mask = mask.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1f32, f32::MAX)?;
            summed.broadcast_div(&counts)
        })()
        .map_err(rt)?;
        let logits = match &self.head {
            Some((pooler, classifier)) => {
                let first = hidden
                    .narrow(1, 0, 1)
                    .and_then(|t| t.squeeze(1))
                    .map_err(rt)?;
                let p = pooler.forward(&first).and_then(|t| t.tanh()).map_err(rt)?;
                let l = classifier
                    .forward(&p)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .map_err(rt)?;
                Some(l.to_vec2::<f32>().map_err(rt)?)
            }
            None => None,
        };
        Ok((pooled.to_vec2::<f32>().map_err(rt)?, logits))
    }
}
