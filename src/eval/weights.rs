//! A model's weights as the evaluation runtime holds them: dense f32 tensors by Hugging Face
//! name, plus GGUF block tensors that candle multiplies natively. Loaded from the uploaded
//! safetensors (read by candle's own reader, not ours), from an artifact folder (decoded by
//! `formats::reader`), or from a GGUF file (read by candle's GGUF reader).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use super::EvalError;
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
    /// GGUF blocks through candle's quantized matmul.
    Blocks(QMatMul),
    /// Dense f32, stored transposed (`[in, out]`, contiguous): the matmul's packing then reads
    /// rows in order rather than striding down columns, several times faster for few tokens.
    Transposed(Tensor),
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Blocks(q) => q.forward(x)?,
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
            LinearWeight::Blocks(QMatMul::QTensor(q)) => q.shape().dims()[0],
            LinearWeight::Blocks(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.dims()[0],
            LinearWeight::Transposed(wt) => wt.dims()[1],
        }
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

/// A tensor as the map keeps it: matrices transposed.
fn stored(t: Tensor) -> Result<Tensor, EvalError> {
    if t.rank() == 2 {
        t.t().and_then(|t| t.contiguous()).map_err(runtime)
    } else {
        Ok(t)
    }
}

impl Weights {
    /// The uploaded model's safetensors files, every tensor widened to f32.
    pub fn from_safetensors(paths: &[PathBuf]) -> Result<Weights, EvalError> {
        let mut dense = HashMap::new();
        for path in paths {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(runtime)?;
            for (name, t) in tensors {
                if t.dtype().is_float() {
                    dense.insert(name, stored(t.to_dtype(DType::F32).map_err(runtime)?)?);
                }
            }
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

    /// Bytes the weights occupy in the runtime.
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
            Some(q) => LinearWeight::Blocks(QMatMul::from_arc(q.clone()).map_err(runtime)?),
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
