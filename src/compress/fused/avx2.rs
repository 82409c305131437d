//! The one-pass kernels written with AVX2 intrinsics (integer, FP8 and the legacy GGUF blocks),
//! for CPUs that have AVX2 and FMA (AVX-512 ones included: on the 2-core Zen 4 we measure on, 256-bit
//! code runs as fast as 512-bit). The portable loops in the parent module are their scalar twins
//! and define the results: values, stored bytes and metric sums here are those loops', bit for
//! bit (quotients by a corrected reciprocal equal the division; sums fold in the same lanes and
//! order), which the tests check. Written by hand because
//! the vectoriser, given the portable loops, shuffled lanes between register widths and spent as
//! many instructions moving values as computing them.

use std::arch::x86_64::*;

use super::{CodesOut, Fp8Rule, IntParams, IntRule, MinRule, Rule, q4_0_signed_absmax};
use crate::compress::blocks;
use crate::compress::fp8::E4M3_MAX;
use crate::compress::measure::{Bf16, Codec, F32, LANES, Lanes, Sums, store_and_measure_rest};
use crate::compress::quantize;

/// Bytes per value: BF16's when `BF16` is true, else F32's.
const fn width<const BF16: bool>() -> usize {
    if BF16 { Bf16::WIDTH } else { F32::WIDTH }
}

/// Each group of `group` values, stored as BF16 when `BF16` is true and as F32 otherwise:
/// its parameters from `params` (given the group's bytes; with `EMIT`, recorded in `codes` as
/// `stored` gives them), then each eight values through `values`, which gives what they become
/// and their codes (whole numbers in i32 lanes, whose low bytes are stored when `EMIT`),
/// rounded to the dtype, stored and measured.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn each_group<const BF16: bool, const EMIT: bool, P>(
    group: usize,
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
    params: impl Fn(&[u8]) -> P,
    stored: impl Fn(&P) -> [f32; 2],
    values: impl Fn(&P, __m256) -> (__m256, __m256i),
) -> Sums {
    let width = width::<BF16>();
    let group_bytes = group * width;
    let mut sums = Accumulators::new();
    let mut code_bytes = codes.codes.chunks_exact_mut(LANES);
    // An empty `out` asks for the codes and sums alone: the stored values are still rounded
    // to the dtype (the sums measure them) but not written.
    let dense = !out.is_empty();
    let mut dense_out = out.chunks_exact_mut(width * LANES);
    for group_in in input.chunks_exact(group_bytes) {
        let p = params(group_in);
        if EMIT {
            codes.groups.push(stored(&p));
        }
        for inp in group_in.chunks_exact(width * LANES) {
            let x = load::<BF16>(inp);
            let (y, code) = values(&p, x);
            if EMIT {
                store_low_bytes(code, code_bytes.next().expect("a code per value"));
            }
            let y = if BF16 { bf16_rounded(y) } else { y };
            if dense {
                store::<BF16>(y, dense_out.next().expect("a stored value per value"));
            }
            sums.add(x, y);
        }
    }
    if BF16 {
        sums.finish(input, width, Bf16::read)
    } else {
        sums.finish(input, width, F32::read)
    }
}

/// The group's parameters, exactly as the portable loop derives them.
#[inline(always)]
fn group_params<const BF16: bool, R: Rule>(rule: R, group_in: &[u8]) -> R::Params {
    fn with<C: Codec, R: Rule>(rule: R, group_in: &[u8]) -> R::Params {
        // The dispatched scans, not `min_max_stored` inlined here: this helper is compiled for
        // the baseline CPU, where the scan of a whole row ran one value at a time.
        let (lo, hi) = if !rule.needs_range() {
            (0.0, 0.0)
        } else if C::WIDTH == 2 {
            quantize::min_max_bf16(group_in)
        } else {
            quantize::min_max_f32(group_in)
        };
        rule.params::<C>(lo, hi, group_in)
    }
    if BF16 {
        with::<Bf16, R>(rule, group_in)
    } else {
        with::<F32, R>(rule, group_in)
    }
}

/// The integer rule, like the portable loop with an [`IntRule`].
#[target_feature(enable = "avx2,fma")]
pub(super) fn int_groups<const BF16: bool, const EMIT: bool>(
    rule: IntRule,
    group: usize,
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
) -> Sums {
    each_group::<BF16, EMIT, _>(
        group,
        input,
        out,
        codes,
        |bytes| {
            let p = group_params::<BF16, _>(rule, bytes);
            (p, Constants::new(rule, p))
        },
        |(p, _)| rule.stored_params(*p),
        |(p, constants), x| {
            if constants.exact_residual {
                constants.values(x)
            } else {
                by_rule(rule, *p, x)
            }
        },
    )
}

