//! The compressed-tensors writer: a model folder that transformers (with the compressed-tensors
//! package) and vLLM load, with the `quantization_config` and `sparsity_config` in config.json.

use serde_json::json;

use crate::compress::encoded::Encoded;
use crate::formats::compressed_tensors::{
    self as ct, QuantFormat, QuantGroup, SparseFormat, SparseGroup, StoredForm,
};
use crate::formats::safetensors::Header;
use crate::formats::safetensors::write::SpooledFiles;
use crate::formats::writer::{
    ArtifactWriter, OutputDir, OutputFile, TensorOut, WriteError, pretty_json,
};
use crate::numeric::Dtype;

/// How pruned weights are described, decided by the recipe.
#[derive(Debug, Clone, Copy, Default)]
pub struct SparsityLayout {
    /// The `sparsity_config` format of pruned weights; None: the recipe prunes nothing that
    /// compressed-tensors describes (or removes whole channels).
    pub format: Option<SparseFormat>,
    /// Whether pruned weights leave their zeros out (the bitmask layouts) or are stored dense
    /// with a `sparsity_config` that describes them.
    pub leave_zeros_out: bool,
}

/// Which form each weight is stored in, by name (None: left as it was), when the recipe knows
/// it before the weights are compressed.
pub type FormOf = Box<dyn Fn(&str) -> Option<StoredForm> + Send>;

/// compressed-tensors: a loadable model folder for vLLM and transformers.
pub struct CompressedTensorsWriter {
    files: SpooledFiles,
    form_of: Option<FormOf>,
    quant: Option<QuantGroup>,
    sparsity: SparsityLayout,
    sparse: Option<SparseGroup>,
    sparse_counts: (f64, f64),
    layout_bits: Option<f64>,
    /// Linear-shaped weights left as they were: `ignore` entries.
    ignored: Vec<String>,
    saw_config: bool,
}

impl CompressedTensorsWriter {
    /// A writer; with `form_of`, each weight file whose layout does not depend on the values
    /// (no zeros left out) is written header first, its data once, rather than spooled.
    pub fn new(
        dir: &OutputDir,
        sparsity: SparsityLayout,
        form_of: Option<FormOf>,
    ) -> CompressedTensorsWriter {
        CompressedTensorsWriter {
            files: SpooledFiles::new(dir),
            form_of,
            quant: None,
            sparsity,
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

    /// Every tensor a weight file will hold, in order, when that is known before its data.
    fn planned(&self, header: &Header) -> Option<Vec<(String, Dtype, Vec<u64>)>> {
        let form_of = self.form_of.as_ref()?;
        if self.sparsity.format.is_some() && self.sparsity.leave_zeros_out {
            return None;
        }
        let mut planned = Vec::new();
        for t in &header.tensors {
            match (form_of(&t.name), &t.shape[..]) {
                (None, _) => planned.push((t.name.clone(), t.dtype, t.shape.clone())),
                (Some(form), &[rows, cols]) => {
                    planned.extend(ct::planned_tensors(&t.name, t.dtype, rows, cols, form));
                }
                (Some(_), _) => return None,
            }
        }
        Some(planned)
    }
}

impl ArtifactWriter for CompressedTensorsWriter {
    fn begin_file(&mut self, name: &str, header: &Header) -> Result<(), WriteError> {
        match self.planned(header) {
            Some(planned) => self.files.begin_planned(name, planned)?,
            None => self.files.begin(name)?,
        }
        Ok(())
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, WriteError> {
        let info = tensor.info;
        self.layout_bits = None;
        let Some(encoded) = tensor.encoded else {
            if info.shape.len() == 2 && info.name.ends_with(".weight") {
                self.ignored.push(ct::module_of(&info.name).to_owned());
            }
            let spool = self.files.spool();
            return spool
                .push_bytes(&info.name, info.dtype, info.shape.clone(), tensor.dense)
                .map_err(WriteError::from);
        };
        let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
        let format = ct::quant_format(encoded);
        let module = ct::module_of(&info.name).to_owned();
        // Packed codes cannot leave zeros out: pruning then saves nothing in this format.
        let sparse = self
            .sparsity
            .format
            .filter(|_| format != Some(QuantFormat::PackQuantized));
        let leave_zeros_out = self.sparsity.leave_zeros_out;
        let left_out = sparse.filter(|_| leave_zeros_out);
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
            let group = self.sparse.get_or_insert_with(|| SparseGroup {
                format: f,
                zeros_left_out: leave_zeros_out,
                targets: Vec::new(),
                global_sparsity: 0.0,
            });
            group.targets.push(module);
            let zeros = ct::count_zeros(info.dtype, tensor.dense);
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
            bytes += self
                .files
                .spool()
                .push_bytes(&t.name, t.dtype, t.shape, &t.data)?;
        }
        Ok(bytes)
    }

    fn layout_bits(&mut self) -> Option<f64> {
        self.layout_bits.take()
    }

    fn end_file(&mut self) -> Result<Option<OutputFile>, WriteError> {
        Ok(Some(self.files.end(None)?))
    }

    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError> {
        if name == "config.json" {
            self.saw_config = true;
            let mut config: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| WriteError::Input(format!("config.json is not JSON: {e}")))?;
            if !config.is_object() {
                return Err(WriteError::Input("config.json is not a JSON object".into()));
            }
            config["quantization_config"] = self.quantization_config();
            return Ok(Some(pretty_json(&config)));
        }
        if name.ends_with(".safetensors.index.json") {
            return Ok(Some(self.files.index(&bytes)));
        }
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, WriteError> {
        if self.saw_config {
            return Ok(Vec::new());
        }
        // Weights uploaded without a config: the block alone, where compressed-tensors'
        // `ModelCompressor.from_pretrained` looks for it.
        let mut out = self.files.dir.create("config.json")?;
        out.write(&pretty_json(
            &json!({"quantization_config": self.quantization_config()}),
        ))?;
        Ok(vec![out.finish("config.json")?])
    }
}
