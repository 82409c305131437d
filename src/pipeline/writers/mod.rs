//! The artifact writers, one file per output format: they take the pipeline's tensors one at a time
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

mod compact;
mod compressed_tensors;
mod dense;
mod gguf_file;
mod spool;

use compact::CompactWriter;
pub use compact::pack_indices;
use compressed_tensors::CompressedTensorsWriter;
use dense::DenseWriter;
use gguf_file::GgufWriter;
use spool::SpooledFiles;

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
