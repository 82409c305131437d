//! Synthetic calibration data for the tests and `squeeze bench calibration`: deterministic
//! noise, correlated inputs from one fixed distribution, and (tests) a layer's output error
//! on them.

/// Deterministic values in [-1, 1).
pub(crate) fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Correlated inputs: `samples` × `features`, each a mix of a few shared factors plus noise,
/// with channel scales that differ tenfold (as real activations' do). The mix is fixed, so
/// every seed draws from one distribution.
pub(crate) fn inputs(samples: usize, features: usize, seed: u64) -> Vec<f32> {
    let factors = 4;
    let mix = noise(1234, factors * features);
    let latent = noise(seed + 1, samples * factors);
    let extra = noise(seed + 2, samples * features);
    let mut x = vec![0f32; samples * features];
    for s in 0..samples {
        for f in 0..features {
            let mut v = 0.3 * extra[s * features + f];
            for k in 0..factors {
                v += latent[s * factors + k] * mix[k * features + f];
            }
            let channel = 0.2 + 2.0 * (f % 7) as f32 / 7.0;
            x[s * features + f] = v * channel;
        }
    }
    x
}

#[cfg(test)]
pub(crate) fn output_error(w: &[f32], q: &[f32], x: &[f32], cols: usize) -> f64 {
    let rows = w.len() / cols;
    let samples = x.len() / cols;
    let mut total = 0f64;
    for s in 0..samples {
        for r in 0..rows {
            let mut e = 0f64;
            for c in 0..cols {
                e += f64::from(w[r * cols + c] - q[r * cols + c]) * f64::from(x[s * cols + c]);
            }
            total += e * e;
        }
    }
    total
}
