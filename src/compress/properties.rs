//! Property tests of every kernel step through [`tensor::transform`], on awkward tensors (one
//! row, one column, odd sizes, outliers, all-zero rows, ±0, subnormals, constants), each against
//! a plain f64 scalar reference or the defining property of the method. Longer than other
//! files because it is a table of cases, one short test per step, read one at a time.

use crate::compress::encoded::Encoded;
use crate::compress::prune::Norm;
use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};
use crate::compress::step::Step;
use crate::compress::tensor::{self, TensorView, TransformError};
use crate::compress::{blocks, nf4};
use crate::numeric::Cancel;
use crate::numeric::Dtype;

/// A deterministic stream of awkward values.
struct Values(u64);

impl Values {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal values with rare outliers, zeros of both signs and subnormals.
    fn weight(&mut self) -> f32 {
        let u = self.next_unit();
        let normal = (0..4).map(|_| self.next_unit()).sum::<f64>() - 2.0;
        match (u * 1000.0) as u32 {
            0..=4 => (normal * 40.0) as f32,
            5..=9 => 0.0,
            10..=14 => -0.0,
            15..=19 => f32::from_bits(1 + (self.next_unit() * 1000.0) as u32),
            _ => (normal * 0.05) as f32,
        }
    }
}

/// A named tensor of f32 values.
struct Case {
    name: String,
    shape: Vec<u64>,
    values: Vec<f32>,
}

impl Case {
    /// The values as a tensor of `dtype` stores them.
    fn stored_as(&self, dtype: Dtype) -> Vec<u8> {
        let mut bytes = vec![0u8; self.values.len() * crate::numeric::float_width(dtype)];
        crate::numeric::codec::encode(dtype, &self.values, &mut bytes);
        bytes
    }

    fn cols(&self) -> usize {
        if self.shape.len() <= 1 {
            self.values.len()
        } else {
            self.shape[1..].iter().product::<u64>() as usize
        }
    }
}

/// Awkward tensors whose rows are multiples of `row_multiple`.
fn cases(row_multiple: usize) -> Vec<Case> {
    let mut values = Values(0x5EED);
    let mut out = Vec::new();
    let shapes: Vec<Vec<u64>> = vec![
        vec![1, 1],
        vec![1, 7],
        vec![7, 1],
        vec![3, 13],
        vec![1, 64],
        vec![5, 96],
        vec![33, 128],
        vec![2, 3, 64],
        vec![1000],
        vec![300, 544],
    ];
    for shape in shapes {
        let mut shape = shape;
        let last = shape.len() - 1;
        let cols: u64 = if shape.len() == 1 {
            shape[0]
        } else {
            shape[1..].iter().product()
        };
        if !(cols as usize).is_multiple_of(row_multiple) {
            shape[last] = shape[last].next_multiple_of(row_multiple as u64);
        }
        let n = shape.iter().product::<u64>() as usize;
        let mut v: Vec<f32> = (0..n).map(|_| values.weight()).collect();
        let cols = if shape.len() == 1 {
            n
        } else {
            n / shape[0] as usize
        };
        if n / cols > 2 {
            v[cols..2 * cols].fill(0.0); // an all-zero row
        }
        out.push(Case {
            name: format!("{shape:?}"),
            shape,
            values: v,
        });
    }
    let n = 4 * 64;
    out.push(Case {
        name: "constant".into(),
        shape: vec![4, 64],
        values: vec![0.37; n],
    });
    out.push(Case {
        name: "all zero".into(),
        shape: vec![4, 64],
        values: vec![0.0; n],
    });
    out
}

fn run(case: &Case, steps: &[Step]) -> Result<(Vec<f32>, tensor::Fidelity), TransformError> {
    let bytes: Vec<u8> = case.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView {
        calibrated: None,
        bytes: &bytes,
        dtype: Dtype::F32,
        shape: &case.shape,
    };
    let (out, fidelity) = tensor::transform(&view, steps, &Cancel::new())?;
    let values = out
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok((values, fidelity))
}

fn int(bits: u8, symmetric: bool, granularity: Granularity) -> IntScheme {
    IntScheme {
        bits,
        symmetric,
        granularity,
        scale_dtype: ScaleDtype::F32,
    }
}

/// The f64 reference of the compressed-tensors integer convention for one group, returning
/// the dequantized values and the step.
fn int_reference(values: &[f32], bits: u8, symmetric: bool) -> (Vec<f64>, f64) {
    let qmin = -(2f64.powi(i32::from(bits) - 1));
    let qmax = 2f64.powi(i32::from(bits) - 1) - 1.0;
    let lo = values.iter().map(|&v| f64::from(v)).fold(0.0, f64::min);
    let hi = values.iter().map(|&v| f64::from(v)).fold(0.0, f64::max);
    let (mut scale, zp) = if symmetric {
        (lo.abs().max(hi.abs()) / ((qmax - qmin) / 2.0), 0.0)
    } else {
        ((hi - lo) / (qmax - qmin), f64::NAN)
    };
    if scale == 0.0 {
        scale = f64::from(f32::EPSILON);
    }
    let zp = if symmetric {
        zp
    } else {
        (qmin - lo / scale).clamp(qmin, qmax).round_ties_even()
    };
    let out = values
        .iter()
        .map(|&x| {
            ((f64::from(x) / scale + zp)
                .clamp(qmin, qmax)
                .round_ties_even()
                - zp)
                * scale
        })
        .collect();
    (out, scale)
}

