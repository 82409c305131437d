//! llama.cpp's K-quants Q4_K, Q5_K and Q6_K: super-blocks of 256 values whose sub-block scales
//! are themselves quantized. The search for each sub-block's scale follows the reference
//! quantizers (`quantize_row_q4_K_ref` and `quantize_row_q5_K_ref` with `make_qkx2_quants`,
//! `quantize_row_q6_K_ref` with `make_qx_quants` in ggml-quants.c) operation for operation in
//! f32, without fused multiply-adds, so results match a C build without FMA contraction; the
//! block layouts are in shared/reference/formats.md §3.2–3.3 (Q5_K is Q4_K's with a 32-byte
//! plane of fifth bits before the nibbles).

use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Values per super-block.
pub const SUPER_BLOCK: usize = 256;
/// Bytes of a Q4_K block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 of nibbles.
pub const Q4_K_BYTES: usize = 144;
/// Bytes of a Q5_K block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 32 bytes of
/// fifth bits, 128 of nibbles.
pub const Q5_K_BYTES: usize = 176;
/// Bytes of a Q6_K block: 128 low nibbles, 64 bytes of high bits, 16 i8 scales, f16 d.
pub const Q6_K_BYTES: usize = 210;

/// Below this magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round half to even, as ggml's `nearest_int` does for |x| ≤ 4194303.
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

#[inline(always)]
fn f16_bits(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

#[inline(always)]
fn f16_at(bytes: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32()
}

/// How `make_qkx2_quants` searches: candidate inverse scales (nmax + rmin + 0.1·step) / range
/// for step 0..=steps.
#[derive(Clone, Copy)]
struct Search {
    nmax: i32,
    rmin: f32,
    steps: i32,
}

/// Q4_K's search: codes 0..=15, rmin −1, 20 steps.
const Q4_K_SEARCH: Search = Search {
    nmax: 15,
    rmin: -1.0,
    steps: 20,
};
/// Q5_K's search: codes 0..=31, rmin −0.5, 15 steps.
const Q5_K_SEARCH: Search = Search {
    nmax: 31,
    rmin: -0.5,
    steps: 15,
};

/// What `make_qkx2_quants` reads off a sub-block before its search: the smallest value (at
/// most 0), the largest, and the weights' sum and weighted sum, folded in the reference's order.
#[cfg(test)]
struct Range {
    min: f32,
    max: f32,
    sum_w: f32,
    sum_x: f32,
}

#[cfg(test)]
impl Range {
    fn of(x: &[f32], weights: &[f32]) -> Range {
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..x.len() {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = weights[i];
            sum_w += w;
            sum_x += w * x[i];
        }
        Range {
            min: if min > 0.0 { 0.0 } else { min },
            max,
            sum_w,
            sum_x,
        }
    }
}

/// Values that share a scale and minimum in Q4_K and Q5_K.
const SUB_BLOCK: usize = 32;
/// Sub-blocks per super-block, searched side by side, one per lane.
const SUB_BLOCKS: usize = SUPER_BLOCK / SUB_BLOCK;
/// One f32 per sub-block of a super-block.
type PerSubBlock = [f32; SUB_BLOCKS];
/// A super-block's values (or weights) transposed: `[i][j]` is value `i` of sub-block `j`.
type Transposed = [PerSubBlock; SUB_BLOCK];

/// The code of `v` for inverse scale `iscale` from `min`: nearest, clamped to 0..=nmax.
#[inline(always)]
fn level(iscale: f32, min: f32, v: f32, nmax: f32) -> f32 {
    let l = (iscale * (v - min)).round_ties_even();
    // Two selects rather than one branching chain, which the vectorizer left scalar; the same
    // result for every input, NaN included.
    let l = if l < 0.0 { 0.0 } else { l };
    if l > nmax { nmax } else { l }
}

/// Applies `f` lane by lane.
#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> PerSubBlock {
    std::array::from_fn(f)
}

