//! The plain `mlp` classifier: dense layers with one activation between them, described by
//! `config.json` (`{"model_type": "mlp", "layers": ["fc1", "fc2"], "activation": "relu"}`)
//! beside weights `<layer>.weight` `[out, in]` and optional `<layer>.bias`.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::EvalError;
use super::weights::{Linear, Weights, runtime as rt};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MlpConfig {
    pub layers: Vec<String>,
    #[serde(default = "relu")]
    pub activation: String,
}

fn relu() -> String {
    "relu".into()
}

pub const ACTIVATIONS: [&str; 5] = ["relu", "gelu", "tanh", "sigmoid", "silu"];

impl MlpConfig {
    pub fn parse(config: &serde_json::Value) -> Result<MlpConfig, EvalError> {
        let parsed: MlpConfig = serde_json::from_value(config.clone())
            .map_err(|e| EvalError::Model(format!("config.json is not an mlp config: {e}")))?;
        if parsed.layers.is_empty() {
            return Err(EvalError::Model(
                "an mlp config lists at least one layer".into(),
            ));
        }
        if !ACTIVATIONS.contains(&parsed.activation.as_str()) {
            return Err(EvalError::Model(format!(
                "activation {:?} is not one of {}",
                parsed.activation,
                ACTIVATIONS.join(", ")
            )));
        }
        Ok(parsed)
    }
}

/// A classifier ready to run.
pub struct Mlp {
    layers: Vec<Linear>,
    activation: String,
}

impl Mlp {
    pub fn load(config: &MlpConfig, weights: &Weights) -> Result<Mlp, EvalError> {
        let layers = config
            .layers
            .iter()
            .map(|l| weights.linear(l, false))
            .collect::<Result<_, _>>()?;
        Ok(Mlp {
            layers,
            activation: config.activation.clone(),
        })
    }

    /// Class logits `[batch, classes]` of inputs `[batch, features]` (row-major).
    pub fn logits(&self, inputs: &[f32], features: usize) -> Result<Vec<Vec<f32>>, EvalError> {
        let rows = inputs.len() / features.max(1);
        let mut x = Tensor::from_slice(inputs, (rows, features), &Device::Cpu).map_err(rt)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x).map_err(rt)?;
            if i + 1 < self.layers.len() {
                x = match self.activation.as_str() {
                    "relu" => x.relu(),
                    "gelu" => x.gelu_erf(),
                    "tanh" => x.tanh(),
                    "sigmoid" => candle_nn::ops::sigmoid(&x),
                    _ => candle_nn::ops::silu(&x),
                }
                .map_err(rt)?;
            }
        }
        x.to_vec2::<f32>().map_err(rt)
    }
}