#[test]
fn integer_quantization_matches_the_f64_reference_on_awkward_tensors() {
    for case in cases(16) {
        for bits in [2, 3, 4, 8] {
            for symmetric in [true, false] {
                for granularity in [Granularity::Channel, Granularity::Group(16)] {
                    let group = match granularity {
                        Granularity::Group(n) => n,
                        _ => case.cols(),
                    };
                    let scheme = int(bits, symmetric, granularity);
                    let (got, _) = run(&case, &[Step::Int(scheme)]).unwrap();
                    for (g, x) in got.chunks(group).zip(case.values.chunks(group)) {
                        let (want, step) = int_reference(x, bits, symmetric);
                        let codes_in_range = g.iter().all(|v| {
                            f64::from(*v).abs() <= step * 2f64.powi(i32::from(bits)) * 1.0001
                        });
                        assert!(codes_in_range, "{}: codes out of range", case.name);
                        for ((a, b), &orig) in g.iter().zip(&want).zip(x) {
                            let diff = (f64::from(*a) - b).abs();
                            // f32 arithmetic may flip a code sitting exactly on a boundary.
                            assert!(
                                diff <= step * 1.0001 + 1e-30,
                                "{} int{bits} sym {symmetric}: {a} vs {b} (x {orig})",
                                case.name
                            );
                            // Within half a step of the original, the step being the scale.
                            assert!(
                                (f64::from(*a) - f64::from(orig)).abs() <= step * 0.5001 + 1e-30,
                                "{} int{bits}: error above half a step",
                                case.name
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn per_tensor_integer_scale_covers_the_whole_tensor() {
    for case in cases(1) {
        let (got, _) = run(&case, &[Step::Int(int(8, true, Granularity::Tensor))]).unwrap();
        let (want, step) = int_reference(&case.values, 8, true);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() <= step * 1.0001 + 1e-30,
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn fp8_error_is_within_half_an_e4m3_step() {
    for case in cases(1) {
        let (got, _) = run(
            &case,
            &[Step::Fp8 {
                per_channel: true,
                scale_dtype: ScaleDtype::F32,
            }],
        )
        .unwrap();
        let cols = case.cols();
        for (g, x) in got.chunks(cols).zip(case.values.chunks(cols)) {
            let absmax = x.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            let scale = if absmax == 0.0 { 1.0 } else { absmax / 448.0 };
            for (&a, &b) in g.iter().zip(x) {
                let y = f64::from(b) / scale;
                // E4M3 has 3 mantissa bits; below 2^-6 its steps are the subnormal 2^-9.
                let exponent = y.abs().max(2f64.powi(-6)).log2().floor();
                let half_step = 2f64.powf(exponent - 3.0) / 2.0;
                let err = (f64::from(a) / scale - y).abs();
                assert!(err <= half_step * 1.01 + 1e-6, "{}: {b} -> {a}", case.name);
            }
        }
    }
}

#[test]
fn nf4_picks_the_nearest_level_of_each_block_of_the_flattened_tensor() {
    for case in cases(1) {
        let (got, _) = run(&case, &[Step::Nf4]).unwrap();
        for (g, x) in got.chunks(nf4::BLOCK).zip(case.values.chunks(nf4::BLOCK)) {
            let absmax = x.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            for (&a, &b) in g.iter().zip(x) {
                if absmax == 0.0 {
                    assert_eq!(a, 0.0);
                    continue;
                }
                let s = f64::from(b) / absmax;
                let best = nf4::LEVELS
                    .iter()
                    .map(|&l| (f64::from(l) - s).abs())
                    .fold(f64::INFINITY, f64::min);
                let err = (f64::from(a) / absmax - s).abs();
                assert!(err <= best + 1e-6, "{}: {b} -> {a}", case.name);
            }
        }
    }
}

#[test]
fn gguf_types_decode_within_their_block_bound() {
    for case in cases(blocks::BLOCK) {
        for kind in [
            blocks::BlockType::Q8_0,
            blocks::BlockType::Q4_0,
            blocks::BlockType::Q4_1,
            blocks::BlockType::Q5_0,
            blocks::BlockType::Q5_1,
        ] {
            let (got, _) = run(&case, &[Step::Gguf(kind)]).unwrap();
            for (g, x) in got
                .chunks(blocks::BLOCK)
                .zip(case.values.chunks(blocks::BLOCK))
            {
                let lo = x.iter().fold(0f64, |m, v| m.min(f64::from(*v)));
                let hi = x.iter().fold(0f64, |m, v| m.max(f64::from(*v)));
                let absmax = lo.abs().max(hi);
                let (lo, hi) = (
                    x.iter().fold(f64::INFINITY, |m, v| m.min(f64::from(*v))),
                    x.iter()
                        .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v))),
                );
                // Symmetric types put the signed absmax at the far code, so the other side
                // stops one step short: a whole step of error there. Offset types err by half
                // a step. Both add the f16 rounding of the scale (and of the minimum).
                let bound = match kind {
                    blocks::BlockType::Q8_0 => absmax / 127.0 * 0.5,
                    blocks::BlockType::Q4_0 => absmax / 8.0,
                    blocks::BlockType::Q5_0 => absmax / 16.0,
                    blocks::BlockType::Q4_1 => (hi - lo) / 15.0 * 0.5,
                    blocks::BlockType::Q5_1 => (hi - lo) / 31.0 * 0.5,
                    blocks::BlockType::Q4_K | blocks::BlockType::Q5_K | blocks::BlockType::Q6_K => {
                        unreachable!("legacy only")
                    }
                } + (absmax + lo.abs()) * 2f64.powi(-10)
                    + 1e-7;
                for (&a, &b) in g.iter().zip(x) {
                    let err = (f64::from(a) - f64::from(b)).abs();
                    assert!(err <= bound, "{} {}: {b} -> {a}", case.name, kind.name());
                }
            }
        }
    }
}

#[test]
fn magnitude_pruning_hits_the_exact_count_and_keeps_the_largest() {
    for case in cases(1) {
        for sparsity in [0.0, 0.3, 0.5, 0.9] {
            let (got, fidelity) = run(&case, &[Step::MagnitudePrune { sparsity }]).unwrap();
            let n = case.values.len();
            let k = (n as f64 * sparsity).floor() as usize;
            let already_zero = case.values.iter().filter(|v| **v == 0.0).count();
            let zeros = got.iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros, k.max(already_zero), "{} at {sparsity}", case.name);
            assert!((fidelity.sparsity - zeros as f64 / n as f64).abs() < 1e-12);
            let largest_pruned = case
                .values
                .iter()
                .zip(&got)
                .filter(|(_, o)| **o == 0.0)
                .fold(0f32, |m, (x, _)| m.max(x.abs()));
            for (x, o) in case.values.iter().zip(&got) {
                if *o != 0.0 {
                    assert_eq!(x, o, "kept values are unchanged");
                    assert!(
                        x.abs() >= largest_pruned,
                        "{}: kept {x} below a pruned one",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
fn n_m_pattern_holds_in_every_group() {
    for (n, m) in [(2u8, 4u8), (4, 8), (1, 2)] {
        for case in cases(usize::from(m)) {
            let (got, _) = run(&case, &[Step::SemiStructured { n, m }]).unwrap();
            for (g, x) in got
                .chunks(usize::from(m))
                .zip(case.values.chunks(usize::from(m)))
            {
                let kept: Vec<usize> = (0..g.len()).filter(|&i| g[i] != 0.0).collect();
                assert!(
                    kept.len() <= usize::from(n),
                    "{}: {n}:{m} broken",
                    case.name
                );
                let mut magnitudes: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                magnitudes.sort_by(|a, b| b.total_cmp(a));
                let nth = magnitudes[usize::from(n) - 1];
                for i in 0..g.len() {
                    if g[i] != 0.0 {
                        assert_eq!(g[i], x[i]);
                    } else {
                        assert!(
                            x[i].abs() <= nth,
                            "{}: pruned a value above the cut",
                            case.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn channel_pruning_zeros_the_weakest_rows() {
    for case in cases(1) {
        let cols = case.cols();
        let rows = case.values.len() / cols;
        for norm in [Norm::L1, Norm::L2] {
            let (got, _) = run(
                &case,
                &[Step::ChannelPrune {
                    sparsity: 0.5,
                    norm,
                }],
            )
            .unwrap();
            let norm_of = |row: &[f32]| match norm {
                Norm::L1 => row.iter().map(|v| f64::from(v.abs())).sum::<f64>(),
                Norm::L2 => row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>(),
            };
            let dropped: Vec<bool> = got
                .chunks(cols)
                .zip(case.values.chunks(cols))
                .map(|(g, x)| {
                    let zeroed = g.iter().all(|v| *v == 0.0);
                    if !zeroed {
                        assert_eq!(g, x, "kept rows are unchanged");
                    }
                    zeroed && x.iter().any(|v| *v != 0.0)
                })
                .collect();
            let dropped_count = dropped.iter().filter(|d| **d).count();
            assert!(dropped_count <= rows / 2, "{}", case.name);
            let max_dropped = case
                .values
                .chunks(cols)
                .zip(&dropped)
                .filter(|(_, d)| **d)
                .map(|(x, _)| norm_of(x))
                .fold(0.0, f64::max);
            for (x, g) in case.values.chunks(cols).zip(got.chunks(cols)) {
                if g.iter().any(|v| *v != 0.0) {
                    assert!(
                        norm_of(x) >= max_dropped,
                        "{}: a stronger row was dropped",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
fn prune_then_quantize_keeps_the_zeros_and_measures_against_the_original() {
    for case in cases(16) {
        let (pruned, _) = run(&case, &[Step::MagnitudePrune { sparsity: 0.5 }]).unwrap();
        let (both, fidelity) = run(
            &case,
            &[
                Step::MagnitudePrune { sparsity: 0.5 },
                Step::Int(int(4, false, Granularity::Group(16))),
            ],
        )
        .unwrap();
        for (p, b) in pruned.iter().zip(&both) {
            if *p == 0.0 {
                assert_eq!(*b, 0.0, "{}: a pruned zero moved", case.name);
            }
        }
        let err: f64 = case
            .values
            .iter()
            .zip(&both)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        let norm: f64 = case.values.iter().map(|x| f64::from(*x).powi(2)).sum();
        let want = if norm > 0.0 {
            (err / norm).sqrt()
        } else {
            err.sqrt()
        };
        assert!(
            (fidelity.rel_error - want).abs() <= 1e-4 * want.max(1e-12),
            "{}: {} vs {want}",
            case.name,
            fidelity.rel_error
        );
    }
}

#[test]
fn non_finite_input_is_refused_by_every_step() {
    let steps = [
        Step::MagnitudePrune { sparsity: 0.5 },
        Step::SemiStructured { n: 2, m: 4 },
        Step::ChannelPrune {
            sparsity: 0.5,
            norm: Norm::L2,
        },
        Step::Int(int(8, true, Granularity::Channel)),
        Step::Int(int(8, true, Granularity::Tensor)),
        Step::Fp8 {
            per_channel: true,
            scale_dtype: ScaleDtype::F32,
        },
        Step::Gguf(blocks::BlockType::Q4_0),
        Step::Nf4,
    ];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = vec![0.5f32; 4 * 64];
        values[77] = bad;
        let case = Case {
            name: "bad".into(),
            shape: vec![4, 64],
            values,
        };
        for step in steps {
            assert_eq!(
                run(&case, &[step]).unwrap_err(),
                TransformError::NonFinite { count: 1 },
                "{step:?} with {bad}"
            );
        }
    }
}

fn distinct(values: &[f32]) -> Vec<f32> {
    let mut d = values.to_vec();
    d.sort_by(f32::total_cmp);
    d.dedup();
    d
}

#[test]
fn clustering_leaves_at_most_2_to_the_bits_values_each_at_its_nearest_centroid() {
    for case in cases(1) {
        for bits in [1u8, 2, 4] {
            for per_row in [false, true] {
                let step = Step::Cluster {
                    bits,
                    per_row,
                    seed: 11,
                };
                let (got, _) = run(&case, &[step]).unwrap();
                let group = if per_row { case.cols() } else { got.len() };
                for (g, x) in got.chunks(group).zip(case.values.chunks(group)) {
                    let book = distinct(g);
                    assert!(
                        book.len() <= 1 << bits,
                        "{}: {} values",
                        case.name,
                        book.len()
                    );
                    for (&y, &v) in g.iter().zip(x) {
                        let nearest = book
                            .iter()
                            .map(|&c| (c - v).abs())
                            .fold(f32::INFINITY, f32::min);
                        assert!(
                            (y - v).abs() <= nearest * 1.000_001 + 1e-30,
                            "{}",
                            case.name
                        );
                    }
                }
                let (again, _) = run(&case, &[step]).unwrap();
                assert_eq!(got, again, "the same seed gives the same result");
            }
        }
    }
}

#[test]
fn tensor_clustering_beyond_the_sample_is_independent_of_the_thread_count() {
    let mut values = Values(9);
    let case = Case {
        name: "large".into(),
        shape: vec![1100, 1000],
        values: (0..1_100_000).map(|_| values.weight()).collect(),
    };
    let step = Step::Cluster {
        bits: 4,
        per_row: false,
        seed: 3,
    };
    let in_pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(&case, &[step]).unwrap())
    };
    let (one, fidelity) = in_pool(1);
    let (two, _) = in_pool(2);
    assert_eq!(one, two);
    assert!(distinct(&one).len() <= 16);
    // 16 well-placed levels on weight-like values: far better than 4-bit uniform steps.
    assert!(fidelity.rel_error < 0.1, "{}", fidelity.rel_error);
}

#[test]
fn cluster_then_quantize_quantizes_the_codebook() {
    for case in cases(1) {
        let cluster = Step::Cluster {
            bits: 3,
            per_row: false,
            seed: 1,
        };
        let scheme = int(4, true, Granularity::Channel);
        let (clustered, _) = run(&case, &[cluster]).unwrap();
        let (both, _) = run(&case, &[cluster, Step::Int(scheme)]).unwrap();
        let cols = case.cols();
        for (c, b) in clustered.chunks(cols).zip(both.chunks(cols)) {
            // Each row's codebook, quantized with the row's scale, gives the row's values.
            let (lo, hi) = crate::compress::quantize::min_max(c);
            let p = scheme.params(lo, hi);
            for (&x, &y) in c.iter().zip(b) {
                let q = (scheme.quantize(x, p) - p.zero_point) as f32 * p.scale;
                assert_eq!(q, y, "{}", case.name);
            }
            assert!(distinct(b).len() <= 8);
        }
    }
}

#[test]
fn low_rank_error_is_the_discarded_spectral_energy() {
    use crate::compress::lowrank::{self, Rank};
    for case in cases(1) {
        let cols = case.cols();
        let rows = case.values.len() / cols;
        if lowrank::max_useful_rank(rows, cols) < 2 {
            let step = Step::LowRank {
                rank: Rank::Fixed(2),
                seed: 0,
            };
            assert!(
                matches!(run(&case, &[step]), Err(TransformError::LowRank(_))),
                "{}: a growing rank is refused",
                case.name
            );
            continue;
        }
        let reference = lowrank::factorize(&case.values, rows, cols, Rank::Fixed(1), 0).unwrap();
        let step = Step::LowRank {
            rank: Rank::Fixed(2),
            seed: 0,
        };
        let (_, fidelity) = run(&case, &[step]).unwrap();
        let discarded: f64 = reference.singular_values[2..].iter().map(|s| s * s).sum();
        let want = if reference.energy > 0.0 {
            (discarded / reference.energy).sqrt()
        } else {
            0.0
        };
        assert!(
            (fidelity.rel_error - want).abs() <= 1e-3 * want + 1e-6,
            "{}: {} vs {want}",
            case.name,
            fidelity.rel_error
        );
        let outcome = fidelity.low_rank.expect("the rank is reported");
        assert_eq!(outcome.rank, 2.min(reference.singular_values.len()));
    }
}

#[test]
fn k_quants_decode_within_a_step_of_each_sub_block() {
    for case in cases(256) {
        for (kind, sub, levels) in [
            (blocks::BlockType::Q4_K, 32, 15.0),
            (blocks::BlockType::Q5_K, 32, 31.0),
            (blocks::BlockType::Q6_K, 16, 63.0),
        ] {
            let (got, _) = run(&case, &[Step::Gguf(kind)]).unwrap();
            for (i, (g, x)) in got.chunks(sub).zip(case.values.chunks(sub)).enumerate() {
                let lo = x.iter().fold(0f64, |m, v| m.min(f64::from(*v)));
                let hi = x.iter().fold(0f64, |m, v| m.max(f64::from(*v)));
                let first = i * sub / 256 * 256;
                let super_absmax = case.values[first..first + 256]
                    .iter()
                    .fold(0f64, |m, v| m.max(f64::from(v.abs())));
                // A step of the sub-block, plus the quantization of the sub-block scales and
                // mins to 6 (Q4_K, Q5_K) or 8 (Q6_K) bits of the super-block's largest.
                let bound = (hi - lo) / levels * 1.2 + super_absmax / 63.0 + 1e-7;
                for (&a, &b) in g.iter().zip(x) {
                    let err = (f64::from(a) - f64::from(b)).abs();
                    assert!(err <= bound, "{} {}: {b} -> {a}", case.name, kind.name());
                }
            }
        }
    }
}

/// Rows whose values sit on rounding ties of int8 per-channel codes and one ulp either side,
/// each row with its own scale, where the one-pass kernel's reciprocal must give way to the
/// division.
fn ties() -> Case {
    let cols = 256;
    let mut values = Vec::new();
    for row in 0..16 {
        let amax = 0.37 + row as f32 * 0.113;
        // The scale the kernel derives from the row's largest magnitude.
        let scale = amax / 127.5;
        let start = values.len();
        for i in 0..cols {
            let tie = ((i as f32 - 128.0) + 0.5) * scale;
            values.push(match (row + i) % 3 {
                0 => tie,
                1 => f32::from_bits(tie.to_bits() + 1),
                _ => f32::from_bits(tie.to_bits() - 1),
            });
        }
        values[start] = amax;
    }
    Case {
        name: "ties".into(),
        shape: vec![16, cols as u64],
        values,
    }
}

/// Blocks whose smallest or largest value is zero, with +0 and -0 in an order where the first
/// zero of the block (which the reference keeps) is not the first one a lane-wise scan meets.
fn signed_zeros() -> Case {
    let cols = 64;
    let mut values = Vec::new();
    for row in 0..8 {
        for block in 0..2 {
            let sign = if row % 2 == 0 { 1.0f32 } else { -1.0 };
            let (first, later) = if (row / 2 + block) % 2 == 0 {
                (0.0f32, -0.0f32)
            } else {
                (-0.0, 0.0)
            };
            for i in 0..32 {
                values.push(match i {
                    _ if row >= 4 && i != 9 && i != 16 => later,
                    9 => first,
                    16 => later,
                    _ => sign * (0.05 + (i * 7 % 11) as f32 * 0.01),
                });
            }
        }
    }
    Case {
        name: "signed zeros".into(),
        shape: vec![8, cols as u64],
        values,
    }
}

#[test]
fn one_pass_kernels_equal_the_general_path_bit_for_bit() {
    let steps = [
        Step::Int(int(8, true, Granularity::Channel)),
        Step::Int(int(8, true, Granularity::Tensor)),
        Step::Int(int(4, true, Granularity::Group(32))),
        Step::Int(int(4, false, Granularity::Group(64))),
        Step::Int(int(3, false, Granularity::Channel)),
        Step::Fp8 {
            per_channel: true,
            scale_dtype: ScaleDtype::F32,
        },
        Step::Fp8 {
            per_channel: false,
            scale_dtype: ScaleDtype::F32,
        },
        // Row scales rounded as compressed-tensors stores them, in the weight's dtype.
        Step::Fp8 {
            per_channel: true,
            scale_dtype: ScaleDtype::Bf16,
        },
        Step::Fp8 {
            per_channel: true,
            scale_dtype: ScaleDtype::F16,
        },
        Step::Fp8 {
            per_channel: false,
            scale_dtype: ScaleDtype::Bf16,
        },
        Step::Gguf(blocks::BlockType::Q8_0),
        Step::Gguf(blocks::BlockType::Q4_0),
        Step::Gguf(blocks::BlockType::Q5_0),
        Step::Gguf(blocks::BlockType::Q4_1),
        Step::Gguf(blocks::BlockType::Q5_1),
    ];
    let mut all = cases(32);
    all.push(ties());
    all.push(signed_zeros());
    for case in &all {
        for dtype in [Dtype::F32, Dtype::BF16] {
            let bytes = case.stored_as(dtype);
            let view = TensorView {
                calibrated: None,
                bytes: &bytes,
                dtype,
                shape: &case.shape,
            };
            for step in steps {
                let name = format!("{} {dtype} {step:?}", case.name);
                let one_pass = tensor::transform(&view, &[step], &Cancel::new()).expect(&name);
                let general = tensor::transform_general(&view, &[step]).expect(&name);
                assert!(one_pass.0 == general.0, "{name}: bytes differ");
                assert_eq!(one_pass.1, general.1, "{name}: metrics differ");
                // The stored forms too: the kernels' codes and parameters are the general
                // encoders' exactly (compared as bits, so a -0 code byte would show).
                let mut out = vec![0u8; bytes.len()];
                let (fidelity, codes) =
                    tensor::transform_encoded(&view, &[step], &Cancel::new(), &mut out)
                        .expect(&name);
                let (dense, general_fidelity, general_codes) =
                    tensor::transform_encoded_general(&view, &[step]).expect(&name);
                assert!(out == dense, "{name}: encoded dense bytes differ");
                assert_eq!(fidelity, general_fidelity, "{name}: encoded metrics differ");
                assert_eq!(
                    format!("{codes:?}"),
                    format!("{general_codes:?}"),
                    "{name}: stored forms differ"
                );
                assert!(!matches!(codes, Encoded::Dense), "{name}: no stored form");
                // And with the codes alone kept (the kernels then store no values).
                let mut buffer = Vec::new();
                let (fidelity, codes) =
                    tensor::transform_codes(&view, &[step], &Cancel::new(), &mut buffer)
                        .expect(&name);
                assert_eq!(
                    fidelity, general_fidelity,
                    "{name}: codes-only metrics differ"
                );
                assert_eq!(
                    format!("{codes:?}"),
                    format!("{general_codes:?}"),
                    "{name}: codes-only stored forms differ"
                );
            }
        }
    }
}

/// Weights too large for a GGUF block's F16 scale are refused alike whether the one-pass
/// kernels check each chunk as they reach it or the general path scans the tensor first; and a
/// non-finite value elsewhere in the tensor still takes precedence, as it does in the scan.
#[test]
fn block_scale_limits_refuse_alike_on_every_path() {
    // Four chunks of rows: the outlier in the first, the infinity (when there is one) in the last.
    let (rows, cols) = (1024usize, 64usize);
    let shape = vec![rows as u64, cols as u64];
    for infinity in [false, true] {
        let mut values: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 * 0.01).collect();
        values[10] = -1.0e7;
        if infinity {
            values[rows * cols - 5] = f32::INFINITY;
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView {
            calibrated: None,
            bytes: &bytes,
            dtype: Dtype::F32,
            shape: &shape,
        };
        for kind in [
            blocks::BlockType::Q8_0,
            blocks::BlockType::Q4_0,
            blocks::BlockType::Q5_0,
        ] {
            let expected = if infinity {
                TransformError::NonFinite { count: 1 }
            } else {
                TransformError::BeyondBlockScale {
                    largest: 1.0e7,
                    limit: kind.largest_magnitude(),
                }
            };
            let step = [Step::Gguf(kind)];
            let codes_only = tensor::transform_codes(&view, &step, &Cancel::new(), &mut Vec::new());
            let general = tensor::transform_encoded_general(&view, &step);
            assert_eq!(codes_only.unwrap_err(), expected, "{kind:?}, codes alone");
            assert_eq!(general.unwrap_err(), expected, "{kind:?}, general path");
        }
    }
}

/// At the edge of a block scale's reach the one-pass kernels, which flag a tensor by its
/// blocks' steps, refuse exactly what the general path's scan of the whole tensor refuses.
#[test]
fn block_scale_limits_hold_at_the_edge_on_every_path() {
    let (rows, cols) = (256usize, 64usize);
    let shape = vec![rows as u64, cols as u64];
    for kind in [blocks::BlockType::Q8_0, blocks::BlockType::Q4_0] {
        let limit = kind.largest_magnitude();
        let edge = [
            limit,
            f32::from_bits(limit.to_bits() - 1),
            f32::from_bits(limit.to_bits() + 1),
            limit * 0.9995,
            limit * 1.0005,
        ];
        for (outlier, sign) in edge.iter().flat_map(|&v| [(v, 1f32), (v, -1f32)]) {
            let mut values: Vec<f32> = (0..rows * cols).map(|i| (i % 5) as f32 * 0.1).collect();
            values[rows * cols / 2 + 3] = sign * outlier;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = TensorView {
                calibrated: None,
                bytes: &bytes,
                dtype: Dtype::F32,
                shape: &shape,
            };
            let step = [Step::Gguf(kind)];
            let codes_only = tensor::transform_codes(&view, &step, &Cancel::new(), &mut Vec::new());
            let general = tensor::transform_encoded_general(&view, &step);
            let refused = outlier > limit;
            assert_eq!(codes_only.is_err(), refused, "{kind:?} {}", sign * outlier);
            assert_eq!(general.is_err(), refused, "{kind:?} {}", sign * outlier);
            if refused {
                assert_eq!(codes_only.unwrap_err(), general.unwrap_err());
            } else {
                assert!(
                    codes_only.unwrap().1 == general.unwrap().2,
                    "{kind:?}: stored forms differ"
                );
            }
        }
    }
}

/// Weights whose squares leave f32's range take the sums' rare settling path, which needs the
/// stored values: with the codes alone kept, the chunk is run again to give it them.
#[test]
fn overflowing_sums_settle_alike_with_and_without_stored_values() {
    let (rows, cols) = (8usize, 64usize);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| {
            if i % 9 == 0 {
                3.0e30
            } else {
                (i % 5) as f32 - 2.0
            }
        })
        .collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![rows as u64, cols as u64];
    let view = TensorView {
        calibrated: None,
        bytes: &bytes,
        dtype: Dtype::F32,
        shape: &shape,
    };
    let step = [Step::Int(int(8, true, Granularity::Channel))];
    let mut dense = vec![0u8; bytes.len()];
    let (with_values, codes) =
        tensor::transform_encoded(&view, &step, &Cancel::new(), &mut dense).unwrap();
    let (alone, codes_alone) =
        tensor::transform_codes(&view, &step, &Cancel::new(), &mut Vec::new()).unwrap();
    assert!(with_values.rel_error.is_finite(), "{with_values:?}");
    assert_eq!(alone, with_values);
    assert_eq!(format!("{codes_alone:?}"), format!("{codes:?}"));
}

#[test]
fn stored_forms_decode_to_exactly_the_dense_values() {
    use crate::compress::lowrank::Rank;
    let steps: Vec<Vec<Step>> = vec![
        vec![Step::Int(int(8, true, Granularity::Channel))],
        vec![Step::Int(int(4, false, Granularity::Group(64)))],
        vec![Step::Int(IntScheme {
            scale_dtype: ScaleDtype::Bf16,
            ..int(3, true, Granularity::Tensor)
        })],
        vec![Step::Int(int(2, false, Granularity::Tensor))],
        vec![Step::Fp8 {
            per_channel: true,
            scale_dtype: ScaleDtype::Bf16,
        }],
        vec![Step::Fp8 {
            per_channel: false,
            scale_dtype: ScaleDtype::F32,
        }],
        vec![Step::Gguf(blocks::BlockType::Q4_1)],
        vec![Step::Gguf(blocks::BlockType::Q5_0)],
        vec![Step::Gguf(blocks::BlockType::Q4_K)],
        vec![Step::Gguf(blocks::BlockType::Q6_K)],
        vec![Step::Nf4],
        vec![Step::Cluster {
            bits: 3,
            per_row: false,
            seed: 7,
        }],
        vec![Step::Cluster {
            bits: 2,
            per_row: true,
            seed: 7,
        }],
        vec![Step::LowRank {
            rank: Rank::Energy(0.9),
            seed: 1,
        }],
        vec![
            Step::MagnitudePrune { sparsity: 0.5 },
            Step::Int(int(8, true, Granularity::Channel)),
        ],
        vec![Step::MagnitudePrune { sparsity: 0.3 }],
    ];
    for case in cases(256) {
        let cols = case.cols();
        let rows = case.values.len() / cols;
        for dtype in [Dtype::F32, Dtype::BF16] {
            let bytes = case.stored_as(dtype);
            let view = TensorView {
                calibrated: None,
                bytes: &bytes,
                dtype,
                shape: &case.shape,
            };
            for steps in &steps {
                let name = format!("{} {dtype} {steps:?}", case.name);
                let dense = match tensor::transform(&view, steps, &Cancel::new()) {
                    Ok(d) => d,
                    // Low rank refuses matrices it cannot shrink; nothing to store then.
                    Err(TransformError::LowRank(_)) => continue,
                    Err(e) => panic!("{name}: {e}"),
                };
                let mut out = vec![0u8; bytes.len()];
                let (fidelity, encoded) =
                    tensor::transform_encoded(&view, steps, &Cancel::new(), &mut out).expect(&name);
                if let Some(i) = (0..out.len()).find(|&i| out[i] != dense.0[i]) {
                    panic!(
                        "{name}: encoding changed the dense values at byte {i}: {:?} vs {:?}, input {:?}",
                        &out[i / 4 * 4..i / 4 * 4 + 4],
                        &dense.0[i / 4 * 4..i / 4 * 4 + 4],
                        case.values[i / 4]
                    );
                }
                assert_eq!(fidelity.rel_error, dense.1.rel_error, "{name}");
                let last_is_stored = steps.last().unwrap().has_stored_form();
                // The codes alone: the same stored form and metrics, no dense copy kept.
                let mut buffer = vec![1u8; 3];
                let (codes_fidelity, codes) =
                    tensor::transform_codes(&view, steps, &Cancel::new(), &mut buffer)
                        .expect(&name);
                assert_eq!(
                    codes_fidelity, fidelity,
                    "{name}: codes-only metrics differ"
                );
                assert_eq!(format!("{codes:?}"), format!("{encoded:?}"), "{name}");
                assert_eq!(buffer.is_empty(), last_is_stored, "{name}");
                match encoded.decode(rows, cols) {
                    None => assert!(!last_is_stored, "{name}: no stored form"),
                    Some(decoded) => {
                        let mut again = vec![0u8; bytes.len()];
                        crate::numeric::codec::encode(dtype, &decoded, &mut again);
                        let (mut a, mut b) = (vec![0f32; decoded.len()], vec![0f32; decoded.len()]);
                        crate::numeric::codec::decode(dtype, &again, &mut a);
                        crate::numeric::codec::decode(dtype, &dense.0, &mut b);
                        // Equal as numbers: integer codes decode a rounded-away −0 as +0.
                        assert!(a == b, "{name}: the stored form decodes differently");
                    }
                }
            }
        }
    }
}

#[test]
fn calibrated_values_replace_the_stored_ones_and_are_measured_against_them() {
    let (rows, cols) = (8usize, 64usize);
    // No zeros among them, so the sparsity is the calibrated values' alone.
    let original: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.4999)
        .collect();
    // A calibrated method's result: half of each row zeroed, the rest nudged.
    let calibrated: Vec<f32> = original
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 0 { 0.0 } else { v * 1.01 })
        .collect();
    let bytes: Vec<u8> = original.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = [rows as u64, cols as u64];
    let view = TensorView {
        bytes: &bytes,
        dtype: Dtype::F32,
        shape: &shape,
        calibrated: Some(&calibrated),
    };
    let (out, fidelity) = tensor::transform(&view, &[Step::Calibrated], &Cancel::new()).unwrap();
    let stored: Vec<f32> = out
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(stored, calibrated);
    let error: f64 = original
        .iter()
        .zip(&calibrated)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = original
        .iter()
        .map(|&a| f64::from(a).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        (fidelity.rel_error - error / norm).abs() < 1e-6,
        "{fidelity:?}"
    );
    assert_eq!(fidelity.sparsity, 0.5);

    // A later step runs on the calibrated values: int8 per channel keeps the zeros.
    let int8 = Step::Int(int(8, true, Granularity::Channel));
    let mut buffer = Vec::new();
    let (_, encoded) = tensor::transform_codes(
        &view,
        &[Step::Calibrated, int8],
        &Cancel::new(),
        &mut buffer,
    )
    .unwrap();
    let Encoded::Int { codes, .. } = encoded else {
        panic!("int codes")
    };
    assert!(codes.iter().step_by(2).all(|&c| c == 0));

    // The step without its values, or values without the step: refused, never guessed.
    let bare = TensorView {
        calibrated: None,
        ..view
    };
    assert!(matches!(
        tensor::transform(&bare, &[Step::Calibrated], &Cancel::new()),
        Err(TransformError::Calibrated)
    ));
    assert!(matches!(
        tensor::transform(&view, &[int8], &Cancel::new()),
        Err(TransformError::Calibrated)
    ));
    let short = TensorView {
        calibrated: Some(&calibrated[1..]),
        ..view
    };
    assert!(matches!(
        tensor::transform(&short, &[Step::Calibrated], &Cancel::new()),
        Err(TransformError::Calibrated)
    ));
}
