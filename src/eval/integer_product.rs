//! The product of activations with GGUF weights that meet them as Q8_0 (Q8_0, Q4_0 and Q5_0
//! blocks: ggml's `vec_dot_type`), done in integers as llama.cpp does it on CPUs with AVX-512
//! VNNI: each block of 32 activations rounded to int8 with one scale, each pair of blocks'
//! dot product summed exactly in int32 by `vpdpbusd` (64 multiply-adds an instruction, four
//! times an f32 FMA's), then scaled by both blocks' scales and accumulated in f32.
//!
//! The weights are repacked once, at load, into panels of 32 output rows whose codes are
//! interleaved four inputs at a time, the layout `vpdpbusd` reads with one load per 16 rows.
//! That is 1.25 bytes a weight, where the dense path keeps a 4-byte f32 copy. Without VNNI the
//! evaluation keeps the dense path: with AVX2's `maddubs` an integer product needs as many
//! instructions as the f32 one (llama.cpp's Q8_0 runs no faster than its F32 there).
//!
//! Every output is Σ over blocks of (exact integer dot) × (weight scale × activation scale),
//! the sum llama.cpp's and candle's quantized matmuls form, in a fixed order. A scalar twin
//! does the same operations in the same order; the tests hold the vector kernel to it bit for
//! bit, and both to candle's quantized matmul within float rounding.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::activations::q8_0_codes;
use super::weights::values_of;

/// Inputs per block: Q8_0's, Q4_0's and Q5_0's.
const BLOCK: usize = 32;
/// Output rows per panel: two 16-lane vectors.
const PANEL: usize = 32;
/// Activation rows per kernel call: 4 rows × 2 vectors of integer sums and as many f32 sums
/// keep 16 of the 32 vector registers busy, with room for the weights and broadcasts.
const ROWS: usize = 4;
/// Activation rows a task takes when rows are split among threads: 64 rows of a 1536-wide
/// layer's codes (96 KiB) stay in L2 while every panel passes over them.
const MOST_ROWS_PER_TASK: usize = 64;

/// Whether this CPU runs the integer product (AVX-512 F/BW with VNNI), unless `SQUEEZE_SIMD`
/// caps the level below AVX-512.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            crate::numeric::simd::level() == crate::numeric::simd::Level::Avx512
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether weights of this block type can be repacked for the integer product.
pub fn packs(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q5_0)
}

/// A weight matrix repacked for the integer product.
pub struct IntegerWeights {
    outputs: usize,
    inputs: usize,
    /// Per panel, per block, per group of four inputs: the panel's 32 rows' four codes, row
    /// after row. Rows past the last output are zero.
    codes: Vec<i8>,
    /// Per panel and block: the 32 rows' scales (0 past the last output).
    scales: Vec<f32>,
    /// Per panel and block: −128 × the sum of each row's codes. Activations are stored as
    /// unsigned bytes (code + 128), as `vpdpbusd` takes them, so each integer sum starts here.
    offsets: Vec<i32>,
}

