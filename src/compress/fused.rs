//! One pass per chunk for the recipes most jobs run: a single integer, FP8 or legacy GGUF block
//! step (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1) on BF16 or F32 weights. Each group of values that shares a scale (a row, a quantization group, a
//! GGUF block) is read straight from the input bytes twice, once for its range and once to
//! quantize, store and measure it while it is still in the L1 cache; the general path's decoded
//! f32 copy of the chunk and its separate passes are skipped. Values and metric sums are the
//! general path's, bit for bit: the same per-value functions, the same order of the sums' lanes
//! (groups are whole multiples of the lane count), which the tests check for every kernel. On
//! CPUs with AVX2, FMA and F16C the same kernels run as intrinsics (`avx2`), these loops being
//! their scalar twins.

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::compress::blocks::{self, BlockStep, BlockType};
use crate::compress::fp8;
use crate::compress::measure::{Bf16, Codec, F32, LANES, Lanes, Sums, store_lanes};
use crate::compress::quantize::ScaleDtype;
use crate::compress::quantize::{self, Granularity, IntScheme, QParams, min_max_stored};
use crate::compress::step::Step;
use crate::numeric::Dtype;
use crate::numeric::simd::{self, multiversion};

/// Values read, transformed and stored together: groups are whole multiples of it.
const BLOCK: usize = 32;

/// A step the one-pass kernels run, with its whole-tensor parameters when it has them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnePass {
    Int {
        scheme: IntScheme,
        /// Per-tensor granularity's parameters, with the tensor's largest magnitude.
        tensor: Option<(QParams, f32)>,
    },
    Fp8(Fp8Rule),
    Q8_0,
    Q4_0,
    Q5_0,
    /// Q4_1 (`top` 15) or Q5_1 (31): a step and minimum per block.
    WithMin(MinRule),
}

impl OnePass {
    /// The one-pass kernel for `steps` on a tensor of `dtype` with rows of `cols` values, when
    /// there is one: a single supported step whose groups tile the rows and hold whole blocks.
    /// `tensor_params` / `tensor_scale` are the per-tensor step's global facts.
    pub(crate) fn for_steps(
        steps: &[Step],
        dtype: Dtype,
        cols: usize,
        tensor_params: Option<(QParams, f32)>,
        tensor_scale: Option<f32>,
    ) -> Option<OnePass> {
        if !matches!(dtype, Dtype::BF16 | Dtype::F32) || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let kernel = match steps {
            [Step::Int(scheme)] => OnePass::Int {
                scheme: *scheme,
                tensor: tensor_params,
            },
            [Step::Fp8 { scale_dtype, .. }] => OnePass::Fp8(Fp8Rule {
                tensor_scale,
                scale_dtype: *scale_dtype,
            }),
            [Step::Gguf(BlockType::Q8_0)] => OnePass::Q8_0,
            [Step::Gguf(BlockType::Q4_0)] => OnePass::Q4_0,
            [Step::Gguf(BlockType::Q5_0)] => OnePass::Q5_0,
            [Step::Gguf(BlockType::Q4_1)] => OnePass::WithMin(MinRule::Q4_1),
            [Step::Gguf(BlockType::Q5_1)] => OnePass::WithMin(MinRule::Q5_1),
            _ => return None,
        };
        let group = kernel.group_len(cols);
        (group.is_multiple_of(BLOCK) && cols.is_multiple_of(group)).then_some(kernel)
    }

    /// The GGUF block type the kernel writes, if it writes one.
    pub(crate) fn block_type(&self) -> Option<BlockType> {
        match self {
            OnePass::Q8_0 => Some(BlockType::Q8_0),
            OnePass::Q4_0 => Some(BlockType::Q4_0),
            OnePass::Q5_0 => Some(BlockType::Q5_0),
            OnePass::WithMin(rule) => Some(rule.kind),
            OnePass::Int { .. } | OnePass::Fp8(_) => None,
        }
    }

