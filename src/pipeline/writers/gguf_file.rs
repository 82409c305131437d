//! One GGUF file with every tensor of the model, each at the type llama-quantize's rules give it.

use super::*;

/// One GGUF file with every tensor of the model.
pub(super) struct GgufWriter {
    pub(super) dir: PathBuf,
    pub(super) out: Option<HashingFile>,
    /// Per input tensor in pipeline order: its GGUF entry (None: left out) and, for a permuted
    /// query/key projection, the head count.
    pub(super) plan: Vec<(Option<GgufTensor>, Option<usize>)>,
    pub(super) next: usize,
    /// Weight files of the model not yet ended: the GGUF file is complete after the last.
    pub(super) files_left: usize,
    pub(super) header: Vec<u8>,
}

impl GgufWriter {
    pub(super) fn plan(
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
