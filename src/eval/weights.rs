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
    dense: HashMap<String, Tensor>,
    quantized: HashMap<String, Arc<QTensor>>,
    /// Query and key rows are in llama.cpp's interleaved rotary order (GGUF of Llama/Mistral).
    pub interleaved_rope: bool,
}

/// A linear layer: `y = x Wᵀ (+ b)`, dense or on GGUF blocks.
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Rows of the weight (output features).
    pub fn out_features(&self) -> usize {
        match &self.weight {
            QMatMul::QTensor(q) => q.shape().dims()[0],
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.dims()[0],
        }
    }
}

fn runtime(err: candle_core::Error) -> EvalError {
    EvalError::Runtime(err.to_string())
}

impl Weights {
    /// The uploaded model's safetensors files, every tensor widened to f32.
    pub fn from_safetensors(paths: &[PathBuf]) -> Result<Weights, EvalError> {
        let mut dense = HashMap::new();
        for path in paths {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(runtime)?;
            for (name, t) in tensors {
                let t = if t.dtype().is_float() {
                    t.to_dtype(DType::F32).map_err(runtime)?
                } else {
                    t
                };
                dense.insert(name, t);
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
                weights.load_gguf(path, hf_names, model_type)?;
                continue;
            }
            let file =
                reader::ArtifactFile::open(path).map_err(|e| EvalError::Artifact(e.to_string()))?;
            for w in &file.weights {
                let values = file
                    .decode(w)
                    .map_err(|e| EvalError::Artifact(e.to_string()))?;
                let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
                let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(runtime)?;
                weights.dense.insert(w.name.clone(), t);
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
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| EvalError::Artifact(format!("candle cannot read the GGUF file: {e}")))?;
        for name in content.tensor_infos.keys() {
            let hf = by_gguf.get(name).map(|s| s.as_str()).unwrap_or(name);
            let q = content
                .tensor(&mut file, name, &Device::Cpu)
                .map_err(|e| EvalError::Artifact(format!("GGUF tensor {name}: {e}")))?;
            match q.dtype() {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                    let t = q.dequantize(&Device::Cpu).map_err(runtime)?;
                    self.dense.insert(hf.to_owned(), t);
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
            return Ok(t.clone());
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
            .map(|t| t.dims().to_vec())
            .or_else(|| self.quantized.get(name).map(|q| q.shape().dims().to_vec()))
    }

    /// The linear layer `<prefix>.weight` (+ `<prefix>.bias` when present or `bias` is true).
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<Linear, EvalError> {
        let name = format!("{prefix}.weight");
        let weight = match self.quantized.get(&name) {
            Some(q) => QMatMul::from_arc(q.clone()).map_err(runtime)?,
            None => QMatMul::Tensor(self.tensor(&name)?),
        };
        let bias_name = format!("{prefix}.bias");
        let bias = if bias || self.contains(&bias_name) {
            Some(self.tensor(&bias_name)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Hands the dense tensors to candle's model loaders.
    pub fn var_builder(&self) -> candle_nn::VarBuilder<'static> {
        let mut all = self.dense.clone();
        for name in self.quantized.keys() {
            if let Ok(t) = self.tensor(name) {
                all.insert(name.clone(), t);
            }
        }
        candle_nn::VarBuilder::from_tensors(all, DType::F32, &Device::Cpu)
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
