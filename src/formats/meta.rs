//! What planning and validation need to know of a stored tensor, whatever its file: its name,
//! element type and shape. Built from a model's inventory in the database (`store`) or from a
//! safetensors header (`pipeline`), read by recipe validation (`jobs`).

use crate::formats::safetensors::TensorInfo;
use crate::numeric::Dtype;

/// The facts about a tensor that validation needs.
#[derive(Debug, Clone)]
pub struct TensorMeta {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
}

impl TensorMeta {
    /// Length of a row: the product of all dimensions but the first (the whole tensor if 1-D).
    pub fn row_len(&self) -> u64 {
        if self.shape.len() <= 1 {
            self.shape.iter().product()
        } else {
            self.shape[1..].iter().product()
        }
    }
}

impl From<&TensorInfo> for TensorMeta {
    fn from(t: &TensorInfo) -> TensorMeta {
        TensorMeta {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        }
    }
}
