//! BERT-family encoders through candle-transformers' `BertModel`: mean-pooled sentence
//! embeddings (sentence-transformers' pooling), and the sequence-classification head
//! (`bert.pooler.dense` → tanh → `classifier`) when the checkpoint has one.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};

use super::EvalError;
use super::weights::{Linear, Weights};

/// An encoder ready to run.
pub struct Encoder {
    model: BertModel,
    head: Option<(Linear, Linear)>,
    pub vocab_size: usize,
    pub max_positions: usize,
    /// Positions holding this id are padding: masked in attention and left out of the pooling.
    pad_token_id: u32,
}

fn rt(err: candle_core::Error) -> EvalError {
    EvalError::Runtime(err.to_string())
}

/// `config.json` with the fields candle's `Config` requires but training-only configs omit.
pub fn parse_config(config: &serde_json::Value) -> Result<Config, EvalError> {
    let mut filled = serde_json::json!({
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "max_position_embeddings": 512,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "classifier_dropout": null, "model_type": "bert",
    });
    if let (Some(into), Some(from)) = (filled.as_object_mut(), config.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(filled)
        .map_err(|e| EvalError::Model(format!("config.json is not a BERT config: {e}")))
}

impl Encoder {
    pub fn load(config: &serde_json::Value, weights: &Weights) -> Result<Encoder, EvalError> {
        let parsed = parse_config(config)?;
        let model = BertModel::load(weights.var_builder(), &parsed)
            .map_err(|e| EvalError::Model(format!("the BERT weights do not load: {e}")))?;
        let head = if weights.contains("classifier.weight") {
            let pooler = ["bert.pooler.dense", "pooler.dense"]
                .into_iter()
                .find(|p| weights.contains(&format!("{p}.weight")))
                .ok_or_else(|| EvalError::Model("a classifier head needs a pooler".into()))?;
            Some((
                weights.linear(pooler, true)?,
                weights.linear("classifier", true)?,
            ))
        } else {
            None
        };
        Ok(Encoder {
            model,
            head,
            vocab_size: parsed.vocab_size,
            max_positions: parsed.max_position_embeddings,
            pad_token_id: parsed.pad_token_id as u32,
        })
    }

    /// Classes of the classification head, if any.
    pub fn labels(&self) -> Option<usize> {
        self.head.as_ref().map(|(_, c)| c.out_features())
    }

    /// Hidden states `[batch, tokens, hidden]` of a batch of equal-length sequences, and the
    /// mask of their real (non-padding) tokens `[batch, tokens]`.
    pub fn hidden(&self, batch: &[&[u32]]) -> Result<(Tensor, Tensor), EvalError> {
        let t = batch.first().map_or(0, |s| s.len());
        let flat: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let mask: Vec<u32> = flat
            .iter()
            .map(|&id| (id != self.pad_token_id) as u32)
            .collect();
        let ids = Tensor::from_vec(flat, (batch.len(), t), &Device::Cpu).map_err(rt)?;
        let mask = Tensor::from_vec(mask, (batch.len(), t), &Device::Cpu).map_err(rt)?;
        let types = ids.zeros_like().map_err(rt)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(rt)?;
        Ok((hidden, mask))
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
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
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
