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

use crate::compress::{blocks, fp8};
use crate::formats::compressed_tensors::unpack_rows;
use crate::formats::gguf::{self, GgmlType};
use crate::formats::safetensors::{self, Header, TensorInfo};
use crate::numeric::Dtype;
use crate::numeric::codec;

/// The `__metadata__` key under which compact safetensors describe their substituted tensors
/// (a JSON object: weight name → layout).
pub const COMPACT_METADATA_KEY: &str = "squeeze.compact";

fn read_tensor(path: &Path, header: &Header, t: &TensorInfo) -> Result<Vec<u8>, ArtifactError> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(header.data_start() + t.begin))?;
    let mut bytes = vec![0u8; t.bytes() as usize];
    f.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The dimensions stored in an I64 shape tensor.
fn stored_dims(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")).max(0) as u64)
        .collect()
}

/// What kind of file a weight file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
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
    pub kind: Kind,
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
        compressed: BTreeMap<String, CtWeight>,
    },
    Gguf(gguf::GgufFile),
}

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn bad(message: impl Into<String>) -> ArtifactError {
    ArtifactError::Format(message.into())
}

const PARTS: [&str; 7] = [
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
    "bitmask",
    "row_offsets",
];

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
                kind: Kind::Gguf,
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
                let scheme = match layout["kind"].as_str() {
                    Some("clustered") => format!(
                        "clustered {} bits {}",
                        layout["bits"],
                        if layout["per_row"] == true {
                            "per row"
                        } else {
                            "per tensor"
                        }
                    ),
                    Some("low_rank") => format!("low-rank {}", layout["rank"]),
                    other => return Err(bad(format!("unknown compact layout {other:?}"))),
                };
                claimed.extend(parts.iter().cloned());
                weights.push(StoredWeight {
                    name,
                    scheme,
                    dtype: layout["dtype"].as_str().unwrap_or("F32").to_owned(),
                    shape: shape_of(&layout["shape"]),
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
            let weight = CtWeight::of(module, &by_name, quant.as_ref(), &|t| {
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
            Kind::CompactSafetensors
        } else if weights.iter().any(|w| w.scheme != "dense") {
            Kind::CompressedTensors
        } else {
            Kind::Safetensors
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
                    return self.decode_compact(weight, layout);
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
                    .decode(self, module)
            }
        }
    }

    fn decode_compact(
        &self,
        weight: &StoredWeight,
        layout: &serde_json::Value,
    ) -> Result<Vec<f32>, ArtifactError> {
        // The layout comes from the file: every size is checked against the bytes it has.
        let &[rows, cols] = &weight.shape[..] else {
            return Err(bad(format!(
                "{}: a compact weight is a matrix, not shape {:?}",
                weight.name, weight.shape
            )));
        };
        let (Ok(rows), Ok(cols)) = (usize::try_from(rows), usize::try_from(cols)) else {
            return Err(bad(format!("{}: shape too large", weight.name)));
        };
        let floats = |name: &str| -> Result<Vec<f32>, ArtifactError> {
            let (t, bytes) = self.raw(name)?;
            let mut out = vec![0f32; t.elements() as usize];
            decode_dense(t.dtype, &bytes, &mut out)?;
            Ok(out)
        };
        let part = |key: &str| layout[key].as_str().unwrap_or_default().to_owned();
        let mut out = match layout["kind"].as_str() {
            Some("clustered") => {
                let bits = layout["bits"].as_u64().unwrap_or(8);
                if !(1..=8).contains(&bits) {
                    return Err(bad(format!("{}: {bits}-bit cluster indices", weight.name)));
                }
                let bits = bits as usize;
                let book = floats(&part("codebook"))?;
                let (_, packed) = self.raw(&part("indices"))?;
                let stride = crate::formats::bits::row_bytes(cols, bits as u8, 1);
                if rows
                    .checked_mul(stride)
                    .is_none_or(|needed| needed > packed.len())
                {
                    return Err(bad(format!(
                        "{}: {} bytes of indices for a {rows} × {cols} matrix",
                        weight.name,
                        packed.len()
                    )));
                }
                let k = 1usize << bits;
                let per_row = layout["per_row"] == true;
                crate::formats::bits::unpack(&packed, rows, cols, bits as u8, 1)
                    .into_iter()
                    .enumerate()
                    .map(|(i, index)| {
                        let base = if per_row { i / cols.max(1) * k } else { 0 };
                        book.get(base + index as usize)
                            .copied()
                            .ok_or_else(|| bad("index beyond the codebook"))
                    })
                    .collect::<Result<Vec<f32>, ArtifactError>>()?
            }
            Some("low_rank") => {
                let rank = layout["rank"].as_u64().unwrap_or(0) as usize;
                if rank == 0 {
                    return Err(bad(format!("{}: a factorization of rank 0", weight.name)));
                }
                let factors = crate::compress::lowrank::Factors {
                    a: floats(&part("a"))?,
                    b: floats(&part("b"))?,
                    rank,
                    rows,
                    cols,
                    singular_values: Vec::new(),
                    energy: 0.0,
                };
                if Some(factors.a.len()) != rows.checked_mul(rank)
                    || Some(factors.b.len()) != rank.checked_mul(cols)
                {
                    return Err(bad(format!(
                        "{}: factor shapes do not match rank {rank}",
                        weight.name
                    )));
                }
                let mut out = vec![0f32; rows * cols];
                factors.reconstruct_rows(0..rows, &mut out);
                out
            }
            other => return Err(bad(format!("unknown compact layout {other:?}"))),
        };
        round_to(parse_dtype(&weight.dtype)?, &mut out);
        Ok(out)
    }
}

