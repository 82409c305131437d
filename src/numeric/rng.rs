//! The seeded pseudo-random generator every random choice in squeeze draws from (k-means
//! seeding, low-rank sketches, stochastic rounding, evaluation noise), fixed here so that a seed
//! means the same numbers on every machine and release; and the weight-like synthetic values the
//! benchmarks and kernel tests run on.

/// A small, fixed pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator for `seed` and a stream number (e.g. a row index).
    pub fn new(seed: u64, stream: u64) -> SplitMix {
        SplitMix(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 2 MiB of BF16 values shaped like weights (sign, exponent 2^-8..2^-1, random mantissa), a
/// fixed pseudo-random sequence so runs are comparable.
pub fn weight_like_bf16_block() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..(1 << 20))
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = ((state as u16) & 0x807F) | ((119 + (state >> 20) as u16 % 8) << 7);
            bits.to_le_bytes()
        })
        .collect()
}
