//! One tensor through a sequence of kernel steps: the dense in-place path (values replaced by
//! their pruned / quantized-then-dequantized versions, stored back in the input's dtype) with the
//! fidelity metrics of the result against the original values.
//!
//! The tensor is viewed as rows × cols (cols = product of all dimensions but the first) and
//! processed in chunks of whole rows on the current rayon pool; each chunk is decoded from its
//! stored dtype into a per-thread buffer, transformed, encoded back, and measured, so no f32 copy
//! of the whole tensor ever exists. Steps that need a whole-tensor statistic (a magnitude
//! threshold, a per-tensor range) get it from extra read passes over the chunks first.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::compress::blocks::{self};
use crate::compress::cluster::{self, Codebook};
use crate::compress::encoded::{self, Assembly, Encoded, Piece};
use crate::compress::fused::{self, CodesOut, OnePass};
use crate::compress::lowrank::{self, Factors, LowRankError};
use crate::compress::measure::{self, Sums, store_and_measure};
use crate::compress::prune::{self, GlobalCut, GlobalPass, MagnitudeCut, prune_count};
use crate::compress::quantize::{Granularity, QParams, min_max, min_max_bf16, min_max_f32};
use crate::compress::spare;
use crate::compress::step::Step;
use crate::compress::structure::LineStats;
use crate::compress::{fp8, nf4};
use crate::numeric::Dtype;
use crate::numeric::SplitMix;
use crate::numeric::codec;
use crate::numeric::{Cancel, Canceled};

/// Values per chunk, at least one whole row: small enough for a core's L2 cache.
const CHUNK_VALUES: usize = 1 << 14;

/// A tensor's stored bytes and how to read them.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Little-endian data, possibly unaligned (straight from an mmap).
    pub bytes: &'a [u8],
    /// F32, F16 or BF16.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: &'a [u64],
    /// The values a calibrated method computed for the tensor (row-major, as many as it has),
    /// which a first [`Step::Calibrated`] puts in place of the stored ones; the metrics still
    /// compare the result with `bytes`, the original.
    pub calibrated: Option<&'a [f32]>,
}

/// How the stored result differs from the original values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fidelity {
    /// Fraction of exact zeros in the result.
    pub sparsity: f64,
    /// ‖W − Ŵ‖ / ‖W‖ (‖W − Ŵ‖ when W is all zero).
    pub rel_error: f64,
    /// 10·log10(‖W‖² / ‖W − Ŵ‖²); None when the error or W is zero.
    pub sqnr_db: Option<f64>,
    /// Cosine of W and Ŵ; None when either is all zero.
    pub cosine: Option<f64>,
    /// max |W − Ŵ|.
    pub max_abs_error: f64,
    /// The rank chosen, for a low-rank step.
    pub low_rank: Option<LowRankOutcome>,
    sums: Sums,
}

/// What a low-rank factorization kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowRankOutcome {
    /// r.
    pub rank: usize,
    /// r·(m + n) / (m·n).
    pub parameter_fraction: f64,
}

impl Fidelity {
    /// The fidelity of a tensor left as it was.
    pub fn identical() -> Fidelity {
        Fidelity {
            sparsity: 0.0,
            rel_error: 0.0,
            sqnr_db: None,
            cosine: Some(1.0),
            max_abs_error: 0.0,
            low_rank: None,
            sums: Sums::default(),
        }
    }

    fn from_sums(sums: Sums) -> Fidelity {
        let rel_error = if sums.orig_sq > 0.0 {
            (sums.err_sq / sums.orig_sq).sqrt()
        } else {
            sums.err_sq.sqrt()
        };
        Fidelity {
            sparsity: sums.zeros as f64 / sums.count.max(1) as f64,
            rel_error,
            sqnr_db: (sums.err_sq > 0.0 && sums.orig_sq > 0.0)
                .then(|| 10.0 * (sums.orig_sq / sums.err_sq).log10()),
            cosine: (sums.orig_sq > 0.0 && sums.out_sq > 0.0)
                .then(|| sums.dot / (sums.orig_sq.sqrt() * sums.out_sq.sqrt())),
            max_abs_error: sums.max_abs,
            low_rank: None,
            sums,
        }
    }

    /// The fidelity against an original that also had `removed` values, now gone from the
    /// tensor (structured shrinking): their energy counts as error.
    pub fn including_removed(self, removed: &LineStats) -> Fidelity {
        let mut sums = self.sums;
        sums.orig_sq += removed.sq;
        sums.err_sq += removed.sq;
        sums.max_abs = sums.max_abs.max(f64::from(removed.max_abs));
        Fidelity {
            low_rank: self.low_rank,
            ..Fidelity::from_sums(sums)
        }
    }
}

