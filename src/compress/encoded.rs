//! The stored form of a compressed tensor: the codes and parameters of its last step (integer
//! codes with scales and zero-points, E4M3 bytes with scales, GGUF blocks, NF4 nibbles with
//! block absmaxes, cluster indices with their codebook, low-rank factors), so that a format
//! writer stores those instead of dense values. The dense values the pipeline measures are
//! decoded from exactly these codes (`tensor::transform_encoded` checks nothing else is done),
//! so what a runtime reads back is what the job's metrics describe.

use crate::compress::blocks::{self, BlockType};
use crate::compress::cluster::{self, Codebook};
use crate::compress::lowrank::Factors;
use crate::compress::quantize::{IntScheme, QParams, ScaleDtype, min_max};
use crate::compress::{fp8, nf4};
use crate::numeric::SplitMix;
use crate::numeric::simd::multiversion;

/// A tensor's codes and parameters, in row-major order over the tensor as rows × cols.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoded {
    /// No quantizing or substituting step last: the dense values are the stored form.
    Dense,
    /// Integer codes in [qmin, qmax] with one scale and zero-point per group.
    Int {
        /// The scheme.
        scheme: IntScheme,
        /// One code per value.
        codes: Vec<i8>,
        /// One per group, row-major (a single one for per-tensor granularity).
        params: Vec<QParams>,
    },
    /// E4M3 bytes with one scale per row (or a single one).
    Fp8 {
        /// One byte per value.
        codes: Vec<u8>,
        /// Scales.
        scales: Vec<f32>,
    },
    /// GGUF blocks, each row a whole number of blocks.
    Gguf {
        /// The block type.
        kind: BlockType,
        /// The blocks.
        blocks: Vec<u8>,
    },
    /// NF4 level indices (one per byte) with the absmax of each block of 64 flattened values.
    Nf4 {
        /// Indices 0-15.
        codes: Vec<u8>,
        /// One per block.
        absmax: Vec<f32>,
    },
    /// Cluster indices with `2^bits` centroids per tensor or per row (ascending; a codebook with
    /// fewer distinct centroids repeats its last).
    Clustered {
        /// Index width.
        bits: u8,
        /// One index per value.
        indices: Vec<u8>,
        /// `2^bits` per codebook.
        centroids: Vec<f32>,
        /// One codebook per row.
        per_row: bool,
    },
    /// W ≈ A·B.
    LowRank {
        /// rows × rank, row-major.
        a: Vec<f32>,
        /// rank × cols, row-major.
        b: Vec<f32>,
        /// The rank.
        rank: usize,
    },
}

/// One chunk's share of an [`Encoded`] (whole-tensor parameters are not repeated per chunk).
#[derive(Debug, Default)]
pub(crate) struct Piece {
    pub(crate) codes: Vec<u8>,
    pub(crate) params: Vec<QParams>,
    pub(crate) scales: Vec<f32>,
}

impl Piece {
    fn append(&mut self, other: Piece) {
        self.codes.extend_from_slice(&other.codes);
        self.params.extend_from_slice(&other.params);
        self.scales.extend_from_slice(&other.scales);
    }
}

/// Integer codes of whole rows: replaces the values by their dequantized ones (exactly what
/// `IntScheme::fake_quantize_rows` gives, so a negative value rounding to code 0 stays −0 in the
/// dense values while its code decodes to +0) and returns the codes and per-group parameters.
pub(crate) fn int_rows(
    scheme: IntScheme,
    values: &mut [f32],
    cols: usize,
    tensor: Option<QParams>,
) -> Piece {
    let mut piece = Piece {
        codes: vec![0u8; values.len()],
        ..Piece::default()
    };
    let (qmin, qmax) = (scheme.qmin() as f32, scheme.qmax() as f32);
    let group_len = scheme.group_len(cols);
    for (group, codes) in values
        .chunks_mut(group_len)
        .zip(piece.codes.chunks_mut(group_len))
    {
        let p = match tensor {
            Some(p) => p,
            None => {
                let (min, max) = min_max(group);
                scheme.params(min, max)
            }
        };
        int_group(group, codes, p.scale, p.zero_point as f32, qmin, qmax);
        if tensor.is_none() {
            piece.params.push(p);
        }
    }
    piece
}

