//! llama.cpp's block quantization (the blocks GGUF files store; the container is
//! `formats::gguf`): the legacy 32-value block types Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 here, and
//! the 256-value K-quants Q4_K, Q5_K and Q6_K in `kquants`, byte for byte as
//! `quantize_row_*_ref` in ggml-quants.c lays them out and as the `gguf` Python package computes
//! them (shared/reference/formats.md §3.3).
//!
//! Rounding follows the reference exactly: the inverse scale comes from the unrounded f32 scale
//! before the scale is stored as f16 (round to nearest even); Q8_0 rounds half away from zero
//! (`roundf`); the 4/5-bit types add 8.5 / 16.5 / 0.5 to the scaled value and truncate. That sum
//! is two f32 roundings (a product, then an addition), as the `gguf` package and a C build
//! without FMA contraction compute it; a C build that contracts it into one FMA can differ in
//! rare last-code ties.

use half::f16;

use crate::compress::kquants;
use crate::numeric::simd::multiversion;

/// Values per block of the legacy types.
pub const BLOCK: usize = 32;

/// A GGUF block type, named as llama.cpp names it.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockType {
    /// 8-bit codes, one f16 scale: 34 bytes per 32 values.
    #[serde(rename = "Q8_0")]
    Q8_0,
    /// 4-bit codes around 8, one f16 scale: 18 bytes.
    #[serde(rename = "Q4_0")]
    Q4_0,
    /// 4-bit codes, f16 scale and minimum: 20 bytes.
    #[serde(rename = "Q4_1")]
    Q4_1,
    /// 5-bit codes around 16, one f16 scale: 22 bytes.
    #[serde(rename = "Q5_0")]
    Q5_0,
    /// 5-bit codes, f16 scale and minimum: 24 bytes.
    #[serde(rename = "Q5_1")]
    Q5_1,
    /// 4-bit codes in super-blocks of 256 with 6-bit sub-block scales and mins: 144 bytes.
    #[serde(rename = "Q4_K")]
    Q4_K,
    /// 5-bit codes in super-blocks of 256 with 6-bit sub-block scales and mins: 176 bytes.
    #[serde(rename = "Q5_K")]
    Q5_K,
    /// 6-bit codes in super-blocks of 256 with 8-bit sub-block scales: 210 bytes.
    #[serde(rename = "Q6_K")]
    Q6_K,
}

impl BlockType {
    /// The largest weight magnitude this type is taken to store: its blocks keep their scale
    /// (and minimum) as F16, at most 65504, times the largest code. Beyond it the scale would
    /// be infinite (llama-quantize writes such blocks; squeeze refuses the tensor). For the
    /// K-quants the bound leaves out the sub-block scales, so it is conservative: about 10^6,
    /// far above any trained weight.
    pub fn largest_magnitude(self) -> f32 {
        let largest_code: f32 = match self {
            BlockType::Q8_0 => 127.0,
            BlockType::Q4_0 => 8.0,
            BlockType::Q4_1 | BlockType::Q4_K => 15.0,
            BlockType::Q5_0 => 16.0,
            BlockType::Q5_1 | BlockType::Q5_K => 31.0,
            BlockType::Q6_K => 32.0,
        };
        half::f16::MAX.to_f32() * largest_code
    }

    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q4_K => kquants::Q4_K_BYTES,
            BlockType::Q5_K => kquants::Q5_K_BYTES,
            BlockType::Q6_K => kquants::Q6_K_BYTES,
        }
    }

    /// Values per block (rows must be a multiple of it).
    pub fn block_len(self) -> usize {
        match self {
            BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => kquants::SUPER_BLOCK,
            _ => BLOCK,
        }
    }

    /// The name GGUF and llama.cpp use.
    pub fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q5_1 => "Q5_1",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q5_K => "Q5_K",
            BlockType::Q6_K => "Q6_K",
        }
    }
}