/// Why a tensor could not be transformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// Low-rank factorization refused the tensor.
    #[error("low-rank factorization: {0}")]
    LowRank(LowRankError),
    /// The cancel flag was set.
    #[error("canceled")]
    Canceled,
    /// A calibrated step without the calibrated values (or the values without the step, or
    /// the wrong number of them): the pipeline's mistake, never the input's.
    #[error("the calibrated values do not match the tensor's steps")]
    Calibrated,
    /// Compressing NaN or infinite weights would only hide them.
    #[error("{count} values are NaN or infinite")]
    NonFinite {
        /// How many.
        count: u64,
    },
    /// The weights are beyond what the method or its stored form can hold (a GGUF block's F16
    /// scale for weights above about 8e6, k-means distances past f32's range): the result
    /// would be NaN.
    #[error(
        "{count} values cannot be represented by this method: the weights exceed the range its stored form holds"
    )]
    OutOfRange {
        /// How many.
        count: u64,
    },
    /// Weights too large for a GGUF block's F16 scale.
    #[error(
        "weights reach {largest:e}, beyond the {limit:e} that this GGUF type's F16 block scale can store"
    )]
    BeyondBlockScale {
        /// The tensor's largest magnitude.
        largest: f32,
        /// [`BlockType::largest_magnitude`].
        limit: f32,
    },
}

impl From<Canceled> for TransformError {
    fn from(_: Canceled) -> Self {
        TransformError::Canceled
    }
}

/// ChunkLayout of a tensor as rows × cols and its chunks of whole rows.
#[derive(Clone, Copy)]
struct ChunkLayout {
    cols: usize,
    rows: usize,
    rows_per_chunk: usize,
    width: usize,
}

impl ChunkLayout {
    fn of(view: &TensorView, steps: &[Step]) -> ChunkLayout {
        let total: u64 = view.shape.iter().product();
        let cols = if view.shape.len() <= 1 {
            total.max(1) as usize
        } else {
            (view.shape[1..].iter().product::<u64>() as usize).max(1)
        };
        // Chunks start on every step's flat block: rows_per_chunk · cols is a multiple of it.
        let block = steps.iter().map(Step::flat_block).fold(1, lcm);
        let rows_multiple = block / gcd(block, cols);
        let rows_per_chunk = (CHUNK_VALUES / cols).max(1).next_multiple_of(rows_multiple);
        ChunkLayout {
            cols,
            rows: total as usize / cols,
            rows_per_chunk,
            width: crate::numeric::float_width(view.dtype),
        }
    }

    fn chunks(&self) -> usize {
        self.rows.div_ceil(self.rows_per_chunk)
    }

    fn chunk_values(&self, c: usize) -> std::ops::Range<usize> {
        let first = c * self.rows_per_chunk;
        let last = ((c + 1) * self.rows_per_chunk).min(self.rows);
        first * self.cols..last * self.cols
    }

