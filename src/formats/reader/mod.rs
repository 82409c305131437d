//! Readers of squeeze's own artifacts: what each weight of a compressed-tensors folder, a
//! compact safetensors file or a GGUF file is stored as (its scheme, its parts and their real
//! bytes), and its dense values decoded back. Used by `squeeze inspect` and `squeeze
//! decompress`, and to check that what a format stores is what a job measured. The decoding
//! follows the published layouts (the same facts the writers use, formats.md §2 and §3).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compress::blocks;
use crate::formats::compact::{self, COMPACT_METADATA_KEY};
use crate::formats::compressed_tensors::read::{PARTS, WeightLayout};
pub use crate::formats::decode::ArtifactError;
use crate::formats::decode::{bad, decode_dense};
use crate::formats::gguf::{self, GgmlType};
use crate::formats::safetensors::{self, Header, TensorInfo};
use crate::numeric::Dtype;

fn read_tensor(path: &Path, header: &Header, t: &TensorInfo) -> Result<Vec<u8>, ArtifactError> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(header.data_start() + t.begin))?;
    let mut bytes = vec![0u8; t.bytes() as usize];
    f.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// What kind of file a weight file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// Dense safetensors.
    Safetensors,
    /// compressed-tensors (a `quantization_config` in the folder's `config.json`, or the tensor
    /// names of its layouts).
    CompressedTensors,
    /// squeeze's compact safetensors.
    CompactSafetensors,
    /// GGUF.
    Gguf,
}

/// One weight as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredWeight {
    /// The weight's name (`<module>.weight` for compressed-tensors layouts).
    pub name: String,
    /// How it is stored ("pack-quantized int4 sym group 128", "sparse-bitmask", "Q4_K", "dense").
    pub scheme: String,
    /// Its dense dtype.
    pub dtype: String,
    /// Its dense shape.
    pub shape: Vec<u64>,
    /// Real bytes of its parts in the file.
    pub bytes: u64,
    /// The file's tensors that hold it.
    pub parts: Vec<String>,
}

/// A weight file opened for reading.
pub struct ArtifactFile {
    /// The file.
    pub path: PathBuf,
    /// Its kind.
    pub kind: ArtifactKind,
    /// Its weights, in file order.
    pub weights: Vec<StoredWeight>,
    layout: ArtifactLayout,
}

enum ArtifactLayout {
    Safetensors {
        header: Header,
        by_name: BTreeMap<String, TensorInfo>,
        compact: BTreeMap<String, serde_json::Value>,
        /// The layout of each compressed-tensors weight, by weight name (read once, at open).
        compressed: BTreeMap<String, WeightLayout>,
    },
    Gguf(gguf::GgufFile),
}

impl ArtifactFile {
    /// Opens a safetensors or GGUF file; a compressed-tensors file's `config.json` is looked for
    /// beside it.
    pub fn open(path: &Path) -> Result<ArtifactFile, ArtifactError> {
        let mut magic = [0u8; 4];
        File::open(path)?.read_exact(&mut magic).ok();
        if magic == gguf::MAGIC {
            let file = gguf::read(std::io::BufReader::new(File::open(path)?))
                .map_err(|e| bad(e.to_string()))?;
            let length = std::fs::metadata(path)?.len();
            if let Some(t) = file.tensors.iter().find(|t| {
                file.data_start
                    .checked_add(t.offset)
                    .and_then(|start| start.checked_add(t.bytes()))
                    .is_none_or(|end| end > length)
            }) {
                return Err(bad(format!(
                    "tensor {:?} lies beyond the file's {length} bytes",
                    t.name
                )));
            }
            let weights = file
                .tensors
                .iter()
                .map(|t| StoredWeight {
                    name: t.name.clone(),
                    scheme: t.kind.name().to_owned(),
                    dtype: match t.kind.block() {
                        Some(_) => "F32".to_owned(),
                        None => t.kind.name().to_owned(),
                    },
                    shape: t.shape.clone(),
                    bytes: t.bytes(),
                    parts: vec![t.name.clone()],
                })
                .collect();
            return Ok(ArtifactFile {
                path: path.to_owned(),
                kind: ArtifactKind::Gguf,
                weights,
                layout: ArtifactLayout::Gguf(file),
            });
        }
        let header = safetensors::read_header(path).map_err(|e| bad(e.to_string()))?;
        let by_name: BTreeMap<String, TensorInfo> = header
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let compact: BTreeMap<String, serde_json::Value> = header
            .metadata
            .as_ref()
            .and_then(|m| m.get(COMPACT_METADATA_KEY))
            .map(|s| serde_json::from_str(s))
            .transpose()
            .map_err(|e| bad(format!("{COMPACT_METADATA_KEY} metadata is not JSON: {e}")))?
            .unwrap_or_default();
        let quant = path
            .parent()
            .map(|d| d.join("config.json"))
            .and_then(|c| std::fs::read(c).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|c| c["quantization_config"].clone())
            .filter(|q| q["quant_method"] == "compressed-tensors");
        let mut weights = Vec::new();
        let mut compressed = BTreeMap::new();
        let mut claimed = std::collections::HashSet::new();
        let size = |names: &[String]| -> u64 { names.iter().map(|n| by_name[n].bytes()).sum() };
        for t in &header.tensors {
            if claimed.contains(&t.name) {
                continue;
            }
            if let Some(layout) = compact.get(&t.name).or_else(|| {
                t.name
                    .rsplit_once('.')
                    .and_then(|(base, _)| compact.get(base))
            }) {
                let name = t
                    .name
                    .rsplit_once('.')
                    .filter(|(base, _)| compact.contains_key(*base))
                    .map_or(t.name.clone(), |(base, _)| base.to_owned());
                if weights.iter().any(|w: &StoredWeight| w.name == name) {
                    continue;
                }
                let parts: Vec<String> = ["codebook", "indices", "a", "b"]
                    .iter()
                    .filter_map(|p| layout[*p].as_str().map(str::to_owned))
                    .filter(|p| by_name.contains_key(p))
                    .collect();
                let scheme = compact::scheme(layout)?;
                claimed.extend(parts.iter().cloned());
                weights.push(StoredWeight {
                    name,
                    scheme,
                    dtype: layout["dtype"].as_str().unwrap_or("F32").to_owned(),
                    shape: compact::shape_of(&layout["shape"]),
                    bytes: size(&parts),
                    parts,
                });
                continue;
            }
            let module = PARTS
                .iter()
                .chain(&["weight", "compressed", "shape"])
                .find_map(|p| t.name.strip_suffix(&format!(".{p}")))
                .filter(|m| {
                    ["weight_packed", "weight_scale", "compressed"]
                        .iter()
                        .any(|p| by_name.contains_key(&format!("{m}.{p}")))
                });
            let Some(module) = module else {
                claimed.insert(t.name.clone());
                weights.push(StoredWeight {
                    name: t.name.clone(),
                    scheme: "dense".into(),
                    dtype: t.dtype.as_str().into(),
                    shape: t.shape.clone(),
                    bytes: t.bytes(),
                    parts: vec![t.name.clone()],
                });
                continue;
            };
            let parts: Vec<String> = PARTS
                .iter()
                .chain(&["weight", "compressed", "shape"])
                .map(|p| format!("{module}.{p}"))
                .filter(|p| by_name.contains_key(p))
                .collect();
            claimed.extend(parts.iter().cloned());
            let weight = WeightLayout::of(module, &by_name, quant.as_ref(), &|t| {
                read_tensor(path, &header, t)
            })?;
            let name = format!("{module}.weight");
            weights.push(StoredWeight {
                name: name.clone(),
                scheme: weight.scheme(),
                dtype: weight.dtype.as_str().into(),
                shape: vec![weight.rows as u64, weight.cols as u64],
                bytes: size(&parts),
                parts,
            });
            compressed.insert(name, weight);
        }
        let kind = if !compact.is_empty() {
            ArtifactKind::CompactSafetensors
        } else if weights.iter().any(|w| w.scheme != "dense") {
            ArtifactKind::CompressedTensors
        } else {
            ArtifactKind::Safetensors
        };
        Ok(ArtifactFile {
            path: path.to_owned(),
            kind,
            weights,
            layout: ArtifactLayout::Safetensors {
                header,
                by_name,
                compact,
                compressed,
            },
        })
    }

