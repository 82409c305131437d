//! Q4_K's and Q5_K's scale search ([`super::scales_and_mins`]) written with AVX2 intrinsics,
//! one sub-block per lane. The portable function is its scalar twin and defines the result: the
//! same operations in the same order (no fused multiply-adds; `max`/`min` with the operand order
//! that reproduces the portable selects, NaN and signed zeros included), which the tests check
//! bit for bit. Written by hand because the vectoriser, given the portable loops, shuffled lanes
//! between register widths and ran slower than the search it replaced.

use std::arch::x86_64::*;

use super::{PerSubBlock, SUB_BLOCK, SUB_BLOCKS, SUPER_BLOCK, Search, Transposed};

#[inline]
#[target_feature(enable = "avx2")]
fn load(lanes: &PerSubBlock) -> __m256 {
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store(v: __m256) -> PerSubBlock {
    let mut lanes = [0f32; SUB_BLOCKS];
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes
}

/// `mask ? a : b`, lane by lane.
#[inline]
#[target_feature(enable = "avx2")]
fn select(mask: __m256, a: __m256, b: __m256) -> __m256 {
    _mm256_blendv_ps(b, a, mask)
}

/// [`super::level`] in eight lanes: `max(0, l)` is `0 > l ? 0 : l` and `min(nmax, l)` is
/// `nmax < l ? nmax : l`, the portable selects exactly.
#[inline]
#[target_feature(enable = "avx2")]
fn level(iscale: __m256, min: __m256, v: __m256, nmax: __m256) -> __m256 {
    let l = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        iscale,
        _mm256_sub_ps(v, min),
    ));
    _mm256_min_ps(nmax, _mm256_max_ps(_mm256_setzero_ps(), l))
}

/// The eight sub-blocks' searches, as [`super::scales_and_mins`].
#[target_feature(enable = "avx2")]
pub(super) fn scales_and_mins(
    x: &Transposed,
    weights: &Transposed,
    search: Search,
    codes: &mut [u8; SUPER_BLOCK],
) -> (PerSubBlock, PerSubBlock) {
    const RDELTA: f32 = 0.1;
    let Search { nmax, rmin, steps } = search;
    let nmax_f = nmax as f32;
    let nmax_v = _mm256_set1_ps(nmax_f);
    let zero = _mm256_setzero_ps();
    let xs: [__m256; SUB_BLOCK] = std::array::from_fn(|i| load(&x[i]));
    let ws: [__m256; SUB_BLOCK] = std::array::from_fn(|i| load(&weights[i]));
    let (mut min, mut max) = (xs[0], xs[0]);
    let mut sum_w = ws[0];
    let mut sum_x = _mm256_mul_ps(ws[0], xs[0]);
    for i in 1..SUB_BLOCK {
        // `v < min ? v : min` and `v > max ? v : max`.
        min = _mm256_min_ps(xs[i], min);
        max = _mm256_max_ps(xs[i], max);
        sum_w = _mm256_add_ps(sum_w, ws[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(ws[i], xs[i]));
    }
    let mut min = select(_mm256_cmp_ps::<_CMP_GT_OQ>(min, zero), zero, min);
    let flat = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
    let first_iscale = _mm256_div_ps(nmax_v, _mm256_sub_ps(max, min));
    let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), first_iscale);
    let mut best_error = zero;
    for i in 0..SUB_BLOCK {
        let l = level(first_iscale, min, xs[i], nmax_v);
        let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, l), min), xs[i]);
        best_error = _mm256_add_ps(best_error, _mm256_mul_ps(ws[i], _mm256_mul_ps(diff, diff)));
    }
    let (mut chosen_iscale, mut chosen_min) = (first_iscale, min);
    let mut trial = [zero; SUB_BLOCK];
    for step in 0..=steps {
        let numerator = _mm256_set1_ps(rmin + RDELTA * step as f32 + nmax_f);
        let iscale = _mm256_div_ps(numerator, _mm256_sub_ps(max, min));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
        for i in 0..SUB_BLOCK {
            let l = level(iscale, min, xs[i], nmax_v);
            trial[i] = l;
            let wl = _mm256_mul_ps(ws[i], l);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, l));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xs[i]));
        }
        let det = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        let fitted_scale = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)),
            det,
        );
        let fitted_min = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)),
            det,
        );
        let clamped = _mm256_cmp_ps::<_CMP_GT_OQ>(fitted_min, zero);
        let this_scale = select(clamped, _mm256_div_ps(sum_xl, sum_l2), fitted_scale);
        let this_min = select(clamped, zero, fitted_min);
        let mut error = zero;
        for i in 0..SUB_BLOCK {
            let diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, trial[i]), this_min),
                xs[i],
            );
            error = _mm256_add_ps(error, _mm256_mul_ps(ws[i], _mm256_mul_ps(diff, diff)));
        }
        let wins = _mm256_andnot_ps(
            flat,
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(det, zero),
                _mm256_cmp_ps::<_CMP_LT_OQ>(error, best_error),
            ),
        );
        best_error = select(wins, error, best_error);
        scale = select(wins, this_scale, scale);
        chosen_iscale = select(wins, iscale, chosen_iscale);
        chosen_min = select(wins, min, chosen_min);
        min = select(wins, this_min, min);
    }
    for i in 0..SUB_BLOCK {
        let l = select(flat, zero, level(chosen_iscale, chosen_min, xs[i], nmax_v));
        let mut ints = [0i32; SUB_BLOCKS];
        // SAFETY: `ints` holds eight i32.
        unsafe { _mm256_storeu_si256(ints.as_mut_ptr().cast(), _mm256_cvttps_epi32(l)) };
        for (j, &q) in ints.iter().enumerate() {
            codes[SUB_BLOCK * j + i] = q as u8;
        }
    }
    let scales = store(select(flat, zero, scale));
    // Negated by its sign bit, as `-min` is (0 − min would turn −0 into +0).
    (scales, store(_mm256_xor_ps(min, _mm256_set1_ps(-0.0))))
}
