//! The safetensors header parser and the streaming validator every upload passes through:
//! whatever the bytes, an error or a header whose tensors fit the file, never a panic; the
//! scan for NaN and infinite values runs over whatever data arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squeeze::formats::safetensors::{StreamValidator, parse_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse_header(data) {
        for t in &header.tensors {
            assert!(t.begin <= t.end);
        }
    }
    // The same bytes as a whole file, fed in uneven chunks (the first byte picks the size).
    let Some((&split, file)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split) + 1;
    let mut validator = StreamValidator::new();
    for part in file.chunks(chunk) {
        if validator.feed(part).is_err() {
            return;
        }
    }
    // The non-finite scan ran over every data chunk fed; its names are the header's.
    let flagged = validator.non_finite();
    if let Ok(header) = validator.finish() {
        assert_eq!(header.file_len(), file.len() as u64);
        assert!(flagged.iter().all(|n| header.tensors.iter().any(|t| &t.name == n)));
    }
});