    /// Decodes chunk `c` of the tensor into `buf` (the calibrated values instead, when the
    /// view has them).
    fn decode(&self, view: &TensorView, c: usize, buf: &mut Vec<f32>) {
        let range = self.chunk_values(c);
        buf.resize(range.len(), 0.0);
        if let Some(values) = view.calibrated {
            buf.copy_from_slice(&values[range]);
            return;
        }
        codec::decode(
            view.dtype,
            &view.bytes[range.start * self.width..range.end * self.width],
            buf,
        );
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Whole-tensor facts a step needs before its chunks can run.
enum Global {
    Cut(MagnitudeCut),
    /// Rows to zero, for the whole tensor.
    Rows(Vec<bool>),
    /// The low-rank factors of the whole tensor.
    Factors(Factors),
    /// The tensor's cluster centroids.
    Codebook(Codebook),
    /// Per-tensor integer parameters, with the tensor's largest magnitude.
    TensorParams(QParams, f32),
    TensorScale(f32),
    None,
}

fn apply_steps(
    steps: &[Step],
    globals: &[Global],
    chunk: usize,
    values: &mut [f32],
    layout: &ChunkLayout,
) {
    let cols = layout.cols;
    for (step, global) in steps.iter().zip(globals) {
        match (step, global) {
            (Step::MagnitudePrune { .. } | Step::MagnitudePruneCount { .. }, Global::Cut(cut)) => {
                cut.apply(chunk, values);
            }
            (Step::SemiStructured { n, m }, _) => {
                prune::prune_n_m(values, usize::from(*n), usize::from(*m));
            }
            // The chunk was decoded from the calibrated values.
            (Step::Calibrated, _) => {}
            (Step::ChannelPrune { .. }, Global::Rows(mask)) => {
                let first_row = chunk * layout.rows_per_chunk;
                for (row, &drop) in values.chunks_mut(cols).zip(&mask[first_row..]) {
                    if drop {
                        row.fill(0.0);
                    }
                }
            }
            (Step::Nf4, _) => nf4::fake_quantize(values),
            (Step::Cluster { .. }, Global::Codebook(book)) => book.apply(values),
            (Step::LowRank { .. }, Global::Factors(f)) => {
                let first = chunk * layout.rows_per_chunk;
                f.reconstruct_rows(first..first + values.len() / cols, values);
            }
            (Step::LowRank { .. }, _) => unreachable!("every low-rank step has its factors"),
            (Step::Cluster { bits, seed, .. }, _) => {
                cluster::cluster_rows(values, cols, *bits, *seed, chunk * layout.rows_per_chunk);
            }
            (Step::Int(scheme), global) => {
                let tensor = match global {
                    Global::TensorParams(p, _) => Some(*p),
                    _ => None,
                };
                scheme.fake_quantize_rows_in_place(values, cols, tensor);
            }
            (Step::Fp8 { .. }, Global::TensorScale(scale)) => fp8::fake_quantize(values, *scale),
            (Step::Fp8 { scale_dtype, .. }, _) => {
                for row in values.chunks_mut(cols) {
                    let (lo, hi) = min_max(row);
                    let scale = scale_dtype.round(fp8::scale_for(lo.abs().max(hi.abs())));
                    fp8::fake_quantize(row, scale);
                }
            }
            (Step::Gguf(kind), _) => blocks::fake_quantize(*kind, values),
            (Step::MagnitudePrune { .. } | Step::MagnitudePruneCount { .. }, _) => {
                unreachable!("every magnitude step has its cut")
            }
            (Step::ChannelPrune { .. }, _) => unreachable!("every channel step has its rows"),
        }
    }
}

/// Applies the last step to a chunk as [`apply_steps`] does, and returns its codes.
fn encode_step(
    step: &Step,
    global: &Global,
    chunk: usize,
    values: &mut [f32],
    layout: &ChunkLayout,
) -> Piece {
    let cols = layout.cols;
    let first_row = chunk * layout.rows_per_chunk;
    match (step, global) {
        (Step::Int(scheme), global) => {
            let tensor = match global {
                Global::TensorParams(p, _) => Some(*p),
                _ => None,
            };
            encoded::int_rows(*scheme, values, cols, tensor)
        }
        (Step::Fp8 { scale_dtype, .. }, global) => {
            let tensor = match global {
                Global::TensorScale(s) => Some(*s),
                _ => None,
            };
            encoded::fp8_rows(values, cols, tensor, |s| scale_dtype.round(s))
        }
        (Step::Gguf(kind), _) => encoded::gguf_rows(*kind, values),
        (Step::Nf4, _) => encoded::nf4_values(values),
        (Step::Cluster { .. }, Global::Codebook(book)) => encoded::cluster_indices(book, values),
        (Step::Cluster { bits, seed, .. }, _) => {
            encoded::cluster_rows(values, cols, *bits, *seed, first_row)
        }
        (Step::LowRank { .. }, Global::Factors(f)) => {
            f.reconstruct_rows(first_row..first_row + values.len() / cols, values);
            Piece::default()
        }
        _ => unreachable!("only steps with a stored form are encoded"),
    }
}

/// How the pieces of the last step's chunks join into the tensor's stored form.
fn assembly(step: Option<&Step>, global: Option<Global>) -> Assembly {
    match (step, global) {
        (Some(Step::Int(scheme)), global) => Assembly::Int {
            scheme: *scheme,
            tensor: match global {
                Some(Global::TensorParams(p, _)) => Some(p),
                _ => None,
            },
        },
        (Some(Step::Fp8 { .. }), global) => Assembly::Fp8 {
            tensor: match global {
                Some(Global::TensorScale(s)) => Some(s),
                _ => None,
            },
        },
        (Some(Step::Gguf(kind)), _) => Assembly::Gguf(*kind),
        (Some(Step::Nf4), _) => Assembly::Nf4,
        (Some(Step::Cluster { bits, .. }), global) => Assembly::Clustered {
            bits: *bits,
            tensor: match global {
                Some(Global::Codebook(book)) => Some(encoded::padded_centroids(&book, *bits)),
                _ => None,
            },
        },
        (Some(Step::LowRank { .. }), Some(Global::Factors(f))) => Assembly::LowRank(f),
        _ => Assembly::Dense,
    }
}

thread_local! {
    /// Per-thread chunk buffers (original values, working values), reused across chunks so the
    /// hot path never allocates.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The input's own range for the step at `index` when that step is the first and the input is
/// BF16 or F32: read from the bytes in parallel pieces, with no decoded copy (the same values
/// as [`tensor_range`] gives, since both fold with the same selects).
fn stored_range(view: &TensorView, index: usize, chunk_bytes: usize) -> Option<(f32, f32)> {
    if view.calibrated.is_some() {
        return None;
    }
    let range: fn(&[u8]) -> (f32, f32) = match (index, view.dtype) {
        (0, Dtype::BF16) => min_max_bf16,
        (0, Dtype::F32) => min_max_f32,
        _ => return None,
    };
    Some(view.bytes.par_chunks(chunk_bytes.max(1)).map(range).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY),
        |a, b| (a.0.min(b.0), a.1.max(b.1)),
    ))
}

/// The largest block step the one-pass GGUF kernels pass without a look at the whole tensor:
/// F16's largest finite value less a margin for the step's rounding (a step from a value at
/// the limit lands within an ulp of F16_MAX). The scan that follows a flag, not this, decides.
const STEP_FLAG: f32 = half::f16::MAX.to_f32_const() * (1.0 - 1.0 / 1024.0);

/// Refuses a range beyond what a GGUF block's F16 scale can store. Infinities and NaNs pass
/// here: they are refused by name after the pass that counts them.
fn check_block_scale((min, max): (f32, f32), limit: f32) -> Result<(), TransformError> {
    let largest = min.abs().max(max.abs());
    if largest.is_finite() && largest > limit {
        return Err(TransformError::BeyondBlockScale { largest, limit });
    }
    Ok(())
}

/// The smallest and largest value over all chunks, as `visit` yields them.
fn tensor_range<F>(chunks: usize, visit: &F) -> (f32, f32)
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut range = (f32::INFINITY, f32::NEG_INFINITY);
            visit(c, &mut |v: &[f32]| {
                let (lo, hi) = min_max(v);
                range = (range.0.min(lo), range.1.max(hi));
            });
            range
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        )
}

