//! Compact safetensors: clustered tensors as a codebook and packed indices, low-rank tensors as
//! their two factors, with `__metadata__` saying how to rebuild each.

use super::*;

/// Packs `bits`-wide indices of each row into bytes, least significant bits first, each row
/// padded to a whole byte.
pub fn pack_indices(indices: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<u8> {
    let wide: Vec<u32> = indices.iter().map(|&i| u32::from(i)).collect();
    crate::formats::bits::pack(&wide, rows, cols, bits, 1)
}

/// Compact safetensors: clustered tensors as a codebook and packed indices, low-rank tensors
/// as their two factors, everything else dense; `__metadata__` says how to rebuild each.
pub(super) struct CompactWriter {
    pub(super) files: SpooledFiles,
    pub(super) layouts: BTreeMap<String, serde_json::Value>,
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