/// FP8 E4M3, like the portable loop with an [`Fp8Rule`].
#[target_feature(enable = "avx2,fma")]
pub(super) fn fp8_groups<const BF16: bool, const EMIT: bool>(
    rule: Fp8Rule,
    group: usize,
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
) -> Sums {
    each_group::<BF16, EMIT, _>(
        group,
        input,
        out,
        codes,
        |bytes| {
            let scale = group_params::<BF16, _>(rule, bytes);
            let inverse = 1.0 / scale;
            // Scales are the range over 448, so quotients stay within ±448 (1 + 2^-23).
            let exact = scale >= SMALLEST_FP8_SCALE && inverse.is_normal();
            (scale, exact.then(|| Quotients::new(scale, inverse)))
        },
        |(scale, _)| rule.stored_params(*scale),
        |(scale, quotients), x| match quotients {
            Some(quotients) => fp8_values(quotients.exact(x), x, _mm256_set1_ps(*scale)),
            None => by_rule(rule, *scale, x),
        },
    )
}

/// Q8_0, like the portable loop with a `Q8Rule`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_0_groups<const BF16: bool, const EMIT: bool>(
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
) -> Sums {
    each_group::<BF16, EMIT, _>(
        blocks::BLOCK,
        input,
        out,
        codes,
        |bytes| {
            let (lo, hi) = block_range::<BF16>(bytes);
            Steps::of(lo.abs().max(hi.abs()) / 127.0)
        },
        |steps| [steps.stored_scalar, 0.0],
        |steps, x| {
            let t = _mm256_mul_ps(x, steps.inverse);
            // round_half_away: the truncation, or one further from zero when the fraction
            // reaches one half; then + 0.0 turns -0 into +0 as the portable code does.
            let truncated = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
            let away = _mm256_add_ps(truncated, copysign_one(t));
            let fraction = abs(_mm256_sub_ps(t, truncated));
            let half = _mm256_cmp_ps::<_CMP_GE_OQ>(fraction, _mm256_set1_ps(0.5));
            let code = _mm256_add_ps(_mm256_blendv_ps(truncated, away, half), _mm256_setzero_ps());
            (_mm256_mul_ps(code, steps.stored), _mm256_cvttps_epi32(code))
        },
    )
}

/// Q4_0 (`LEVELS` 8) and Q5_0 (16), like the portable loop with a `CenteredRule`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn centered_groups<const BF16: bool, const EMIT: bool, const LEVELS: u8>(
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
) -> Sums {
    let levels = f32::from(LEVELS);
    each_group::<BF16, EMIT, _>(
        blocks::BLOCK,
        input,
        out,
        codes,
        |bytes| {
            let (lo, hi) = block_range::<BF16>(bytes);
            let signed_absmax = if BF16 {
                q4_0_signed_absmax::<Bf16>(lo, hi, bytes)
            } else {
                q4_0_signed_absmax::<F32>(lo, hi, bytes)
            };
            Steps::of(signed_absmax / -levels)
        },
        |steps| [steps.stored_scalar, 0.0],
        |steps, x| {
            let shifted = _mm256_add_ps(
                _mm256_mul_ps(x, steps.inverse),
                _mm256_set1_ps(levels + 0.5),
            );
            let q = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(shifted);
            // min(a, b) is `a < b ? a : b`: with the bound first, exactly `if q > top { top }`.
            let q = _mm256_min_ps(_mm256_set1_ps(2.0 * levels - 1.0), q);
            let y = _mm256_mul_ps(_mm256_sub_ps(q, _mm256_set1_ps(levels)), steps.stored);
            (y, _mm256_cvttps_epi32(q))
        },
    )
}