    /// Values that share parameters.
    pub(crate) fn group_len(&self, cols: usize) -> usize {
        match self {
            OnePass::Int { scheme, .. } => match scheme.granularity {
                Granularity::Group(n) => n,
                Granularity::Tensor | Granularity::Channel => cols,
            },
            OnePass::Fp8(_) => cols,
            OnePass::Q8_0 | OnePass::Q4_0 | OnePass::Q5_0 | OnePass::WithMin(_) => blocks::BLOCK,
        }
    }

    /// Transforms whole rows of `input` (rows of `cols` values in `dtype`) into `out` and
    /// returns the metric sums; with `codes`, also writes the stored form there. An empty `out`
    /// (for a non-empty input) asks for the sums and codes without the stored values.
    pub(crate) fn run(
        self,
        dtype: Dtype,
        cols: usize,
        input: &[u8],
        out: &mut [u8],
        codes: Option<&mut CodesOut>,
    ) -> Sums {
        let group = self.group_len(cols);
        #[cfg(target_arch = "x86_64")]
        if simd::level() >= simd::Level::Avx2 {
            let bf16 = dtype == Dtype::BF16;
            // SAFETY: `level` is Avx2 or above only when the CPU has AVX2, FMA and F16C.
            return unsafe {
                match codes {
                    Some(codes) => self.run_avx2::<true>(bf16, group, input, out, codes),
                    None => self.run_avx2::<false>(bf16, group, input, out, &mut CodesOut::none()),
                }
            };
        }
        if out.is_empty() && !input.is_empty() {
            // The portable loops always store; give them somewhere to.
            let mut dense = vec![0u8; input.len()];
            return run_portable(self, dtype, group, input, &mut dense, codes);
        }
        run_portable(self, dtype, group, input, out, codes)
    }

    /// [`OnePass::run`] by the AVX2 kernels, on BF16 or else F32 input, writing `codes` when
    /// `EMIT`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn run_avx2<const EMIT: bool>(
        self,
        bf16: bool,
        group: usize,
        input: &[u8],
        out: &mut [u8],
        codes: &mut CodesOut,
    ) -> Sums {
        use avx2::{centered_groups, fp8_groups, int_groups, q8_0_groups, with_min_groups};
        match (self, bf16) {
            (OnePass::Int { scheme, tensor }, true) => {
                let rule = IntRule::new(scheme, tensor);
                int_groups::<true, EMIT>(rule, group, input, out, codes)
            }
            (OnePass::Int { scheme, tensor }, false) => {
                let rule = IntRule::new(scheme, tensor);
                int_groups::<false, EMIT>(rule, group, input, out, codes)
            }
            (OnePass::Fp8(rule), true) => fp8_groups::<true, EMIT>(rule, group, input, out, codes),
            (OnePass::Fp8(rule), false) => {
                fp8_groups::<false, EMIT>(rule, group, input, out, codes)
            }
            (OnePass::Q8_0, true) => q8_0_groups::<true, EMIT>(input, out, codes),
            (OnePass::Q8_0, false) => q8_0_groups::<false, EMIT>(input, out, codes),
            (OnePass::Q4_0, true) => centered_groups::<true, EMIT, 8>(input, out, codes),
            (OnePass::Q4_0, false) => centered_groups::<false, EMIT, 8>(input, out, codes),
            (OnePass::Q5_0, true) => centered_groups::<true, EMIT, 16>(input, out, codes),
            (OnePass::Q5_0, false) => centered_groups::<false, EMIT, 16>(input, out, codes),
            (OnePass::WithMin(rule), true) => {
                with_min_groups::<true, EMIT>(rule, input, out, codes)
            }
            (OnePass::WithMin(rule), false) => {
                with_min_groups::<false, EMIT>(rule, input, out, codes)
            }
        }
    }
}

