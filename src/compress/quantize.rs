//! Integer quantization with the conventions of compressed-tensors (the format vLLM and
//! transformers load), so codes and scales can be written unchanged:
//! the observed range is widened to include zero; symmetric scale = max|x| / ((qmax − qmin) / 2),
//! asymmetric scale = (max − min) / (qmax − qmin) with zero-point round(qmin − min / scale) clamped
//! to the code range; a zero scale becomes f32::EPSILON; q = round_half_even(clamp(x / scale + zp));
//! x̂ = (q − zp) · scale. Reference: compressed-tensors `quantization/utils/helpers.py` and
//! `lifecycle/forward_helpers.py` (see shared/reference/formats.md §2.3).

use serde::{Deserialize, Serialize};

use crate::compress::measure::{Bf16, Codec, F32};
use crate::numeric::simd::multiversion;

/// How many values share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `n` consecutive values of a row.
    Group(usize),
}

/// The precision scales are stored in. The kernel rounds each scale to it (to nearest, ties to
/// even) before quantizing, so the stored codes and the stored scale reproduce the dequantized
/// values exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDtype {
    /// IEEE single precision.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl ScaleDtype {
    /// `scale` as stored: rounded to this precision, kept positive and finite (a scale that
    /// underflows becomes the smallest normal value, one that overflows the largest finite one).
    pub fn round(self, scale: f32) -> f32 {
        let (stored, smallest, largest) = match self {
            ScaleDtype::F32 => return scale,
            ScaleDtype::F16 => (
                half::f16::from_f32(scale).to_f32(),
                half::f16::MIN_POSITIVE.to_f32(),
                half::f16::MAX.to_f32(),
            ),
            ScaleDtype::Bf16 => (
                half::bf16::from_f32(scale).to_f32(),
                half::bf16::MIN_POSITIVE.to_f32(),
                half::bf16::MAX.to_f32(),
            ),
        };
        if stored == 0.0 {
            smallest
        } else if stored.is_infinite() {
            largest
        } else {
            stored
        }
    }
}

/// An integer scheme: bit width, symmetry, granularity and scale precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntScheme {
    /// 2 to 8.
    pub bits: u8,
    /// Zero-point fixed at 0 when true.
    pub symmetric: bool,
    /// Scale sharing.
    pub granularity: Granularity,
    /// Precision of the stored scales.
    pub scale_dtype: ScaleDtype,
}

/// Scale and zero-point of one group of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// Step between codes.
    pub scale: f32,
    /// The code that represents 0.
    pub zero_point: i32,
}

impl IntScheme {
    /// Smallest code.
    pub fn qmin(&self) -> i32 {
        -(1 << (self.bits - 1))
    }

    /// Largest code.
    pub fn qmax(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }

    /// Parameters for values observed in `[min, max]`.
    pub fn params(&self, min: f32, max: f32) -> QParams {
        let (qmin, qmax) = (self.qmin() as f32, self.qmax() as f32);
        let min = min.min(0.0);
        let max = max.max(0.0);
        let (mut scale, zero_point) = if self.symmetric {
            (max.abs().max(min.abs()) / ((qmax - qmin) / 2.0), 0)
        } else {
            ((max - min) / (qmax - qmin), 0)
        };
        if scale == 0.0 || !scale.is_finite() {
            scale = f32::EPSILON;
        }
        let scale = self.scale_dtype.round(scale);
        let zero_point = if self.symmetric {
            zero_point
        } else {
            (qmin - min / scale).clamp(qmin, qmax).round_ties_even() as i32
        };
        QParams { scale, zero_point }
    }

    /// The code for `x`.
    #[inline]
    pub fn quantize(&self, x: f32, p: QParams) -> i32 {
        let v = x / p.scale + p.zero_point as f32;
        v.clamp(self.qmin() as f32, self.qmax() as f32)
            .round_ties_even() as i32
    }

    /// The value a code stands for.
    #[inline]
    pub fn dequantize(q: i32, p: QParams) -> f32 {
        (q - p.zero_point) as f32 * p.scale
    }