/// Q4_1 and Q5_1, like the portable loop with a [`MinRule`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn with_min_groups<const BF16: bool, const EMIT: bool>(
    rule: MinRule,
    input: &[u8],
    out: &mut [u8],
    codes: &mut CodesOut,
) -> Sums {
    let top = rule.top();
    each_group::<BF16, EMIT, _>(
        blocks::BLOCK,
        input,
        out,
        codes,
        |bytes| {
            let (lo, hi) = block_range::<BF16>(bytes);
            let (lo, hi) = if BF16 {
                rule.signed_range::<Bf16>(lo, hi, bytes)
            } else {
                rule.signed_range::<F32>(lo, hi, bytes)
            };
            MinSteps::of(lo, hi, top)
        },
        |steps| steps.stored_scalar,
        |steps, x| {
            // Three roundings, as the reference: (x - min), times the inverse, plus a half.
            let shifted = _mm256_add_ps(
                _mm256_mul_ps(_mm256_sub_ps(x, steps.min), steps.inverse),
                _mm256_set1_ps(0.5),
            );
            let q = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(shifted);
            let q = _mm256_min_ps(_mm256_set1_ps(top), q);
            let y = _mm256_add_ps(_mm256_mul_ps(q, steps.stored_step), steps.stored_min);
            (y, _mm256_cvttps_epi32(q))
        },
    )
}

/// A Q4_1 or Q5_1 block's minimum and inverse step as quantizing uses them, and its step and
/// minimum as stored, in every lane.
struct MinSteps {
    min: __m256,
    inverse: __m256,
    stored_step: __m256,
    stored_min: __m256,
    stored_scalar: [f32; 2],
}

impl MinSteps {
    /// `blocks::MinStep::new`, the f16 roundings by F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn of(min: f32, max: f32, top: f32) -> MinSteps {
        let d = (max - min) / top;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        let half = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_setr_ps(d, min, 0.0, 0.0));
        let stored = _mm_cvtph_ps(half);
        let (step, minimum) = (
            _mm_cvtss_f32(stored),
            _mm_cvtss_f32(_mm_shuffle_ps::<0b01>(stored, stored)),
        );
        MinSteps {
            min: _mm256_set1_ps(min),
            inverse: _mm256_set1_ps(inverse),
            stored_step: _mm256_set1_ps(step),
            stored_min: _mm256_set1_ps(minimum),
            stored_scalar: [step, minimum],
        }
    }
}

/// The low byte of each of eight i32 lanes, in order, into `out`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store_low_bytes(lanes: __m256i, out: &mut [u8]) {
    let out: &mut [u8; LANES] = out.try_into().expect("eight codes");
    // Bytes 0, 4, 8 and 12 of each 128-bit half to that half's first four.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let picked = _mm256_shuffle_epi8(lanes, pick);
    let low = _mm_cvtsi128_si32(_mm256_castsi256_si128(picked)) as u32;
    let high = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(picked)) as u32;
    *out = (u64::from(low) | u64::from(high) << 32).to_le_bytes();
}

/// A GGUF block's inverse step and stored step, in every lane.
struct Steps {
    inverse: __m256,
    stored: __m256,
    stored_scalar: f32,
}

impl Steps {
    /// `BlockStep::of(d)`: the inverse of `d` (0 for 0) and `d` rounded to f16 (by F16C, which
    /// rounds to nearest even like the portable conversion).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn of(d: f32) -> Steps {
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        let half = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(d));
        let stored = _mm_cvtph_ps(half);
        Steps {
            inverse: _mm256_set1_ps(inverse),
            stored: _mm256_broadcastss_ps(stored),
            stored_scalar: _mm_cvtss_f32(stored),
        }
    }
}

/// Smallest and largest of a GGUF block's 32 values (the sign of a zero bound may differ from
/// the portable scan's; neither step depends on it).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn block_range<const BF16: bool>(bytes: &[u8]) -> (f32, f32) {
    let width = width::<BF16>();
    let x: [__m256; 4] =
        std::array::from_fn(|i| load::<BF16>(&bytes[i * width * LANES..][..width * LANES]));
    let lo = _mm256_min_ps(_mm256_min_ps(x[0], x[1]), _mm256_min_ps(x[2], x[3]));
    let hi = _mm256_max_ps(_mm256_max_ps(x[0], x[1]), _mm256_max_ps(x[2], x[3]));
    let lo = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps::<1>(lo));
    let hi = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps::<1>(hi));
    let lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
    let hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
    let lo = _mm_min_ss(lo, _mm_shuffle_ps::<0b01>(lo, lo));
    let hi = _mm_max_ss(hi, _mm_shuffle_ps::<0b01>(hi, hi));
    (_mm_cvtss_f32(lo), _mm_cvtss_f32(hi))
}

/// ±1 with the sign of each lane of `v`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn copysign_one(v: __m256) -> __m256 {
    _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0))
}

