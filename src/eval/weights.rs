//! A model's weights as the evaluation runtime holds them: dense f32 tensors by Hugging Face
//! name, plus GGUF block tensors multiplied natively (by `integer_product` where the CPU has
//! AVX-512 VNNI and the blocks meet activations as Q8_0, by candle otherwise). Loaded from the
//! uploaded safetensors (read by candle's own reader, not ours), from an artifact folder
//! (decoded by `formats::reader`), or from a GGUF file (read by candle's GGUF reader).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use super::EvalError;
use super::integer_product::{self, IntegerWeights};
use crate::formats::{gguf, reader};
use crate::numeric::Dtype;

/// How a model's linear layers are multiplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// f32 weights (dequantized where the artifact stores another form).
    Dense,
    /// candle's quantized matmul on the stored GGUF blocks, with the block types used.
    Native(BTreeSet<String>),
}

/// A model's tensors in the runtime.
pub struct Weights {
    /// Dense tensors; 2-D ones are stored transposed (`[in, out]`, contiguous), the layout the
    /// matmul reads fastest, and handed out to other users as a transposed view.
    dense: HashMap<String, Tensor>,
    quantized: HashMap<String, Arc<QTensor>>,
    /// Query and key rows are in llama.cpp's interleaved rotary order (GGUF of Llama/Mistral).
    pub interleaved_rope: bool,
}

/// A linear layer: `y = x Wᵀ (+ b)`, dense or on GGUF blocks.
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

enum LinearWeight {
    /// GGUF blocks: candle's quantized matmul for one row at a time (token by token decoding),
    /// where reading a quarter of the bytes makes it faster than dense; batches of rows go
    /// through the dequantized copy, as candle's dense matmul multiplies them several times
    /// faster than its quantized one (SmolLM2-135M Q8_0, candle's kernels on one thread: 229
    /// against 65 prompt tokens/s, and 19 against 35 ms per decoded token for the blocks).
    Blocks {
        blocks: RowBands,
        dequantized: Tensor,
        /// The block type the quantized matmul rounds activations to (llama.cpp's and candle's
        /// `vec_dot_type`); the dense path rounds them the same way, so its figures are the
        /// runtime's, not those of the weights' rounding alone.
        activations: Option<GgmlDType>,
    },
    /// GGUF blocks that meet activations as Q8_0, repacked for the integer product on CPUs
    /// with AVX-512 VNNI, for batches and single tokens alike (neither the dequantized copy
    /// nor row bands are kept).
    Integer(IntegerWeights),
    /// Dense f32, stored transposed (`[in, out]`, contiguous): the matmul's packing then reads
    /// rows in order rather than striding down columns, several times faster for few tokens.
    Transposed(Tensor),
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Blocks {
                blocks,
                dequantized,
                activations,
            } => {
                let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
                match activations {
                    _ if rows == 1 => blocks.forward(x)?,
                    Some(kind) => match super::activations::Rounding::of(*kind) {
                        Some(rounding) => super::activations::round_tensor(x, rounding)?
                            .broadcast_matmul(dequantized)?,
                        None => QTensor::quantize(x, *kind)?
                            .dequantize(x.device())?
                            .broadcast_matmul(dequantized)?,
                    },
                    None => x.broadcast_matmul(dequantized)?,
                }
            }
            LinearWeight::Integer(weights) => weights.forward(x)?,
            LinearWeight::Transposed(wt) => x.broadcast_matmul(wt)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Rows of the weight (output features).
    pub fn out_features(&self) -> usize {
        match &self.weight {
            LinearWeight::Blocks { dequantized, .. } | LinearWeight::Transposed(dequantized) => {
                dequantized.dims()[1]
            }
            LinearWeight::Integer(weights) => weights.outputs(),
        }
    }
}

/// GGUF blocks cut by output rows into one band per thread, each its own quantized matmul:
/// one token's product runs the bands side by side. (candle's own threads for it are off: the
/// binary sets CANDLE_NUM_THREADS=1, because its spinning pool, shared by the sequences that
/// the accuracy pass runs side by side, cost more than it gave.) Each output is the same dot
/// product of one row's blocks either way, so the split changes no value.
struct RowBands(Vec<QMatMul>);