    fn raw(&self, name: &str) -> Result<(TensorInfo, Vec<u8>), ArtifactError> {
        let ArtifactLayout::Safetensors {
            header, by_name, ..
        } = &self.layout
        else {
            unreachable!("GGUF tensors are read by offset")
        };
        let t = by_name
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name:?}")))?;
        Ok((t.clone(), read_tensor(&self.path, header, t)?))
    }

    /// A weight's dense values, as the runtime computes them, in its dense dtype's precision.
    pub fn decode(&self, weight: &StoredWeight) -> Result<Vec<f32>, ArtifactError> {
        match &self.layout {
            ArtifactLayout::Gguf(file) => {
                let t = file
                    .tensors
                    .iter()
                    .find(|t| t.name == weight.name)
                    .ok_or_else(|| bad(format!("no tensor {:?}", weight.name)))?;
                let mut f = File::open(&self.path)?;
                f.seek(SeekFrom::Start(file.data_start + t.offset))?;
                let mut bytes = vec![0u8; t.bytes() as usize];
                f.read_exact(&mut bytes)?;
                let n: u64 = t.shape.iter().product();
                let mut out = vec![0f32; n as usize];
                match t.kind.block() {
                    Some(kind) => {
                        for (x, block) in out
                            .chunks_exact_mut(kind.block_len())
                            .zip(bytes.chunks_exact(kind.block_bytes()))
                        {
                            blocks::dequantize_block(kind, block, x);
                        }
                    }
                    None => decode_dense(gguf_dtype(t.kind)?, &bytes, &mut out)?,
                }
                Ok(out)
            }
            ArtifactLayout::Safetensors {
                compact,
                compressed,
                ..
            } => {
                if let Some(layout) = compact.get(&weight.name) {
                    let substituted = compact::Substituted {
                        name: &weight.name,
                        shape: &weight.shape,
                        dtype: &weight.dtype,
                    };
                    return compact::decode(&substituted, layout, &|name| self.raw(name));
                }
                if weight.scheme == "dense" {
                    let (t, bytes) = self.raw(&weight.name)?;
                    let mut out = vec![0f32; t.elements() as usize];
                    decode_dense(t.dtype, &bytes, &mut out)?;
                    return Ok(out);
                }
                let module = weight.name.strip_suffix(".weight").unwrap_or(&weight.name);
                compressed
                    .get(&weight.name)
                    .ok_or_else(|| bad(format!("no weight {:?}", weight.name)))?
                    .decode(module, &|name| self.raw(name))
            }
        }
    }
}

fn gguf_dtype(kind: GgmlType) -> Result<Dtype, ArtifactError> {
    Ok(match kind {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        other => return Err(bad(format!("{} tensors are not weights", other.name()))),
    })
}

#[cfg(test)]
mod tests;
