//! Reading compressed-tensors weights back: which of a file's tensors stand for one weight
//! (`PARTS`), its layout checked against the file when it is opened, and its dense values
//! decoded as the runtime computes them.

use std::collections::BTreeMap;

use crate::formats::compressed_tensors::unpack_rows;
use crate::formats::decode::{ArtifactError, ReadPart, bad, decode_dense, round_to};
use crate::formats::safetensors::TensorInfo;
use crate::numeric::Dtype;

/// The suffixes of the tensors that stand for one compressed weight, beside `.weight`.
pub(crate) const PARTS: [&str; 7] = [
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
    "bitmask",
    "row_offsets",
];

/// The dimensions stored in an I64 shape tensor.
fn stored_dims(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")).max(0) as u64)
        .collect()
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
pub(crate) struct WeightLayout {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) dtype: Dtype,
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

impl WeightLayout {
    pub(crate) fn of(
        module: &str,
        by_name: &BTreeMap<String, TensorInfo>,
        quant: Option<&serde_json::Value>,
        read: &dyn Fn(&TensorInfo) -> Result<Vec<u8>, ArtifactError>,
    ) -> Result<WeightLayout, ArtifactError> {
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
        Ok(WeightLayout {
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

    pub(crate) fn scheme(&self) -> String {
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

    /// The weight's dense values; `raw` reads one of the file's tensors by name.
    pub(crate) fn decode(&self, module: &str, raw: ReadPart) -> Result<Vec<f32>, ArtifactError> {
        let part = |p: &str| raw(&format!("{module}.{p}"));
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