impl RowBands {
    fn of(q: &Arc<QTensor>) -> candle_core::Result<RowBands> {
        RowBands::split(q, rayon::current_num_threads())
    }

    fn split(q: &Arc<QTensor>, bands: usize) -> candle_core::Result<RowBands> {
        let (rows, columns) = q.shape().dims2()?;
        let bands = bands.clamp(1, rows.max(1));
        if bands == 1 {
            return Ok(RowBands(vec![QMatMul::from_arc(q.clone())?]));
        }
        let data = q.data()?;
        let row_bytes = data.len() / rows;
        let per_band = rows.div_ceil(bands);
        (0..rows)
            .step_by(per_band)
            .map(|first| {
                let count = per_band.min(rows - first);
                let bytes = &data[first * row_bytes..(first + count) * row_bytes];
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Borrowed(bytes),
                    &Device::Cpu,
                    q.dtype(),
                )?;
                QMatMul::from_qtensor(QTensor::new(storage, (count, columns))?)
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map(RowBands)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use rayon::prelude::*;
        if let [one] = self.0.as_slice() {
            return one.forward(x);
        }
        let parts = self
            .0
            .par_iter()
            .map(|band| band.forward(x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, x.rank() - 1)
    }
}

/// Hands `read` an f32 tensor's values in row-major order, in place when it is contiguous.
pub fn with_values(t: &Tensor, read: &mut dyn FnMut(&[f32])) -> Result<(), EvalError> {
    values_of(t, read).map_err(runtime)
}

/// [`with_values`] for callers inside candle's error type (a layer's forward).
pub(crate) fn values_of<R>(t: &Tensor, read: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            let all = cpu.as_slice::<f32>()?;
            Ok(read(&all[layout.start_offset()..][..t.elem_count()]))
        }
        _ => candle_core::bail!("the tensor is not on the CPU"),
    }
}

pub(crate) fn runtime(err: candle_core::Error) -> EvalError {
    EvalError::Runtime(candle_message(&err))
}

/// A candle error's message without the backtrace candle appends when backtraces are on.
pub fn candle_message(err: &candle_core::Error) -> String {
    let text = err.to_string();
    let end = text.find("    0: ").unwrap_or(text.len());
    text[..end].trim_end().to_owned()
}

/// A tensor as the map keeps it: matrices transposed, f32 ones in tiles on the rayon pool
/// (candle's strided copy walks one thread down columns: most of a model's loading time).
fn stored(t: Tensor) -> Result<Tensor, EvalError> {
    if t.rank() != 2 {
        return Ok(t);
    }
    if t.dtype() != DType::F32 {
        return t.t().and_then(|t| t.contiguous()).map_err(runtime);
    }
    let (rows, cols) = t.dims2().map_err(runtime)?;
    let mut values = Vec::new();
    with_values(&t, &mut |v| values = transpose(v, rows, cols))?;
    Tensor::from_vec(values, (cols, rows), &Device::Cpu).map_err(runtime)
}

/// The `rows × cols` row-major matrix `values` as `cols × rows`, bands of output rows in
/// parallel, each band copied in square tiles so reads and writes both stay in cache.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, chunk)| {
            let first_col = band * TILE;
            let band_cols = chunk.len() / rows;
            for first_row in (0..rows).step_by(TILE) {
                let band_rows = TILE.min(rows - first_row);
                for c in 0..band_cols {
                    let to = &mut chunk[c * rows + first_row..][..band_rows];
                    for (r, slot) in to.iter_mut().enumerate() {
                        *slot = values[(first_row + r) * cols + first_col + c];
                    }
                }
            }
        });
    out
}