multiversion! {
    /// One group's codes, and its values replaced by what the codes stand for: `fake_value`
    /// and `IntScheme::quantize` computed once, in one loop the compiler vectorises (rounding
    /// is an instruction on AVX2, a library call per value on baseline x86-64).
    fn int_group(
        values: &mut [f32],
        codes: &mut [u8],
        scale: f32,
        zero_point: f32,
        qmin: f32,
        qmax: f32,
    ) {
        for (v, c) in values.iter_mut().zip(codes.iter_mut()) {
            let x = *v / scale + zero_point;
            let x = if x < qmin { qmin } else { x };
            let x = if x > qmax { qmax } else { x };
            let code = x.round_ties_even();
            *c = code as i32 as i8 as u8;
            // The dense path's own value (it keeps the sign of a zero the codes cannot).
            *v = (code - zero_point) * scale;
        }
    }
}

/// E4M3 codes of whole rows with one scale per row, or `tensor`'s for all.
pub(crate) fn fp8_rows(
    values: &mut [f32],
    cols: usize,
    tensor: Option<f32>,
    round_scale: impl Fn(f32) -> f32,
) -> Piece {
    let mut piece = Piece {
        codes: vec![0u8; values.len()],
        ..Piece::default()
    };
    for (row, codes) in values.chunks_mut(cols).zip(piece.codes.chunks_mut(cols)) {
        let scale = tensor.unwrap_or_else(|| {
            let (lo, hi) = min_max(row);
            round_scale(fp8::scale_for(lo.abs().max(hi.abs())))
        });
        fp8_row(row, codes, scale);
        if tensor.is_none() {
            piece.scales.push(scale);
        }
    }
    piece
}

multiversion! {
    /// One row's E4M3 codes, and its values replaced by what the codes stand for.
    fn fp8_row(values: &mut [f32], codes: &mut [u8], scale: f32) {
        for (v, c) in values.iter_mut().zip(codes.iter_mut()) {
            *c = fp8::code(*v, scale);
            *v = fp8::e4m3_to_f32(*c) * scale;
        }
    }
}

multiversion! {
    /// GGUF blocks of whole rows (lengths a multiple of the block). The block kernels inline
    /// here, so their rounding is an instruction on AVX2 rather than a library call per value.
    pub(crate) fn gguf_rows(kind: BlockType, values: &mut [f32]) -> Piece {
        let blocks = values.len() / kind.block_len();
        let mut codes = vec![0u8; blocks * kind.block_bytes()];
        for (x, block) in values
            .chunks_exact_mut(kind.block_len())
            .zip(codes.chunks_exact_mut(kind.block_bytes()))
        {
            blocks::quantize_block(kind, x, block);
            blocks::dequantize_block(kind, block, x);
        }
        Piece {
            codes,
            ..Piece::default()
        }
    }
}

/// NF4 indices and block absmaxes; `values` begins on a block boundary of the flattened tensor.
pub(crate) fn nf4_values(values: &mut [f32]) -> Piece {
    let mut piece = Piece {
        codes: vec![0u8; values.len()],
        ..Piece::default()
    };
    for (block, codes) in values
        .chunks_mut(nf4::BLOCK)
        .zip(piece.codes.chunks_mut(nf4::BLOCK))
    {
        let absmax = nf4::encode_block(block, codes);
        for (v, &c) in block.iter_mut().zip(codes.iter()) {
            *v = if absmax == 0.0 {
                0.0
            } else {
                nf4::LEVELS[usize::from(c)] * absmax
            };
        }
        piece.scales.push(absmax);
    }
    piece
}

