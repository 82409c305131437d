//! The GGUF writer: one file with every tensor of the model, each at the block type the caller
//! chose for it (llama-quantize's rules, applied by the recipe's plan) or dense; for a
//! Llama-family model, llama.cpp's converter's names, metadata, tokenizer and rotary
//! permutation of the query and key projections.

use crate::compress::blocks::BlockType;
use crate::compress::encoded::Encoded;
use crate::formats::gguf::{self, GgmlType, GgufTensor, Value};
use crate::formats::safetensors::Header;
use crate::formats::writer::{
    ArtifactWriter, HashingFile, OutputDir, OutputFile, TensorOut, WriteError,
};

/// What the GGUF writer needs to know of the model besides its tensors.
pub struct GgufModel<'a> {
    /// `config.json`, when the model has one.
    pub config: Option<&'a serde_json::Value>,
    /// `tokenizer.json`, when the model has one.
    pub tokenizer: Option<&'a serde_json::Value>,
    /// The output headers of the model's weight files, in the order they will be written.
    pub headers: &'a [Header],
}

/// One GGUF file with every tensor of the model.
pub struct GgufWriter {
    dir: OutputDir,
    out: Option<HashingFile>,
    /// Per input tensor in write order: its GGUF entry (None: left out) and, for a permuted
    /// query/key projection, the head count.
    plan: Vec<(Option<GgufTensor>, Option<usize>)>,
    next: usize,
    /// Weight files of the model not yet ended: the GGUF file is complete after the last.
    files_left: usize,
    header: Vec<u8>,
}

impl GgufWriter {
    /// Lays out the file: every tensor's name, type and offset, and the metadata. `block_of`
    /// gives a tensor's block type by its input name (None: stored dense).
    pub fn new(
        dir: &OutputDir,
        model: GgufModel,
        block_of: impl Fn(&str) -> Option<BlockType>,
    ) -> Result<GgufWriter, WriteError> {
        let input_error = WriteError::Input;
        let config = model.config;
        let family = config
            .and_then(|c| c["model_type"].as_str())
            .and_then(gguf::llama_family);
        let quantized = model
            .headers
            .iter()
            .flat_map(|h| &h.tensors)
            .any(|t| block_of(&t.name).is_some());
        let mut metadata: Vec<(String, Value)> = Vec::new();
        let name = config
            .and_then(|c| c["_name_or_path"].as_str())
            .unwrap_or("model")
            .to_owned();
        let architecture = match (family, config) {
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
        if let (Some((arch, permute)), Some(config)) = (family, config) {
            metadata.extend(gguf::llama_metadata(arch, config).map_err(input_error)?);
            metadata.extend(gguf::tokenizer_metadata(model.tokenizer, config));
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
        for header in model.headers {
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
            dir: dir.clone(),
            out: None,
            plan,
            next: 0,
            files_left: model.headers.len(),
            header,
        })
    }
}

/// Rows of `bytes` (each `bytes.len() / order.len()` long) in the order `order` gives.
fn permute_rows(bytes: &[u8], order: &[usize]) -> Vec<u8> {
    let row = bytes.len() / order.len().max(1);
    // Whole rows at a time: a byte-by-byte collect cost the writer's thread 5 % of a Q8_0 run.
    let mut out = Vec::with_capacity(bytes.len());
    for &r in order {
        out.extend_from_slice(&bytes[r * row..(r + 1) * row]);
    }
    out
}

impl ArtifactWriter for GgufWriter {
    fn begin_file(&mut self, _: &str, _: &Header) -> Result<(), WriteError> {
        if self.out.is_none() {
            let mut out = self.dir.create("model.gguf")?;
            out.write(&self.header)?;
            self.out = Some(out);
        }
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, WriteError> {
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

    fn end_file(&mut self) -> Result<Option<OutputFile>, WriteError> {
        self.files_left -= 1;
        if self.files_left > 0 {
            return Ok(None);
        }
        let out = self.out.take().expect("the file was written");
        Ok(Some(out.finish("model.gguf")?))
    }

    fn side_file(&mut self, _: &str, _: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError> {
        // The config and tokenizer live in the GGUF metadata.
        Ok(None)
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, WriteError> {
        Ok(Vec::new())
    }
}