/// The k-means codebook of a whole tensor: Lloyd's iterations on a strided sample of at most
/// [`cluster::SAMPLE`] values, then one refinement step over every value (sums folded in chunk
/// order, so the result does not depend on the thread count).
fn tensor_codebook<F>(
    layout: &ChunkLayout,
    visit: &F,
    bits: u8,
    seed: u64,
    cancel: &Cancel,
) -> Result<Codebook, Canceled>
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    let total = layout.rows * layout.cols;
    let stride = total.div_ceil(cluster::SAMPLE).max(1);
    let sample: Vec<Vec<f32>> = (0..layout.chunks())
        .into_par_iter()
        .map(|c| {
            let start = layout.chunk_values(c).start;
            let mut picked = Vec::new();
            visit(c, &mut |v: &[f32]| {
                let first = (stride - start % stride) % stride;
                picked.extend(v.iter().skip(first).step_by(stride).copied());
            });
            picked
        })
        .collect();
    cancel.check()?;
    let book = cluster::kmeans(&sample.concat(), 1 << bits, &mut SplitMix::new(seed, 0));
    if stride == 1 {
        return Ok(book);
    }
    let n = book.centroids().len();
    let partials: Vec<(Vec<f64>, Vec<u64>)> = (0..layout.chunks())
        .into_par_iter()
        .map(|c| {
            let (mut sums, mut counts) = (vec![0f64; n], vec![0u64; n]);
            visit(c, &mut |v: &[f32]| {
                book.accumulate(v, &mut sums, &mut counts)
            });
            (sums, counts)
        })
        .collect();
    cancel.check()?;
    let (mut sums, mut counts) = (vec![0f64; n], vec![0u64; n]);
    for (s, k) in &partials {
        sums.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        counts.iter_mut().zip(k).for_each(|(a, b)| *a += b);
    }
    Ok(book.recentre(&sums, &counts))
}

/// Statistics of every row of a tensor (rows × cols as in the chunked path), or of every column
/// when `columns`; partial column sums are folded in chunk order, whatever the thread count.
pub fn line_stats(
    view: &TensorView,
    columns: bool,
    cancel: &Cancel,
) -> Result<Vec<LineStats>, TransformError> {
    let layout = ChunkLayout::of(view, &[]);
    let partials: Vec<Vec<LineStats>> = (0..layout.chunks())
        .into_par_iter()
        .map(|c| -> Result<Vec<LineStats>, Canceled> {
            cancel.check()?;
            Ok(BUFFERS.with_borrow_mut(|(buf, _)| {
                layout.decode(view, c, buf);
                if columns {
                    let mut stats = vec![LineStats::default(); layout.cols];
                    for row in buf.chunks(layout.cols) {
                        stats.iter_mut().zip(row).for_each(|(s, &x)| s.add(x));
                    }
                    stats
                } else {
                    buf.chunks(layout.cols)
                        .map(|row| {
                            let mut s = LineStats::default();
                            row.iter().for_each(|&x| s.add(x));
                            s
                        })
                        .collect()
                }
            }))
        })
        .collect::<Result<_, _>>()?;
    if !columns {
        return Ok(partials.concat());
    }
    let mut total = vec![LineStats::default(); layout.cols];
    for part in &partials {
        total.iter_mut().zip(part).for_each(|(t, p)| t.merge(p));
    }
    Ok(total)
}