/// Indices into one tensor-wide codebook.
pub(crate) fn cluster_indices(book: &Codebook, values: &mut [f32]) -> Piece {
    let mut piece = Piece {
        codes: Vec::with_capacity(values.len()),
        ..Piece::default()
    };
    for v in values.iter_mut() {
        let i = book.index(*v);
        piece.codes.push(i as u8);
        *v = book.centroids()[i];
    }
    piece
}

/// Per-row codebooks (as `cluster::cluster_rows` finds them) and indices into them.
pub(crate) fn cluster_rows(
    values: &mut [f32],
    cols: usize,
    bits: u8,
    seed: u64,
    first_row: usize,
) -> Piece {
    let mut piece = Piece::default();
    for (r, row) in values.chunks_mut(cols).enumerate() {
        let mut rng = SplitMix::new(seed, (first_row + r) as u64);
        let book = cluster::kmeans(row, 1 << bits, &mut rng);
        piece.scales.extend(padded_centroids(&book, bits));
        piece.append(cluster_indices(&book, row));
    }
    piece
}

/// A codebook's centroids padded to `2^bits` by repeating the last (k-means may find fewer
/// distinct values than it was asked for).
pub(crate) fn padded_centroids(book: &Codebook, bits: u8) -> Vec<f32> {
    let mut centroids = book.centroids().to_vec();
    let last = centroids.last().copied().unwrap_or(0.0);
    centroids.resize(1 << bits, last);
    centroids
}

/// What a tensor's stored form becomes once its chunks' pieces are joined.
pub(crate) enum Assembly {
    Dense,
    Int {
        scheme: IntScheme,
        tensor: Option<QParams>,
    },
    Fp8 {
        tensor: Option<f32>,
    },
    Gguf(BlockType),
    Nf4,
    Clustered {
        bits: u8,
        tensor: Option<Vec<f32>>,
    },
    LowRank(Factors),
}

impl Assembly {
    /// The tensor's stored form from its chunks' pieces, in chunk order.
    pub(crate) fn assemble(self, pieces: Vec<Piece>) -> Encoded {
        let mut piece = Piece::default();
        for p in pieces {
            piece.append(p);
        }
        match self {
            Assembly::Dense => Encoded::Dense,
            Assembly::Int { scheme, tensor } => Encoded::Int {
                scheme,
                codes: piece.codes.into_iter().map(|b| b as i8).collect(),
                params: tensor.map_or(piece.params, |p| vec![p]),
            },
            Assembly::Fp8 { tensor } => Encoded::Fp8 {
                codes: piece.codes,
                scales: tensor.map_or(piece.scales, |s| vec![s]),
            },
            Assembly::Gguf(kind) => Encoded::Gguf {
                kind,
                blocks: piece.codes,
            },
            Assembly::Nf4 => Encoded::Nf4 {
                codes: piece.codes,
                absmax: piece.scales,
            },
            Assembly::Clustered { bits, tensor } => Encoded::Clustered {
                bits,
                indices: piece.codes,
                per_row: tensor.is_none(),
                centroids: tensor.unwrap_or(piece.scales),
            },
            Assembly::LowRank(f) => Encoded::LowRank {
                a: f.a,
                b: f.b,
                rank: f.rank,
            },
        }
    }
}

impl Assembly {
    /// The tensor's stored form from a one-pass kernel's codes (one byte per value, or whole
    /// GGUF blocks) and its groups' parameters (`fused::CodesOut::groups`).
    pub(crate) fn assemble_codes(self, codes: Vec<u8>, groups: Vec<[f32; 2]>) -> Encoded {
        match self {
            Assembly::Int { scheme, tensor } => Encoded::Int {
                scheme,
                codes: codes.into_iter().map(|b| b as i8).collect(),
                params: tensor.map_or_else(
                    || {
                        groups
                            .iter()
                            .map(|&[scale, zero_point]| QParams {
                                scale,
                                zero_point: zero_point as i32,
                            })
                            .collect()
                    },
                    |p| vec![p],
                ),
            },
            Assembly::Fp8 { tensor } => Encoded::Fp8 {
                codes,
                scales: tensor.map_or_else(|| groups.iter().map(|g| g[0]).collect(), |s| vec![s]),
            },
            Assembly::Gguf(kind) => Encoded::Gguf {
                kind,
                blocks: codes,
            },
            _ => unreachable!("one-pass kernels store integer, FP8 and GGUF codes only"),
        }
    }
}

