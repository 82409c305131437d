//! The malformed-file corpus: crafted uploads, each with the status and code the API must give.

use super::{noise, small_model};

/// A file whose header is `header` followed by `data` zero bytes.
pub fn raw(header: &str, data: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

pub fn with_len(len: u64, rest: &[u8]) -> Vec<u8> {
    [&len.to_le_bytes()[..], rest].concat()
}

/// (case, upload name, body, status, code)
pub fn corpus() -> Vec<(&'static str, &'static str, Vec<u8>, u16, &'static str)> {
    let good = small_model(1);
    let one = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut zip_with_pickle = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
    zip_with_pickle.extend_from_slice(
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x11\x00\x00\x00archive/data.pkl",
    );
    zip_with_pickle.extend(noise(64, 3));
    vec![
        ("empty body", "x.safetensors", vec![], 422, "empty_file"),
        (
            "two bytes",
            "x.safetensors",
            vec![1, 2],
            422,
            "header_too_small",
        ),
        (
            "seven bytes",
            "x.safetensors",
            vec![0; 7],
            422,
            "header_too_small",
        ),
        (
            "header length past the end",
            "x.safetensors",
            with_len(1_000_000, b"{}"),
            422,
            "header_past_end",
        ),
        (
            "huge header length",
            "x.safetensors",
            with_len(1 << 62, b"{}"),
            422,
            "header_too_large",
        ),
        (
            "header over the 100 MB cap",
            "x.safetensors",
            with_len(100_000_001, b"{ "),
            422,
            "header_too_large",
        ),
        (
            "non-UTF-8 header",
            "x.safetensors",
            with_len(4, &[0x7b, 0xff, 0xfe, 0x7d]),
            422,
            "header_not_utf8",
        ),
        (
            "not JSON",
            "x.safetensors",
            with_len(8, b"{notjson"),
            422,
            "header_not_json",
        ),
        (
            "JSON array, not object",
            "x.safetensors",
            raw("[1,2,3]", 0),
            422,
            "header_not_json",
        ),
        (
            "tensor entry missing offsets",
            "x.safetensors",
            raw(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 4),
            422,
            "header_not_json",
        ),
        (
            "negative offset",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#,
                4,
            ),
            422,
            "header_not_json",
        ),
        (
            "NUL after the JSON",
            "x.safetensors",
            raw(
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\0",
                1,
            ),
            422,
            "header_not_json",
        ),
        (
            "truncated data",
            "x.safetensors",
            good[..good.len() - 10].to_vec(),
            422,
            "truncated",
        ),
        (
            "trailing bytes",
            "x.safetensors",
            [good.clone(), vec![0; 16]].concat(),
            422,
            "trailing_bytes",
        ),
        (
            "overlapping offsets",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            422,
            "offset_overlap",
        ),
        (
            "gap between tensors",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                12,
            ),
            422,
            "offset_gap",
        ),
        (
            "end before begin",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                4,
            ),
            422,
            "offsets_reversed",
        ),
        (
            "dtype times shape is not the byte count",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            422,
            "size_mismatch",
        ),
        (
            "shape product overflow",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
            ),
            422,
            "shape_overflow",
        ),
        (
            "unknown dtype",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            422,
            "unknown_dtype",
        ),
        (
            "duplicate tensor names",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            422,
            "duplicate_tensor",
        ),
        (
            "non-string metadata",
            "x.safetensors",
            raw(
                r#"{"__metadata__":{"format":["pt"]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            422,
            "metadata_not_string",
        ),
        (
            "sub-byte dtype not filling bytes",
            "x.safetensors",
            raw(
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                1,
            ),
            422,
            "misaligned_tensor",
        ),
        (
            "no tensors",
            "x.safetensors",
            raw("{}", 0),
            422,
            "no_tensors",
        ),
        (
            "one tensor, one byte short",
            "x.safetensors",
            raw(one, 7),
            422,
            "truncated",
        ),
        (
            "raw pickle (protocol 4)",
            "model.safetensors",
            [&[0x80, 0x04, 0x95][..], &noise(64, 1)].concat(),
            415,
            "unsupported_format",
        ),
        (
            "raw pickle (protocol 2)",
            "weights",
            [&[0x80, 0x02, b'}', b'q'][..], &noise(64, 2)].concat(),
            415,
            "unsupported_format",
        ),
        (
            "zip with data.pkl renamed .safetensors",
            "model.safetensors",
            zip_with_pickle,
            415,
            "unsupported_format",
        ),
        (
            "pytorch_model.bin by name",
            "pytorch_model.bin",
            good.clone(),
            415,
            "unsupported_format",
        ),
        (
            "checkpoint.pt by name",
            "checkpoint.pt",
            noise(128, 4),
            415,
            "unsupported_format",
        ),
        (
            "gzip archive",
            "x.safetensors",
            [&[0x1f, 0x8b, 0x08][..], &noise(64, 5)].concat(),
            415,
            "unsupported_format",
        ),
        (
            "numpy file",
            "x.safetensors",
            [&b"\x93NUMPY\x01\x00"[..], &noise(64, 6)].concat(),
            415,
            "unsupported_format",
        ),
    ]
}