/// The value with the largest magnitude, keeping its sign (the first one on ties).
#[inline(always)]
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    kquants::largest_magnitude(x).0
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// Splits 32 codes into 16 bytes: low nibble = code j, high nibble = code j + 16.
#[inline(always)]
fn pack_nibbles(codes: &[u8; BLOCK], out: &mut [u8]) {
    for j in 0..BLOCK / 2 {
        out[j] = (codes[j] & 0x0F) | ((codes[j + BLOCK / 2] & 0x0F) << 4);
    }
}

/// Bit 4 of each of 32 codes, as a little-endian u32 (bit i = code i).
#[inline(always)]
fn high_bits(codes: &[u8; BLOCK]) -> [u8; 4] {
    let mut qh = 0u32;
    for (i, &q) in codes.iter().enumerate() {
        qh |= u32::from((q >> 4) & 1) << i;
    }
    qh.to_le_bytes()
}

/// Quantizes one block (`kind.block_len()` values) into `out` (`kind.block_bytes()` bytes).
#[inline(always)]
pub fn quantize_block(kind: BlockType, x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), kind.block_len());
    let mut codes = [0u8; BLOCK];
    match kind {
        BlockType::Q4_K => kquants::quantize_q4_k(x, out),
        BlockType::Q5_K => kquants::quantize_q5_k(x, out),
        BlockType::Q6_K => kquants::quantize_q6_k(x, out),
        BlockType::Q8_0 => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = inverse(d);
            out[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            for (o, &v) in out[2..2 + BLOCK].iter_mut().zip(x) {
                // `roundf`: half away from zero.
                *o = (v * id).round() as i8 as u8;
            }
        }
        BlockType::Q4_0 | BlockType::Q5_0 => {
            let (levels, offset, top) = if kind == BlockType::Q4_0 {
                (-8.0f32, 8.5f32, 15u8)
            } else {
                (-16.0, 16.5, 31)
            };
            let d = signed_absmax(x) / levels;
            let id = inverse(d);
            for (c, &v) in codes.iter_mut().zip(x) {
                // Truncation toward zero of a value that is at least 0.5 here.
                *c = ((v * id + offset) as i8 as u8).min(top);
            }
            out[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            if kind == BlockType::Q4_0 {
                pack_nibbles(&codes, &mut out[2..18]);
            } else {
                out[2..6].copy_from_slice(&high_bits(&codes));
                pack_nibbles(&codes, &mut out[6..22]);
            }
        }
        BlockType::Q4_1 | BlockType::Q5_1 => {
            let (steps, top) = if kind == BlockType::Q4_1 {
                (15.0f32, 15u8)
            } else {
                (31.0, 31)
            };
            let min = x
                .iter()
                .fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
            let max = x
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            let d = (max - min) / steps;
            let id = inverse(d);
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (((v - min) * id + 0.5) as i8 as u8).min(top);
            }
            out[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            out[2..4].copy_from_slice(&f16::from_f32(min).to_bits().to_le_bytes());
            if kind == BlockType::Q4_1 {
                pack_nibbles(&codes, &mut out[4..20]);
            } else {
                out[4..8].copy_from_slice(&high_bits(&codes));
                pack_nibbles(&codes, &mut out[8..24]);
            }
        }
    }
}

fn f16_at(bytes: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32()
}

/// The 32 codes of a 4-bit payload plus optional fifth bits.
#[inline(always)]
fn unpack(qs: &[u8], qh: Option<&[u8]>) -> [u8; BLOCK] {
    let mut codes = [0u8; BLOCK];
    for j in 0..BLOCK / 2 {
        codes[j] = qs[j] & 0x0F;
        codes[j + BLOCK / 2] = qs[j] >> 4;
    }
    if let Some(qh) = qh {
        let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (i, c) in codes.iter_mut().enumerate() {
            *c |= (((bits >> i) & 1) as u8) << 4;
        }
    }
    codes
}

