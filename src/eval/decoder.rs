//! The Llama-family decoder forward (Llama, Mistral, Qwen2) on candle tensors, written here
//! rather than taken from candle-transformers because evaluation needs the logits of every
//! position (candle's models return the last one) and one code path for dense and GGUF-block
//! weights. Follows Hugging Face's modelling code: RMSNorm, rotary embeddings (with Llama 3
//! frequency scaling), grouped-query attention, a SiLU-gated MLP.

use candle_core::{DType, Device, Tensor};
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

struct DecoderLayer {
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

/// A decoder ready to run.
pub struct Decoder {
    config: DecoderConfig,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    head: Linear,
    inverse_frequencies: Tensor,
    interleaved_rope: bool,
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
        config.check()?;
        let bias = config.qkv_bias();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    attn_norm: weights.tensor(&format!("{p}.input_layernorm.weight"))?,
                    q: weights.linear(&format!("{p}.self_attn.q_proj"), bias)?,
                    k: weights.linear(&format!("{p}.self_attn.k_proj"), bias)?,
                    v: weights.linear(&format!("{p}.self_attn.v_proj"), bias)?,
                    o: weights.linear(&format!("{p}.self_attn.o_proj"), false)?,
                    ffn_norm: weights.tensor(&format!("{p}.post_attention_layernorm.weight"))?,
                    gate: weights.linear(&format!("{p}.mlp.gate_proj"), false)?,
                    up: weights.linear(&format!("{p}.mlp.up_proj"), false)?,
                    down: weights.linear(&format!("{p}.mlp.down_proj"), false)?,
                })
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        let head = if weights.contains("lm_head.weight") {
            weights.linear("lm_head", false)?
        } else {
            weights.linear("model.embed_tokens", false)?
        };
        let freqs = config.inverse_frequencies();
        let n = freqs.len();
        Ok(Decoder {
            embed: weights
                .tensor("model.embed_tokens.weight")?
                .contiguous()
                .map_err(rt)?,
            norm: weights.tensor("model.norm.weight")?,
            inverse_frequencies: Tensor::from_vec(freqs, (1, n), &Device::Cpu).map_err(rt)?,
            interleaved_rope: weights.interleaved_rope,
            layers,
            head,
            config,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Logits `[tokens, vocab]` for `tokens` following the cache's positions (batch 1).
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Tensor, EvalError> {
        self.forward_inner(tokens, cache).map_err(rt)
    }

    fn forward_inner(&self, tokens: &[u32], cache: &mut Cache) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (t, offset) = (tokens.len(), cache.len());
        if cache.kv.len() != self.layers.len() {
            cache.kv = (0..self.layers.len()).map(|_| None).collect();
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let positions = Tensor::arange(offset as u32, (offset + t) as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let angles = positions.matmul(&self.inverse_frequencies)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let mask = causal_mask(t, offset)?;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let eps = c.rms_norm_eps as f32;
        for (layer, slot) in self.layers.iter().zip(cache.kv.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let split = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
                y.reshape((1, t, n, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = split(layer.q.forward(&h)?, heads)?;
            let k = split(layer.k.forward(&h)?, kv_heads)?;
            let v = split(layer.v.forward(&h)?, kv_heads)?;
            let (q, k) = if self.interleaved_rope {
                (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                )
            } else {
                (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                )
            };
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            let repeat = heads / kv_heads;
            let (k, v) = (repeat_kv(k, repeat)?, repeat_kv(v, repeat)?);
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let scores = match &mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            let attn = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
            let attn = attn.transpose(1, 2)?.reshape((1, t, heads * hd))?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gated =
                (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&gated)?)?;
        }
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

/// `-inf` above the diagonal for `t` new positions after `offset` cached ones; None for one.
fn causal_mask(t: usize, offset: usize) -> candle_core::Result<Option<Tensor>> {
    if t <= 1 {
        return Ok(None);
    }
    let total = t + offset;
    let values: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > i + offset {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (t, total), &Device::Cpu).map(Some)
}

/// Hands `read` an f32 tensor's values in row-major order, in place when it is contiguous.
pub fn with_values(t: &Tensor, read: &mut dyn FnMut(&[f32])) -> Result<(), EvalError> {
    let t = t.contiguous().map_err(rt)?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            let all = cpu.as_slice::<f32>().map_err(rt)?;
            read(&all[layout.start_offset()..][..t.elem_count()]);
            Ok(())
        }
        _ => Err(EvalError::Runtime("the logits are not on the CPU".into())),
    }
}
