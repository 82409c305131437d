//! The Llama-family decoder forward (Llama, Mistral, Qwen2) on candle tensors, written here
//! rather than taken from candle-transformers because evaluation needs the logits of every
//! position (candle's models return the last one) and one code path for dense and GGUF-block
//! weights. Follows Hugging Face's modelling code: RMSNorm, rotary embeddings (with Llama 3
//! frequency scaling), grouped-query attention, a SiLU-gated MLP.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use super::EvalError;
use super::weights::{Linear, Weights, runtime as rt};

/// The `config.json` fields the forward reads.
#[derive(Debug, Clone, Deserialize)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}

impl DecoderConfig {
    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Whether q/k/v projections carry biases (Qwen2 always does).
    fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// Checks what the forward can run, with the reason when it cannot.
    pub fn check(&self) -> Result<(), EvalError> {
        if self.num_attention_heads == 0
            || self.kv_heads() == 0
            || !self.num_attention_heads.is_multiple_of(self.kv_heads())
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(EvalError::Model(
                "config.json's attention heads are inconsistent".into(),
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            let kind = scaling["rope_type"]
                .as_str()
                .or(scaling["type"].as_str())
                .unwrap_or("default");
            if !matches!(kind, "default" | "llama3") {
                return Err(EvalError::Model(format!(
                    "rope_scaling type {kind:?} is not supported by the evaluation runtime"
                )));
            }
        }
        Ok(())
    }

    /// Inverse frequencies of the rotary embedding, Llama 3 scaling applied when configured.
    fn inverse_frequencies(&self) -> Vec<f32> {
        let dim = self.head_dim();
        let mut freqs: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / dim as f64))
            .collect();
        if let Some(s) = &self.rope_scaling
            && s["rope_type"].as_str().or(s["type"].as_str()) == Some("llama3")
        {
            let factor = s["factor"].as_f64().unwrap_or(8.0);
            let low = s["low_freq_factor"].as_f64().unwrap_or(1.0);
            let high = s["high_freq_factor"].as_f64().unwrap_or(4.0);
            let original = s["original_max_position_embeddings"]
                .as_f64()
                .unwrap_or(8192.0);
            let (low_wavelen, high_wavelen) = (original / low, original / high);
            for f in &mut freqs {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (original / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        freqs.into_iter().map(|f| f as f32).collect()
    }
}

/// One decoder layer's norms and projections.
pub struct DecoderLayer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl DecoderLayer {
    /// Layer `index` of `weights` (Hugging Face names, `model.layers.{index}.…`).
    pub fn load(
        weights: &Weights,
        index: usize,
        qkv_bias: bool,
    ) -> Result<DecoderLayer, EvalError> {
        let p = format!("model.layers.{index}");
        Ok(DecoderLayer {
            attn_norm: weights.tensor(&format!("{p}.input_layernorm.weight"))?,
            q: weights.linear(&format!("{p}.self_attn.q_proj"), qkv_bias)?,
            k: weights.linear(&format!("{p}.self_attn.k_proj"), qkv_bias)?,
            v: weights.linear(&format!("{p}.self_attn.v_proj"), qkv_bias)?,
            o: weights.linear(&format!("{p}.self_attn.o_proj"), false)?,
            ffn_norm: weights.tensor(&format!("{p}.post_attention_layernorm.weight"))?,
            gate: weights.linear(&format!("{p}.mlp.gate_proj"), false)?,
            up: weights.linear(&format!("{p}.mlp.up_proj"), false)?,
            down: weights.linear(&format!("{p}.mlp.down_proj"), false)?,
        })
    }

    /// The names of the tensors layer `index` reads, norms first.
    pub fn tensor_names(index: usize) -> Vec<String> {
        let p = format!("model.layers.{index}");
        let mut names = vec![
            format!("{p}.input_layernorm.weight"),
            format!("{p}.post_attention_layernorm.weight"),
        ];
        for tap in Tap::ALL {
            for projection in tap.projections() {
                names.push(format!("{p}.{projection}.weight"));
            }
        }
        names
    }
}

/// Where a layer's projections read their inputs: what calibration observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tap {
    /// The normalized hidden state that q, k and v read.
    Attention,
    /// The attention heads' concatenated outputs, which o reads.
    AttentionOutput,
    /// The normalized hidden state that gate and up read.
    Mlp,
    /// The gated product that down reads.
    MlpOutput,
}

impl Tap {
    /// In the order the forward reaches them.
    pub const ALL: [Tap; 4] = [
        Tap::Attention,
        Tap::AttentionOutput,
        Tap::Mlp,
        Tap::MlpOutput,
    ];

