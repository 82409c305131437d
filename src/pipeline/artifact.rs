//! The artifact writers, one per output format: they take the pipeline's tensors one at a time
//! (dense bytes, and the stored form of a compressed tensor) and lay them out as the format
//! says: dense safetensors as the input was, compressed-tensors (codes, scales, bitmasks and
//! the `quantization_config` in `config.json`), compact safetensors (codebooks and indices,
//! low-rank factors), or one GGUF file. Writers of safetensors with new tensors spool the data
//! to a temp file and write the header once every tensor's size is known, so memory stays at
//! one tensor whatever the format.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::compress::encoded::Encoded;
use crate::formats::compressed_tensors::{
    self as ct, QuantFormat, QuantGroup, SparseFormat, SparseGroup, StoredTensor,
};
use crate::formats::gguf::{self, GgmlType, GgufTensor, Value};
use crate::formats::reader::COMPACT_METADATA_KEY;
use crate::formats::safetensors::{Header, TensorInfo};
use crate::jobs::recipe::{OutputFormat, Plan, Prune, Recipe, SparseLayout, Stage};
use crate::numeric::Dtype;
use crate::pipeline::files::{HashingFile, InputFile, OutputFile, PipelineError};

/// What the pipeline tells a writer about one tensor.
pub struct TensorOut<'a> {
    /// Name, dtype and (possibly shrunk) shape of the output tensor.
    pub info: &'a TensorInfo,
    /// The dense bytes: compressed values decoded, or the original when unchanged.
    pub dense: &'a [u8],
    /// The stored form, for a tensor the recipe compressed.
    pub encoded: Option<&'a Encoded>,
}

/// One output format's layout of the artifact.
pub trait ArtifactWriter {
    /// A weight file of the model begins; `header` is its output header (shrunk shapes).
    fn begin_file(&mut self, input: &InputFile, header: &Header) -> Result<(), PipelineError>;
    /// One tensor of the current file; returns the bytes it takes in the artifact.
    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError>;
    /// The nominal bits of the last tensor's stored form when the layout, not the scheme,
    /// decides them (zeros left out of a sparse layout); None: the scheme's own.
    fn layout_bits(&mut self) -> Option<f64> {
        None
    }
    /// The current weight file ends; returns the weight file it completes, if any (GGUF: one
    /// file, after the last).
    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError>;
    /// A side file (config, index, tokenizer) as it goes into the artifact, or None to leave it
    /// out.
    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError>;
    /// Side files the format adds once every tensor is written.
    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError>;
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("JSON serialises");
    bytes.push(b'\n');
    bytes
}

/// The writer for a planned recipe's format.
pub fn writer_for(
    plan: &Plan,
    out_dir: &Path,
    inputs: &[InputFile],
    headers: &[Header],
) -> Result<Box<dyn ArtifactWriter>, PipelineError> {
    let recipe = &plan.recipe;
    Ok(match recipe.format {
        OutputFormat::Auto => {
            return Err(PipelineError::Internal(
                "the recipe's format was not resolved before writing".into(),
            ));
        }
        OutputFormat::Safetensors => Box::new(DenseWriter {
            dir: out_dir.to_owned(),
            current: None,
        }),
        OutputFormat::CompressedTensors => Box::new(CompressedTensorsWriter::new(recipe, out_dir)),
        OutputFormat::CompactSafetensors => Box::new(CompactWriter {
            files: SpooledFiles::new(out_dir),
            layouts: BTreeMap::new(),
        }),
        OutputFormat::Gguf => Box::new(GgufWriter::plan(out_dir, inputs, headers, plan)?),
    })
}

/// A safetensors header for `tensors` laid out as the reference writer does: `__metadata__`
/// first (with `format: pt`, which transformers requires), entries in data order, padded with
/// spaces to a multiple of 8 bytes.
pub fn header_bytes(
    metadata: Option<&BTreeMap<String, String>>,
    tensors: &[TensorInfo],
) -> Vec<u8> {
    let mut json = String::from("{");
    let mut metadata = metadata.cloned().unwrap_or_default();
    metadata
        .entry("format".to_owned())
        .or_insert_with(|| "pt".to_owned());
    json.push_str("\"__metadata__\":");
    json.push_str(&serde_json::to_string(&metadata).expect("strings serialise"));
    for t in tensors {
        json.push(',');
        json.push_str(&serde_json::to_string(&t.name).expect("a string serialises"));
        json.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
            t.dtype.as_str(),
            serde_json::to_string(&t.shape).expect("numbers serialise"),
            t.begin,
            t.end
        ));
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