/// Decodes one block into `kind.block_len()` values.
#[inline(always)]
pub fn dequantize_block(kind: BlockType, block: &[u8], out: &mut [f32]) {
    let d = f16_at(block);
    match kind {
        BlockType::Q4_K => kquants::dequantize_q4_k(block, out),
        BlockType::Q5_K => kquants::dequantize_q5_k(block, out),
        BlockType::Q6_K => kquants::dequantize_q6_k(block, out),
        BlockType::Q8_0 => {
            for (o, &q) in out.iter_mut().zip(&block[2..2 + BLOCK]) {
                *o = f32::from(q as i8) * d;
            }
        }
        BlockType::Q4_0 => {
            for (o, q) in out.iter_mut().zip(unpack(&block[2..18], None)) {
                *o = (f32::from(q) - 8.0) * d;
            }
        }
        BlockType::Q5_0 => {
            for (o, q) in out
                .iter_mut()
                .zip(unpack(&block[6..22], Some(&block[2..6])))
            {
                *o = (f32::from(q) - 16.0) * d;
            }
        }
        BlockType::Q4_1 => {
            let m = f16_at(&block[2..4]);
            for (o, q) in out.iter_mut().zip(unpack(&block[4..20], None)) {
                *o = f32::from(q) * d + m;
            }
        }
        BlockType::Q5_1 => {
            let m = f16_at(&block[2..4]);
            for (o, q) in out
                .iter_mut()
                .zip(unpack(&block[8..24], Some(&block[4..8])))
            {
                *o = f32::from(q) * d + m;
            }
        }
    }
}

/// Quantizes rows (length a multiple of the block) into consecutive blocks.
pub fn quantize(kind: BlockType, values: &[f32], out: &mut [u8]) {
    for (x, block) in values
        .chunks_exact(kind.block_len())
        .zip(out.chunks_exact_mut(kind.block_bytes()))
    {
        quantize_block(kind, x, block);
    }
}

multiversion! {
    /// Replaces values (length a multiple of the block) by what their blocks decode to.
    pub fn fake_quantize(kind: BlockType, values: &mut [f32]) {
        match kind {
            // Plain loops: an iterator adaptor may stay out of line, compiled for the baseline.
            BlockType::Q8_0 => {
                for x in values.chunks_exact_mut(BLOCK) {
                    fake_q8_0(x);
                }
            }
            BlockType::Q4_0 => {
                for x in values.chunks_exact_mut(BLOCK) {
                    fake_q4_0(x);
                }
            }
            _ => {
                let mut block = [0u8; kquants::Q6_K_BYTES];
                for x in values.chunks_exact_mut(kind.block_len()) {
                    let bytes = &mut block[..kind.block_bytes()];
                    quantize_block(kind, x, bytes);
                    dequantize_block(kind, bytes, x);
                }
            }
        }
    }
}

/// `roundf` (half away from zero) in selects the vectoriser keeps in lanes; exact for
/// |x| < 2^23, and +0 for a zero result as an integer round trip gives.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    let t = x.trunc();
    let away = if x < 0.0 { t - 1.0 } else { t + 1.0 };
    let r = if (x - t).abs() >= 0.5 { away } else { t };
    r + 0.0
}

/// A Q8_0 or Q4_0 block's inverse step (for quantizing) and its f16-rounded step (for
/// decoding), as the reference computes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockStep {
    inverse: f32,
    stored: f32,
}

impl BlockStep {
    /// Q8_0's step for a block whose largest magnitude is `amax`.
    #[inline(always)]
    pub(crate) fn q8_0(amax: f32) -> BlockStep {
        BlockStep::of(amax / 127.0)
    }

    #[inline(always)]
    fn of(d: f32) -> BlockStep {
        BlockStep {
            inverse: inverse(d),
            stored: f16::from_f32(d).to_f32(),
        }
    }

    /// The step as the block stores it (an f16, widened).
    #[inline(always)]
    pub(crate) fn stored(self) -> f32 {
        self.stored
    }

    /// What a Q8_0 block with this step decodes `x` to.
    #[inline(always)]
    pub(crate) fn q8_0_value(self, x: f32) -> f32 {
        self.q8_0_code(x) * self.stored
    }

    /// `x`'s Q8_0 code, -127..=127 (as a float).
    #[inline(always)]
    pub(crate) fn q8_0_code(self, x: f32) -> f32 {
        round_half_away(x * self.inverse)
    }

