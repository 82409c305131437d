//! Conversions between the float encodings of stored tensors and f32 working values,
//! chunk by chunk over little-endian bytes that may be unaligned (straight from an mmap).

use crate::formats::safetensors::Dtype;

/// Whether squeeze can read and write tensors of this dtype as floating-point values.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Bytes per element for the float dtypes squeeze computes on.
pub fn float_width(dtype: Dtype) -> usize {
    match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => panic!("{other} is not a float dtype squeeze computes on"),
    }
}

/// Decodes `out.len()` elements of `dtype` from `bytes` into f32.
pub fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        other => panic!("cannot decode {other} as floats"),
    }
}

/// Encodes f32 values as `dtype` (round to nearest even) into `out`.
pub fn encode(dtype: Dtype, values: &[f32], out: &mut [u8]) {
    match dtype {
        Dtype::F32 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        other => panic!("cannot encode floats as {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_exact_for_representable_values() {
        let values = [0.0f32, -0.0, 1.0, -2.5, 0.15625, 65504.0, -1.0e-3];
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut bytes = vec![0u8; values.len() * float_width(dtype)];
            encode(dtype, &values, &mut bytes);
            let mut back = vec![0f32; values.len()];
            decode(dtype, &bytes, &mut back);
            for (v, b) in values.iter().zip(&back) {
                let tolerance = match dtype {
                    Dtype::F32 => 0.0,
                    Dtype::F16 => v.abs() * 1e-3,
                    _ => v.abs() * 4e-3,
                };
                assert!((v - b).abs() <= tolerance, "{dtype}: {v} -> {b}");
            }
        }
    }

    #[test]
    fn bf16_encoding_rounds_half_to_even() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even one (1.0).
        let mut bytes = [0u8; 2];
        encode(Dtype::BF16, &[1.0 + 2f32.powi(-8)], &mut bytes);
        assert_eq!(u16::from_le_bytes(bytes), 0x3F80);
        encode(Dtype::BF16, &[1.0 + 3.0 * 2f32.powi(-8)], &mut bytes);
        assert_eq!(u16::from_le_bytes(bytes), 0x3F82);
    }
}
