//! NF4 (4-bit NormalFloat, as bitsandbytes stores it for transformers): blocks of 64 values of
//! the flattened tensor (crossing row boundaries; a trailing partial block has its own scale),
//! each scaled by its absmax to [−1, 1] and mapped to the nearest of 16 fixed levels, exact ties
//! to the lower level. Reference: bitsandbytes `functional.py::get_4bit_type("nf4")` and the
//! quantizer in `backends/default/ops.py` (shared/reference/formats.md §4).

use crate::numeric::simd::multiversion;

/// Values per scale.
pub const BLOCK: usize = 64;

/// The 16 NF4 levels; a stored nibble is an index into this table.
pub const LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Midpoints between consecutive levels, computed in f32 as bitsandbytes does.
fn midpoints() -> [f32; 15] {
    std::array::from_fn(|i| (LEVELS[i] + LEVELS[i + 1]) / 2.0)
}

/// The nibble for a value already scaled to [−1, 1]: the number of midpoints strictly below it.
#[inline]
pub fn code(scaled: f32, midpoints: &[f32; 15]) -> u8 {
    midpoints.iter().map(|&m| u8::from(m < scaled)).sum()
}

/// Encodes one block: writes its nibbles (one per byte) into `codes` and returns the absmax.
pub fn encode_block(values: &[f32], codes: &mut [u8]) -> f32 {
    let midpoints = midpoints();
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inverse = 1.0 / absmax;
    for (c, &v) in codes.iter_mut().zip(values) {
        *c = if absmax == 0.0 {
            7
        } else {
            code((v * inverse).clamp(-1.0, 1.0), &midpoints)
        };
    }
    absmax
}

multiversion! {
    /// Replaces every value by its NF4 value, block by block from the start of `values` (which
    /// must begin on a block boundary of the flattened tensor).
    pub fn fake_quantize(values: &mut [f32]) {
        let midpoints = midpoints();
        for block in values.chunks_mut(BLOCK) {
            let mut absmax = 0f32;
            for v in block.iter() {
                let a = v.abs();
                absmax = if a > absmax { a } else { absmax };
            }
            if absmax == 0.0 {
                block.fill(0.0);
                continue;
            }
            let inverse = 1.0 / absmax;
            for v in block.iter_mut() {
                let scaled = (*v * inverse).clamp(-1.0, 1.0);
                // The level index counts the midpoints below; the levels are looked up by
                // selects so the loop stays in vector lanes.
                let mut level = LEVELS[0];
                for (m, &next) in midpoints.iter().zip(&LEVELS[1..]) {
                    level = if *m < scaled { next } else { level };
                }
                *v = level * absmax;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_the_published_table() {
        let published = [
            -1.0,
            -0.6961928009986877,
            -0.5250730514526367,
            -0.39491748809814453,
            -0.28444138169288635,
            -0.18477343022823334,
            -0.09105003625154495,
            0.0,
            0.07958029955625534,
            0.16093020141124725,
            0.24611230194568634,
            0.33791524171829224,
            0.44070982933044434,
            0.5626170039176941,
            0.7229568362236023,
            1.0,
        ];
        for (ours, theirs) in LEVELS.iter().zip(published) {
            assert_eq!(*ours, theirs as f32);
        }
        assert_eq!(midpoints()[7], 0.039_790_15);
    }

    #[test]
    fn nearest_level_with_ties_down_against_an_f64_reference() {
        let mut state = 77u64;
        let values: Vec<f32> = (0..BLOCK * 5 + 13)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 2_000_001) as f32 / 1e6 - 1.0) * 3.0
            })
            .collect();
        let mut got = values.clone();
        fake_quantize(&mut got);
        for (block, out) in values.chunks(BLOCK).zip(got.chunks(BLOCK)) {
            let absmax = block.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            for (&x, &y) in block.iter().zip(out) {
                let s = f64::from(x) / absmax;
                let best = LEVELS
                    .iter()
                    .map(|&l| (f64::from(l) - s).abs())
                    .fold(f64::INFINITY, f64::min);
                let ours = (f64::from(y) / absmax - s).abs();
                assert!(ours <= best + 1e-6, "{x}: {y} is not the nearest level");
            }
        }
    }

    #[test]
    fn a_midpoint_goes_to_the_lower_level_and_zero_blocks_stay_zero() {
        let mid = midpoints();
        assert_eq!(code(mid[7], &mid), 7);
        assert_eq!(code(f32::from_bits(mid[7].to_bits() + 1), &mid), 8);
        assert_eq!(code(-1.0, &mid), 0);
        assert_eq!(code(1.0, &mid), 15);
        let mut zeros = vec![0f32; 70];
        fake_quantize(&mut zeros);
        assert!(zeros.iter().all(|v| *v == 0.0));
        let mut codes = [0u8; 3];
        assert_eq!(encode_block(&[0.0, -2.0, 1.0], &mut codes), 2.0);
        assert_eq!(codes, [7, 0, 12]);
    }
}