    /// Q4_0's (`LEVELS` 8) or Q5_0's (16) step for a block whose largest-magnitude value
    /// (with its sign) is `signed_absmax`: `LEVELS` levels either side of the centre.
    #[inline(always)]
    pub(crate) fn centered<const LEVELS: u8>(signed_absmax: f32) -> BlockStep {
        BlockStep::of(signed_absmax / -f32::from(LEVELS))
    }

    /// What a Q4_0 / Q5_0 block with this step decodes `x` to.
    #[inline(always)]
    pub(crate) fn centered_value<const LEVELS: u8>(self, x: f32) -> f32 {
        (self.centered_code::<LEVELS>(x) - f32::from(LEVELS)) * self.stored
    }

    /// `x`'s Q4_0 / Q5_0 level, 0..=2·`LEVELS` − 1 (as a float).
    #[inline(always)]
    pub(crate) fn centered_code<const LEVELS: u8>(self, x: f32) -> f32 {
        // The shifted value lies in [0.5, 2·LEVELS + 0.5]: truncation is the reference's
        // integer cast.
        let levels = f32::from(LEVELS);
        let top = 2.0 * levels - 1.0;
        let q = (x * self.inverse + (levels + 0.5)).trunc();
        if q > top { top } else { q }
    }
}

/// A Q4_1 or Q5_1 block's step and minimum: unrounded for quantizing, as the reference uses
/// them, and f16-rounded for decoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MinStep {
    min: f32,
    inverse: f32,
    stored_step: f32,
    stored_min: f32,
}

impl MinStep {
    /// The block with smallest value `min` and largest `max`, coded in levels 0..=`top`.
    #[inline(always)]
    pub(crate) fn new(min: f32, max: f32, top: f32) -> MinStep {
        let d = (max - min) / top;
        MinStep {
            min,
            inverse: inverse(d),
            stored_step: f16::from_f32(d).to_f32(),
            stored_min: f16::from_f32(min).to_f32(),
        }
    }

    /// `x`'s level, 0..=`top` (as a float).
    #[inline(always)]
    pub(crate) fn code(self, x: f32, top: f32) -> f32 {
        // At least 0.5: truncation is the reference's integer cast.
        let q = ((x - self.min) * self.inverse + 0.5).trunc();
        if q > top { top } else { q }
    }

    /// What the block decodes `x` to: level × step + minimum, two roundings as the reference.
    #[inline(always)]
    pub(crate) fn value(self, x: f32, top: f32) -> f32 {
        self.code(x, top) * self.stored_step + self.stored_min
    }

    /// (step, minimum) as the block stores them, widened.
    #[inline(always)]
    pub(crate) fn stored(self) -> [f32; 2] {
        [self.stored_step, self.stored_min]
    }
}

/// Q4_0's signed absmax of a block from its smallest and largest value, falling back to the
/// scan (which keeps the first on ties) when they have the same magnitude.
#[inline(always)]
pub(crate) fn signed_absmax_of_range(lo: f32, hi: f32, block: impl FnOnce() -> f32) -> f32 {
    let (high_wins, low_wins) = (hi > -lo, -lo > hi);
    if !(high_wins | low_wins) {
        return block();
    }
    // A select on the bits rather than a branch: which end wins is a coin toss per block,
    // and a mispredicted branch here cost a tenth of the Q4_0 pass.
    let high = u32::from(high_wins).wrapping_neg();
    f32::from_bits(hi.to_bits() & high | lo.to_bits() & !high)
}

/// Q8_0 quantized and decoded in place, without the bytes: the same operations as
/// [`quantize_block`] then [`dequantize_block`], so the same values.
#[inline(always)]
fn fake_q8_0(x: &mut [f32]) {
    let x: &mut [f32; BLOCK] = x.try_into().expect("a block");
    let mut amax = [0f32; 8];
    for lanes in x.chunks_exact(8) {
        for i in 0..8 {
            let a = lanes[i].abs();
            amax[i] = if a > amax[i] { a } else { amax[i] };
        }
    }
    let mut largest = 0f32;
    for a in amax {
        largest = if a > largest { a } else { largest };
    }
    let step = BlockStep::q8_0(largest);
    for v in x.iter_mut() {
        *v = step.q8_0_value(*v);
    }
}