/// Dense safetensors: each weight file as the input had it, values replaced.
struct DenseWriter {
    dir: PathBuf,
    current: Option<(String, HashingFile)>,
}

impl ArtifactWriter for DenseWriter {
    fn begin_file(&mut self, input: &InputFile, header: &Header) -> Result<(), PipelineError> {
        let mut out = HashingFile::create(&self.dir, &input.name)?;
        out.write(&header_bytes(header.metadata.as_ref(), &header.tensors))?;
        self.current = Some((input.name.clone(), out));
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError> {
        let (_, out) = self.current.as_mut().expect("a file is open");
        out.write(tensor.dense)?;
        Ok(tensor.dense.len() as u64)
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError> {
        let (name, out) = self.current.take().expect("a file is open");
        Ok(Some(out.finish(&name)?))
    }

    fn side_file(&mut self, _: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError> {
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError> {
        Ok(Vec::new())
    }
}

/// A safetensors file whose tensors are known only one by one: data goes to a spool file,
/// and the file is assembled (header, then the spool) when it ends.
struct Spool {
    name: String,
    tensors: Vec<TensorInfo>,
    data: BufWriter<File>,
    path: PathBuf,
    len: u64,
}

impl Spool {
    fn push(&mut self, t: StoredTensor) -> io::Result<u64> {
        self.push_bytes(&t.name, t.dtype, t.shape, &t.data)
    }

    fn push_bytes(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: Vec<u64>,
        data: &[u8],
    ) -> io::Result<u64> {
        self.data.write_all(data)?;
        let begin = self.len;
        self.len += data.len() as u64;
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            dtype,
            shape,
            begin,
            end: self.len,
        });
        Ok(data.len() as u64)
    }
}

/// The spooled weight files of a run and the tensor → file map an index needs.
struct SpooledFiles {
    dir: PathBuf,
    current: Option<Spool>,
    weight_map: BTreeMap<String, String>,
    total_size: u64,
}

impl SpooledFiles {
    fn new(dir: &Path) -> SpooledFiles {
        SpooledFiles {
            dir: dir.to_owned(),
            current: None,
            weight_map: BTreeMap::new(),
            total_size: 0,
        }
    }

    fn begin(&mut self, name: &str) -> io::Result<()> {
        let path = self.dir.join(format!(".{name}.data"));
        self.current = Some(Spool {
            name: name.to_owned(),
            tensors: Vec::new(),
            data: BufWriter::with_capacity(1 << 20, File::create(&path)?),
            path,
            len: 0,
        });
        Ok(())
    }

    fn spool(&mut self) -> &mut Spool {
        self.current.as_mut().expect("a file is open")
    }

    fn end(&mut self, metadata: Option<&BTreeMap<String, String>>) -> io::Result<OutputFile> {
        let spool = self.current.take().expect("a file is open");
        let data = spool.data.into_inner().map_err(|e| e.into_error())?;
        drop(data);
        let mut out = HashingFile::create(&self.dir, &spool.name)?;
        out.write(&header_bytes(metadata, &spool.tensors))?;
        let mut data = File::open(&spool.path)?;
        out.copy_from(&mut data)?;
        std::fs::remove_file(&spool.path)?;
        for t in &spool.tensors {
            self.weight_map.insert(t.name.clone(), spool.name.clone());
        }
        self.total_size += spool.len;
        out.finish(&spool.name)
    }

    /// A shard index with this run's tensor names and total size.
    fn index(&self, original: &[u8]) -> Vec<u8> {
        let mut index: serde_json::Value =
            serde_json::from_slice(original).unwrap_or_else(|_| json!({}));
        index["metadata"]["total_size"] = self.total_size.into();
        index["weight_map"] = json!(self.weight_map);
        pretty(&index)
    }
}

/// compressed-tensors: a loadable model folder for vLLM and transformers.
struct CompressedTensorsWriter {
    files: SpooledFiles,
    quant: Option<QuantGroup>,
    sparse_format: Option<SparseFormat>,
    /// Whether pruned weights leave their zeros out (the bitmask layouts) or are stored dense
    /// with a `sparsity_config` that describes them.
    leave_zeros_out: bool,
    sparse: Option<SparseGroup>,
    sparse_counts: (f64, f64),
    layout_bits: Option<f64>,
    /// Linear-shaped weights left as they were: `ignore` entries.
    ignored: Vec<String>,
    saw_config: bool,
}

impl CompressedTensorsWriter {
    fn new(recipe: &Recipe, dir: &Path) -> CompressedTensorsWriter {
        let sparse_format = recipe.stages.iter().find_map(|s| match s {
            Stage::Prune(Prune::SemiStructured { pattern }) if pattern.n == 2 && pattern.m == 4 => {
                Some(SparseFormat::TwoFour)
            }
            Stage::Prune(Prune::MlpChannels { .. }) => None,
            Stage::Prune(_) => Some(SparseFormat::Bitmask),
            _ => None,
        });
        CompressedTensorsWriter {
            files: SpooledFiles::new(dir),
            quant: None,
            sparse_format,
            leave_zeros_out: recipe.sparse_layout == Some(SparseLayout::Bitmask),
            sparse: None,
            sparse_counts: (0.0, 0.0),
            layout_bits: None,
            ignored: Vec::new(),
            saw_config: false,
        }
    }

    fn quantization_config(&self) -> serde_json::Value {
        ct::quantization_config(self.quant.as_ref(), self.sparse.as_ref(), &self.ignored)
    }
}

impl ArtifactWriter for CompressedTensorsWriter {
    fn begin_file(&mut self, input: &InputFile, _: &Header) -> Result<(), PipelineError> {
        Ok(self.files.begin(&input.name)?)
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError> {
        let info = tensor.info;
        self.layout_bits = None;
        let Some(encoded) = tensor.encoded else {
            if info.shape.len() == 2 && info.name.ends_with(".weight") {
                self.ignored.push(ct::module_of(&info.name).to_owned());
            }
            let spool = self.files.spool();
            return spool
                .push_bytes(&info.name, info.dtype, info.shape.clone(), tensor.dense)
                .map_err(PipelineError::from);
        };
        let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
        let format = ct::quant_format(encoded);
        let module = ct::module_of(&info.name).to_owned();
        // Packed codes cannot leave zeros out: pruning then saves nothing in this format.
        let sparse = self
            .sparse_format
            .filter(|_| format != Some(QuantFormat::PackQuantized));
        let left_out = sparse.filter(|_| self.leave_zeros_out);
        if let Some(f) = format {
            let group = self.quant.get_or_insert_with(|| QuantGroup {
                format: f,
                int: match encoded {
                    Encoded::Int { scheme, .. } => Some(*scheme),
                    _ => None,
                },
                fp8_per_channel: matches!(encoded, Encoded::Fp8 { scales, .. } if scales.len() > 1 || rows == 1),
                targets: Vec::new(),
            });
            group.targets.push(module.clone());
        }
        if let Some(f) = sparse {
            let leave_zeros_out = self.leave_zeros_out;
            let group = self.sparse.get_or_insert_with(|| SparseGroup {
                format: f,
                zeros_left_out: leave_zeros_out,
                targets: Vec::new(),
                global_sparsity: 0.0,
            });
            group.targets.push(module);
            let width = crate::numeric::float_width(info.dtype);
            let zeros = tensor
                .dense
                .chunks(width)
                .filter(|e| ct::is_zero(info.dtype, e))
                .count();
            self.sparse_counts.0 += zeros as f64;
            self.sparse_counts.1 += (rows * cols) as f64;
            group.global_sparsity = self.sparse_counts.0 / self.sparse_counts.1.max(1.0);
            // Non-zeros at their width plus one mask bit per value, with the scheme's scales.
            if left_out.is_some() {
                let n = (rows * cols) as u64;
                let dtype_bits = info.dtype.bits();
                let value_bits = if format.is_some() { 8 } else { dtype_bits };
                let params = encoded.theoretical_bits(n, dtype_bits) - (n * value_bits) as f64;
                self.layout_bits =
                    Some(((n - zeros as u64) * value_bits + n) as f64 + params.max(0.0));
            }
        }
        let mut bytes = 0;
        for t in ct::weight_tensors(
            &info.name,
            info.dtype,
            rows,
            cols,
            encoded,
            tensor.dense,
            left_out,
        ) {
            bytes += self.files.spool().push(t)?;
        }
        Ok(bytes)
    }

    fn layout_bits(&mut self) -> Option<f64> {
        self.layout_bits.take()
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError> {
        Ok(Some(self.files.end(None)?))
    }

    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError> {
        if name == "config.json" {
            self.saw_config = true;
            let mut config: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| PipelineError::Input(format!("config.json is not JSON: {e}")))?;
            if !config.is_object() {
                return Err(PipelineError::Input(
                    "config.json is not a JSON object".into(),
                ));
            }
            config["quantization_config"] = self.quantization_config();
            return Ok(Some(pretty(&config)));
        }
        if name.ends_with(".safetensors.index.json") {
            return Ok(Some(self.files.index(&bytes)));
        }
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError> {
        if self.saw_config {
            return Ok(Vec::new());
        }
        // Weights uploaded without a config: the block alone, where compressed-tensors'
        // `ModelCompressor.from_pretrained` looks for it.
        let mut out = HashingFile::create(&self.files.dir, "config.json")?;
        out.write(&pretty(
            &json!({"quantization_config": self.quantization_config()}),
        ))?;
        Ok(vec![out.finish("config.json")?])
    }
}

/// Packs `bits`-wide indices of each row into bytes, least significant bits first, each row
/// padded to a whole byte.
pub fn pack_indices(indices: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<u8> {
    let wide: Vec<u32> = indices.iter().map(|&i| u32::from(i)).collect();
    crate::formats::bits::pack(&wide, rows, cols, bits, 1)
}

/// Compact safetensors: clustered tensors as a codebook and packed indices, low-rank tensors
/// as their two factors, everything else dense; `__metadata__` says how to rebuild each.
struct CompactWriter {
    files: SpooledFiles,
    layouts: BTreeMap<String, serde_json::Value>,
}

impl ArtifactWriter for CompactWriter {
    fn begin_file(&mut self, input: &InputFile, _: &Header) -> Result<(), PipelineError> {
        self.layouts.clear();
        Ok(self.files.begin(&input.name)?)
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError> {
        let info = tensor.info;
        let spool = self.files.spool();
        let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (rows, cols) = (
            info.shape.first().copied().unwrap_or(1),
            info.shape.get(1).copied().unwrap_or(1),
        );
        let name = &info.name;
        let layout = match tensor.encoded {
            Some(Encoded::Clustered {
                bits,
                indices,
                centroids,
                per_row,
            }) => {
                let k = 1u64 << bits;
                let books = if *per_row { rows } else { 1 };
                let mut bytes = spool.push_bytes(
                    &format!("{name}.codebook"),
                    Dtype::F32,
                    vec![books, k],
                    &floats(centroids),
                )?;
                bytes += spool.push_bytes(
                    &format!("{name}.indices"),
                    Dtype::U8,
                    vec![rows, (cols * u64::from(*bits)).div_ceil(8)],
                    &pack_indices(indices, rows as usize, cols as usize, *bits),
                )?;
                self.layouts.insert(
                    name.clone(),
                    json!({"kind": "clustered", "bits": bits, "per_row": per_row,
                           "shape": info.shape, "dtype": info.dtype.as_str(),
                           "codebook": format!("{name}.codebook"), "indices": format!("{name}.indices")}),
                );
                bytes
            }
            Some(Encoded::LowRank { a, b, rank }) => {
                let r = *rank as u64;
                let mut bytes = spool.push_bytes(
                    &format!("{name}.a"),
                    Dtype::F32,
                    vec![rows, r],
                    &floats(a),
                )?;
                bytes += spool.push_bytes(
                    &format!("{name}.b"),
                    Dtype::F32,
                    vec![r, cols],
                    &floats(b),
                )?;
                self.layouts.insert(
                    name.clone(),
                    json!({"kind": "low_rank", "rank": rank, "shape": info.shape,
                           "dtype": info.dtype.as_str(),
                           "a": format!("{name}.a"), "b": format!("{name}.b")}),
                );
                bytes
            }
            _ => spool.push_bytes(name, info.dtype, info.shape.clone(), tensor.dense)?,
        };
        Ok(layout)
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError> {
        let metadata = BTreeMap::from([
            ("format".to_owned(), "pt".to_owned()),
            (
                COMPACT_METADATA_KEY.to_owned(),
                serde_json::to_string(&self.layouts).expect("JSON serialises"),
            ),
        ]);
        Ok(Some(self.files.end(Some(&metadata))?))
    }

    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError> {
        if name.ends_with(".safetensors.index.json") {
            return Ok(Some(self.files.index(&bytes)));
        }
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError> {
        Ok(Vec::new())
    }
}

/// One GGUF file with every tensor of the model.
struct GgufWriter {
    dir: PathBuf,
    out: Option<HashingFile>,
    /// Per input tensor in pipeline order: its GGUF entry (None: left out) and, for a permuted
    /// query/key projection, the head count.
    plan: Vec<(Option<GgufTensor>, Option<usize>)>,
    next: usize,
    /// Weight files of the model not yet ended: the GGUF file is complete after the last.
    files_left: usize,
    header: Vec<u8>,
}

impl GgufWriter {
    fn plan(
        dir: &Path,
        inputs: &[InputFile],
        headers: &[Header],
        plan: &Plan,
    ) -> Result<GgufWriter, PipelineError> {
        let input_error = PipelineError::Input;
        let read_json = |name: &str| -> Result<Option<serde_json::Value>, PipelineError> {
            match inputs.iter().find(|i| i.name == name) {
                None => Ok(None),
                Some(i) => serde_json::from_slice(&std::fs::read(&i.path)?)
                    .map(Some)
                    .map_err(|e| input_error(format!("{name} is not JSON: {e}"))),
            }
        };
        let config = read_json("config.json")?;
        let family = config
            .as_ref()
            .and_then(|c| c["model_type"].as_str())
            .and_then(gguf::llama_family);
        // Each selected tensor's block type, as the plan chose it (None: stored dense).
        let block_of = |name: &str| {
            plan.tensor(name).and_then(|t| {
                t.steps.iter().rev().find_map(|s| match s {
                    crate::compress::step::Step::Gguf(kind) => Some(*kind),
                    _ => None,
                })
            })
        };
        let quantized = plan.tensors.iter().any(|t| block_of(&t.name).is_some());
        let mut metadata: Vec<(String, Value)> = Vec::new();
        let name = config
            .as_ref()
            .and_then(|c| c["_name_or_path"].as_str())
            .unwrap_or("model")
            .to_owned();
        let architecture = match (family, &config) {
            (Some((arch, _)), _) => arch.to_owned(),
            (None, Some(c)) => c["model_type"].as_str().unwrap_or("unknown").to_owned(),
            (None, None) => "unknown".to_owned(),
        };
        metadata.push(("general.architecture".into(), Value::String(architecture)));
        metadata.push(("general.name".into(), Value::String(name)));
        if quantized {
            metadata.push((
                "general.quantization_version".into(),
                Value::U32(gguf::QUANTIZATION_VERSION),
            ));
        }
        let mut heads = (0usize, 0usize);
        if let (Some((arch, permute)), Some(config)) = (family, &config) {
            metadata.extend(gguf::llama_metadata(arch, config).map_err(input_error)?);
            let tokenizer = read_json("tokenizer.json")?;
            metadata.extend(gguf::tokenizer_metadata(tokenizer.as_ref(), config));
            if permute {
                let h = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
                heads = (
                    h,
                    config["num_key_value_heads"]
                        .as_u64()
                        .map_or(h, |k| k as usize),
                );
            }
        }
        let mut plan = Vec::new();
        for header in headers {
            for t in &header.tensors {
                let mapped = match family {
                    Some(_) => gguf::llama_tensor_name(&t.name),
                    None => Some(t.name.clone()),
                };
                let Some(mapped) = mapped else {
                    plan.push((None, None));
                    continue;
                };
                if mapped.len() > gguf::MAX_NAME {
                    return Err(input_error(format!(
                        "tensor {mapped:?} has a name of {} bytes; GGUF allows at most {}",
                        mapped.len(),
                        gguf::MAX_NAME
                    )));
                }
                let kind = match block_of(&t.name) {
                    Some(kind) => GgmlType::from(kind),
                    None => gguf::dense_type(t.dtype).ok_or_else(|| {
                        input_error(format!(
                            "tensor {:?} is {}; GGUF cannot hold it",
                            t.name, t.dtype
                        ))
                    })?,
                };
                let permute_heads = if heads.0 > 0 && t.name.ends_with("self_attn.q_proj.weight") {
                    Some(heads.0)
                } else if heads.1 > 0 && t.name.ends_with("self_attn.k_proj.weight") {
                    Some(heads.1)
                } else {
                    None
                };
                if let Some(h) = permute_heads
                    && (!(t.shape[0] as usize).is_multiple_of(h)
                        || !(t.shape[0] as usize / h).is_multiple_of(2))
                {
                    return Err(input_error(format!(
                        "tensor {:?} has {} rows, not an even number per head for {h} heads",
                        t.name, t.shape[0]
                    )));
                }
                plan.push((
                    Some(GgufTensor {
                        name: mapped,
                        shape: t.shape.clone(),
                        kind,
                        offset: 0,
                    }),
                    permute_heads,
                ));
            }
        }
        let mut entries: Vec<GgufTensor> = plan.iter().filter_map(|(e, _)| e.clone()).collect();
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = entries.iter().find(|e| !seen.insert(e.name.clone())) {
            return Err(input_error(format!(
                "two tensors map to the GGUF name {:?}",
                dup.name
            )));
        }
        gguf::assign_offsets(&mut entries);
        let mut with_offsets = entries.into_iter();
        for (entry, _) in plan.iter_mut() {
            if entry.is_some() {
                *entry = with_offsets.next();
            }
        }
        let header = gguf::header_bytes(
            &metadata,
            &plan
                .iter()
                .filter_map(|(e, _)| e.clone())
                .collect::<Vec<_>>(),
        );
        Ok(GgufWriter {
            dir: dir.to_owned(),
            out: None,
            plan,
            next: 0,
            files_left: headers.len(),
            header,
        })
    }
}

/// Rows of `bytes` (each `bytes.len() / order.len()` long) in the order `order` gives.
fn permute_rows(bytes: &[u8], order: &[usize]) -> Vec<u8> {
    let row = bytes.len() / order.len().max(1);
    order
        .iter()
        .flat_map(|&r| &bytes[r * row..(r + 1) * row])
        .copied()
        .collect()
}

impl ArtifactWriter for GgufWriter {
    fn begin_file(&mut self, _: &InputFile, _: &Header) -> Result<(), PipelineError> {
        if self.out.is_none() {
            let mut out = HashingFile::create(&self.dir, "model.gguf")?;
            out.write(&self.header)?;
            self.out = Some(out);
        }
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, PipelineError> {
        let (entry, heads) = &self.plan[self.next];
        self.next += 1;
        let Some(entry) = entry else {
            return Ok(0);
        };
        let data: &[u8] = match tensor.encoded {
            Some(Encoded::Gguf { blocks, .. }) => blocks,
            _ => tensor.dense,
        };
        debug_assert_eq!(data.len() as u64, entry.bytes(), "{}", entry.name);
        let out = self.out.as_mut().expect("the file is open");
        match heads {
            Some(h) => {
                let order = gguf::rotary_permutation(entry.shape[0] as usize, *h);
                out.write(&permute_rows(data, &order))?;
            }
            None => out.write(data)?,
        }
        let pad = gguf::padded(data.len() as u64) - data.len() as u64;
        out.write(&vec![0u8; pad as usize])?;
        Ok(data.len() as u64)
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, PipelineError> {
        self.files_left -= 1;
        if self.files_left > 0 {
            return Ok(None);
        }
        let out = self.out.take().expect("the file was written");
        Ok(Some(out.finish("model.gguf")?))
    }

    fn side_file(&mut self, _: &str, _: Vec<u8>) -> Result<Option<Vec<u8>>, PipelineError> {
        // The config and tokenizer live in the GGUF metadata.
        Ok(None)
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, PipelineError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_pack_least_significant_bits_first() {
        assert_eq!(pack_indices(&[1, 2, 3], 1, 3, 2), vec![0b11_10_01]);
        assert_eq!(pack_indices(&[5, 6, 7], 1, 3, 3), vec![0b11_110_101, 0b1]);
        assert_eq!(pack_indices(&[1, 1, 1], 3, 1, 4), vec![1, 1, 1]);
    }
}