fn shape_of(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
        .unwrap_or_default()
}

fn parse_dtype(name: &str) -> Result<Dtype, ArtifactError> {
    Dtype::parse(name).ok_or_else(|| bad(format!("unknown dtype {name}")))
}

fn gguf_dtype(kind: GgmlType) -> Result<Dtype, ArtifactError> {
    Ok(match kind {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        other => return Err(bad(format!("{} tensors are not weights", other.name()))),
    })
}

fn decode_dense(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> Result<(), ArtifactError> {
    let width = dtype.bits() / 8;
    if width == 0 || Some(bytes.len() as u64) != (out.len() as u64).checked_mul(width) {
        return Err(bad(format!(
            "{} bytes of {dtype} for {} values",
            bytes.len(),
            out.len()
        )));
    }
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => codec::decode(dtype, bytes, out),
        Dtype::F8_E4M3 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = fp8::e4m3_to_f32(b);
            }
        }
        Dtype::I8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = f32::from(b as i8);
            }
        }
        other => return Err(bad(format!("{other} values are not weights"))),
    }
    Ok(())
}

/// Rounds values to what `dtype` stores (a float dtype; others are left as they are).
fn round_to(dtype: Dtype, values: &mut [f32]) {
    if crate::numeric::is_float(dtype) {
        let mut bytes = vec![0u8; values.len() * crate::numeric::float_width(dtype)];
        codec::encode(dtype, values, &mut bytes);
        codec::decode(dtype, &bytes, values);
    }
}

/// How a compressed-tensors weight's zero-points are stored.
#[derive(Clone, Copy)]
enum ZeroPoints {
    /// Symmetric: none.
    None,
    /// One int8 per scale.
    Bytes,
    /// Offset to unsigned and packed down the output dimension into `words` int32 per group.
    Packed { words: usize },
}

/// One compressed-tensors weight's layout, every size checked against the file at open, so
/// decoding trusts it.
struct CtWeight {
    rows: usize,
    cols: usize,
    dtype: Dtype,
    /// Bits and symmetry of integer codes; None for FP8 or unquantized.
    int: Option<(u8, bool)>,
    fp8: bool,
    packed: bool,
    sparse: Option<&'static str>,
    strategy: String,
    /// Scale groups per row and the columns each covers (the last may be shorter); None when
    /// the weight has no scale.
    groups: Option<(usize, usize)>,
    zero_points: ZeroPoints,
}