    /// Values per scale along a row of `cols` values.
    pub fn group_len(&self, cols: usize) -> usize {
        match self.granularity {
            Granularity::Tensor | Granularity::Channel => cols,
            Granularity::Group(n) => n,
        }
    }

    /// Replaces each value of whole rows by its quantized-then-dequantized value. `tensor` gives
    /// the parameters for per-tensor granularity (from the whole tensor's range). Returns the
    /// parameters used, one per group in row-major order.
    pub fn fake_quantize_rows(
        &self,
        rows: &mut [f32],
        cols: usize,
        tensor: Option<QParams>,
    ) -> Vec<QParams> {
        let mut used = Vec::with_capacity(rows.len() / self.group_len(cols).max(1));
        fake_quantize_groups(*self, rows, cols, tensor, Some(&mut used));
        used
    }

    /// [`Self::fake_quantize_rows`] without collecting the parameters: the hot path's form,
    /// which allocates nothing.
    pub fn fake_quantize_rows_in_place(
        &self,
        rows: &mut [f32],
        cols: usize,
        tensor: Option<QParams>,
    ) {
        fake_quantize_groups(*self, rows, cols, tensor, None);
    }
}

multiversion! {
    fn fake_quantize_groups(
        scheme: IntScheme,
        rows: &mut [f32],
        cols: usize,
        tensor: Option<QParams>,
        used: Option<&mut Vec<QParams>>,
    ) {
        let mut used = used;
        let (qmin, qmax) = (scheme.qmin() as f32, scheme.qmax() as f32);
        for values in rows.chunks_mut(scheme.group_len(cols)) {
            let p = match (scheme.granularity, tensor) {
                (Granularity::Tensor, Some(p)) => p,
                _ => {
                    let (min, max) = min_max_lanes(values);
                    scheme.params(min, max)
                }
            };
            let (scale, zero_point) = (p.scale, p.zero_point as f32);
            for v in values.iter_mut() {
                *v = fake_value(*v, scale, zero_point, qmin, qmax);
            }
            if let Some(used) = used.as_deref_mut() {
                used.push(p);
            }
        }
    }
}

/// What `x` becomes, quantized with `scale` and `zero_point` to codes in [qmin, qmax] and
/// dequantized.
#[inline(always)]
pub(crate) fn fake_value(x: f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) -> f32 {
    (code(x, scale, zero_point, qmin, qmax) - zero_point) * scale
}

/// The integer code of `x` (as a float: it is whole and within `qmin..=qmax`).
#[inline(always)]
pub(crate) fn code(x: f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) -> f32 {
    // Selects rather than `clamp` keep the loop branch-free for the vectoriser.
    let x = x / scale + zero_point;
    let x = if x < qmin { qmin } else { x };
    let x = if x > qmax { qmax } else { x };
    x.round_ties_even()
}

multiversion! {
    /// [`min_max`] of BF16 values, read straight from their little-endian bytes.
    pub(crate) fn min_max_bf16(bytes: &[u8]) -> (f32, f32) {
        min_max_stored(bytes, 2, Bf16::read)
    }
}

multiversion! {
    /// [`min_max`] of F32 values, read straight from their little-endian bytes.
    pub(crate) fn min_max_f32(bytes: &[u8]) -> (f32, f32) {
        min_max_stored(bytes, 4, F32::read)
    }
}

multiversion! {
    /// Smallest and largest of the values (NaNs ignored; (+inf, -inf) for none).
    pub fn min_max(values: &[f32]) -> (f32, f32) {
        min_max_lanes(values)
    }
}

/// [`min_max`] in 32 independent lanes of compare-and-select: `if v < lo { v } else { lo }` is
/// exactly `minps(v, lo)`, and four vector registers per bound keep the compare latency hidden.
#[inline(always)]
fn min_max_lanes(values: &[f32]) -> (f32, f32) {
    min_max_stored(bytemuck::cast_slice(values), 4, |b| {
        f32::from_ne_bytes(b[..4].try_into().expect("four bytes"))
    })
}

