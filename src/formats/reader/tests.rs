//! The artifact reader on hostile input: fuzz findings replayed, sizes that the bytes cannot
//! hold, and well-formed packed weights.

use super::*;

mod fuzz_regressions {
    use super::*;

    /// Every input the `artifact_reader` fuzz target found a crash with (fuzz/regressions),
    /// replayed as the target feeds it: the first byte × 8 bytes are a config.json beside the
    /// weight file, the rest the file. Opening and decoding may fail, never panic.
    #[test]
    fn inputs_that_crashed_the_artifact_reader_are_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/artifact_reader");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((&cut, rest)) = data.split_first() else {
                continue;
            };
            let (config, weights) = rest.split_at((usize::from(cut) * 8).min(rest.len()));
            let folder = tempfile::tempdir().unwrap();
            std::fs::write(folder.path().join("config.json"), config).unwrap();
            let path = folder.path().join("model.safetensors");
            std::fs::write(&path, weights).unwrap();
            if let Ok(file) = ArtifactFile::open(&path) {
                for weight in &file.weights {
                    let _ = file.decode(weight);
                }
            }
            replayed += 1;
        }
        assert!(replayed > 0);
    }
}

mod hostile_sizes {
    use super::*;

    /// A safetensors file of `tensors` (name, dtype, shape, data) with `config` beside it.
    fn write_folder(
        config: serde_json::Value,
        tensors: &[(&str, Dtype, Vec<u64>, Vec<u8>)],
    ) -> (tempfile::TempDir, PathBuf) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                (*name).to_owned(),
                serde_json::json!({"dtype": dtype.as_str(), "shape": shape,
                                   "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        let json = serde_json::to_vec(&header).unwrap();
        let mut file = (json.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&json);
        file.extend_from_slice(&data);
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("config.json"), config.to_string()).unwrap();
        let path = folder.path().join("model.safetensors");
        std::fs::write(&path, file).unwrap();
        (folder, path)
    }

    fn int4_config(bits: u64, group_size: Option<u64>) -> serde_json::Value {
        serde_json::json!({"quantization_config": {"quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"targets": ["Linear"],
                "weights": {"num_bits": bits, "symmetric": true, "group_size": group_size}}}}})
    }

    fn i64s(values: &[i64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A 2 × 8 int4 matrix of codes 0..8 (stored offset by 8), with scales 0.5, 2, 3, … of
    /// `scale_shape`.
    fn packed_int4(
        shape: &[i64],
        scale_shape: Vec<u64>,
    ) -> Vec<(&'static str, Dtype, Vec<u64>, Vec<u8>)> {
        let codes: Vec<u32> = (0..16).map(|i| (i % 8) + 8).collect();
        let scales: Vec<u8> = (0..scale_shape.iter().product::<u64>())
            .flat_map(|i| if i == 0 { 0.5f32 } else { i as f32 + 1.0 }.to_le_bytes())
            .collect();
        let packed = crate::formats::compressed_tensors::pack_rows(&codes, 2, 8, 4);
        vec![
            ("m.weight_packed", Dtype::I32, vec![2, 1], packed),
            ("m.weight_scale", Dtype::F32, scale_shape, scales),
            ("m.weight_shape", Dtype::I64, vec![2], i64s(shape)),
        ]
    }

    fn opened(path: &Path) -> Result<Vec<Vec<f32>>, ArtifactError> {
        let file = ArtifactFile::open(path)?;
        file.weights.iter().map(|w| file.decode(w)).collect()
    }

    #[test]
    fn well_formed_packed_weights_decode_with_even_and_ragged_groups() {
        let scale = [0.5f32, 2.0, 3.0, 4.0];
        for (group_size, scale_shape, group_of) in [
            (
                None,
                vec![2, 1],
                (|r: usize, _: usize| r) as fn(usize, usize) -> usize,
            ),
            (Some(4), vec![2, 2], |r, c| r * 2 + c / 4),
            // A ragged last group: 6 and 2 columns.
            (Some(6), vec![2, 2], |r, c| r * 2 + c / 6),
        ] {
            let (_dir, path) = write_folder(
                int4_config(4, group_size),
                &packed_int4(&[2, 8], scale_shape),
            );
            let expected: Vec<f32> = (0..16)
                .map(|i| (i % 8) as f32 * scale[group_of(i / 8, i % 8)])
                .collect();
            assert_eq!(
                opened(&path).unwrap(),
                vec![expected],
                "group {group_size:?}"
            );
        }
    }

    #[test]
    fn sizes_the_bytes_cannot_hold_are_errors_not_allocations() {
        let huge = 1i64 << 33;
        let normal = || packed_int4(&[2, 8], vec![2, 1]);
        for (expected, config, tensors) in [
            (
                "too large",
                int4_config(4, None),
                packed_int4(&[huge, huge], vec![2, 1]),
            ),
            (
                "8 bytes of packed codes",
                int4_config(4, None),
                packed_int4(&[huge, 8], vec![2, 1]),
            ),
            (
                "an empty 0 × 8 matrix",
                int4_config(4, None),
                packed_int4(&[0, 8], vec![2, 1]),
            ),
            ("0-bit integer codes", int4_config(0, None), normal()),
            ("260-bit integer codes", int4_config(260, None), normal()),
            (
                "a scale of shape [1, 2]",
                int4_config(4, None),
                packed_int4(&[2, 8], vec![1, 2]),
            ),
            (
                "2 scale groups of 3",
                int4_config(4, Some(3)),
                packed_int4(&[2, 8], vec![2, 2]),
            ),
        ] {
            let (_dir, path) = write_folder(config, &tensors);
            let error = opened(&path)
                .err()
                .unwrap_or_else(|| panic!("read although {expected}"));
            assert!(
                error.to_string().contains(expected),
                "{error}: not {expected}"
            );
        }
    }

    #[test]
    fn gguf_sizes_beyond_the_file_or_the_blocks_are_errors() {
        use crate::formats::gguf::{GgmlType, GgufTensor};
        for (what, shape, kind, data) in [
            (
                "2^96 elements",
                vec![1u64 << 32, 1 << 32, 1 << 32],
                GgmlType::F32,
                0,
            ),
            (
                "rows that are not whole blocks",
                vec![2, 33],
                GgmlType::Q8_0,
                2 * 34 + 2,
            ),
            ("data beyond the file", vec![1024, 1024], GgmlType::F32, 64),
        ] {
            let tensors = vec![GgufTensor {
                name: "w".into(),
                shape,
                kind,
                offset: 0,
            }];
            let mut file = gguf::header_bytes(&[], &tensors);
            file.resize(file.len() + data, 0);
            let folder = tempfile::tempdir().unwrap();
            let path = folder.path().join("model.gguf");
            std::fs::write(&path, file).unwrap();
            assert!(opened(&path).is_err(), "{what} was read");
        }
    }
}