/// Activations rounded to Q8_0: codes + 128 as unsigned bytes, one scale per block.
struct Rounded {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl IntegerWeights {
    /// Repacks a Q8_0, Q4_0 or Q5_0 matrix (`[outputs, inputs]`).
    pub fn pack(q: &QTensor) -> candle_core::Result<IntegerWeights> {
        let (outputs, inputs) = q.shape().dims2()?;
        let dtype = q.dtype();
        if !packs(dtype) || !inputs.is_multiple_of(BLOCK) {
            candle_core::bail!("no integer product for {dtype:?} with {inputs} inputs");
        }
        let data = q.data()?;
        let block_bytes = dtype.type_size();
        let blocks = inputs / BLOCK;
        if data.len() != outputs * blocks * block_bytes {
            candle_core::bail!(
                "{dtype:?} data of {} bytes for {outputs}×{inputs}",
                data.len()
            );
        }
        let panels = outputs.div_ceil(PANEL);
        let mut weights = IntegerWeights {
            outputs,
            inputs,
            codes: vec![0; panels * blocks * PANEL * BLOCK],
            scales: vec![0.0; panels * blocks * PANEL],
            offsets: vec![0; panels * blocks * PANEL],
        };
        // Each panel's slices are its own, so panels unpack side by side.
        let per_panel = (blocks * PANEL * BLOCK, blocks * PANEL);
        weights
            .codes
            .par_chunks_mut(per_panel.0)
            .zip(weights.scales.par_chunks_mut(per_panel.1))
            .zip(weights.offsets.par_chunks_mut(per_panel.1))
            .enumerate()
            .for_each(|(panel, ((codes, scales), offsets))| {
                let rows = panel * PANEL..(outputs).min((panel + 1) * PANEL);
                for (lane, row) in rows.enumerate() {
                    for b in 0..blocks {
                        let at = (row * blocks + b) * block_bytes;
                        let (scale, values) = unpack_block(dtype, &data[at..at + block_bytes]);
                        let slot = b * PANEL + lane;
                        scales[slot] = scale;
                        offsets[slot] = -128 * values.iter().map(|&v| v as i32).sum::<i32>();
                        for (group, four) in values.chunks_exact(4).enumerate() {
                            let to = (b * BLOCK / 4 + group) * PANEL * 4 + lane * 4;
                            codes[to..to + 4].copy_from_slice(four);
                        }
                    }
                }
            });
        Ok(weights)
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `x Wᵀ` for `x` of any rank whose last dimension is the weight's inputs.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == self.inputs => *last = self.outputs,
            _ => candle_core::bail!(
                "integer product: input {:?}, weight inputs {}",
                x.dims(),
                self.inputs
            ),
        }
        let rounded = Rounded::of(x)?;
        let out = self.multiply(&rounded, kernel());
        Tensor::from_vec(out, dims, &Device::Cpu)
    }

    /// The product of every rounded row, on the rayon pool: bands of rows when there are
    /// enough to keep every thread busy, otherwise bands of panels (a token at a time).
    fn multiply(&self, x: &Rounded, kernel: Kernel) -> Vec<f32> {
        let rows = x.codes.len() / self.inputs;
        let panels = self.outputs.div_ceil(PANEL);
        let mut out = vec![0f32; rows * self.outputs];
        if rows == 0 || self.outputs == 0 {
            return out;
        }
        let threads = rayon::current_num_threads().max(1);
        if rows >= 2 * ROWS * threads {
            let per_task = rows
                .div_ceil(4 * threads)
                .next_multiple_of(ROWS)
                .min(MOST_ROWS_PER_TASK);
            out.par_chunks_mut(per_task * self.outputs)
                .enumerate()
                .for_each(|(task, part)| {
                    let first = task * per_task;
                    let band = first..first + part.len() / self.outputs;
                    self.product(x, band, 0..panels, part, kernel);
                });
        } else {
            let per_task = panels.div_ceil(4 * threads).max(1);
            let parts: Vec<(Range<usize>, Vec<f32>)> = (0..panels)
                .into_par_iter()
                .step_by(per_task)
                .map(|first| {
                    let band = first..(first + per_task).min(panels);
                    let columns = self.columns(&band);
                    let mut part = vec![0f32; rows * columns.len()];
                    self.product(x, 0..rows, band, &mut part, kernel);
                    (columns, part)
                })
                .collect();
            for (columns, part) in parts {
                for (row, values) in part.chunks_exact(columns.len()).enumerate() {
                    out[row * self.outputs..][columns.clone()].copy_from_slice(values);
                }
            }
        }
        out
    }

    /// The output columns a band of panels covers.
    fn columns(&self, panels: &Range<usize>) -> Range<usize> {
        panels.start * PANEL..(panels.end * PANEL).min(self.outputs)
    }

    /// Rows `rows` × panels `panels` of the product into `out`, whose rows are the band's
    /// columns (`columns(panels)`), one row per activation row.
    fn product(
        &self,
        x: &Rounded,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [f32],
        kernel: Kernel,
    ) {
        let columns = self.columns(&panels);
        let width = columns.len();
        let mut tile = [[0f32; PANEL]; ROWS];
        for panel in panels {
            let from = panel * PANEL - columns.start;
            let valid = PANEL.min(self.outputs - panel * PANEL);
            for first in rows.clone().step_by(ROWS) {
                let count = ROWS.min(rows.end - first);
                self.tile(x, first, count, panel, &mut tile, kernel);
                for (r, values) in tile.iter().take(count).enumerate() {
                    let at = (first - rows.start + r) * width + from;
                    out[at..at + valid].copy_from_slice(&values[..valid]);
                }
            }
        }
    }