/// `measure::store_and_measure` for BF16 and F32 by the AVX2 kernel, where the CPU has it and
/// the SIMD cap allows it (None otherwise): the same bytes and sums as the portable loop.
pub(crate) fn store_and_measure_vector(
    dtype: Dtype,
    input: &[u8],
    values: &[f32],
    out: &mut [u8],
) -> Option<Sums> {
    #[cfg(target_arch = "x86_64")]
    if simd::level() >= simd::Level::Avx2 {
        let bf16 = match dtype {
            Dtype::BF16 => true,
            Dtype::F32 => false,
            _ => return None,
        };
        // SAFETY: `level` is Avx2 or above only when the CPU has AVX2, FMA and F16C.
        return Some(unsafe {
            if bf16 {
                avx2::store_and_measure::<true>(input, values, out)
            } else {
                avx2::store_and_measure::<false>(input, values, out)
            }
        });
    }
    None
}

/// The stored form a one-pass kernel writes beside the dense values, for the formats that keep
/// codes rather than values.
#[derive(Debug, Default)]
pub(crate) struct CodesOut<'a> {
    /// One byte per value, in value order: integer codes in two's complement (so 8-bit
    /// unsigned ones as they are), E4M3 bytes, Q8_0's signed codes, Q4_0's levels 0–15 (packed
    /// into blocks by [`pack_blocks`]).
    pub(crate) codes: &'a mut [u8],
    /// Per group, in order: the integer (scale, zero-point), FP8's (scale, 0), or a GGUF
    /// block's (step as stored, 0). Pushed for per-tensor parameters too.
    pub(crate) groups: Vec<[f32; 2]>,
}

impl CodesOut<'_> {
    /// Nowhere to write (the kernels then skip the codes).
    fn none() -> CodesOut<'static> {
        CodesOut::default()
    }
}

/// GGUF blocks of `kind` (a legacy type) from a kernel's codes and steps.
pub(crate) fn pack_blocks(kind: BlockType, codes: &[u8], steps: &[[f32; 2]], out: &mut [u8]) {
    STEPS_AS_F16.with_borrow_mut(|halves| {
        // One conversion for the chunk's steps (F16C eight at a time where the CPU has it,
        // rounding to nearest even as one at a time does).
        halves.clear();
        halves.resize(steps.len() * 2, half::f16::ZERO);
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(
            &mut halves[..],
            steps.as_flattened(),
        );
        match kind {
            BlockType::Q8_0 => q8_0_blocks(codes, halves, out),
            BlockType::Q4_0 | BlockType::Q5_0 | BlockType::Q4_1 | BlockType::Q5_1 => {
                legacy_blocks(kind, codes, halves, out)
            }
            _ => unreachable!("the K-quants have no one-pass kernel"),
        }
    })
}

