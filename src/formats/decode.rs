//! What every reader of squeeze's artifacts shares: why reading failed ([`ArtifactError`]) and
//! how stored values of a dense dtype become f32 and round back to their dtype's precision.
//! A leaf of `formats`: the artifact reader and each format's decoder import it.

use crate::compress::fp8;
use crate::formats::safetensors::TensorInfo;
use crate::numeric::Dtype;
use crate::numeric::codec;

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one of an artifact file's tensors by name: its entry and its bytes.
pub(crate) type ReadPart<'a> = &'a dyn Fn(&str) -> Result<(TensorInfo, Vec<u8>), ArtifactError>;

pub(crate) fn bad(message: impl Into<String>) -> ArtifactError {
    ArtifactError::Format(message.into())
}

pub(crate) fn parse_dtype(name: &str) -> Result<Dtype, ArtifactError> {
    Dtype::parse(name).ok_or_else(|| bad(format!("unknown dtype {name}")))
}

/// Decodes `bytes` of a dense `dtype` into `out`, checking that they are exactly `out`'s length.
pub(crate) fn decode_dense(
    dtype: Dtype,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), ArtifactError> {
    let width = dtype.bits() / 8;
    if width == 0 || Some(bytes.len() as u64) != (out.len() as u64).checked_mul(width) {
        return Err(bad(format!(
            "{} bytes of {dtype} for {} values",
            bytes.len(),
            out.len()
        )));
    }
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => codec::decode(dtype, bytes, out),
        Dtype::F8_E4M3 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = fp8::e4m3_to_f32(b);
            }
        }
        Dtype::I8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = f32::from(b as i8);
            }
        }
        other => return Err(bad(format!("{other} values are not weights"))),
    }
    Ok(())
}

/// Rounds values to what `dtype` stores (a float dtype; others are left as they are).
pub(crate) fn round_to(dtype: Dtype, values: &mut [f32]) {
    if crate::numeric::is_float(dtype) {
        let mut bytes = vec![0u8; values.len() * crate::numeric::float_width(dtype)];
        codec::encode(dtype, values, &mut bytes);
        codec::decode(dtype, &bytes, values);
    }
}
