//! Evaluation-set parsing (token JSONL, classifier JSONL, safetensors sets): an error naming
//! the defect, or a set whose figures match it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = squeeze::eval::dataset::parse(data);
});