/// `fp8::fake_value` given the exact quotients x / scale: clamped to ±448, rounded to the
/// nearest E4M3 value (ties to even; steps of 2^-9 below 2^-6), times the scale. The sign comes
/// from `x`: the corrected quotient of -0 is +0.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fp8_values(quotients: __m256, x: __m256, scale: __m256) -> (__m256, __m256i) {
    let q = _mm256_max_ps(_mm256_set1_ps(-E4M3_MAX), quotients);
    let q = _mm256_min_ps(_mm256_set1_ps(E4M3_MAX), q);
    let magnitude = abs(q);
    let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
    // Normal E4M3 values keep 3 of f32's 23 mantissa bits: round at bit 20, ties to even.
    let bits = _mm256_castps_si256(magnitude);
    let odd = _mm256_and_si256(_mm256_srli_epi32::<20>(bits), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFFF));
    let normal = _mm256_and_si256(
        _mm256_add_epi32(bits, bias),
        _mm256_set1_epi32(0xFFF0_0000_u32 as i32),
    );
    let normal = _mm256_castsi256_ps(normal);
    // Subnormal ones are multiples of 2^-9.
    let steps = _mm256_mul_ps(magnitude, _mm256_set1_ps(512.0));
    let steps = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(steps);
    let subnormal = _mm256_mul_ps(steps, _mm256_set1_ps(1.0 / 512.0));
    let below_normal = _mm256_cmp_ps::<_CMP_LT_OQ>(magnitude, _mm256_set1_ps(1.0 / 64.0));
    let rounded = _mm256_or_ps(_mm256_blendv_ps(normal, subnormal, below_normal), sign);
    // The E4M3 byte: the normal one rebiased from f32's exponent, the subnormal one the count
    // of 2^-9 steps (8 of them, 2^-6, is also the smallest normal's byte), and the sign.
    let normal_code = _mm256_srli_epi32::<20>(_mm256_sub_epi32(
        _mm256_castps_si256(normal),
        _mm256_set1_epi32((127 - 7) << 23),
    ));
    let code = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(normal_code),
        _mm256_castsi256_ps(_mm256_cvttps_epi32(steps)),
        below_normal,
    ));
    let sign_code = _mm256_srli_epi32::<24>(_mm256_castps_si256(sign));
    (
        _mm256_mul_ps(rounded, scale),
        _mm256_or_si256(code, sign_code),
    )
}

/// Eight values and their codes through the portable rule, one by one.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn by_rule<R: Rule>(rule: R, p: R::Params, x: __m256) -> (__m256, __m256i) {
    let mut values = [0f32; LANES];
    let mut codes = [0i32; LANES];
    // SAFETY: `values` holds exactly eight f32 for the unaligned store and load.
    unsafe { _mm256_storeu_ps(values.as_mut_ptr(), x) };
    for (v, c) in values.iter_mut().zip(&mut codes) {
        *c = i32::from(rule.code(p, *v));
        *v = rule.value(p, *v);
    }
    // SAFETY: `values` and `codes` hold exactly eight 32-bit lanes for the unaligned loads.
    unsafe {
        (
            _mm256_loadu_ps(values.as_ptr()),
            _mm256_loadu_si256(codes.as_ptr().cast()),
        )
    }
}

/// Exact quotients x / s by the reciprocal: q = x·(1/s), then q + (x - q·s)·(1/s), the residual
/// x - q·s exact in one fused multiply-add (Markstein's correction). Equal to the division for
/// every BF16 significand against every f32 scale (checked exhaustively) as long as the scale
/// is at least [`SMALLEST_SCALE`] and the quotients are far from overflow; but the quotient
/// of -0 comes out +0.
struct Quotients {
    scale: __m256,
    inverse: __m256,
}

impl Quotients {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(scale: f32, inverse: f32) -> Quotients {
        Quotients {
            scale: _mm256_set1_ps(scale),
            inverse: _mm256_set1_ps(inverse),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exact(&self, x: __m256) -> __m256 {
        let product = _mm256_mul_ps(x, self.inverse);
        let residual = _mm256_fnmadd_ps(product, self.scale, x);
        _mm256_fmadd_ps(residual, self.inverse, product)
    }
}

/// A group's parameters, broadcast to every lane.
struct Constants {
    /// Whether every quotient of the group is finite and far from overflow, and the scale far
    /// from underflow, as the reciprocal's correction step needs (scales come from the values'
    /// range, so this holds but for degenerate ranges, which take the division).
    exact_residual: bool,
    quotients: Quotients,
    zero_point: __m256,
    scale: __m256,
    qmin: __m256,
    qmax: __m256,
}

impl Constants {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(rule: IntRule, p: IntParams) -> Constants {
        Constants {
            exact_residual: p.scale >= SMALLEST_SCALE
                && p.inverse
                    .is_some_and(|inverse| p.amax * inverse < LARGEST_QUOTIENT),
            quotients: Quotients::new(p.scale, p.inverse.unwrap_or(0.0)),
            zero_point: _mm256_set1_ps(p.zero_point),
            scale: _mm256_set1_ps(p.scale),
            qmin: _mm256_set1_ps(rule.qmin),
            qmax: _mm256_set1_ps(rule.qmax),
        }
    }