thread_local! {
    /// Per-thread (step, minimum) pairs of one chunk as F16.
    static STEPS_AS_F16: std::cell::RefCell<Vec<half::f16>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Q4_0, Q5_0, Q4_1 and Q5_1 blocks from a kernel's levels and (step, minimum) pairs as F16:
/// the step, the minimum (Q4_1, Q5_1), the fifth bits (Q5_0, Q5_1), then 16 bytes whose low
/// nibble is level j and high nibble level j + 16. Moved a word at a time: a byte at a time,
/// packing took a fifth as long as the kernel that made the levels.
fn legacy_blocks(kind: BlockType, codes: &[u8], halves: &[half::f16], out: &mut [u8]) {
    const NIBBLES: u128 = u128::from_le_bytes([0x0F; 16]);
    let with_min = matches!(kind, BlockType::Q4_1 | BlockType::Q5_1);
    let fifth_bit = matches!(kind, BlockType::Q5_0 | BlockType::Q5_1);
    for ((block, codes), pair) in out
        .chunks_exact_mut(kind.block_bytes())
        .zip(codes.chunks_exact(blocks::BLOCK))
        .zip(halves.chunks_exact(2))
    {
        let (first, second) = codes.split_at(blocks::BLOCK / 2);
        let first = u128::from_le_bytes(first.try_into().expect("16 levels"));
        let second = u128::from_le_bytes(second.try_into().expect("16 levels"));
        block[..2].copy_from_slice(&pair[0].to_le_bytes());
        let mut at = 2;
        if with_min {
            block[2..4].copy_from_slice(&pair[1].to_le_bytes());
            at = 4;
        }
        if fifth_bit {
            let high = fifth_bits(first) | fifth_bits(second) << 16;
            block[at..at + 4].copy_from_slice(&high.to_le_bytes());
            at += 4;
        }
        let packed = (first & NIBBLES) | (second & NIBBLES) << 4;
        block[at..at + 16].copy_from_slice(&packed.to_le_bytes());
    }
}

/// Bit 4 of each of the 16 bytes of `levels`, byte i's as bit i.
#[inline]
fn fifth_bits(levels: u128) -> u32 {
    let ones = (levels >> 4) & u128::from_le_bytes([1; 16]);
    // Multiplying eight 0/1 bytes by this gathers them, in order, into the top byte: byte i
    // lands on bit 56 + i, every other partial product below bit 56 or beyond bit 63, and no
    // two on the same bit, so nothing carries.
    let gather = |eight: u64| (eight.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32;
    gather(ones as u64) | gather((ones >> 64) as u64) << 8
}

/// Q8_0 blocks (an f16 step, then 32 signed codes) from a kernel's codes and steps as F16.
fn q8_0_blocks(codes: &[u8], halves: &[half::f16], out: &mut [u8]) {
    let block_bytes = BlockType::Q8_0.block_bytes();
    for ((block, codes), pair) in out
        .chunks_exact_mut(block_bytes)
        .zip(codes.chunks_exact(blocks::BLOCK))
        .zip(halves.chunks_exact(2))
    {
        block[..2].copy_from_slice(&pair[0].to_le_bytes());
        block[2..].copy_from_slice(codes);
    }
}

multiversion! {
    /// [`OnePass::run`] by the portable loops only (the hand-written kernels' scalar twin),
    /// compiled for each SIMD level.
    fn run_portable(
        kernel: OnePass,
        dtype: Dtype,
        group: usize,
        input: &[u8],
        out: &mut [u8],
        codes: Option<&mut CodesOut>,
    ) -> Sums {
        match dtype {
            Dtype::BF16 => run_stored::<Bf16>(kernel, group, input, out, codes),
            Dtype::F32 => run_stored::<F32>(kernel, group, input, out, codes),
            _ => unreachable!("one-pass kernels are chosen for BF16 and F32 only"),
        }
    }
}

/// Each kernel's rule over values stored `width` bytes each, read and written by a dtype's
/// functions (plain functions and trait methods, all inlined: a closure here would stay out of
/// line, compiled for the baseline target).
#[inline(always)]
fn run_stored<C: Codec>(
    kernel: OnePass,
    group: usize,
    input: &[u8],
    out: &mut [u8],
    codes: Option<&mut CodesOut>,
) -> Sums {
    match kernel {
        OnePass::Int { scheme, tensor } => {
            each_group::<C>(group, input, out, IntRule::new(scheme, tensor), codes)
        }
        OnePass::Fp8(rule) => each_group::<C>(group, input, out, rule, codes),
        OnePass::Q8_0 => each_group::<C>(group, input, out, Q8Rule, codes),
        OnePass::Q4_0 => each_group::<C>(group, input, out, CenteredRule::<8>, codes),
        OnePass::Q5_0 => each_group::<C>(group, input, out, CenteredRule::<16>, codes),
        OnePass::WithMin(rule) => each_group::<C>(group, input, out, rule, codes),
    }
}

/// How a kernel picks a group's parameters and what each value becomes.
trait Rule: Copy {
    type Params: Copy;

    /// Whether [`Rule::params`] looks at the group's range (per-tensor rules do not).
    #[inline(always)]
    fn needs_range(self) -> bool {
        true
    }

    /// The parameters of a group with range `lo..=hi`, whose values are `bytes` in `C`.
    fn params<C: Codec>(self, lo: f32, hi: f32, bytes: &[u8]) -> Self::Params;

    /// What `x` becomes.
    fn value(self, p: Self::Params, x: f32) -> f32;

    /// The byte stored for `x` (see [`CodesOut::codes`]).
    fn code(self, p: Self::Params, x: f32) -> u8;

    /// The group's parameters as [`CodesOut::groups`] holds them.
    fn stored_params(self, p: Self::Params) -> [f32; 2];

    /// What each of `x` becomes.
    #[inline(always)]
    fn values(self, p: Self::Params, x: &[f32; BLOCK], y: &mut [f32; BLOCK]) {
        for i in 0..BLOCK {
            y[i] = self.value(p, x[i]);
        }
    }
}

#[derive(Clone, Copy)]
struct IntRule {
    scheme: IntScheme,
    tensor: Option<(QParams, f32)>,
    qmin: f32,
    qmax: f32,
}

impl IntRule {
    fn new(scheme: IntScheme, tensor: Option<(QParams, f32)>) -> IntRule {
        IntRule {
            scheme,
            tensor,
            qmin: scheme.qmin() as f32,
            qmax: scheme.qmax() as f32,
        }
    }
}

/// A group's integer parameters, with the reciprocal of the scale when it is finite.
#[derive(Clone, Copy)]
struct IntParams {
    scale: f32,
    zero_point: f32,
    inverse: Option<f32>,
    /// The largest magnitude among the values these parameters quantize.
    amax: f32,
}

/// How far from a rounding tie (x.5) a code computed with the reciprocal must be for the
/// division to round the same way. x · (1/s) is within 2^-22 relative of x / s, and codes
/// that matter lie in [-128, 255], so the two differ by less than 2^-13 there.
const TIE_MARGIN: f32 = 1.0 / 1024.0;

impl Rule for IntRule {
    type Params = IntParams;

    #[inline(always)]
    fn needs_range(self) -> bool {
        self.tensor.is_none()
    }

    #[inline(always)]
    fn params<C: Codec>(self, lo: f32, hi: f32, _: &[u8]) -> IntParams {
        let (p, amax) = match self.tensor {
            Some(tensor) => tensor,
            None => (self.scheme.params(lo, hi), lo.abs().max(hi.abs())),
        };
        let inverse = 1.0 / p.scale;
        IntParams {
            scale: p.scale,
            zero_point: p.zero_point as f32,
            inverse: inverse.is_normal().then_some(inverse),
            amax,
        }
    }

    #[inline(always)]
    fn value(self, p: IntParams, x: f32) -> f32 {
        quantize::fake_value(x, p.scale, p.zero_point, self.qmin, self.qmax)
    }

    #[inline(always)]
    fn code(self, p: IntParams, x: f32) -> u8 {
        quantize::code(x, p.scale, p.zero_point, self.qmin, self.qmax) as i32 as u8
    }

    #[inline(always)]
    fn stored_params(self, p: IntParams) -> [f32; 2] {
        [p.scale, p.zero_point]
    }

    /// The codes by multiplying with the reciprocal (a vector division costs several
    /// multiplications), falling back to the division for the whole block when any code lands
    /// near a tie, where the two could round apart; so the values are exactly the division's.
    #[inline(always)]
    fn values(self, p: IntParams, x: &[f32; BLOCK], y: &mut [f32; BLOCK]) {
        let mut near_tie = 0u32;
        if let Some(inverse) = p.inverse {
            for i in 0..BLOCK {
                let t = x[i] * inverse + p.zero_point;
                let t = if t < self.qmin { self.qmin } else { t };
                let t = if t > self.qmax { self.qmax } else { t };
                let code = t.round_ties_even();
                near_tie |= u32::from(((t - code).abs() - 0.5).abs() < TIE_MARGIN);
                y[i] = (code - p.zero_point) * p.scale;
            }
        }
        if near_tie != 0 || p.inverse.is_none() {
            for i in 0..BLOCK {
                y[i] = self.value(p, x[i]);
            }
        }
    }
}

/// FP8 E4M3 with one scale per row, or the tensor's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fp8Rule {
    /// Per-tensor granularity's scale.
    tensor_scale: Option<f32>,
    /// What each row's own scale is rounded to (compressed-tensors stores scales in the
    /// weight's dtype).
    scale_dtype: ScaleDtype,
}

impl Rule for Fp8Rule {
    type Params = f32;

    #[inline(always)]
    fn needs_range(self) -> bool {
        self.tensor_scale.is_none()
    }

    #[inline(always)]
    fn params<C: Codec>(self, lo: f32, hi: f32, _: &[u8]) -> f32 {
        self.tensor_scale.unwrap_or_else(|| {
            self.scale_dtype
                .round(fp8::scale_for(lo.abs().max(hi.abs())))
        })
    }

    #[inline(always)]
    fn value(self, scale: f32, x: f32) -> f32 {
        fp8::fake_value(x, scale)
    }

    #[inline(always)]
    fn code(self, scale: f32, x: f32) -> u8 {
        fp8::code(x, scale)
    }

    #[inline(always)]
    fn stored_params(self, scale: f32) -> [f32; 2] {
        [scale, 0.0]
    }
}

#[derive(Clone, Copy)]
struct Q8Rule;

impl Rule for Q8Rule {
    type Params = BlockStep;

    #[inline(always)]
    fn params<C: Codec>(self, lo: f32, hi: f32, _: &[u8]) -> BlockStep {
        BlockStep::q8_0(lo.abs().max(hi.abs()))
    }

    #[inline(always)]
    fn value(self, step: BlockStep, x: f32) -> f32 {
        step.q8_0_value(x)
    }

    #[inline(always)]
    fn code(self, step: BlockStep, x: f32) -> u8 {
        step.q8_0_code(x) as i32 as u8
    }

    #[inline(always)]
    fn stored_params(self, step: BlockStep) -> [f32; 2] {
        [step.stored(), 0.0]
    }
}

/// Q4_0 (`LEVELS` 8) and Q5_0 (16): levels either side of a centre, scaled by the block's
/// signed absmax.
#[derive(Clone, Copy)]
struct CenteredRule<const LEVELS: u8>;

impl<const LEVELS: u8> Rule for CenteredRule<LEVELS> {
    type Params = BlockStep;

    #[inline(always)]
    fn params<C: Codec>(self, lo: f32, hi: f32, bytes: &[u8]) -> BlockStep {
        BlockStep::centered::<LEVELS>(q4_0_signed_absmax::<C>(lo, hi, bytes))
    }

    #[inline(always)]
    fn value(self, step: BlockStep, x: f32) -> f32 {
        step.centered_value::<LEVELS>(x)
    }

    #[inline(always)]
    fn code(self, step: BlockStep, x: f32) -> u8 {
        step.centered_code::<LEVELS>(x) as u8
    }

    #[inline(always)]
    fn stored_params(self, step: BlockStep) -> [f32; 2] {
        [step.stored(), 0.0]
    }
}

/// Q4_1 and Q5_1: levels 0..=`top` above the block's minimum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MinRule {
    kind: BlockType,
    top: f32,
}

