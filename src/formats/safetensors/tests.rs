//! The safetensors header rules on valid, hostile and foreign files.

use super::*;

fn file(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

fn validate(bytes: &[u8], chunk: usize) -> Result<Header, SafetensorsError> {
    let mut v = StreamValidator::new();
    for piece in bytes.chunks(chunk.max(1)) {
        v.feed(piece)?;
    }
    v.finish()
}

#[test]
fn non_finite_values_are_found_in_any_chunking_and_only_in_float_tensors() {
    let header = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]},"c":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"d":{"dtype":"I32","shape":[1],"data_offsets":[20,24]},"e":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}}"#;
    let mut bytes = file(header, 0);
    bytes.extend(1.0f32.to_le_bytes());
    bytes.extend(f32::NAN.to_le_bytes());
    bytes.extend(2.0f32.to_le_bytes());
    bytes.extend(0x3F80u16.to_le_bytes());
    bytes.extend(0xFF80u16.to_le_bytes()); // -inf in BF16
    bytes.extend(0x7BFFu16.to_le_bytes()); // 65504, F16's largest finite value
    bytes.extend(0x3C00u16.to_le_bytes());
    bytes.extend(u32::MAX.to_le_bytes()); // an integer, whatever its bits
    bytes.extend(f32::MAX.to_le_bytes());
    for chunk in [1, 2, 3, 5, 7, 13, 4096] {
        let mut v = StreamValidator::new();
        for piece in bytes.chunks(chunk) {
            v.feed(piece).unwrap();
        }
        assert_eq!(v.non_finite(), ["a", "b"], "chunks of {chunk}");
        v.finish().unwrap();
    }
}

#[test]
fn accepts_a_valid_file_in_any_chunking() {
    let bytes = file(
        r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[16,28]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        28,
    );
    for chunk in [1, 3, 8, 9, 100, 10_000] {
        let h = validate(&bytes, chunk).unwrap();
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.tensors[1].shape, vec![2, 3]);
        assert_eq!(h.file_len(), bytes.len() as u64);
        assert_eq!(h.metadata.as_ref().unwrap()["format"], "pt");
    }
}

#[test]
fn each_defect_has_its_own_code() {
    let one = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty_file"),
        (vec![1, 2], "header_too_small"),
        ((1u64 << 40).to_le_bytes().to_vec(), "header_too_large"),
        (
            [&100u64.to_le_bytes()[..], b"{}"].concat(),
            "header_past_end",
        ),
        (file("\u{7b}\"a\u{7d}", 0), "header_not_json"),
        (
            [&4u64.to_le_bytes()[..], &[0xff, 0xfe, 0xfd, 0xfc]].concat(),
            "header_not_utf8",
        ),
        (file(one, 8), "trailing_bytes"),
        (file(one, 2), "truncated"),
        (file("{}", 0), "no_tensors"),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            "duplicate_tensor",
        ),
        (
            file(
                r#"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            "metadata_not_string",
        ),
        (
            file(
                r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            "unknown_dtype",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[8589934592,8589934592],"data_offsets":[0,4]}}"#,
                4,
            ),
            "shape_overflow",
        ),
        (
            file(
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                1,
            ),
            "misaligned_tensor",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                4,
            ),
            "offsets_reversed",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            "offset_gap",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            "offset_overlap",
        ),
        (
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                4,
            ),
            "size_mismatch",
        ),
        (
            [&[0x80, 0x04, 0x95][..], &[0u8; 64]].concat(),
            "unsupported_format",
        ),
        (
            [&b"PK\x03\x04"[..], &[0u8; 64]].concat(),
            "unsupported_format",
        ),
    ];
    for (bytes, code) in cases {
        for chunk in [1, 7, 4096] {
            let err = validate(&bytes, chunk).expect_err(code);
            assert_eq!(err.code(), code, "chunk {chunk}: {err}");
        }
    }
}

#[test]
fn whitespace_around_the_json_is_accepted_but_nul_is_not() {
    let padded = r#"  {"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   "#;
    assert!(validate(&file(padded, 1), 64).is_ok());
    let nul = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\0";
    assert_eq!(
        validate(&file(nul, 1), 64).unwrap_err().code(),
        "header_not_json"
    );
}

#[test]
fn zero_size_and_scalar_tensors_are_valid() {
    let h = r#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}"#;
    let header = validate(&file(h, 4), 5).unwrap();
    assert_eq!(header.tensors.len(), 2);
}