    /// The values and codes, from exact quotients; only when [`Constants::exact_residual`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn values(&self, x: __m256) -> (__m256, __m256i) {
        let t = _mm256_add_ps(self.quotients.exact(x), self.zero_point);
        // max(a, b) is `a > b ? a : b`: with the bound first, exactly the portable selects.
        let t = _mm256_max_ps(self.qmin, t);
        let t = _mm256_min_ps(self.qmax, t);
        let code = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let value = _mm256_mul_ps(_mm256_sub_ps(code, self.zero_point), self.scale);
        (value, _mm256_cvttps_epi32(code))
    }
}

/// [`SMALLEST_SCALE`] for FP8, whose quotients matter down to 2^-11 (below, they round to 0):
/// values under 2^-103 then have quotients under 2^-13.
const SMALLEST_FP8_SCALE: f32 = 1.0 / (1u128 << 90) as f32;

/// A bound on quotients far inside f32's range, so that q·s cannot overflow in the residual.
const LARGEST_QUOTIENT: f32 = 1.0e30;

/// Below this scale a residual could fall under f32's finest step (2^-149) for a value whose
/// code is not zero; values under 2^-103 then have quotients under 2^-3, whose code is the
/// zero-point whatever their last bits.
const SMALLEST_SCALE: f32 = 1.0 / (1u128 << 100) as f32;

/// Eight values from their stored bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load<const BF16: bool>(bytes: &[u8]) -> __m256 {
    if BF16 {
        let bytes: &[u8; 16] = bytes.try_into().expect("eight BF16 values");
        // SAFETY: `bytes` is 16 readable bytes; the load is unaligned.
        let halves = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
    } else {
        let bytes: &[u8; 32] = bytes.try_into().expect("eight F32 values");
        // SAFETY: `bytes` is 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_ps(bytes.as_ptr().cast()) }
    }
}

/// Eight stored values (already rounded to the dtype) into their bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store<const BF16: bool>(v: __m256, out: &mut [u8]) {
    if BF16 {
        let out: &mut [u8; 16] = out.try_into().expect("eight BF16 values");
        let high = _mm256_srli_epi32::<16>(_mm256_castps_si256(v));
        let packed = _mm_packus_epi32(
            _mm256_castsi256_si128(high),
            _mm256_extracti128_si256::<1>(high),
        );
        // SAFETY: `out` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), packed) };
    } else {
        let out: &mut [u8; 32] = out.try_into().expect("eight F32 values");
        // SAFETY: `out` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().cast(), v) };
    }
}

/// `codec::bf16_rounded` in eight lanes, for finite values: a tensor holding NaN is refused
/// from its metric sums, its output never kept, so the portable code's quiet-NaN rule is not
/// repeated here.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bf16_rounded(v: __m256) -> __m256 {
    let bits = _mm256_castps_si256(v);
    let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF));
    let high = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
    _mm256_castsi256_ps(_mm256_and_si256(_mm256_add_epi32(bits, bias), high))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// [`Lanes`] in vector registers.
struct Accumulators {
    orig_sq: __m256,
    out_sq: __m256,
    err_sq: __m256,
    dot: __m256,
    max_abs: __m256,
    zeros: __m256i,
}

impl Accumulators {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new() -> Accumulators {
        Accumulators {
            orig_sq: _mm256_setzero_ps(),
            out_sq: _mm256_setzero_ps(),
            err_sq: _mm256_setzero_ps(),
            dot: _mm256_setzero_ps(),
            max_abs: _mm256_setzero_ps(),
            zeros: _mm256_setzero_si256(),
        }
    }