impl MinRule {
    const Q4_1: MinRule = MinRule {
        kind: BlockType::Q4_1,
        top: 15.0,
    };
    const Q5_1: MinRule = MinRule {
        kind: BlockType::Q5_1,
        top: 31.0,
    };

    /// The highest level.
    pub(crate) fn top(self) -> f32 {
        self.top
    }

    /// The block's range `lo..=hi` (found by lanes), with the reference's signs: it scans in
    /// order and keeps the first of equal values, so a zero end takes the sign of the block's
    /// first zero, where the lanes may have met the other zero first.
    #[inline(always)]
    pub(crate) fn signed_range<C: Codec>(self, lo: f32, hi: f32, bytes: &[u8]) -> (f32, f32) {
        if lo != 0.0 && hi != 0.0 {
            return (lo, hi);
        }
        let first_zero = bytes
            .chunks_exact(C::WIDTH)
            .map(C::read)
            .find(|v| *v == 0.0)
            .unwrap_or(0.0);
        (
            if lo == 0.0 { first_zero } else { lo },
            if hi == 0.0 { first_zero } else { hi },
        )
    }
}

impl Rule for MinRule {
    type Params = blocks::MinStep;

    #[inline(always)]
    fn params<C: Codec>(self, lo: f32, hi: f32, bytes: &[u8]) -> blocks::MinStep {
        let (lo, hi) = self.signed_range::<C>(lo, hi, bytes);
        blocks::MinStep::new(lo, hi, self.top)
    }

