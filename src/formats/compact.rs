//! Compact safetensors, squeeze's own layout for substituted weights: a clustered tensor as a
//! codebook and packed indices, a low-rank tensor as its two factors, everything else dense,
//! with `__metadata__` (under [`COMPACT_METADATA_KEY`]) saying how to rebuild each; the
//! writer, and the decoder `reader` calls.

use std::collections::BTreeMap;

use serde_json::json;

use crate::compress::encoded::Encoded;
use crate::formats::decode::{ArtifactError, ReadPart, bad, decode_dense, parse_dtype, round_to};
use crate::formats::safetensors::Header;
use crate::formats::safetensors::write::SpooledFiles;
use crate::formats::writer::{ArtifactWriter, OutputDir, OutputFile, TensorOut, WriteError};
use crate::numeric::Dtype;

/// The `__metadata__` key under which compact safetensors describe their substituted tensors
/// (a JSON object: tensor name → layout).
pub const COMPACT_METADATA_KEY: &str = "squeeze.compact";

/// Packs `bits`-wide indices of each row into bytes, least significant bits first, each row
/// padded to a whole byte.
pub fn pack_indices(indices: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<u8> {
    let wide: Vec<u32> = indices.iter().map(|&i| u32::from(i)).collect();
    crate::formats::bits::pack(&wide, rows, cols, bits, 1)
}

/// Compact safetensors: clustered tensors as a codebook and packed indices, low-rank tensors
/// as their two factors, everything else dense; `__metadata__` says how to rebuild each.
pub struct CompactWriter {
    files: SpooledFiles,
    layouts: BTreeMap<String, serde_json::Value>,
}

impl CompactWriter {
    pub fn new(dir: &OutputDir) -> CompactWriter {
        CompactWriter {
            files: SpooledFiles::new(dir),
            layouts: BTreeMap::new(),
        }
    }
}

impl ArtifactWriter for CompactWriter {
    fn begin_file(&mut self, name: &str, _: &Header) -> Result<(), WriteError> {
        self.layouts.clear();
        Ok(self.files.begin(name)?)
    }

    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, WriteError> {
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

    fn end_file(&mut self) -> Result<Option<OutputFile>, WriteError> {
        let metadata = BTreeMap::from([
            ("format".to_owned(), "pt".to_owned()),
            (
                COMPACT_METADATA_KEY.to_owned(),
                serde_json::to_string(&self.layouts).expect("JSON serialises"),
            ),
        ]);
        Ok(Some(self.files.end(Some(&metadata))?))
    }

    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError> {
        if name.ends_with(".safetensors.index.json") {
            return Ok(Some(self.files.index(&bytes)));
        }
        Ok(Some(bytes))
    }

    fn finish(&mut self) -> Result<Vec<OutputFile>, WriteError> {
        Ok(Vec::new())
    }
}

/// The weight a compact layout stands for.
pub(crate) struct Substituted<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: &'a [u64],
    pub(crate) dtype: &'a str,
}

/// A compact weight's dense values, rebuilt as `layout` (its entry in the file's metadata)
/// says; `raw` reads one of the file's tensors by name.
pub(crate) fn decode(
    weight: &Substituted,
    layout: &serde_json::Value,
    raw: ReadPart,
) -> Result<Vec<f32>, ArtifactError> {
    // The layout comes from the file: every size is checked against the bytes it has.
    let &[rows, cols] = weight.shape else {
        return Err(bad(format!(
            "{}: a compact weight is a matrix, not shape {:?}",
            weight.name, weight.shape
        )));
    };
    let (Ok(rows), Ok(cols)) = (usize::try_from(rows), usize::try_from(cols)) else {
        return Err(bad(format!("{}: shape too large", weight.name)));
    };
    let floats = |name: &str| -> Result<Vec<f32>, ArtifactError> {
        let (t, bytes) = raw(name)?;
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
            let (_, packed) = raw(&part("indices"))?;
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
    round_to(parse_dtype(weight.dtype)?, &mut out);
    Ok(out)
}

/// How a compact layout stores its weight ("clustered 4 bits per row", "low-rank 32").
pub(crate) fn scheme(layout: &serde_json::Value) -> Result<String, ArtifactError> {
    Ok(match layout["kind"].as_str() {
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
    })
}

/// A layout's shape entry.
pub(crate) fn shape_of(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
        .unwrap_or_default()
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