    /// `Lanes::add`, but for the count of non-finite values: [`Accumulators::finish`] counts
    /// them only when the sum of squares shows one.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn add(&mut self, x: __m256, y: __m256) {
        let e = _mm256_sub_ps(x, y);
        self.orig_sq = _mm256_fmadd_ps(x, x, self.orig_sq);
        self.out_sq = _mm256_fmadd_ps(y, y, self.out_sq);
        self.err_sq = _mm256_fmadd_ps(e, e, self.err_sq);
        self.dot = _mm256_fmadd_ps(x, y, self.dot);
        self.max_abs = _mm256_max_ps(abs(e), self.max_abs);
        let zero = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(y, _mm256_setzero_ps()));
        self.zeros = _mm256_sub_epi32(self.zeros, zero);
    }

    /// The sums of the values of `input`, stored `width` bytes each and read by `read`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn finish(self, input: &[u8], width: usize, read: impl Fn(&[u8]) -> f32) -> Sums {
        self.lanes(input, width, read).finish(input.len() / width)
    }

    /// The lanes as the portable loop holds them after the values of `input` (stored `width`
    /// bytes each, read by `read`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lanes(self, input: &[u8], width: usize, read: impl Fn(&[u8]) -> f32) -> Lanes {
        let floats = |v: __m256| {
            let mut lanes = [0f32; LANES];
            // SAFETY: `lanes` holds exactly eight f32 for the unaligned store.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            lanes
        };
        let counts = |v: __m256i| {
            let mut lanes = [0u32; LANES];
            // SAFETY: `lanes` holds exactly 32 bytes for the unaligned store.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
            lanes
        };
        let orig_sq = floats(self.orig_sq);
        // A NaN or infinity makes its lane's sum of squares NaN or infinite for good; so does
        // a square beyond f32's range, which the recount then finds finite.
        let non_finite = if orig_sq.iter().all(|s| s.is_finite()) {
            0
        } else {
            let values = input.chunks_exact(width).map(read);
            values.filter(|v| !v.is_finite()).count() as u32
        };
        Lanes {
            orig_sq,
            out_sq: floats(self.out_sq),
            err_sq: floats(self.err_sq),
            dot: floats(self.dot),
            max_abs: floats(self.max_abs),
            zeros: counts(self.zeros),
            non_finite: [non_finite, 0, 0, 0, 0, 0, 0, 0],
            padding: 0,
        }
    }
}

/// `measure::store_and_measure` for BF16 (when `BF16`) or F32: `values` rounded to the dtype
/// (NaNs quieted as `codec::bf16_rounded` does), stored into `out`, and measured against the
/// original re-read from `input`; the portable loop's sums bit for bit (the last few values of
/// a chunk that does not fill the lanes go through that loop's own steps).
#[target_feature(enable = "avx2,fma")]
pub(super) fn store_and_measure<const BF16: bool>(
    input: &[u8],
    values: &[f32],
    out: &mut [u8],
) -> Sums {
    let width = width::<BF16>();
    let whole = values.len() / LANES * LANES;
    let mut sums = Accumulators::new();
    for ((inp, v), o) in input[..whole * width]
        .chunks_exact(width * LANES)
        .zip(values[..whole].chunks_exact(LANES))
        .zip(out[..whole * width].chunks_exact_mut(width * LANES))
    {
        let x = load::<BF16>(inp);
        let v: &[f32; LANES] = v.try_into().expect("eight values");
        // SAFETY: `v` is eight readable f32; the load is unaligned.
        let y = unsafe { _mm256_loadu_ps(v.as_ptr()) };
        let y = if BF16 { bf16_rounded_quieting(y) } else { y };
        store::<BF16>(y, o);
        sums.add(x, y);
    }
    let (rest_in, rest_out) = (&input[whole * width..], &mut out[whole * width..]);
    if BF16 {
        let mut lanes = sums.lanes(&input[..whole * width], width, Bf16::read);
        store_and_measure_rest::<Bf16>(&mut lanes, rest_in, &values[whole..], rest_out);
        lanes.finish(values.len())
    } else {
        let mut lanes = sums.lanes(&input[..whole * width], width, F32::read);
        store_and_measure_rest::<F32>(&mut lanes, rest_in, &values[whole..], rest_out);
        lanes.finish(values.len())
    }
}

