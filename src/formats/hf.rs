//! Hugging Face model conventions squeeze relies on: the `config.json` of decoder families with
//! a gated MLP (Llama, Mistral, Qwen2/Qwen3) and the names and shapes of their MLP projections
//! (`<prefix>.mlp.{gate,up,down}_proj.weight`: gate and up are [intermediate, hidden], down is
//! [hidden, intermediate]).

use std::collections::BTreeMap;

/// `model_type` values whose MLP is `down(act(gate(x)) · up(x))` with those tensor names.
pub const GATED_MLP_MODEL_TYPES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

/// The three projections of one layer's MLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedMlp {
    /// Layer prefix, e.g. `model.layers.3`.
    pub prefix: String,
    /// `[intermediate, hidden]`.
    pub gate: String,
    /// `[intermediate, hidden]`.
    pub up: String,
    /// `[hidden, intermediate]`.
    pub down: String,
    /// Intermediate size.
    pub intermediate: u64,
}

/// Why a model's gated MLPs cannot be shrunk together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlpError {
    #[error(
        "no gated MLP found: expected tensors named <layer>.mlp.gate_proj.weight, up_proj and down_proj (Llama, Mistral, Qwen)"
    )]
    None,
    #[error("layer {prefix:?}: {reason}")]
    Shapes { prefix: String, reason: String },
}

/// Finds every layer's gated MLP among `(name, shape)` pairs and checks their shapes agree.
pub fn gated_mlps<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [u64])>,
) -> Result<Vec<GatedMlp>, MlpError> {
    let mut parts: BTreeMap<String, [Option<Vec<u64>>; 3]> = BTreeMap::new();
    for (name, shape) in tensors {
        for (i, part) in ["gate_proj", "up_proj", "down_proj"].iter().enumerate() {
            if let Some(prefix) = name.strip_suffix(&format!(".mlp.{part}.weight")) {
                parts.entry(prefix.to_owned()).or_default()[i] = Some(shape.to_vec());
            }
        }
    }
    if parts.is_empty() {
        return Err(MlpError::None);
    }
    let mut layers = Vec::with_capacity(parts.len());
    let mut intermediate_seen = None;
    for (prefix, [gate, up, down]) in parts {
        let shapes_error = |reason: String| MlpError::Shapes {
            prefix: prefix.clone(),
            reason,
        };
        let (Some(gate), Some(up), Some(down)) = (gate, up, down) else {
            return Err(shapes_error(
                "gate_proj, up_proj and down_proj must all be present".into(),
            ));
        };
        if gate.len() != 2 || gate != up || down.len() != 2 || down != [gate[1], gate[0]] {
            return Err(shapes_error(format!(
                "gate {gate:?} and up {up:?} must be [intermediate, hidden] and down {down:?} their transpose"
            )));
        }
        if *intermediate_seen.get_or_insert(gate[0]) != gate[0] {
            return Err(shapes_error(format!(
                "intermediate size {} differs from the other layers' {}",
                gate[0],
                intermediate_seen.unwrap_or_default()
            )));
        }
        layers.push(GatedMlp {
            gate: format!("{prefix}.mlp.gate_proj.weight"),
            up: format!("{prefix}.mlp.up_proj.weight"),
            down: format!("{prefix}.mlp.down_proj.weight"),
            intermediate: gate[0],
            prefix,
        });
    }
    Ok(layers)
}

/// Checks `config.json` names a gated-MLP family with this intermediate size.
pub fn check_gated_config(config: &serde_json::Value, intermediate: u64) -> Result<(), String> {
    let model_type = config["model_type"].as_str().unwrap_or_default();
    if !GATED_MLP_MODEL_TYPES.contains(&model_type) {
        return Err(format!(
            "config.json has model_type {model_type:?}; MLP channel pruning knows {}",
            GATED_MLP_MODEL_TYPES.join(", ")
        ));
    }
    match config["intermediate_size"].as_u64() {
        Some(size) if size == intermediate => Ok(()),
        other => Err(format!(
            "config.json has intermediate_size {other:?} but the weights have {intermediate}"
        )),
    }
}

/// `config.json` with a new `intermediate_size`, every other key as it was.
pub fn with_intermediate_size(mut config: serde_json::Value, size: u64) -> serde_json::Value {
    config["intermediate_size"] = size.into();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_layers_and_checks_their_shapes() {
        let model: Vec<(&str, Vec<u64>)> = vec![
            ("model.layers.0.mlp.gate_proj.weight", vec![8, 4]),
            ("model.layers.0.mlp.up_proj.weight", vec![8, 4]),
            ("model.layers.0.mlp.down_proj.weight", vec![4, 8]),
            ("model.layers.0.self_attn.q_proj.weight", vec![4, 4]),
        ];
        let found = gated_mlps(model.iter().map(|(n, s)| (*n, s.as_slice()))).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].prefix, "model.layers.0");
        assert_eq!(found[0].intermediate, 8);
        let mut broken = model.clone();
        broken[2].1 = vec![8, 4];
        let err = gated_mlps(broken.iter().map(|(n, s)| (*n, s.as_slice()))).unwrap_err();
        assert!(matches!(err, MlpError::Shapes { .. }), "{err}");
        assert_eq!(
            gated_mlps([("a.weight", &[2u64, 2][..])]).unwrap_err(),
            MlpError::None
        );
        let config = serde_json::json!({"model_type": "llama", "intermediate_size": 8});
        assert!(check_gated_config(&config, 8).is_ok());
        assert!(check_gated_config(&config, 6).is_err());
        assert!(check_gated_config(&serde_json::json!({"model_type": "bert"}), 8).is_err());
        assert_eq!(with_intermediate_size(config, 6)["intermediate_size"], 6);
    }
}