    /// The projections (relative to `model.layers.{i}.`) reading this input.
    pub fn projections(self) -> &'static [&'static str] {
        match self {
            Tap::Attention => &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            Tap::AttentionOutput => &["self_attn.o_proj"],
            Tap::Mlp => &["mlp.gate_proj", "mlp.up_proj"],
            Tap::MlpOutput => &["mlp.down_proj"],
        }
    }

    /// The input that the projection `name` (any prefix, `.weight` or not) reads.
    pub fn of(name: &str) -> Option<Tap> {
        let name = name.strip_suffix(".weight").unwrap_or(name);
        Tap::ALL
            .into_iter()
            .find(|tap| tap.projections().iter().any(|p| name.ends_with(p)))
    }
}

/// What every layer of a decoder shares: its configuration and rotary embedding.
pub struct Frame {
    config: DecoderConfig,
    inverse_frequencies: Tensor,
    interleaved_rope: bool,
}

/// The rotary embedding's cosines and sines for a run of positions.
pub struct Rotation {
    cos: Tensor,
    sin: Tensor,
}

impl Frame {
    pub fn new(config: DecoderConfig, interleaved_rope: bool) -> Result<Frame, EvalError> {
        config.check()?;
        let freqs = config.inverse_frequencies();
        let n = freqs.len();
        Ok(Frame {
            inverse_frequencies: Tensor::from_vec(freqs, (1, n), &Device::Cpu).map_err(rt)?,
            interleaved_rope,
            config,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether q/k/v projections carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.config.qkv_bias()
    }

    /// The rotation of positions `offset..offset + t`.
    pub fn rotation(&self, offset: usize, t: usize) -> candle_core::Result<Rotation> {
        let positions = Tensor::arange(offset as u32, (offset + t) as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let angles = positions.matmul(&self.inverse_frequencies)?;
        Ok(Rotation {
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    /// Hidden states `x` `[1, t, hidden]` through `layer`, the new positions following `offset`
    /// cached ones in `slot`; `tap` sees each projection input as it is formed.
    pub fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: Tensor,
        rotation: &Rotation,
        slot: &mut Option<(Tensor, Tensor)>,
        offset: usize,
        tap: &mut dyn FnMut(Tap, &Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let t = x.dim(1)?;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let eps = c.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
        tap(Tap::Attention, &h)?;
        let split = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((1, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(layer.q.forward(&h)?, heads)?;
        let k = split(layer.k.forward(&h)?, kv_heads)?;
        let v = split(layer.v.forward(&h)?, kv_heads)?;
        let (cos, sin) = (&rotation.cos, &rotation.sin);
        let (q, k) = if self.interleaved_rope {
            (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            )
        };
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        let repeat = heads / kv_heads;
        let (k, v) = (repeat_kv(k, repeat)?, repeat_kv(v, repeat)?);
        let attn = causal_attention(&q, &k, &v, offset, hd)?;
        let attn = attn.transpose(1, 2)?.reshape((1, t, heads * hd))?;
        tap(Tap::AttentionOutput, &attn)?;
        let x = (x + layer.o.forward(&attn)?)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
        tap(Tap::Mlp, &h)?;
        let gated = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
        tap(Tap::MlpOutput, &gated)?;
        x + layer.down.forward(&gated)?
    }
}

/// A decoder ready to run.
pub struct Decoder {
    frame: Frame,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    head: Linear,
}

/// Keys and values of earlier positions, per layer.
#[derive(Default, Clone)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.kv
            .first()
            .and_then(|e| e.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Decoder {
    pub fn load(config: DecoderConfig, weights: &Weights) -> Result<Decoder, EvalError> {
        let frame = Frame::new(config, weights.interleaved_rope)?;
        let bias = frame.qkv_bias();
        // In parallel: a GGUF layer's blocks are dequantized here, one tensor per thread.
        let layers = (0..frame.config.num_hidden_layers)
            .into_par_iter()
            .map(|i| DecoderLayer::load(weights, i, bias))
            .collect::<Result<Vec<_>, EvalError>>()?;
        let head = if weights.contains("lm_head.weight") {
            weights.linear("lm_head", false)?
        } else {
            weights.linear("model.embed_tokens", false)?
        };
        Ok(Decoder {
            embed: weights
                .tensor("model.embed_tokens.weight")?
                .contiguous()
                .map_err(rt)?,
            norm: weights.tensor("model.norm.weight")?,
            layers,
            head,
            frame,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.frame.config.vocab_size
    }

    /// Logits `[tokens, vocab]` for `tokens` following the cache's positions (batch 1).
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Tensor, EvalError> {
        self.forward_inner(tokens, cache).map_err(rt)
    }

    fn forward_inner(&self, tokens: &[u32], cache: &mut Cache) -> candle_core::Result<Tensor> {
        let (t, offset) = (tokens.len(), cache.len());
        if cache.kv.len() != self.layers.len() {
            cache.kv = (0..self.layers.len()).map(|_| None).collect();
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let rotation = self.frame.rotation(offset, t)?;
        for (layer, slot) in self.layers.iter().zip(cache.kv.iter_mut()) {
            x = self
                .frame
                .layer_forward(layer, x, &rotation, slot, offset, &mut |_, _| Ok(()))?;
        }
        let eps = self.frame.config.rms_norm_eps as f32;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        self.head.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)
    }
}

/// Each of the `kv_heads` key/value heads repeated for the `repeat` query heads sharing it:
/// `[1, kv_heads, t, d]` → `[1, kv_heads × repeat, t, d]`, head h of the result being kv head
/// h / repeat.
fn repeat_kv(x: Tensor, repeat: usize) -> candle_core::Result<Tensor> {
    if repeat == 1 {
        return Ok(x);
    }
    let (b, kv_heads, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv_heads, repeat, t, d))?
        .contiguous()?
        .reshape((b, kv_heads * repeat, t, d))
}

/// Queries attended to in blocks of this many: each block scores only the keys up to its
/// last position, so a 512-token window computes 10 of the 16 score tiles a full square
/// would (the masked ones are exactly zero after the softmax either way).
const QUERY_BLOCK: usize = 128;

/// Causal scaled dot-product attention of `q` `[1, heads, t, d]` over `k`, `v`
/// `[1, heads, offset + t, d]`, the new positions following `offset` cached ones.
fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    let t = q.dim(2)?;
    let scale = (head_dim as f64).sqrt();
    let block = |start: usize, end: usize| -> candle_core::Result<Tensor> {
        let keys = offset + end;
        let (q, k, v) = (
            q.narrow(2, start, end - start)?,
            k.narrow(2, 0, keys)?,
            v.narrow(2, 0, keys)?,
        );
        let scores = (q.matmul(&k.t()?)? / scale)?;
        let scores = match causal_mask(start, end, offset)? {
            Some(m) => scores.broadcast_add(&m)?,
            None => scores,
        };
        candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)
    };
    if t <= QUERY_BLOCK {
        return block(0, t);
    }
    let parts = (0..t)
        .step_by(QUERY_BLOCK)
        .map(|start| block(start, (start + QUERY_BLOCK).min(t)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 2)
}

/// `-inf` where new position `start + i` (of `start..end`, after `offset` cached ones) must not
/// see key `j`, over the keys `0..offset + end`; None when it sees them all (one position).
fn causal_mask(start: usize, end: usize, offset: usize) -> candle_core::Result<Option<Tensor>> {
    if end - start <= 1 {
        return Ok(None);
    }
    let keys = offset + end;
    let values: Vec<f32> = (start..end)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j > i + offset {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (end - start, keys), &Device::Cpu).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::numeric::SplitMix::new(seed, 1);
        (0..n)
            .map(|_| (rng.next_unit() as f32 - 0.5) * 4.0)
            .collect()
    }

    /// Causal attention written out one query at a time in f64.
    fn scalar_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (heads, t, keys, d): (usize, usize, usize, usize),
    ) -> Vec<f32> {
        let offset = keys - t;
        let mut out = vec![0f32; heads * t * d];
        for h in 0..heads {
            for i in 0..t {
                let seen = offset + i + 1;
                let scores: Vec<f64> = (0..seen)
                    .map(|j| {
                        (0..d)
                            .map(|e| {
                                q[(h * t + i) * d + e] as f64 * k[(h * keys + j) * d + e] as f64
                            })
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                for e in 0..d {
                    let mixed: f64 = (0..seen)
                        .map(|j| weights[j] * v[(h * keys + j) * d + e] as f64)
                        .sum();
                    out[(h * t + i) * d + e] = (mixed / total) as f32;
                }
            }
        }
        out
    }

    /// Blocks of queries over the keys up to each block's end give what one square with a
    /// mask gives, with and without cached positions, for windows that do and do not divide
    /// into blocks.
    #[test]
    fn attention_in_query_blocks_equals_the_scalar_reference() {
        let (heads, d) = (3, 16);
        for (t, offset) in [(1, 0), (1, 7), (100, 0), (300, 0), (257, 5)] {
            let keys = offset + t;
            let (q, k, v) = (
                random(heads * t * d, 1),
                random(heads * keys * d, 2),
                random(heads * keys * d, 3),
            );
            let tensor = |values: &[f32], rows: usize| {
                Tensor::from_vec(values.to_vec(), (1, heads, rows, d), &Device::Cpu).unwrap()
            };
            let got = causal_attention(
                &tensor(&q, t),
                &tensor(&k, keys),
                &tensor(&v, keys),
                offset,
                d,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            let want = scalar_attention(&q, &k, &v, (heads, t, keys, d));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "t {t} offset {offset}: {worst}");
        }
    }
}