/// Feeds a tensor's stored values to one pass of a global magnitude cut; in the count pass,
/// returns how many of its values to prune ([`Step::MagnitudePruneCount`]).
pub fn observe_global(
    view: &TensorView,
    cut: &mut GlobalCut,
    pass: GlobalPass,
    cancel: &Cancel,
) -> Result<u64, TransformError> {
    let layout = ChunkLayout::of(view, &[]);
    let visit = |c: usize, sink: &mut dyn FnMut(&[f32])| {
        BUFFERS.with_borrow_mut(|(buf, _)| {
            layout.decode(view, c, buf);
            sink(buf);
        })
    };
    Ok(cut.observe(pass, layout.chunks(), visit, cancel)?)
}

/// Applies `steps` in order and returns the result in the input's dtype with its fidelity.
pub fn transform(
    view: &TensorView,
    steps: &[Step],
    cancel: &Cancel,
) -> Result<(Vec<u8>, Fidelity), TransformError> {
    let mut out = vec![0u8; view.bytes.len()];
    let fidelity = transform_into(view, steps, cancel, &mut out)?;
    Ok((out, fidelity))
}

/// [`transform`] into `out`, which must be as long as the input (reusing one buffer across
/// tensors spares the page faults of fresh memory).
pub fn transform_into(
    view: &TensorView,
    steps: &[Step],
    cancel: &Cancel,
    out: &mut [u8],
) -> Result<Fidelity, TransformError> {
    Ok(transform_choosing(view, steps, cancel, out, Path::Fastest)?.0)
}

/// [`transform_into`], also returning the stored form of the last step (codes, scales,
/// codebook, factors); the dense values in `out` are decoded from exactly those codes.
pub fn transform_encoded(
    view: &TensorView,
    steps: &[Step],
    cancel: &Cancel,
    out: &mut [u8],
) -> Result<(Fidelity, Encoded), TransformError> {
    let (fidelity, encoded) = transform_choosing(view, steps, cancel, out, Path::Encoding)?;
    Ok((fidelity, encoded.unwrap_or(Encoded::Dense)))
}

/// [`transform_encoded`] for a writer that stores the codes alone: when the last step has a
/// stored form, the dense values are computed and measured chunk by chunk but not kept (no
/// tensor-sized buffer is touched) and `buffer` is left empty; otherwise the dense values are
/// the stored form, and `buffer` is sized to the tensor and holds them.
pub fn transform_codes(
    view: &TensorView,
    steps: &[Step],
    cancel: &Cancel,
    buffer: &mut Vec<u8>,
) -> Result<(Fidelity, Encoded), TransformError> {
    if steps.last().is_some_and(Step::has_stored_form) {
        buffer.clear();
    } else {
        buffer.resize(view.bytes.len(), 0);
    }
    transform_encoded(view, steps, cancel, buffer)
}

/// Which loop runs a tensor's chunks.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// The one-pass kernels where they apply.
    Fastest,
    /// The general path only.
    #[cfg(test)]
    General,
    /// The one-pass kernels where they apply, or else the general path, keeping the last
    /// step's codes.
    Encoding,
    /// The general path only, keeping the last step's codes.
    #[cfg(test)]
    EncodingGeneral,
}

impl Path {
    fn keeps_codes(self) -> bool {
        match self {
            Path::Encoding => true,
            #[cfg(test)]
            Path::EncodingGeneral => true,
            _ => false,
        }
    }
}

/// Refuses a result whose sums show non-finite inputs or unrepresentable outputs.
fn check_sums(sums: &Sums) -> Result<(), TransformError> {
    if sums.non_finite > 0 {
        return Err(TransformError::NonFinite {
            count: sums.non_finite,
        });
    }
    if sums.unrepresentable > 0 {
        return Err(TransformError::OutOfRange {
            count: sums.unrepresentable,
        });
    }
    Ok(())
}