    /// Up to `ROWS` rows from `first` against one panel.
    fn tile(
        &self,
        x: &Rounded,
        first: usize,
        count: usize,
        panel: usize,
        out: &mut [[f32; PANEL]; ROWS],
        kernel: Kernel,
    ) {
        let blocks = self.inputs / BLOCK;
        let codes = &x.codes[first * self.inputs..(first + count) * self.inputs];
        let scales = &x.scales[first * blocks..(first + count) * blocks];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `kernel()` picks Vnni only when `available()` found AVX-512 F/BW and
            // VNNI; the slices hold `count` whole rows and the panel exists (checked inside).
            Kernel::Vnni => unsafe {
                match count {
                    1 => vnni::tile::<1>(self, codes, scales, panel, out),
                    2 => vnni::tile::<2>(self, codes, scales, panel, out),
                    3 => vnni::tile::<3>(self, codes, scales, panel, out),
                    _ => vnni::tile::<4>(self, codes, scales, panel, out),
                }
            },
            Kernel::Scalar => self.tile_scalar(codes, scales, count, panel, out),
        }
    }

    /// The kernel's scalar twin: the same sums, scalings and fused multiply-adds in the same
    /// order, so its results are the vector kernel's bit for bit.
    fn tile_scalar(
        &self,
        codes: &[u8],
        scales: &[f32],
        count: usize,
        panel: usize,
        out: &mut [[f32; PANEL]; ROWS],
    ) {
        let blocks = self.inputs / BLOCK;
        for (r, row_out) in out.iter_mut().take(count).enumerate() {
            for (lane, slot) in row_out.iter_mut().enumerate() {
                let mut sum = 0f32;
                for b in 0..blocks {
                    let at = panel * blocks + b;
                    let mut integer = self.offsets[at * PANEL + lane];
                    for group in 0..BLOCK / 4 {
                        let w = &self.codes[(at * BLOCK / 4 + group) * PANEL * 4 + lane * 4..][..4];
                        let a = &codes[r * self.inputs + b * BLOCK + group * 4..][..4];
                        for (&w, &a) in w.iter().zip(a) {
                            integer += a as i32 * w as i32;
                        }
                    }
                    let scale = self.scales[at * PANEL + lane] * scales[r * blocks + b];
                    sum = (integer as f32).mul_add(scale, sum);
                }
                *slot = sum;
            }
        }
    }
}

/// One block's scale and its 32 codes, in input order (ggml's layouts: Q8_0 an f16 scale and
/// 32 signed bytes; Q4_0 an f16 scale and 16 bytes, inputs 0–15 in the low nibbles and 16–31
/// in the high ones, minus 8; Q5_0 the same with a 32-bit word of fifth bits, minus 16).
fn unpack_block(dtype: GgmlDType, bytes: &[u8]) -> (f32, [i8; BLOCK]) {
    let scale = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
    let mut values = [0i8; BLOCK];
    match dtype {
        GgmlDType::Q8_0 => {
            for (v, &b) in values.iter_mut().zip(&bytes[2..2 + BLOCK]) {
                *v = b as i8;
            }
        }
        GgmlDType::Q4_0 => {
            for (j, &b) in bytes[2..2 + BLOCK / 2].iter().enumerate() {
                values[j] = (b & 0x0f) as i8 - 8;
                values[j + BLOCK / 2] = (b >> 4) as i8 - 8;
            }
        }
        _ => {
            let high = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
            for (j, &b) in bytes[6..6 + BLOCK / 2].iter().enumerate() {
                let low_fifth = ((high >> j) << 4) & 0x10;
                let high_fifth = (high >> (j + 12)) & 0x10;
                values[j] = ((b as u32 & 0x0f) | low_fifth) as i8 - 16;
                values[j + BLOCK / 2] = ((b as u32 >> 4) | high_fifth) as i8 - 16;
            }
        }
    }
    (scale, values)
}