impl CtWeight {
    fn of(
        module: &str,
        by_name: &BTreeMap<String, TensorInfo>,
        quant: Option<&serde_json::Value>,
        read: &dyn Fn(&TensorInfo) -> Result<Vec<u8>, ArtifactError>,
    ) -> Result<CtWeight, ArtifactError> {
        let get = |p: &str| by_name.get(&format!("{module}.{p}"));
        let args = quant.and_then(|q| {
            q["config_groups"].as_object()?.values().find_map(|g| {
                g["targets"]
                    .as_array()?
                    .iter()
                    .any(|t| t == module || t == "Linear")
                    .then(|| g["weights"].clone())
            })
        });
        let sparse = if get("compressed").is_some() {
            Some(if get("row_offsets").is_some() {
                "sparse-bitmask"
            } else {
                "sparse-24-bitmask"
            })
        } else {
            None
        };
        let values = get("weight_packed")
            .or_else(|| get("weight"))
            .or_else(|| get("compressed"))
            .ok_or_else(|| bad(format!("{module}: no weight values")))?;
        let scale = get("weight_scale");
        let dtype = scale.map_or(values.dtype, |s| s.dtype);
        let fp8 = values.dtype == Dtype::F8_E4M3;
        let packed = get("weight_packed").is_some();
        let int = match (&args, scale) {
            (_, None) => None,
            (_, Some(_)) if fp8 => None,
            (Some(a), Some(_)) => {
                let bits = a["num_bits"].as_u64().unwrap_or(8);
                if !(1..=8).contains(&bits) {
                    return Err(bad(format!("{module}: {bits}-bit integer codes")));
                }
                Some((bits as u8, a["symmetric"].as_bool().unwrap_or(true)))
            }
            (None, Some(_)) if !packed => Some((8, get("weight_zero_point").is_none())),
            (None, Some(_)) => {
                return Err(bad(format!(
                    "{module}: packed codes need the quantization_config of config.json beside the file"
                )));
            }
        };
        let dims = match get("weight_shape").or_else(|| get("shape")) {
            Some(t) if t.dtype == Dtype::I64 && t.elements() == 2 => stored_dims(&read(t)?),
            Some(t) => {
                return Err(bad(format!(
                    "{module}: its shape is stored as {} {:?}, not two I64",
                    t.dtype, t.shape
                )));
            }
            None => values.shape.clone(),
        };
        let [rows, cols] = dims[..] else {
            return Err(bad(format!(
                "{module}: dense shape {dims:?} is not a matrix"
            )));
        };
        let too_large = || bad(format!("{module}: a {rows} × {cols} matrix is too large"));
        let (rows, cols) = (
            usize::try_from(rows).map_err(|_| too_large())?,
            usize::try_from(cols).map_err(|_| too_large())?,
        );
        let elements = rows.checked_mul(cols).ok_or_else(too_large)?;
        if elements == 0 {
            return Err(bad(format!("{module}: an empty {rows} × {cols} matrix")));
        }
        // The values must cover the matrix before anything of its size is allocated.
        let mismatch = |what: &str, have: u64, want: Option<usize>| -> Result<(), ArtifactError> {
            if want.is_some_and(|w| w as u64 == have) {
                return Ok(());
            }
            Err(bad(format!(
                "{module}: {have} {what} for a {rows} × {cols} matrix"
            )))
        };
        if sparse.is_some() {
            let mask = get("bitmask")
                .ok_or_else(|| bad(format!("{module}: sparse values without a bitmask")))?;
            mismatch(
                "bitmask bytes",
                mask.bytes(),
                rows.checked_mul(cols.div_ceil(8)),
            )?;
        } else if packed {
            let Some((bits, _)) = int else {
                return Err(bad(format!(
                    "{module}: packed codes without an integer weight_scale"
                )));
            };
            mismatch(
                "bytes of packed codes",
                values.bytes(),
                cols.checked_mul(usize::from(bits))
                    .map(|b| b.div_ceil(32) * 4)
                    .and_then(|row| row.checked_mul(rows)),
            )?;
        } else {
            mismatch("values", values.elements(), Some(elements))?;
        }
        let (strategy, groups) = match scale.map(|s| s.shape.as_slice()) {
            None => (String::new(), None),
            Some([1]) => ("per tensor".into(), Some((1, cols))),
            Some([r, 1]) if *r == rows as u64 => ("per channel".into(), Some((1, cols))),
            Some([r, g]) if *r == rows as u64 && *g > 1 => {
                let groups = usize::try_from(*g).map_err(|_| too_large())?;
                // The group size is in the config; without one, the groups split rows evenly.
                let len = args
                    .as_ref()
                    .and_then(|a| a["group_size"].as_u64())
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .unwrap_or(cols / groups);
                if len == 0 || cols.div_ceil(len) != groups {
                    return Err(bad(format!(
                        "{module}: {groups} scale groups of {len} for rows of {cols}"
                    )));
                }
                (format!("group {len}"), Some((groups, len)))
            }
            Some(shape) => {
                return Err(bad(format!(
                    "{module}: a scale of shape {shape:?} for a {rows} × {cols} matrix"
                )));
            }
        };
        let scales = scale.map_or(0, TensorInfo::elements);
        let zero_points = match (get("weight_zero_point"), int) {
            (None, _) | (_, None) => ZeroPoints::None,
            (Some(z), Some((bits, _))) if z.dtype == Dtype::I32 => {
                let groups = groups.map_or(1, |(g, _)| g);
                let words = (rows * usize::from(bits)).div_ceil(32);
                if z.shape != [words as u64, groups as u64] {
                    return Err(bad(format!(
                        "{module}: packed zero-points of shape {:?} for {rows} rows of {groups} groups",
                        z.shape
                    )));
                }
                ZeroPoints::Packed { words }
            }
            (Some(z), Some(_)) if z.dtype == Dtype::I8 && z.elements() == scales => {
                ZeroPoints::Bytes
            }
            (Some(z), Some(_)) => {
                return Err(bad(format!(
                    "{module}: zero-points of {} {:?} for {scales} scales",
                    z.dtype, z.shape
                )));
            }
        };
        Ok(CtWeight {
            rows,
            cols,
            dtype,
            int,
            fp8,
            packed,
            sparse,
            strategy,
            groups,
            zero_points,
        })
    }