thread_local! {
    /// Per-thread codes of one chunk, before they are packed into GGUF blocks.
    static CHUNK_CODES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread dense values of one chunk, when only the codes are kept (`transform_codes`).
    static CHUNK_DENSE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What [`one_pass_encoded`] gives: the metric sums, the codes, the groups' parameters.
type KernelOutput = (Sums, Vec<u8>, Vec<[f32; 2]>);

/// Chunks through a one-pass kernel that also writes the stored form: the dense values into
/// `out` (none when `out` is empty), and returns the metric sums, the codes (one byte per value,
/// or whole GGUF blocks) and each group's parameters (none for GGUF, whose blocks hold them).
/// With a `block_limit`, each block's step is checked as it is made, and a tensor with a step
/// out of reach is refused as the scan of the whole tensor before the pass would refuse it.
fn one_pass_encoded(
    view: &TensorView,
    layout: &ChunkLayout,
    kernel: OnePass,
    block_limit: Option<f32>,
    cancel: &Cancel,
    out: &mut [u8],
) -> Result<KernelOutput, TransformError> {
    let chunk_values = layout.rows_per_chunk * layout.cols;
    let chunk_bytes = chunk_values * layout.width;
    let total = layout.rows * layout.cols;
    let block = kernel.block_type();
    let stored_len = |values: usize| match block {
        Some(kind) => values / kind.block_len() * kind.block_bytes(),
        None => values,
    };
    let mut stored = spare::for_overwrite(stored_len(total));
    let groups_per_chunk = chunk_values / kernel.group_len(layout.cols);
    let beyond_limit = AtomicBool::new(false);
    let run_chunk = |c: usize, out_chunk: &mut [u8], stored_chunk: &mut [u8]| {
        cancel.check()?;
        let range = layout.chunk_values(c);
        let input = &view.bytes[range.start * layout.width..range.end * layout.width];
        let mut run = |out_chunk: &mut [u8]| match block {
            None => {
                let mut codes = CodesOut {
                    codes: &mut *stored_chunk,
                    groups: Vec::with_capacity(groups_per_chunk),
                };
                let sums = kernel.run(view.dtype, layout.cols, input, out_chunk, Some(&mut codes));
                (sums, codes.groups)
            }
            Some(kind) => CHUNK_CODES.with_borrow_mut(|scratch| {
                scratch.resize(range.len(), 0);
                let mut codes = CodesOut {
                    codes: &mut scratch[..],
                    groups: Vec::with_capacity(groups_per_chunk),
                };
                let sums = kernel.run(view.dtype, layout.cols, input, out_chunk, Some(&mut codes));
                let steps = codes.groups;
                // A block whose step is near or past the F16 scale's reach flags the tensor
                // (a value beyond the limit gives a step beyond F16_MAX less an ulp or two;
                // a NaN step flags too). The exact verdict, and a tensor whose non-finite
                // values take precedence, are settled by the scan after the pass.
                if block_limit.is_some() && !steps.iter().all(|s| s[0].abs() <= STEP_FLAG) {
                    beyond_limit.store(true, Ordering::Relaxed);
                }
                fused::pack_blocks(kind, scratch, &steps, &mut *stored_chunk);
                (sums, Vec::new())
            }),
        };
        let (sums, groups) = run(out_chunk);
        let sums = if !sums.overflowed() {
            sums
        } else if out_chunk.is_empty() {
            // Settling needs the stored values, which the pass did not keep: run the chunk
            // again keeping them (the kernel is deterministic; this is the rare path).
            let mut dense = vec![0u8; input.len()];
            run(&mut dense);
            measure::settle_overflow(view.dtype, input, &mut dense)
        } else {
            measure::settle_overflow(view.dtype, input, out_chunk)
        };
        Ok((sums, groups))
    };
    let stored_chunks = stored.par_chunks_mut(stored_len(chunk_values).max(1));
    let chunks: Vec<(Sums, Vec<[f32; 2]>)> = if out.is_empty() {
        stored_chunks
            .enumerate()
            .map(|(c, stored_chunk)| run_chunk(c, &mut [], stored_chunk))
            .collect::<Result<_, Canceled>>()?
    } else {
        out.par_chunks_mut(chunk_bytes.max(1))
            .zip(stored_chunks)
            .enumerate()
            .map(|(c, (out_chunk, stored_chunk))| run_chunk(c, out_chunk, stored_chunk))
            .collect::<Result<_, Canceled>>()?
    };
    if let Some(limit) = block_limit.filter(|_| beyond_limit.into_inner()) {
        let range = stored_range(view, 0, chunk_bytes).expect("one-pass kernels read BF16 or F32");
        check_block_scale(range, limit)?;
    }
    let mut sums = Sums::default();
    let mut groups = Vec::new();
    for (s, g) in chunks {
        sums = sums.merge(s);
        groups.extend(g);
    }
    Ok((sums, stored, groups))
}

/// [`transform_encoded`] on the general path only (never the one-pass kernels), for tests
/// that compare the two.
#[cfg(test)]
pub(crate) fn transform_encoded_general(
    view: &TensorView,
    steps: &[Step],
) -> Result<(Vec<u8>, Fidelity, Encoded), TransformError> {
    let mut out = vec![0u8; view.bytes.len()];
    let (fidelity, encoded) =
        transform_choosing(view, steps, &Cancel::new(), &mut out, Path::EncodingGeneral)?;
    Ok((out, fidelity, encoded.unwrap_or(Encoded::Dense)))
}

/// [`transform`] on the general path only (never the one-pass kernels), for tests that
/// compare the two.
#[cfg(test)]
pub(crate) fn transform_general(
    view: &TensorView,
    steps: &[Step],
) -> Result<(Vec<u8>, Fidelity), TransformError> {
    let mut out = vec![0u8; view.bytes.len()];
    let (fidelity, _) = transform_choosing(view, steps, &Cancel::new(), &mut out, Path::General)?;
    Ok((out, fidelity))
}

fn transform_choosing(
    view: &TensorView,
    steps: &[Step],
    cancel: &Cancel,
    out: &mut [u8],
    path: Path,
) -> Result<(Fidelity, Option<Encoded>), TransformError> {
    let calibrated_first = steps.first() == Some(&Step::Calibrated);
    if calibrated_first != view.calibrated.is_some()
        || steps.iter().skip(1).any(|s| *s == Step::Calibrated)
    {
        return Err(TransformError::Calibrated);
    }
    if let Some(values) = view.calibrated {
        let elements: u64 = view.shape.iter().product();
        if values.len() as u64 != elements {
            return Err(TransformError::Calibrated);
        }
    }
    let layout = ChunkLayout::of(view, steps);
    let decode_chunk = |c: usize, buf: &mut Vec<f32>| layout.decode(view, c, buf);
    let mut globals: Vec<Global> = Vec::with_capacity(steps.len());
    let mut low_rank = None;
    let chunk_bytes = layout.rows_per_chunk * layout.cols * layout.width;
    let block_limit = steps
        .iter()
        .filter_map(|s| match s {
            Step::Gguf(kind) => Some(kind.largest_magnitude()),
            _ => None,
        })
        .reduce(f32::min);
    // The one-pass GGUF kernels look at each chunk's range just before they quantize it, while
    // it is in cache, rather than in a pass of its own over the whole tensor.
    let checked_per_chunk = block_limit.is_some()
        && path == Path::Encoding
        && view.calibrated.is_none()
        && OnePass::for_steps(steps, view.dtype, layout.cols, None, None)
            .is_some_and(|k| k.block_type().is_some());
    if let Some(limit) = block_limit.filter(|_| !checked_per_chunk) {
        let range = stored_range(view, 0, chunk_bytes).unwrap_or_else(|| {
            tensor_range(layout.chunks(), &|c, sink: &mut dyn FnMut(&[f32])| {
                BUFFERS.with_borrow_mut(|(buf, _)| {
                    decode_chunk(c, buf);
                    sink(buf);
                })
            })
        });
        check_block_scale(range, limit)?;
    }
    for (i, step) in steps.iter().enumerate() {
        let visit = |c: usize, sink: &mut dyn FnMut(&[f32])| {
            BUFFERS.with_borrow_mut(|(buf, _)| {
                decode_chunk(c, buf);
                apply_steps(&steps[..i], &globals, c, buf, &layout);
                sink(buf);
            })
        };
        let global = match step {
            Step::MagnitudePrune { sparsity } => {
                let k = prune_count(layout.rows as u64 * layout.cols as u64, *sparsity);
                Global::Cut(MagnitudeCut::select(layout.chunks(), k, visit, cancel)?)
            }
            Step::MagnitudePruneCount { count } => Global::Cut(MagnitudeCut::select(
                layout.chunks(),
                *count,
                visit,
                cancel,
            )?),
            Step::ChannelPrune { sparsity, norm } => {
                let scores: Vec<Vec<f64>> = (0..layout.chunks())
                    .into_par_iter()
                    .map(|c| {
                        let mut norms = Vec::with_capacity(layout.rows_per_chunk);
                        visit(c, &mut |v: &[f32]| {
                            norms.extend(v.chunks(layout.cols).map(|row| norm.measure(row)));
                        });
                        norms
                    })
                    .collect();
                cancel.check()?;
                let count = prune_count(layout.rows as u64, *sparsity) as usize;
                Global::Rows(prune::weakest(&scores.concat(), count))
            }
            Step::Int(scheme) if scheme.granularity == Granularity::Tensor => {
                let (min, max) = stored_range(view, i, chunk_bytes)
                    .unwrap_or_else(|| tensor_range(layout.chunks(), &visit));
                Global::TensorParams(scheme.params(min, max), min.abs().max(max.abs()))
            }
            Step::Fp8 {
                per_channel: false,
                scale_dtype,
            } => {
                let (min, max) = stored_range(view, i, chunk_bytes)
                    .unwrap_or_else(|| tensor_range(layout.chunks(), &visit));
                Global::TensorScale(scale_dtype.round(fp8::scale_for(min.abs().max(max.abs()))))
            }
            Step::Cluster {
                bits,
                per_row: false,
                seed,
            } => Global::Codebook(tensor_codebook(&layout, &visit, *bits, *seed, cancel)?),
            Step::LowRank { rank, seed } => {
                let whole: Vec<Vec<f32>> = (0..layout.chunks())
                    .into_par_iter()
                    .map(|c| {
                        let mut part = Vec::new();
                        visit(c, &mut |v: &[f32]| part.extend_from_slice(v));
                        part
                    })
                    .collect();
                cancel.check()?;
                let whole = whole.concat();
                // The SVD would spread a NaN over the whole tensor; refuse it here, by name.
                let non_finite = whole.iter().filter(|v| !v.is_finite()).count() as u64;
                if non_finite > 0 {
                    return Err(TransformError::NonFinite { count: non_finite });
                }
                let factors = lowrank::factorize(&whole, layout.rows, layout.cols, *rank, *seed)
                    .map_err(TransformError::LowRank)?;
                low_rank = Some(LowRankOutcome {
                    rank: factors.rank,
                    parameter_fraction: factors.parameter_fraction(),
                });
                Global::Factors(factors)
            }
            Step::Int(_)
            | Step::Cluster { .. }
            | Step::Fp8 { .. }
            | Step::Gguf(_)
            | Step::Nf4
            | Step::Calibrated
            | Step::SemiStructured { .. } => Global::None,
        };
        globals.push(global);
    }

    let tensor_params = globals.iter().find_map(|g| match g {
        Global::TensorParams(p, amax) => Some((*p, *amax)),
        _ => None,
    });
    let tensor_scale = globals.iter().find_map(|g| match g {
        Global::TensorScale(s) => Some(*s),
        _ => None,
    });
    let one_pass = match path {
        // The one-pass kernels read the stored values; calibrated ones are not those.
        _ if view.calibrated.is_some() => None,
        Path::Fastest | Path::Encoding => {
            OnePass::for_steps(steps, view.dtype, layout.cols, tensor_params, tensor_scale)
        }
        #[cfg(test)]
        Path::General | Path::EncodingGeneral => None,
    };
    let encoded_step = steps
        .last()
        .filter(|s| path.keeps_codes() && s.has_stored_form());
    // Only the codes are wanted (`transform_codes`) when `out` is empty.
    let dense_dropped = out.is_empty() && !view.bytes.is_empty();
    assert!(
        out.len() == view.bytes.len() || dense_dropped && encoded_step.is_some(),
        "output length"
    );
    if let (Some(kernel), Some(step)) = (one_pass, encoded_step) {
        let limit = block_limit.filter(|_| checked_per_chunk);
        let (sums, codes, groups) = one_pass_encoded(view, &layout, kernel, limit, cancel, out)?;
        check_sums(&sums)?;
        let assembly = assembly(Some(step), globals.pop());
        return Ok((
            Fidelity::from_sums(sums),
            Some(assembly.assemble_codes(codes, groups)),
        ));
    }
    let plain = steps.len() - usize::from(encoded_step.is_some());
    let run_chunk = |c: usize, out_chunk: &mut [u8]| -> Result<(Sums, Option<Piece>), Canceled> {
        cancel.check()?;
        let range = layout.chunk_values(c);
        let input = &view.bytes[range.start * layout.width..range.end * layout.width];
        let settled = |sums: Sums, out_chunk: &mut [u8]| {
            if sums.overflowed() {
                measure::settle_overflow(view.dtype, input, out_chunk)
            } else {
                sums
            }
        };
        if let Some(kernel) = one_pass {
            let sums = kernel.run(view.dtype, layout.cols, input, out_chunk, None);
            return Ok((settled(sums, out_chunk), None));
        }
        Ok(BUFFERS.with_borrow_mut(|(original, values)| {
            decode_chunk(c, values);
            apply_steps(&steps[..plain], &globals[..plain], c, values, &layout);
            let piece = encoded_step.map(|s| encode_step(s, &globals[plain], c, values, &layout));
            // Measure what is stored, after rounding to the output dtype, against the
            // original re-read from the input (cheaper than keeping a decoded copy).
            // The hand-written kernel where there is one: the vectoriser's version of the
            // portable loop spent as long moving lanes between registers as computing.
            let sums = fused::store_and_measure_vector(view.dtype, input, values, out_chunk)
                .unwrap_or_else(|| {
                    store_and_measure(view.dtype, input, original, values, out_chunk)
                });
            (settled(sums, out_chunk), piece)
        }))
    };
    let chunks: Vec<(Sums, Option<Piece>)> = if dense_dropped {
        (0..layout.chunks())
            .into_par_iter()
            .map(|c| {
                CHUNK_DENSE.with_borrow_mut(|dense| {
                    dense.resize(layout.chunk_values(c).len() * layout.width, 0);
                    run_chunk(c, dense)
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        out.par_chunks_mut(chunk_bytes.max(1))
            .enumerate()
            .map(|(c, out_chunk)| run_chunk(c, out_chunk))
            .collect::<Result<_, _>>()?
    };
    let mut sums = Sums::default();
    let mut pieces = Vec::with_capacity(chunks.len());
    for (s, piece) in chunks {
        sums = sums.merge(s);
        pieces.extend(piece);
    }
    check_sums(&sums)?;
    let encoded = path.keeps_codes().then(|| {
        let global = encoded_step.and_then(|_| globals.pop());
        assembly(encoded_step, global).assemble(pieces)
    });
    Ok((
        Fidelity {
            low_rank,
            ..Fidelity::from_sums(sums)
        },
        encoded,
    ))
}