/// [`bf16_rounded`], with NaNs kept NaN (quiet, their high payload bits kept) as
/// `codec::bf16_rounded` keeps them: the rounding would carry a NaN's payload into infinity.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bf16_rounded_quieting(v: __m256) -> __m256 {
    let bits = _mm256_castps_si256(v);
    let quiet = _mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF_0000_u32 as i32)),
        _mm256_set1_epi32(0x0040_0000),
    );
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    _mm256_castsi256_ps(_mm256_blendv_epi8(
        _mm256_castps_si256(bf16_rounded(v)),
        quiet,
        nan,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};

    /// Storing and measuring equals the portable loop bit for bit, in bytes and sums, for
    /// awkward values (NaNs with payloads, infinities, ±0, subnormals, BF16 rounding ties)
    /// and every length that leaves a partial group of lanes.
    #[test]
    fn store_and_measure_equals_the_portable_loop() {
        use crate::compress::measure::store_and_measure_as;
        use crate::numeric::Dtype;
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let specials = [
            f32::from_bits(0x7FC0_1234),
            f32::from_bits(0xFF81_0001),
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::from_bits(3),
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            f32::MAX,
            1.0e30,
        ];
        for len in (0..40).chain([1000, 1003]) {
            let original: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
                .collect();
            for spoiled in [false, true] {
                let values: Vec<f32> = (0..len)
                    .map(|i| {
                        if spoiled && i % 5 == 2 {
                            specials[i % specials.len()]
                        } else {
                            original[i] * 0.99 + f32::from_bits(0x3380_0000)
                        }
                    })
                    .collect();
                let mut input_values = original.clone();
                if spoiled && len > 3 {
                    input_values[3] = f32::NAN;
                    input_values[len - 1] = f32::NEG_INFINITY;
                }
                for dtype in [Dtype::F32, Dtype::BF16] {
                    let width = crate::numeric::float_width(dtype);
                    let mut input = vec![0u8; len * width];
                    crate::numeric::codec::encode(dtype, &input_values, &mut input);
                    let (mut fast, mut plain) = (vec![0u8; input.len()], vec![0u8; input.len()]);
                    // SAFETY: AVX2 and FMA were detected above.
                    let (fast_sums, plain_sums) = unsafe {
                        if dtype == Dtype::BF16 {
                            (
                                store_and_measure::<true>(&input, &values, &mut fast),
                                store_and_measure_as::<Bf16>(&input, &values, &mut plain),
                            )
                        } else {
                            (
                                store_and_measure::<false>(&input, &values, &mut fast),
                                store_and_measure_as::<F32>(&input, &values, &mut plain),
                            )
                        }
                    };
                    let name = format!("len {len} spoiled {spoiled} {dtype}");
                    assert_eq!(fast, plain, "{name}: bytes");
                    assert_eq!(
                        format!("{fast_sums:?}"),
                        format!("{plain_sums:?}"),
                        "{name}: sums"
                    );
                }
            }
        }
    }

    /// Under scales of every magnitude and zero-points of both signs, the corrected
    /// reciprocal's codes equal the division's for values at every rounding tie of the code
    /// range, their neighbours one ulp away, values spread over the range, and every finite
    /// BF16 value.
    #[test]
    fn corrected_reciprocal_gives_the_division_exactly() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let every_bf16: Vec<f32> = (0..=u16::MAX)
            .map(|b| f32::from_bits(u32::from(b) << 16))
            .filter(|x| x.is_finite())
            .collect();
        let mut checked = 0u64;
        for round in 0..300 {
            let scheme = IntScheme {
                bits: [8, 4, 2, 5][round % 4],
                symmetric: round % 3 != 0,
                granularity: Granularity::Channel,
                scale_dtype: ScaleDtype::F32,
            };
            // Scales from 2^-40 to 2^20, with random significands (and exact powers of two).
            let exponent = (next() % 60) as i32 - 40;
            let significand = if round % 5 == 0 {
                1.0
            } else {
                1.0 + (next() % (1 << 23)) as f32 / (1 << 23) as f32
            };
            let scale = significand * 2f32.powi(exponent);
            let zero_point = if scheme.symmetric {
                0.0
            } else {
                (next() % 9) as f32 - 4.0
            };
            let mut xs = Vec::new();
            for n in -140..140 {
                let tie = (n as f32 + 0.5) * scale;
                xs.extend([
                    tie,
                    f32::from_bits(tie.to_bits() + 1),
                    f32::from_bits(tie.to_bits() - 1),
                ]);
            }
            xs.extend((0..2000).map(|_| ((next() % 2_800_000) as f32 / 10_000.0 - 140.0) * scale));
            if round % 50 == 0 {
                xs.extend(&every_bf16);
            }
            xs.truncate(xs.len() / LANES * LANES);
            let rule = IntRule::new(scheme, None);
            let inverse = 1.0 / scale;
            let p = IntParams {
                scale,
                zero_point,
                inverse: inverse.is_normal().then_some(inverse),
                amax: 0.0,
            };
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe {
                let constants = Constants::new(rule, p);
                for chunk in xs.chunks_exact(LANES) {
                    let x = _mm256_loadu_ps(chunk.as_ptr());
                    let mut got = [0f32; LANES];
                    _mm256_storeu_ps(got.as_mut_ptr(), constants.values(x).0);
                    for (&x, got) in chunk.iter().zip(got) {
                        // Quotients beyond the residual's range take the division in the kernel.
                        if (x * inverse).abs() < LARGEST_QUOTIENT {
                            let want = rule.value(p, x);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "x {x:e} scale {scale:e} zero point {zero_point}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1_000_000, "checked {checked}");
    }

    /// Every finite BF16 value (and a spread of F32 ones) under scales of every magnitude: the
    /// FP8 values from the exact quotients equal `fp8::fake_value`'s.
    #[test]
    fn fp8_values_equal_the_portable_ones() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let mut xs: Vec<f32> = (0..=u16::MAX)
            .map(|b| f32::from_bits(u32::from(b) << 16))
            .filter(|x| x.is_finite())
            .collect();
        xs.extend(
            (0..1u32 << 16).map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9) & 0xBFFF_FFFF)),
        );
        xs.truncate(xs.len() / LANES * LANES);
        for k in -60..60 {
            let scale = 1.37f32 * 2f32.powi(k);
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe {
                let quotients = Quotients::new(scale, 1.0 / scale);
                for chunk in xs.chunks_exact(LANES) {
                    let x = _mm256_loadu_ps(chunk.as_ptr());
                    let mut got = [0f32; LANES];
                    let (values, _) = fp8_values(quotients.exact(x), x, _mm256_set1_ps(scale));
                    _mm256_storeu_ps(got.as_mut_ptr(), values);
                    for (&x, got) in chunk.iter().zip(got) {
                        // Kernel scales are a range over 448: no quotient comes near overflow.
                        if (f64::from(x) / f64::from(scale)).abs() > 1e30 {
                            continue;
                        }
                        let want = crate::compress::fp8::fake_value(x, scale);
                        assert_eq!(got.to_bits(), want.to_bits(), "x {x:e} scale {scale:e}");
                    }
                }
            }
        }
    }

    /// The quotient the kernel computes, q + (x - q·s)·(1/s) with q = x·(1/s), equals the
    /// division x / s for every BF16 significand against every f32 scale significand (the
    /// exponents only shift both), and for a billion random F32 pairs. About 2 · 10^9 checks:
    /// run in release, `cargo test --release -- --ignored corrected_quotients`.
    #[test]
    #[ignore]
    fn corrected_quotients_equal_the_division_everywhere() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        /// Mismatching lanes of x / s against the corrected product, for eight scales.
        #[target_feature(enable = "avx2,fma")]
        fn mismatches(x: __m256, s: __m256) -> u32 {
            let inverse = _mm256_div_ps(_mm256_set1_ps(1.0), s);
            let product = _mm256_mul_ps(x, inverse);
            let residual = _mm256_fnmadd_ps(product, s, x);
            let corrected = _mm256_fmadd_ps(residual, inverse, product);
            let exact = _mm256_div_ps(x, s);
            let equal =
                _mm256_cmpeq_epi32(_mm256_castps_si256(corrected), _mm256_castps_si256(exact));
            (!_mm256_movemask_ps(_mm256_castsi256_ps(equal)) & 0xFF).count_ones()
        }
        let one = 127u32 << 23;
        let mut bad = 0u64;
        for scales in (0u32..1 << 23).step_by(LANES) {
            let s =
                std::array::from_fn::<f32, LANES, _>(|i| f32::from_bits(one | (scales + i as u32)));
            // SAFETY: the CPU has AVX2 and FMA (checked above); `s` holds eight f32.
            unsafe {
                let s = _mm256_loadu_ps(s.as_ptr());
                for significand in 0u32..128 {
                    let x = _mm256_set1_ps(f32::from_bits(one | (significand << 16)));
                    bad += u64::from(mismatches(x, s));
                }
            }
        }
        assert_eq!(bad, 0, "BF16 values");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..(1u64 << 30) / LANES as u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits(one | (state as u32 & 0x007F_FFFF));
            let s = std::array::from_fn::<f32, LANES, _>(|i| {
                f32::from_bits(one | ((state >> 23) as u32).rotate_left(3 * i as u32) & 0x007F_FFFF)
            });
            // SAFETY: as above.
            unsafe {
                bad += u64::from(mismatches(_mm256_set1_ps(x), _mm256_loadu_ps(s.as_ptr())));
            }
        }
        assert_eq!(bad, 0, "F32 values");
    }
}