    fn scheme(&self) -> String {
        let quant = match (self.int, self.fp8) {
            (Some((bits, sym)), _) => format!(
                "{} int{bits} {} {}",
                if self.packed {
                    "pack-quantized"
                } else {
                    "naive-quantized"
                },
                if sym { "sym" } else { "asym" },
                self.strategy
            ),
            (None, true) => format!("float-quantized fp8 e4m3 {}", self.strategy),
            (None, false) => String::new(),
        };
        match (self.sparse, quant.is_empty()) {
            (Some(s), true) => s.to_owned(),
            (Some(s), false) => format!("{s} + {quant}"),
            (None, _) => quant,
        }
    }

    fn decode(&self, file: &ArtifactFile, module: &str) -> Result<Vec<f32>, ArtifactError> {
        let part = |p: &str| file.raw(&format!("{module}.{p}"));
        let (rows, cols) = (self.rows, self.cols);
        // The codes (or values), one per element.
        let mut codes: Vec<f32> = if let Some(format) = self.sparse {
            let (values_info, values) = part("compressed")?;
            let (_, mask) = part("bitmask")?;
            let mut decoded = vec![0f32; values_info.elements() as usize];
            decode_dense(values_info.dtype, &values, &mut decoded)?;
            let row_bytes = cols.div_ceil(8);
            let mut out = vec![0f32; rows * cols];
            let mut next = decoded.iter();
            for (r, row) in out.chunks_exact_mut(cols).enumerate() {
                let marks = &mask[r * row_bytes..(r + 1) * row_bytes];
                for (c, v) in row.iter_mut().enumerate() {
                    if marks[c / 8] >> (c % 8) & 1 == 1 {
                        *v = *next.next().ok_or_else(|| {
                            bad(format!(
                                "{module}: fewer values than the {format} mask marks"
                            ))
                        })?;
                    }
                }
            }
            out
        } else if self.packed {
            let (bits, _) = self.int.expect("packed codes are integers");
            let (_, words) = part("weight_packed")?;
            let offset = 1i64 << (bits - 1);
            unpack_rows(&words, rows, cols, bits)
                .into_iter()
                .map(|u| (i64::from(u) - offset) as f32)
                .collect()
        } else {
            let (info, bytes) = part("weight")?;
            let mut out = vec![0f32; rows * cols];
            decode_dense(info.dtype, &bytes, &mut out)?;
            out
        };
        if let Some((groups, group_len)) = self.groups {
            let (scale_info, scale_bytes) = part("weight_scale")?;
            let mut scales = vec![0f32; scale_info.elements() as usize];
            decode_dense(scale_info.dtype, &scale_bytes, &mut scales)?;
            let zero_points: Vec<f32> = match (self.zero_points, self.int) {
                (ZeroPoints::Packed { words }, Some((bits, _))) => {
                    let (_, bytes) = part("weight_zero_point")?;
                    // Each group's column of words, unpacked down the output dimension.
                    let column = |g: usize| -> Vec<u8> {
                        (0..words)
                            .flat_map(|w| {
                                let at = (w * groups + g) * 4;
                                bytes[at..at + 4].to_vec()
                            })
                            .collect()
                    };
                    let offset = 1i64 << (bits - 1);
                    let per_group: Vec<Vec<u32>> = (0..groups)
                        .map(|g| unpack_rows(&column(g), 1, rows, bits))
                        .collect();
                    (0..rows * groups)
                        .map(|i| (i64::from(per_group[i % groups][i / groups]) - offset) as f32)
                        .collect()
                }
                (ZeroPoints::Bytes, _) => {
                    let (_, bytes) = part("weight_zero_point")?;
                    bytes.iter().map(|&b| f32::from(b as i8)).collect()
                }
                _ => vec![0.0; scales.len()],
            };
            for (r, row) in codes.chunks_exact_mut(cols).enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    let p = if scales.len() == 1 {
                        0
                    } else {
                        r * groups + c / group_len
                    };
                    *v = (*v - zero_points[p]) * scales[p];
                }
            }
        }
        round_to(self.dtype, &mut codes);
        Ok(codes)
    }
}

#[cfg(test)]
mod tests;