/// [`min_max_lanes`] of values stored `width` bytes each in `bytes`, decoded by `read` (so a
/// BF16 group is measured straight from its bytes).
#[inline(always)]
pub(crate) fn min_max_stored(
    bytes: &[u8],
    width: usize,
    read: impl Fn(&[u8]) -> f32,
) -> (f32, f32) {
    const LANES: usize = 32;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut chunks = bytes.chunks_exact(LANES * width);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let v = read(&chunk[width * i..]);
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
        }
    }
    for value in chunks.remainder().chunks_exact(width) {
        let v = read(value);
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    // Fold 32 lanes to 8 in vector registers, then 8 to 1 (NaN never reaches here: tensors
    // holding one are refused).
    let mut lo8 = [f32::INFINITY; 8];
    let mut hi8 = [f32::NEG_INFINITY; 8];
    for j in 0..LANES / 8 {
        for i in 0..8 {
            let (l, h) = (lo[8 * j + i], hi[8 * j + i]);
            lo8[i] = if l < lo8[i] { l } else { lo8[i] };
            hi8[i] = if h > hi8[i] { h } else { hi8[i] };
        }
    }
    (
        lo8.iter()
            .fold(f32::INFINITY, |a, &b| if b < a { b } else { a }),
        hi8.iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a }),
    )
}