    #[inline(always)]
    fn value(self, step: blocks::MinStep, x: f32) -> f32 {
        step.value(x, self.top)
    }

    #[inline(always)]
    fn code(self, step: blocks::MinStep, x: f32) -> u8 {
        step.code(x, self.top) as u8
    }

    #[inline(always)]
    fn stored_params(self, step: blocks::MinStep) -> [f32; 2] {
        step.stored()
    }
}

/// Q4_0's signed absmax of a block stored in `C` with range `lo..=hi` (the block is scanned only
/// when both ends have the same magnitude).
#[inline(always)]
fn q4_0_signed_absmax<C: Codec>(lo: f32, hi: f32, bytes: &[u8]) -> f32 {
    blocks::signed_absmax_of_range(lo, hi, || {
        let mut block = [0f32; blocks::BLOCK];
        for (v, b) in block.iter_mut().zip(bytes.chunks_exact(C::WIDTH)) {
            *v = C::read(b);
        }
        blocks::signed_absmax(&block)
    })
}

/// For each group of `group` values stored in `C`: its parameters, then each value through the
/// rule, stored, and measured against the original.
#[inline(always)]
fn each_group<C: Codec>(
    group: usize,
    input: &[u8],
    out: &mut [u8],
    rule: impl Rule,
    mut codes: Option<&mut CodesOut>,
) -> Sums {
    let (width, group_bytes) = (C::WIDTH, group * C::WIDTH);
    let mut lanes = Lanes::default();
    for (g, (group_in, group_out)) in input
        .chunks_exact(group_bytes)
        .zip(out.chunks_exact_mut(group_bytes))
        .enumerate()
    {
        let (lo, hi) = if rule.needs_range() {
            min_max_stored(group_in, width, C::read)
        } else {
            (0.0, 0.0)
        };
        let p = rule.params::<C>(lo, hi, group_in);
        if let Some(codes) = codes.as_deref_mut() {
            codes.groups.push(rule.stored_params(p));
        }
        for (b, (inp, o)) in group_in
            .chunks_exact(width * BLOCK)
            .zip(group_out.chunks_exact_mut(width * BLOCK))
            .enumerate()
        {
            let mut original = [0f32; BLOCK];
            for i in 0..BLOCK {
                original[i] = C::read(&inp[width * i..]);
            }
            if let Some(codes) = codes.as_deref_mut() {
                let first = g * group + b * BLOCK;
                for (c, &x) in codes.codes[first..first + BLOCK].iter_mut().zip(&original) {
                    *c = rule.code(p, x);
                }
            }
            let mut stored = [0f32; BLOCK];
            rule.values(p, &original, &mut stored);
            for v in &mut stored {
                *v = C::round(*v);
            }
            for ((x, y), o) in original
                .chunks_exact(LANES)
                .zip(stored.chunks_exact(LANES))
                .zip(o.chunks_exact_mut(width * LANES))
            {
                let y: &[f32; LANES] = y.try_into().expect("LANES");
                store_lanes::<C>(y, o);
                lanes.add(x.try_into().expect("LANES"), y);
            }
        }
    }
    lanes.finish(input.len() / width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::quantize::ScaleDtype;

    /// The dispatched kernels (hand-written where the CPU allows) against their portable twins,
    /// on weight-like BF16 values whose row maxima make the scale a power of two, so that many
    /// codes are exact rounding ties, and on the same values, each perturbed, in F32.
    #[test]
    fn dispatched_and_portable_kernels_agree_bit_for_bit() {
        let (rows, cols) = (16, 512);
        let bf16: Vec<u8> =
            crate::numeric::rng::weight_like_bf16_block()[..rows * cols * 2].to_vec();
        let mut values = vec![0f32; rows * cols];
        crate::numeric::codec::decode(Dtype::BF16, &bf16, &mut values);
        for (i, v) in values.iter_mut().enumerate() {
            *v *= 1.0 + (i % 7) as f32 * 0.0137;
        }
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (dtype, input) in [(Dtype::BF16, &bf16), (Dtype::F32, &f32_bytes)] {
            let int = |bits, symmetric, granularity| {
                Step::Int(IntScheme {
                    bits,
                    symmetric,
                    granularity,
                    scale_dtype: ScaleDtype::F32,
                })
            };
            for step in [
                int(8, true, Granularity::Channel),
                int(8, false, Granularity::Group(128)),
                int(4, true, Granularity::Group(32)),
                int(4, false, Granularity::Channel),
                int(2, true, Granularity::Group(64)),
                Step::Fp8 {
                    per_channel: true,
                    scale_dtype: ScaleDtype::F32,
                },
                Step::Fp8 {
                    per_channel: true,
                    scale_dtype: ScaleDtype::Bf16,
                },
                Step::Gguf(BlockType::Q8_0),
                Step::Gguf(BlockType::Q4_0),
                Step::Gguf(BlockType::Q5_0),
                Step::Gguf(BlockType::Q4_1),
                Step::Gguf(BlockType::Q5_1),
            ] {
                let kernel = OnePass::for_steps(&[step], dtype, cols, None, None)
                    .expect("a one-pass kernel");
                let mut dispatched = vec![0u8; input.len()];
                let mut portable = vec![0u8; input.len()];
                let a = kernel.run(dtype, cols, input, &mut dispatched, None);
                let group = kernel.group_len(cols);
                let b = run_portable(kernel, dtype, group, input, &mut portable, None);
                let name = format!("{dtype} {step:?}");
                assert!(dispatched == portable, "{name}: bytes differ");
                assert_eq!(a, b, "{name}: sums differ");
                // With codes: the same values and sums, and the same codes and parameters.
                let (mut codes_a, mut codes_b) = (vec![0u8; rows * cols], vec![0u8; rows * cols]);
                let mut out_a = CodesOut {
                    codes: &mut codes_a,
                    groups: Vec::new(),
                };
                let mut out_b = CodesOut {
                    codes: &mut codes_b,
                    groups: Vec::new(),
                };
                let c = kernel.run(dtype, cols, input, &mut dispatched, Some(&mut out_a));
                let d = run_portable(kernel, dtype, group, input, &mut portable, Some(&mut out_b));
                assert!(dispatched == portable, "{name}: bytes differ with codes");
                assert_eq!((a, b), (c, d), "{name}: sums differ with codes");
                assert_eq!(out_a.groups.len(), rows * cols / group, "{name}");
                let groups_a: Vec<_> = out_a.groups.iter().map(|g| g.map(f32::to_bits)).collect();
                let groups_b: Vec<_> = out_b.groups.iter().map(|g| g.map(f32::to_bits)).collect();
                assert_eq!(groups_a, groups_b, "{name}: parameters differ");
                assert!(codes_a == codes_b, "{name}: codes differ");
            }
        }
    }
}