/// The parameter of value `i` when each covers `per` consecutive values (or one covers all).
fn shared<T: Copy>(params: &[T], i: usize, per: usize) -> T {
    if params.len() == 1 {
        params[0]
    } else {
        params[i / per]
    }
}

impl Encoded {
    /// Bits the stored form takes at its nominal widths for a tensor of `elements` values
    /// whose dtype has `dtype_bits` (scales at the scheme's precision, nothing for layout).
    pub fn theoretical_bits(&self, elements: u64, dtype_bits: u64) -> f64 {
        let n = elements as f64;
        match self {
            Encoded::Dense => n * dtype_bits as f64,
            Encoded::Int { scheme, params, .. } => {
                let scale_bits = match scheme.scale_dtype {
                    ScaleDtype::F32 => 32.0,
                    ScaleDtype::F16 | ScaleDtype::Bf16 => 16.0,
                };
                let zero_point_bits = if scheme.symmetric {
                    0.0
                } else {
                    f64::from(scheme.bits)
                };
                n * f64::from(scheme.bits) + params.len() as f64 * (scale_bits + zero_point_bits)
            }
            // compressed-tensors keeps FP8 scales in the weight's dtype.
            Encoded::Fp8 { scales, .. } => n * 8.0 + scales.len() as f64 * dtype_bits as f64,
            Encoded::Gguf { kind, .. } => {
                n / kind.block_len() as f64 * kind.block_bytes() as f64 * 8.0
            }
            Encoded::Nf4 { absmax, .. } => n * 4.0 + absmax.len() as f64 * 32.0,
            Encoded::Clustered {
                bits, centroids, ..
            } => n * f64::from(*bits) + centroids.len() as f64 * 32.0,
            Encoded::LowRank { a, b, .. } => (a.len() + b.len()) as f64 * 32.0,
        }
    }

    /// The dense values these codes stand for (rows × cols, row-major), straight from the
    /// in-memory form (the file readers in `formats::reader` decode the stored bytes instead).
    pub fn decode(&self, rows: usize, cols: usize) -> Option<Vec<f32>> {
        let n = rows * cols;
        Some(match self {
            Encoded::Dense => return None,
            Encoded::Int {
                scheme,
                codes,
                params,
            } => {
                let group = scheme.group_len(cols).max(1);
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| IntScheme::dequantize(i32::from(q), shared(params, i, group)))
                    .collect()
            }
            Encoded::Fp8 { codes, scales } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| fp8::e4m3_to_f32(c) * shared(scales, i, cols))
                .collect(),
            Encoded::Gguf { kind, blocks } => {
                let mut out = vec![0f32; n];
                for (x, block) in out
                    .chunks_exact_mut(kind.block_len())
                    .zip(blocks.chunks_exact(kind.block_bytes()))
                {
                    blocks::dequantize_block(*kind, block, x);
                }
                out
            }
            Encoded::Nf4 { codes, absmax } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| nf4::LEVELS[usize::from(c)] * absmax[i / nf4::BLOCK])
                .collect(),
            Encoded::Clustered {
                bits,
                indices,
                centroids,
                per_row,
            } => {
                let k = 1usize << bits;
                indices
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let book = if *per_row { i / cols } else { 0 };
                        centroids[book * k + usize::from(c)]
                    })
                    .collect()
            }
            Encoded::LowRank { a, b, rank } => {
                let mut out = vec![0f32; n];
                let factors = Factors {
                    a: a.clone(),
                    b: b.clone(),
                    rank: *rank,
                    rows,
                    cols,
                    singular_values: Vec::new(),
                    energy: 0.0,
                };
                factors.reconstruct_rows(0..rows, &mut out);
                out
            }
        })
    }
}