/// An integer scheme with f32 scales, for tests.
#[cfg(test)]
pub(crate) fn scheme(bits: u8, symmetric: bool, granularity: Granularity) -> IntScheme {
    IntScheme {
        bits,
        symmetric,
        granularity,
        scale_dtype: ScaleDtype::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar f64 reference of the convention, written independently of the kernel.
    fn reference(values: &[f64], bits: u8, symmetric: bool) -> Vec<f64> {
        let qmin = -(2f64.powi(bits as i32 - 1));
        let qmax = 2f64.powi(bits as i32 - 1) - 1.0;
        let lo = values.iter().cloned().fold(0.0, f64::min);
        let hi = values.iter().cloned().fold(0.0, f64::max);
        let (scale, zp) = if symmetric {
            (lo.abs().max(hi.abs()) / ((qmax - qmin) / 2.0), 0.0)
        } else {
            let s = (hi - lo) / (qmax - qmin);
            (s, (qmin - lo / s).clamp(qmin, qmax).round_ties_even())
        };
        values
            .iter()
            .map(|x| ((x / scale + zp).clamp(qmin, qmax).round_ties_even() - zp) * scale)
            .collect()
    }

    #[test]
    fn int8_symmetric_divides_the_range_by_127_5() {
        let s = scheme(8, true, Granularity::Channel);
        let p = s.params(-1.0, 0.5);
        assert_eq!(p.zero_point, 0);
        assert!((p.scale - 1.0 / 127.5).abs() < 1e-9);
        assert_eq!(s.quantize(1.0, p), 127, "clamped at qmax");
        assert_eq!(s.quantize(-1.1, p), -128, "clamped at qmin");
        let p4 = scheme(4, true, Granularity::Channel).params(-3.0, 1.0);
        assert!((p4.scale - 3.0 / 7.5).abs() < 1e-7);
    }

    #[test]
    fn ties_round_to_even_codes() {
        let s = scheme(8, true, Granularity::Tensor);
        let p = QParams {
            scale: 1.0,
            zero_point: 0,
        };
        assert_eq!(s.quantize(2.5, p), 2);
        assert_eq!(s.quantize(3.5, p), 4);
        assert_eq!(s.quantize(-2.5, p), -2);
    }

    #[test]
    fn zero_stays_exactly_zero_in_every_scheme() {
        for symmetric in [true, false] {
            for bits in [2, 3, 4, 8] {
                let s = scheme(bits, symmetric, Granularity::Channel);
                let mut row = vec![0.3f32, -0.7, 0.0, 1.9, 0.0, -0.01];
                s.fake_quantize_rows(&mut row, 6, None);
                assert_eq!(row[2], 0.0);
                assert_eq!(row[4], 0.0);
            }
        }
    }

    #[test]
    fn all_zero_groups_get_an_epsilon_scale_not_nan() {
        let s = scheme(4, false, Granularity::Group(4));
        let mut row = vec![0f32; 8];
        let used = s.fake_quantize_rows(&mut row, 8, None);
        assert!(used.iter().all(|p| p.scale == f32::EPSILON));
        assert!(row.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn kernel_matches_the_f64_reference_per_group() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20001) as f32 / 10000.0 - 1.0
        };
        for bits in 2..=8u8 {
            for symmetric in [true, false] {
                let cols = 64;
                let group = 16;
                let values: Vec<f32> = (0..cols * 3).map(|_| next()).collect();
                let mut got = values.clone();
                scheme(bits, symmetric, Granularity::Group(group))
                    .fake_quantize_rows(&mut got, cols, None);
                for (g, chunk) in got.chunks(group).zip(values.chunks(group)) {
                    let want = reference(
                        &chunk.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                        bits,
                        symmetric,
                    );
                    let (lo, hi) = min_max(chunk);
                    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                    let range = if symmetric {
                        2.0 * lo.abs().max(hi.abs())
                    } else {
                        hi - lo
                    };
                    let step = range / (2f32.powi(bits as i32) - 1.0);
                    for (a, b) in g.iter().zip(&want) {
                        // f32 versus f64 arithmetic may flip a code sitting on a rounding boundary.
                        assert!(
                            (f64::from(*a) - b).abs() <= f64::from(step) * 1.001 + 1e-6,
                            "bits {bits} sym {symmetric}: {a} vs {b}"
                        );
                    }
                    let exact = g
                        .iter()
                        .zip(&want)
                        .filter(|(a, b)| (f64::from(**a) - **b).abs() < 1e-5)
                        .count();
                    assert!(
                        exact >= group - 1,
                        "bits {bits} sym {symmetric}: only {exact} of {group} match exactly"
                    );
                }
            }
        }
    }

    #[test]
    fn scales_are_rounded_to_their_stored_precision_before_quantizing() {
        for (dtype, ulp_bits) in [(ScaleDtype::F16, 10), (ScaleDtype::Bf16, 7)] {
            let s = IntScheme {
                scale_dtype: dtype,
                ..scheme(8, false, Granularity::Channel)
            };
            let p = s.params(-0.3, 0.71);
            let exact = (0.71f64 + 0.3) / 255.0;
            assert!(
                (f64::from(p.scale) - exact).abs() <= exact * 2f64.powi(-ulp_bits),
                "{dtype:?}: {} vs {exact}",
                p.scale
            );
            match dtype {
                ScaleDtype::F16 => assert_eq!(half::f16::from_f32(p.scale).to_f32(), p.scale),
                _ => assert_eq!(half::bf16::from_f32(p.scale).to_f32(), p.scale),
            }
            // The values are codes times the stored scale, exactly.
            let mut row = vec![-0.3f32, 0.1, 0.5, 0.71];
            s.fake_quantize_rows(&mut row, 4, None);
            for v in row {
                let code = v / p.scale + p.zero_point as f32;
                assert_eq!(code, code.round(), "{dtype:?}: {v} is not on the grid");
            }
        }
        assert_eq!(
            ScaleDtype::F16.round(1e-9),
            half::f16::MIN_POSITIVE.to_f32()
        );
        assert_eq!(ScaleDtype::F16.round(1e9), half::f16::MAX.to_f32());
    }

    #[test]
    fn min_max_matches_a_plain_fold_at_every_length() {
        let mut state = 5u64;
        let data: Vec<f32> = (0..100)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 1000) as f32 - 500.0
            })
            .collect();
        for len in 0..data.len() {
            let values = &data[..len];
            let want = values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            assert_eq!(min_max(values), want, "length {len}");
        }
    }
}
