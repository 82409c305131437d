//! Activations rounded as a quantized matmul rounds them before they meet GGUF blocks (ggml's
//! `vec_dot_type`: Q8_0 blocks of 32 with an f16 scale, or Q8_K blocks of 256 with an f32 one),
//! then widened back, so that a batch multiplied on the blocks' dequantized copy sees the
//! numbers the quantized matmul sees. One pass compiled for each SIMD level, bit for bit what
//! candle's `from_float` then `to_float` give (tested), where going through candle takes three
//! passes, a block buffer and a rounding library call per value. The same Q8_0 rounding also
//! yields the integer codes and scales themselves, for `integer_product`.

use candle_core::Tensor;
use candle_core::quantized::GgmlDType;

use crate::numeric::simd::multiversion;

/// The roundings done here; other activation types (Q8_1) go through candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    Q8_0,
    Q8K,
}

impl Rounding {
    pub fn of(kind: GgmlDType) -> Option<Rounding> {
        match kind {
            GgmlDType::Q8_0 => Some(Rounding::Q8_0),
            GgmlDType::Q8K => Some(Rounding::Q8K),
            _ => None,
        }
    }
}

/// `x` (f32, its last dimension a multiple of the block) with every block rounded.
pub fn round_tensor(x: &Tensor, rounding: Rounding) -> candle_core::Result<Tensor> {
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    round(&mut values, rounding);
    Tensor::from_vec(values, x.shape(), x.device())
}

/// Rounds `values` in blocks (a trailing partial block is left as it is: the quantized matmul
/// refuses such rows before this is reached).
pub fn round(values: &mut [f32], rounding: Rounding) {
    match rounding {
        Rounding::Q8_0 => round_q8_0(values),
        Rounding::Q8K => round_q8k(values),
    }
}

/// A Q8_0 block's rounding as ggml's `quantize_row_q8_0`: codes are x × `inverse` (the f32
/// scale's inverse, 0 for an all-zero block) rounded half away from zero, and they stand for
/// code × `stored` (the scale max |x| / 127 kept as f16).
#[inline(always)]
fn q8_0_scale(block: &[f32]) -> (f32, f32) {
    let amax = block.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let d = amax / 127.0;
    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
    (inverse, half::f16::from_f32(d).to_f32())
}

multiversion! {
    /// Q8_0 codes of every block of 32, stored + 128 as unsigned bytes (as AVX-512 VNNI takes
    /// them), with each block's f16 scale: what [`round`] gives, as integers.
    pub(crate) fn q8_0_codes(values: &[f32], codes: &mut [u8], scales: &mut [f32]) {
        for ((block, codes), scale) in values
            .chunks_exact(32)
            .zip(codes.chunks_exact_mut(32))
            .zip(scales.iter_mut())
        {
            let (inverse, stored) = q8_0_scale(block);
            *scale = stored;
            for (code, &x) in codes.iter_mut().zip(block) {
                *code = ((x * inverse).round().clamp(-128.0, 127.0) + 128.0) as u8;
            }
        }
    }
}

multiversion! {
    fn round_q8_0(values: &mut [f32]) {
        for block in values.chunks_exact_mut(32) {
            let (inverse, stored) = q8_0_scale(block);
            for x in block.iter_mut() {
                // As candle's integer codes: `as i8` saturates (within the block's range it
                // never has to) and has no negative zero (+ 0.0 turns -0 into 0).
                *x = ((*x * inverse).round().clamp(-128.0, 127.0) + 0.0) * stored;
            }
        }
    }
}

multiversion! {
    fn round_q8k(values: &mut [f32]) {
        for block in values.chunks_exact_mut(256) {
            // The value of largest magnitude, the first of ties, sign kept.
            let (mut amax, mut max) = (0f32, 0f32);
            for &x in block.iter() {
                if amax < x.abs() {
                    amax = x.abs();
                    max = x;
                }
            }
            if amax == 0.0 {
                block.fill(0.0);
                continue;
            }
            let inverse = -127.0 / max;
            let d = 1.0 / inverse;
            for x in block.iter_mut() {
                *x = ((inverse * *x).round().clamp(-128.0, 127.0) + 0.0) * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_core::quantized::QTensor;

    #[test]
    fn rounding_equals_candles_quantize_then_dequantize_bit_for_bit() {
        let mut rng = crate::numeric::SplitMix::new(9, 1);
        let mut values: Vec<f32> = (0..256 * 24)
            .map(|i| {
                let scale = [1e-3, 1.0, 40.0][i / 2048];
                (rng.next_unit() as f32 - 0.5) * scale
            })
            .collect();
        // A zero block, a block whose extreme is negative, exact halves, a lone value.
        values[..256].fill(0.0);
        values[256] = -9.0;
        for (i, v) in values[512..544].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.5;
        }
        values[800..1056].fill(0.0);
        values[900] = 3.0;
        for (kind, rounding) in [
            (GgmlDType::Q8_0, Rounding::Q8_0),
            (GgmlDType::Q8K, Rounding::Q8K),
        ] {
            let x = Tensor::from_vec(values.clone(), (24, 256), &Device::Cpu).unwrap();
            let expected = QTensor::quantize(&x, kind)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ours = round_tensor(&x, rounding)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{kind:?} value {i}: {a} vs {b}");
            }
            assert_ne!(ours, values, "{kind:?} rounded nothing");
        }
    }
}
