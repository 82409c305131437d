//! FP8 E4M3 ("e4m3fn": no infinities, NaN = S.1111.111, max 448) quantization with the
//! conventions of compressed-tensors: symmetric scale = absmax / 448 (per tensor or per output
//! row), values clamped to ±448 before the cast, so overflow never makes a NaN. The cast is
//! PyTorch's `fp8e4m3fn_from_fp32_value`: round to nearest, ties to even, subnormals down to
//! 2^-9 (shared/reference/formats.md §5).

use crate::numeric::simd::multiversion;

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// f32 bits of 480.0: at and above it PyTorch's cast gives NaN.
const OVERFLOW_BITS: u32 = 1087 << 20;
/// f32 bits of 2^-6, the smallest normal E4M3 value.
const MIN_NORMAL_BITS: u32 = 121 << 23;
/// 2^14: adding it to a value below 2^-6 rounds that value to a multiple of 2^-9 (its ulp), and
/// its low mantissa bits then hold the subnormal code.
const SUBNORMAL_MAGIC_BITS: u32 = 141 << 23;

/// The E4M3 byte for `x` (round to nearest even; NaN and |x| ≥ 480 give NaN).
#[inline(always)]
pub fn e4m3_from_f32(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let magnitude = bits & 0x7FFF_FFFF;
    let subnormal = (f32::from_bits(magnitude) + f32::from_bits(SUBNORMAL_MAGIC_BITS))
        .to_bits()
        .wrapping_sub(SUBNORMAL_MAGIC_BITS) as u8;
    let odd = (magnitude >> 20) & 1;
    // Rebias the exponent from 127 to 7, then round at bit 20.
    let normal = (magnitude
        .wrapping_sub((127 - 7) << 23)
        .wrapping_add(0x7FFFF + odd)
        >> 20) as u8;
    let code = if magnitude >= OVERFLOW_BITS {
        0x7F
    } else if magnitude < MIN_NORMAL_BITS {
        subnormal
    } else {
        normal
    };
    code | sign
}

/// The value of an E4M3 byte.
#[inline(always)]
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exponent = u32::from((b >> 3) & 0x0F);
    let mantissa = u32::from(b & 0x07);
    let magnitude = if exponent == 0 {
        // Subnormal: mantissa × 2^-9, exact in f32.
        mantissa as f32 * f32::from_bits((127 - 9) << 23)
    } else if exponent == 15 && mantissa == 7 {
        f32::NAN
    } else {
        f32::from_bits(((exponent + 127 - 7) << 23) | (mantissa << 20))
    };
    sign * magnitude
}

/// The scale of a group whose largest magnitude is `absmax` (a zero range gets f32::EPSILON so
/// the division stays finite).
pub fn scale_for(absmax: f32) -> f32 {
    let scale = absmax / E4M3_MAX;
    if scale == 0.0 || !scale.is_finite() {
        f32::EPSILON
    } else {
        scale
    }
}

/// The E4M3 byte stored for `x` with `scale` (clamped to ±448 first, so never NaN).
#[inline(always)]
pub fn code(x: f32, scale: f32) -> u8 {
    let x = x / scale;
    let x = if x < -E4M3_MAX { -E4M3_MAX } else { x };
    let x = if x > E4M3_MAX { E4M3_MAX } else { x };
    e4m3_from_f32(x)
}

/// What `x` becomes, FP8 E4M3 fake-quantized with `scale`.
#[inline(always)]
pub(crate) fn fake_value(x: f32, scale: f32) -> f32 {
    e4m3_to_f32(code(x, scale)) * scale
}

multiversion! {
    /// Replaces each value by its FP8 E4M3 fake-quantized value with `scale`.
    pub fn fake_quantize(values: &mut [f32], scale: f32) {
        for v in values.iter_mut() {
            *v = fake_value(*v, scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every E4M3 value by the format's definition, computed in f64.
    fn table() -> Vec<(u8, f64)> {
        (0u8..=255)
            .filter(|b| b & 0x7F != 0x7F)
            .map(|b| {
                let e = i32::from((b >> 3) & 15);
                let m = f64::from(b & 7);
                let v = if e == 0 {
                    m * 2f64.powi(-9)
                } else {
                    (1.0 + m / 8.0) * 2f64.powi(e - 7)
                };
                (b, if b & 0x80 != 0 { -v } else { v })
            })
            .collect()
    }

    #[test]
    fn decoding_matches_the_definition() {
        for (b, v) in table() {
            assert_eq!(f64::from(e4m3_to_f32(b)), v, "byte {b:#04x}");
        }
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
    }

    #[test]
    fn encoding_rounds_to_the_nearest_value_ties_to_even() {
        let values = table();
        let mut state = 17u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = ((state % 2_000_001) as f64 / 1e6 - 1.0)
                * 2f64.powi((state >> 40) as i32 % 20 - 10);
            let x = x as f32;
            if x.abs() > 448.0 {
                continue;
            }
            let got = e4m3_from_f32(x);
            // Nearest by the definition; ties to the even code (lowest bit clear).
            let xv = f64::from(x);
            let best = values
                .iter()
                .filter(|(b, _)| (b & 0x80 != 0) == x.is_sign_negative() || *b & 0x7F == 0)
                .min_by(|a, b| {
                    let (da, db) = ((a.1 - xv).abs(), (b.1 - xv).abs());
                    da.total_cmp(&db).then((a.0 & 1).cmp(&(b.0 & 1)))
                })
                .unwrap();
            assert_eq!(
                f64::from(e4m3_to_f32(got)),
                best.1,
                "{x} -> {got:#04x}, want {:#04x}",
                best.0
            );
        }
    }

    #[test]
    fn pytorch_edge_cases_hold() {
        assert_eq!(e4m3_from_f32(448.0), 0x7E);
        assert_eq!(
            e4m3_from_f32(464.0),
            0x7E,
            "the tie at 464 goes to the even 448"
        );
        assert_eq!(
            e4m3_from_f32(470.0),
            0x7F,
            "above 464 rounds into NaN, as PyTorch does"
        );
        assert_eq!(e4m3_from_f32(480.0), 0x7F);
        assert_eq!(e4m3_from_f32(f32::NAN) & 0x7F, 0x7F);
        assert_eq!(
            e4m3_from_f32(2f32.powi(-10)),
            0x00,
            "half the smallest subnormal ties to 0"
        );
        assert_eq!(e4m3_from_f32(1.5 * 2f32.powi(-10)), 0x01);
        assert_eq!(e4m3_from_f32(-0.0), 0x80);
        assert_eq!(e4m3_from_f32(-1.0), 0xB8);
    }

    #[test]
    fn fake_quantization_clamps_and_never_makes_nan() {
        let mut values = vec![1000.0f32, -1000.0, 3.0, 0.0, -0.001];
        fake_quantize(&mut values, 1.0);
        assert_eq!(values[0], 448.0);
        assert_eq!(values[1], -448.0);
        assert_eq!(values[2], 3.0);
        assert_eq!(values[3], 0.0);
        assert!(values.iter().all(|v| v.is_finite()));
        let scale = scale_for(896.0);
        assert_eq!(scale, 2.0);
    }
}