/// Q4_0 quantized and decoded in place, as [`fake_q8_0`] is for Q8_0.
#[inline(always)]
fn fake_q4_0(x: &mut [f32]) {
    let step = BlockStep::centered::<8>(signed_absmax(x));
    for v in x.iter_mut() {
        *v = step.centered_value::<8>(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [BlockType; 5] = [
        BlockType::Q8_0,
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
    ];

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2_000_001) as f32 / 1e6 - 1.0
            })
            .collect()
    }

    #[test]
    fn the_in_place_paths_equal_quantizing_to_bytes_and_decoding() {
        let mut data = noise(32 * 200, 5);
        data[..32].fill(0.0);
        data[32..64].fill(-0.0);
        data[64..96].fill(0.25);
        for (i, v) in data[96..128].iter_mut().enumerate() {
            // Values landing exactly on half steps.
            *v = (i as f32 - 16.0) * 0.5 / 127.0 * 16.0;
        }
        for kind in [BlockType::Q8_0, BlockType::Q4_0] {
            let mut fast = data.clone();
            fake_quantize(kind, &mut fast);
            let mut slow = data.clone();
            let mut bytes = [0u8; 34];
            for x in slow.chunks_exact_mut(BLOCK) {
                quantize_block(kind, x, &mut bytes[..kind.block_bytes()]);
                dequantize_block(kind, &bytes[..kind.block_bytes()], x);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&slow), "{}", kind.name());
        }
        for x in [0.5f32, -0.5, 1.5, -2.5, 0.49999997, -0.3, 126.5] {
            assert_eq!(
                round_half_away(x).to_bits(),
                (x.round() as i8 as f32).to_bits(),
                "{x}"
            );
        }
    }

    #[test]
    fn the_error_stays_within_half_a_step_plus_the_f16_scale_rounding() {
        for kind in ALL {
            let values = noise(32 * 64, 9);
            let mut got = values.clone();
            fake_quantize(kind, &mut got);
            for (block, (x, y)) in values.chunks(32).zip(got.chunks(32)).enumerate() {
                let (lo, hi) = x
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let levels = match kind {
                    BlockType::Q8_0 => 254.0,
                    BlockType::Q4_0 | BlockType::Q4_1 => 15.0,
                    BlockType::Q5_0 | BlockType::Q5_1 => 31.0,
                    BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => {
                        unreachable!("legacy types only")
                    }
                };
                let step = (hi - lo).max(2.0 * lo.abs().max(hi.abs())) / levels;
                // Q4_0 and Q5_0 put the signed extreme at the code range's end, so a value of the
                // opposite sign near that magnitude is one whole step off.
                let bound = match kind {
                    BlockType::Q4_0 | BlockType::Q5_0 => step * 1.01,
                    _ => step * 0.51,
                };
                for (a, b) in x.iter().zip(y) {
                    assert!(
                        (a - b).abs() <= bound + 2e-3 * a.abs().max(step),
                        "{kind:?} block {block}: {a} -> {b} (step {step})"
                    );
                }
            }
        }
    }

    #[test]
    fn zeros_and_constant_blocks_are_exact_where_the_format_allows() {
        for kind in ALL {
            let mut zeros = vec![0f32; 32];
            fake_quantize(kind, &mut zeros);
            assert!(zeros.iter().all(|v| *v == 0.0), "{kind:?}");
        }
    }

    #[test]
    fn q4_0_packs_elements_j_and_j_plus_16_in_one_byte() {
        let mut x = [0f32; 32];
        x[0] = -8.0; // the signed absmax: d = 1
        x[16] = 7.0;
        let mut out = [0u8; 18];
        quantize_block(BlockType::Q4_0, &x, &mut out);
        assert_eq!(f16_at(&out), 1.0);
        // code = trunc(x / d + 8.5): -8 -> 0, 7 -> 15, 0 -> 8.
        assert_eq!(out[2], 0x0F << 4);
        assert_eq!(out[3], 0x88);
    }
}