/// [`scales_and_mins`] with AVX2 where the CPU has it.
#[inline(always)]
fn search_scales(
    x: &Transposed,
    weights: &Transposed,
    search: Search,
    codes: &mut [u8; SUPER_BLOCK],
) -> (PerSubBlock, PerSubBlock) {
    #[cfg(target_arch = "x86_64")]
    if crate::numeric::simd::level() >= crate::numeric::simd::Level::Avx2 {
        // SAFETY: `level` is at least Avx2 only when the CPU has AVX2.
        return unsafe { avx2::scales_and_mins(x, weights, search, codes) };
    }
    scales_and_mins(x, weights, search, codes)
}

/// For each of a super-block's eight sub-blocks, a scale and a (non-positive) minimum with codes
/// 0..=nmax minimising the weighted squared error over the search's candidate scales
/// (`make_qkx2_quants`, rdelta 0.1). Writes the codes into `codes` (sub-block by sub-block);
/// returns the scales and the negated minimums.
///
/// Each lane runs one sub-block's search exactly as the reference does, candidate after
/// candidate in its order, with its operations (no fused multiply-adds) and comparisons: the
/// minimum a winner moves is the one the lane's next candidate is measured from. So the result
/// is the reference's (`scale_and_min_reference`, which the tests compare), with the eight
/// searches in the lanes of one vector and no candidate measured twice. (An earlier layout put
/// the candidates of one sub-block in the lanes; each winner that moved the minimum sent the
/// candidates after it round again, 3.7 passes and 72 candidate measurements per sub-block
/// rather than 22.)
#[inline(always)]
fn scales_and_mins(
    x: &Transposed,
    weights: &Transposed,
    search: Search,
    codes: &mut [u8; SUPER_BLOCK],
) -> (PerSubBlock, PerSubBlock) {
    const RDELTA: f32 = 0.1;
    let Search { nmax, rmin, steps } = search;
    let nmax_f = nmax as f32;
    // The sub-blocks' ranges and sums, folded in the reference's order (`Range::of`).
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = lanes(|j| weights[0][j] * x[0][j]);
    for i in 1..SUB_BLOCK {
        for j in 0..SUB_BLOCKS {
            let v = x[i][j];
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            let w = weights[i][j];
            sum_w[j] += w;
            sum_x[j] += w * v;
        }
    }
    let mut min = lanes(|j| if min[j] > 0.0 { 0.0 } else { min[j] });
    let flat: [bool; SUB_BLOCKS] = std::array::from_fn(|j| max[j] == min[j]);
    let first_iscale = lanes(|j| nmax_f / (max[j] - min[j]));
    let mut scale = lanes(|j| 1.0 / first_iscale[j]);
    let mut best_error = [0f32; SUB_BLOCKS];
    for i in 0..SUB_BLOCK {
        for j in 0..SUB_BLOCKS {
            let l = level(first_iscale[j], min[j], x[i][j], nmax_f);
            let diff = scale[j] * l + min[j] - x[i][j];
            best_error[j] += weights[i][j] * (diff * diff);
        }
    }
    // Each lane's winning inverse scale and the minimum its codes were measured from.
    let (mut chosen_iscale, mut chosen_min) = (first_iscale, min);
    let mut trial = [[0f32; SUB_BLOCKS]; SUB_BLOCK];
    for step in 0..=steps {
        let iscale = lanes(|j| (rmin + RDELTA * step as f32 + nmax_f) / (max[j] - min[j]));
        let (mut sum_l, mut sum_l2, mut sum_xl) =
            ([0f32; SUB_BLOCKS], [0f32; SUB_BLOCKS], [0f32; SUB_BLOCKS]);
        for i in 0..SUB_BLOCK {
            for j in 0..SUB_BLOCKS {
                let (w, v) = (weights[i][j], x[i][j]);
                let l = level(iscale[j], min[j], v, nmax_f);
                trial[i][j] = l;
                sum_l[j] += w * l;
                sum_l2[j] += w * l * l;
                sum_xl[j] += w * l * v;
            }
        }
        let det = lanes(|j| sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j]);
        let fitted_scale = lanes(|j| (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / det[j]);
        let fitted_min = lanes(|j| (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / det[j]);
        let this_scale = lanes(|j| {
            if fitted_min[j] > 0.0 {
                sum_xl[j] / sum_l2[j]
            } else {
                fitted_scale[j]
            }
        });
        let this_min = lanes(|j| {
            if fitted_min[j] > 0.0 {
                0.0
            } else {
                fitted_min[j]
            }
        });
        let mut error = [0f32; SUB_BLOCKS];
        for i in 0..SUB_BLOCK {
            for j in 0..SUB_BLOCKS {
                let diff = this_scale[j] * trial[i][j] + this_min[j] - x[i][j];
                error[j] += weights[i][j] * (diff * diff);
            }
        }
        for j in 0..SUB_BLOCKS {
            let wins = !flat[j] && det[j] > 0.0 && error[j] < best_error[j];
            best_error[j] = if wins { error[j] } else { best_error[j] };
            scale[j] = if wins { this_scale[j] } else { scale[j] };
            chosen_iscale[j] = if wins { iscale[j] } else { chosen_iscale[j] };
            chosen_min[j] = if wins { min[j] } else { chosen_min[j] };
            min[j] = if wins { this_min[j] } else { min[j] };
        }
    }
    for (j, sub) in codes.chunks_exact_mut(SUB_BLOCK).enumerate() {
        for (i, q) in sub.iter_mut().enumerate() {
            *q = match flat[j] {
                true => 0,
                false => level(chosen_iscale[j], chosen_min[j], x[i][j], nmax_f) as u8,
            };
        }
    }
    let scales = lanes(|j| if flat[j] { 0.0 } else { scale[j] });
    (scales, lanes(|j| -min[j]))
}

#[cfg(test)]
/// One sub-block's search candidate after candidate, as `make_qkx2_quants` runs: the reference
/// [`scales_and_mins`] is checked against.
fn scale_and_min_reference(
    x: &[f32],
    weights: &[f32],
    search: Search,
    codes: &mut [u8],
) -> (f32, f32) {
    const RDELTA: f32 = 0.1;
    let Search { nmax, rmin, steps } = search;
    let n = x.len();
    assert!(
        n <= SUB_BLOCK,
        "K-quant sub-blocks hold at most {SUB_BLOCK} values"
    );
    let Range {
        mut min,
        max,
        sum_w,
        sum_x,
    } = Range::of(x, weights);
    if max == min {
        codes.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        codes[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..n];
    for step in 0..=steps {
        iscale = (rmin + RDELTA * step as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                error += weights[i] * (diff * diff);
            }
            if error < best_error {
                codes.copy_from_slice(trial);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Packs sub-block `j`'s 6-bit scale and min into the 12 bytes (which start zeroed): the first
/// four pairs whole, the last four split into low nibbles and top bits of the first eight bytes.
#[inline(always)]
fn pack_scale_min_k4(j: usize, scale: u8, min: u8, packed: &mut [u8]) {
    if j < 4 {
        packed[j] = scale;
        packed[j + 4] = min;
    } else {
        packed[j + 4] = (scale & 0x0F) | ((min & 0x0F) << 4);
        packed[j - 4] |= (scale >> 4) << 6;
        packed[j] |= (min >> 4) << 6;
    }
}

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes (`get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Quantizes 256 values into a Q4_K block.
#[inline(always)]
pub fn quantize_q4_k(x: &[f32], out: &mut [u8]) {
    let codes = scaled_codes(x, Q4_K_SEARCH, &mut out[..16]);
    let qs = &mut out[16..Q4_K_BYTES];
    for (chunk, q) in codes.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = chunk[l] | (chunk[l + 32] << 4);
        }
    }
}

/// Quantizes 256 values into a Q5_K block: Q4_K's scales with codes 0..=31, the fifth bit of
/// each in a plane where bit 2c of byte l belongs to value 64c + l and bit 2c+1 to 64c + 32 + l.
#[inline(always)]
pub fn quantize_q5_k(x: &[f32], out: &mut [u8]) {
    let codes = scaled_codes(x, Q5_K_SEARCH, &mut out[..16]);
    let (high, low) = out[16..Q5_K_BYTES].split_at_mut(32);
    high.fill(0);
    for (c, (chunk, q)) in codes
        .chunks_exact(64)
        .zip(low.chunks_exact_mut(32))
        .enumerate()
    {
        for l in 0..32 {
            let (a, b) = (chunk[l], chunk[l + 32]);
            high[l] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
            q[l] = (a & 0x0F) | ((b & 0x0F) << 4);
        }
    }
}

/// The shared part of Q4_K and Q5_K: per sub-block of 32 a scale and a min by `search`, both
/// quantized to 6 bits of the super-block's largest and written with d and dmin into `head`
/// (16 bytes); returns each value's code under the stored scales.
#[inline(always)]
fn scaled_codes(x: &[f32], search: Search, head: &mut [u8]) -> [u8; SUPER_BLOCK] {
    debug_assert_eq!(x.len(), SUPER_BLOCK);
    let nmax = search.nmax;
    let mut xt: Transposed = [[0f32; SUB_BLOCKS]; SUB_BLOCK];
    for (j, sub) in x.chunks_exact(SUB_BLOCK).enumerate() {
        for (i, &v) in sub.iter().enumerate() {
            xt[i][j] = v;
        }
    }
    // The reference's weights: each sub-block's RMS plus the value's magnitude.
    let mut sum_x2 = [0f32; SUB_BLOCKS];
    for row in &xt {
        for j in 0..SUB_BLOCKS {
            sum_x2[j] += row[j] * row[j];
        }
    }
    let av_x = lanes(|j| (sum_x2[j] / 32.0).sqrt());
    let weights: Transposed = std::array::from_fn(|i| lanes(|j| av_x[j] + xt[i][j].abs()));
    let mut codes = [0u8; SUPER_BLOCK];
    let (scales, mins) = search_scales(&xt, &weights, search, &mut codes);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..SUB_BLOCKS {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut head[4..16];
    packed.fill(0);
    for j in 0..8 {
        // The reference stores nearest_int into a u8 before capping at 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        pack_scale_min_k4(j, ls, lm, packed);
    }
    head[0..2].copy_from_slice(&f16_bits(max_scale / 63.0));
    head[2..4].copy_from_slice(&f16_bits(max_min / 63.0));
    let (d_all, dmin_all) = (f16_at(&head[0..2]), f16_at(&head[2..4]));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &head[4..16]);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        // `nearest_int(..).clamp(0, nmax)` in f32 selects, which vectorise (NaN and the
        // saturated ends give the same codes).
        let nmax_f = nmax as f32;
        for i in 32 * j..32 * (j + 1) {
            let q = ((x[i] + dm) / d).round_ties_even();
            let q = if q < 0.0 { 0.0 } else { q };
            codes[i] = if q > nmax_f { nmax_f } else { q } as u8;
        }
    }
    codes
}

/// Decodes a Q4_K block into 256 values.
#[inline(always)]
pub fn dequantize_q4_k(block: &[u8], out: &mut [f32]) {
    dequantize_scaled(block, &block[16..Q4_K_BYTES], None, out);
}

/// Decodes a Q5_K block into 256 values.
#[inline(always)]
pub fn dequantize_q5_k(block: &[u8], out: &mut [f32]) {
    dequantize_scaled(block, &block[48..Q5_K_BYTES], Some(&block[16..48]), out);
}

/// The shared decode of Q4_K and Q5_K: d and dmin, 6-bit scales and mins per sub-block of 32,
/// nibbles in 32-byte chunks of two sub-blocks each, and for Q5_K a plane of fifth bits
/// (bit 2c of byte l for value 64c + l, bit 2c+1 for value 64c + 32 + l).
#[inline(always)]
fn dequantize_scaled(block: &[u8], nibbles: &[u8], fifth: Option<&[u8]>, out: &mut [f32]) {
    let (d, dmin) = (f16_at(&block[0..2]), f16_at(&block[2..4]));
    let scales = &block[4..16];
    for (c, (q, y)) in nibbles
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let (high_a, high_b) = match fifth {
                Some(h) => (
                    ((h[l] >> (2 * c)) & 1) << 4,
                    ((h[l] >> (2 * c + 1)) & 1) << 4,
                ),
                None => (0, 0),
            };
            y[l] = d1 * f32::from((q[l] & 0x0F) | high_a) - min1;
            y[l + 32] = d2 * f32::from((q[l] >> 4) | high_b) - min2;
        }
    }
}

/// The value of largest magnitude (the first on ties) and that magnitude, as ggml scans for
/// them (Q4_0 and Q5_0 blocks, Q6_K sub-blocks).
#[inline(always)]
pub(crate) fn largest_magnitude(x: &[f32]) -> (f32, f32) {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// A signed scale for 16 values with codes −nmax..nmax−1 stored as code + nmax, chosen among 19
/// candidates by the x²-weighted fit (`make_qx_quants` with rmse_type 1). The candidates are
/// fitted side by side, one per lane, and picked in the reference's order. (Unlike Q4_K's
/// search, no candidate here depends on an earlier winner.)
#[inline(always)]
fn signed_scale(x: &[f32], nmax: i32, codes: &mut [i8]) -> f32 {
    let (max, amax) = largest_magnitude(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let code = |iscale: f32, v: f32| {
        let l = (iscale * v).round_ties_even();
        if l < -nmax_f {
            -nmax_f
        } else if l > nmax_f - 1.0 {
            nmax_f - 1.0
        } else {
            l
        }
    };
    // Lane 0 is the first guess; then the steps −9..=9 without 0, in the reference's order;
    // three vectors of eight.
    const LANES: usize = 24;
    let mut iscales = [-nmax_f / max; LANES];
    for (lane, step) in (-9..=9).filter(|&s| s != 0).enumerate() {
        iscales[lane + 1] = -(nmax_f + 0.1 * step as f32) / max;
    }
    let (mut sumlx, mut suml2) = ([0f32; LANES], [0f32; LANES]);
    for &v in x {
        let w = v * v;
        for c in 0..LANES {
            let l = code(iscales[c], v);
            sumlx[c] += w * v * l;
            suml2[c] += w * l * l;
        }
    }
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    let mut chosen = iscales[0];
    for c in 1..19 {
        if suml2[c] > 0.0 && sumlx[c] * sumlx[c] > best * suml2[c] {
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
            chosen = iscales[c];
        }
    }
    for (q, &v) in codes.iter_mut().zip(x) {
        *q = (code(chosen, v) + nmax_f) as i8;
    }
    scale
}

#[cfg(test)]
/// [`signed_scale`] one candidate after another, as `make_qx_quants` runs: the reference the
/// candidate lanes are checked against.
fn signed_scale_reference(x: &[f32], nmax: i32, codes: &mut [i8]) -> f32 {
    let (max, amax) = largest_magnitude(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let fit = |iscale: f32| -> (f32, f32) {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let write = |iscale: f32, codes: &mut [i8]| {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as i8;
        }
    };
    let iscale = -nmax_f / max;
    write(iscale, codes);
    let (sumlx, suml2) = fit(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = -(nmax_f + 0.1 * step as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            write(iscale, codes);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes 256 values into a Q6_K block.
#[inline(always)]
pub fn quantize_q6_k(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), SUPER_BLOCK);
    let mut codes = [0i8; SUPER_BLOCK];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = signed_scale(
            &x[16 * ib..16 * (ib + 1)],
            32,
            &mut codes[16 * ib..16 * (ib + 1)],
        );
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = *scale;
        }
    }
    out[..Q6_K_BYTES].fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    out[208..210].copy_from_slice(&f16_bits(1.0 / iscale));
    let d_all = f16_at(&out[208..210]);
    for (ib, &scale) in scales.iter().enumerate() {
        out[192 + ib] = nearest_int(iscale * scale).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * f32::from(out[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        // `nearest_int(..).clamp(-32, 31) + 32` in f32 selects, which vectorise; NaN becomes
        // 0 + 32 as there.
        for i in 16 * j..16 * (j + 1) {
            let q = (x[i] / d).round_ties_even();
            let q = if q.is_nan() { 0.0 } else { q };
            let q = if q < -32.0 { -32.0 } else { q };
            codes[i] = (if q > 31.0 { 31.0 } else { q } + 32.0) as i8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let l_base = half * 128;
        let ql = &mut ql[64 * half..64 * (half + 1)];
        let qh = &mut qh[32 * half..32 * (half + 1)];
        for l in 0..32 {
            let q = |k: usize| codes[l_base + l + 32 * k] as u8;
            ql[l] = (q(0) & 0x0F) | ((q(2) & 0x0F) << 4);
            ql[l + 32] = (q(1) & 0x0F) | ((q(3) & 0x0F) << 4);
            qh[l] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

/// Decodes a Q6_K block into 256 values.
#[inline(always)]
pub fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let d = f16_at(&block[208..210]);
    for half in 0..2 {
        let ql = &block[64 * half..64 * (half + 1)];
        let qh = &block[128 + 32 * half..128 + 32 * (half + 1)];
        let sc = &block[192 + 8 * half..192 + 8 * (half + 1)];
        let y = &mut out[128 * half..128 * (half + 1)];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * f32::from(q1);
            y[l + 32] = s(2) * f32::from(q2);
            y[l + 64] = s(4) * f32::from(q3);
            y[l + 96] = s(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed;
        (0..SUPER_BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 20_001) as f32 / 10_000.0 - 1.0) * scale
            })
            .collect()
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum SuperBlock {
        Q4,
        Q5,
        Q6,
    }

    fn round_trip(x: &[f32], kind: SuperBlock) -> Vec<f32> {
        let mut block = [0u8; Q6_K_BYTES];
        let mut out = vec![0f32; SUPER_BLOCK];
        match kind {
            SuperBlock::Q6 => {
                quantize_q6_k(x, &mut block);
                dequantize_q6_k(&block, &mut out);
            }
            SuperBlock::Q5 => {
                quantize_q5_k(x, &mut block[..Q5_K_BYTES]);
                dequantize_q5_k(&block[..Q5_K_BYTES], &mut out);
            }
            SuperBlock::Q4 => {
                quantize_q4_k(x, &mut block[..Q4_K_BYTES]);
                dequantize_q4_k(&block[..Q4_K_BYTES], &mut out);
            }
        }
        out
    }

    #[test]
    fn errors_stay_near_a_step_of_each_sub_block() {
        for seed in 1..20 {
            let x = values(seed, 0.05 * seed as f32);
            for (kind, levels) in [
                (SuperBlock::Q4, 15.0),
                (SuperBlock::Q5, 31.0),
                (SuperBlock::Q6, 63.0),
            ] {
                let y = round_trip(&x, kind);
                let sub = if kind == SuperBlock::Q6 { 16 } else { 32 };
                for (xs, ys) in x.chunks(sub).zip(y.chunks(sub)) {
                    let lo = xs.iter().fold(0f32, |m, &v| m.min(v));
                    let hi = xs.iter().fold(0f32, |m, &v| m.max(v));
                    let step = (hi - lo) / levels;
                    for (&a, &b) in xs.iter().zip(ys) {
                        // Half a step, widened by the 6/8-bit quantization of the scales.
                        assert!(
                            (a - b).abs() <= step * 1.2,
                            "{kind:?}: {a} -> {b}, step {step}"
                        );
                    }
                }
            }
        }
    }

    /// The sub-block lanes choose what the reference's one-by-one search chooses, bit for bit,
    /// on random sub-blocks at many magnitudes, with repeated values, a lone non-zero, all
    /// values equal, all positive and all negative.
    #[test]
    fn sub_block_lanes_equal_the_one_by_one_search() {
        let mut cases: Vec<Vec<f32>> = Vec::new();
        for seed in 1..400u64 {
            let scale = 10f32.powi((seed % 13) as i32 - 8);
            let x = values(seed, scale);
            cases.push(x[..32].to_vec());
            cases.push(
                x[..32]
                    .iter()
                    .map(|v| (v / scale * 4.0).round() * scale)
                    .collect(),
            );
            cases.push(x[..32].iter().map(|v| v.abs()).collect());
            cases.push(x[..32].iter().map(|v| -v.abs()).collect());
        }
        let mut lone = vec![0f32; 32];
        lone[7] = 0.3;
        cases.extend([lone, vec![0.25; 32], vec![-1e-20; 32]]);
        // Eight cases at a time, one per lane, as the sub-blocks of a super-block.
        for group in cases.chunks(SUB_BLOCKS) {
            let pick = |j: usize| &group[j % group.len()];
            let xt: Transposed = std::array::from_fn(|i| lanes(|j| pick(j)[i]));
            let weights: Vec<Vec<f32>> = (0..SUB_BLOCKS)
                .map(|j| {
                    let x = pick(j);
                    let sum_x2: f32 = x.iter().map(|v| v * v).sum();
                    let av_x = (sum_x2 / 32.0).sqrt();
                    x.iter().map(|v| av_x + v.abs()).collect()
                })
                .collect();
            let wt: Transposed = std::array::from_fn(|i| lanes(|j| weights[j][i]));
            for search in [Q4_K_SEARCH, Q5_K_SEARCH] {
                let mut codes = [0u8; SUPER_BLOCK];
                let (scales, mins) = scales_and_mins(&xt, &wt, search, &mut codes);
                #[cfg(target_arch = "x86_64")]
                if crate::numeric::simd::level() >= crate::numeric::simd::Level::Avx2 {
                    let mut vector_codes = [0u8; SUPER_BLOCK];
                    // SAFETY: the CPU has AVX2.
                    let (vs, vm) =
                        unsafe { avx2::scales_and_mins(&xt, &wt, search, &mut vector_codes) };
                    assert_eq!(vs.map(f32::to_bits), scales.map(f32::to_bits), "{group:?}");
                    assert_eq!(vm.map(f32::to_bits), mins.map(f32::to_bits), "{group:?}");
                    assert_eq!(vector_codes, codes, "{group:?}");
                }
                for j in 0..SUB_BLOCKS {
                    let x = pick(j);
                    let mut want = [0u8; 32];
                    let reference = scale_and_min_reference(x, &weights[j], search, &mut want);
                    assert_eq!(scales[j].to_bits(), reference.0.to_bits(), "{x:?}");
                    assert_eq!(mins[j].to_bits(), reference.1.to_bits(), "{x:?}");
                    assert_eq!(codes[32 * j..32 * (j + 1)], want, "{x:?}");
                }
            }
        }
        for x in &cases {
            for half in x.chunks(16) {
                let (mut a, mut b) = ([0i8; 16], [0i8; 16]);
                let lanes = signed_scale(half, 32, &mut a);
                let reference = signed_scale_reference(half, 32, &mut b);
                assert_eq!(lanes.to_bits(), reference.to_bits(), "{half:?}");
                assert_eq!(a, b, "{half:?}");
            }
        }
    }

    #[test]
    fn zero_blocks_decode_to_zero_and_scales_pack_and_unpack() {
        let zeros = vec![0f32; SUPER_BLOCK];
        for kind in [SuperBlock::Q4, SuperBlock::Q5, SuperBlock::Q6] {
            assert!(round_trip(&zeros, kind).iter().all(|v| *v == 0.0));
        }
        // Every 6-bit value in every slot survives packing next to others.
        for shift in 0..64u8 {
            let mut packed = [0u8; 12];
            let pairs: Vec<(u8, u8)> = (0..8u8)
                .map(|j| ((j * 7 + shift) % 64, (63 - j * 5 + shift) % 64))
                .collect();
            for (j, &(ls, lm)) in pairs.iter().enumerate() {
                pack_scale_min_k4(j, ls, lm, &mut packed);
            }
            for (j, &pair) in pairs.iter().enumerate() {
                assert_eq!(scale_min_k4(j, &packed), pair, "slot {j}");
            }
        }
    }
}