impl Weights {
    /// The uploaded model's safetensors files, every tensor widened to f32.
    pub fn from_safetensors(paths: &[PathBuf]) -> Result<Weights, EvalError> {
        use rayon::prelude::*;
        let mut dense = HashMap::new();
        for path in paths {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(runtime)?;
            let widened: Vec<(String, Tensor)> = tensors
                .into_par_iter()
                .filter(|(_, t)| t.dtype().is_float())
                .map(|(name, t)| Ok((name, stored(t.to_dtype(DType::F32).map_err(runtime)?)?)))
                .collect::<Result<_, EvalError>>()?;
            dense.extend(widened);
        }
        Ok(Weights {
            dense,
            quantized: HashMap::new(),
            interleaved_rope: false,
        })
    }

    /// Dense f32 tensors given as `(name, shape, row-major values)`: one decoder layer that
    /// calibration rebuilds after compressing its projections.
    pub fn from_values(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Weights, EvalError> {
        let mut dense = HashMap::new();
        for (name, shape, values) in tensors {
            let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(runtime)?;
            dense.insert(name, stored(t)?);
        }
        Ok(Weights {
            dense,
            quantized: HashMap::new(),
            interleaved_rope: false,
        })
    }

    /// An artifact's weight files. Safetensors-based formats are decoded to dense values; a
    /// GGUF file keeps its block tensors, named back to the original's names through
    /// `hf_names` (the original model's tensor names).
    pub fn from_artifact(
        files: &[PathBuf],
        hf_names: &[String],
        model_type: Option<&str>,
    ) -> Result<Weights, EvalError> {
        let mut weights = Weights {
            dense: HashMap::new(),
            quantized: HashMap::new(),
            interleaved_rope: false,
        };
        for path in files {
            if is_gguf(path)? {
                match weights.load_gguf(path, hf_names, model_type) {
                    Ok(()) => continue,
                    // candle's reader refuses some valid files (integer tensors such as BERT's
                    // position ids); ours reads them, and the weights run dense.
                    Err(EvalError::Artifact(reason)) => {
                        weights.quantized.clear();
                        weights.interleaved_rope = false;
                        tracing::info!(%reason, "candle cannot read this GGUF file; evaluating its dequantized weights");
                    }
                    Err(other) => return Err(other),
                }
            }
            let file =
                reader::ArtifactFile::open(path).map_err(|e| EvalError::Artifact(e.to_string()))?;
            for w in &file.weights {
                // Integer tensors (position ids, say) are buffers, not weights; the runtime's
                // models recompute them.
                if Dtype::parse(&w.dtype).is_some_and(|d| !crate::numeric::is_float(d)) {
                    continue;
                }
                let values = file
                    .decode(w)
                    .map_err(|e| EvalError::Artifact(e.to_string()))?;
                let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
                let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(runtime)?;
                weights.dense.insert(w.name.clone(), stored(t)?);
            }
        }
        Ok(weights)
    }

    fn load_gguf(
        &mut self,
        path: &Path,
        hf_names: &[String],
        model_type: Option<&str>,
    ) -> Result<(), EvalError> {
        let by_gguf: HashMap<String, &String> = hf_names
            .iter()
            .filter_map(|hf| gguf::llama_tensor_name(hf).map(|g| (g, hf)))
            .collect();
        let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            EvalError::Artifact(format!(
                "candle cannot read the GGUF file: {}",
                candle_message(&e)
            ))
        })?;
        for name in content.tensor_infos.keys() {
            let hf = by_gguf.get(name).map(|s| s.as_str()).unwrap_or(name);
            let q = content.tensor(&mut file, name, &Device::Cpu).map_err(|e| {
                EvalError::Artifact(format!("GGUF tensor {name}: {}", candle_message(&e)))
            })?;
            match q.dtype() {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                    let t = q.dequantize(&Device::Cpu).map_err(runtime)?;
                    self.dense.insert(hf.to_owned(), stored(t)?);
                }
                _ => {
                    self.quantized.insert(hf.to_owned(), Arc::new(q));
                }
            }
        }
        self.interleaved_rope = model_type
            .and_then(gguf::llama_family)
            .is_some_and(|(_, permuted)| permuted);
        Ok(())
    }

    /// The kernel the linear layers run on.
    pub fn kernel(&self) -> Kernel {
        if self.quantized.is_empty() {
            Kernel::Dense
        } else {
            Kernel::Native(
                self.quantized
                    .values()
                    .map(|q| ggml_name(q.dtype()))
                    .collect(),
            )
        }
    }

    /// Bytes the weights occupy in the runtime (GGUF blocks as stored: the dequantized copy
    /// kept for batches is the original's size and not counted).
    pub fn bytes(&self) -> u64 {
        let dense: u64 = self
            .dense
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum();
        let quantized: u64 = self
            .quantized
            .values()
            .map(|q| q.storage_size_in_bytes() as u64)
            .sum();
        dense + quantized
    }

    pub fn contains(&self, name: &str) -> bool {
        self.dense.contains_key(name) || self.quantized.contains_key(name)
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dense
            .keys()
            .chain(self.quantized.keys())
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// A tensor as dense f32 (block tensors dequantized).
    pub fn tensor(&self, name: &str) -> Result<Tensor, EvalError> {
        if let Some(t) = self.dense.get(name) {
            return if t.rank() == 2 {
                t.t().map_err(runtime)
            } else {
                Ok(t.clone())
            };
        }
        match self.quantized.get(name) {
            Some(q) => q.dequantize(&Device::Cpu).map_err(runtime),
            None => Err(EvalError::Model(format!("the model has no tensor {name}"))),
        }
    }

    /// The shape of a tensor.
    pub fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.dense
            .get(name)
            .map(|t| match t.dims() {
                &[inputs, outputs] => vec![outputs, inputs],
                dims => dims.to_vec(),
            })
            .or_else(|| self.quantized.get(name).map(|q| q.shape().dims().to_vec()))
    }

    /// The linear layer `<prefix>.weight` (+ `<prefix>.bias` when present or `bias` is true).
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<Linear, EvalError> {
        let name = format!("{prefix}.weight");
        let weight = match self.quantized.get(&name) {
            Some(q) if integer_product::available() && integer_product::packs(q.dtype()) => {
                LinearWeight::Integer(IntegerWeights::pack(q).map_err(runtime)?)
            }
            Some(q) => LinearWeight::Blocks {
                blocks: RowBands::of(q).map_err(runtime)?,
                dequantized: stored(q.dequantize(&Device::Cpu).map_err(runtime)?)?,
                activations: activation_type(q.dtype()),
            },
            None => match self.dense.get(&name) {
                Some(wt) if wt.rank() == 2 => LinearWeight::Transposed(wt.clone()),
                _ => return Err(EvalError::Model(format!("{name} is not a matrix"))),
            },
        };
        let bias_name = format!("{prefix}.bias");
        let bias = if bias || self.contains(&bias_name) {
            Some(self.tensor(&bias_name)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

/// The block type activations are rounded to before they meet weights of type `weights` in
/// the quantized matmul (ggml's `vec_dot_type`); None where they stay f32.
fn activation_type(weights: GgmlDType) -> Option<GgmlDType> {
    use GgmlDType as T;
    match weights {
        T::Q4_0 | T::Q5_0 | T::Q8_0 => Some(T::Q8_0),
        T::Q4_1 | T::Q5_1 => Some(T::Q8_1),
        T::Q2K | T::Q3K | T::Q4K | T::Q5K | T::Q6K | T::Q8K => Some(T::Q8K),
        _ => None,
    }
}

/// llama.cpp's name of a block type (`Q4_K`, where candle's Debug says `Q4K`).
fn ggml_name(dtype: GgmlDType) -> String {
    let debug = format!("{dtype:?}");
    match debug.strip_suffix('K') {
        Some(stem) if stem.starts_with('Q') => format!("{stem}_K"),
        _ => debug,
    }
}

fn is_gguf(path: &Path) -> Result<bool, EvalError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(n == 4 && magic == gguf::MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiled transpose puts every value where candle's strided copy puts it, for shapes
    /// that do and do not divide into tiles.
    #[test]
    fn stored_matrices_are_the_transpose() {
        for (rows, cols) in [(1, 1), (3, 70), (70, 3), (64, 64), (100, 33)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
            let want = t
                .t()
                .unwrap()
                .contiguous()
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = stored(t).unwrap();
            assert_eq!(got.dims(), &[cols, rows]);
            assert_eq!(got.to_vec2::<f32>().unwrap(), want, "{rows}×{cols}");
        }
    }

    /// A token's product over bands of rows is candle's quantized matmul over the whole
    /// weight, value for value.
    #[test]
    fn bands_of_rows_give_the_whole_matmul_exactly() {
        let (outputs, inputs) = (40, 512);
        let mut rng = crate::numeric::SplitMix::new(9, 2);
        let mut values =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_unit() as f32 - 0.5).collect() };
        let w =
            Tensor::from_vec(values(outputs * inputs), (outputs, inputs), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(values(inputs), (1, 1, inputs), &Device::Cpu).unwrap();
        for kind in [
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = Arc::new(QTensor::quantize(&w, kind).unwrap());
            let whole = QMatMul::from_arc(q.clone()).unwrap().forward(&x).unwrap();
            for bands in [1, 2, 3, 7, 64] {
                let split = RowBands::split(&q, bands).unwrap();
                assert_eq!(split.0.len(), bands.min(outputs));
                let got = split.forward(&x).unwrap();
                assert_eq!(got.dims(), whole.dims());
                assert_eq!(
                    got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    whole.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    "{kind:?} in {bands} bands"
                );
            }
        }
    }

    /// The batched path (dequantized weights, activations rounded as the quantized matmul
    /// rounds them) gives each row what candle's quantized matmul gives it alone.
    #[test]
    fn batches_on_the_dequantized_copy_equal_the_quantized_matmul_row_by_row() {
        let (outputs, inputs, rows) = (40, 512, 5);
        let mut rng = crate::numeric::SplitMix::new(5, 3);
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.next_unit() as f32 - 0.5) * 2.0)
                .collect()
        };
        let w =
            Tensor::from_vec(values(outputs * inputs), (outputs, inputs), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(values(rows * inputs), (1, rows, inputs), &Device::Cpu).unwrap();
        use GgmlDType as T;
        for kind in [T::Q4_0, T::Q4_1, T::Q5_0, T::Q8_0, T::Q4K, T::Q6K] {
            let q = Arc::new(QTensor::quantize(&w, kind).unwrap());
            let linear = Linear {
                weight: LinearWeight::Blocks {
                    blocks: RowBands::of(&q).unwrap(),
                    dequantized: stored(q.dequantize(&Device::Cpu).unwrap()).unwrap(),
                    activations: activation_type(kind),
                },
                bias: None,
            };
            // Q8_1 activations carry their sum as f16, which the quantized matmul uses for the
            // weights' minimum; the dense path uses the exact sum.
            let tolerance = if activation_type(kind) == Some(T::Q8_1) {
                1e-2
            } else {
                1e-4
            };
            let batched = linear.forward(&x).unwrap().to_vec3::<f32>().unwrap();
            for (r, together) in batched[0].iter().enumerate() {
                let row = x.narrow(1, r, 1).unwrap();
                let alone = linear.forward(&row).unwrap().to_vec3::<f32>().unwrap();
                for (b, a) in together.iter().zip(&alone[0][0]) {
                    assert!(
                        (b - a).abs() <= tolerance * (1.0 + a.abs()),
                        "{kind:?} row {r}: {b} vs {a}"
                    );
                }
            }
            // Without the activations' rounding the rows differ: the test can fail.
            let unrounded = x
                .broadcast_matmul(&stored(q.dequantize(&Device::Cpu).unwrap()).unwrap())
                .unwrap();
            let unrounded = unrounded.to_vec3::<f32>().unwrap();
            let alone = linear
                .forward(&x.narrow(1, 0, 1).unwrap())
                .unwrap()
                .to_vec3::<f32>()
                .unwrap();
            let most = unrounded[0][0]
                .iter()
                .zip(&alone[0][0])
                .map(|(u, a)| (u - a).abs())
                .fold(0f32, f32::max);
            assert!(
                most > tolerance,
                "{kind:?}: activations' rounding changed nothing ({most})"
            );
        }
    }
}