impl Rounded {
    /// `x`'s rows rounded as ggml rounds activations to Q8_0.
    fn of(x: &Tensor) -> candle_core::Result<Rounded> {
        values_of(x, |values| {
            let mut rounded = Rounded {
                codes: vec![0; values.len()],
                scales: vec![0.0; values.len() / BLOCK],
            };
            // In bands of 4096 blocks side by side (rows are whole blocks, so any multiple of
            // the block keeps each block in one band).
            let per_task = 4096 * BLOCK;
            values
                .par_chunks(per_task)
                .zip(rounded.codes.par_chunks_mut(per_task))
                .zip(rounded.scales.par_chunks_mut(per_task / BLOCK))
                .for_each(|((values, codes), scales)| q8_0_codes(values, codes, scales));
            rounded
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Vnni,
    Scalar,
}

fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if available() {
        return Kernel::Vnni;
    }
    Kernel::Scalar
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, IntegerWeights, PANEL, ROWS};

    /// `ROWS_HERE` activation rows against one panel. Per block: two vectors of integer sums
    /// per row start at the panel's offsets, take eight `vpdpbusd` each (four inputs of one
    /// row broadcast against 16 rows' four codes), then are converted and added, scaled, to
    /// the row's f32 sums.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const ROWS_HERE: usize>(
        w: &IntegerWeights,
        codes: &[u8],
        scales: &[f32],
        panel: usize,
        out: &mut [[f32; PANEL]; ROWS],
    ) {
        let blocks = w.inputs / BLOCK;
        assert!(ROWS_HERE <= ROWS && codes.len() >= ROWS_HERE * w.inputs);
        assert!(scales.len() >= ROWS_HERE * blocks);
        assert!((panel + 1) * blocks * PANEL <= w.scales.len());
        let mut sums = [[_mm512_setzero_ps(); 2]; ROWS_HERE];
        for b in 0..blocks {
            let at = panel * blocks + b;
            // SAFETY: for every pointer read below, `at * PANEL + 32 <= scales.len() ==
            // offsets.len()`, the block's codes are `at * PANEL * BLOCK ..` plus 1024 bytes,
            // and each row read is within its `inputs` codes (asserted above).
            unsafe {
                let offsets = w.offsets.as_ptr().add(at * PANEL);
                let start = [
                    _mm512_loadu_si512(offsets.cast()),
                    _mm512_loadu_si512(offsets.add(16).cast()),
                ];
                let mut integer = [start; ROWS_HERE];
                let weights = w.codes.as_ptr().add(at * PANEL * BLOCK);
                for group in 0..BLOCK / 4 {
                    let low = _mm512_loadu_si512(weights.add(group * PANEL * 4).cast());
                    let high = _mm512_loadu_si512(weights.add(group * PANEL * 4 + 64).cast());
                    for (r, sums) in integer.iter_mut().enumerate() {
                        let four = codes
                            .as_ptr()
                            .add(r * w.inputs + b * BLOCK + group * 4)
                            .cast::<i32>()
                            .read_unaligned();
                        let four = _mm512_set1_epi32(four);
                        sums[0] = _mm512_dpbusd_epi32(sums[0], four, low);
                        sums[1] = _mm512_dpbusd_epi32(sums[1], four, high);
                    }
                }
                let weight_scales = w.scales.as_ptr().add(at * PANEL);
                let weight_scales = [
                    _mm512_loadu_ps(weight_scales),
                    _mm512_loadu_ps(weight_scales.add(16)),
                ];
                for (r, (sums, integer)) in sums.iter_mut().zip(&integer).enumerate() {
                    let scale = _mm512_set1_ps(*scales.get_unchecked(r * blocks + b));
                    for half in 0..2 {
                        sums[half] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(integer[half]),
                            _mm512_mul_ps(weight_scales[half], scale),
                            sums[half],
                        );
                    }
                }
            }
        }
        for (row, sums) in out.iter_mut().zip(&sums) {
            // SAFETY: each row holds PANEL = 32 floats.
            unsafe {
                _mm512_storeu_ps(row.as_mut_ptr(), sums[0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(16), sums[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;
    use candle_core::quantized::QMatMul;

    fn values(seed: u64, n: usize, spread: f32) -> Vec<f32> {
        let mut rng = crate::numeric::SplitMix::new(seed, 4);
        (0..n)
            .map(|_| (rng.next_unit() as f32 - 0.5) * spread)
            .collect()
    }

    /// Repacked blocks hold exactly what candle's dequantization gives, for every type packed.
    #[test]
    fn packed_codes_times_scales_are_the_dequantized_weights() {
        let (outputs, inputs) = (37, 96);
        let w = Tensor::from_vec(
            values(1, outputs * inputs, 3.0),
            (outputs, inputs),
            &Device::Cpu,
        )
        .unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q5_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let packed = IntegerWeights::pack(&q).unwrap();
            let blocks = inputs / BLOCK;
            for (row, want) in want.iter().enumerate() {
                let (panel, lane) = (row / PANEL, row % PANEL);
                for (i, &want) in want.iter().enumerate() {
                    let (b, within) = (i / BLOCK, i % BLOCK);
                    let at = panel * blocks + b;
                    let code = packed.codes
                        [(at * BLOCK / 4 + within / 4) * PANEL * 4 + lane * 4 + within % 4];
                    let got = code as f32 * packed.scales[at * PANEL + lane];
                    assert_eq!(got.to_bits(), want.to_bits(), "{dtype:?} [{row}, {i}]");
                }
            }
        }
    }

    /// The vector kernel gives its scalar twin's results bit for bit, for row counts and
    /// widths that do and do not fill a tile or a panel, on both ways of splitting the work.
    #[test]
    fn vector_kernel_equals_its_scalar_twin_bit_for_bit() {
        if kernel() == Kernel::Scalar {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for (rows, outputs, inputs) in [(1, 5, 32), (3, 33, 64), (13, 70, 96), (70, 64, 320)] {
            let w = Tensor::from_vec(
                values(2, outputs * inputs, 2.0),
                (outputs, inputs),
                &Device::Cpu,
            )
            .unwrap();
            let x = Tensor::from_vec(values(3, rows * inputs, 8.0), (rows, inputs), &Device::Cpu)
                .unwrap();
            let packed =
                IntegerWeights::pack(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
            let rounded = Rounded::of(&x).unwrap();
            let vector = packed.multiply(&rounded, kernel());
            let scalar = packed.multiply(&rounded, Kernel::Scalar);
            assert_eq!(vector.len(), rows * outputs);
            for (i, (v, s)) in vector.iter().zip(&scalar).enumerate() {
                assert_eq!(
                    v.to_bits(),
                    s.to_bits(),
                    "{rows}×{outputs}×{inputs} value {i}"
                );
            }
        }
    }

    /// The integer product gives each row what candle's quantized matmul gives it, within
    /// float rounding, and what the dense product of the rounded activations with the
    /// dequantized weights gives.
    #[test]
    fn integer_product_equals_candles_quantized_matmul() {
        let (outputs, inputs, rows) = (70, 256, 9);
        let w = Tensor::from_vec(
            values(5, outputs * inputs, 2.0),
            (outputs, inputs),
            &Device::Cpu,
        )
        .unwrap();
        let x = Tensor::from_vec(
            values(6, rows * inputs, 4.0),
            (1, rows, inputs),
            &Device::Cpu,
        )
        .unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q5_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let packed = IntegerWeights::pack(&q).unwrap();
            let got = packed.forward(&x).unwrap();
            assert_eq!(got.dims(), &[1, rows, outputs]);
            let got = got.to_vec3::<f32>().unwrap();
            let candle = QMatMul::from_qtensor(q).unwrap();
            for (r, got) in got[0].iter().enumerate() {
                let row = x.narrow(1, r, 1).unwrap();
                let want = candle.forward(&row).unwrap().to_vec3::<f32>().unwrap();
                for (o, (g, w)) in got.iter().zip(&want[0][0]).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{dtype:?} row {r} output {o}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// Activations' codes and scales are `activations::round`'s values, bit for bit.
    #[test]
    fn activation_codes_are_the_evaluations_rounding() {
        let x = values(7, 8 * 64, 10.0);
        let mut want = x.clone();
        super::super::activations::round(&mut want, super::super::activations::Rounding::Q8_0);
        let t = Tensor::from_vec(x, (8, 64), &Device::Cpu).unwrap();
        let rounded = Rounded::of(&t).unwrap();
        for (i, &w) in want.iter().enumerate() {
            let got = (rounded.codes[i] as f32 - 128.0) * rounded.scales[i / BLOCK];
            assert_eq!(got.to_bits(), w.to_bits(), "value {i}");
        }
    }
}
