//! Conversions between the float encodings of stored tensors and f32 working values,
//! chunk by chunk over little-endian bytes that may be unaligned (straight from an mmap).

use crate::numeric::Dtype;
use crate::numeric::simd::multiversion;

/// Decodes `out.len()` elements of `dtype` from `bytes` into f32.
pub fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => decode_f32(bytes, out),
        Dtype::BF16 => decode_bf16(bytes, out),
        Dtype::F16 => decode_f16(bytes, out),
        other => panic!("cannot decode {other} as floats"),
    }
}

/// Encodes f32 values as `dtype` (round to nearest even) into `out`.
pub fn encode(dtype: Dtype, values: &[f32], out: &mut [u8]) {
    let mut copy = values.to_vec();
    encode_rounding(dtype, &mut copy, out);
}

/// Encodes f32 values as `dtype` (round to nearest even) into `out`, and replaces each value by
/// the one actually stored, so metrics can measure what a reader will see.
pub fn encode_rounding(dtype: Dtype, values: &mut [f32], out: &mut [u8]) {
    match dtype {
        Dtype::F32 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::BF16 => encode_bf16(values, out),
        Dtype::F16 => encode_f16(values, out),
        other => panic!("cannot encode floats as {other}"),
    }
}

multiversion! {
    fn decode_f32(bytes: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

multiversion! {
    fn decode_bf16(bytes: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
        }
    }
}

fn decode_f16(bytes: &[u8], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    match bytemuck::try_cast_slice::<u8, half::f16>(&bytes[..out.len() * 2]) {
        // Uses F16C when the CPU has it.
        Ok(halves) => halves.convert_to_f32_slice(out),
        Err(_) => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
    }
}

/// BF16 bits of `v`, round to nearest even; NaN stays a (quiet) NaN.
#[inline(always)]
pub(crate) fn bf16_bits(v: f32) -> u16 {
    (bf16_rounded(v).to_bits() >> 16) as u16
}

/// `v` rounded to BF16 (nearest, ties to even; NaN made quiet), as the f32 it stands for.
/// Rounding in 32-bit lanes and narrowing only to store keeps the vector loops free of
/// pack-and-widen round trips.
#[inline(always)]
pub(crate) fn bf16_rounded(v: f32) -> f32 {
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    let quiet_nan = (bits & 0xFFFF_0000) | 0x0040_0000;
    // A mask rather than `if`: the vectoriser keeps a select of integers in lanes.
    let nan = u32::from(v.is_nan()).wrapping_neg();
    f32::from_bits((quiet_nan & nan) | (rounded & !nan))
}

multiversion! {
    fn encode_bf16(values: &mut [f32], out: &mut [u8]) {
        for (v, o) in values.iter_mut().zip(out.chunks_exact_mut(2)) {
            let b = bf16_bits(*v);
            o.copy_from_slice(&b.to_le_bytes());
            *v = f32::from_bits(u32::from(b) << 16);
        }
    }
}

fn encode_f16(values: &mut [f32], out: &mut [u8]) {
    use half::slice::HalfFloatSliceExt;
    let out = &mut out[..values.len() * 2];
    match bytemuck::try_cast_slice_mut::<u8, half::f16>(out) {
        // Uses F16C when the CPU has it.
        Ok(halves) => {
            halves.convert_from_f32_slice(values);
            halves.convert_to_f32_slice(values);
        }
        Err(_) => {
            for (v, o) in values.iter_mut().zip(out.chunks_exact_mut(2)) {
                let h = half::f16::from_f32(*v);
                o.copy_from_slice(&h.to_bits().to_le_bytes());
                *v = h.to_f32();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::float_width;

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

    #[test]
    fn encoding_reports_the_stored_values_and_keeps_nan_a_nan() {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut values = vec![0.1f32, -3.3, f32::NAN, f32::INFINITY, 1e-30, -0.0, 7.0];
            let original = values.clone();
            let mut bytes = vec![0u8; values.len() * float_width(dtype)];
            encode_rounding(dtype, &mut values, &mut bytes);
            let mut back = vec![0f32; values.len()];
            decode(dtype, &bytes, &mut back);
            for ((v, b), o) in values.iter().zip(&back).zip(&original) {
                assert_eq!(
                    v.to_bits(),
                    b.to_bits(),
                    "{dtype}: {o} stored as {b}, reported {v}"
                );
            }
            assert!(back[2].is_nan(), "{dtype}: NaN survives");
            assert_eq!(back[3], f32::INFINITY);
            assert_eq!(back[6], 7.0);
        }
    }
}
